//! The recorded history of a chaos run: every client operation as invoke and completion, with
//! its outcome `ok`, `fail` (the server refused it: it did not happen) or `unknown` (no answer,
//! or an answer saying the outcome is unknown: it may have happened, at any time after its
//! invocation).
//!
//! Times are microseconds on one monotonic clock shared by every client of the run, so two
//! operations are ordered when one completed before the other was invoked. Each operation also
//! keeps the wall-clock millisecond of its invocation, comparable with the timestamps the
//! servers stamp (all processes run on one machine).
//!
//! A WebSocket subscriber's connection is one operation ([`Call::Stream`]): invoked when it
//! connects, completed when it disconnects, its answer every event frame delivered in between
//! with the time it arrived ([`Answer::Frames`]). Its acks are operations of their own
//! ([`Call::StreamAck`]). Both were added after recordings had been saved; older recordings
//! simply hold none.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::client::ApiError;

/// The run's clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Self {
        Clock {
            start: Instant::now(),
        }
    }

    /// Microseconds since the start.
    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// Milliseconds since the Unix epoch.
    pub fn wall_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// What a client asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Call {
    /// `PUT /v1/context/{key}` of a value unique in the run.
    Put { key: String, value: u64 },
    /// `GET /v1/context/{key}`.
    Get { key: String },
    /// `POST /v1/topics/{topic}/publish` of a body carrying an id unique in the run.
    Publish { topic: String, id: u64 },
    /// A subscriber's read of a topic (see [`Delivery`]).
    Read {
        topic: String,
        subscriber: usize,
        from: Delivery,
        limit: u32,
    },
    /// A WebSocket connection of subscriber `subscriber` to `/ws`, subscribed to
    /// `topic:<topic>` from sequence `from` with the subscriber's agent (so it may ack).
    Stream {
        topic: String,
        subscriber: usize,
        from: u64,
    },
    /// An `ack` frame of subscriber `subscriber` on its current connection: moves its agent's
    /// durable cursor to `seq`.
    StreamAck {
        topic: String,
        subscriber: usize,
        seq: u64,
    },
    /// `POST /v1/tasks`.
    TaskCreate { title: String },
    /// `POST /v1/tasks/{id}/claim`.
    TaskClaim {
        task: String,
        agent: String,
        lease_secs: u64,
    },
    /// `PATCH /v1/tasks/{id}` by the holder: a status change (`done`, `open`) or a renewal.
    TaskUpdate {
        task: String,
        agent: String,
        token: u64,
        status: Option<String>,
        lease_secs: Option<u64>,
    },
}

/// Where a subscriber's read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// After `since` (`GET messages?since=`), no server-side state.
    Since(u64),
    /// From the subscription's server-side cursor (`GET messages?agent=`).
    Cursor,
    /// Acknowledges up to `since`, then reads after it (`GET messages?agent=&since=`).
    AckThenSince(u64),
}

/// What the server answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Answer {
    /// A context entry: its version and the run-unique value (`None` if it is not one of ours).
    Entry { version: u64, value: Option<u64> },
    /// The key does not exist.
    NotFound,
    /// A publish's sequence.
    Published { seq: u64 },
    /// A page of messages: `(seq, id)` (`id` 0 for a body that is not one of ours).
    Page {
        items: Vec<(u64, u64)>,
        last_seq: u64,
    },
    /// A task as answered.
    Task(TaskState),
    /// What a WebSocket connection delivered once subscribed, until it ended.
    Frames {
        /// When the `subscribed` answer arrived, µs on the run's clock.
        subscribed_us: u64,
        /// Every event frame, in the order received.
        frames: Vec<Frame>,
        /// Why it ended: the server's close code, the error, or the client's own choice.
        ended: String,
        /// Whether the client ended it (to move to another node, or at the end of the run)
        /// rather than the node, the network or a refusal.
        #[serde(default)]
        by_client: bool,
    },
    /// An `acked` answer: the durable cursor after the ack.
    Acked { cursor: u64 },
}

/// One event frame a WebSocket subscriber received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// The topic sequence the frame carries.
    pub seq: u64,
    /// The run-unique id of the message's body (0 for a body that is not one of ours).
    pub id: u64,
    /// When it arrived, µs on the run's clock.
    pub at_us: u64,
}

/// The fields of a task the checkers use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskState {
    /// Its id.
    pub id: String,
    /// Its status.
    pub status: String,
    /// The holder.
    pub claimed_by: Option<String>,
    /// The latest claim's token.
    pub fencing_token: Option<u64>,
    /// End of the lease, server ms.
    pub lease_expires_at: Option<u64>,
    /// Time of the change (the entry's leader timestamp), server ms.
    pub updated_at: u64,
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Outcome {
    /// It happened, with this answer.
    Ok(Answer),
    /// It did not happen.
    Fail(String),
    /// It may or may not have happened.
    Unknown(String),
}

impl Outcome {
    /// The outcome of a failed call: refusals (4xx) did not happen; anything else may have.
    pub fn of_error(error: &ApiError) -> Outcome {
        match error.status() {
            Some(400..=499) => Outcome::Fail(error.to_string()),
            _ => Outcome::Unknown(error.to_string()),
        }
    }

    /// `ok`, `fail` or `unknown`.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Ok(_) => "ok",
            Outcome::Fail(_) => "fail",
            Outcome::Unknown(_) => "unknown",
        }
    }
}

/// One client operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// The client (a sequential process) that ran it.
    pub client: usize,
    /// The node index it was sent to.
    pub node: usize,
    /// What was asked.
    pub call: Call,
    /// Invocation, µs on the run's clock.
    pub invoke_us: u64,
    /// Completion, µs on the run's clock (for `unknown`, when the client gave up waiting).
    pub complete_us: u64,
    /// Invocation, wall-clock ms.
    pub invoke_wall_ms: u64,
    /// How it ended.
    pub outcome: Outcome,
}

impl Op {
    /// The answer, when it happened.
    pub fn ok(&self) -> Option<&Answer> {
        match &self.outcome {
            Outcome::Ok(answer) => Some(answer),
            _ => None,
        }
    }

    /// A short name of the operation kind, for counts.
    pub fn kind(&self) -> &'static str {
        match &self.call {
            Call::Put { .. } => "context put",
            Call::Get { .. } => "context get",
            Call::Publish { .. } => "topic publish",
            Call::Read {
                from: Delivery::Since(_),
                ..
            } => "topic read (since)",
            Call::Read {
                from: Delivery::Cursor,
                ..
            } => "subscriber resume (cursor)",
            Call::Read {
                from: Delivery::AckThenSince(_),
                ..
            } => "subscriber ack + read",
            Call::Stream { .. } => "websocket subscription",
            Call::StreamAck { .. } => "websocket ack",
            Call::TaskCreate { .. } => "task create",
            Call::TaskClaim { .. } => "task claim",
            Call::TaskUpdate {
                status: Some(s), ..
            } if s == "done" => "task complete",
            Call::TaskUpdate {
                status: Some(_), ..
            } => "task release",
            Call::TaskUpdate { .. } => "task renew",
        }
    }
}

/// Every operation of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Operations in no particular order.
    pub ops: Vec<Op>,
}

impl History {
    /// Adds `ops`.
    pub fn extend(&mut self, ops: Vec<Op>) {
        self.ops.extend(ops);
    }
}
