//! The live event engine behind the WebSocket (`/ws`) and the SSE endpoints: which shard
//! streams a client's stream reads, where it starts, who may read it, and the bounded
//! per-connection queue its events go through.
//!
//! A client names a stream: `topic:<name>`, `inbox:<agent>`, `task:<id>` (one shard each),
//! `tasks`, `presence` or `events` (the workspace's task and/or agent events, one source per
//! shard). Each source is followed with [`conclave_actors::watch::follow`], which survives
//! leader changes with no gap and no repeat. Events of a one-source stream carry their
//! sequence as the resume token; events of a multi-source stream carry a `cursor`: every
//! source's last delivered sequence joined by `.`, from which a client resumes exactly.
//!
//! Invariant: an event's resume token never claims more than what was queued before it (the
//! cursor is updated and the event queued under one lock), so resuming from the last token a
//! client received loses nothing. A connection whose queue is full is closed, never grown.

use std::sync::{Arc, Mutex};

use conclave_actors::watch::{self, WATCH_PAGE};
use conclave_actors::{ClientRequest, ClientResponse};
use conclave_raft::meta::topic_acl::TopicPermission;
use conclave_raft::meta::Scope;
use conclave_raft::shard::{
    shard_of_task_id, AgentEvent, AgentEventKind, StreamItem, StreamKey, TaskEvent, TaskEventKind,
    TaskNote, TaskStatus,
};
use conclave_raft::{GroupId, ShardCommand, ShardQuery, ShardReadResult, ShardResponse};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch as tokio_watch};
use tokio::task::JoinHandle;
use utoipa::ToSchema;

use super::messages::InboxMessage;
use super::topics::{check_access, TopicMessageView};
use super::{run, shard, unexpected};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::validate;

/// Items a followed source may hold before its pump hands them to the connection queue.
const FOLLOW_BUFFER: usize = 64;

/// Where a stream starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum StartAt {
    /// Only what comes after now.
    Latest,
    /// The oldest retained item.
    Earliest,
    /// This sequence first (one-source streams).
    Seq(u64),
    /// After these last delivered sequences, one per source (a resume token).
    After(Vec<u64>),
}

impl StartAt {
    /// Parses a resume token: a sequence for a one-source stream (resume after it), a cursor
    /// for a multi-source stream.
    pub(super) fn resume(token: &str) -> ApiResult<Self> {
        let parts: Result<Vec<u64>, _> = token.split('.').map(str::parse::<u64>).collect();
        match parts {
            Ok(p) if !p.is_empty() => Ok(StartAt::After(p)),
            _ => Err(ApiError::bad_request(format!(
                "resume token {token:?} is not a sequence or a cursor of sequences joined by '.'"
            ))),
        }
    }

    /// Parses a `from` given as JSON: `"latest"`, `"earliest"`, a sequence number (that item
    /// first) or a cursor string of a multi-source stream (resume after it).
    pub(super) fn from_json(v: Option<&Value>) -> ApiResult<Self> {
        match v {
            None | Some(Value::Null) => Ok(StartAt::Latest),
            Some(Value::String(s)) if s == "latest" => Ok(StartAt::Latest),
            Some(Value::String(s)) if s == "earliest" => Ok(StartAt::Earliest),
            Some(Value::String(s)) => Self::resume(s),
            Some(Value::Number(n)) if n.as_u64().is_some() => {
                Ok(StartAt::Seq(n.as_u64().unwrap_or_default()))
            }
            Some(_) => Err(ApiError::bad_request(
                "from must be \"latest\", \"earliest\", a sequence number or a cursor string",
            )),
        }
    }
}

/// One shard stream a live stream reads.
#[derive(Debug, Clone)]
struct Source {
    shard: GroupId,
    key: StreamKey,
}

/// A live stream a client asked for: checked, resolved to its sources and their start.
pub(super) struct Plan {
    /// The stream's name as the client gave it (`topic:orders`, `tasks`, …).
    pub name: String,
    /// The agent whose durable topic subscription this stream reads (acks move its cursor).
    pub agent: Option<String>,
    sources: Vec<Source>,
    /// First sequence wanted, per source.
    from: Vec<u64>,
}

impl Plan {
    /// The topic of a `topic:` stream.
    pub fn topic(&self) -> Option<&str> {
        self.name.strip_prefix("topic:")
    }

    /// Where it starts, as the client may pass it back to resume: the first sequence of a
    /// one-source stream, else the cursor of the positions before the first items.
    pub fn start_token(&self) -> Value {
        match self.from.as_slice() {
            [one] => json!(one),
            many => json!(many
                .iter()
                .map(|f| (f - 1).to_string())
                .collect::<Vec<_>>()
                .join(".")),
        }
    }
}

/// The sources of the stream `name` for `caller`, after its access checks.
fn sources(
    state: &AppState,
    caller: &Caller,
    name: &str,
    agent: Option<&str>,
) -> ApiResult<Vec<Source>> {
    caller.require(Scope::Read)?;
    let ws = caller.workspace.clone();
    let all_shards = |key: &dyn Fn() -> StreamKey| -> ApiResult<Vec<Source>> {
        let count = state.groups().meta().read().expect("meta lock").shard_count;
        if count == 0 {
            return Err(ApiError::unavailable("the cluster is not bootstrapped yet"));
        }
        Ok((1..=count)
            .map(|shard| Source { shard, key: key() })
            .collect())
    };
    let (kind, rest) = name.split_once(':').unwrap_or((name, ""));
    if agent.is_some() && kind != "topic" {
        return Err(ApiError::bad_request(
            "agent is only accepted on topic streams (it names the durable subscription)",
        ));
    }
    match (kind, rest) {
        ("topic", topic) => {
            validate::name("topic", topic)?;
            check_access(state, caller, topic, agent, TopicPermission::Read)?;
            Ok(vec![Source {
                shard: shard(state, &ws, "topic", topic)?,
                key: StreamKey::Topic {
                    ws: ws.clone(),
                    topic: topic.to_string(),
                },
            }])
        }
        ("inbox", agent) => {
            let agent = validate::agent_ref("inbox agent", agent)?;
            Ok(vec![Source {
                shard: shard(state, &ws, "agent", agent)?,
                key: StreamKey::Inbox {
                    ws: ws.clone(),
                    agent: agent.to_string(),
                },
            }])
        }
        ("task", id) => {
            let shard = shard_of_task_id(id)
                .filter(|s| {
                    let count = state.groups().meta().read().expect("meta lock").shard_count;
                    (1..=count).contains(s)
                })
                .ok_or_else(|| ApiError::not_found(format!("task {id} not found")))?;
            Ok(vec![Source {
                shard,
                key: StreamKey::Task {
                    ws: ws.clone(),
                    id: id.to_string(),
                },
            }])
        }
        ("tasks", "") => all_shards(&|| StreamKey::Tasks { ws: ws.clone() }),
        ("presence", "") => all_shards(&|| StreamKey::Agents { ws: ws.clone() }),
        ("events", "") => {
            let mut all = all_shards(&|| StreamKey::Tasks { ws: ws.clone() })?;
            all.extend(all_shards(&|| StreamKey::Agents { ws: ws.clone() })?);
            Ok(all)
        }
        _ => Err(ApiError::bad_request(format!(
            "unknown stream {name:?}: use topic:<name>, inbox:<agent>, task:<id>, tasks, presence or events"
        ))),
    }
}

/// The newest sequence of a source, read on its shard's leader (404 when its topic, agent or
/// task does not exist in the caller's workspace).
async fn head(state: &AppState, source: &Source) -> ApiResult<u64> {
    let q = ShardQuery::StreamHead(source.key.clone());
    match run(state, source.shard, ClientRequest::Read(q)).await? {
        ClientResponse::Read(ShardReadResult::StreamHead(h)) => Ok(h),
        other => Err(unexpected(other)),
    }
}

/// Checks and resolves the stream `name` for `caller`, starting at `start` (or, for a topic
/// stream of a subscribed `agent` with no explicit start, after its durable cursor).
pub(super) async fn plan(
    state: &AppState,
    caller: &Caller,
    name: &str,
    agent: Option<&str>,
    start: Option<StartAt>,
) -> ApiResult<Plan> {
    let agent = agent
        .map(|a| validate::agent_ref("agent", a).map(str::to_string))
        .transpose()?;
    let sources = sources(state, caller, name, agent.as_deref())?;
    let single = sources.len() == 1;
    let from = match (start, &agent) {
        (None, Some(agent)) => {
            let source = &sources[0];
            let StreamKey::Topic { ws, topic } = &source.key else {
                return Err(ApiError::internal("agent on a non-topic stream"));
            };
            let q = ShardQuery::TopicSubscriptionGet {
                ws: ws.clone(),
                topic: topic.clone(),
                agent: agent.clone(),
            };
            match run(state, source.shard, ClientRequest::Read(q)).await? {
                ClientResponse::Read(ShardReadResult::TopicSubscription(s)) => vec![s.cursor + 1],
                other => return Err(unexpected(other)),
            }
        }
        (None | Some(StartAt::Latest), _) => {
            let heads = futures::future::join_all(sources.iter().map(|s| head(state, s))).await;
            heads
                .into_iter()
                .map(|h| h.map(|h| h + 1))
                .collect::<ApiResult<_>>()?
        }
        (Some(StartAt::Earliest), _) => vec![1; sources.len()],
        (Some(StartAt::Seq(n)), _) if single => vec![n.max(1)],
        (Some(StartAt::Seq(_)), _) => {
            return Err(ApiError::bad_request(format!(
                "stream {name} spans {} shards: resume it from an event's cursor, not a sequence",
                sources.len()
            )))
        }
        (Some(StartAt::After(after)), _) => {
            if after.len() != sources.len() {
                return Err(ApiError::bad_request(format!(
                    "a resume token of stream {name} has {} parts, this one has {}",
                    sources.len(),
                    after.len()
                )));
            }
            after.iter().map(|a| a.saturating_add(1)).collect()
        }
    };
    if single {
        // The stream's entity must exist in the caller's workspace (404 otherwise).
        head(state, &sources[0]).await?;
    }
    Ok(Plan {
        name: name.to_string(),
        agent,
        sources,
        from,
    })
}

/// Whether the key with SHA-256 `hash` is still valid on this node (not revoked or rotated).
pub(super) fn key_valid(state: &AppState, hash: &str) -> bool {
    let meta = state.groups().meta().read().expect("meta lock");
    meta.key_by_hash(hash).is_some()
}

/// Moves `agent`'s durable cursor on `topic` forward to `seq`; the cursor after the ack.
pub(super) async fn ack(
    state: &AppState,
    caller: &Caller,
    topic: &str,
    agent: &str,
    seq: u64,
) -> ApiResult<u64> {
    let group = shard(state, &caller.workspace, "topic", topic)?;
    let cmd = ShardCommand::TopicAck {
        ws: caller.workspace.clone(),
        topic: topic.to_string(),
        agent: agent.to_string(),
        seq,
    };
    match run(state, group, ClientRequest::Write(cmd)).await? {
        ClientResponse::Write(ShardResponse::TopicAcked(s)) => Ok(s.cursor),
        other => Err(unexpected(other)),
    }
}

/// One event bound for a client.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(super) struct LiveEvent {
    /// The stream it belongs to, as subscribed (`topic:orders`, `tasks`, …).
    pub stream: String,
    /// `message`, `inbox`, `task` or `presence`.
    #[schema(value_type = String)]
    pub kind: &'static str,
    /// Its sequence in its shard stream.
    pub seq: u64,
    /// The shard of a multi-source stream's event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<GroupId>,
    /// Resume token: resuming after it loses nothing (the sequence of a one-source stream, or
    /// every source's last delivered sequence joined by `.`).
    pub cursor: String,
    /// The item: a topic message, an inbox message, a task event or an agent event.
    pub data: Value,
}

/// Why a connection is being closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Close {
    /// Its send queue filled up.
    SlowConsumer,
    /// Its key is no longer valid.
    Unauthorized(String),
    /// Nothing arrived from the client for too long.
    Idle,
    /// The client went away.
    ClientGone,
}

impl Close {
    /// WebSocket close code and reason; `None` when no close frame is owed.
    pub fn frame(&self) -> Option<(u16, String)> {
        match self {
            Close::SlowConsumer => {
                Some((4429, "slow consumer: the send queue is full".to_string()))
            }
            Close::Unauthorized(m) => Some((4401, m.clone())),
            Close::Idle => Some((4408, "idle timeout: nothing received".to_string())),
            Close::ClientGone => None,
        }
    }
}

/// What goes out on a connection, in order.
#[derive(Debug)]
pub(super) enum Outbound {
    /// An event.
    Event(LiveEvent),
    /// A protocol frame (WebSocket) or a named event (SSE), as JSON.
    Frame(Value),
    /// A stream ended with an error (its entity was deleted, say); its subscription is gone.
    Ended { stream: String, error: ApiError },
    /// A keepalive ping.
    Ping,
}

/// The sending side of a connection's bounded queue, plus its close signal.
#[derive(Clone)]
pub(super) struct Outbox {
    tx: mpsc::Sender<Outbound>,
    close: Arc<tokio_watch::Sender<Option<Close>>>,
}

/// The receiving side of a connection: its queue and its close signal.
pub(super) struct Inbox {
    /// Queued frames.
    pub rx: mpsc::Receiver<Outbound>,
    /// Becomes `Some` once the connection is to close.
    pub close: tokio_watch::Receiver<Option<Close>>,
}

/// A connection's queue of at most `capacity` frames.
pub(super) fn outbox(capacity: usize) -> (Outbox, Inbox) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let (close_tx, close_rx) = tokio_watch::channel(None);
    (
        Outbox {
            tx,
            close: Arc::new(close_tx),
        },
        Inbox {
            rx,
            close: close_rx,
        },
    )
}

impl Outbox {
    /// Queues `o`; a full queue closes the connection as a slow consumer. False when the
    /// connection is closing or gone.
    pub fn push(&self, o: Outbound) -> bool {
        if self.closing() {
            return false;
        }
        match self.tx.try_send(o) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close(Close::SlowConsumer);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Asks for the connection to close (the first reason wins).
    pub fn close(&self, reason: Close) {
        self.close.send_if_modified(|c| {
            if c.is_none() {
                *c = Some(reason);
                true
            } else {
                false
            }
        });
    }

    /// Whether a close was asked for.
    pub fn closing(&self) -> bool {
        self.close.borrow().is_some()
    }
}

/// A running stream: one pump task per source. Dropping it stops them.
pub(super) struct Running {
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Whether every source has ended (its entity was deleted, say).
    pub fn is_finished(&self) -> bool {
        self.tasks.iter().all(JoinHandle::is_finished)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts following `plan`'s sources into `out`.
pub(super) fn start(state: &AppState, plan: Plan, out: &Outbox) -> Running {
    let positions: Arc<Mutex<Vec<u64>>> =
        Arc::new(Mutex::new(plan.from.iter().map(|f| f - 1).collect()));
    let multi = plan.sources.len() > 1;
    let name: Arc<str> = plan.name.into();
    let tasks = plan
        .sources
        .into_iter()
        .zip(plan.from)
        .enumerate()
        .map(|(index, (source, from))| {
            let items = watch::follow(
                state.router.clone(),
                source.shard,
                source.key,
                from,
                FOLLOW_BUFFER.min(WATCH_PAGE),
            );
            let pump = Pump {
                stream: name.clone(),
                index,
                shard: multi.then_some(source.shard),
                positions: positions.clone(),
                out: out.clone(),
            };
            tokio::spawn(pump.run(items))
        })
        .collect();
    Running { tasks }
}

/// Moves one source's items into the connection queue.
struct Pump {
    stream: Arc<str>,
    index: usize,
    shard: Option<GroupId>,
    positions: Arc<Mutex<Vec<u64>>>,
    out: Outbox,
}

impl Pump {
    async fn run(self, mut items: watch::StreamRx) {
        while let Some(item) = items.recv().await {
            let item = match item {
                Ok(item) => item,
                Err(e) => {
                    self.out.push(Outbound::Ended {
                        stream: self.stream.to_string(),
                        error: e.into(),
                    });
                    return;
                }
            };
            let seq = item.seq();
            let (kind, data) = render(item);
            // Position, token and queueing under one lock: no token runs ahead of the queue.
            let mut positions = self.positions.lock().expect("positions lock");
            positions[self.index] = seq;
            let cursor = if self.shard.is_some() {
                positions
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(".")
            } else {
                seq.to_string()
            };
            let event = LiveEvent {
                stream: self.stream.to_string(),
                kind,
                seq,
                shard: self.shard,
                cursor,
                data,
            };
            if !self.out.push(Outbound::Event(event)) {
                return;
            }
        }
    }
}

/// A task change as live streams show it.
#[derive(Serialize, ToSchema)]
pub(super) struct TaskEventView {
    /// Position in the log it was read from: the task's own (`task:<id>`), else the
    /// workspace's task log on the task's shard.
    seq: u64,
    /// When the change was applied, ms since the Unix epoch.
    at: u64,
    /// The task.
    task_id: String,
    /// Its queue.
    queue: String,
    /// What changed.
    kind: TaskEventKind,
    /// The status after the change.
    status: TaskStatus,
    /// The status before, when it changed.
    previous_status: Option<TaskStatus>,
    /// The holder after the change.
    claimed_by: Option<String>,
    /// The fencing token after the change.
    fencing_token: Option<u64>,
    /// When the lease ends, ms since the Unix epoch.
    lease_expires_at: Option<u64>,
    /// The note added (kind `note`): `{at, by, text}`.
    #[schema(value_type = Option<Object>)]
    note: Option<Value>,
}

fn note_value(n: TaskNote) -> Value {
    json!({ "at": n.at, "by": n.by, "text": n.text })
}

impl From<TaskEvent> for TaskEventView {
    fn from(e: TaskEvent) -> Self {
        Self {
            seq: e.seq,
            at: e.at,
            task_id: e.task_id,
            queue: e.queue,
            kind: e.kind,
            status: e.status,
            previous_status: e.previous_status,
            claimed_by: e.claimed_by,
            fencing_token: e.fencing_token,
            lease_expires_at: e.lease_expires_at,
            note: e.note.map(note_value),
        }
    }
}

/// An agent's registration, presence change or removal.
#[derive(Serialize, ToSchema)]
pub(super) struct AgentEventView {
    /// Ascends within the agent's shard (with gaps: the shard numbers every workspace's events).
    seq: u64,
    /// ms since the Unix epoch.
    at: u64,
    /// The agent.
    agent: String,
    /// `registered`, `online`, `offline` or `deleted`.
    #[schema(value_type = String)]
    kind: AgentEventKind,
}

impl From<AgentEvent> for AgentEventView {
    fn from(e: AgentEvent) -> Self {
        Self {
            seq: e.seq,
            at: e.at,
            agent: e.agent,
            kind: e.kind,
        }
    }
}

/// The event kind and JSON of a stream item.
fn render(item: StreamItem) -> (&'static str, Value) {
    let value = |r: Result<Value, serde_json::Error>| r.unwrap_or(Value::Null);
    match item {
        StreamItem::Topic(m) => (
            "message",
            value(serde_json::to_value(TopicMessageView::from(m))),
        ),
        StreamItem::Inbox(i) => ("inbox", value(serde_json::to_value(InboxMessage::from(i)))),
        StreamItem::Task(e) => ("task", value(serde_json::to_value(TaskEventView::from(e)))),
        StreamItem::Agent(e) => (
            "presence",
            value(serde_json::to_value(AgentEventView::from(e))),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_parse_and_bad_ones_are_refused() {
        assert_eq!(StartAt::from_json(None).unwrap(), StartAt::Latest);
        assert_eq!(
            StartAt::from_json(Some(&json!("earliest"))).unwrap(),
            StartAt::Earliest
        );
        assert_eq!(
            StartAt::from_json(Some(&json!(7))).unwrap(),
            StartAt::Seq(7)
        );
        assert_eq!(
            StartAt::from_json(Some(&json!("3.0.12"))).unwrap(),
            StartAt::After(vec![3, 0, 12])
        );
        assert_eq!(StartAt::resume("41").unwrap(), StartAt::After(vec![41]));
        for bad in [json!(-1), json!(1.5), json!("1..2"), json!("x"), json!([1])] {
            assert!(StartAt::from_json(Some(&bad)).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn a_full_queue_closes_the_connection_as_a_slow_consumer() {
        let (out, mut inbox) = outbox(2);
        assert!(out.push(Outbound::Ping));
        assert!(out.push(Outbound::Ping));
        assert!(!out.push(Outbound::Ping), "the third frame must not fit");
        assert_eq!(*inbox.close.borrow_and_update(), Some(Close::SlowConsumer));
        assert!(!out.push(Outbound::Ping), "nothing is queued once closing");
        out.close(Close::Idle);
        assert_eq!(
            *inbox.close.borrow(),
            Some(Close::SlowConsumer),
            "the first reason wins"
        );
        assert_eq!(Close::SlowConsumer.frame().map(|f| f.0), Some(4429));
    }
}
