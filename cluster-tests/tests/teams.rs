//! Teams, skills and the skill policy on a three-node cluster, requests spread over the nodes:
//! memberships and grants made through one node govern what an agent may invoke through
//! another, every refusal is recorded as a policy violation, and only admin keys govern.
//! Run `cargo build -p conclave-node` first.
//!
//! Team and skill state lives in the meta group, read from each node's own replica: a node
//! shows a write it answered at once, and a read on one node after a write through another
//! waits for the write to show up there.
//!
//! Isolation from a second workspace is covered for every group in `isolation.rs`.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use conclave_cluster_tests::http::{expect_status as expect, send};
use conclave_cluster_tests::{wait_for, wait_until, Cluster, NodeClient};
use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};

/// Deadline for a write made through one node to show up on another.
const VISIBLE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_and_memberships_govern_invocation_across_nodes() -> Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let (n0, n1, n2) = (cluster.api(0), cluster.api(1), cluster.api(2));

    // A team created through node 0 is listed by node 1; its name is taken.
    let team = expect(
        post(
            n0,
            &["v1", "teams"],
            json!({"name": "ops", "description": "on call"}),
        ),
        201,
    )
    .await?;
    let team_id = str_field(&team, "id")?;
    ensure!(
        team["name"] == "ops" && team["description"] == "on call" && team["agent_count"] == 0,
        "created {team}"
    );
    expect(post(n1, &["v1", "teams"], json!({"name": "ops"})), 409).await?;
    // The node that answered a write shows it at once.
    let own = expect(get(n0, &["v1", "teams"], &[]), 200).await?;
    ensure!(items(&own)? == &vec![team.clone()], "node 0 lists {own}");
    let listed = wait_for("the team listed on node 1", VISIBLE, async || {
        let page = expect(get(n1, &["v1", "teams"], &[]), 200).await?;
        Ok(items(&page)?.first().cloned())
    })
    .await?;
    ensure!(listed == team, "listed {listed}, created {team}");

    // Members: two agents and a user, added through different nodes; adding again changes
    // nothing.
    let builder = expect(add_agent(n1, &team_id, "builder"), 201).await?;
    expect(add_agent(n1, &team_id, "reviewer"), 201).await?;
    let own = expect(get(n1, &["v1", "teams", &team_id, "members"], &[]), 200).await?;
    ensure!(
        member_ids(&own)? == ["agent:builder", "agent:reviewer"],
        "node 1 lists {own}"
    );
    let again = expect(add_agent(n2, &team_id, "builder"), 200).await?;
    ensure!(
        again["added_at"] == builder["added_at"] && again["kind"] == "agent",
        "re-added {again}, first {builder}"
    );
    let user = expect(
        post(
            n2,
            &["v1", "teams", &team_id, "users"],
            json!({"user_id": "usr_1"}),
        ),
        201,
    )
    .await?;
    ensure!(
        user["kind"] == "user" && user["id"] == "usr_1" && user["team_id"] == team_id.as_str(),
        "{user}"
    );

    // Node 0 lists them: agents by name, then users; the kind filter and paging agree.
    let members_path = ["v1", "teams", team_id.as_str(), "members"];
    wait_until("three members on node 0", VISIBLE, async || {
        let page = expect(get(n0, &members_path, &[]), 200).await?;
        Ok(items(&page)?.len() == 3)
    })
    .await?;
    let all = member_ids(&expect(get(n0, &members_path, &[]), 200).await?)?;
    ensure!(
        all == ["agent:builder", "agent:reviewer", "user:usr_1"],
        "{all:?}"
    );
    let agents = member_ids(&expect(get(n0, &members_path, &[("kind", "agent")]), 200).await?)?;
    ensure!(agents == ["agent:builder", "agent:reviewer"], "{agents:?}");
    let users = member_ids(&expect(get(n0, &members_path, &[("kind", "user")]), 200).await?)?;
    ensure!(users == ["user:usr_1"], "{users:?}");
    let paged = collect_pages(n0, &members_path, &[], 1).await?;
    ensure!(
        paged.iter().map(member_id).collect::<Result<Vec<_>>>()? == all,
        "paged {paged:?}"
    );

    // Removals: once each; the second is a 404.
    let removed = expect(
        delete(n0, &["v1", "teams", &team_id, "members", "reviewer"]),
        200,
    )
    .await?;
    ensure!(
        removed["deleted"] == true && removed["id"] == "reviewer",
        "{removed}"
    );
    expect(
        delete(n0, &["v1", "teams", &team_id, "members", "reviewer"]),
        404,
    )
    .await?;
    expect(
        delete(n1, &["v1", "teams", &team_id, "users", "usr_1"]),
        200,
    )
    .await?;
    expect(
        delete(n1, &["v1", "teams", &team_id, "users", "usr_1"]),
        404,
    )
    .await?;

    // Skills registered through node 2; `deploy` granted to the team through node 0, twice.
    let deploy = expect(
        post(
            n2,
            &["v1", "skills"],
            json!({"name": "deploy", "metadata": {"risk": "high"}}),
        ),
        201,
    )
    .await?;
    let deploy_id = str_field(&deploy, "id")?;
    ensure!(deploy["metadata"]["risk"] == "high", "{deploy}");
    let review_id = str_field(
        &expect(post(n2, &["v1", "skills"], json!({"name": "review"})), 201).await?,
        "id",
    )?;
    expect(post(n0, &["v1", "skills"], json!({"name": "deploy"})), 409).await?;
    let grant_path = [
        "v1",
        "skills",
        deploy_id.as_str(),
        "teams",
        team_id.as_str(),
    ];
    let granted = expect(post(n0, &grant_path, json!({})), 201).await?;
    let regranted = expect(post(n1, &grant_path, json!({})), 200).await?;
    ensure!(
        granted["granted_at"] == regranted["granted_at"],
        "{granted} then {regranted}"
    );

    // Node 2 sees the grant from both sides.
    let team_skills = ["v1", "teams", team_id.as_str(), "skills"];
    let grants = wait_for("the grant on node 2", VISIBLE, async || {
        let page = expect(get(n2, &team_skills, &[]), 200).await?;
        let list = items(&page)?.clone();
        Ok((!list.is_empty()).then_some(list))
    })
    .await?;
    ensure!(
        grants.len() == 1
            && grants[0]["skill_id"] == deploy_id.as_str()
            && grants[0]["name"] == "deploy"
            && grants[0]["granted_at"] == granted["granted_at"],
        "{grants:?}"
    );
    let by_team = expect(
        get(n2, &["v1", "skills"], &[("team", team_id.as_str())]),
        200,
    )
    .await?;
    let by_team = items(&by_team)?;
    ensure!(
        by_team.len() == 1 && by_team[0]["teams"] == json!([team_id]),
        "{by_team:?}"
    );

    // A member agent may invoke the skill, by id or by name; a non-member may not.
    for skill in [deploy_id.as_str(), "deploy"] {
        let ok = expect(invoke(n2, skill, "builder"), 200).await?;
        ensure!(
            ok["allowed"] == true
                && ok["skill_id"] == deploy_id.as_str()
                && ok["teams"] == json!([team_id]),
            "{ok}"
        );
    }
    wait_until("skill review on node 1", VISIBLE, async || {
        let page = expect(get(n1, &["v1", "skills"], &[]), 200).await?;
        Ok(items(&page)?.len() == 2)
    })
    .await?;
    let refused = expect(invoke(n1, &review_id, "builder"), 403).await?;
    ensure!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("vio_1")),
        "{refused}"
    );

    // Revoked through node 0: node 2 refuses once it has applied the revoke.
    expect(delete(n0, &grant_path), 200).await?;
    expect(delete(n0, &grant_path), 404).await?;
    wait_until("the revoke on node 2", VISIBLE, async || {
        let page = expect(get(n2, &team_skills, &[]), 200).await?;
        Ok(items(&page)?.is_empty())
    })
    .await?;
    expect(invoke(n2, "deploy", "builder"), 403).await?;
    // An unknown skill is not found, and the attempt is recorded too.
    expect(invoke(n0, "launch", "builder"), 404).await?;

    // The violations, newest first, from any node; paging visits each once.
    let page = expect(get(n1, &["v1", "audit", "violations"], &[]), 200).await?;
    let violations = items(&page)?;
    let summary: Vec<(String, String, String)> = violations
        .iter()
        .map(|v| {
            (
                v["id"].as_str().unwrap_or("").to_string(),
                v["skill"].as_str().unwrap_or("").to_string(),
                v["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let expected = [
        ("vio_3", "launch", "unknown_skill"),
        ("vio_2", "deploy", "not_granted"),
        ("vio_1", review_id.as_str(), "not_granted"),
    ]
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()));
    ensure!(summary == expected, "{summary:?}");
    let revoked = &violations[1];
    ensure!(
        revoked["agent"] == "builder"
            && revoked["skill_id"] == deploy_id.as_str()
            && revoked["via"] == "rest"
            && revoked["key_id"]
                .as_str()
                .is_some_and(|k| k.starts_with("key_"))
            && revoked["at"].as_u64().is_some_and(|at| at > 0),
        "{revoked}"
    );
    ensure!(violations[0]["skill_id"].is_null(), "{}", violations[0]);
    let paged = collect_pages(n2, &["v1", "audit", "violations"], &[], 1).await?;
    ensure!(&paged == violations, "paged {paged:?}");
    let filtered = expect(
        get(n0, &["v1", "audit", "violations"], &[("agent", "nobody")]),
        200,
    )
    .await?;
    ensure!(items(&filtered)?.is_empty(), "{filtered}");

    // Deleting the team removes its grants: the skill is granted to nobody afterwards. The
    // node that made the grant applies it at once.
    expect(post(n2, &grant_path, json!({})), 201).await?;
    expect(invoke(n2, "deploy", "builder"), 200).await?;
    let gone = expect(delete(n1, &["v1", "teams", &team_id]), 200).await?;
    ensure!(gone == json!({"id": team_id, "deleted": true}), "{gone}");
    wait_until("the delete on node 2", VISIBLE, async || {
        let page = expect(get(n2, &["v1", "teams"], &[]), 200).await?;
        Ok(items(&page)?.is_empty())
    })
    .await?;
    let skill = expect(get(n2, &["v1", "skills"], &[]), 200).await?;
    ensure!(
        items(&skill)?.iter().all(|s| s["teams"] == json!([])),
        "{skill}"
    );
    expect(get(n2, &team_skills, &[]), 404).await?;
    expect(invoke(n2, "deploy", "builder"), 403).await?;
    expect(delete(n1, &["v1", "teams", &team_id]), 404).await?;

    // Deleting a skill: once.
    expect(delete(n0, &["v1", "skills", &review_id]), 200).await?;
    expect(delete(n0, &["v1", "skills", &review_id]), 404).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admin_keys_govern_and_bad_input_changes_nothing() -> Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let admin = cluster.api(0);

    // Known state: one team with a member agent and a granted skill.
    let team_id = str_field(
        &expect(post(admin, &["v1", "teams"], json!({"name": "ops"})), 201).await?,
        "id",
    )?;
    let skill_id = str_field(
        &expect(
            post(admin, &["v1", "skills"], json!({"name": "deploy"})),
            201,
        )
        .await?,
        "id",
    )?;
    expect(add_agent(admin, &team_id, "builder"), 201).await?;
    let grant_path = ["v1", "skills", skill_id.as_str(), "teams", team_id.as_str()];
    expect(post(admin, &grant_path, json!({})), 201).await?;

    // A read key and a full key, used through nodes 1 and 2 once those know them.
    let read_key = admin.create_api_key("reader", "read").await?;
    let full_key = admin.create_api_key("writer", "full").await?;
    let reader = cluster.api_with_key(1, Some(&read_key.key))?;
    let writer = cluster.api_with_key(2, Some(&full_key.key))?;
    for (who, client) in [("reader", &reader), ("writer", &writer)] {
        wait_until(&format!("{who} sees the grant"), VISIBLE, async || {
            let (status, page) =
                send(get(client, &["v1", "teams", &team_id, "skills"], &[])).await?;
            Ok(status == 200 && items(&page)?.len() == 1)
        })
        .await?;
    }
    let snapshot = State::read(admin, &team_id).await?;

    // Administration is refused to both, whatever the target.
    let admin_writes = |c: &NodeClient| {
        vec![
            post(c, &["v1", "teams"], json!({"name": "rogue"})),
            delete(c, &["v1", "teams", &team_id]),
            add_agent(c, &team_id, "intruder"),
            delete(c, &["v1", "teams", &team_id, "members", "builder"]),
            post(
                c,
                &["v1", "teams", &team_id, "users"],
                json!({"user_id": "usr_9"}),
            ),
            delete(c, &["v1", "teams", &team_id, "users", "usr_9"]),
            post(c, &["v1", "skills"], json!({"name": "rogue"})),
            delete(c, &["v1", "skills", &skill_id]),
            post(c, &grant_path, json!({})),
            delete(c, &grant_path),
            get(c, &["v1", "audit", "violations"], &[]),
        ]
    };
    for client in [&reader, &writer] {
        for request in admin_writes(client) {
            expect(request, 403).await?;
        }
    }
    // Both read; the full key may check an invocation, the read key may not (and that scope
    // refusal is not a policy violation).
    for client in [&reader, &writer] {
        expect(get(client, &["v1", "teams"], &[]), 200).await?;
        expect(get(client, &["v1", "skills"], &[]), 200).await?;
        expect(get(client, &["v1", "teams", &team_id, "members"], &[]), 200).await?;
    }
    expect(invoke(&writer, "deploy", "builder"), 200).await?;
    expect(invoke(&reader, "deploy", "builder"), 403).await?;

    // Bad input: 400 with a message naming the field; unknown or malformed ids: 404.
    let long = "x".repeat(3000);
    let bad = [
        post(admin, &["v1", "teams"], json!({"name": "has space"})),
        post(admin, &["v1", "teams"], json!({"name": ""})),
        post(
            admin,
            &["v1", "teams"],
            json!({"name": "ok", "description": long}),
        ),
        post(
            admin,
            &["v1", "teams"],
            json!({"name": "ok", "colour": "red"}),
        ),
        post(
            admin,
            &["v1", "skills"],
            json!({"name": "ok", "metadata": [1]}),
        ),
        post(
            admin,
            &["v1", "skills"],
            json!({"name": "ok", "metadata": {"k": long}}),
        ),
        add_agent(admin, &team_id, "bad/name"),
        post(admin, &["v1", "teams", &team_id, "members"], json!({})),
        get(
            admin,
            &["v1", "teams", &team_id, "members"],
            &[("kind", "robot")],
        ),
        get(admin, &["v1", "teams"], &[("limit", "0")]),
        get(admin, &["v1", "teams"], &[("limit", "1001")]),
        get(admin, &["v1", "teams"], &[("cursor", "nope")]),
        get(admin, &["v1", "audit", "violations"], &[("cursor", "nope")]),
        post(
            admin,
            &["v1", "skills", "deploy", "invoke"],
            json!({"agent": ""}),
        ),
    ];
    for request in bad {
        let body = expect(request, 400).await?;
        ensure!(
            body["error"]["code"] == "bad_request"
                && body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }
    for request in [
        delete(admin, &["v1", "teams", "nope"]),
        delete(admin, &["v1", "teams", "team_999"]),
        add_agent(admin, "team_999", "builder"),
        get(admin, &["v1", "teams", "team_999", "members"], &[]),
        get(admin, &["v1", "teams", "team_01", "skills"], &[]),
        post(
            admin,
            &["v1", "skills", &skill_id, "teams", "team_999"],
            json!({}),
        ),
        post(
            admin,
            &["v1", "skills", "skill_999", "teams", &team_id],
            json!({}),
        ),
        delete(admin, &["v1", "skills", "skill_999"]),
        get(admin, &["v1", "skills"], &[("team", "team_999")]),
    ] {
        expect(request, 404).await?;
    }
    let after = State::read(admin, &team_id).await?;
    ensure!(after == snapshot, "before {snapshot:?}\nafter {after:?}");
    // Neither the scope refusal nor bad input was a policy decision: nothing was recorded.
    let violations = expect(get(admin, &["v1", "audit", "violations"], &[]), 200).await?;
    ensure!(items(&violations)?.is_empty(), "{violations}");
    Ok(())
}

/// What the refusals must leave untouched, read through the admin key.
#[derive(Debug, PartialEq)]
struct State {
    teams: Value,
    members: Value,
    skills: Value,
}

impl State {
    async fn read(admin: &NodeClient, team: &str) -> Result<Self> {
        Ok(State {
            teams: expect(get(admin, &["v1", "teams"], &[]), 200).await?,
            members: expect(get(admin, &["v1", "teams", team, "members"], &[]), 200).await?,
            skills: expect(get(admin, &["v1", "skills"], &[]), 200).await?,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_agent_loses_its_memberships_and_skills() -> Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let (n0, n1, n2) = (cluster.api(0), cluster.api(1), cluster.api(2));
    expect(post(n0, &["v1", "agents"], json!({"name": "scout"})), 201).await?;
    let team = expect(post(n1, &["v1", "teams"], json!({"name": "recon"})), 201).await?;
    let team_id = str_field(&team, "id")?;
    let skill = expect(post(n1, &["v1", "skills"], json!({"name": "survey"})), 201).await?;
    let skill_id = str_field(&skill, "id")?;
    expect(
        post(
            n1,
            &["v1", "skills", &skill_id, "teams", &team_id],
            json!({}),
        ),
        201,
    )
    .await?;
    expect(add_agent(n1, &team_id, "scout"), 201).await?;
    wait_until(
        "the member may invoke through node 2",
        VISIBLE,
        async || Ok(send(invoke(n2, &skill_id, "scout")).await?.0 == 200),
    )
    .await?;

    // Deleting the agent through node 0 removes it from the team; the same name registered
    // again starts with no memberships, so its invocation is refused.
    expect(delete(n0, &["v1", "agents", "scout"]), 200).await?;
    expect(post(n2, &["v1", "agents"], json!({"name": "scout"})), 201).await?;
    wait_until("the membership is gone on node 2", VISIBLE, async || {
        let page = expect(get(n2, &["v1", "teams", &team_id, "members"], &[]), 200).await?;
        Ok(items(&page)?.is_empty())
    })
    .await?;
    expect(invoke(n2, &skill_id, "scout"), 403).await?;
    Ok(())
}

fn get(c: &NodeClient, path: &[&str], query: &[(&str, &str)]) -> RequestBuilder {
    c.request(Method::GET, path).query(query)
}

fn post(c: &NodeClient, path: &[&str], body: Value) -> RequestBuilder {
    c.request(Method::POST, path).json(&body)
}

fn delete(c: &NodeClient, path: &[&str]) -> RequestBuilder {
    c.request(Method::DELETE, path)
}

fn add_agent(c: &NodeClient, team: &str, agent: &str) -> RequestBuilder {
    post(
        c,
        &["v1", "teams", team, "members"],
        json!({ "agent": agent }),
    )
}

fn invoke(c: &NodeClient, skill: &str, agent: &str) -> RequestBuilder {
    post(
        c,
        &["v1", "skills", skill, "invoke"],
        json!({ "agent": agent }),
    )
}

fn items(page: &Value) -> Result<&Vec<Value>> {
    page["items"]
        .as_array()
        .with_context(|| format!("no items in {page}"))
}

fn str_field(v: &Value, field: &str) -> Result<String> {
    v[field]
        .as_str()
        .map(String::from)
        .with_context(|| format!("no {field} in {v}"))
}

fn member_id(m: &Value) -> Result<String> {
    Ok(format!("{}:{}", str_field(m, "kind")?, str_field(m, "id")?))
}

fn member_ids(page: &Value) -> Result<Vec<String>> {
    items(page)?.iter().map(member_id).collect()
}

/// Every item of a list, following `next_cursor` with pages of `limit`.
async fn collect_pages(
    c: &NodeClient,
    path: &[&str],
    query: &[(&str, &str)],
    limit: usize,
) -> Result<Vec<Value>> {
    let limit = limit.to_string();
    let mut cursor: Option<String> = None;
    let mut all = Vec::new();
    for _ in 0..1000 {
        let mut q: Vec<(&str, &str)> = query.to_vec();
        q.push(("limit", &limit));
        if let Some(next) = &cursor {
            q.push(("cursor", next));
        }
        let page = expect(get(c, path, &q), 200).await?;
        all.extend(items(&page)?.iter().cloned());
        match &page["next_cursor"] {
            Value::String(next) => cursor = Some(next.clone()),
            Value::Null => return Ok(all),
            other => bail!("next_cursor {other}"),
        }
    }
    bail!("more than 1000 pages")
}
