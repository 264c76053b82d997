//! The activity feed and usage figures on a three-node cluster, requests spread over the nodes:
//! the feed lists every successful change made through any node, newest first, typed; usage
//! counts what is stored, and still does after a node is killed; it breaks mutating calls down
//! per API key and UTC day, over a checked range of days.
//! Run `cargo build -p conclave-node` first.

use std::collections::BTreeMap;
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

    // The feed: successful changes only, newest first, typed, with their targets. Entries are
    // appended just after each answer, so the last ones may take a moment to show.
    let feed = wait_for("the feed of all seven changes", RECOVER, async || {
        let feed = expect(n1.request(Method::GET, &["v1", "activity"]), 200).await?;
        Ok((feed["items"].as_array().map_or(0, Vec::len) >= 7).then_some(feed))
    })
    .await?;
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

/// `(key_id, calls, errors, server_errors)` summed over the days of `rows`, by key.
fn per_key(rows: &[Value]) -> Result<BTreeMap<String, (u64, u64, u64)>> {
    let mut out: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for r in rows {
        let key = r["key_id"].as_str().context("key_id")?.to_string();
        let e = out.entry(key).or_default();
        e.0 += r["calls"].as_u64().context("calls")?;
        e.1 += r["errors"].as_u64().context("errors")?;
        e.2 += r["server_errors"].as_u64().context("server_errors")?;
    }
    Ok(out)
}

/// Every breakdown row of `/v1/usage` with `query`, following `daily.next_cursor` page by page.
async fn daily_rows(c: &NodeClient, query: &[(&str, &str)], limit: usize) -> Result<Vec<Value>> {
    let mut rows = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q: Vec<(&str, String)> = query.iter().map(|(k, v)| (*k, v.to_string())).collect();
        q.push(("limit", limit.to_string()));
        if let Some(c) = &cursor {
            q.push(("cursor", c.clone()));
        }
        let u = expect(usage(c).query(&q), 200).await?;
        let items = u["daily"]["items"].as_array().context("daily.items")?;
        ensure!(items.len() <= limit, "page too long: {u}");
        rows.extend(items.iter().cloned());
        match u["daily"]["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return Ok(rows),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_counts_calls_per_key_and_day() -> Result<()> {
    let mut cluster = Cluster::builder().nodes(3).start().await?;
    let (n0, n1) = (cluster.api(0).clone(), cluster.api(1).clone());
    let me = expect(n0.request(Method::GET, &["v1", "session", "me"]), 200).await?;
    let admin_id = me["key"]["id"]
        .as_str()
        .context("admin key id")?
        .to_string();

    // A second key; calls by both keys through every node, some refused.
    let key = expect(
        post(
            &n0,
            &["v1", "api-keys"],
            json!({"name": "w", "scope": "full"}),
        ),
        201,
    )
    .await?;
    let writer_id = key["id"].as_str().context("key id")?.to_string();
    let writers: Vec<NodeClient> = (0..3)
        .map(|i| cluster.api_with_key(i, key["key"].as_str()))
        .collect::<Result<_>>()?;
    for w in &writers {
        wait_key_usable(w).await?;
    }
    for (i, w) in writers.iter().enumerate() {
        let path = format!("k{i}");
        expect(
            w.request(Method::PUT, &["v1", "context", &path])
                .json(&json!({"value": i})),
            200,
        )
        .await?;
    }
    expect(
        post(&writers[1], &["v1", "topics"], json!({"name": ""})),
        400,
    )
    .await?;
    expect(post(&n1, &["v1", "topics"], json!({"name": "news"})), 201).await?;
    expect(
        n1.request(Method::DELETE, &["v1", "context", "nothing"]),
        404,
    )
    .await?;
    // Reads are not counted.
    expect(n1.request(Method::GET, &["v1", "context", "k0"]), 200).await?;

    // The default range ends today and holds every call (the test may straddle midnight UTC,
    // so counts are summed over the days). The admin key: the key creation, the topic, the
    // refused delete; the writer: three puts and a refused create.
    let want = BTreeMap::from([
        (admin_id.clone(), (3, 1, 0)),
        (writer_id.clone(), (4, 1, 0)),
    ]);
    // Counted with the audit entries, appended just after each answer.
    let u = wait_for("every call counted", RECOVER, async || {
        let u = expect(usage(&n0), 200).await?;
        let rows = u["daily"]["items"].as_array().context("items")?;
        Ok((per_key(rows)? == want).then_some(u))
    })
    .await?;
    let rows = u["daily"]["items"].as_array().context("items")?.clone();
    ensure!(u["api_calls"] == 7, "the totals stay as they were: {u}");
    let (from, to) = (
        u["daily"]["from"].as_str().context("from")?.to_string(),
        u["daily"]["to"].as_str().context("to")?.to_string(),
    );
    ensure!(from < to && u["daily"]["next_cursor"].is_null(), "{u}");
    ensure!(
        rows.iter()
            .all(|r| r["day"].as_str().is_some_and(|d| *d >= *from && *d <= *to)),
        "{u}"
    );

    // One key, one page at a time, through another node: the same rows.
    let range = [("from", from.as_str()), ("to", to.as_str())];
    ensure!(daily_rows(&n1, &range, 1).await? == rows, "paged");
    let mine = daily_rows(&n1, &[("key_id", writer_id.as_str())], 1).await?;
    ensure!(
        per_key(&mine)? == BTreeMap::from([(writer_id.clone(), (4, 1, 0))]),
        "{mine:?}"
    );
    // A range before any call is empty, and says which range it is.
    let old = expect(
        usage(&n1).query(&[("from", "2001-02-03"), ("to", "2001-02-03")]),
        200,
    )
    .await?;
    ensure!(
        old["daily"]["from"] == "2001-02-03"
            && old["daily"]["items"] == json!([])
            && old["api_calls"] == 7,
        "{old}"
    );

    // Given one end, the range is the 30 days from it.
    let from_only = expect(usage(&n1).query(&[("from", "2001-02-03")]), 200).await?;
    ensure!(
        from_only["daily"]["to"] == "2001-03-04",
        "{}",
        from_only["daily"]
    );

    // Bad ranges and cursors are refused with 400.
    for bad in [
        vec![("from", "2024-13-01")],
        vec![("to", "yesterday")],
        vec![("from", "2024-02-30")],
        vec![("from", "2024-03-02"), ("to", "2024-03-01")],
        vec![("from", "2023-01-01"), ("to", "2024-01-02")],
        vec![("key_id", "no such key!")],
        vec![("cursor", "x")],
        vec![("limit", "0")],
    ] {
        expect(usage(&n1).query(&bad), 400)
            .await
            .with_context(|| format!("{bad:?}"))?;
    }
    // The longest range is accepted.
    expect(
        usage(&n1).query(&[("from", "2023-01-01"), ("to", "2024-01-01")]),
        200,
    )
    .await?;

    // The counters are replicated: the same through the survivors after a node is killed.
    cluster.kill(0)?;
    let again = wait_for("usage after the kill", RECOVER, async || {
        let (status, body) = send(usage(&n1)).await?;
        Ok((status == 200).then_some(body))
    })
    .await?;
    let rows = again["daily"]["items"].as_array().context("items")?;
    ensure!(per_key(rows)? == want, "{again}");
    Ok(())
}
