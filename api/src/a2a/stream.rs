//! Task streams (`SendStreamingMessage`, `SubscribeToTask`): server-sent events, each a
//! JSON-RPC response; first the task, then a status update whenever its A2A state changes or
//! its holder adds a note, until the task is finished.
//!
//! The stream wakes on the applied-index watch of the task's shard when this node holds a
//! replica of it (every node does in clusters of up to three), reading the task from that
//! replica; elsewhere it re-reads the task through the shard leader every
//! [`POLL_INTERVAL`]. A replica that lags never sends the client back in time: an update is
//! sent only for a task at least as recent as the last one sent. A stream ends when the task
//! finishes, after [`MAX_STREAM_DURATION`] (the client subscribes again), or when the client
//! goes; a node serves at most [`MAX_STREAMS`] at once and answers 503 past that.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use conclave_actors::{ClientRequest, ClientResponse};
use conclave_raft::command::now_ms;
use conclave_raft::shard::{query, shard_of_task_id, Task};
use conclave_raft::storage::GroupKv;
use conclave_raft::{GroupId, ShardQuery, ShardReadResult};
use serde_json::Value;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

use super::protocol::{self, Origin, Version};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Most task streams one node serves at once; past that a new one is refused with 503.
pub const MAX_STREAMS: usize = 256;
/// Longest a stream stays open; then it ends and the client subscribes again.
pub const MAX_STREAM_DURATION: Duration = Duration::from_secs(600);
/// How often a node without a replica of the task's shard re-reads the task.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Events buffered for a slow client; when full, the stream waits for the client to read.
const EVENT_BUFFER: usize = 16;

/// Stream slots of this node.
static STREAMS: Semaphore = Semaphore::const_new(MAX_STREAMS);

/// What a client has been told about a task: an update is due when this changes.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Seen {
    state: &'static str,
    notes: usize,
    updated_at: u64,
}

impl Seen {
    fn of(task: &Task) -> Self {
        Seen {
            state: protocol::state(task.status, Version::V1),
            notes: task.notes.len(),
            updated_at: task.updated_at,
        }
    }
}

/// Starts a stream of `task`'s changes for request `id`; 503 when the node serves its maximum.
pub(super) fn follow(
    state: AppState,
    ws: String,
    task: Task,
    origin: Origin,
    version: Version,
    id: Value,
) -> ApiResult<Response> {
    let permit = STREAMS.try_acquire().map_err(|_| {
        ApiError::unavailable(format!(
            "this node serves its maximum of {MAX_STREAMS} A2A streams; retry later or on another node"
        ))
    })?;
    let group = shard_of_task_id(&task.id)
        .ok_or_else(|| ApiError::internal(format!("task id {} names no shard", task.id)))?;
    let (tx, rx) = mpsc::channel::<Value>(EVENT_BUFFER);
    tokio::spawn(async move {
        let _permit = permit;
        let deadline = Instant::now() + MAX_STREAM_DURATION;
        let first = protocol::task_result(&task, &origin, version, None);
        if tx.send(protocol::result(&id, first)).await.is_err() || task.status.is_terminal() {
            return;
        }
        let mut seen = Seen::of(&task);
        let mut lease_end = task.lease_expires_at;
        // Subscribed before the first re-read, so no change between the two is missed.
        let mut changes = state.groups().applied_watch(group).map(|w| w.subscribe());
        loop {
            match read(&state, group, &ws, &task.id, changes.is_some()).await {
                Ok(Some(t)) => {
                    let now = Seen::of(&t);
                    lease_end = t.lease_expires_at;
                    if now != seen && now.updated_at >= seen.updated_at {
                        seen = now;
                        let update = protocol::status_update(&t, &origin, version);
                        if tx.send(protocol::result(&id, update)).await.is_err() {
                            return;
                        }
                        if t.status.is_terminal() {
                            return;
                        }
                    }
                }
                // A lagging replica may not hold the task yet; tasks are never removed.
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(task = %task.id, error = %e.message, "a2a stream read failed; retrying")
                }
            }
            // An ended lease returns the task to the queue without a write: wake for it too.
            let lease_wait = lease_end
                .map(|end| Duration::from_millis(end.saturating_sub(now_ms()) + 1))
                .unwrap_or(MAX_STREAM_DURATION);
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tokio::time::sleep(lease_wait) => {}
                lost = wait(&mut changes) => if lost {
                    // The replica left this node: follow through the leader from now on.
                    changes = None;
                }
            }
        }
    });
    let events = futures::stream::unfold(rx, |mut rx| async move {
        let v = rx.recv().await?;
        Some((
            Ok::<Event, Infallible>(Event::default().data(v.to_string())),
            rx,
        ))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Waits for the shard to apply something (or, without a local replica, for the poll
/// interval); true when the local replica is gone.
async fn wait(changes: &mut Option<tokio::sync::watch::Receiver<u64>>) -> bool {
    match changes {
        Some(rx) => rx.changed().await.is_err(),
        None => {
            tokio::time::sleep(POLL_INTERVAL).await;
            false
        }
    }
}

/// The task as it stands now: from the local replica when `local`, else through the leader;
/// `None` when the replica does not hold it yet.
async fn read(
    state: &AppState,
    group: GroupId,
    ws: &str,
    id: &str,
    local: bool,
) -> ApiResult<Option<Task>> {
    let q = ShardQuery::TaskGet {
        ws: ws.to_string(),
        id: id.to_string(),
    };
    let result = if local {
        query(&GroupKv::new(state.groups().db(), group), &q).map_err(ApiError::from)
    } else {
        match state.router.execute(group, ClientRequest::Read(q)).await {
            Ok(ClientResponse::Read(r)) => Ok(r),
            Ok(other) => Err(ApiError::internal(format!("unexpected response {other:?}"))),
            Err(e) => Err(ApiError::from(e)),
        }
    };
    match result {
        Ok(ShardReadResult::Task(t)) => Ok(Some(t.at(now_ms()))),
        Ok(other) => Err(ApiError::internal(format!("unexpected read {other:?}"))),
        Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => Ok(None),
        Err(e) => Err(e),
    }
}
