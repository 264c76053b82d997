//! Workspaces are isolated in every endpoint group: on a three-node cluster, a second
//! workspace's admin key gets 404 for the first workspace's ids, sees none of its items in any
//! list, and writing the same names there creates separate entities. Run `cargo build -p
//! conclave-node` first.

use anyhow::{ensure, Context, Result};
use conclave_cluster_tests::http::{expect, wait_key_usable};
use conclave_cluster_tests::Cluster;
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_workspace_sees_nothing_of_this_one() -> Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let a = cluster.api(0);

    // Workspace A's entities, one of each kind.
    let put = a
        .request(Method::PUT, &["v1", "context", "plan"])
        .json(&json!({"value": "A's"}));
    expect(put, 200, "context put").await?;
    let topic = a
        .request(Method::POST, &["v1", "topics"])
        .json(&json!({"name": "alpha"}));
    expect(topic, 201, "topic").await?;
    let task = a
        .request(Method::POST, &["v1", "tasks"])
        .json(&json!({"title": "A's task"}));
    let task = expect(task, 201, "task").await?;
    let task_id = task["id"].as_str().context("task id")?.to_string();
    let agent = a
        .request(Method::POST, &["v1", "agents"])
        .json(&json!({"name": "scout"}));
    expect(agent, 201, "agent").await?;
    let emb = a
        .request(Method::POST, &["v1", "context", "embeddings"])
        .json(&json!({"id": "e1", "vector": [1.0, 0.0]}));
    expect(emb, 201, "embedding").await?;
    let art = a
        .request(Method::POST, &["v1", "artifacts"])
        .json(&json!({"name": "n", "content": "A"}));
    let art = expect(art, 201, "artifact").await?;
    let art_id = art["id"].as_str().context("artifact id")?.to_string();

    // Workspace B, through another node, and its admin key working on a third.
    let created = cluster
        .api(1)
        .request(Method::POST, &["v1", "workspaces"])
        .json(&json!({"name": "other"}));
    let created = expect(created, 201, "workspace").await?;
    let secret = created["admin_key"]["key"].as_str().context("admin key")?;
    let b = cluster.api_with_key(2, Some(secret))?;
    wait_key_usable(&b).await?;

    // A's ids answer 404 to B, reads and writes alike.
    let not_found = [
        b.request(Method::GET, &["v1", "context", "plan"]),
        b.request(Method::DELETE, &["v1", "context", "plan"]),
        b.request(Method::GET, &["v1", "topics", "alpha", "messages"]),
        b.request(Method::POST, &["v1", "topics", "alpha", "publish"])
            .json(&json!({"body": 1})),
        b.request(Method::DELETE, &["v1", "topics", "alpha"]),
        b.request(Method::GET, &["v1", "tasks", &task_id]),
        b.request(Method::POST, &["v1", "tasks", &task_id, "claim"])
            .json(&json!({"agent": "x"})),
        b.request(Method::PATCH, &["v1", "tasks", &task_id])
            .json(&json!({"note": "x"})),
        b.request(Method::POST, &["v1", "agents", "scout", "heartbeat"]),
        b.request(Method::DELETE, &["v1", "agents", "scout"]),
        b.request(Method::GET, &["v1", "messages"])
            .query(&[("agent", "scout")]),
        b.request(Method::GET, &["v1", "artifacts", &art_id]),
        b.request(Method::GET, &["v1", "artifacts", &art_id, "content"]),
    ];
    for (i, req) in not_found.into_iter().enumerate() {
        expect(req, 404, &format!("A's entity #{i} through B")).await?;
    }
    // B's lists hold nothing of A's.
    for path in [
        &["v1", "context"][..],
        &["v1", "topics"],
        &["v1", "tasks"],
        &["v1", "agents"],
        &["v1", "context", "embeddings"],
        &["v1", "artifacts"],
    ] {
        let page = expect(b.request(Method::GET, path), 200, &path.join("/")).await?;
        ensure!(page["items"] == json!([]), "{}: {page}", path.join("/"));
    }
    let search = b
        .request(Method::POST, &["v1", "context", "search"])
        .json(&json!({"vector": [1.0, 0.0]}));
    let hits = expect(search, 200, "search").await?;
    ensure!(hits["items"] == json!([]), "{hits}");

    // The same names in B are B's own; A's stay as they were.
    let put = b
        .request(Method::PUT, &["v1", "context", "plan"])
        .json(&json!({"value": "B's"}));
    let entry = expect(put, 200, "B's context put").await?;
    ensure!(entry["version"] == json!(1), "{entry}");
    let topic = b
        .request(Method::POST, &["v1", "topics"])
        .json(&json!({"name": "alpha"}));
    expect(topic, 201, "B's topic of the same name").await?;
    let mine: Value = expect(
        a.request(Method::GET, &["v1", "context", "plan"]),
        200,
        "A's",
    )
    .await?;
    ensure!(
        mine["value"] == "A's" && mine["version"] == json!(1),
        "{mine}"
    );
    Ok(())
}
