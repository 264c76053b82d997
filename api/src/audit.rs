//! The audit trail of mutating calls: one entry per `POST`, `PUT`, `PATCH` or `DELETE` under
//! `/v1`, whichever transport carried it.
//!
//! Two ways in, one writer:
//! - [`layer`], one axum middleware on every documented route: it authenticates the caller
//!   (as the handler will), runs the handler, then records the method, the route template, the
//!   path parameters and the `id` of the answer, the status and the transport, and answers the
//!   client only once the entry is committed.
//! - [`record`], for a transport that performs a mutation without going through the routes.
//!
//! The transport is [`Via`], an optional request extension: REST requests carry none (`rest`);
//! the MCP server dispatches each tool call as an in-process request through the same router
//! with `Via::Mcp` inserted into the request's extensions, so its calls pass through [`layer`]
//! and are recorded with `via: "mcp"`.
//!
//! **Cost.** Entries go through one bounded queue per node to a writer task that takes every
//! entry waiting (up to [`MAX_BATCH`]) and proposes one `AuditAppendOnce` per workspace: under load
//! one Raft entry carries the audit of many calls (group commit), so the audit adds few extra
//! Raft entries.
//!
//! **No acknowledged call is unaudited, and the audit adds no commit to a call's latency.** The
//! middleware runs the handler inside an [`AuditCall`] scope: the call's first shard write
//! carries the call's audit record and commits it atomically with the change, in the outbox of
//! the change's shard (`conclave_raft::shard::outbox`). Once that write has committed, the
//! client is answered without waiting for the audit entry; the entry is appended right after
//! (normally within milliseconds, so it shows in the log a moment after the answer) and the
//! outbox record is then cleared. If the entry cannot be appended (the audit shard has no
//! leader) it is retried for half of [`AuditSettings::relay_after`]; if the node dies first,
//! the change's shard leader appends the entry from the outbox record once the record is
//! `relay_after` old (the relay), with the status the write's outcome implies: the route's
//! documented success status for an applied write, the refusal's status otherwise.
//!
//! A call that made no shard write (refused before one, or a change to the meta group such as
//! API keys and workspaces), or whose write's outcome is unknown, waits for its entry's commit
//! as before. If the entry cannot be committed within [`FOREGROUND_BUDGET`], the client gets
//! 503 (the change itself may have been made, as with any write whose outcome is unknown) and
//! the entry goes to a bounded background queue that keeps retrying it with backoff; if that
//! queue is full, or the node stops before the retry succeeds, the entry is lost and an error
//! is logged.
//!
//! **Once.** Each append names every entry's outbox record, when its call has one; the audit
//! shard skips an entry whose record it appended within ten `relay_after`s (at least ten
//! minutes), so an append that arrives late, a retry after an unknown outcome, or a second
//! relay records such a call once. A call without a record whose append is retried after an
//! unknown outcome may be recorded twice, with the same `request_id` (at least once).
//!
//! Not audited: calls without a valid key (refused with 401 before any change, or public such
//! as accepting an invitation), presence heartbeats (not Raft writes by design; auditing them
//! would make each one a write) and `POST /v1/context/search` (a read).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use conclave_actors::audit_call::{AuditCall, Carried};
use conclave_actors::{ClientRequest, ClientResponse, ForwardResult, Router};
use conclave_raft::error::CoreError;
use conclave_raft::shard::audit::{AuditRetention, NewAuditEntry};
use conclave_raft::shard::outbox::{self, OutboxRecord, OutboxRow};
use conclave_raft::storage::GroupKv;
use conclave_raft::{GroupId, ShardCommand, ShardResponse};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Semaphore};
use utoipa::ToSchema;

use crate::auth::{self, Caller};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Entries waiting for the writer; a full queue makes callers wait (backpressure).
pub const QUEUE_CAPACITY: usize = 4096;
/// Entries one writer pass takes from the queue at most.
pub const MAX_BATCH: usize = 512;
/// Audit appends running at once per node.
pub const MAX_WRITES_IN_FLIGHT: usize = 16;
/// How long a call waits for its entry to commit before it answers 503.
pub const FOREGROUND_BUDGET: Duration = Duration::from_secs(15);
/// Entries waiting for a background retry; beyond it an entry is dropped (and logged).
pub const RETRY_QUEUE_CAPACITY: usize = 10_000;
/// Largest answer body read back for the `id` of what a call created or changed.
const MAX_INSPECTED_BODY: u64 = 64 * 1024;
/// Header carrying the request id (taken from the client when well formed, else generated).
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// How long the writer gathers entries nobody waits for (their records are in outboxes)
/// before it appends them.
const BACKGROUND_GATHER: Duration = Duration::from_millis(10);
/// Records one relay pass takes from one shard at most.
const RELAY_BATCH: usize = 512;
/// Outbox records cleared waiting for their clear to be proposed; beyond it the writer waits.
const CLEAR_QUEUE_CAPACITY: usize = 65_536;
/// How often waiting clears are proposed (one `OutboxClear` per shard).
const CLEAR_EVERY: Duration = Duration::from_millis(200);

/// The transport a call came in by: an optional request extension, absent for REST.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// The REST API (the default when a request carries no `Via`).
    #[default]
    Rest,
    /// A tool call of the MCP server, dispatched through the REST routes in process.
    Mcp,
}

impl Via {
    /// `rest` or `mcp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Rest => "rest",
            Via::Mcp => "mcp",
        }
    }
}

/// One mutating call to record.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    /// HTTP method (or, for a call that is not an HTTP request, its verb).
    pub method: String,
    /// The route template (e.g. `/v1/tasks/{id}/claim`), or the operation's name.
    pub route: String,
    /// `(name, value)` of the ids the call addressed.
    pub targets: Vec<(String, String)>,
    /// The HTTP status the call answered.
    pub status: u16,
    /// The transport.
    pub via: Via,
    /// Correlates the entry with the request.
    pub request_id: String,
    /// When the call was received, ms since the epoch.
    pub received_at: u64,
}

/// Node settings of the audit log.
#[derive(Debug, Clone, Copy)]
pub struct AuditSettings {
    /// Entries older than this many days are removed.
    pub retention_days: u64,
    /// At most this many of the newest entries are kept per workspace.
    pub max_entries: u64,
    /// How old an outbox record must be before its shard's leader appends the entry itself.
    /// The serving node retries the entry for half of it; with the default (60 s) that plus
    /// one append's [`FOREGROUND_BUDGET`] ends before the relay starts, so a slow audit shard
    /// does not make both record a call.
    pub relay_after: Duration,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            retention_days: 90,
            max_entries: 1_000_000,
            relay_after: Duration::from_secs(60),
        }
    }
}

impl AuditSettings {
    /// How long the serving node retries the entry of a call whose record is in an outbox
    /// before it leaves the entry to the relay.
    fn carried_retry_for(&self) -> Duration {
        self.relay_after / 2
    }

    /// How long the audit shard remembers the records whose entries it appended, so a late
    /// append or a second relay of one is skipped: ten times `relay_after`, at least 10 minutes.
    fn dedupe_window(&self) -> Duration {
        (self.relay_after * 10).max(Duration::from_secs(600))
    }

    /// How often each node looks for stale records in the outboxes of the shards it leads.
    fn relay_every(&self) -> Duration {
        (self.relay_after / 4).clamp(Duration::from_millis(250), Duration::from_secs(10))
    }
}

/// One entry on its way to the writer, and who waits for it.
struct Pending {
    ws: String,
    entry: NewAuditEntry,
    done: Option<oneshot::Sender<Result<(), CoreError>>>,
    /// The outbox record of the call to clear once the entry is committed.
    outbox: Option<Clear>,
    /// For an entry whose record is surely in an outbox: when retrying may stop, the relay
    /// taking over.
    give_up: Option<tokio::time::Instant>,
}

/// The node's audit writer: a handle to its queue.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Pending>,
    node_id: u64,
    carried_retry_for: Duration,
}

/// An outbox record to clear: `(shard, id)`.
type Clear = (GroupId, String);

impl AuditLog {
    /// Starts the writer and its background retry task (needs a tokio runtime).
    pub fn start(router: Arc<Router>, settings: AuditSettings) -> Self {
        let limits = Limits {
            retention: AuditRetention {
                max_age_ms: settings.retention_days.saturating_mul(86_400_000),
                max_entries: settings.max_entries,
            },
            window_ms: settings.dedupe_window().as_millis() as u64,
        };
        let node_id = router.groups().node_id();
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let (retry_tx, retry_rx) = mpsc::channel(RETRY_QUEUE_CAPACITY);
        let (clear_tx, clear_rx) = mpsc::channel(CLEAR_QUEUE_CAPACITY);
        tokio::spawn(write_loop(
            router.clone(),
            limits,
            rx,
            retry_tx,
            clear_tx.clone(),
        ));
        tokio::spawn(retry_loop(router.clone(), limits, retry_rx, clear_tx));
        tokio::spawn(clear_loop(router.clone(), clear_rx));
        tokio::spawn(relay_loop(router, limits, settings));
        Self {
            tx,
            node_id,
            carried_retry_for: settings.carried_retry_for(),
        }
    }

    /// Queues `entry` of workspace `ws` and waits for its commit; then clears `outbox`.
    async fn write(
        &self,
        ws: String,
        entry: NewAuditEntry,
        outbox: Option<Clear>,
    ) -> Result<(), CoreError> {
        let (done, wait) = oneshot::channel();
        let pending = Pending {
            ws,
            entry,
            done: Some(done),
            outbox,
            give_up: None,
        };
        if self.tx.send(pending).await.is_err() {
            return Err(CoreError::unavailable("the audit writer has stopped"));
        }
        wait.await
            .unwrap_or_else(|_| Err(CoreError::unavailable("the audit writer has stopped")))
    }

    /// Queues `entry` of a call whose record is committed in `outbox`, without waiting.
    async fn submit(&self, ws: String, entry: NewAuditEntry, outbox: Clear) {
        let pending = Pending {
            ws,
            entry,
            done: None,
            outbox: Some(outbox),
            give_up: Some(tokio::time::Instant::now() + self.carried_retry_for),
        };
        if self.tx.send(pending).await.is_err() {
            tracing::warn!("the audit writer has stopped; the outbox relay will append the entry");
        }
    }
}

/// Records `entry`, made by `caller`, in the caller's workspace's audit log and waits for its
/// commit. An error means it is not committed yet: it has been handed to the background retry.
pub async fn record(state: &AppState, caller: &Caller, entry: AuditEntry) -> ApiResult<()> {
    let new = new_entry(state, caller, entry);
    Ok(state
        .audit
        .write(caller.workspace.clone(), new, None)
        .await?)
}

fn new_entry(state: &AppState, caller: &Caller, entry: AuditEntry) -> NewAuditEntry {
    NewAuditEntry {
        key_id: caller.key_id.clone(),
        user_id: caller.user.clone(),
        via: entry.via.as_str().to_string(),
        method: entry.method,
        route: entry.route,
        targets: entry.targets,
        status: entry.status,
        request_id: entry.request_id,
        received_at: entry.received_at,
        node_id: state.audit.node_id,
    }
}

/// Whether a call of `method` on route template `route` is recorded.
pub fn audited(method: &Method, route: &str) -> bool {
    let mutating = matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    mutating
        && route.starts_with("/v1/")
        && !(*method == Method::POST
            && matches!(route, "/v1/agents/{id}/heartbeat" | "/v1/context/search"))
}

/// The middleware: records every audited call (see the module documentation).
pub async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let received_at = conclave_raft::command::now_ms();
    let (mut parts, body) = req.into_parts();
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| parts.uri.path().to_string());
    if !audited(&parts.method, &route) {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let request_id = parts
        .headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| (1..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(String::from)
        .unwrap_or_else(|| auth::new_id("req"));
    let Ok(caller) = Caller::from_request_parts(&mut parts, &state).await else {
        // Refused with 401 by the handler (nothing changes), or a public route.
        return next.run(Request::from_parts(parts, body)).await;
    };
    let targets: Vec<(String, String)> =
        match RawPathParams::from_request_parts(&mut parts, &state).await {
            Ok(params) => params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            Err(_) => Vec::new(),
        };
    let via = parts.extensions.get::<Via>().copied().unwrap_or_default();

    // The entry as known now; the call's first shard write carries it as the call's record,
    // and the status and the answered id complete it below.
    let mut entry = new_entry(
        &state,
        &caller,
        AuditEntry {
            method: parts.method.to_string(),
            route,
            targets,
            status: 0,
            via,
            request_id: request_id.clone(),
            received_at,
        },
    );
    let record_id = outbox::record_id(received_at, state.audit.node_id, rand::rng().next_u64());
    let call = AuditCall::new(OutboxRecord {
        id: record_id.clone(),
        ws: caller.workspace.clone(),
        entry: entry.clone(),
    });
    let response = call.scope(next.run(Request::from_parts(parts, body))).await;
    let status = response.status();
    let mut response = if status.is_success() {
        let (rparts, rbody) = response.into_parts();
        if rbody
            .size_hint()
            .exact()
            .is_some_and(|n| n <= MAX_INSPECTED_BODY)
        {
            match axum::body::to_bytes(rbody, MAX_INSPECTED_BODY as usize).await {
                Ok(bytes) => {
                    if let Some(id) = answered_id(&bytes) {
                        if !entry.targets.iter().any(|(_, v)| *v == id) {
                            entry.targets.push(("id".to_string(), id));
                        }
                    }
                    Response::from_parts(rparts, Body::from(bytes))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not read an answer back for its audit entry");
                    ApiError::internal("the answer could not be read back").into_response()
                }
            }
        } else {
            Response::from_parts(rparts, rbody)
        }
    } else {
        response
    };
    entry.status = status.as_u16();
    let ws = caller.workspace.clone();
    let outcome = match call.carried() {
        // The record is committed with the change: answer now, append after.
        Carried::Yes(group) => {
            state.audit.submit(ws, entry, (group, record_id)).await;
            Ok(())
        }
        Carried::Unknown(group) => state.audit.write(ws, entry, Some((group, record_id))).await,
        Carried::No => state.audit.write(ws, entry, None).await,
    };
    if let Err(e) = outcome {
        tracing::warn!(request_id = %request_id, error = %e.message, "audit entry not committed; answering 503");
        response = ApiError::unavailable(format!(
            "the call was carried out with status {} but its audit entry is not committed yet \
             (it is being retried); read the resource to see its state",
            status.as_u16()
        ))
        .into_response();
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    response
}

/// The top-level `id` of a JSON answer, if it has a string one.
fn answered_id(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct WithId {
        id: Option<serde_json::Value>,
    }
    let v: WithId = serde_json::from_slice(body).ok()?;
    match v.id? {
        serde_json::Value::String(s) if s.len() <= 256 => Some(s),
        _ => None,
    }
}

/// Takes waiting entries in batches and commits each batch, one append per workspace; at most
/// [`MAX_WRITES_IN_FLIGHT`] appends run at once, so a workspace whose audit shard is electing
/// does not hold up the others for long. Committed entries' outbox records go to `clear`.
async fn write_loop(
    router: Arc<Router>,
    limits: Limits,
    mut rx: mpsc::Receiver<Pending>,
    retry: mpsc::Sender<Pending>,
    clear: mpsc::Sender<Clear>,
) {
    let slots = Arc::new(Semaphore::new(MAX_WRITES_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        // Nobody waits for these: gather more for a moment, so one append carries the entries
        // of many calls even at low load, until a waited-for entry arrives.
        let until = tokio::time::Instant::now() + BACKGROUND_GATHER;
        while batch.len() < MAX_BATCH && batch.iter().all(|p| p.done.is_none()) {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(p)) => batch.push(p),
                Ok(None) | Err(_) => break,
            }
        }
        for (ws, items) in by_workspace(batch) {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let router = router.clone();
            let retry = retry.clone();
            let clear = clear.clone();
            tokio::spawn(async move {
                let entries = named(&items);
                let outcome =
                    tokio::time::timeout(FOREGROUND_BUDGET, append(&router, &ws, entries, limits))
                        .await
                        .unwrap_or_else(|_| Err(CoreError::unavailable("audit write timed out")))
                        .map(|_| ());
                drop(slot);
                for mut p in items {
                    let done = p.done.take();
                    if outcome.is_ok() {
                        if let Some(c) = p.outbox.take() {
                            let _ = clear.send(c).await;
                        }
                    } else if let Err(e) = retry.try_send(p) {
                        let lost = match e {
                            mpsc::error::TrySendError::Full(p)
                            | mpsc::error::TrySendError::Closed(p) => p,
                        };
                        if lost.give_up.is_some() {
                            tracing::warn!(
                                ws = %lost.ws,
                                request_id = %lost.entry.request_id,
                                "audit retry queue full: the outbox relay will append the entry"
                            );
                        } else {
                            tracing::error!(
                                ws = %lost.ws,
                                request_id = %lost.entry.request_id,
                                "audit retry queue full: audit entry lost"
                            );
                        }
                    }
                    if let Some(done) = done {
                        let _ = done.send(outcome.clone());
                    }
                }
            });
        }
    }
}

/// Retries entries the writer could not commit, with backoff, until each commits; an entry
/// whose record is in an outbox is left to the relay once its `give_up` time has passed.
async fn retry_loop(
    router: Arc<Router>,
    limits: Limits,
    mut rx: mpsc::Receiver<Pending>,
    clear: mpsc::Sender<Clear>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        for (ws, mut items) in by_workspace(batch) {
            let mut backoff = Duration::from_millis(500);
            loop {
                let now = tokio::time::Instant::now();
                let before = items.len();
                items.retain(|p| p.give_up.is_none_or(|t| t > now));
                if items.len() < before {
                    tracing::warn!(
                        ws = %ws,
                        entries = before - items.len(),
                        "audit entries not committed in time: left to the outbox relay"
                    );
                }
                if items.is_empty() {
                    break;
                }
                match append(&router, &ws, named(&items), limits).await {
                    Ok(_) => {
                        tracing::info!(ws = %ws, entries = items.len(), "audit entries committed on retry");
                        for p in items {
                            if let Some(c) = p.outbox {
                                let _ = clear.send(c).await;
                            }
                        }
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(ws = %ws, error = %e.message, "audit retry failed");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        }
    }
}

/// Proposes the clears of outbox records whose entries are committed: every [`CLEAR_EVERY`],
/// one `OutboxClear` per shard, the shards in parallel, at most one in flight per shard. A
/// clear that fails is kept for a later pass, up to [`CLEAR_QUEUE_CAPACITY`] records waiting;
/// a record never cleared (dropped, or the node stopped) has its entry appended again by the
/// relay (at least once).
async fn clear_loop(router: Arc<Router>, mut rx: mpsc::Receiver<Clear>) {
    let mut waiting: BTreeMap<GroupId, Vec<String>> = BTreeMap::new();
    let mut busy: std::collections::BTreeSet<GroupId> = std::collections::BTreeSet::new();
    let (back_tx, mut back_rx) = mpsc::unbounded_channel::<(GroupId, Vec<String>)>();
    let mut tick = tokio::time::interval(CLEAR_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            next = rx.recv() => match next {
                Some((group, id)) => waiting.entry(group).or_default().push(id),
                None => return,
            },
            Some((group, failed)) = back_rx.recv() => {
                busy.remove(&group);
                let held: usize = waiting.values().map(Vec::len).sum();
                if held + failed.len() > CLEAR_QUEUE_CAPACITY {
                    tracing::warn!(shard = group, records = failed.len(), "outbox clears dropped: too many waiting; the relay will append their entries again");
                } else {
                    waiting.entry(group).or_default().extend(failed);
                }
            }
            _ = tick.tick() => {
                let ready: Vec<GroupId> = waiting.keys().filter(|g| !busy.contains(g)).copied().collect();
                for group in ready {
                    let ids = waiting.remove(&group).unwrap_or_default();
                    busy.insert(group);
                    let router = router.clone();
                    let back = back_tx.clone();
                    tokio::spawn(async move {
                        let mut failed = Vec::new();
                        for chunk in ids.chunks(outbox::MAX_CLEAR) {
                            let cmd = ShardCommand::OutboxClear { ids: chunk.to_vec() };
                            if let Err(e) = router.execute(group, ClientRequest::Write(cmd)).await {
                                tracing::debug!(shard = group, error = %e.message, "outbox clear failed; retrying");
                                failed.extend_from_slice(chunk);
                            }
                        }
                        let _ = back.send((group, failed));
                    });
                }
            }
        }
    }
}

/// The outbox relay: on each data shard this node leads, appends the entries of records older
/// than `settings.relay_after` (their serving node did not) and clears them.
async fn relay_loop(router: Arc<Router>, limits: Limits, settings: AuditSettings) {
    let mut tick = tokio::time::interval(settings.relay_every());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let groups = router.groups();
        let cutoff = conclave_raft::command::now_ms()
            .saturating_sub(settings.relay_after.as_millis() as u64);
        for group in groups.led_shards() {
            let kv = GroupKv::new(groups.db(), group);
            match outbox::stale(&kv, cutoff, RELAY_BATCH * 4, RELAY_BATCH) {
                Ok(rows) if !rows.is_empty() => relay(&router, group, rows, limits).await,
                Ok(_) => {}
                Err(e) => tracing::warn!(shard = group, error = %e, "reading the outbox failed"),
            }
        }
    }
}

/// Appends the entries of `rows`, stale records of `group`'s outbox, then clears them.
async fn relay(router: &Router, group: GroupId, rows: Vec<(String, OutboxRow)>, limits: Limits) {
    let mut by_ws: BTreeMap<String, Vec<(String, NewAuditEntry)>> = BTreeMap::new();
    for (id, row) in rows {
        let mut entry = row.entry;
        entry.status = match row.refused {
            Some(code) => ApiError::from(CoreError::new(code, String::new()))
                .status
                .as_u16(),
            None => success_status(&entry.method, &entry.route),
        };
        by_ws.entry(row.ws).or_default().push((id, entry));
    }
    for (ws, items) in by_ws {
        let count = items.len();
        let entries = items
            .iter()
            .map(|(id, e)| (Some(id.clone()), e.clone()))
            .collect();
        let appended = match append(router, &ws, entries, limits).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(shard = group, ws = %ws, error = %e.message, "outbox relay: append failed");
                continue;
            }
        };
        tracing::info!(
            shard = group,
            ws = %ws,
            records = count,
            appended,
            "outbox relay: appended the audit entries of stale records (those already appended are skipped)"
        );
        let ids = items.into_iter().map(|(id, _)| id).collect();
        let cmd = ShardCommand::OutboxClear { ids };
        match router
            .execute_local(group, &ClientRequest::Write(cmd))
            .await
        {
            ForwardResult::Done(Ok(_)) => {}
            other => {
                tracing::warn!(shard = group, outcome = ?other, "outbox relay: clear failed")
            }
        }
    }
}

/// The success status the API documents for `method` on route template `route` (200 if none).
fn success_status(method: &str, route: &str) -> u16 {
    static STATUSES: std::sync::OnceLock<BTreeMap<(String, String), u16>> =
        std::sync::OnceLock::new();
    let statuses = STATUSES.get_or_init(|| {
        let doc = serde_json::to_value(crate::routes::openapi()).unwrap_or_default();
        let mut out = BTreeMap::new();
        if let Some(paths) = doc.get("paths").and_then(|p| p.as_object()) {
            for (path, item) in paths {
                let Some(ops) = item.as_object() else {
                    continue;
                };
                for (verb, op) in ops {
                    let first_2xx = op
                        .get("responses")
                        .and_then(|r| r.as_object())
                        .and_then(|r| {
                            r.keys().find_map(|k| {
                                k.parse::<u16>().ok().filter(|s| (200..300).contains(s))
                            })
                        });
                    if let Some(status) = first_2xx {
                        out.insert((verb.to_ascii_uppercase(), path.clone()), status);
                    }
                }
            }
        }
        out
    });
    statuses
        .get(&(method.to_string(), route.to_string()))
        .copied()
        .unwrap_or(200)
}

fn by_workspace(batch: Vec<Pending>) -> BTreeMap<String, Vec<Pending>> {
    let mut out: BTreeMap<String, Vec<Pending>> = BTreeMap::new();
    for p in batch {
        out.entry(p.ws.clone()).or_default().push(p);
    }
    out
}

/// What every append carries: the retention to trim to and how long the audit shard
/// remembers the outbox records whose entries it appended.
#[derive(Debug, Clone, Copy)]
struct Limits {
    retention: AuditRetention,
    window_ms: u64,
}

/// The entries of `items`, each with its call's outbox record when it has one.
fn named(items: &[Pending]) -> Vec<(Option<String>, NewAuditEntry)> {
    items
        .iter()
        .map(|p| (p.outbox.as_ref().map(|(_, id)| id.clone()), p.entry.clone()))
        .collect()
}

/// Proposes one append of `entries` to `ws`'s audit shard; an entry naming a record appended
/// before is skipped there. Answers how many were appended.
async fn append(
    router: &Router,
    ws: &str,
    entries: Vec<(Option<String>, NewAuditEntry)>,
    limits: Limits,
) -> Result<u64, CoreError> {
    let group = router
        .shard_of(ws, "audit", "")
        .ok_or_else(|| CoreError::unavailable("the cluster is not bootstrapped yet"))?;
    let cmd = conclave_raft::ShardCommand::AuditAppendOnce {
        ws: ws.to_string(),
        entries,
        retention: limits.retention,
        window_ms: limits.window_ms,
    };
    match router.execute(group, ClientRequest::Write(cmd)).await? {
        ClientResponse::Write(ShardResponse::AuditAppended { count, .. }) => Ok(count),
        ClientResponse::Write(ShardResponse::Refused(e)) => Err(e),
        other => Err(CoreError::internal(format!(
            "unexpected audit response {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutating_v1_calls_are_audited_except_heartbeats_and_search() {
        assert!(audited(&Method::POST, "/v1/tasks"));
        assert!(audited(&Method::DELETE, "/v1/context/{key}"));
        assert!(audited(&Method::PATCH, "/v1/tasks/{id}"));
        assert!(audited(&Method::PUT, "/v1/context/{key}"));
        assert!(!audited(&Method::GET, "/v1/tasks"));
        assert!(!audited(&Method::POST, "/v1/agents/{id}/heartbeat"));
        assert!(!audited(&Method::POST, "/v1/context/search"));
        assert!(!audited(&Method::POST, "/healthz"));
    }

    #[test]
    fn relayed_entries_take_the_documented_success_status() {
        assert_eq!(success_status("POST", "/v1/tasks"), 201);
        assert_eq!(success_status("PUT", "/v1/context/{key}"), 200);
        assert_eq!(success_status("POST", "/v1/topics/{name}/publish"), 201);
        assert_eq!(success_status("GET", "/nowhere"), 200);
    }

    #[test]
    fn the_answered_id_is_a_top_level_string() {
        assert_eq!(
            answered_id(br#"{"id":"task_3_1","x":1}"#),
            Some("task_3_1".into())
        );
        assert_eq!(answered_id(br#"{"id":7}"#), None);
        assert_eq!(answered_id(br#"[1]"#), None);
        assert_eq!(answered_id(b"not json"), None);
    }
}
