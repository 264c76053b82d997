//! Server-sent events: `GET /v1/events` (the workspace's task and agent events) and
//! `GET /v1/tasks/{id}/events` (one task's events), resumable with `Last-Event-ID`.
//!
//! They run on the same engine as the WebSocket ([`super::live`]): the node follows each
//! source shard's leader across failovers with no gap, every event's `id` is its resume token,
//! and a client that falls `send_queue` events behind gets a final `error` event
//! (`slow_consumer`) and the stream ends. A revoked key ends the stream with an `error` event
//! (`unauthorized`) at the next keepalive.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde_json::json;
use tokio::sync::OwnedSemaphorePermit;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::live::{self, Close, LiveEvent, Outbound, Running, StartAt};
use crate::auth::{hash_secret, Caller};
use crate::error::{ApiError, ApiPath, ApiResult};
use crate::state::AppState;

const TAG: &str = "Events";

/// The routes of this module, with their documentation.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(workspace_events))
        .routes(routes!(task_events))
}

/// `Last-Event-ID`, if sent.
fn last_event_id(headers: &HeaderMap) -> ApiResult<Option<String>> {
    headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .map(|s| s.trim().to_string())
                .map_err(|_| ApiError::bad_request("Last-Event-ID must be visible ascii"))
        })
        .transpose()
}

/// Streams the workspace's task events and agent (registration, presence, removal) events as
/// they happen. Each event's `id` is a cursor: send it back as `Last-Event-ID` to resume with
/// nothing lost or repeated; without it the stream starts with the next event.
#[utoipa::path(get, path = "/v1/events", tag = TAG,
    params(("Last-Event-ID" = Option<String>, Header,
        description = "The `id` of the last event received: resume right after it")),
    responses((status = 200, content_type = "text/event-stream",
        description = "A stream of `task` and `presence` events (data: a live event)",
        body = LiveEvent)))]
async fn workspace_events(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let start = match last_event_id(&headers)? {
        Some(id) => StartAt::resume(&id)?,
        None => StartAt::Latest,
    };
    open(&state, &caller, &headers, "events", start).await
}

/// Streams one task's events: its creation, every status change, lease renewal and note
/// (the newest 1 000 are kept). Each event's `id` is its sequence in the task's log: send it
/// back as `Last-Event-ID` to resume after it; without it the stream starts at the oldest
/// kept event.
#[utoipa::path(get, path = "/v1/tasks/{id}/events", tag = TAG,
    params(("id" = String, Path, description = "The task id"),
        ("Last-Event-ID" = Option<String>, Header,
            description = "The `id` of the last event received: resume right after it")),
    responses((status = 200, content_type = "text/event-stream",
        description = "A stream of `task` events (data: a live event)", body = LiveEvent)))]
async fn task_events(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let start = match last_event_id(&headers)? {
        Some(id) => match StartAt::resume(&id)? {
            StartAt::After(after) if after.len() == 1 => StartAt::Seq(after[0].saturating_add(1)),
            _ => {
                return Err(ApiError::bad_request(
                    "Last-Event-ID of a task stream is a sequence",
                ))
            }
        },
        None => StartAt::Earliest,
    };
    open(&state, &caller, &headers, &format!("task:{id}"), start).await
}

/// Plans and starts the stream `name`, answering with its event stream.
async fn open(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    name: &str,
    start: StartAt,
) -> ApiResult<Response> {
    let Some(slot) = state.streams.try_connect() else {
        return Err(ApiError::unavailable(
            "this node holds its most live connections; retry later",
        ));
    };
    let key_hash = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(hash_secret)
        .unwrap_or_default();
    let plan = live::plan(state, caller, name, None, Some(start)).await?;
    let settings = &state.streams.settings;
    let (out, inbox) = live::outbox(settings.send_queue);
    let running = live::start(state, plan, &out);
    let session = Session {
        state: state.clone(),
        key_hash,
        out,
        inbox,
        tick: tokio::time::interval(settings.ping_interval),
        _running: running,
        _slot: slot,
        done: false,
    };
    Ok(Sse::new(session.into_stream())
        .keep_alive(KeepAlive::new().interval(settings.ping_interval))
        .into_response())
}

/// One SSE connection: its queue, its subscription and its slot, all dropped with the body.
struct Session {
    state: AppState,
    key_hash: String,
    out: live::Outbox,
    inbox: live::Inbox,
    tick: tokio::time::Interval,
    _running: Running,
    _slot: OwnedSemaphorePermit,
    done: bool,
}

impl Session {
    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> {
        futures::stream::unfold(self, |mut s| async move {
            if s.done {
                return None;
            }
            let event = s.next().await;
            Some((Ok(event), s))
        })
    }

    /// The next event to send; the last one sets `done`.
    async fn next(&mut self) -> Event {
        loop {
            tokio::select! {
                biased;
                _ = self.inbox.close.changed() => {
                    self.done = true;
                    let reason = self.inbox.close.borrow().clone();
                    let (code, message) = match reason {
                        Some(Close::SlowConsumer) => ("slow_consumer", "the send queue is full: the client reads too slowly".to_string()),
                        Some(Close::Unauthorized(m)) => ("unauthorized", m),
                        _ => ("closed", "the stream was closed".to_string()),
                    };
                    return error_event(code, &message);
                }
                next = self.inbox.rx.recv() => match next {
                    Some(Outbound::Event(e)) => {
                        let data = serde_json::to_string(&e).unwrap_or_default();
                        return Event::default().event(e.kind).id(e.cursor).data(data);
                    }
                    Some(Outbound::Ended { error, .. }) => {
                        self.done = true;
                        return error_event(error.code, &error.message);
                    }
                    Some(Outbound::Frame(_) | Outbound::Ping) => continue,
                    None => {
                        self.done = true;
                        return error_event("closed", "the stream was closed");
                    }
                },
                _ = self.tick.tick() => {
                    if !live::key_valid(&self.state, &self.key_hash) {
                        self.out.close(Close::Unauthorized("the api key was revoked or rotated".into()));
                    }
                }
            }
        }
    }
}

fn error_event(code: &str, message: &str) -> Event {
    Event::default()
        .event("error")
        .data(json!({ "code": code, "message": message }).to_string())
}
