//! One WebSocket connection of a chaos subscriber: opened on a node's `/ws`, authenticated with
//! the first frame and subscribed to one topic from a sequence, then read frame by frame.
//!
//! This is only the socket and the frame protocol of `docs/realtime.md`; what to do with the
//! frames (record them, ack, reconnect elsewhere) is the subscriber's business
//! ([`super::workload::Client::ws_subscriber`]). Every wait here is bounded, so a node that
//! was killed, frozen or cut off never holds a subscriber forever.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::Url;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Longest wait for the TCP connection and the WebSocket handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for the `ready` answer to `auth` and the `subscribed` answer to `subscribe`
/// (a subscribe reads the topic's head through its shard's leader, which may be electing).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(12);

/// The `ws://` address of the node whose HTTP API is at `base`.
pub fn url(base: &Url) -> String {
    let host = base.host_str().unwrap_or("127.0.0.1");
    let port = base.port_or_known_default().unwrap_or(80);
    format!("ws://{host}:{port}/ws")
}

/// Why a connection could not be opened and subscribed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// The server answered no: an HTTP status on the upgrade, a close code, an `error` frame.
    Refused(String),
    /// No answer: the connection failed or an answer did not come in time.
    NoAnswer(String),
}

/// What arrived on a subscribed connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// An event of the subscription: its sequence and the body's run-unique id.
    Event { seq: u64, id: u64 },
    /// The answer to an `ack`: the durable cursor after it.
    Acked { cursor: u64 },
    /// An `error` frame that leaves the subscription running (the refusal of an `ack`).
    Refused(String),
    /// A `pong`, or a WebSocket ping or pong: the node is alive.
    Alive,
    /// The subscription or the connection ended: why.
    Ended(String),
}

/// A subscribed connection.
pub struct Connection {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    stream: String,
}

impl Connection {
    /// Connects to `url`, authenticates with `token` and subscribes to `topic:<topic>` from
    /// sequence `from` as `agent` (whose durable subscription the acks move).
    pub async fn open(
        url: &str,
        token: &str,
        topic: &str,
        from: u64,
        agent: &str,
    ) -> Result<Connection, OpenError> {
        let socket = match tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_tungstenite::connect_async(url),
        )
        .await
        {
            Err(_) => return Err(OpenError::NoAnswer("connect timed out".into())),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
                return Err(OpenError::Refused(format!(
                    "upgrade answered {}",
                    response.status()
                )))
            }
            Ok(Err(e)) => return Err(OpenError::NoAnswer(format!("connect failed: {e}"))),
            Ok(Ok((socket, _))) => socket,
        };
        let mut conn = Connection {
            socket,
            stream: format!("topic:{topic}"),
        };
        conn.send(json!({ "type": "auth", "token": token }))
            .await
            .map_err(OpenError::NoAnswer)?;
        conn.answer("ready").await?;
        let subscribe = json!({
            "type": "subscribe",
            "stream": conn.stream,
            "from": from,
            "agent": agent,
        });
        conn.send(subscribe).await.map_err(OpenError::NoAnswer)?;
        // Where the frames start is for the checker to judge, not the answer.
        conn.answer("subscribed").await?;
        Ok(conn)
    }

    /// Waits for a frame of type `want`, skipping pings; an `error` frame or a close is a
    /// refusal.
    async fn answer(&mut self, want: &str) -> Result<Value, OpenError> {
        let wait = async {
            loop {
                match self.socket.next().await {
                    Some(Ok(Message::Text(text))) => {
                        let frame: Value = serde_json::from_str(text.as_str())
                            .map_err(|e| OpenError::Refused(format!("frame is not json: {e}")))?;
                        if frame["type"] == want {
                            return Ok(frame);
                        }
                        if frame["type"] == "error" {
                            return Err(OpenError::Refused(error_text(&frame)));
                        }
                        return Err(OpenError::Refused(format!("expected {want}, got {frame}")));
                    }
                    Some(Ok(Message::Close(frame))) => {
                        return Err(OpenError::Refused(closed(frame.as_ref())));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(OpenError::NoAnswer(format!("read failed: {e}"))),
                    None => return Err(OpenError::NoAnswer("connection ended".into())),
                }
            }
        };
        tokio::time::timeout(ANSWER_TIMEOUT, wait)
            .await
            .unwrap_or_else(|_| Err(OpenError::NoAnswer(format!("no {want} in time"))))
    }

    /// Sends one JSON frame.
    pub async fn send(&mut self, frame: Value) -> Result<(), String> {
        self.socket
            .send(Message::text(frame.to_string()))
            .await
            .map_err(|e| format!("send failed: {e}"))
    }

    /// Sends an `ack` of `seq`.
    pub async fn ack(&mut self, seq: u64) -> Result<(), String> {
        let frame = json!({ "type": "ack", "stream": self.stream, "seq": seq });
        self.send(frame).await
    }

    /// Sends an application `ping` (answered by a `pong` through the connection's queue).
    pub async fn ping(&mut self) -> Result<(), String> {
        self.send(json!({ "type": "ping" })).await
    }

    /// The next thing that arrives. Cancel-safe: nothing is lost when the wait is dropped.
    pub async fn next(&mut self) -> Incoming {
        let text = match self.socket.next().await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => return Incoming::Ended(closed(frame.as_ref())),
            Some(Ok(Message::Binary(_))) => return Incoming::Ended("a binary frame".into()),
            Some(Ok(_)) => return Incoming::Alive,
            Some(Err(e)) => return Incoming::Ended(format!("read failed: {e}")),
            None => return Incoming::Ended("connection ended".into()),
        };
        let frame: Value = match serde_json::from_str(text.as_str()) {
            Ok(v) => v,
            Err(e) => return Incoming::Ended(format!("frame is not json: {e}")),
        };
        match frame["type"].as_str().unwrap_or_default() {
            "event" if frame["stream"] == self.stream.as_str() => Incoming::Event {
                seq: frame["seq"].as_u64().unwrap_or(0),
                id: frame["data"]["body"]["id"].as_u64().unwrap_or(0),
            },
            "acked" => Incoming::Acked {
                cursor: frame["cursor"].as_u64().unwrap_or(0),
            },
            "pong" => Incoming::Alive,
            "error" => {
                let text = error_text(&frame);
                if frame["message"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("subscription ended")
                {
                    Incoming::Ended(text)
                } else {
                    Incoming::Refused(text)
                }
            }
            _ => Incoming::Ended(format!("unexpected frame {frame}")),
        }
    }

    /// Closes the connection politely (bounded: a frozen node gets no say).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.socket.close(None)).await;
    }
}

/// An `error` frame as text: `code: message`.
fn error_text(frame: &Value) -> String {
    format!(
        "{}: {}",
        frame["code"].as_str().unwrap_or("?"),
        frame["message"].as_str().unwrap_or_default()
    )
}

/// A close frame as text.
fn closed(frame: Option<&tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> String {
    match frame {
        Some(f) => format!("closed {}: {}", u16::from(f.code), f.reason),
        None => "closed without a code".into(),
    }
}
