//! Topics end to end on a three-node cluster, with requests spread over the nodes: listing with
//! cursor paging across shards, gap-free publishing, subscriptions with a server-side cursor,
//! retention compaction, delete and re-create, input checks, scopes, and restricted topics with
//! ACL entries enforced on every node. Run `cargo build -p conclave-node` first.
//!
//! There is no API to create a second workspace yet, so workspace isolation of topics is covered
//! by the shard's unit tests (keys are per workspace) and not here.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use conclave_cluster_tests::http::expect_status as expect;
use conclave_cluster_tests::{wait_until, Cluster, NodeClient};
use reqwest::Method;
use serde_json::{json, Value};

/// Deadline for one request.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline for a condition to hold on every node (meta replication, compaction).
const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_publish_subscribe_compact_and_delete_across_nodes() -> Result<()> {
    let cluster = Cluster::builder()
        .nodes(3)
        .env("CONCLAVE_COMPACTION_INTERVAL_SECS", "1")
        .start()
        .await?;
    let api = |i: usize| cluster.api(i % 3);

    // Phase: topics created through every node are listed once each, in name order, page by
    // page across shards.
    let names: Vec<String> = (0..7).map(|i| format!("list-{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        let t = expect(
            api(i)
                .request(Method::POST, &["v1", "topics"])
                .json(&json!({ "name": name, "description": "paged" })),
            201,
        )
        .await?;
        ensure!(
            t["name"] == json!(name)
                && t["last_seq"] == json!(0)
                && t["first_seq"] == json!(1)
                && t["retention_hours"] == json!(168)
                && t["access"] == json!("open"),
            "created {t}"
        );
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for page_no in 0.. {
        ensure!(page_no < 10, "paging does not end: {seen:?}");
        let mut req = api(page_no)
            .request(Method::GET, &["v1", "topics"])
            .query(&[("limit", "2")]);
        if let Some(c) = &cursor {
            req = req.query(&[("cursor", c)]);
        }
        let page = expect(req, 200).await?;
        let items = page["items"].as_array().context("items")?;
        ensure!(items.len() <= 2, "page larger than the limit: {page}");
        seen.extend(
            items
                .iter()
                .map(|t| t["name"].as_str().unwrap_or("").to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    ensure!(seen == names, "listed {seen:?}, created {names:?}");

    // Phase: messages published through every node get gap-free sequences and read back in
    // order from every node.
    expect(
        api(1)
            .request(Method::POST, &["v1", "topics"])
            .json(&json!({ "name": "feed" })),
        201,
    )
    .await?;
    for n in 1..=12u64 {
        let p = expect(
            api(n as usize)
                .request(Method::POST, &["v1", "topics", "feed", "publish"])
                .json(&json!({ "body": { "n": n }, "from": "agent:pub", "metadata": { "k": n } })),
            201,
        )
        .await?;
        ensure!(p["seq"] == json!(n), "publish {n} got {p}");
    }
    for node in 0..3 {
        let mut since = 0;
        let mut got = Vec::new();
        loop {
            let page = read(
                api(node),
                "feed",
                &[("since", since.to_string()), ("limit", "5".into())],
            )
            .await?;
            let items = page["items"].as_array().context("items")?.clone();
            if items.is_empty() {
                break;
            }
            for m in &items {
                ensure!(
                    m["body"] == json!({ "n": m["seq"] }) && m["from"] == json!("pub"),
                    "message {m}"
                );
                got.push(m["seq"].as_u64().context("seq")?);
            }
            since = page["next_since"].as_u64().context("next_since")?;
        }
        ensure!(
            got == (1..=12).collect::<Vec<_>>(),
            "node {node} read {got:?}"
        );
    }

    // Phase: a subscription keeps a server-side cursor; a restarted reader resumes from it.
    let sub = expect(
        api(1)
            .request(Method::POST, &["v1", "topics", "feed", "subscribe"])
            .json(&json!({ "agent": "worker", "from": "earliest" })),
        201,
    )
    .await?;
    ensure!(sub["cursor"] == json!(0), "subscribed {sub}");
    let again = expect(
        api(2)
            .request(Method::POST, &["v1", "topics", "feed", "subscribe"])
            .json(&json!({ "agent": "worker" })),
        200,
    )
    .await?;
    ensure!(
        again["cursor"] == json!(0),
        "subscribing again moved the cursor: {again}"
    );
    let first = read(
        api(2),
        "feed",
        &[("agent", "worker".into()), ("limit", "5".into())],
    )
    .await?;
    ensure!(seqs(&first)? == vec![1, 2, 3, 4, 5], "first read {first}");
    let second = read(
        api(0),
        "feed",
        &[
            ("agent", "worker".into()),
            ("since", "5".into()),
            ("limit", "5".into()),
        ],
    )
    .await?;
    ensure!(
        seqs(&second)? == vec![6, 7, 8, 9, 10],
        "second read {second}"
    );
    // "Restart": no local state, no since; the cursor (5) is on the server, on any node.
    for node in 0..3 {
        let resumed = read(
            api(node),
            "feed",
            &[("agent", "worker".into()), ("limit", "3".into())],
        )
        .await?;
        ensure!(
            seqs(&resumed)? == vec![6, 7, 8],
            "node {node} resumed at {resumed}"
        );
    }
    // Acknowledging backwards does not move the cursor back.
    read(
        api(1),
        "feed",
        &[("agent", "worker".into()), ("since", "2".into())],
    )
    .await?;
    let resumed = read(
        api(1),
        "feed",
        &[("agent", "worker".into()), ("limit", "1".into())],
    )
    .await?;
    ensure!(seqs(&resumed)? == vec![6], "cursor moved back: {resumed}");

    // Phase: the agent's subscriptions are listed across shards, page by page.
    for t in ["list-2", "list-5"] {
        expect(
            api(0)
                .request(Method::POST, &["v1", "topics", t, "subscribe"])
                .json(&json!({ "agent": "worker", "from": 1 })),
            201,
        )
        .await?;
    }
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    for page_no in 0.. {
        ensure!(page_no < 10, "paging does not end: {listed:?}");
        let mut req = api(page_no)
            .request(Method::GET, &["v1", "topics", "subscriptions"])
            .query(&[("agent", "worker"), ("limit", "1")]);
        if let Some(c) = &cursor {
            req = req.query(&[("cursor", c)]);
        }
        let page = expect(req, 200).await?;
        for s in page["items"].as_array().context("items")? {
            listed.push((
                s["topic"].as_str().unwrap_or("").to_string(),
                s["cursor"].as_u64().unwrap_or(u64::MAX),
                s["last_seq"].as_u64().unwrap_or(u64::MAX),
            ));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    ensure!(
        listed
            == vec![
                ("feed".to_string(), 5, 12),
                ("list-2".to_string(), 0, 0),
                ("list-5".to_string(), 0, 0)
            ],
        "listed {listed:?}"
    );
    expect(
        api(2)
            .request(Method::DELETE, &["v1", "topics", "list-2", "subscribe"])
            .query(&[("agent", "worker")]),
        200,
    )
    .await?;
    expect(
        api(0)
            .request(Method::DELETE, &["v1", "topics", "list-2", "subscribe"])
            .query(&[("agent", "worker")]),
        404,
    )
    .await?;

    // Phase: bad input is a 400 and changes nothing.
    let bad = [
        json!({ "name": "subscriptions" }),
        json!({ "name": "bad name!" }),
        json!({ "name": "x", "retention_hours": 0 }),
        json!({ "name": "x", "retention_hours": 1, "retention_secs": 5 }),
        json!({ "name": "x", "access": "secret" }),
        json!({ "name": "x", "unknown": true }),
    ];
    for body in bad {
        expect(
            api(1).request(Method::POST, &["v1", "topics"]).json(&body),
            400,
        )
        .await
        .with_context(|| format!("create {body}"))?;
    }
    for body in [
        json!({ "agent": "w2", "from": "sometime" }),
        json!({ "agent": "bad agent" }),
    ] {
        expect(
            api(2)
                .request(Method::POST, &["v1", "topics", "feed", "subscribe"])
                .json(&body),
            400,
        )
        .await
        .with_context(|| format!("subscribe {body}"))?;
    }
    expect(
        api(0)
            .request(Method::POST, &["v1", "topics", "feed", "publish"])
            .json(&json!({ "body": 1, "metadata": [1] })),
        400,
    )
    .await?;
    let listed = expect(
        api(0)
            .request(Method::GET, &["v1", "topics"])
            .query(&[("limit", "1000")]),
        200,
    )
    .await?;
    let all: Vec<&str> = listed["items"]
        .as_array()
        .context("items")?
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    ensure!(
        !all.contains(&"x") && all.len() == 8,
        "bad input created topics: {all:?}"
    );
    let feed = read(api(0), "feed", &[]).await?;
    ensure!(feed["last_seq"] == json!(12), "bad input published: {feed}");

    // Phase: a read key reads (and may move its subscription cursor) but cannot write.
    let reader_key = create_key(api(0), "reader", "read").await?;
    let reader = cluster.api_with_key(1, Some(&reader_key.1))?;
    wait_until("the read key to reach node 1", WAIT, async || {
        Ok(reader
            .request(Method::GET, &["v1", "topics"])
            .send()
            .await?
            .status()
            == 200)
    })
    .await?;
    read(&reader, "feed", &[]).await?;
    read(
        &reader,
        "feed",
        &[("agent", "worker".into()), ("since", "7".into())],
    )
    .await?;
    let writes = [
        reader
            .request(Method::POST, &["v1", "topics"])
            .json(&json!({ "name": "denied" })),
        reader
            .request(Method::POST, &["v1", "topics", "feed", "publish"])
            .json(&json!({ "body": 1 })),
        reader.request(Method::DELETE, &["v1", "topics", "feed"]),
        reader
            .request(Method::POST, &["v1", "topics", "feed", "subscribe"])
            .json(&json!({ "agent": "r" })),
        reader
            .request(Method::DELETE, &["v1", "topics", "feed", "subscribe"])
            .query(&[("agent", "worker")]),
    ];
    for w in writes {
        expect(w, 403).await?;
    }
    let resumed = read(
        api(2),
        "feed",
        &[("agent", "worker".into()), ("limit", "1".into())],
    )
    .await?;
    ensure!(
        seqs(&resumed)? == vec![8],
        "read key's ack did not move the cursor: {resumed}"
    );

    // Phase: retention compacts old messages and moves first_seq; sequences continue.
    expect(
        api(2)
            .request(Method::POST, &["v1", "topics"])
            .json(&json!({ "name": "short", "retention_secs": 2 })),
        201,
    )
    .await?;
    for n in 1..=3 {
        expect(
            api(n)
                .request(Method::POST, &["v1", "topics", "short", "publish"])
                .json(&json!({ "body": n })),
            201,
        )
        .await?;
    }
    wait_until(
        "retention to remove the short topic's messages",
        WAIT,
        async || {
            let page = read(api(0), "short", &[]).await?;
            Ok(
                page["items"].as_array().is_some_and(Vec::is_empty)
                    && page["first_seq"] == json!(4),
            )
        },
    )
    .await?;
    let page = read(api(1), "short", &[("since", "1".into())]).await?;
    ensure!(
        page["first_seq"] == json!(4) && page["last_seq"] == json!(3),
        "after compaction {page}"
    );
    let p = expect(
        api(1)
            .request(Method::POST, &["v1", "topics", "short", "publish"])
            .json(&json!({ "body": 4 })),
        201,
    )
    .await?;
    ensure!(p["seq"] == json!(4), "sequence after compaction: {p}");
    // A topic with the default retention kept everything.
    let kept = read(api(2), "feed", &[("limit", "1000".into())]).await?;
    ensure!(
        seqs(&kept)? == (1..=12).collect::<Vec<_>>() && kept["first_seq"] == json!(1),
        "default retention lost messages: {kept}"
    );

    // Phase: a deleted topic is gone everywhere; a re-created one starts clean.
    let deleted = expect(
        api(0).request(Method::DELETE, &["v1", "topics", "feed"]),
        200,
    )
    .await?;
    ensure!(
        deleted == json!({ "id": "feed", "deleted": true }),
        "deleted {deleted}"
    );
    for node in 0..3 {
        expect(
            api(node).request(Method::GET, &["v1", "topics", "feed", "messages"]),
            404,
        )
        .await?;
        expect(
            api(node)
                .request(Method::POST, &["v1", "topics", "feed", "publish"])
                .json(&json!({ "body": 1 })),
            404,
        )
        .await?;
    }
    expect(
        api(1).request(Method::DELETE, &["v1", "topics", "feed"]),
        404,
    )
    .await?;
    let recreated = expect(
        api(2)
            .request(Method::POST, &["v1", "topics"])
            .json(&json!({ "name": "feed" })),
        201,
    )
    .await?;
    ensure!(
        recreated["last_seq"] == json!(0) && recreated["first_seq"] == json!(1),
        "re-created {recreated}"
    );
    let p = expect(
        api(1)
            .request(Method::POST, &["v1", "topics", "feed", "publish"])
            .json(&json!({ "body": "fresh" })),
        201,
    )
    .await?;
    ensure!(
        p["seq"] == json!(1),
        "re-created topic's first publish: {p}"
    );
    let page = read(api(0), "feed", &[]).await?;
    ensure!(
        seqs(&page)? == vec![1] && page["items"][0]["body"] == json!("fresh"),
        "{page}"
    );
    expect(
        api(0)
            .request(Method::GET, &["v1", "topics", "feed", "messages"])
            .query(&[("agent", "worker")]),
        404,
    )
    .await
    .context("the old subscription survived the delete")?;
    let subs = expect(
        api(1)
            .request(Method::GET, &["v1", "topics", "subscriptions"])
            .query(&[("agent", "worker")]),
        200,
    )
    .await?;
    let topics: Vec<&str> = subs["items"]
        .as_array()
        .context("items")?
        .iter()
        .filter_map(|s| s["topic"].as_str())
        .collect();
    ensure!(
        topics == vec!["list-5"],
        "subscriptions after delete: {subs}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_topics_enforce_acl_on_every_node() -> Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let api = |i: usize| cluster.api(i % 3);
    let (writer_id, writer_secret) = create_key(api(0), "writer", "full").await?;
    let (_, reader_secret) = create_key(api(1), "reader", "read").await?;
    let writers: Vec<NodeClient> = (0..3)
        .map(|i| cluster.api_with_key(i, Some(&writer_secret)))
        .collect::<Result<_>>()?;
    let readers: Vec<NodeClient> = (0..3)
        .map(|i| cluster.api_with_key(i, Some(&reader_secret)))
        .collect::<Result<_>>()?;
    // Every key must be known on every node before it is used there.
    for (i, w) in writers.iter().enumerate() {
        wait_until("the keys to reach every node", WAIT, async || {
            Ok(w.request(Method::GET, &["v1", "topics"])
                .send()
                .await?
                .status()
                == 200
                && readers[i]
                    .request(Method::GET, &["v1", "topics"])
                    .send()
                    .await?
                    .status()
                    == 200)
        })
        .await?;
    }

    // Phase: only an admin key may create a restricted topic or change access.
    expect(
        writers[0]
            .request(Method::POST, &["v1", "topics"])
            .json(&json!({ "name": "secret", "access": "restricted" })),
        403,
    )
    .await?;
    let t = expect(
        api(0)
            .request(Method::POST, &["v1", "topics"])
            .json(&json!({ "name": "secret", "access": "restricted" })),
        201,
    )
    .await?;
    ensure!(t["access"] == json!("restricted"), "created {t}");
    expect(
        writers[1]
            .request(Method::PATCH, &["v1", "topics", "secret", "access"])
            .json(&json!({ "mode": "open" })),
        403,
    )
    .await?;
    expect(
        writers[1]
            .request(Method::POST, &["v1", "topics", "secret", "acl"])
            .json(&json!({ "principal": format!("key:{writer_id}"), "permissions": ["publish"] })),
        403,
    )
    .await?;
    for node in 0..3 {
        wait_for_access(api(node), "secret", "restricted").await?;
    }

    // Phase: without an entry a full key cannot publish, read or subscribe, on any node.
    for w in &writers {
        expect(
            w.request(Method::POST, &["v1", "topics", "secret", "publish"])
                .json(&json!({ "body": "no" })),
            403,
        )
        .await?;
        expect(
            w.request(Method::GET, &["v1", "topics", "secret", "messages"]),
            403,
        )
        .await?;
        expect(
            w.request(Method::POST, &["v1", "topics", "secret", "subscribe"])
                .json(&json!({ "agent": "bob" })),
            403,
        )
        .await?;
    }
    // The admin key bypasses the ACL.
    let p = expect(
        api(2)
            .request(Method::POST, &["v1", "topics", "secret", "publish"])
            .json(&json!({ "body": "by admin" })),
        201,
    )
    .await?;
    ensure!(p["seq"] == json!(1), "admin publish {p}");

    // Phase: granting publish to the key lets it publish on every node; reading still needs read.
    let entry = expect(
        api(1)
            .request(Method::POST, &["v1", "topics", "secret", "acl"])
            .json(&json!({ "principal": format!("key:{writer_id}"), "permissions": ["publish"] })),
        201,
    )
    .await?;
    ensure!(
        entry["principal"] == json!(format!("key:{writer_id}"))
            && entry["permissions"] == json!(["publish"]),
        "granted {entry}"
    );
    let mut seqs_published = Vec::new();
    for (i, w) in writers.iter().enumerate() {
        let mut published = None;
        wait_until("the grant to reach the node", WAIT, async || {
            let resp = w
                .request(Method::POST, &["v1", "topics", "secret", "publish"])
                .json(&json!({ "body": format!("from node {i}") }))
                .timeout(TIMEOUT)
                .send()
                .await?;
            match resp.status().as_u16() {
                201 => {
                    published = Some(resp.json::<Value>().await?);
                    Ok(true)
                }
                403 => Ok(false),
                other => bail!("publish answered {other}: {}", resp.text().await?),
            }
        })
        .await?;
        seqs_published.push(
            published.context("published")?["seq"]
                .as_u64()
                .context("seq")?,
        );
    }
    ensure!(
        seqs_published == vec![2, 3, 4],
        "published {seqs_published:?}"
    );
    expect(
        writers[2].request(Method::GET, &["v1", "topics", "secret", "messages"]),
        403,
    )
    .await?;
    // A read key is still refused every write, whatever the ACL says.
    expect(
        readers[0]
            .request(Method::POST, &["v1", "topics", "secret", "publish"])
            .json(&json!({ "body": "no" })),
        403,
    )
    .await?;

    // Phase: granting read to an agent lets that agent subscribe and read with its cursor; a
    // second grant to the same principal merges into the same entry.
    let bob = expect(
        api(2)
            .request(Method::POST, &["v1", "topics", "secret", "acl"])
            .json(&json!({ "principal": "agent:bob", "permissions": ["read"] })),
        201,
    )
    .await?;
    let merged = expect(
        api(0)
            .request(Method::POST, &["v1", "topics", "secret", "acl"])
            .json(&json!({ "principal": "agent:bob", "permissions": ["publish", "read"] })),
        200,
    )
    .await?;
    ensure!(
        merged["id"] == bob["id"] && merged["permissions"] == json!(["read", "publish"]),
        "merged {merged} into {bob}"
    );
    wait_until("bob's grant to reach node 1", WAIT, async || {
        Ok(writers[1]
            .request(Method::POST, &["v1", "topics", "secret", "subscribe"])
            .json(&json!({ "agent": "bob", "from": "earliest" }))
            .send()
            .await?
            .status()
            == 201)
    })
    .await?;
    let page = read(&readers[1], "secret", &[("agent", "bob".into())]).await?;
    ensure!(seqs(&page)? == vec![1, 2, 3, 4], "bob read {page}");
    expect(
        readers[1]
            .request(Method::GET, &["v1", "topics", "secret", "messages"])
            .query(&[("agent", "alice")]),
        403,
    )
    .await?;
    // A team that does not exist is a conflict, like an unknown key (team principals have
    // their own tests in topic_teams.rs).
    expect(
        api(0)
            .request(Method::POST, &["v1", "topics", "secret", "acl"])
            .json(&json!({ "principal": "team:t1", "permissions": ["read"] })),
        409,
    )
    .await?;
    for body in [
        json!({ "principal": "user:u1", "permissions": ["read"] }),
        json!({ "principal": "agent:bob", "permissions": [] }),
        json!({ "principal": "agent:bob", "permissions": ["admin"] }),
    ] {
        expect(
            api(0)
                .request(Method::POST, &["v1", "topics", "secret", "acl"])
                .json(&body),
            400,
        )
        .await
        .with_context(|| format!("acl {body}"))?;
    }
    expect(
        api(0)
            .request(Method::POST, &["v1", "topics", "secret", "acl"])
            .json(&json!({ "principal": "key:key_999", "permissions": ["read"] })),
        409,
    )
    .await?;
    expect(
        api(0)
            .request(Method::POST, &["v1", "topics", "absent", "acl"])
            .json(&json!({ "principal": "agent:bob", "permissions": ["read"] })),
        404,
    )
    .await?;

    // Phase: the ACL lists page by page; only admin keys may read it.
    for node in 0..3 {
        wait_until("both acl entries to reach the node", WAIT, async || {
            let page = expect(
                api(node).request(Method::GET, &["v1", "topics", "secret", "acl"]),
                200,
            )
            .await?;
            Ok(page["items"].as_array().is_some_and(|i| i.len() == 2))
        })
        .await?;
    }
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    for page_no in 0.. {
        ensure!(page_no < 5, "paging does not end: {listed:?}");
        let mut req = api(page_no)
            .request(Method::GET, &["v1", "topics", "secret", "acl"])
            .query(&[("limit", "1")]);
        if let Some(c) = &cursor {
            req = req.query(&[("cursor", c)]);
        }
        let page = expect(req, 200).await?;
        ensure!(page["mode"] == json!("restricted"), "acl page {page}");
        for e in page["items"].as_array().context("items")? {
            listed.push(e["principal"].as_str().unwrap_or("").to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    ensure!(
        listed == vec![format!("key:{writer_id}"), "agent:bob".to_string()],
        "acl {listed:?}"
    );
    expect(
        writers[0].request(Method::GET, &["v1", "topics", "secret", "acl"]),
        403,
    )
    .await?;

    // Phase: opening the topic lets any key of the workspace read; deleting it drops its ACL,
    // so a re-created topic is open.
    let opened = expect(
        api(1)
            .request(Method::PATCH, &["v1", "topics", "secret", "access"])
            .json(&json!({ "mode": "open" })),
        200,
    )
    .await?;
    ensure!(opened["mode"] == json!("open"), "opened {opened}");
    for (i, r) in readers.iter().enumerate() {
        wait_until("the open mode to reach the node", WAIT, async || {
            let status = r
                .request(Method::GET, &["v1", "topics", "secret", "messages"])
                .send()
                .await?
                .status();
            ensure!(status == 200 || status == 403, "node {i} answered {status}");
            Ok(status == 200)
        })
        .await?;
    }
    expect(
        api(0)
            .request(Method::PATCH, &["v1", "topics", "secret", "access"])
            .json(&json!({ "mode": "restricted" })),
        200,
    )
    .await?;
    expect(
        api(2).request(Method::DELETE, &["v1", "topics", "secret"]),
        200,
    )
    .await?;
    let t = expect(
        api(1)
            .request(Method::POST, &["v1", "topics"])
            .json(&json!({ "name": "secret" })),
        201,
    )
    .await?;
    ensure!(t["access"] == json!("open"), "re-created {t}");
    for node in 0..3 {
        wait_until(
            "the re-created topic to be open with no acl",
            WAIT,
            async || {
                let acl = expect(
                    api(node).request(Method::GET, &["v1", "topics", "secret", "acl"]),
                    200,
                )
                .await?;
                Ok(acl["mode"] == json!("open") && acl["items"] == json!([]))
            },
        )
        .await?;
    }
    Ok(())
}

/// Creates an API key through `admin`; returns its id and secret.
async fn create_key(admin: &NodeClient, name: &str, scope: &str) -> Result<(String, String)> {
    let key = expect(
        admin
            .request(Method::POST, &["v1", "api-keys"])
            .json(&json!({ "name": name, "scope": scope })),
        201,
    )
    .await?;
    Ok((
        key["id"].as_str().context("key id")?.to_string(),
        key["key"].as_str().context("key secret")?.to_string(),
    ))
}

/// `GET /v1/topics/{topic}/messages` with `query`; 200 expected.
async fn read(api: &NodeClient, topic: &str, query: &[(&str, String)]) -> Result<Value> {
    expect(
        api.request(Method::GET, &["v1", "topics", topic, "messages"])
            .query(query),
        200,
    )
    .await
    .with_context(|| format!("reading {topic} with {query:?}"))
}

/// The sequences of a message page.
fn seqs(page: &Value) -> Result<Vec<u64>> {
    page["items"]
        .as_array()
        .context("items")?
        .iter()
        .map(|m| m["seq"].as_u64().context("seq"))
        .collect()
}

/// Waits until `api`'s node lists `topic` with access `mode`.
async fn wait_for_access(api: &NodeClient, topic: &str, mode: &str) -> Result<()> {
    wait_until("the access mode to reach the node", WAIT, async || {
        let page = expect(
            api.request(Method::GET, &["v1", "topics"])
                .query(&[("limit", "1000")]),
            200,
        )
        .await?;
        Ok(page["items"]
            .as_array()
            .context("items")?
            .iter()
            .any(|t| t["name"] == json!(topic) && t["access"] == json!(mode)))
    })
    .await
}
