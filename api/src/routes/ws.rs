//! The WebSocket at `/ws`: one connection carries many live subscriptions (topics, inboxes,
//! task events, presence), each resumable from a sequence; acks move durable topic cursors.
//!
//! The frame protocol is documented in `docs/realtime.md`. In short: the first frame must be
//! `{"type":"auth","token":"<api key>"}`; then `subscribe`, `unsubscribe`, `ack` and `ping`
//! frames, answered by `subscribed`, `unsubscribed`, `acked`, `pong` and `error` frames, with
//! `event` frames for every item of every subscription.
//!
//! One reader loop owns the subscriptions; one writer task owns the socket's sending half and
//! drains the connection's bounded queue ([`live::outbox`]). A full queue closes the connection
//! with code 4429: a slow client is dropped, its memory never grows.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::OwnedSemaphorePermit;

use super::live::{self, Close, Outbound, Outbox, Running, StartAt};
use crate::auth::{caller_for_secret, hash_secret, Caller};
use crate::error::ApiError;
use crate::state::AppState;

/// A frame from the client.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientFrame {
    /// Authenticates the connection (first frame only).
    Auth { token: String },
    /// Starts a subscription.
    Subscribe {
        stream: String,
        #[serde(default)]
        from: Option<Value>,
        #[serde(default)]
        agent: Option<String>,
    },
    /// Ends a subscription.
    Unsubscribe { stream: String },
    /// Moves the durable cursor of a topic subscription opened with `agent`.
    Ack { stream: String, seq: u64 },
    /// Asks for a `pong`.
    Ping {
        #[serde(default)]
        data: Option<Value>,
    },
}

/// `GET /ws`: upgrades to a WebSocket (503 when the node holds its most live connections).
pub(super) async fn upgrade(State(state): State<AppState>, ws: WebSocketUpgrade) -> Response {
    let Some(slot) = state.streams.try_connect() else {
        return ApiError::unavailable("this node holds its most live connections; retry later")
            .into_response();
    };
    let max = state.streams.settings.max_frame_bytes;
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| serve(state, socket, slot))
}

#[tracing::instrument(name = "ws", skip_all)]
async fn serve(state: AppState, socket: WebSocket, _slot: OwnedSemaphorePermit) {
    let settings = state.streams.settings.clone();
    let (mut sink, mut stream) = socket.split();
    let (caller, key_hash) = match authenticate(&state, &mut stream, settings.auth_timeout).await {
        Ok(c) => c,
        Err((code, reason)) => {
            tracing::debug!(code, %reason, "websocket refused");
            let frame = CloseFrame {
                code,
                reason: Utf8Bytes::from(reason),
            };
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                sink.send(Message::Close(Some(frame))),
            )
            .await;
            return;
        }
    };
    let (out, inbox) = live::outbox(settings.send_queue);
    let mut closing = inbox.close.clone();
    let writer = tokio::spawn(write(sink, inbox, settings.idle_timeout));
    out.push(Outbound::Frame(json!({
        "type": "ready",
        "workspace": caller.workspace,
        "key_id": caller.key_id,
        "scope": format!("{:?}", caller.scope).to_lowercase(),
    })));
    let mut conn = Connection {
        state: &state,
        caller,
        out: out.clone(),
        subs: HashMap::new(),
    };
    let mut tick = tokio::time::interval(settings.ping_interval);
    tick.reset();
    let mut heard = Instant::now();
    loop {
        tokio::select! {
            msg = stream.next() => {
                heard = Instant::now();
                match msg {
                    Some(Ok(Message::Text(text))) => conn.frame(text.as_str()).await,
                    Some(Ok(Message::Binary(_))) => conn.error(None, "bad_request", "frames must be JSON text"),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "websocket read failed");
                        break;
                    }
                }
            }
            _ = tick.tick() => {
                if !live::key_valid(&state, &key_hash) {
                    out.close(Close::Unauthorized("the api key was revoked or rotated".into()));
                } else if heard.elapsed() > settings.idle_timeout {
                    out.close(Close::Idle);
                } else {
                    out.push(Outbound::Ping);
                }
            }
            _ = closing.changed() => break,
        }
    }
    out.close(Close::ClientGone);
    drop(conn);
    let _ = writer.await;
}

/// Waits for the `auth` frame; the close code and reason when it is missing or wrong.
async fn authenticate(
    state: &AppState,
    stream: &mut SplitStream<WebSocket>,
    timeout: Duration,
) -> Result<(Caller, String), (u16, String)> {
    let first = loop {
        match tokio::time::timeout(timeout, stream.next()).await {
            Err(_) => {
                return Err((
                    4408,
                    format!("no auth frame within {} s", timeout.as_secs()),
                ))
            }
            Ok(None | Some(Err(_))) => return Err((1000, String::new())),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(Message::Text(t)))) => break t,
            Ok(Some(Ok(_))) => return Err((4400, "the first frame must be an auth frame".into())),
        }
    };
    match serde_json::from_str::<ClientFrame>(first.as_str()) {
        Ok(ClientFrame::Auth { token }) => caller_for_secret(state, &token)
            .map(|c| (c, hash_secret(token.trim())))
            .map_err(|e| (4401, e.message)),
        _ => Err((
            4400,
            "the first frame must be {\"type\":\"auth\",\"token\":\"<api key>\"}".into(),
        )),
    }
}

/// Sends queued frames until the connection closes; then the close frame it owes, if any,
/// trying for at most `close_wait` (a client that does not read gets it once it reads again).
async fn write(
    mut sink: SplitSink<WebSocket, Message>,
    mut inbox: live::Inbox,
    close_wait: Duration,
) {
    loop {
        let next = tokio::select! {
            biased;
            _ = inbox.close.changed() => break,
            next = inbox.rx.recv() => next,
        };
        let Some(next) = next else { break };
        let msg = match next {
            Outbound::Event(e) => {
                let mut v = serde_json::to_value(&e).unwrap_or(Value::Null);
                v["type"] = json!("event");
                Message::Text(v.to_string().into())
            }
            Outbound::Frame(v) => Message::Text(v.to_string().into()),
            Outbound::Ended { stream, error } => Message::Text(
                json!({
                    "type": "error",
                    "stream": stream,
                    "code": error.code,
                    "message": format!("subscription ended: {}", error.message),
                })
                .to_string()
                .into(),
            ),
            Outbound::Ping => Message::Ping(Default::default()),
        };
        tokio::select! {
            sent = sink.send(msg) => if sent.is_err() { return },
            _ = inbox.close.changed() => break,
        }
    }
    let reason = inbox.close.borrow().clone();
    match reason.as_ref().and_then(Close::frame) {
        Some((code, reason)) => {
            tracing::debug!(code, %reason, "closing websocket");
            let frame = CloseFrame {
                code,
                reason: Utf8Bytes::from(reason),
            };
            let _ = tokio::time::timeout(close_wait, sink.send(Message::Close(Some(frame)))).await;
        }
        None => {
            let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
        }
    }
}

/// One authenticated connection's subscriptions.
struct Connection<'a> {
    state: &'a AppState,
    caller: Caller,
    out: Outbox,
    subs: HashMap<String, Subscription>,
}

/// A live subscription.
struct Subscription {
    /// The agent of a durable topic subscription.
    agent: Option<String>,
    running: Running,
}

impl Connection<'_> {
    fn error(&self, stream: Option<&str>, code: &str, message: &str) {
        self.out.push(Outbound::Frame(json!({
            "type": "error",
            "stream": stream,
            "code": code,
            "message": message,
        })));
    }

    fn api_error(&self, stream: Option<&str>, e: ApiError) {
        self.error(stream, e.code, &e.message);
    }

    async fn frame(&mut self, text: &str) {
        let frame = match serde_json::from_str::<ClientFrame>(text) {
            Ok(f) => f,
            Err(e) => return self.error(None, "bad_request", &format!("malformed frame: {e}")),
        };
        match frame {
            ClientFrame::Auth { .. } => self.error(
                None,
                "bad_request",
                "the connection is already authenticated",
            ),
            ClientFrame::Ping { data } => {
                self.out
                    .push(Outbound::Frame(json!({ "type": "pong", "data": data })));
            }
            ClientFrame::Subscribe {
                stream,
                from,
                agent,
            } => self.subscribe(stream, from, agent).await,
            ClientFrame::Unsubscribe { stream } => match self.subs.remove(&stream) {
                Some(_) => {
                    self.out.push(Outbound::Frame(
                        json!({ "type": "unsubscribed", "stream": stream }),
                    ));
                }
                None => self.error(Some(&stream), "not_found", "no such subscription"),
            },
            ClientFrame::Ack { stream, seq } => {
                let agent = self.subs.get(&stream).and_then(|s| s.agent.clone());
                let (Some(topic), Some(agent)) = (stream.strip_prefix("topic:"), agent) else {
                    return self.error(
                        Some(&stream),
                        "bad_request",
                        "acks need a topic subscription opened with an agent",
                    );
                };
                match live::ack(self.state, &self.caller, topic, &agent, seq).await {
                    Ok(cursor) => {
                        self.out.push(Outbound::Frame(json!({
                            "type": "acked",
                            "stream": stream,
                            "agent": agent,
                            "cursor": cursor,
                        })));
                    }
                    Err(e) => self.api_error(Some(&stream), e),
                }
            }
        }
    }

    async fn subscribe(&mut self, stream: String, from: Option<Value>, agent: Option<String>) {
        self.subs.retain(|_, s| !s.running.is_finished());
        if self.subs.contains_key(&stream) {
            return self.error(
                Some(&stream),
                "conflict",
                "already subscribed to this stream",
            );
        }
        let max = self.state.streams.settings.max_subscriptions;
        if self.subs.len() >= max {
            return self.error(
                Some(&stream),
                "too_many_subscriptions",
                &format!("a connection holds at most {max} subscriptions"),
            );
        }
        let start = match (&from, &agent) {
            (None, Some(_)) => None,
            _ => match StartAt::from_json(from.as_ref()) {
                Ok(s) => Some(s),
                Err(e) => return self.api_error(Some(&stream), e),
            },
        };
        let plan =
            match live::plan(self.state, &self.caller, &stream, agent.as_deref(), start).await {
                Ok(p) => p,
                Err(e) => return self.api_error(Some(&stream), e),
            };
        self.out.push(Outbound::Frame(json!({
            "type": "subscribed",
            "stream": stream,
            "from": plan.start_token(),
            "agent": plan.agent,
        })));
        let agent = plan.agent.clone();
        debug_assert!(agent.is_none() || plan.topic().is_some());
        let running = live::start(self.state, plan, &self.out);
        self.subs.insert(stream, Subscription { agent, running });
    }
}
