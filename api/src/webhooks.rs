//! The webhook sender: on every shard this node leads, it sends the due deliveries of the
//! replicated outbox (`conclave_raft::shard::webhook`).
//!
//! Each tick (every [`TICK`]) it asks each led shard that holds scheduled deliveries for the due
//! ones, commits the start of an attempt (`Begin`, which only a leader can commit, so one node
//! sends at a time), POSTs the event, and commits the outcome (`End`); apply then schedules the
//! retry with backoff or closes the delivery. Nothing is kept here: a new leader finds the
//! schedule in its state machine, including attempts whose sender died, which are due again
//! once their grace has passed (so a delivery is sent at least once).
//!
//! A request is `POST <url>` with a JSON body
//! `{"id","event_id","type","workspace_id","created_at","data":{...}}` and headers
//! `x-conclave-delivery` (the delivery id, stable across retries: receivers de-duplicate on it),
//! `x-conclave-event`, `x-conclave-timestamp` (seconds) and
//! `x-conclave-signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" with the secret>`.
//! Redirects are not followed; any 2xx answer is a success.

use std::sync::Arc;
use std::time::{Duration, Instant};

use conclave_actors::{ClientRequest, ClientResponse, ForwardResult, Router};
use conclave_raft::kv::KvRead;
use conclave_raft::shard::webhook::{
    Delivery, Webhook, WebhookCommand, WebhookQuery, WebhookResponse, WebhookResult,
};
use conclave_raft::storage::GroupKv;
use conclave_raft::{GroupId, ShardCommand, ShardQuery, ShardReadResult, ShardResponse};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use tokio::sync::Semaphore;

/// How often each led shard is checked for due deliveries.
pub const TICK: Duration = Duration::from_millis(500);
/// Deliveries taken from one shard per tick at most.
const DUE_PER_TICK: usize = 32;
/// HTTP calls in flight per node at most; further due deliveries wait for the next tick.
pub const MAX_IN_FLIGHT: usize = 32;
/// Longest wait for a receiver's answer (shorter than the outbox's in-flight grace).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the sender (needs a tokio runtime).
pub fn start(router: Arc<Router>) {
    tokio::spawn(run(router));
}

async fn run(router: Arc<Router>) {
    let client = match reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("conclave-webhooks")
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook http client; webhooks are not sent");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for group in router.groups().led_shards() {
            if !has_schedule(&router, group) {
                continue;
            }
            for (ws, seq) in due(&router, group).await {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    break;
                };
                let Some((delivery, webhook)) = begin(&router, group, &ws, seq).await else {
                    continue;
                };
                let router = router.clone();
                let client = client.clone();
                tokio::spawn(async move {
                    send(&router, &client, group, &ws, delivery, webhook).await;
                    drop(slot);
                });
            }
        }
    }
}

/// Whether the local replica holds any scheduled delivery (a shard without any costs no read).
fn has_schedule(router: &Router, group: GroupId) -> bool {
    let kv = GroupKv::new(router.groups().db(), group);
    kv.scan(b"o\0", None, 1)
        .map_or(true, |rows| !rows.is_empty())
}

async fn due(router: &Router, group: GroupId) -> Vec<(String, u64)> {
    let q = ShardQuery::Webhook(WebhookQuery::Due {
        now: conclave_raft::command::now_ms(),
        limit: DUE_PER_TICK,
    });
    match router.execute_local(group, &ClientRequest::Read(q)).await {
        ForwardResult::Done(Ok(ClientResponse::Read(ShardReadResult::Webhook(
            WebhookResult::Due(d),
        )))) => d,
        other => {
            tracing::debug!(shard = group, outcome = ?other, "no due webhook deliveries read");
            Vec::new()
        }
    }
}

async fn begin(router: &Router, group: GroupId, ws: &str, seq: u64) -> Option<(Delivery, Webhook)> {
    let cmd = ShardCommand::Webhook(WebhookCommand::Begin {
        ws: ws.to_string(),
        seq,
        node: router.groups().node_id(),
    });
    match router
        .execute_local(group, &ClientRequest::Write(cmd))
        .await
    {
        ForwardResult::Done(Ok(ClientResponse::Write(ShardResponse::Webhook(r)))) => match *r {
            WebhookResponse::Begun { delivery, webhook } => Some((delivery, webhook)),
            _ => None,
        },
        other => {
            tracing::debug!(shard = group, seq, outcome = ?other, "webhook attempt not started");
            None
        }
    }
}

/// The body of a delivery.
pub fn payload(ws: &str, d: &Delivery) -> String {
    let e = &d.event;
    let targets: serde_json::Map<String, serde_json::Value> = e
        .entry
        .targets
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    json!({
        "id": d.id,
        "event_id": e.id,
        "type": d.event_type,
        "workspace_id": ws,
        "created_at": e.at,
        "data": {
            "action": format!("{} {}", e.entry.method, e.entry.route),
            "targets": targets,
            "status": e.entry.status,
            "key_id": e.entry.key_id,
            "user_id": e.entry.user_id,
            "via": e.entry.via,
            "request_id": e.entry.request_id,
        },
    })
    .to_string()
}

/// `sha256=<hex>` of HMAC-SHA256 over `<timestamp>.<body>` keyed with `secret`.
pub fn signature(secret: &str, timestamp: u64, body: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn send(
    router: &Router,
    client: &reqwest::Client,
    group: GroupId,
    ws: &str,
    delivery: Delivery,
    webhook: Webhook,
) {
    let attempt = delivery.attempts.len() as u32;
    let body = payload(ws, &delivery);
    let timestamp = conclave_raft::command::now_ms() / 1000;
    let started = Instant::now();
    let result = client
        .post(&webhook.url)
        .header("content-type", "application/json")
        .header("x-conclave-delivery", &delivery.id)
        .header("x-conclave-event", &delivery.event_type)
        .header("x-conclave-timestamp", timestamp.to_string())
        .header(
            "x-conclave-signature",
            signature(&webhook.secret, timestamp, &body),
        )
        .body(body)
        .send()
        .await;
    let (response_status, error) = match result {
        Ok(resp) => {
            let status = resp.status();
            let error = (!status.is_success()).then(|| format!("receiver answered {status}"));
            (Some(status.as_u16()), error)
        }
        Err(e) => (None, Some(e.to_string())),
    };
    tracing::debug!(
        shard = group,
        delivery = %delivery.id,
        attempt,
        status = ?response_status,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "webhook attempt done"
    );
    let cmd = ShardCommand::Webhook(WebhookCommand::End {
        ws: ws.to_string(),
        seq: delivery.seq,
        attempt,
        response_status,
        error,
    });
    // Wherever the leader now is; if this fails the attempt is retried after its grace.
    if let Err(e) = router.execute(group, ClientRequest::Write(cmd)).await {
        tracing::warn!(shard = group, delivery = %delivery.id, error = %e, "webhook outcome not recorded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_and_body() {
        // Computed independently with Python: hmac.new(secret, b"1700000000.{\"a\":1}", sha256).
        let sig = signature("whsec_test_secret_123", 1_700_000_000, r#"{"a":1}"#);
        assert_eq!(
            sig,
            "sha256=e89dcbfdce3392fb275033fb083d8c81e095a63bf687d9a2cd50e7d5f55e21f6"
        );
    }
}
