//! Topic team subscriptions and `team:` ACL principals on a three-node cluster, requests spread
//! over the nodes: a team subscribed through one node makes its agents readers with their own
//! cursors through every node, the cursors survive the kill of the topic shard's leader, and a
//! `team:` ACL entry lets the team's agents read a restricted topic.
//! Run `cargo build -p conclave-node` first.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use conclave_cluster_tests::http::{expect_status as expect, send, wait_key_usable};
use conclave_cluster_tests::{wait_for, Cluster, NodeClient, ShardKind};
use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};

/// Deadline for a write made through one node to show up on another.
const VISIBLE: Duration = Duration::from_secs(20);

fn post(c: &NodeClient, path: &[&str], body: Value) -> RequestBuilder {
    c.request(Method::POST, path).json(&body)
}

fn read(c: &NodeClient, topic: &str, query: &[(&str, &str)]) -> RequestBuilder {
    c.request(Method::GET, &["v1", "topics", topic, "messages"])
        .query(query)
}

fn seqs(page: &Value) -> Result<Vec<u64>> {
    page["items"]
        .as_array()
        .context("items")?
        .iter()
        .map(|m| m["seq"].as_u64().context("seq"))
        .collect()
}

/// Reads `topic` as `agent` through `c` until the answer is 200 (membership made through
/// another node reaches this node's meta replica a moment later).
async fn read_as(c: &NodeClient, topic: &str, query: &[(&str, &str)]) -> Result<Value> {
    wait_for("a read as a team member", VISIBLE, async || {
        let (status, body) = send(read(c, topic, query)).await?;
        Ok((status == 200).then_some(body))
    })
    .await
}

async fn publish(c: &NodeClient, topic: &str, n: u64) -> Result<()> {
    for i in 0..n {
        expect(
            post(c, &["v1", "topics", topic, "publish"], json!({ "body": i })),
            201,
        )
        .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_members_read_with_their_own_cursors_across_nodes_and_a_leader_kill() -> Result<()> {
    let mut cluster = Cluster::builder().nodes(3).start().await?;
    let (n0, n1, n2) = (
        cluster.api(0).clone(),
        cluster.api(1).clone(),
        cluster.api(2).clone(),
    );

    // A topic with history, a team with one agent.
    expect(post(&n0, &["v1", "topics"], json!({"name": "feed"})), 201).await?;
    publish(&n0, "feed", 2).await?;
    let team = expect(post(&n1, &["v1", "teams"], json!({"name": "readers"})), 201).await?;
    let team_id = team["id"].as_str().context("team id")?.to_string();
    expect(
        post(
            &n1,
            &["v1", "teams", &team_id, "members"],
            json!({"agent": "ana"}),
        ),
        201,
    )
    .await?;

    // Subscribing the team: 201, then 200 unchanged; unknown team or topic: 404.
    let path = ["v1", "topics", "feed", "teams", team_id.as_str()];
    let sub = wait_for("the team visible on node 2", VISIBLE, async || {
        let (status, body) = send(n2.request(Method::POST, &path)).await?;
        Ok((status == 201).then_some(body))
    })
    .await?;
    ensure!(
        sub["topic"] == "feed" && sub["team_id"] == team_id.as_str() && sub["start_seq"] == 2,
        "{sub}"
    );
    let again = expect(n0.request(Method::POST, &path), 200).await?;
    ensure!(again["created_at"] == sub["created_at"], "{again} vs {sub}");
    expect(
        n0.request(Method::POST, &["v1", "topics", "feed", "teams", "team_999"]),
        404,
    )
    .await?;
    expect(
        n0.request(Method::POST, &["v1", "topics", "nope", "teams", &team_id]),
        404,
    )
    .await?;
    publish(&n1, "feed", 3).await?;

    // A member reads after the team's start, through any node; a non-member is not subscribed.
    let page = read_as(&n0, "feed", &[("agent", "ana")]).await?;
    ensure!(seqs(&page)? == vec![3, 4, 5], "{page}");
    expect(read(&n0, "feed", &[("agent", "bob")]), 404).await?;
    // Acknowledging through another node moves only the member's own cursor.
    let page = read_as(&n1, "feed", &[("agent", "ana"), ("since", "4")]).await?;
    ensure!(seqs(&page)? == vec![5], "{page}");
    let listed = expect(
        n2.request(Method::GET, &["v1", "topics", "subscriptions"])
            .query(&[("agent", "ana")]),
        200,
    )
    .await?;
    let items = listed["items"].as_array().context("items")?;
    ensure!(
        items.len() == 1
            && items[0]["via"] == "team"
            && items[0]["team_id"] == team_id.as_str()
            && items[0]["cursor"] == 4
            && items[0]["last_seq"] == 5,
        "{listed}"
    );

    // The cursor is replicated: it survives the kill of the topic shard's leader.
    let leader = cluster.leader_of(ShardKind::Topic, "feed").await?;
    let index = cluster.node_index_by_id(leader).context("leader index")?;
    cluster.kill(index)?;
    let survivor = cluster.api((index + 1) % 3).clone();
    let page = read_as(&survivor, "feed", &[("agent", "ana")]).await?;
    ensure!(seqs(&page)? == vec![5], "after the kill: {page}");

    // Removing the team's subscription ends team-derived reading.
    expect(survivor.request(Method::DELETE, &path), 200).await?;
    expect(read(&survivor, "feed", &[("agent", "ana")]), 404).await?;
    expect(survivor.request(Method::DELETE, &path), 404).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_acl_entry_opens_a_restricted_topic_to_its_agents() -> Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let (n0, n1) = (cluster.api(0), cluster.api(1));
    expect(
        post(
            n0,
            &["v1", "topics"],
            json!({"name": "vault", "access": "restricted"}),
        ),
        201,
    )
    .await?;
    publish(n0, "vault", 1).await?;
    let team = expect(
        post(n0, &["v1", "teams"], json!({"name": "keyholders"})),
        201,
    )
    .await?;
    let team_id = team["id"].as_str().context("team id")?.to_string();
    expect(
        post(
            n0,
            &["v1", "teams", &team_id, "members"],
            json!({"agent": "ana"}),
        ),
        201,
    )
    .await?;
    let entry = expect(
        post(
            n0,
            &["v1", "topics", "vault", "acl"],
            json!({"principal": format!("team:{team_id}"), "permissions": ["read"]}),
        ),
        201,
    )
    .await?;
    ensure!(entry["principal"] == format!("team:{team_id}"), "{entry}");
    expect(
        post(
            n0,
            &["v1", "topics", "vault", "acl"],
            json!({"principal": "team:team_999", "permissions": ["read"]}),
        ),
        409,
    )
    .await?;

    // A full key (not admin) reads as the team's agent on another node; not as another agent,
    // and it may not subscribe teams.
    let key = expect(
        post(
            n0,
            &["v1", "api-keys"],
            json!({"name": "worker", "scope": "full"}),
        ),
        201,
    )
    .await?;
    let worker = cluster.api_with_key(1, key["key"].as_str())?;
    wait_key_usable(&worker).await?;
    // Subscribing needs `read`: the team's entry grants it to its agent.
    wait_for("the team acl visible on node 1", VISIBLE, async || {
        let (status, body) = send(post(
            &worker,
            &["v1", "topics", "vault", "subscribe"],
            json!({"agent": "ana", "from": "earliest"}),
        ))
        .await?;
        Ok((status == 201).then_some(body))
    })
    .await?;
    let page = expect(read(&worker, "vault", &[("agent", "ana")]), 200).await?;
    ensure!(seqs(&page)? == vec![1], "{page}");
    expect(read(&worker, "vault", &[("agent", "bob")]), 403).await?;
    expect(
        worker.request(Method::POST, &["v1", "topics", "vault", "teams", &team_id]),
        403,
    )
    .await?;
    // Bad ids are 400s.
    expect(
        n1.request(Method::POST, &["v1", "topics", "vault", "teams", "bad id"]),
        400,
    )
    .await?;
    Ok(())
}
