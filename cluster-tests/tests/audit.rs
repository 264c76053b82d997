//! The audit log on a three-node cluster: every mutating call answered through any node has
//! exactly one entry, read back through any node, paged without skips or repeats, filtered;
//! and a call answered while the audit shard's leader is killed is still recorded.
//! Run `cargo build -p conclave-node` first.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use conclave_cluster_tests::http::expect_status as expect;
use conclave_cluster_tests::{wait_for, Cluster, NodeClient, ShardKind};
use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};

/// Deadline for one request.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Sends `req`; its status, `x-request-id` header and JSON body.
async fn call(req: RequestBuilder) -> Result<(u16, String, Value)> {
    let resp = req
        .timeout(TIMEOUT)
        .send()
        .await
        .context("request failed")?;
    let status = resp.status().as_u16();
    let id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = resp.text().await?;
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).with_context(|| format!("not json: {text}"))?
    };
    Ok((status, id, body))
}

/// Every entry of the audit log read through `c` with `query`, following cursors with pages of
/// `limit`; fails on a repeated entry.
async fn read_all(c: &NodeClient, query: &[(&str, &str)], limit: usize) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut cursor: Option<String> = None;
    let limit = limit.to_string();
    loop {
        let mut q: Vec<(&str, &str)> = query.to_vec();
        q.push(("limit", &limit));
        if let Some(c) = &cursor {
            q.push(("cursor", c));
        }
        let page = expect(
            c.request(Method::GET, &["v1", "audit", "log"]).query(&q),
            200,
        )
        .await?;
        for item in page["items"].as_array().context("items")? {
            let id = item["id"].as_str().context("id")?.to_string();
            ensure!(seen.insert(id.clone()), "entry {id} listed twice");
            out.push(item.clone());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return Ok(out),
        }
    }
}

/// `request_id` → entry.
fn by_request(entries: &[Value]) -> BTreeMap<String, Value> {
    entries
        .iter()
        .map(|e| {
            (
                e["request_id"].as_str().unwrap_or_default().to_string(),
                e.clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutating_call_has_one_entry_read_through_any_node() -> Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let (n0, n1, n2) = (cluster.api(0), cluster.api(1), cluster.api(2));

    // Mutating calls spread over the nodes, some refused; reads are not audited.
    let (s, put_id, _) = call(
        n0.request(Method::PUT, &["v1", "context", "plan"])
            .json(&json!({"value": 1})),
    )
    .await?;
    ensure!(s == 200, "put {s}");
    let (s, topic_id, _) = call(
        n1.request(Method::POST, &["v1", "topics"])
            .json(&json!({"name": "news"})),
    )
    .await?;
    ensure!(s == 201, "topic {s}");
    let (s, task_id, task) = call(
        n2.request(Method::POST, &["v1", "tasks"])
            .json(&json!({"title": "t"})),
    )
    .await?;
    ensure!(s == 201, "task {s}");
    let (s, missing_id, _) =
        call(n1.request(Method::DELETE, &["v1", "context", "nothing"])).await?;
    ensure!(s == 404, "missing delete {s}");
    let (s, del_id, _) = call(n2.request(Method::DELETE, &["v1", "context", "plan"])).await?;
    ensure!(s == 200, "delete {s}");
    let (s, _, _) = call(n0.request(Method::GET, &["v1", "context"])).await?;
    ensure!(s == 200, "list {s}");

    // Each call has exactly one entry, on every node, with what the call did. Entries are
    // appended just after each answer, so the last ones may take a moment to show.
    wait_for("all five entries", TIMEOUT, async || {
        Ok((read_all(n0, &[], 50).await?.len() >= 5).then_some(()))
    })
    .await?;
    for node in [n0, n1, n2] {
        let all = read_all(node, &[], 1).await?;
        let got = by_request(&all);
        ensure!(got.len() == all.len(), "request ids repeat in {all:?}");
        ensure!(all.len() == 5, "expected 5 entries, got {all:#?}");
        let put = &got[&put_id];
        ensure!(
            put["action"] == "PUT /v1/context/{key}"
                && put["targets"]["key"] == "plan"
                && put["status"] == 200
                && put["outcome"] == "ok"
                && put["via"] == "rest"
                && put["key_id"].is_string(),
            "{put}"
        );
        ensure!(
            got[&topic_id]["action"] == "POST /v1/topics",
            "{}",
            got[&topic_id]
        );
        let created = &got[&task_id];
        ensure!(
            created["targets"]["id"] == task["id"] && created["status"] == 201,
            "{created} for {task}"
        );
        let refused = &got[&missing_id];
        ensure!(
            refused["status"] == 404 && refused["outcome"] == "refused",
            "{refused}"
        );
        ensure!(
            got[&del_id]["action"] == "DELETE /v1/context/{key}",
            "{}",
            got[&del_id]
        );
        // Newest first.
        let ids: Vec<u64> = all
            .iter()
            .map(|e| {
                e["id"].as_str().unwrap_or_default()[4..]
                    .parse()
                    .unwrap_or(0)
            })
            .collect();
        ensure!(
            ids.windows(2).all(|w| w[0] > w[1]),
            "not newest first: {ids:?}"
        );
    }

    // Filters: by action prefix, by key, by transport, by time.
    let tasks = read_all(n1, &[("action", "POST /v1/tasks")], 10).await?;
    ensure!(
        tasks.len() == 1 && tasks[0]["request_id"] == task_id.as_str(),
        "{tasks:?}"
    );
    let deletes = read_all(n2, &[("action", "DELETE")], 10).await?;
    ensure!(deletes.len() == 2, "{deletes:?}");
    let mcp = read_all(n0, &[("via", "mcp")], 10).await?;
    ensure!(mcp.is_empty(), "{mcp:?}");
    let key_id = got_key_id(n0).await?;
    let mine = read_all(n0, &[("key_id", key_id.as_str())], 10).await?;
    ensure!(mine.len() == 5, "{mine:?}");
    let future = read_all(n0, &[("since", "99999999999999")], 10).await?;
    ensure!(future.is_empty(), "{future:?}");

    // Only admin keys read it; bad input is refused.
    let key = expect(
        n0.request(Method::POST, &["v1", "api-keys"])
            .json(&json!({"name": "writer", "scope": "full"})),
        201,
    )
    .await?;
    let writer = cluster.api_with_key(1, key["key"].as_str())?;
    conclave_cluster_tests::http::wait_key_usable(&writer).await?;
    expect(writer.request(Method::GET, &["v1", "audit", "log"]), 403).await?;
    for bad in [
        ("cursor", "x"),
        ("limit", "0"),
        ("via", "carrier-pigeon"),
        ("since", "-1"),
    ] {
        expect(
            n0.request(Method::GET, &["v1", "audit", "log"])
                .query(&[bad]),
            400,
        )
        .await?;
    }
    Ok(())
}

/// The id of the key `c` uses, from `GET /v1/session/me`.
async fn got_key_id(c: &NodeClient) -> Result<String> {
    let me = expect(c.request(Method::GET, &["v1", "session", "me"]), 200).await?;
    me["key"]["id"]
        .as_str()
        .or_else(|| me["key_id"].as_str())
        .map(String::from)
        .with_context(|| format!("no key id in {me}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_answered_across_an_audit_leader_kill_are_all_recorded() -> Result<()> {
    let mut cluster = Cluster::builder().nodes(3).start().await?;
    let leader_id = cluster.leader_of(ShardKind::Audit, "log").await?;
    let leader = cluster
        .node_index_by_id(leader_id)
        .context("audit leader not in the cluster")?;
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();

    // Writes through the surviving nodes before, during and after the kill of the audit
    // shard's leader; each answered success must have its entry.
    let mut acknowledged = Vec::new();
    let mut unknown = 0;
    for round in 0..30 {
        if round == 10 {
            cluster.kill(leader)?;
        }
        let node = cluster.api(others[round % 2]);
        let key = format!("k{round}");
        let (s, id, body) = call(
            node.request(Method::PUT, &["v1", "context", &key])
                .json(&json!({ "value": round })),
        )
        .await?;
        match s {
            200 => acknowledged.push((round, id)),
            // No leader for the context or audit shard within the budget: not acknowledged.
            503 => unknown += 1,
            other => anyhow::bail!("put {key}: {other} {body}"),
        }
    }
    ensure!(
        acknowledged.iter().any(|(round, _)| *round >= 10),
        "no call acknowledged after the kill (503: {unknown})"
    );

    // Entries of calls answered while the audit shard elected are retried until it has a
    // leader again.
    let reader = cluster.api(others[0]);
    let missing = wait_for(
        "an audit entry for every acknowledged call",
        TIMEOUT,
        async || {
            let Ok(entries) = read_all(reader, &[], 7).await else {
                return Ok(None);
            };
            let got = by_request(&entries);
            let missing: Vec<&String> = acknowledged
                .iter()
                .map(|(_, id)| id)
                .filter(|id| !got.contains_key(*id))
                .collect();
            Ok(missing.is_empty().then_some(missing))
        },
    )
    .await;
    ensure!(
        missing.is_ok(),
        "acknowledged calls without an audit entry: {missing:?}"
    );
    Ok(())
}

/// Calls answered through a node that dies before it appends their audit entries (the audit
/// shard's leader was killed just before, so the appends wait for an election): the entries are
/// appended by the leaders of the shards the calls changed, from the records the calls' own
/// writes committed, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_answered_by_a_node_that_dies_before_auditing_them_are_recorded() -> Result<()> {
    // Every attempt must record each call once. The relay must have appended in one of them:
    // an attempt can miss the window (the shard's leadership moved just before the kill, so
    // the serving node appended in time), never all three with a working relay.
    for attempt in 0..3 {
        if relayed_after_the_serving_node_died().await? {
            return Ok(());
        }
        tracing::info!(attempt, "the serving node appended before it died; again");
    }
    anyhow::bail!(
        "in three attempts, no relay that appended entries was logged by the surviving nodes"
    )
}

/// One attempt of the test above: whether a surviving node's relay appended entries.
async fn relayed_after_the_serving_node_died() -> Result<bool> {
    let mut cluster = Cluster::builder()
        .nodes(3)
        .env("CONCLAVE_AUDIT_RELAY_AFTER_SECS", "2")
        .start()
        .await?;
    let audit_leader = cluster
        .node_index_by_id(cluster.leader_of(ShardKind::Audit, "log").await?)
        .context("audit leader not in the cluster")?;
    let serving = (audit_leader + 1) % 3;
    let reader = (audit_leader + 2) % 3;
    // Keys whose shards the audit leader does not lead, so they stay writable while it is
    // down.
    let mut keys = Vec::new();
    for i in 0..64 {
        let key = format!("k{i}");
        let leader = cluster.leader_of(ShardKind::Context, &key).await?;
        if cluster.node_index_by_id(leader) != Some(audit_leader) {
            keys.push(key);
        }
        if keys.len() == 4 {
            break;
        }
    }
    ensure!(keys.len() == 4, "no keys led away from the audit leader");

    cluster.kill(audit_leader)?;
    let mut acknowledged = Vec::new();
    for key in &keys {
        let (s, id, body) = call(
            cluster
                .api(serving)
                .request(Method::PUT, &["v1", "context", key])
                .json(&json!({ "value": key })),
        )
        .await?;
        ensure!(s == 200, "put {key}: {s} {body}");
        acknowledged.push(id);
    }
    cluster.kill(serving)?;
    cluster.restart(audit_leader).await?;

    let got = wait_for("the relayed audit entries", TIMEOUT, async || {
        let Ok(entries) = read_all(cluster.api(reader), &[], 50).await else {
            return Ok(None);
        };
        let got = by_request(&entries);
        Ok(acknowledged
            .iter()
            .all(|id| got.contains_key(id))
            .then_some(entries))
    })
    .await?;
    for id in &acknowledged {
        let entries: Vec<&Value> = got
            .iter()
            .filter(|e| e["request_id"] == id.as_str())
            .collect();
        ensure!(
            entries.len() == 1,
            "call {id} recorded {} times",
            entries.len()
        );
        let e = entries[0];
        ensure!(
            e["action"] == "PUT /v1/context/{key}"
                && e["status"] == 200
                && e["outcome"] == "ok"
                && e["targets"]["key"].is_string(),
            "{e}"
        );
    }
    let log = (0..3)
        .filter(|&i| i != serving)
        .map(|i| cluster.stderr_log(i))
        .collect::<Result<Vec<_>>>()?
        .concat();
    Ok(log
        .lines()
        .any(|l| l.contains("outbox relay: appended") && !l.contains("appended=0")))
}
