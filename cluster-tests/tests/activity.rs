//! The activity feed and usage figures on a three-node cluster, requests spread over the nodes:
//! the feed lists every successful change made through any node, newest first, typed; usage
//! counts what is stored, and still does after a node is killed.
//! Run `cargo build -p conclave-node` first.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use conclave_cluster_tests::http::{expect_status as expect, send, wait_key_usable};
use conclave_cluster_tests::{wait_for, Cluster, NodeClient};
use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};

/// Deadline for the cluster to serve again after a kill.
const RECOVER: Duration = Duration::from_secs(30);

fn post(c: &NodeClient, path: &[&str], body: Value) -> RequestBuilder {
    c.request(Method::POST, path).json(&body)
}

fn usage(c: &NodeClient) -> RequestBuilder {
    c.request(Method::GET, &["v1", "usage"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_lists_changes_and_usage_counts_what_is_stored() -> Result<()> {
    let mut cluster = Cluster::builder().nodes(3).start().await?;
    let (n0, n1, n2) = (
        cluster.api(0).clone(),
        cluster.api(1).clone(),
        cluster.api(2).clone(),
    );

    // Changes through every node, and one refused call.
    expect(post(&n0, &["v1", "agents"], json!({"name": "ana"})), 201).await?;
    expect(post(&n1, &["v1", "topics"], json!({"name": "news"})), 201).await?;
    for i in 0..3 {
        expect(
            post(
                &n2,
                &["v1", "topics", "news", "publish"],
                json!({"body": i}),
            ),
            201,
        )
        .await?;
    }
    expect(
        n0.request(Method::PUT, &["v1", "context", "plan"])
            .json(&json!({"value": "x"})),
        200,
    )
    .await?;
    let task = expect(post(&n1, &["v1", "tasks"], json!({"title": "t"})), 201).await?;
    expect(
        n2.request(Method::DELETE, &["v1", "context", "nothing"]),
        404,
    )
    .await?;

    // The feed: successful changes only, newest first, typed, with their targets.
    let feed = expect(n1.request(Method::GET, &["v1", "activity"]), 200).await?;
    let items = feed["items"].as_array().context("items")?;
    let types: Vec<&str> = items.iter().filter_map(|e| e["type"].as_str()).collect();
    ensure!(
        types
            == [
                "task.created",
                "context.set",
                "topic.publish",
                "topic.publish",
                "topic.publish",
                "topic.created",
                "agent.created"
            ],
        "{feed}"
    );
    ensure!(items[0]["targets"]["id"] == task["id"], "{}", items[0]);
    ensure!(items[1]["targets"]["key"] == "plan", "{}", items[1]);
    // Paged one at a time, the same events.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = vec![("limit", "1".to_string())];
        if let Some(c) = &cursor {
            q.push(("cursor", c.clone()));
        }
        let page = expect(n2.request(Method::GET, &["v1", "activity"]).query(&q), 200).await?;
        for e in page["items"].as_array().context("items")? {
            paged.push(e["id"].clone());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let ids: Vec<Value> = items.iter().map(|e| e["id"].clone()).collect();
    ensure!(paged == ids, "paged {paged:?}, whole {ids:?}");

    // Usage: what is stored, and every mutating call (8, the refused one included).
    let want = |u: &Value| {
        u["agents"] == 1
            && u["topics"] == 1
            && u["topic_messages"] == 3
            && u["topic_messages_published"] == 3
            && u["context_entries"] == 1
            && u["tasks"] == 1
            && u["api_calls"] == 8
            && u["storage_bytes"].as_u64().is_some_and(|b| b > 0)
    };
    let u = expect(usage(&n0), 200).await?;
    ensure!(want(&u), "{u}");

    // Read keys see the feed but not usage.
    let key = expect(
        post(
            &n0,
            &["v1", "api-keys"],
            json!({"name": "r", "scope": "read"}),
        ),
        201,
    )
    .await?;
    let reader = cluster.api_with_key(2, key["key"].as_str())?;
    wait_key_usable(&reader).await?;
    expect(reader.request(Method::GET, &["v1", "activity"]), 200).await?;
    expect(usage(&reader), 403).await?;
    expect(
        n0.request(Method::GET, &["v1", "activity"])
            .query(&[("cursor", "x")]),
        400,
    )
    .await?;

    // The figures are replicated: the same after a node is killed (the key creation above
    // is one more call).
    cluster.kill(0)?;
    let u = wait_for("usage after the kill", RECOVER, async || {
        let (status, body) = send(usage(&n1)).await?;
        Ok((status == 200).then_some(body))
    })
    .await?;
    ensure!(
        u["agents"] == 1 && u["topic_messages"] == 3 && u["api_calls"] == 9,
        "{u}"
    );
    Ok(())
}
