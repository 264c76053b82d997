//! Agents and messages on a three-node cluster, requests spread over the nodes: registration
//! and listing by status, presence from heartbeats with a short timeout, disconnect and delete;
//! direct and broadcast messages across shards, `since` paging that never skips or repeats, and
//! idempotent sends. Run `cargo build -p conclave-node` first.
//!
//! Isolation between workspaces is not exercised here: the cluster has one workspace and the
//! API cannot create another yet (every id is keyed by workspace in the state machine, which
//! the apply unit tests check).

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use conclave_cluster_tests::{retry_until_ok, wait_until, Cluster, NodeClient};
use reqwest::Method;
use serde_json::{json, Value};

/// Deadline for conditions that depend on replication or timers.
const WAIT: Duration = Duration::from_secs(30);

/// One raw call: the status and the JSON body (`Null` when empty).
async fn call(
    client: &NodeClient,
    method: Method,
    segments: &[&str],
    query: &[(&str, &str)],
    body: Option<Value>,
) -> Result<(u16, Value)> {
    let mut req = client.request(method, segments).query(query);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.context("request failed")?;
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await?;
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Ok((status, value))
}

/// A call that must answer `want`; returns the body.
async fn expect(
    client: &NodeClient,
    method: Method,
    segments: &[&str],
    query: &[(&str, &str)],
    body: Option<Value>,
    want: u16,
) -> Result<Value> {
    let (status, value) = call(client, method.clone(), segments, query, body).await?;
    ensure!(
        status == want,
        "{method} /{} {query:?}: expected {want}, got {status}: {value}",
        segments.join("/")
    );
    if status >= 400 {
        ensure!(
            value["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "error without a message: {value}"
        );
    }
    Ok(value)
}

async fn register(client: &NodeClient, name: &str) -> Result<Value> {
    expect(
        client,
        Method::POST,
        &["v1", "agents"],
        &[],
        Some(json!({ "name": name })),
        201,
    )
    .await
}

/// Names of the workspace's agents with `status` (all when `None`), read page by page.
async fn agent_names(
    client: &NodeClient,
    status: Option<&str>,
    limit: usize,
) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    let limit = limit.to_string();
    loop {
        let mut q = vec![("limit", limit.as_str())];
        if let Some(s) = status {
            q.push(("status", s));
        }
        if let Some(c) = &cursor {
            q.push(("cursor", c.as_str()));
        }
        let page = expect(client, Method::GET, &["v1", "agents"], &q, None, 200).await?;
        let items = page["items"].as_array().context("items")?;
        ensure!(
            items.len() <= limit.parse::<usize>()?,
            "page too long: {page}"
        );
        names.extend(
            items
                .iter()
                .map(|a| a["name"].as_str().unwrap_or("").to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return Ok(names),
        }
    }
}

/// The whole inbox of `agent` as `(seq, id)`, read `limit` at a time, each page from the next
/// node in turn.
async fn inbox(cluster: &Cluster, agent: &str, limit: usize) -> Result<Vec<(u64, String, Value)>> {
    let mut out = Vec::new();
    let mut since = 0u64;
    let limit_s = limit.to_string();
    for page_no in 0.. {
        let since_s = since.to_string();
        let page = expect(
            cluster.api(page_no % cluster.len()),
            Method::GET,
            &["v1", "messages"],
            &[("agent", agent), ("since", &since_s), ("limit", &limit_s)],
            None,
            200,
        )
        .await?;
        let items = page["items"].as_array().context("items")?.clone();
        let next = page["next_since"].as_u64().context("next_since")?;
        if items.is_empty() {
            ensure!(next == since, "empty page moved next_since: {page}");
            return Ok(out);
        }
        for i in items {
            out.push((
                i["seq"].as_u64().context("seq")?,
                i["id"].as_str().context("id")?.to_string(),
                i,
            ));
        }
        ensure!(
            next == out.last().expect("item").0,
            "next_since is not the last seq: {page}"
        );
        since = next;
    }
    unreachable!()
}

fn is_gap_free(items: &[(u64, String, Value)]) -> bool {
    items
        .iter()
        .enumerate()
        .all(|(i, (seq, ..))| *seq == i as u64 + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_register_list_keep_presence_and_delete_across_nodes() -> Result<()> {
    let cluster = Cluster::builder()
        .nodes(3)
        .env("CONCLAVE_PRESENCE_TIMEOUT_SECS", "2")
        .start()
        .await?;
    let (n0, n1, n2) = (cluster.api(0), cluster.api(1), cluster.api(2));

    // Register through node 0: new agents are offline.
    for name in ["alpha", "beta", "gamma"] {
        let a = register(n0, name).await?;
        ensure!(
            a["id"] == name && a["status"] == "offline" && a["last_seen_at"].is_null(),
            "{a}"
        );
    }
    // Registering again updates and answers 200, keeping the registration time.
    let first = expect(
        n1,
        Method::GET,
        &["v1", "agents"],
        &[("limit", "1")],
        None,
        200,
    )
    .await?;
    let again = expect(
        n1,
        Method::POST,
        &["v1", "agents"],
        &[],
        Some(json!({ "name": "alpha", "description": "first agent", "capabilities": ["search"], "metadata": { "team": "x" } })),
        200,
    )
    .await?;
    ensure!(
        again["description"] == "first agent"
            && again["capabilities"] == json!(["search"])
            && again["metadata"] == json!({ "team": "x" })
            && again["registered_at"] == first["items"][0]["registered_at"],
        "{again} vs {first}"
    );

    // Bad input is a 400 naming the problem and registers nothing.
    for bad in [
        json!({ "name": "has:colon" }),
        json!({ "name": "" }),
        json!({ "name": "x".repeat(129) }),
        json!({ "name": "ok", "metadata": [1] }),
        json!({ "name": "ok", "capabilities": vec!["c"; 65] }),
        json!({ "name": "ok", "description": "d".repeat(4097) }),
        json!({ "name": "ok", "unknown": 1 }),
    ] {
        expect(n0, Method::POST, &["v1", "agents"], &[], Some(bad), 400).await?;
    }

    // Every node lists the same agents, by name, page by page, and filters by status.
    for client in [n1, n2] {
        ensure!(agent_names(client, None, 2).await? == ["alpha", "beta", "gamma"]);
        ensure!(agent_names(client, Some("offline"), 100).await? == ["alpha", "beta", "gamma"]);
        ensure!(agent_names(client, Some("online"), 100).await?.is_empty());
    }
    for bad in [("status", "away"), ("limit", "0"), ("limit", "1001")] {
        expect(n1, Method::GET, &["v1", "agents"], &[bad], None, 400).await?;
    }

    // A heartbeat through node 2 brings beta online; node 1 sees it.
    let hb = expect(
        n2,
        Method::POST,
        &["v1", "agents", "beta", "heartbeat"],
        &[],
        None,
        200,
    )
    .await?;
    ensure!(
        hb["status"] == "online" && hb["timeout_secs"] == 2 && hb["last_seen_at"].is_u64(),
        "{hb}"
    );
    ensure!(agent_names(n1, Some("online"), 100).await? == ["beta"]);
    let listed = expect(
        n0,
        Method::GET,
        &["v1", "agents"],
        &[("status", "online")],
        None,
        200,
    )
    .await?;
    ensure!(listed["items"][0]["last_seen_at"].is_u64(), "{listed}");
    // Heartbeats: unknown agents are 404, a body other than {} is 400.
    expect(
        n0,
        Method::POST,
        &["v1", "agents", "nobody", "heartbeat"],
        &[],
        None,
        404,
    )
    .await?;
    expect(
        n0,
        Method::POST,
        &["v1", "agents", "bad:id", "heartbeat"],
        &[],
        None,
        404,
    )
    .await?;
    expect(
        n0,
        Method::POST,
        &["v1", "agents", "beta", "heartbeat"],
        &[],
        Some(json!({ "x": 1 })),
        400,
    )
    .await?;
    let last = expect(
        n0,
        Method::POST,
        &["v1", "agents", "beta", "heartbeat"],
        &[],
        Some(json!({})),
        200,
    )
    .await?;

    // Silence past the presence timeout takes beta offline by itself; the record keeps the
    // time of its last heartbeat.
    wait_until("beta to go offline after silence", WAIT, async || {
        Ok(agent_names(n0, Some("online"), 100).await?.is_empty())
    })
    .await?;
    ensure!(agent_names(n2, Some("offline"), 100).await? == ["alpha", "beta", "gamma"]);
    let offline = expect(
        n1,
        Method::GET,
        &["v1", "agents"],
        &[("cursor", "alpha"), ("limit", "1")],
        None,
        200,
    )
    .await?;
    ensure!(
        offline["items"][0]["name"] == "beta"
            && offline["items"][0]["last_seen_at"] == last["last_seen_at"],
        "{offline} after {last}"
    );

    // Disconnect takes an agent offline at once; a later heartbeat brings it back.
    expect(
        n1,
        Method::POST,
        &["v1", "agents", "gamma", "heartbeat"],
        &[],
        None,
        200,
    )
    .await?;
    ensure!(agent_names(n2, Some("online"), 100).await? == ["gamma"]);
    let off = expect(
        n0,
        Method::POST,
        &["v1", "agents", "gamma", "disconnect"],
        &[],
        None,
        200,
    )
    .await?;
    ensure!(off["status"] == "offline", "{off}");
    ensure!(agent_names(n1, Some("online"), 100).await?.is_empty());
    expect(
        n2,
        Method::POST,
        &["v1", "agents", "gamma", "disconnect"],
        &[],
        Some(json!({})),
        200,
    )
    .await?;
    expect(
        n2,
        Method::POST,
        &["v1", "agents", "gamma", "heartbeat"],
        &[],
        None,
        200,
    )
    .await?;
    ensure!(agent_names(n0, Some("online"), 100).await? == ["gamma"]);
    expect(
        n0,
        Method::POST,
        &["v1", "agents", "gamma", "disconnect"],
        &[],
        None,
        200,
    )
    .await?;
    expect(
        n0,
        Method::POST,
        &["v1", "agents", "nobody", "disconnect"],
        &[],
        None,
        404,
    )
    .await?;

    // Delete: gone everywhere, then 404 for every call on it.
    let del = expect(
        n1,
        Method::DELETE,
        &["v1", "agents", "alpha"],
        &[],
        None,
        200,
    )
    .await?;
    ensure!(del == json!({ "id": "alpha", "deleted": true }), "{del}");
    // Once deleted, the agent answers 404 to everything, through any node.
    type Call<'a> = (
        &'a NodeClient,
        Method,
        &'a [&'a str],
        &'a [(&'a str, &'a str)],
    );
    let gone: [Call; 4] = [
        (n2, Method::DELETE, &["v1", "agents", "alpha"], &[]),
        (
            n0,
            Method::POST,
            &["v1", "agents", "alpha", "heartbeat"],
            &[],
        ),
        (
            n0,
            Method::POST,
            &["v1", "agents", "alpha", "disconnect"],
            &[],
        ),
        (n0, Method::GET, &["v1", "messages"], &[("agent", "alpha")]),
    ];
    for (node, method, path, query) in gone {
        expect(node, method, path, query, None, 404).await?;
    }
    ensure!(agent_names(n2, None, 100).await? == ["beta", "gamma"]);

    // A read-scope key reads agents and inboxes but every write is a 403 that changes nothing.
    let key = n0.create_api_key("agents-reader", "read").await?;
    let reader = cluster.api_with_key(1, Some(&key.key))?;
    retry_until_ok(WAIT, async || {
        expect(&reader, Method::GET, &["v1", "agents"], &[], None, 200).await
    })
    .await?;
    expect(
        &reader,
        Method::GET,
        &["v1", "messages"],
        &[("agent", "beta")],
        None,
        200,
    )
    .await?;
    let writes: [(Method, Vec<&str>, Option<Value>); 5] = [
        (
            Method::POST,
            vec!["v1", "agents"],
            Some(json!({ "name": "sneaky" })),
        ),
        (
            Method::POST,
            vec!["v1", "agents", "beta", "heartbeat"],
            None,
        ),
        (
            Method::POST,
            vec!["v1", "agents", "beta", "disconnect"],
            None,
        ),
        (Method::DELETE, vec!["v1", "agents", "beta"], None),
        (
            Method::POST,
            vec!["v1", "messages"],
            Some(json!({ "to": "agent:beta", "body": "no" })),
        ),
    ];
    for (method, path, body) in writes {
        expect(&reader, method, &path, &[], body, 403).await?;
    }
    ensure!(agent_names(n0, None, 100).await? == ["beta", "gamma"]);
    ensure!(agent_names(n0, Some("online"), 100).await?.is_empty());
    ensure!(inbox(&cluster, "beta", 10).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_reach_inboxes_across_shards_once_and_in_order() -> Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let (n0, n1, n2) = (cluster.api(0), cluster.api(1), cluster.api(2));
    let names: Vec<String> = (0..12).map(|i| format!("ag-{i:02}")).collect();
    for name in &names {
        register(n0, name).await?;
    }

    // Direct messages: a DM's id names the recipient's shard, so twelve recipients show the
    // agents span several shards.
    let mut shards = BTreeSet::new();
    let mut first_ids = Vec::new();
    for (i, to) in names.iter().enumerate().skip(1) {
        let m = expect(
            cluster.api(i % 3),
            Method::POST,
            &["v1", "messages"],
            &[],
            Some(json!({ "to": format!("agent:{to}"), "from": "agent:ag-00", "body": { "n": i } })),
            201,
        )
        .await?;
        ensure!(
            m["seq"] == 1
                && m["to"] == format!("agent:{to}")
                && m["from"] == "agent:ag-00"
                && m["priority"] == "normal"
                && m["recipients"] == 1
                && m["body"] == json!({ "n": i }),
            "{m}"
        );
        let id = m["id"].as_str().context("id")?.to_string();
        shards.insert(id.split('_').nth(1).context("shard in id")?.to_string());
        first_ids.push(id);
    }
    ensure!(shards.len() >= 2, "all recipients on one shard: {shards:?}");

    // Replies carry metadata and priority and keep the thread of the first message.
    let root = first_ids[0].clone();
    let reply = expect(
        n1,
        Method::POST,
        &["v1", "messages"],
        &[],
        Some(json!({ "to": "agent:ag-00", "from": "ag-01", "body": "re", "reply_to": root, "priority": "high", "metadata": { "k": "v" } })),
        201,
    )
    .await?;
    ensure!(
        reply["thread_id"] == root.as_str()
            && reply["priority"] == "high"
            && reply["metadata"] == json!({ "k": "v" }),
        "{reply}"
    );
    let reply2 = expect(
        n2,
        Method::POST,
        &["v1", "messages"],
        &[],
        Some(json!({ "to": "agent:ag-01", "body": "re re", "reply_to": reply["id"] })),
        201,
    )
    .await?;
    ensure!(
        reply2["thread_id"] == root.as_str() && reply2["reply_to"] == reply["id"],
        "{reply2}"
    );

    // Bad sends are refused and deliver nothing.
    let before = inbox(&cluster, "ag-01", 100).await?;
    for (body, want) in [
        (json!({ "to": "agent:nobody", "body": 1 }), 404),
        (
            json!({ "to": "agent:ag-01", "from": "agent:nobody", "body": 1 }),
            404,
        ),
        (json!({ "to": "ag-01", "body": 1 }), 400),
        (json!({ "to": "agent:ag-01" }), 400),
        (
            json!({ "to": "agent:ag-01", "body": 1, "priority": "later" }),
            400,
        ),
        (
            json!({ "to": "agent:ag-01", "body": 1, "metadata": "x" }),
            400,
        ),
        (
            json!({ "to": "agent:ag-01", "body": 1, "reply_to": "msg_1_999999" }),
            404,
        ),
        (
            json!({ "to": "agent:ag-01", "body": 1, "reply_to": "nonsense" }),
            400,
        ),
        (
            json!({ "to": "agent:ag-01", "body": 1, "idempotency_key": "" }),
            400,
        ),
        (
            json!({ "to": "agent:nobody", "body": 1, "idempotency_key": "k-404" }),
            404,
        ),
    ] {
        expect(n0, Method::POST, &["v1", "messages"], &[], Some(body), want).await?;
    }
    ensure!(
        inbox(&cluster, "ag-01", 100).await? == before,
        "a refused send changed the inbox"
    );
    for q in [
        vec![("agent", "nobody")],
        vec![("agent", "ag-01"), ("since", "x")],
        vec![("agent", "ag-01"), ("limit", "0")],
        vec![],
    ] {
        let (status, _) = call(n1, Method::GET, &["v1", "messages"], &q, None).await?;
        ensure!(status == 404 || status == 400, "{q:?} answered {status}");
    }

    // A broadcast lands once in every other agent's inbox, with each inbox's own seq.
    let b = expect(
        n2,
        Method::POST,
        &["v1", "messages"],
        &[],
        Some(json!({ "to": "broadcast", "from": "agent:ag-00", "body": "all hands" })),
        201,
    )
    .await?;
    let bid = b["id"].as_str().context("id")?.to_string();
    ensure!(b["recipients"] == 11 && b.get("seq").is_none(), "{b}");
    for name in &names {
        let items = inbox(&cluster, name, 100).await?;
        ensure!(is_gap_free(&items), "{name}: {items:?}");
        let copies = items.iter().filter(|(_, id, _)| *id == bid).count();
        let want = usize::from(name != "ag-00");
        ensure!(
            copies == want,
            "{name} holds {copies} copies of the broadcast"
        );
    }

    // Many sends to one agent, interleaved with broadcasts: `since` pages of 7, each page from
    // another node, read every message exactly once with seqs 1, 2, 3, ...
    let mut sent = BTreeSet::new();
    for i in 0..24 {
        let body = if i % 8 == 0 {
            json!({ "to": "broadcast", "body": { "b": i } })
        } else {
            json!({ "to": "agent:ag-05", "from": "agent:ag-06", "body": { "d": i } })
        };
        let m = expect(
            cluster.api(i % 3),
            Method::POST,
            &["v1", "messages"],
            &[],
            Some(body),
            201,
        )
        .await?;
        sent.insert(m["id"].as_str().context("id")?.to_string());
    }
    let items = inbox(&cluster, "ag-05", 7).await?;
    ensure!(is_gap_free(&items), "{items:?}");
    let ids: BTreeSet<String> = items.iter().map(|(_, id, _)| id.clone()).collect();
    ensure!(ids.len() == items.len(), "an id repeats: {items:?}");
    ensure!(
        sent.is_subset(&ids),
        "missing: {:?}",
        sent.difference(&ids).collect::<Vec<_>>()
    );
    ensure!(
        items.len() == 1 + 1 + sent.len(),
        "ag-05 holds {}",
        items.len()
    );

    // Idempotency: a retried DM (header or body key, any node) returns the original message
    // and lands once; the same key with another request is a 409.
    let dm = json!({ "to": "agent:ag-03", "from": "agent:ag-04", "body": "once" });
    let (status, original) = {
        let resp = n0
            .request(Method::POST, &["v1", "messages"])
            .header("Idempotency-Key", "dm-1")
            .json(&dm)
            .send()
            .await?;
        (resp.status().as_u16(), resp.json::<Value>().await?)
    };
    ensure!(status == 201, "{status} {original}");
    for client in [n1, n2] {
        let resp = client
            .request(Method::POST, &["v1", "messages"])
            .header("Idempotency-Key", "dm-1")
            .json(&dm)
            .send()
            .await?;
        ensure!(
            resp.status().as_u16() == 200,
            "retry answered {}",
            resp.status()
        );
        let again: Value = resp.json().await?;
        ensure!(again == original, "retry {again} differs from {original}");
    }
    let mut with_body_key = dm.clone();
    with_body_key["idempotency_key"] = json!("dm-1");
    let again = expect(
        n1,
        Method::POST,
        &["v1", "messages"],
        &[],
        Some(with_body_key.clone()),
        200,
    )
    .await?;
    ensure!(again["id"] == original["id"], "{again}");
    with_body_key["body"] = json!("changed");
    expect(
        n2,
        Method::POST,
        &["v1", "messages"],
        &[],
        Some(with_body_key),
        409,
    )
    .await?;
    // The header wins over the body's key: this is a new send under "other".
    let (status, by_header) = {
        let resp = n0
            .request(Method::POST, &["v1", "messages"])
            .header("Idempotency-Key", "other")
            .json(&json!({ "to": "agent:ag-03", "body": "x", "idempotency_key": "dm-1" }))
            .send()
            .await?;
        (resp.status().as_u16(), resp.json::<Value>().await?)
    };
    ensure!(status == 201, "header and body keys differ: {status}");
    ensure!(
        by_header["id"] != original["id"],
        "the header's key was not the one used"
    );
    let ag03 = inbox(&cluster, "ag-03", 100).await?;
    let copies = ag03
        .iter()
        .filter(|(_, id, _)| Some(id.as_str()) == original["id"].as_str())
        .count();
    ensure!(copies == 1, "the DM landed {copies} times");
    ensure!(ag03
        .iter()
        .any(|(seq, id, _)| Some(id.as_str()) == original["id"].as_str()
            && Some(*seq) == original["seq"].as_u64()));

    // A retried broadcast duplicates nowhere and reaches only the original recipients.
    let bc = json!({ "to": "broadcast", "from": "agent:ag-00", "body": "once for all", "idempotency_key": "bc-1" });
    let first = expect(
        n0,
        Method::POST,
        &["v1", "messages"],
        &[],
        Some(bc.clone()),
        201,
    )
    .await?;
    register(n2, "late").await?;
    for client in [n1, n2] {
        let again = expect(
            client,
            Method::POST,
            &["v1", "messages"],
            &[],
            Some(bc.clone()),
            200,
        )
        .await?;
        ensure!(
            again["id"] == first["id"] && again["recipients"] == 11,
            "{again}"
        );
    }
    for name in &names {
        let items = inbox(&cluster, name, 50).await?;
        ensure!(is_gap_free(&items), "{name}: {items:?}");
        let copies = items
            .iter()
            .filter(|(_, id, _)| Some(id.as_str()) == first["id"].as_str())
            .count();
        ensure!(
            copies == usize::from(name != "ag-00"),
            "{name} holds {copies} copies"
        );
    }
    ensure!(
        inbox(&cluster, "late", 10).await?.is_empty(),
        "a retry reached an agent registered after the send"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_survives_the_loss_of_the_agent_shards_leader() -> Result<()> {
    let mut cluster = Cluster::builder()
        .nodes(3)
        .env("CONCLAVE_PRESENCE_TIMEOUT_SECS", "3")
        .start()
        .await?;
    cluster.wait_converged().await?;
    register(cluster.api(0), "survivor").await?;
    expect(
        cluster.api(1),
        Method::POST,
        &["v1", "agents", "survivor", "heartbeat"],
        &[],
        None,
        200,
    )
    .await?;
    ensure!(agent_names(cluster.api(2), Some("online"), 10).await? == ["survivor"]);

    // Kill the node leading the agent's shard: the presence actor holding its last heartbeat
    // dies with it.
    let leader = wait_for_agent_leader(&cluster, 0).await?;
    let index = cluster
        .node_index_by_id(leader)
        .context("leader is a cluster node")?;
    cluster.kill(index)?;
    let alive: Vec<usize> = (0..3).filter(|&i| i != index).collect();

    // The new leader adopts the agent stored online and, with no heartbeat coming, takes it
    // offline after its grace period (with no adoption it would stay online forever).
    let via = cluster.api(alive[0]);
    wait_until(
        "the silent agent to go offline under the new leader",
        WAIT,
        async || Ok(agent_names(via, Some("offline"), 10).await? == ["survivor"]),
    )
    .await?;

    // Heartbeats through the survivors bring it back.
    retry_until_ok(WAIT, async || {
        expect(
            cluster.api(alive[1]),
            Method::POST,
            &["v1", "agents", "survivor", "heartbeat"],
            &[],
            None,
            200,
        )
        .await
    })
    .await?;
    ensure!(agent_names(via, Some("online"), 10).await? == ["survivor"]);
    Ok(())
}

/// The node id leading the shard of agent `survivor`, as node `via` knows it.
async fn wait_for_agent_leader(cluster: &Cluster, via: usize) -> Result<u64> {
    conclave_cluster_tests::wait_for("a leader for the agent's shard", WAIT, async || {
        let loc = expect(
            cluster.api(via),
            Method::GET,
            &["v1", "cluster", "locate"],
            &[("kind", "agent"), ("name", "survivor")],
            None,
            200,
        )
        .await?;
        Ok(loc["leader"].as_u64())
    })
    .await
}

/// A heartbeat of `agent` through `client` that must succeed; returns its `timeout_secs`.
async fn heartbeat(client: &NodeClient, agent: &str) -> Result<u64> {
    let hb = expect(
        client,
        Method::POST,
        &["v1", "agents", agent, "heartbeat"],
        &[],
        None,
        200,
    )
    .await?;
    hb["timeout_secs"].as_u64().context("timeout_secs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_follows_the_workspace_timeout_and_its_changes() -> Result<()> {
    let cluster = Cluster::builder()
        .nodes(3)
        .env("CONCLAVE_PRESENCE_TIMEOUT_SECS", "3")
        .start()
        .await?;
    let home = cluster.api(0);

    // A workspace that sets a long timeout; the bootstrap workspace sets none, so the nodes'
    // 3 s applies there, and both show what applies.
    let created = expect(
        cluster.api(1),
        Method::POST,
        &["v1", "workspaces"],
        &[],
        Some(json!({ "name": "patient", "settings": { "presence_timeout_secs": 3600 } })),
        201,
    )
    .await?;
    ensure!(
        created["workspace"]["settings"]["presence_timeout_secs"] == 3600,
        "{created}"
    );
    let ws_b = created["workspace"]["id"]
        .as_str()
        .context("id")?
        .to_string();
    let secret = created["admin_key"]["key"].as_str().context("key")?;
    let b: Vec<NodeClient> = (0..3)
        .map(|i| cluster.api_with_key(i, Some(secret)))
        .collect::<Result<_>>()?;
    for client in &b {
        conclave_cluster_tests::http::wait_key_usable(client).await?;
    }
    let own = cluster.workspace_id().to_string();
    let shown = expect(
        home,
        Method::GET,
        &["v1", "workspaces", &own],
        &[],
        None,
        200,
    )
    .await?;
    ensure!(shown["settings"]["presence_timeout_secs"] == 3, "{shown}");

    // Both agents heartbeat, the patient one first; each answer names its workspace's timeout.
    register(&b[0], "patient").await?;
    register(home, "quiet").await?;
    ensure!(heartbeat(&b[1], "patient").await? == 3600);
    ensure!(heartbeat(cluster.api(2), "quiet").await? == 3);

    // The quiet agent goes offline after the nodes' 3 s, twice over; by then the patient one
    // has been silent for more than 6 s and is still online: its workspace's timeout applies.
    for round in 0..2 {
        if round > 0 {
            heartbeat(cluster.api(1), "quiet").await?;
        }
        wait_until(
            "quiet to go offline after the node timeout",
            WAIT,
            async || Ok(agent_names(cluster.api(0), Some("offline"), 10).await? == ["quiet"]),
        )
        .await?;
    }
    for client in &b {
        ensure!(agent_names(client, Some("online"), 10).await? == ["patient"]);
    }

    // Lowering the workspace's timeout takes effect without a restart, on the agent already
    // online: silent for longer than the new 5 s, it goes offline within about a second.
    let patched = expect(
        &b[2],
        Method::PATCH,
        &["v1", "workspaces", &ws_b, "settings"],
        &[],
        Some(json!({ "presence_timeout_secs": 5 })),
        200,
    )
    .await?;
    ensure!(
        patched["settings"]["presence_timeout_secs"] == 5,
        "{patched}"
    );
    for client in &b {
        wait_until("patient to go offline after the change", WAIT, async || {
            Ok(agent_names(client, Some("offline"), 10).await? == ["patient"])
        })
        .await?;
        ensure!(agent_names(client, Some("online"), 10).await?.is_empty());
    }
    // Heartbeats now answer the new timeout on every node.
    for client in &b {
        wait_until("every node to serve the new timeout", WAIT, async || {
            Ok(heartbeat(client, "patient").await? == 5)
        })
        .await?;
    }
    Ok(())
}
