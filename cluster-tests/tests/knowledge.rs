//! Embeddings and artifacts through the public API on a three-node cluster, requests spread
//! over the nodes: search is the exact cosine top k across every shard, dimensions are checked,
//! lists page through every shard exactly once, and an artifact's bytes come back identical
//! from any node. Run `cargo build -p conclave-node` first.

use std::collections::BTreeSet;

use anyhow::{ensure, Context, Result};
use base64::Engine;
use conclave_cluster_tests::http::{expect, send, wait_key_usable};
use conclave_cluster_tests::{Cluster, NodeClient};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Embeddings stored: enough to land on every shard.
const VECTORS: u32 = 48;
/// Largest artifact the artifact test's cluster accepts.
const MAX_ARTIFACT: usize = 4096;

fn store(c: &NodeClient, body: Value) -> reqwest::RequestBuilder {
    c.request(Method::POST, &["v1", "context", "embeddings"])
        .json(&body)
}

fn search(c: &NodeClient, body: Value) -> reqwest::RequestBuilder {
    c.request(Method::POST, &["v1", "context", "search"])
        .json(&body)
}

/// The point at angle `i` of `VECTORS` around the unit circle.
fn point(i: u32) -> [f32; 2] {
    let a = f64::from(i) * std::f64::consts::TAU / f64::from(VECTORS);
    [a.cos() as f32, a.sin() as f32]
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let n = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

/// Ids of a search answer, best first.
fn hit_ids(answer: &Value) -> Vec<String> {
    answer["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|h| h["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_search_exactly_across_shards() -> Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let node = |i: u32| cluster.api(i as usize % cluster.len());

    for i in 0..VECTORS {
        let [x, y] = point(i);
        let body = json!({"id": format!("e{i:02}"), "vector": [x, y], "namespace": "circle",
            "text": format!("point {i}"), "metadata": {"i": i}});
        let stored = expect(store(node(i), body), 201, "store").await?;
        ensure!(
            stored["dimension"] == json!(2) && stored["namespace"] == "circle",
            "{stored}"
        );
    }
    // Replacing an id answers 200 and keeps one copy.
    let again = json!({"id": "e00", "vector": [1.0, 0.0], "namespace": "circle", "text": "origin"});
    let replaced = expect(store(node(1), again), 200, "replace").await?;
    ensure!(replaced["text"] == "origin", "{replaced}");

    // Dimensions: fixed per namespace by its first vector.
    let wrong = json!({"vector": [1.0, 0.0, 0.0], "namespace": "circle"});
    expect(store(node(2), wrong), 409, "another dimension").await?;
    let other = json!({"vector": [0.0, 0.0, 1.0], "namespace": "space"});
    let generated = expect(store(node(2), other), 201, "other namespace").await?;
    ensure!(
        generated["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("emb_")),
        "{generated}"
    );
    let q3 = json!({"vector": [1.0, 0.0, 0.0], "namespace": "circle"});
    expect(search(node(0), q3), 409, "search with another dimension").await?;

    // The exact top k, computed here, from every node.
    let query = [0.3f32, -0.8];
    let mut expected: Vec<(f64, String)> = (0..VECTORS)
        .map(|i| {
            let v = if i == 0 { [1.0, 0.0] } else { point(i) };
            (cosine(&query, &v), format!("e{i:02}"))
        })
        .collect();
    expected.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let top: Vec<String> = expected.iter().take(7).map(|(_, id)| id.clone()).collect();
    for i in 0..3 {
        let body = json!({"vector": query, "k": 7, "namespace": "circle"});
        let answer = expect(search(node(i), body), 200, "search").await?;
        ensure!(hit_ids(&answer) == top, "node {i}: {answer} != {top:?}");
        let best = answer["items"][0]["score"].as_f64().context("score")?;
        ensure!((best - expected[0].0).abs() < 1e-6, "score {best}");
        ensure!(answer["items"][0]["metadata"]["i"].is_number(), "{answer}");
    }
    let body = json!({"vector": query, "k": 100, "namespace": "circle", "min_score": 0.9});
    let close = expect(search(node(1), body), 200, "min_score").await?;
    let above: Vec<String> = expected
        .iter()
        .filter(|(s, _)| *s >= 0.9)
        .map(|(_, id)| id.clone())
        .collect();
    ensure!(!above.is_empty() && hit_ids(&close) == above, "{close}");
    let none = json!({"vector": [1.0, 0.0], "namespace": "empty"});
    let empty = expect(search(node(2), none), 200, "unknown namespace").await?;
    ensure!(hit_ids(&empty).is_empty(), "{empty}");

    // Paging through every shard visits each embedding once, in id order.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for page_no in 0.. {
        ensure!(page_no < 100, "paging does not end");
        let mut query = vec![
            ("limit", "7".to_string()),
            ("namespace", "circle".to_string()),
        ];
        if let Some(c) = &cursor {
            query.push(("cursor", c.clone()));
        }
        let req = node(page_no)
            .request(Method::GET, &["v1", "context", "embeddings"])
            .query(&query);
        let page = expect(req, 200, "list").await?;
        for e in page["items"].as_array().context("items")? {
            ensure!(e.get("vector").is_none(), "vectors only when asked: {e}");
            seen.push(e["id"].as_str().context("id")?.to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let want: Vec<String> = (0..VECTORS).map(|i| format!("e{i:02}")).collect();
    ensure!(seen == want, "listed {seen:?}");
    let req = node(0)
        .request(Method::GET, &["v1", "context", "embeddings"])
        .query(&[("include_vector", "true"), ("namespace", "space")]);
    let with = expect(req, 200, "list with vectors").await?;
    ensure!(
        with["items"][0]["vector"] == json!([0.0, 0.0, 1.0]),
        "{with}"
    );

    // Bad input is refused and changes nothing; a read key cannot store.
    for bad in [
        json!({"vector": []}),
        json!({"vector": [1.0, 2.0], "namespace": "bad name"}),
        json!({"vector": [1e39, 0.0], "namespace": "circle"}),
        json!({"vector": [1.0, 0.0], "namespace": "circle", "extra": 1}),
    ] {
        expect(store(node(0), bad.clone()), 400, &format!("store {bad}")).await?;
    }
    expect(
        search(node(0), json!({"vector": [1.0, 0.0], "k": 0})),
        400,
        "k 0",
    )
    .await?;
    let reader = cluster.api(0).create_api_key("reader", "read").await?;
    let read_client = cluster.api_with_key(1, Some(&reader.key))?;
    wait_key_usable(&read_client).await?;
    let denied = json!({"vector": [1.0, 0.0], "namespace": "circle"});
    expect(store(&read_client, denied), 403, "read key stores").await?;
    let body = json!({"vector": query, "k": 3, "namespace": "circle"});
    let answer = expect(search(&read_client, body), 200, "read key searches").await?;
    ensure!(hit_ids(&answer) == top[..3], "{answer}");
    let req = node(2)
        .request(Method::GET, &["v1", "context", "embeddings"])
        .query(&[("limit", "1000")]);
    let all = expect(req, 200, "list all").await?;
    ensure!(
        all["items"].as_array().map(Vec::len) == Some(VECTORS as usize + 1),
        "{all}"
    );
    Ok(())
}

fn create_artifact(c: &NodeClient, body: Value) -> reqwest::RequestBuilder {
    c.request(Method::POST, &["v1", "artifacts"]).json(&body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_upload_reference_and_download_from_any_node() -> Result<()> {
    let cluster = Cluster::builder()
        .nodes(3)
        .env("CONCLAVE_MAX_ARTIFACT_BYTES", MAX_ARTIFACT.to_string())
        .start()
        .await?;
    let text = "the plan, version 3\n".repeat(10);
    let body = json!({"name": "plan.md", "content": text, "content_type": "text/markdown",
        "metadata": {"by": "planner"}});
    let plan = expect(create_artifact(cluster.api(0), body), 201, "text upload").await?;
    let plan_id = plan["id"].as_str().context("id")?.to_string();
    ensure!(plan["size"] == json!(text.len()), "{plan}");
    ensure!(
        plan["sha256"] == json!(hex::encode(Sha256::digest(text.as_bytes()))),
        "{plan}"
    );

    let bytes: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let body = json!({"name": "blob.bin", "content_base64": encoded});
    let blob = expect(create_artifact(cluster.api(1), body), 201, "bytes upload").await?;
    let body = json!({"name": "spec", "url": "https://example.org/spec.pdf",
        "content_type": "application/pdf"});
    let reference = expect(create_artifact(cluster.api(2), body), 201, "reference").await?;
    ensure!(
        reference["download_url"] == "https://example.org/spec.pdf",
        "{reference}"
    );
    ensure!(
        reference["size"] == json!(0) && reference["sha256"].is_null(),
        "{reference}"
    );

    // Every node describes each artifact and serves its bytes, identical.
    for i in 0..cluster.len() {
        let api = cluster.api(i);
        let got = expect(
            api.request(Method::GET, &["v1", "artifacts", &plan_id]),
            200,
            "get",
        )
        .await?;
        ensure!(
            got["metadata"]["by"] == "planner" && got["name"] == "plan.md",
            "{got}"
        );
        let url = format!(
            "{}{}",
            api.base_url().as_str().trim_end_matches('/'),
            got["download_url"].as_str().context("download_url")?
        );
        let resp = cluster
            .client()
            .get(&url)
            .bearer_auth(cluster.api_key())
            .send()
            .await?;
        ensure!(
            resp.status() == 200,
            "download from node {i}: {}",
            resp.status()
        );
        ensure!(
            resp.headers()["content-type"] == "text/markdown",
            "content type"
        );
        ensure!(resp.text().await? == text, "downloaded text differs");
        let blob_id = blob["id"].as_str().context("id")?;
        let req = api.request(Method::GET, &["v1", "artifacts", blob_id, "content"]);
        let got = req.send().await?.bytes().await?;
        ensure!(got.as_ref() == bytes.as_slice(), "downloaded bytes differ");
    }
    let ref_id = reference["id"].as_str().context("id")?;
    let req = cluster
        .api(0)
        .request(Method::GET, &["v1", "artifacts", ref_id, "content"]);
    expect(req, 404, "a reference has no bytes here").await?;

    // Refusals change nothing: too large, both content and url, a bad url, a read key.
    let big = "x".repeat(MAX_ARTIFACT + 1);
    expect(
        create_artifact(cluster.api(0), json!({"name": "big", "content": big})),
        413,
        "too large",
    )
    .await?;
    let both = json!({"name": "both", "content": "a", "url": "https://example.org"});
    expect(
        create_artifact(cluster.api(1), both),
        400,
        "content and url",
    )
    .await?;
    let ftp = json!({"name": "ftp", "url": "ftp://example.org/x"});
    expect(create_artifact(cluster.api(2), ftp), 400, "not http").await?;
    let reader = cluster.api(0).create_api_key("reader", "read").await?;
    let read_client = cluster.api_with_key(1, Some(&reader.key))?;
    wait_key_usable(&read_client).await?;
    expect(
        create_artifact(&read_client, json!({"name": "r", "content": "a"})),
        403,
        "read key",
    )
    .await?;
    let missing = cluster
        .api(2)
        .request(Method::GET, &["v1", "artifacts", "art_0000000000000000"]);
    expect(missing, 404, "unknown id").await?;

    // The list pages through every shard: each artifact once.
    let mut seen = BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut req = read_client
            .request(Method::GET, &["v1", "artifacts"])
            .query(&[("limit", "1")]);
        if let Some(c) = &cursor {
            req = req.query(&[("cursor", c)]);
        }
        let (status, page) = send(req).await?;
        ensure!(status == 200, "list: {page}");
        for a in page["items"].as_array().context("items")? {
            ensure!(
                seen.insert(a["id"].as_str().context("id")?.to_string()),
                "repeated {a}"
            );
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let want: BTreeSet<String> = [&plan, &blob, &reference]
        .iter()
        .filter_map(|a| a["id"].as_str().map(str::to_string))
        .collect();
    ensure!(seen == want, "listed {seen:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_through_a_shard_holding_more_than_a_page() -> Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let api = cluster.api(0);
    // Three keys on one shard and nothing elsewhere: every page of one gathers a single item
    // from that shard, which still holds more.
    let mut by_shard: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
    let mut same = Vec::new();
    for n in 0..200 {
        let key = format!("k{n:03}");
        let shard = api
            .locate(conclave_cluster_tests::ShardKind::Context, &key)
            .await?
            .shard;
        let keys = by_shard.entry(shard).or_default();
        keys.push(key);
        if keys.len() == 3 {
            same = keys.clone();
            break;
        }
    }
    ensure!(same.len() == 3, "no three keys on one shard");
    for key in &same {
        let put = api
            .request(Method::PUT, &["v1", "context", key])
            .json(&json!({"value": 1}));
        expect(put, 200, "put").await?;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let mut req = cluster
            .api(1)
            .request(Method::GET, &["v1", "context"])
            .query(&[("limit", "1")]);
        if let Some(c) = &cursor {
            req = req.query(&[("cursor", c)]);
        }
        let page = expect(req, 200, "list").await?;
        for e in page["items"].as_array().context("items")? {
            seen.push(e["key"].as_str().context("key")?.to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    ensure!(seen == same, "listed {seen:?}, stored {same:?}");
    Ok(())
}
