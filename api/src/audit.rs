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
//! entry waiting (up to [`MAX_BATCH`]) and proposes one `AuditAppend` per workspace: under load
//! one Raft entry carries the audit of many calls (group commit), so the audit adds one commit
//! latency to a mutating call but few extra Raft entries.
//!
//! **No acknowledged call is unaudited.** The client's answer waits for the entry's commit. If
//! the entry cannot be committed within [`FOREGROUND_BUDGET`], the client gets 503 (the change
//! itself may have been made, as with any write whose outcome is unknown) and the entry goes to
//! a bounded background queue that keeps retrying it with backoff; if that queue is full, or
//! the node stops before the retry succeeds, the entry is lost and an error is logged. A
//! retried append whose first attempt did commit records the call twice, with the same
//! `request_id` (at least once).
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
use conclave_actors::{ClientRequest, ClientResponse, Router};
use conclave_raft::error::CoreError;
use conclave_raft::shard::audit::{AuditRetention, NewAuditEntry};
use conclave_raft::ShardResponse;
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
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            retention_days: 90,
            max_entries: 1_000_000,
        }
    }
}

/// One entry on its way to the writer, and who waits for it.
struct Pending {
    ws: String,
    entry: NewAuditEntry,
    done: Option<oneshot::Sender<Result<(), CoreError>>>,
}

/// The node's audit writer: a handle to its queue.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Pending>,
    node_id: u64,
}

impl AuditLog {
    /// Starts the writer and its background retry task (needs a tokio runtime).
    pub fn start(router: Arc<Router>, settings: AuditSettings) -> Self {
        let retention = AuditRetention {
            max_age_ms: settings.retention_days.saturating_mul(86_400_000),
            max_entries: settings.max_entries,
        };
        let node_id = router.groups().node_id();
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let (retry_tx, retry_rx) = mpsc::channel(RETRY_QUEUE_CAPACITY);
        tokio::spawn(write_loop(router.clone(), retention, rx, retry_tx));
        tokio::spawn(retry_loop(router, retention, retry_rx));
        Self { tx, node_id }
    }

    /// Queues `entry` of workspace `ws` and waits for its commit.
    async fn write(&self, ws: String, entry: NewAuditEntry) -> Result<(), CoreError> {
        let (done, wait) = oneshot::channel();
        let pending = Pending {
            ws,
            entry,
            done: Some(done),
        };
        if self.tx.send(pending).await.is_err() {
            return Err(CoreError::unavailable("the audit writer has stopped"));
        }
        wait.await
            .unwrap_or_else(|_| Err(CoreError::unavailable("the audit writer has stopped")))
    }
}

/// Records `entry`, made by `caller`, in the caller's workspace's audit log and waits for its
/// commit. An error means it is not committed yet: it has been handed to the background retry.
pub async fn record(state: &AppState, caller: &Caller, entry: AuditEntry) -> ApiResult<()> {
    let new = NewAuditEntry {
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
    };
    Ok(state.audit.write(caller.workspace.clone(), new).await?)
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
    let mut targets: Vec<(String, String)> =
        match RawPathParams::from_request_parts(&mut parts, &state).await {
            Ok(params) => params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            Err(_) => Vec::new(),
        };
    let via = parts.extensions.get::<Via>().copied().unwrap_or_default();
    let method = parts.method.to_string();

    let response = next.run(Request::from_parts(parts, body)).await;
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
                        if !targets.iter().any(|(_, v)| *v == id) {
                            targets.push(("id".to_string(), id));
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
    let entry = AuditEntry {
        method,
        route,
        targets,
        status: status.as_u16(),
        via,
        request_id: request_id.clone(),
        received_at,
    };
    if let Err(e) = record(&state, &caller, entry).await {
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
/// does not hold up the others for long.
async fn write_loop(
    router: Arc<Router>,
    retention: AuditRetention,
    mut rx: mpsc::Receiver<Pending>,
    retry: mpsc::Sender<Pending>,
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
        for (ws, items) in by_workspace(batch) {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let router = router.clone();
            let retry = retry.clone();
            tokio::spawn(async move {
                let entries: Vec<NewAuditEntry> = items.iter().map(|p| p.entry.clone()).collect();
                let outcome = tokio::time::timeout(
                    FOREGROUND_BUDGET,
                    append(&router, &ws, entries, retention),
                )
                .await
                .unwrap_or_else(|_| Err(CoreError::unavailable("audit write timed out")));
                drop(slot);
                for mut p in items {
                    let done = p.done.take();
                    if outcome.is_err() {
                        if let Err(e) = retry.try_send(p) {
                            let lost = match e {
                                mpsc::error::TrySendError::Full(p)
                                | mpsc::error::TrySendError::Closed(p) => p,
                            };
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

/// Retries entries the writer could not commit, with backoff, until each commits.
async fn retry_loop(
    router: Arc<Router>,
    retention: AuditRetention,
    mut rx: mpsc::Receiver<Pending>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        for (ws, items) in by_workspace(batch) {
            let entries: Vec<NewAuditEntry> = items.into_iter().map(|p| p.entry).collect();
            let mut backoff = Duration::from_millis(500);
            loop {
                match append(&router, &ws, entries.clone(), retention).await {
                    Ok(()) => {
                        tracing::info!(ws = %ws, entries = entries.len(), "audit entries committed on retry");
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

fn by_workspace(batch: Vec<Pending>) -> BTreeMap<String, Vec<Pending>> {
    let mut out: BTreeMap<String, Vec<Pending>> = BTreeMap::new();
    for p in batch {
        out.entry(p.ws.clone()).or_default().push(p);
    }
    out
}

/// Proposes one append of `entries` to `ws`'s audit shard.
async fn append(
    router: &Router,
    ws: &str,
    entries: Vec<NewAuditEntry>,
    retention: AuditRetention,
) -> Result<(), CoreError> {
    let group = router
        .shard_of(ws, "audit", "")
        .ok_or_else(|| CoreError::unavailable("the cluster is not bootstrapped yet"))?;
    let cmd = conclave_raft::ShardCommand::AuditAppend {
        ws: ws.to_string(),
        entries,
        retention,
    };
    match router.execute(group, ClientRequest::Write(cmd)).await? {
        ClientResponse::Write(ShardResponse::AuditAppended { .. }) => Ok(()),
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
