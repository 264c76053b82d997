//! Webhooks: a workspace's registered endpoints, and the replicated outbox of deliveries to
//! them.
//!
//! Everything lives on the workspace's audit shard (`shard_for(ws, "audit", "")`): the audit
//! append that records a successful change also enqueues, in the same apply, one delivery per
//! webhook subscribed to the change's event type (`enqueue`). So a change acknowledged to its
//! client has its deliveries stored, replicated, whatever happens next.
//!
//! Sending happens outside apply, on the shard's leader (see the API crate's sender): it reads
//! the due deliveries, commits an attempt's start ([`WebhookCommand::Begin`]) before the HTTP
//! call and its outcome ([`WebhookCommand::End`]) after. The start moves the delivery's next
//! look to [`IN_FLIGHT_GRACE_MS`] later, so a leader that dies mid-call leaves a delivery that
//! the next leader retries once that grace has passed: at least once; receivers de-duplicate on
//! the delivery id. Backoff and the give-up rule are decided in apply from the entry's time.
//!
//! Key layout (letters used here: `W`, `d`, `o`; counters under `n`):
//! - `W\0<ws>\0<id>` → [`Webhook`]
//! - `d\0<ws>\0<u64::MAX - seq, be>` → [`Delivery`] (newest first)
//! - `o\0<next_attempt_at be>\0<ws>\0<seq be>` → empty: the schedule of unfinished deliveries
//! - `n\0webhook\0<ws>`, `n\0delivery\0<ws>` → the last webhook and delivery numbers

use super::io;
use serde::{Deserialize, Serialize};

use super::audit::AuditEntry;
use super::{counter, get, ShardReadResult, ShardResponse};
use crate::codec::{decode_io, encode};
use crate::error::CoreError;
use crate::kv::{KvRead, Txn};

/// Most webhooks one workspace may register.
pub const MAX_WEBHOOKS_PER_WORKSPACE: usize = 20;
/// Attempts of one delivery before it is given up (`dead`).
pub const MAX_ATTEMPTS: u32 = 8;
/// How long after an attempt's start its delivery is looked at again if no outcome was
/// recorded (the sender died): longer than any HTTP call may take.
pub const IN_FLIGHT_GRACE_MS: u64 = 30_000;
/// Backoff after the first failed attempt; it doubles per attempt up to [`MAX_BACKOFF_MS`].
pub const BASE_BACKOFF_MS: u64 = 1_000;
/// Longest backoff between attempts.
pub const MAX_BACKOFF_MS: u64 = 300_000;
/// Newest deliveries kept per workspace (older ones are removed, finished or not).
pub const MAX_DELIVERIES_PER_WORKSPACE: u64 = 10_000;
/// Longest error text kept per attempt.
pub const MAX_ERROR_CHARS: usize = 512;

/// A registered endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    /// `wh_<n>`.
    pub id: String,
    /// `http` or `https` URL.
    pub url: String,
    /// Event types it receives, or `*` for all.
    pub events: Vec<String>,
    /// Free text.
    pub description: String,
    /// Signs deliveries (HMAC-SHA256).
    pub secret: String,
    /// ms since the epoch.
    pub created_at: u64,
}

impl Webhook {
    fn wants(&self, event_type: &str) -> bool {
        self.events.iter().any(|e| e == "*" || e == event_type)
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not attempted yet.
    Pending,
    /// An attempt started and has no recorded outcome.
    InFlight,
    /// The receiver answered 2xx.
    Succeeded,
    /// An attempt failed; another is scheduled.
    Retrying,
    /// Given up: every attempt failed, or the webhook was deleted.
    Dead,
}

/// One attempt of a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// From 1.
    pub attempt: u32,
    /// The node that made it.
    pub node_id: u64,
    /// ms since the epoch.
    pub started_at: u64,
    /// When its outcome was recorded.
    pub finished_at: Option<u64>,
    /// The receiver's HTTP status, if it answered.
    pub response_status: Option<u16>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// One event to deliver to one webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// `dlv_<seq>`.
    pub id: String,
    /// Gap-free from 1 within the workspace.
    pub seq: u64,
    /// The webhook.
    pub webhook_id: String,
    /// The event's type, e.g. `task.created`.
    pub event_type: String,
    /// The change it reports (an audit entry).
    pub event: AuditEntry,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// When it is next looked at, while unfinished.
    pub next_attempt_at: Option<u64>,
    /// ms since the epoch.
    pub created_at: u64,
    /// Every attempt, oldest first.
    pub attempts: Vec<Attempt>,
}

/// A change to a workspace's webhooks or deliveries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WebhookCommand {
    /// Register a webhook.
    Create {
        ws: String,
        url: String,
        events: Vec<String>,
        description: String,
        secret: String,
    },
    /// Delete a webhook; its unfinished deliveries die when next looked at.
    Delete { ws: String, id: String },
    /// Start the next attempt of a due delivery, by `node`.
    Begin { ws: String, seq: u64, node: u64 },
    /// Record the outcome of attempt `attempt`.
    End {
        ws: String,
        seq: u64,
        attempt: u32,
        response_status: Option<u16>,
        error: Option<String>,
    },
}

impl WebhookCommand {
    /// The workspace addressed.
    pub fn ws(&self) -> &str {
        match self {
            WebhookCommand::Create { ws, .. }
            | WebhookCommand::Delete { ws, .. }
            | WebhookCommand::Begin { ws, .. }
            | WebhookCommand::End { ws, .. } => ws,
        }
    }
}

/// The result of a [`WebhookCommand`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WebhookResponse {
    /// A webhook after its creation.
    Created(Webhook),
    /// A deleted webhook's id.
    Deleted(String),
    /// A delivery after an attempt started, with the webhook to send it to.
    Begun {
        delivery: Delivery,
        webhook: Webhook,
    },
    /// A delivery after its outcome was recorded (or unchanged, for a stale outcome).
    Ended(Delivery),
}

/// A read of webhooks or deliveries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WebhookQuery {
    /// The workspace's webhooks with ids after `after`, in id order.
    List {
        ws: String,
        after: Option<String>,
        limit: usize,
    },
    /// One webhook.
    Get { ws: String, id: String },
    /// Deliveries numbered below `before`, newest first, of `webhook` only when given.
    Deliveries {
        ws: String,
        webhook: Option<String>,
        before: Option<u64>,
        limit: usize,
    },
    /// `(ws, seq)` of unfinished deliveries of any workspace due at `now`.
    Due { now: u64, limit: usize },
}

/// The result of a [`WebhookQuery`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WebhookResult {
    /// Webhooks.
    Webhooks(Vec<Webhook>),
    /// One webhook.
    Webhook(Webhook),
    /// A page of deliveries, and where to continue (`None` when nothing older can match).
    Deliveries {
        items: Vec<Delivery>,
        next_before: Option<u64>,
    },
    /// Due deliveries.
    Due(Vec<(String, u64)>),
}

mod keys {
    pub fn webhook_prefix(ws: &str) -> Vec<u8> {
        [b"W\0", ws.as_bytes(), b"\0"].concat()
    }
    pub fn webhook(ws: &str, id: &str) -> Vec<u8> {
        [webhook_prefix(ws), id.as_bytes().to_vec()].concat()
    }
    pub fn delivery_prefix(ws: &str) -> Vec<u8> {
        [b"d\0", ws.as_bytes(), b"\0"].concat()
    }
    pub fn delivery(ws: &str, seq: u64) -> Vec<u8> {
        [delivery_prefix(ws), (u64::MAX - seq).to_be_bytes().to_vec()].concat()
    }
    pub const SCHEDULE_PREFIX: &[u8] = b"o\0";
    pub fn schedule(at: u64, ws: &str, seq: u64) -> Vec<u8> {
        [
            SCHEDULE_PREFIX,
            &at.to_be_bytes(),
            b"\0",
            ws.as_bytes(),
            b"\0",
            &seq.to_be_bytes(),
        ]
        .concat()
    }
    pub fn webhook_counter(ws: &str) -> Vec<u8> {
        [b"n\0webhook\0", ws.as_bytes()].concat()
    }
    pub fn delivery_counter(ws: &str) -> Vec<u8> {
        [b"n\0delivery\0", ws.as_bytes()].concat()
    }
}

/// The backoff after `attempts` failed attempts.
pub fn backoff_ms(attempts: u32) -> u64 {
    BASE_BACKOFF_MS
        .saturating_mul(1u64 << attempts.saturating_sub(1).min(20))
        .min(MAX_BACKOFF_MS)
}

/// Applies a webhook command at leader time `at_ms`.
pub(super) fn apply<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    cmd: &WebhookCommand,
    at_ms: u64,
) -> std::io::Result<ShardResponse> {
    let out = match cmd {
        WebhookCommand::Create {
            ws,
            url,
            events,
            description,
            secret,
        } => {
            let existing = txn.scan(&keys::webhook_prefix(ws), None, MAX_WEBHOOKS_PER_WORKSPACE)?;
            if existing.len() >= MAX_WEBHOOKS_PER_WORKSPACE {
                Err(CoreError::conflict(format!(
                    "a workspace may register at most {MAX_WEBHOOKS_PER_WORKSPACE} webhooks"
                )))
            } else {
                let n = counter(txn, &keys::webhook_counter(ws))?;
                // Zero-padded, so id order is creation order.
                let hook = Webhook {
                    id: format!("wh_{n:010}"),
                    url: url.clone(),
                    events: events.clone(),
                    description: description.clone(),
                    secret: secret.clone(),
                    created_at: at_ms,
                };
                txn.put(keys::webhook(ws, &hook.id), encode(&hook));
                Ok(WebhookResponse::Created(hook))
            }
        }
        WebhookCommand::Delete { ws, id } => {
            let k = keys::webhook(ws, id);
            if txn.get(&k)?.is_none() {
                Err(CoreError::not_found(format!("webhook {id:?} not found")))
            } else {
                txn.delete(k);
                Ok(WebhookResponse::Deleted(id.clone()))
            }
        }
        WebhookCommand::Begin { ws, seq, node } => begin(txn, ws, *seq, *node, at_ms)?,
        WebhookCommand::End {
            ws,
            seq,
            attempt,
            response_status,
            error,
        } => end(
            txn,
            ws,
            *seq,
            *attempt,
            *response_status,
            error.as_deref(),
            at_ms,
        )?,
    };
    Ok(match out {
        Ok(r) => ShardResponse::Webhook(Box::new(r)),
        Err(e) => ShardResponse::Refused(e),
    })
}

/// Enqueues a delivery of each of `entries` that is a successful change to every webhook of
/// `ws` subscribed to its event type; called by the audit append, in the same apply, with the
/// entries it appended (the webhooks are read once per append).
pub(super) fn enqueue<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    ws: &str,
    entries: &[AuditEntry],
    at_ms: u64,
) -> std::io::Result<()> {
    let changes: Vec<&AuditEntry> = entries
        .iter()
        .filter(|e| (200..300).contains(&e.entry.status))
        .collect();
    if changes.is_empty() {
        return Ok(());
    }
    let hooks = txn
        .scan(&keys::webhook_prefix(ws), None, MAX_WEBHOOKS_PER_WORKSPACE)?
        .into_iter()
        .map(|(_, v)| decode_io::<Webhook>(&v))
        .collect::<std::io::Result<Vec<_>>>()?;
    if hooks.is_empty() {
        return Ok(());
    }
    for entry in changes {
        let event_type = super::audit::event_type(&entry.entry.method, &entry.entry.route);
        for hook in &hooks {
            if !hook.wants(&event_type) {
                continue;
            }
            let seq = counter(txn, &keys::delivery_counter(ws))?;
            if seq > MAX_DELIVERIES_PER_WORKSPACE {
                let old = seq - MAX_DELIVERIES_PER_WORKSPACE;
                if let Some(d) = get::<Delivery, R>(txn, &keys::delivery(ws, old))? {
                    if let Some(at) = d.next_attempt_at {
                        txn.delete(keys::schedule(at, ws, old));
                    }
                    txn.delete(keys::delivery(ws, old));
                }
            }
            let d = Delivery {
                id: format!("dlv_{seq}"),
                seq,
                webhook_id: hook.id.clone(),
                event_type: event_type.clone(),
                event: entry.clone(),
                status: DeliveryStatus::Pending,
                next_attempt_at: Some(at_ms),
                created_at: at_ms,
                attempts: Vec::new(),
            };
            txn.put(keys::schedule(at_ms, ws, seq), Vec::new());
            txn.put(keys::delivery(ws, seq), encode(&d));
        }
    }
    Ok(())
}

/// Moves `d`'s schedule entry to `next` (none: finished) and stores it.
fn reschedule<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    ws: &str,
    d: &mut Delivery,
    next: Option<u64>,
) {
    if let Some(at) = d.next_attempt_at {
        txn.delete(keys::schedule(at, ws, d.seq));
    }
    if let Some(at) = next {
        txn.put(keys::schedule(at, ws, d.seq), Vec::new());
    }
    d.next_attempt_at = next;
    txn.put(keys::delivery(ws, d.seq), encode(&*d));
}

fn begin<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    ws: &str,
    seq: u64,
    node: u64,
    at_ms: u64,
) -> std::io::Result<Result<WebhookResponse, CoreError>> {
    let Some(mut d) = get::<Delivery, R>(txn, &keys::delivery(ws, seq))? else {
        return Ok(Err(CoreError::not_found(format!(
            "delivery dlv_{seq} not found"
        ))));
    };
    let due = d.next_attempt_at.is_some_and(|at| at <= at_ms);
    let open = matches!(
        d.status,
        DeliveryStatus::Pending | DeliveryStatus::Retrying | DeliveryStatus::InFlight
    );
    if !(due && open) {
        return Ok(Err(CoreError::conflict(format!(
            "delivery dlv_{seq} is not due"
        ))));
    }
    let Some(hook) = get::<Webhook, R>(txn, &keys::webhook(ws, &d.webhook_id))? else {
        d.status = DeliveryStatus::Dead;
        reschedule(txn, ws, &mut d, None);
        return Ok(Err(CoreError::not_found(format!(
            "webhook {} was deleted",
            d.webhook_id
        ))));
    };
    let n = d.attempts.len() as u32;
    if n >= MAX_ATTEMPTS {
        // The last attempt's sender died before recording its outcome.
        d.status = DeliveryStatus::Dead;
        reschedule(txn, ws, &mut d, None);
        return Ok(Err(CoreError::conflict(format!(
            "delivery dlv_{seq} has used its {MAX_ATTEMPTS} attempts"
        ))));
    }
    if let Some(last) = d.attempts.last_mut() {
        if last.finished_at.is_none() {
            last.finished_at = Some(at_ms);
            last.error = Some("no outcome recorded (the sending node stopped)".into());
        }
    }
    d.attempts.push(Attempt {
        attempt: n + 1,
        node_id: node,
        started_at: at_ms,
        finished_at: None,
        response_status: None,
        error: None,
    });
    d.status = DeliveryStatus::InFlight;
    reschedule(txn, ws, &mut d, Some(at_ms + IN_FLIGHT_GRACE_MS));
    Ok(Ok(WebhookResponse::Begun {
        delivery: d,
        webhook: hook,
    }))
}

fn end<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    ws: &str,
    seq: u64,
    attempt: u32,
    response_status: Option<u16>,
    error: Option<&str>,
    at_ms: u64,
) -> std::io::Result<Result<WebhookResponse, CoreError>> {
    let Some(mut d) = get::<Delivery, R>(txn, &keys::delivery(ws, seq))? else {
        return Ok(Err(CoreError::not_found(format!(
            "delivery dlv_{seq} not found"
        ))));
    };
    let current = d.attempts.len() as u32 == attempt && d.status == DeliveryStatus::InFlight;
    if !current {
        // A late outcome of an attempt already superseded: kept as it stands.
        return Ok(Ok(WebhookResponse::Ended(d)));
    }
    let ok = response_status.is_some_and(|s| (200..300).contains(&s));
    if let Some(last) = d.attempts.last_mut() {
        last.finished_at = Some(at_ms);
        last.response_status = response_status;
        last.error = error.map(|e| e.chars().take(MAX_ERROR_CHARS).collect());
    }
    let next = if ok {
        d.status = DeliveryStatus::Succeeded;
        None
    } else if attempt >= MAX_ATTEMPTS {
        d.status = DeliveryStatus::Dead;
        None
    } else {
        d.status = DeliveryStatus::Retrying;
        Some(at_ms + backoff_ms(attempt))
    };
    reschedule(txn, ws, &mut d, next);
    Ok(Ok(WebhookResponse::Ended(d)))
}

/// Runs a webhook query.
pub(super) fn query<R: KvRead + ?Sized>(
    kv: &R,
    q: &WebhookQuery,
) -> Result<ShardReadResult, CoreError> {
    let out = match q {
        WebhookQuery::List { ws, after, limit } => {
            let after = after.as_ref().map(|a| keys::webhook(ws, a));
            let rows = kv
                .scan(&keys::webhook_prefix(ws), after.as_deref(), *limit)
                .map_err(io)?;
            WebhookResult::Webhooks(
                rows.iter()
                    .map(|(_, v)| decode_io(v).map_err(io))
                    .collect::<Result<_, _>>()?,
            )
        }
        WebhookQuery::Get { ws, id } => match kv.get(&keys::webhook(ws, id)).map_err(io)? {
            Some(b) => WebhookResult::Webhook(decode_io(&b).map_err(io)?),
            None => return Err(CoreError::not_found(format!("webhook {id:?} not found"))),
        },
        WebhookQuery::Deliveries {
            ws,
            webhook,
            before,
            limit,
        } => {
            const CHUNK: usize = 256;
            const BUDGET: usize = 10_000;
            let prefix = keys::delivery_prefix(ws);
            let mut after = before.map(|b| keys::delivery(ws, b));
            let mut items: Vec<Delivery> = Vec::new();
            let mut scanned = 0;
            let next_before = 'scan: loop {
                let rows = kv.scan(&prefix, after.as_deref(), CHUNK).map_err(io)?;
                let exhausted = rows.len() < CHUNK;
                for (k, v) in rows {
                    let d: Delivery = decode_io(&v).map_err(io)?;
                    after = Some(k);
                    scanned += 1;
                    let seq = d.seq;
                    if webhook.as_ref().is_none_or(|w| *w == d.webhook_id) {
                        items.push(d);
                        if items.len() == *limit {
                            break 'scan Some(seq);
                        }
                    }
                    if scanned >= BUDGET {
                        break 'scan Some(seq);
                    }
                }
                if exhausted {
                    break None;
                }
            };
            WebhookResult::Deliveries { items, next_before }
        }
        WebhookQuery::Due { now, limit } => {
            let end = keys::schedule(now.saturating_add(1), "", 0);
            let rows = kv.scan(keys::SCHEDULE_PREFIX, None, *limit).map_err(io)?;
            let mut due = Vec::new();
            for (k, _) in rows {
                if k >= end {
                    break;
                }
                // `o\0<at 8>\0<ws>\0<seq 8>`
                let ws_part = &k[2 + 8 + 1..k.len() - 9];
                let seq = u64::from_be_bytes(k[k.len() - 8..].try_into().expect("8 bytes"));
                due.push((String::from_utf8_lossy(ws_part).into_owned(), seq));
            }
            WebhookResult::Due(due)
        }
    };
    Ok(ShardReadResult::Webhook(out))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::shard::audit::{AuditRetention, NewAuditEntry};
    use crate::shard::{apply_to_map, query as shard_query, ShardCommand, ShardQuery};

    type Store = BTreeMap<Vec<u8>, Vec<u8>>;

    fn cmd(s: &mut Store, c: WebhookCommand, at: u64) -> ShardResponse {
        apply_to_map(s, 1, &ShardCommand::Webhook(c), at)
    }

    fn call(s: &mut Store, method: &str, route: &str, status: u16, at: u64) {
        calls(s, &[(method, route, status)], at);
    }

    /// One audit append of the calls `(method, route, status)`.
    fn calls(s: &mut Store, calls: &[(&str, &str, u16)], at: u64) {
        let entries = calls
            .iter()
            .map(|&(method, route, status)| NewAuditEntry {
                key_id: "key_1".into(),
                user_id: None,
                via: "rest".into(),
                method: method.into(),
                route: route.into(),
                targets: vec![],
                status,
                request_id: "r".into(),
                received_at: at,
                node_id: 1,
            })
            .collect();
        apply_to_map(
            s,
            1,
            &ShardCommand::AuditAppend {
                ws: "w".into(),
                entries,
                retention: AuditRetention {
                    max_age_ms: u64::MAX,
                    max_entries: u64::MAX,
                },
            },
            at,
        );
    }

    fn due(s: &Store, now: u64) -> Vec<u64> {
        match shard_query(
            s,
            &ShardQuery::Webhook(WebhookQuery::Due { now, limit: 100 }),
        )
        .unwrap()
        {
            ShardReadResult::Webhook(WebhookResult::Due(d)) => {
                d.into_iter().map(|(_, n)| n).collect()
            }
            other => panic!("{other:?}"),
        }
    }

    fn create(s: &mut Store, events: &[&str]) -> String {
        match cmd(
            s,
            WebhookCommand::Create {
                ws: "w".into(),
                url: "http://127.0.0.1:9/h".into(),
                events: events.iter().map(|e| e.to_string()).collect(),
                description: String::new(),
                secret: "s".repeat(32),
            },
            0,
        ) {
            ShardResponse::Webhook(r) => match *r {
                WebhookResponse::Created(h) => h.id,
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    fn begin(s: &mut Store, seq: u64, at: u64) -> ShardResponse {
        cmd(
            s,
            WebhookCommand::Begin {
                ws: "w".into(),
                seq,
                node: 7,
            },
            at,
        )
    }

    fn end(s: &mut Store, seq: u64, attempt: u32, status: Option<u16>, at: u64) -> Delivery {
        match cmd(
            s,
            WebhookCommand::End {
                ws: "w".into(),
                seq,
                attempt,
                response_status: status,
                error: status.is_none().then(|| "connection refused".into()),
            },
            at,
        ) {
            ShardResponse::Webhook(r) => match *r {
                WebhookResponse::Ended(d) => d,
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn successful_changes_are_enqueued_for_matching_webhooks_only() {
        let mut s = Store::new();
        create(&mut s, &["task.created"]);
        create(&mut s, &["*"]);
        call(&mut s, "POST", "/v1/tasks", 201, 10);
        call(&mut s, "POST", "/v1/topics", 201, 11);
        call(&mut s, "POST", "/v1/tasks", 400, 12);
        // task.created → both hooks; topic.created → the `*` one; the refused call → none.
        assert_eq!(due(&s, 100), vec![1, 2, 3]);
        assert_eq!(due(&s, 10), vec![1, 2]);
    }

    #[test]
    fn one_append_of_many_calls_enqueues_what_one_append_per_call_would() {
        let made = [
            ("POST", "/v1/tasks", 201),
            ("POST", "/v1/topics", 201),
            ("POST", "/v1/tasks", 400),
            ("DELETE", "/v1/context/{key}", 200),
        ];
        let mut apart = Store::new();
        let mut together = Store::new();
        for s in [&mut apart, &mut together] {
            create(s, &["task.created"]);
            create(s, &["*"]);
        }
        for &c in &made {
            calls(&mut apart, &[c], 10);
        }
        calls(&mut together, &made, 10);
        assert_eq!(due(&together, 100), vec![1, 2, 3, 4]);
        assert_eq!(apart, together);
    }

    #[test]
    fn failures_back_off_then_die_and_a_lost_sender_is_retried_after_the_grace() {
        let mut s = Store::new();
        create(&mut s, &["*"]);
        call(&mut s, "PUT", "/v1/context/{key}", 200, 0);
        // Attempt 1 fails: retried after the first backoff.
        assert!(matches!(begin(&mut s, 1, 0), ShardResponse::Webhook(_)));
        assert!(due(&s, 1_000).is_empty(), "in flight is not due");
        let d = end(&mut s, 1, 1, Some(500), 100);
        assert_eq!(
            (d.status, d.next_attempt_at),
            (DeliveryStatus::Retrying, Some(1_100))
        );
        assert!(
            matches!(begin(&mut s, 1, 500), ShardResponse::Refused(_)),
            "not due yet"
        );
        // Attempt 2's sender dies: after the grace the delivery is due again.
        assert!(matches!(begin(&mut s, 1, 1_100), ShardResponse::Webhook(_)));
        assert!(due(&s, 1_100 + IN_FLIGHT_GRACE_MS - 1).is_empty());
        assert_eq!(due(&s, 1_100 + IN_FLIGHT_GRACE_MS), vec![1]);
        let ShardResponse::Webhook(r) = begin(&mut s, 1, 1_100 + IN_FLIGHT_GRACE_MS) else {
            panic!()
        };
        let WebhookResponse::Begun { delivery, .. } = *r else {
            panic!()
        };
        assert_eq!(delivery.attempts.len(), 3);
        assert!(delivery.attempts[1].error.is_some());
        // A late outcome of attempt 2 changes nothing; attempt 3 succeeds.
        assert_eq!(
            end(&mut s, 1, 2, Some(200), 40_000).status,
            DeliveryStatus::InFlight
        );
        let d = end(&mut s, 1, 3, Some(204), 40_000);
        assert_eq!(
            (d.status, d.next_attempt_at),
            (DeliveryStatus::Succeeded, None)
        );
        assert!(due(&s, u64::MAX - 1).is_empty());
    }

    #[test]
    fn a_delivery_dies_after_its_last_attempt() {
        let mut s = Store::new();
        create(&mut s, &["*"]);
        call(&mut s, "DELETE", "/v1/context/{key}", 200, 0);
        let mut at = 0;
        for attempt in 1..=MAX_ATTEMPTS {
            assert!(
                matches!(begin(&mut s, 1, at), ShardResponse::Webhook(_)),
                "{attempt}"
            );
            let d = end(&mut s, 1, attempt, None, at);
            at = d.next_attempt_at.unwrap_or(at);
            if attempt == MAX_ATTEMPTS {
                assert_eq!(d.status, DeliveryStatus::Dead);
            }
        }
        assert!(due(&s, u64::MAX - 1).is_empty());
        assert_eq!(backoff_ms(1), 1_000);
        assert_eq!(backoff_ms(3), 4_000);
        assert_eq!(backoff_ms(30), MAX_BACKOFF_MS);
    }
}
