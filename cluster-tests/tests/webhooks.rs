//! Webhooks on a three-node cluster: registration through any node, signed deliveries of the
//! subscribed events to a local receiver, retries after a failing answer visible as attempts,
//! and delivery after the kill of the shard leader that holds the outbox.
//! Run `cargo build -p conclave-node` first.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use conclave_cluster_tests::http::expect_status as expect;
use conclave_cluster_tests::{wait_for, Cluster, NodeClient, ShardKind};
use hmac::{Hmac, Mac};
use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};
use sha2::Sha256;

/// Deadline for deliveries: retries back off from 1 s, and an attempt cut short by a leader
/// kill is retried after its 30 s grace.
const DELIVERED: Duration = Duration::from_secs(120);

const SECRET: &str = "test-secret-0123456789";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    delivery: String,
    event: String,
    body: Value,
    /// Whether the signature matched the body, timestamp and secret.
    signed: bool,
    /// What the receiver answered.
    answered: u16,
}

/// A local HTTP receiver: fails the first attempt of every delivery with 500, accepts the rest.
#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start() -> Result<(Self, String)> {
        let receiver = Receiver::default();
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok((receiver, url))
    }

    fn seen(&self) -> Vec<Received> {
        self.seen.lock().expect("receiver lock").clone()
    }

    /// Accepted deliveries, by delivery id.
    fn accepted(&self) -> Vec<Received> {
        self.seen()
            .into_iter()
            .filter(|r| r.answered == 200)
            .collect()
    }
}

async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (delivery, timestamp) = (
        header("x-conclave-delivery"),
        header("x-conclave-timestamp"),
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let mut seen = r.seen.lock().expect("receiver lock");
    let first = !seen.iter().any(|s| s.delivery == delivery);
    let answered = if first { 500 } else { 200 };
    seen.push(Received {
        delivery,
        event: header("x-conclave-event"),
        body: serde_json::from_str(&body).unwrap_or(Value::Null),
        signed: header("x-conclave-signature") == expected,
        answered,
    });
    StatusCode::from_u16(answered).expect("valid status")
}

fn post(c: &NodeClient, path: &[&str], body: Value) -> RequestBuilder {
    c.request(Method::POST, path).json(&body)
}

fn put_context(c: &NodeClient, key: &str) -> RequestBuilder {
    c.request(Method::PUT, &["v1", "context", key])
        .json(&json!({"value": key}))
}

/// Waits until the receiver accepted a delivery whose event targets context key `key`.
async fn accepted_for(r: &Receiver, key: &str) -> Result<Received> {
    wait_for(&format!("a delivery for {key}"), DELIVERED, async || {
        Ok(r.accepted()
            .into_iter()
            .find(|d| d.body["data"]["targets"]["key"] == key))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_deliveries_are_retried_and_survive_a_leader_kill() -> Result<()> {
    let mut cluster = Cluster::builder().nodes(3).start().await?;
    let (receiver, url) = Receiver::start().await?;
    let (n0, n1, n2) = (
        cluster.api(0).clone(),
        cluster.api(1).clone(),
        cluster.api(2).clone(),
    );

    // Registration: bad input is refused; the secret is shown once.
    for bad in [
        json!({"url": "ftp://127.0.0.1/x", "events": ["*"]}),
        json!({"url": url, "events": []}),
        json!({"url": url, "events": ["Not.An.Event"]}),
        json!({"url": url, "events": ["*"], "secret": "short"}),
    ] {
        expect(post(&n0, &["v1", "webhooks"], bad), 400).await?;
    }
    let hook = expect(
        post(
            &n0,
            &["v1", "webhooks"],
            json!({"url": url, "events": ["context.set", "task.created"], "secret": SECRET}),
        ),
        201,
    )
    .await?;
    let id = hook["id"].as_str().context("id")?.to_string();
    ensure!(hook["secret"] == SECRET && hook["active"] == true, "{hook}");
    let listed = expect(n1.request(Method::GET, &["v1", "webhooks"]), 200).await?;
    ensure!(
        listed["items"][0]["id"] == id.as_str() && listed["items"][0].get("secret").is_none(),
        "{listed}"
    );

    // Subscribed changes through every node are delivered, signed; others are not.
    expect(put_context(&n1, "alpha"), 200).await?;
    let task = expect(post(&n2, &["v1", "tasks"], json!({"title": "t"})), 201).await?;
    expect(
        post(&n0, &["v1", "topics"], json!({"name": "unsubscribed"})),
        201,
    )
    .await?;
    let alpha = accepted_for(&receiver, "alpha").await?;
    ensure!(alpha.signed && alpha.event == "context.set", "{alpha:?}");
    ensure!(
        alpha.body["type"] == "context.set" && alpha.body["id"] == alpha.delivery.as_str(),
        "{alpha:?}"
    );
    let created = wait_for("the task delivery", DELIVERED, async || {
        Ok(receiver
            .accepted()
            .into_iter()
            .find(|d| d.body["data"]["targets"]["id"] == task["id"]))
    })
    .await?;
    ensure!(
        created.signed && created.event == "task.created",
        "{created:?}"
    );
    ensure!(
        receiver
            .seen()
            .iter()
            .all(|d| d.signed && d.event != "topic.created"),
        "{:?}",
        receiver.seen()
    );

    // The attempts are visible: the first failed with 500, the second succeeded.
    let page = expect(
        n2.request(Method::GET, &["v1", "webhooks", &id, "deliveries"]),
        200,
    )
    .await?;
    let items = page["items"].as_array().context("items")?;
    ensure!(items.len() == 2, "{page}");
    for d in items {
        let attempts = d["attempts"].as_array().context("attempts")?;
        ensure!(
            d["status"] == "succeeded"
                && attempts.len() >= 2
                && attempts[0]["response_status"] == 500
                && attempts.last().is_some_and(|a| a["response_status"] == 200),
            "{d}"
        );
    }

    // Kill the leader of the shard holding the outbox right after a change: the new leader
    // delivers it.
    let leader = cluster.leader_of(ShardKind::Audit, "log").await?;
    let index = cluster.node_index_by_id(leader).context("leader index")?;
    let survivor = cluster.api((index + 1) % 3).clone();
    expect(put_context(&survivor, "beta"), 200).await?;
    cluster.kill(index)?;
    let beta = accepted_for(&receiver, "beta").await?;
    ensure!(beta.signed, "{beta:?}");

    // Deleting: 200, then 404; its deliveries are gone with it.
    expect(
        survivor.request(Method::DELETE, &["v1", "webhooks", &id]),
        200,
    )
    .await?;
    expect(
        survivor.request(Method::DELETE, &["v1", "webhooks", &id]),
        404,
    )
    .await?;
    expect(
        survivor.request(Method::GET, &["v1", "webhooks", &id, "deliveries"]),
        404,
    )
    .await?;
    Ok(())
}
