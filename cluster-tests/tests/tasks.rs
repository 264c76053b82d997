//! The task queue through the public API on a three-node cluster, requests spread over the
//! nodes: approval gating and who may approve, claim_only creation, exactly one winner per
//! claim, lease renewal and expiry with growing fencing tokens, holder status changes with
//! notes, the transition table's refusals, and the workspace's list with a status filter and
//! cursor paging. Run `cargo build -p conclave-node` first.
//!
//! Workspace isolation (another workspace's key getting 404 for these ids) is not tested here:
//! the API cannot create a second workspace yet; the state machine's unit tests cover it.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use conclave_cluster_tests::http::{expect, send};
use conclave_cluster_tests::{wait_for, wait_until, Cluster, NodeClient};
use futures::future::join_all;
use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};
use tracing::info;

/// Deadline of waits in these tests.
const TIMEOUT: Duration = Duration::from_secs(60);

fn create(c: &NodeClient, body: Value) -> RequestBuilder {
    c.request(Method::POST, &["v1", "tasks"]).json(&body)
}

fn get(c: &NodeClient, id: &str) -> RequestBuilder {
    c.request(Method::GET, &["v1", "tasks", id])
}

fn claim(c: &NodeClient, id: &str, agent: &str, lease_secs: u64) -> RequestBuilder {
    c.request(Method::POST, &["v1", "tasks", id, "claim"])
        .json(&json!({ "agent": agent, "lease_secs": lease_secs }))
}

fn approve(c: &NodeClient, id: &str) -> RequestBuilder {
    c.request(Method::POST, &["v1", "tasks", id, "approve"])
}

fn patch(c: &NodeClient, id: &str, body: Value) -> RequestBuilder {
    c.request(Method::PATCH, &["v1", "tasks", id]).json(&body)
}

fn list(c: &NodeClient, query: &[(&str, &str)]) -> RequestBuilder {
    c.request(Method::GET, &["v1", "tasks"]).query(query)
}

fn id_of(task: &Value) -> Result<String> {
    task["id"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("no id in {task}"))
}

/// A key of `scope` and a client with it on every node, once every node knows the key.
async fn key_clients(cluster: &Cluster, name: &str, scope: &str) -> Result<Vec<NodeClient>> {
    let key = cluster.api(0).create_api_key(name, scope).await?;
    let clients = (0..cluster.len())
        .map(|i| cluster.api_with_key(i, Some(&key.key)))
        .collect::<Result<Vec<_>>>()?;
    for (i, c) in clients.iter().enumerate() {
        wait_until(
            &format!("key {name} known on node {i}"),
            TIMEOUT,
            async || Ok(send(list(c, &[("limit", "1")])).await?.0 == 200),
        )
        .await?;
    }
    Ok(clients)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_and_scopes_decide_who_may_create_approve_and_claim() -> Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let admin = |i: usize| cluster.api(i);
    let full = key_clients(&cluster, "worker", "full").await?;
    let read = key_clients(&cluster, "watcher", "read").await?;

    info!("an approval task cannot be claimed before an admin approves it");
    let gated = expect(
        create(&full[0], json!({ "title": "deploy", "mode": "approval" })),
        201,
        "create approval task",
    )
    .await?;
    let id = id_of(&gated)?;
    ensure!(gated["status"] == "pending_approval", "{gated}");
    ensure!(gated["mode"] == "approval", "{gated}");
    expect(claim(&full[1], &id, "a1", 60), 409, "claim before approve").await?;
    expect(approve(&full[2], &id), 403, "approve with a full key").await?;
    let still = expect(get(&full[1], &id), 200, "get after refused approve").await?;
    ensure!(still["status"] == "pending_approval", "{still}");
    let approved = expect(
        approve(admin(1), &id).json(&json!({ "note": "go ahead" })),
        200,
        "approve by admin",
    )
    .await?;
    ensure!(approved["status"] == "open", "{approved}");
    ensure!(approved["approved_by"].is_string(), "{approved}");
    ensure!(approved["approved_at"].is_u64(), "{approved}");
    ensure!(approved["notes"][0]["text"] == "go ahead", "{approved}");
    expect(approve(admin(2), &id), 409, "approve twice").await?;
    let claimed = expect(claim(&full[2], &id, "a1", 60), 200, "claim after approve").await?;
    ensure!(
        claimed["status"] == "claimed" && claimed["claimed_by"] == "a1",
        "{claimed}"
    );

    info!("claim_only tasks are created by admins and claimed by agents");
    expect(
        create(&full[1], json!({ "title": "x", "mode": "claim_only" })),
        403,
        "claim_only by a full key",
    )
    .await?;
    let only = expect(
        create(admin(2), json!({ "title": "x", "mode": "claim_only" })),
        201,
        "claim_only by admin",
    )
    .await?;
    ensure!(
        only["status"] == "open" && only["mode"] == "claim_only",
        "{only}"
    );
    let only_id = id_of(&only)?;
    expect(
        claim(&full[0], &only_id, "a2", 60),
        200,
        "claim a claim_only task",
    )
    .await?;

    info!("a read key reads but gets 403 on every write, and nothing changes");
    let auto = expect(
        create(
            &full[0],
            json!({ "title": "auto", "priority": 7, "metadata": {"k": [1]} }),
        ),
        201,
        "create auto task",
    )
    .await?;
    let auto_id = id_of(&auto)?;
    ensure!(auto["status"] == "open" && auto["priority"] == 7, "{auto}");
    ensure!(auto["metadata"] == json!({"k": [1]}), "{auto}");
    expect(
        create(&read[1], json!({ "title": "r" })),
        403,
        "create with read key",
    )
    .await?;
    expect(
        claim(&read[2], &auto_id, "r", 60),
        403,
        "claim with read key",
    )
    .await?;
    expect(approve(&read[0], &id), 403, "approve with read key").await?;
    expect(
        patch(&read[1], &auto_id, json!({ "note": "hi" })),
        403,
        "patch with read key",
    )
    .await?;
    let seen = expect(get(&read[2], &auto_id), 200, "get with read key").await?;
    ensure!(seen == auto, "read key sees {seen}, created {auto}");
    expect(
        patch(&full[2], &auto_id, json!({ "status": "cancelled" })),
        403,
        "cancel with a full key",
    )
    .await?;
    let cancelled = expect(
        patch(admin(0), &auto_id, json!({ "status": "cancelled" })),
        200,
        "cancel by admin",
    )
    .await?;
    ensure!(cancelled["status"] == "cancelled", "{cancelled}");
    expect(
        claim(&full[1], &auto_id, "a3", 60),
        409,
        "claim a cancelled task",
    )
    .await?;

    info!("bad input is a 400 naming the field, and unknown ids are 404");
    for (body, field) in [
        (json!({ "title": "" }), "title"),
        (json!({ "title": "t", "mode": "sometimes" }), "mode"),
        (json!({ "title": "t", "metadata": [1] }), "metadata"),
        (json!({ "title": "t", "extra": 1 }), "extra"),
    ] {
        let err = expect(create(&full[0], body.clone()), 400, "bad create").await?;
        let message = err["error"]["message"].as_str().unwrap_or_default();
        ensure!(message.contains(field), "{body}: {message}");
    }
    expect(
        claim(&full[1], &only_id, "bad agent!", 60),
        400,
        "bad agent",
    )
    .await?;
    expect(claim(&full[1], &only_id, "a", 0), 400, "zero lease").await?;
    // A patch with nothing to change answers the task as it is.
    let unchanged = expect(patch(&full[1], &only_id, json!({})), 200, "empty patch").await?;
    let current = expect(get(&full[1], &only_id), 200, "get after empty patch").await?;
    ensure!(
        unchanged == current,
        "empty patch answered {unchanged}, task is {current}"
    );
    expect(
        patch(&full[1], &only_id, json!({ "status": "done" })),
        409,
        "status change without the holder's agent and fencing token",
    )
    .await?;
    expect(get(&full[2], "task_1_999999"), 404, "unknown id").await?;
    expect(get(&full[2], "nonsense"), 404, "malformed id").await?;
    expect(
        list(&full[0], &[("status", "sleeping")]),
        400,
        "unknown status filter",
    )
    .await?;
    expect(list(&full[0], &[("cursor", "x")]), 400, "bad cursor").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_have_one_winner_and_leases_fence_old_holders() -> Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let n = cluster.len();
    let full = key_clients(&cluster, "agents", "full").await?;

    info!("concurrent claims from every node: exactly one winner per task");
    let mut ids = Vec::new();
    for i in 0..5 {
        let t = expect(
            create(&full[i % n], json!({ "title": format!("race-{i}") })),
            201,
            "create",
        )
        .await?;
        ids.push(id_of(&t)?);
    }
    for id in &ids {
        let attempts = (0..6).map(|k| {
            let agent = format!("agent-{k}");
            let req = claim(&full[k % n], id, &agent, 3600);
            async move { (agent, send(req).await) }
        });
        let mut winners = Vec::new();
        for (agent, outcome) in join_all(attempts).await {
            let (status, body) = outcome?;
            match status {
                200 => winners.push((agent, body)),
                409 => {}
                other => anyhow::bail!("claim of {id} by {agent}: {other} {body}"),
            }
        }
        ensure!(winners.len() == 1, "{id}: winners {winners:?}");
        let (agent, body) = &winners[0];
        let stored = expect(get(&full[2], id), 200, "get after race").await?;
        ensure!(stored["claimed_by"] == json!(agent), "{stored}");
        ensure!(stored["fencing_token"] == body["fencing_token"], "{stored}");
    }

    info!("the holder renews through PATCH and the lease end moves later");
    let t = expect(create(&full[0], json!({ "title": "renew" })), 201, "create").await?;
    let id = id_of(&t)?;
    let c = expect(claim(&full[1], &id, "holder", 60), 200, "claim").await?;
    let token = c["fencing_token"].as_u64().context("token")?;
    let first_end = c["lease_expires_at"].as_u64().context("lease end")?;
    let renewed = expect(
        patch(
            &full[2],
            &id,
            json!({ "agent": "holder", "fencing_token": token, "lease_secs": 7200 }),
        ),
        200,
        "renew",
    )
    .await?;
    let renewed_end = renewed["lease_expires_at"].as_u64().context("lease end")?;
    ensure!(renewed_end > first_end, "{first_end} -> {renewed_end}");
    ensure!(renewed["status"] == "claimed", "{renewed}");
    let other = json!({ "agent": "intruder", "fencing_token": token, "lease_secs": 60 });
    expect(patch(&full[0], &id, other), 409, "renew by another agent").await?;
    let stale = json!({ "agent": "holder", "fencing_token": token - 1, "status": "done" });
    expect(patch(&full[0], &id, stale), 409, "stale token").await?;

    info!("a short lease ends: the task returns to the queue, stored, with no client action");
    let t = expect(create(&full[1], json!({ "title": "short" })), 201, "create").await?;
    let id = id_of(&t)?;
    let c = expect(claim(&full[2], &id, "sleepy", 1), 200, "short claim").await?;
    let old_token = c["fencing_token"].as_u64().context("token")?;
    let claimed_at = c["updated_at"].as_u64().context("updated_at")?;
    // Reads show an ended lease as open at once; `updated_at` moves only when the shard
    // leader's expiry proposal has returned the stored task to the queue.
    let back = wait_for("the stored task back in the queue", TIMEOUT, async || {
        let (status, body) = send(get(&full[0], &id)).await?;
        ensure!(status == 200, "{status} {body}");
        let stored = body["updated_at"].as_u64().unwrap_or(0) > claimed_at;
        Ok((body["status"] == "open" && stored).then_some(body))
    })
    .await?;
    ensure!(
        back["claimed_by"].is_null() && back["lease_expires_at"].is_null(),
        "{back}"
    );
    ensure!(back["fencing_token"] == json!(old_token), "{back}");
    let open = expect(list(&full[1], &[("status", "open")]), 200, "list open").await?;
    ensure!(
        open["items"]
            .as_array()
            .is_some_and(|items| items.iter().any(|t| t["id"] == json!(id))),
        "{open}"
    );
    let late = json!({ "agent": "sleepy", "fencing_token": old_token, "status": "in_progress" });
    let err = expect(patch(&full[1], &id, late), 409, "old holder after expiry").await?;
    ensure!(
        err["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("expired")),
        "{err}"
    );
    let again = expect(claim(&full[0], &id, "fresh", 60), 200, "claim again").await?;
    let new_token = again["fencing_token"].as_u64().context("token")?;
    ensure!(new_token > old_token, "{old_token} -> {new_token}");
    let stale =
        json!({ "agent": "sleepy", "fencing_token": old_token, "note": "x", "lease_secs": 5 });
    expect(
        patch(&full[2], &id, stale),
        409,
        "old token after the new claim",
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_move_tasks_on_with_notes_and_lists_page_by_status() -> Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let n = cluster.len();
    let full = key_clients(&cluster, "agents", "full").await?;

    info!("claimed -> in_progress -> done, notes kept in order");
    let t = expect(create(&full[0], json!({ "title": "work" })), 201, "create").await?;
    let id = id_of(&t)?;
    let c = expect(claim(&full[1], &id, "w1", 600), 200, "claim").await?;
    let token = c["fencing_token"].clone();
    let holder = |status: &str, note: &str| json!({ "agent": "w1", "fencing_token": token, "status": status, "note": note });
    let p = expect(
        patch(&full[2], &id, holder("in_progress", "started")),
        200,
        "start",
    )
    .await?;
    ensure!(p["status"] == "in_progress", "{p}");
    expect(
        patch(&full[0], &id, json!({ "note": "reviewer comment" })),
        200,
        "note only",
    )
    .await?;
    let done = expect(
        patch(&full[1], &id, holder("done", "finished")),
        200,
        "done",
    )
    .await?;
    ensure!(
        done["status"] == "done" && done["lease_expires_at"].is_null(),
        "{done}"
    );
    let texts: Vec<_> = done["notes"]
        .as_array()
        .context("notes")?
        .iter()
        .map(|n| n["text"].clone())
        .collect();
    ensure!(
        texts
            == vec![
                json!("started"),
                json!("reviewer comment"),
                json!("finished")
            ],
        "{texts:?}"
    );
    ensure!(done["notes"][0]["by"] == "w1", "{done}");
    let read_back = expect(get(&full[2], &id), 200, "get done").await?;
    ensure!(read_back == done, "{read_back} vs {done}");

    info!("illegal transitions are 409 and change nothing");
    expect(
        patch(&full[0], &id, holder("in_progress", "again")),
        409,
        "done -> in_progress",
    )
    .await?;
    expect(
        patch(&full[0], &id, holder("open", "reopen")),
        409,
        "done -> open",
    )
    .await?;
    let fresh = expect(create(&full[1], json!({ "title": "fresh" })), 201, "create").await?;
    let fresh_id = id_of(&fresh)?;
    let bogus = json!({ "agent": "w1", "fencing_token": 1, "status": "done" });
    expect(patch(&full[2], &fresh_id, bogus), 409, "open -> done").await?;
    let unchanged = expect(get(&full[0], &id), 200, "get after refusals").await?;
    ensure!(unchanged == done, "{unchanged}");

    info!("lists page in creation order, every task exactly once, filtered by status");
    let mut created = vec![id.clone(), fresh_id.clone()];
    for i in 0..9 {
        let t = expect(
            create(&full[i % n], json!({ "title": format!("bulk-{i}") })),
            201,
            "create bulk",
        )
        .await?;
        created.push(id_of(&t)?);
    }
    let mut claimed = BTreeSet::new();
    for (k, tid) in created.iter().enumerate().skip(2).step_by(3) {
        expect(claim(&full[k % n], tid, "w2", 600), 200, "claim bulk").await?;
        claimed.insert(tid.clone());
    }
    let pages = |status: Option<&'static str>, node: usize| {
        let c = &full[node];
        async move {
            let mut seen = Vec::new();
            let mut cursor: Option<String> = None;
            for _ in 0..100 {
                let mut q = vec![("limit", "4".to_string())];
                if let Some(s) = status {
                    q.push(("status", s.to_string()));
                }
                if let Some(cur) = &cursor {
                    q.push(("cursor", cur.clone()));
                }
                let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let page = expect(list(c, &q), 200, "list page").await?;
                let items = page["items"].as_array().context("items")?;
                ensure!(items.len() <= 4, "page too long: {page}");
                for t in items {
                    if let Some(s) = status {
                        ensure!(t["status"] == s, "{t}");
                    }
                    seen.push(id_of(t)?);
                }
                match page["next_cursor"].as_str() {
                    Some(next) => cursor = Some(next.to_string()),
                    None => return Ok::<_, anyhow::Error>(seen),
                }
            }
            anyhow::bail!("paging did not end")
        }
    };
    let all = pages(None, 0).await?;
    ensure!(all == created, "listed {all:?}, created {created:?}");
    let only_claimed = pages(Some("claimed"), 1).await?;
    ensure!(
        only_claimed.iter().cloned().collect::<BTreeSet<_>>() == claimed
            && only_claimed.len() == claimed.len(),
        "{only_claimed:?} vs {claimed:?}"
    );
    let only_done = pages(Some("done"), 2).await?;
    ensure!(only_done == vec![id.clone()], "{only_done:?}");
    let open = pages(Some("open"), 0).await?;
    ensure!(
        open.len() == created.len() - claimed.len() - 1,
        "open {open:?}"
    );
    Ok(())
}
