//! Entities of a data shard (context entries, topics and their messages, tasks) and the
//! deterministic apply of their commands.
//!
//! Invariants kept here: a topic's sequence numbers are gap-free from 1; a task has at most one
//! holder at a time and every claim gets a fencing token greater than any before it on the
//! shard; every stored record carries a format version (see [`crate::codec`]).

pub mod artifact;
pub mod audit;
pub mod embedding;

use serde::{Deserialize, Serialize};

pub mod agent_card;
mod agents;

pub use agents::{
    message_id, shard_of_message_id, Agent, AgentEvent, AgentEventKind, AgentStatus, Idempotency,
    InboxItem, Message, NewMessage, Priority, IDEMPOTENCY_WINDOW_MS,
};

use crate::codec::{decode_io, encode};
use crate::error::CoreError;
use crate::kv::{KvRead, Txn};
use crate::types::GroupId;

pub mod key_usage;
pub mod outbox;
pub mod tasks;
pub use tasks::{Task, TaskMode, TaskNote, TaskPage, TaskPatch, TaskStatus};
mod topic;
pub mod topic_team;
pub mod usage;
// live event streams
pub mod stream;
pub mod task_events;
pub use stream::{StreamItem, StreamKey};
pub use task_events::{TaskEvent, TaskEventKind};
pub mod violation;
pub mod webhook;

pub use topic::{Compaction, SubscribeFrom, Subscription, Topic, TopicMessage};

/// The default lease of a claimed task, in seconds.
pub const DEFAULT_LEASE_SECS: u64 = 60;

/// A change to one entity of a shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ShardCommand {
    /// Set a context entry; `value` is JSON text.
    ContextPut {
        ws: String,
        key: String,
        value: String,
    },
    /// Delete a context entry.
    ContextDelete { ws: String, key: String },
    /// Create a topic.
    TopicCreate {
        ws: String,
        name: String,
        retention_secs: u64,
        description: String,
    },
    /// Publish to a topic; `body` is JSON text, `metadata` JSON text of an object.
    TopicPublish {
        ws: String,
        topic: String,
        body: String,
        from: Option<String>,
        metadata: Option<String>,
    },
    /// Claim an open task for `agent`.
    TaskClaim {
        ws: String,
        id: String,
        agent: String,
        lease_secs: u64,
    },
    // embeddings
    /// Store an embedding.
    Embedding(embedding::EmbeddingCommand),
    // artifacts
    /// Create an artifact.
    Artifact(artifact::ArtifactCommand),
    // tasks
    /// Create a task with every field; the id is assigned in apply.
    TaskCreate {
        ws: String,
        queue: String,
        title: String,
        description: String,
        mode: TaskMode,
        priority: i32,
        /// JSON text of an object.
        metadata: String,
        /// Id of the creating API key.
        created_by: String,
    },
    /// Approve a task waiting for approval (`pending_approval` → `open`).
    TaskApprove {
        ws: String,
        id: String,
        /// Id of the approving API key.
        by: String,
        note: Option<String>,
    },
    /// A holder's status change or renewal, an admin's cancel, a note.
    TaskUpdate {
        ws: String,
        id: String,
        patch: TaskPatch,
    },
    /// Return to the queue the listed tasks whose lease has ended (proposed by the leader).
    TaskExpireLeases { ids: Vec<String> },
    // topics
    /// Delete a topic; its messages and subscriptions are purged by later compactions.
    TopicDelete { ws: String, name: String },
    /// Subscribe `agent` to a topic (an existing subscription is kept as it is).
    TopicSubscribe {
        ws: String,
        topic: String,
        agent: String,
        from: SubscribeFrom,
    },
    /// Remove `agent`'s subscription.
    TopicUnsubscribe {
        ws: String,
        topic: String,
        agent: String,
    },
    /// Move `agent`'s cursor forward to `seq` (never back, never past the newest message).
    TopicAck {
        ws: String,
        topic: String,
        agent: String,
        seq: u64,
    },
    /// Retention and purge of deleted topics on this shard, at most `budget` rows per apply;
    /// proposed periodically by the shard leader.
    TopicCompact { budget: u64 },
    // agents
    /// Register an agent, or update the description, capabilities and metadata of one.
    AgentRegister {
        ws: String,
        name: String,
        description: String,
        capabilities: Vec<String>,
        /// JSON object text.
        metadata: String,
    },
    /// A presence transition (no change when the agent is already in that state).
    AgentPresence {
        ws: String,
        name: String,
        online: bool,
        /// The last heartbeat the leader saw, kept on the record when going offline (an online
        /// transition records its own time).
        last_seen_at: Option<u64>,
    },
    /// Remove an agent and its inbox.
    AgentDelete { ws: String, name: String },
    /// Create a message (deduplicated by its idempotency key) and append it to the inboxes of
    /// `deliver_here` (the recipients living on this shard).
    MessageCreate {
        ws: String,
        message: NewMessage,
        idempotency: Option<Idempotency>,
        /// Every recipient, on any shard.
        recipients: Vec<String>,
        deliver_here: Vec<String>,
    },
    /// Append a message created on another shard to inboxes of this one (idempotent by id).
    InboxDeliver {
        ws: String,
        message: Message,
        agents: Vec<String>,
    },
    // teams
    /// Record a refused skill invocation.
    RecordViolation(violation::NewViolation),
    // a2a
    /// Register an agent (as [`ShardCommand::AgentRegister`]) and set or remove its A2A card.
    AgentRegisterCard(agent_card::CardRegister),
    // topic teams
    /// Subscribe a team to a topic (an existing subscription is kept as it is).
    TopicTeamSubscribe {
        ws: String,
        topic: String,
        team: String,
    },
    /// Remove a team's subscription to a topic.
    TopicTeamUnsubscribe {
        ws: String,
        topic: String,
        team: String,
    },
    /// Move `agent`'s cursor forward to `seq`: its direct subscription's, else its team-derived
    /// one through the first of `teams` (its teams, from the meta group) subscribed to the topic.
    TopicAckAs {
        ws: String,
        topic: String,
        agent: String,
        teams: Vec<String>,
        seq: u64,
    },
    // webhooks
    /// A change to a workspace's webhooks or deliveries (on its audit shard).
    Webhook(webhook::WebhookCommand),
    // audit
    /// Append entries to a workspace's audit log, then trim it to `retention`.
    AuditAppend {
        ws: String,
        entries: Vec<audit::NewAuditEntry>,
        retention: audit::AuditRetention,
    },
    // audit outbox
    /// `cmd`, and in the same apply the audit record of the call that made it, kept in the
    /// shard's outbox until the call's audit entry is committed (see [`outbox`]).
    Audited {
        cmd: Box<ShardCommand>,
        record: outbox::OutboxRecord,
    },
    /// Removes outbox records whose audit entries are committed.
    OutboxClear { ids: Vec<String> },
    /// [`ShardCommand::AuditAppend`] of entries that may name their call's outbox record: an
    /// entry whose record was appended within `window_ms` is skipped (see [`outbox`]).
    AuditAppendOnce {
        ws: String,
        entries: Vec<(Option<String>, audit::NewAuditEntry)>,
        retention: audit::AuditRetention,
        window_ms: u64,
    },
}

/// The entity a command or query addresses, which decides its shard.
impl ShardCommand {
    /// `(workspace, kind, name)` of the addressed entity.
    pub fn entity(&self) -> (&str, &'static str, &str) {
        match self {
            ShardCommand::ContextPut { ws, key, .. } | ShardCommand::ContextDelete { ws, key } => {
                (ws, "context", key)
            }
            ShardCommand::TopicCreate { ws, name, .. } => (ws, "topic", name),
            ShardCommand::TopicPublish { ws, topic, .. } => (ws, "topic", topic),
            ShardCommand::TaskClaim { ws, id, .. } => (ws, "task", id),
            ShardCommand::Embedding(c) => {
                let (ws, id) = c.entity();
                (ws, "embedding", id)
            }
            ShardCommand::Artifact(c) => {
                let (ws, id) = c.entity();
                (ws, "artifact", id)
            }
            // tasks
            ShardCommand::TaskCreate { ws, queue, .. } => (ws, "queue", queue),
            ShardCommand::TaskApprove { ws, id, .. } | ShardCommand::TaskUpdate { ws, id, .. } => {
                (ws, "task", id)
            }
            ShardCommand::TaskExpireLeases { .. } => ("", "task-leases", ""),
            // topics
            ShardCommand::TopicDelete { ws, name } => (ws, "topic", name),
            ShardCommand::TopicSubscribe { ws, topic, .. }
            | ShardCommand::TopicUnsubscribe { ws, topic, .. }
            | ShardCommand::TopicAck { ws, topic, .. } => (ws, "topic", topic),
            ShardCommand::TopicCompact { .. } => ("", "topic-maintenance", ""),
            // agents
            ShardCommand::AgentRegister { ws, name, .. }
            | ShardCommand::AgentPresence { ws, name, .. }
            | ShardCommand::AgentDelete { ws, name } => (ws, "agent", name),
            ShardCommand::MessageCreate { ws, .. } => (ws, "messages", ""),
            ShardCommand::InboxDeliver { ws, .. } => (ws, "inbox", ""),
            // teams
            ShardCommand::RecordViolation(v) => (&v.ws, "violations", ""),
            // a2a
            ShardCommand::AgentRegisterCard(c) => (&c.ws, "agent", &c.name),
            // topic teams
            ShardCommand::TopicTeamSubscribe { ws, topic, .. }
            | ShardCommand::TopicTeamUnsubscribe { ws, topic, .. }
            | ShardCommand::TopicAckAs { ws, topic, .. } => (ws, "topic", topic),
            // webhooks live with the audit log, which enqueues their deliveries
            ShardCommand::Webhook(c) => (c.ws(), "audit", ""),
            // audit
            ShardCommand::AuditAppend { ws, .. } => (ws, "audit", ""),
            // audit outbox
            ShardCommand::Audited { cmd, .. } => cmd.entity(),
            ShardCommand::OutboxClear { .. } => ("", "outbox", ""),
            ShardCommand::AuditAppendOnce { ws, .. } => (ws, "audit", ""),
        }
    }
}

/// A context entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextEntry {
    /// Its key.
    pub key: String,
    /// JSON text.
    pub value: String,
    /// 1 for the first put, then one more per put.
    pub version: u64,
    /// Milliseconds since the epoch.
    pub updated_at: u64,
}

/// The result of a shard command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ShardResponse {
    /// A context entry after a put.
    Context(ContextEntry),
    /// A deleted context key.
    Deleted(String),
    /// A topic after creation.
    Topic(Topic),
    /// A published message.
    TopicPublished(TopicMessage),
    /// A task after creation or a change (boxed: it is much larger than the other answers).
    Task(Box<Task>),
    /// The command was refused, identically on every replica.
    Refused(CoreError),
    // embeddings
    /// An embedding after a put (boxed: it is much larger than most answers).
    Embedding(Box<embedding::Stored>),
    // artifacts
    /// A created artifact (boxed: it is much larger than most answers).
    Artifact(Box<artifact::Artifact>),
    // tasks
    /// Ids of the tasks returned to the queue by a lease expiry.
    TasksExpired(Vec<String>),
    // topics
    /// A subscription, and whether this command created it.
    TopicSubscribed { sub: Subscription, created: bool },
    /// A subscription after an acknowledgement.
    TopicAcked(Subscription),
    /// The work a compaction did.
    TopicCompacted(Compaction),
    // agents
    /// An agent after a registration or a presence command.
    Agent { agent: Box<Agent>, created: bool },
    /// A message after its creation, or the original one when the send was a retry.
    Message {
        message: Box<Message>,
        /// Every recipient.
        recipients: Vec<String>,
        /// `(agent, inbox seq)` of the deliveries made on this shard.
        delivered: Vec<(String, u64)>,
        /// Whether this replays an earlier send with the same idempotency key.
        replay: bool,
    },
    /// `(agent, inbox seq)` of the deliveries made (unknown agents are skipped).
    Delivered(Vec<(String, u64)>),
    // teams
    /// A violation as recorded (boxed: it is much larger than most answers).
    Violation(Box<violation::Violation>),
    // topic teams
    /// A team subscription, and whether this command created it.
    TopicTeamSubscribed {
        sub: topic_team::TeamSubscription,
        created: bool,
    },
    // webhooks
    /// The result of a webhook command (boxed: it is much larger than most answers).
    Webhook(Box<webhook::WebhookResponse>),
    // audit
    /// Audit entries appended: numbers `first_seq..first_seq + count`.
    AuditAppended { first_seq: u64, count: u64 },
    // audit outbox
    /// Outbox records removed (the ids named; an unknown one removes nothing).
    OutboxCleared { count: u64 },
}

/// A read against one shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ShardQuery {
    /// One context entry.
    ContextGet { ws: String, key: String },
    /// Context entries with keys after `after`, in key order.
    ContextList {
        ws: String,
        after: Option<String>,
        limit: usize,
    },
    /// One topic.
    TopicGet { ws: String, name: String },
    /// The topic and its messages with `seq > since`, ascending.
    TopicMessages {
        ws: String,
        topic: String,
        since: u64,
        limit: usize,
    },
    /// One task.
    TaskGet { ws: String, id: String },
    // embeddings
    /// Embeddings: a list or a search.
    Embedding(embedding::EmbeddingQuery),
    // artifacts
    /// Artifacts: one, its content, or a list.
    Artifact(artifact::ArtifactQuery),
    // tasks
    /// The workspace's tasks with number after `after`, in creation order, as they stand at
    /// `now_ms` (an ended lease shows as open), keeping those with `status` when given.
    TaskList {
        ws: String,
        status: Option<TaskStatus>,
        after: Option<u64>,
        limit: usize,
        now_ms: u64,
    },
    // topics
    /// Topics with names after `after`, in name order.
    TopicList {
        ws: String,
        after: Option<String>,
        limit: usize,
    },
    /// `agent`'s subscription to a topic.
    TopicSubscriptionGet {
        ws: String,
        topic: String,
        agent: String,
    },
    /// `agent`'s subscriptions on this shard to topics named after `after`, in name order.
    TopicSubscriptionList {
        ws: String,
        agent: String,
        after: Option<String>,
        limit: usize,
    },
    // agents
    /// One agent.
    AgentGet { ws: String, name: String },
    /// Agents with names after `after`, in name order, optionally only those with `status`.
    AgentList {
        ws: String,
        status: Option<AgentStatus>,
        after: Option<String>,
        limit: usize,
    },
    /// `(workspace, name)` of agents stored online, of every workspace, after `after`.
    AgentsOnline {
        after: Option<(String, String)>,
        limit: usize,
    },
    /// One message by id.
    MessageGet { ws: String, id: String },
    /// An agent's inbox items with `seq > since`, ascending.
    InboxRead {
        ws: String,
        agent: String,
        since: u64,
        limit: usize,
    },
    /// Agent events with `seq > since`, ascending.
    AgentEvents {
        ws: String,
        since: u64,
        limit: usize,
    },
    // teams
    /// Up to `limit` policy violations numbered below `before`, newest first, only those of
    /// `agent` when given.
    ViolationList {
        ws: String,
        before: Option<u64>,
        agent: Option<String>,
        limit: usize,
    },
    // a2a
    /// An agent and its A2A card.
    AgentCard { ws: String, name: String },
    // topic teams
    /// `agent`'s reading position on a topic: direct, else through the first of `teams`.
    TopicCursorGet {
        ws: String,
        topic: String,
        agent: String,
        teams: Vec<String>,
    },
    /// `agent`'s subscriptions on this shard, direct and through `teams`, to topics named after
    /// `after`, in name order.
    TopicSubscriptionListAs {
        ws: String,
        agent: String,
        teams: Vec<String>,
        after: Option<String>,
        limit: usize,
    },
    // webhooks
    /// Webhooks and deliveries.
    Webhook(webhook::WebhookQuery),
    // usage
    /// The workspace's usage on this shard, measured from its rows.
    Usage { ws: String },
    /// Up to `limit` of the workspace's call counters for UTC days `from_day..=to_day` (days
    /// since the epoch), after `after`, only `key_id`'s when given (on its audit shard).
    KeyUsage {
        ws: String,
        from_day: u64,
        to_day: u64,
        key_id: Option<String>,
        after: Option<(u64, String)>,
        limit: usize,
    },
    // audit
    /// Up to `limit` audit entries numbered below `before` that match `filter`, newest first.
    AuditList {
        ws: String,
        before: Option<u64>,
        filter: audit::AuditFilter,
        limit: usize,
    },
    // live event streams
    /// The newest sequence of a stream of this shard.
    StreamHead(StreamKey),
}

/// The result of a [`ShardQuery`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ShardReadResult {
    /// One context entry.
    Context(ContextEntry),
    /// A page of context entries.
    ContextPage(Vec<ContextEntry>),
    /// One topic.
    Topic(Topic),
    /// A topic (for its `first_seq` and `last_seq`) and a page of its messages.
    TopicMessages {
        topic: Topic,
        items: Vec<TopicMessage>,
    },
    // embeddings
    /// Embeddings found.
    Embedding(embedding::EmbeddingResult),
    // artifacts
    /// Artifacts found.
    Artifact(artifact::ArtifactResult),
    /// One task (boxed: it is much larger than the other answers).
    Task(Box<Task>),
    // tasks
    /// A page of a workspace's tasks.
    TaskPage(TaskPage),
    // topics
    /// A page of topics.
    TopicPage(Vec<Topic>),
    /// One subscription.
    TopicSubscription(Subscription),
    /// A page of subscriptions, each with its topic's `last_seq`.
    TopicSubscriptions(Vec<(Subscription, u64)>),
    // agents
    /// One agent.
    Agent(Agent),
    /// A page of agents.
    AgentPage(Vec<Agent>),
    /// `(workspace, name)` of online agents.
    OnlineAgents(Vec<(String, String)>),
    /// One message.
    Message(Message),
    /// A page of an inbox, and the inbox's newest seq.
    Inbox {
        items: Vec<InboxItem>,
        last_seq: u64,
    },
    /// A page of agent events.
    AgentEvents(Vec<AgentEvent>),
    // teams
    /// A page of policy violations, newest first.
    Violations(Vec<violation::Violation>),
    // a2a
    /// An agent and its A2A card, if it registered one.
    AgentCard {
        agent: Box<Agent>,
        card: Option<agent_card::StoredCard>,
    },
    // topic teams
    /// A page of an agent's subscriptions, direct and team-derived.
    TopicSubscriptionsAs(Vec<topic_team::SubscriptionView>),
    // webhooks
    /// Webhooks or deliveries found.
    Webhook(webhook::WebhookResult),
    // usage
    /// A workspace's usage on one shard.
    Usage(usage::Usage),
    /// A page of call counters per key and day.
    KeyUsage(key_usage::KeyUsagePage),
    // audit
    /// A page of the audit log, newest first.
    AuditPage(audit::AuditPage),
    // live event streams
    /// The newest sequence of a stream.
    StreamHead(u64),
}

/// Key layout inside a shard's range. Workspace and names never contain `\0` (validated at the
/// edge), so `\0` separates the parts.
mod keys {
    pub fn context(ws: &str, key: &str) -> Vec<u8> {
        [b"c\0", ws.as_bytes(), b"\0", key.as_bytes()].concat()
    }
    pub fn context_prefix(ws: &str) -> Vec<u8> {
        [b"c\0", ws.as_bytes(), b"\0"].concat()
    }
    pub fn task(id: &str) -> Vec<u8> {
        [b"k\0", id.as_bytes()].concat()
    }
    /// Counter of task ids on this shard.
    pub const TASK_COUNTER: &[u8] = b"n\0task";
    /// Counter of fencing tokens on this shard.
    pub const FENCE_COUNTER: &[u8] = b"n\0fence";
}

/// The id of the `n`th task created on `shard`.
pub fn task_id(shard: GroupId, n: u64) -> String {
    format!("task_{shard}_{n}")
}

/// The shard a task id names, if the id is well formed.
pub fn shard_of_task_id(id: &str) -> Option<GroupId> {
    let rest = id.strip_prefix("task_")?;
    let (shard, n) = rest.split_once('_')?;
    n.parse::<u64>().ok()?;
    shard.parse().ok()
}

fn get<T: serde::de::DeserializeOwned, R: KvRead + ?Sized>(
    txn: &Txn<'_, R>,
    key: &[u8],
) -> std::io::Result<Option<T>> {
    txn.get(key)?.map(|b| decode_io(&b)).transpose()
}

fn counter<R: KvRead + ?Sized>(txn: &mut Txn<'_, R>, key: &[u8]) -> std::io::Result<u64> {
    let next = get::<u64, R>(txn, key)?.unwrap_or(0) + 1;
    txn.put(key.to_vec(), encode(&next));
    Ok(next)
}

/// Applies `cmd` at leader time `at_ms` to shard `shard`.
///
/// Returns `Err` only for storage failures, which halt the node; refusals are
/// [`ShardResponse::Refused`] and identical on every replica.
pub fn apply<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    shard: GroupId,
    cmd: &ShardCommand,
    at_ms: u64,
) -> std::io::Result<ShardResponse> {
    Ok(match cmd {
        ShardCommand::ContextPut { ws, key, value } => {
            let k = keys::context(ws, key);
            let version = get::<ContextEntry, R>(txn, &k)?.map_or(1, |e| e.version + 1);
            let entry = ContextEntry {
                key: key.clone(),
                value: value.clone(),
                version,
                updated_at: at_ms,
            };
            txn.put(k, encode(&entry));
            ShardResponse::Context(entry)
        }
        ShardCommand::ContextDelete { ws, key } => {
            let k = keys::context(ws, key);
            if txn.get(&k)?.is_none() {
                ShardResponse::Refused(CoreError::not_found(format!(
                    "context key {key:?} not found"
                )))
            } else {
                txn.delete(k);
                ShardResponse::Deleted(key.clone())
            }
        }
        ShardCommand::TopicCreate {
            ws,
            name,
            retention_secs,
            description,
        } => topic::create(txn, ws, name, *retention_secs, description, at_ms)?
            .map_or_else(ShardResponse::Refused, ShardResponse::Topic),
        ShardCommand::TopicPublish {
            ws,
            topic,
            body,
            from,
            metadata,
        } => topic::publish(txn, ws, topic, body, from, metadata, at_ms)?
            .map_or_else(ShardResponse::Refused, ShardResponse::TopicPublished),
        ShardCommand::TaskClaim {
            ws,
            id,
            agent,
            lease_secs,
        } => tasks::claim(txn, ws, id, agent, *lease_secs, at_ms)?,
        // tasks
        ShardCommand::TaskCreate {
            ws,
            queue,
            title,
            description,
            mode,
            priority,
            metadata,
            created_by,
        } => tasks::create(
            txn,
            shard,
            tasks::NewTask {
                ws,
                queue,
                title,
                description,
                mode: *mode,
                priority: *priority,
                metadata,
                created_by,
            },
            at_ms,
        )?,
        ShardCommand::TaskApprove { ws, id, by, note } => {
            tasks::approve(txn, ws, id, by, note.as_deref(), at_ms)?
        }
        ShardCommand::Embedding(c) => {
            ShardResponse::Embedding(Box::new(embedding::apply(txn, c, at_ms)?))
        }
        ShardCommand::Artifact(c) => match artifact::apply(txn, c, at_ms)? {
            Ok(a) => ShardResponse::Artifact(Box::new(a)),
            Err(e) => ShardResponse::Refused(e),
        },
        ShardCommand::TaskUpdate { ws, id, patch } => tasks::update(txn, ws, id, patch, at_ms)?,
        ShardCommand::TaskExpireLeases { ids } => tasks::expire(txn, ids, at_ms)?,
        // topics
        ShardCommand::TopicDelete { ws, name } => topic::delete(txn, ws, name)?
            .map_or_else(ShardResponse::Refused, |()| {
                ShardResponse::Deleted(name.clone())
            }),
        ShardCommand::TopicSubscribe {
            ws,
            topic,
            agent,
            from,
        } => topic::subscribe(txn, ws, topic, agent, *from, at_ms)?
            .map_or_else(ShardResponse::Refused, |(sub, created)| {
                ShardResponse::TopicSubscribed { sub, created }
            }),
        ShardCommand::TopicUnsubscribe { ws, topic, agent } => {
            topic::unsubscribe(txn, ws, topic, agent)?.map_or_else(ShardResponse::Refused, |()| {
                ShardResponse::Deleted(agent.clone())
            })
        }
        ShardCommand::TopicAck {
            ws,
            topic,
            agent,
            seq,
        } => topic::ack(txn, ws, topic, agent, *seq)?
            .map_or_else(ShardResponse::Refused, ShardResponse::TopicAcked),
        ShardCommand::TopicCompact { budget } => {
            ShardResponse::TopicCompacted(topic::compact(txn, *budget, at_ms)?)
        }
        // agents
        ShardCommand::AgentRegister { .. }
        | ShardCommand::AgentPresence { .. }
        | ShardCommand::AgentDelete { .. }
        | ShardCommand::MessageCreate { .. }
        | ShardCommand::InboxDeliver { .. } => {
            let base = txn.base();
            agents::apply(txn, base, shard, cmd, at_ms)?
        }
        // teams
        ShardCommand::RecordViolation(v) => violation::record(txn, v, at_ms)?,
        // a2a
        ShardCommand::AgentRegisterCard(c) => {
            let base = txn.base();
            agent_card::register(txn, base, shard, c, at_ms)?
        }
        // topic teams
        ShardCommand::TopicTeamSubscribe { ws, topic, team } => {
            topic_team::subscribe(txn, ws, topic, team, at_ms)?
                .map_or_else(ShardResponse::Refused, |(sub, created)| {
                    ShardResponse::TopicTeamSubscribed { sub, created }
                })
        }
        ShardCommand::TopicTeamUnsubscribe { ws, topic, team } => {
            topic_team::unsubscribe(txn, ws, topic, team)?
                .map_or_else(ShardResponse::Refused, |()| {
                    ShardResponse::Deleted(team.clone())
                })
        }
        ShardCommand::TopicAckAs {
            ws,
            topic,
            agent,
            teams,
            seq,
        } => topic_team::ack(txn, ws, topic, agent, teams, *seq)?
            .map_or_else(ShardResponse::Refused, ShardResponse::TopicAcked),
        // webhooks
        ShardCommand::Webhook(c) => webhook::apply(txn, c, at_ms)?,
        // audit
        ShardCommand::AuditAppend {
            ws,
            entries,
            retention,
        } => audit::append(txn, ws, entries, *retention, at_ms)?,
        // audit outbox
        ShardCommand::Audited { cmd, record } => {
            let response = apply(txn, shard, cmd, at_ms)?;
            outbox::keep(txn, record, &response, at_ms);
            response
        }
        ShardCommand::OutboxClear { ids } => outbox::clear(txn, ids)?,
        ShardCommand::AuditAppendOnce {
            ws,
            entries,
            retention,
            window_ms,
        } => outbox::append_once(txn, ws, entries, *retention, *window_ms, at_ms)?,
    })
}

/// The error of a failed storage read in a query.
pub(crate) fn io(e: std::io::Error) -> CoreError {
    CoreError::internal(format!("storage read failed: {e}"))
}

/// Runs a read against a shard's key space.
pub fn query<R: KvRead>(kv: &R, q: &ShardQuery) -> Result<ShardReadResult, CoreError> {
    fn dec<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, CoreError> {
        decode_io(b).map_err(io)
    }
    match q {
        ShardQuery::ContextGet { ws, key } => match kv.get(&keys::context(ws, key)).map_err(io)? {
            Some(b) => Ok(ShardReadResult::Context(dec(&b)?)),
            None => Err(CoreError::not_found(format!(
                "context key {key:?} not found"
            ))),
        },
        ShardQuery::ContextList { ws, after, limit } => {
            let prefix = keys::context_prefix(ws);
            let after_key = after.as_ref().map(|a| keys::context(ws, a));
            let rows = kv.scan(&prefix, after_key.as_deref(), *limit).map_err(io)?;
            let entries = rows.iter().map(|(_, v)| dec(v)).collect::<Result<_, _>>()?;
            Ok(ShardReadResult::ContextPage(entries))
        }
        ShardQuery::TopicGet { ws, name } => {
            topic::read::topic(kv, ws, name).map(ShardReadResult::Topic)
        }
        ShardQuery::TopicMessages {
            ws,
            topic,
            since,
            limit,
        } => topic::read::messages(kv, ws, topic, *since, *limit)
            .map(|(topic, items)| ShardReadResult::TopicMessages { topic, items }),
        ShardQuery::TaskGet { ws, id } => match kv.get(&keys::task(id)).map_err(io)? {
            Some(b) => {
                let stored: tasks::StoredTask = dec(&b)?;
                if &stored.ws == ws {
                    Ok(ShardReadResult::Task(Box::new(stored.task)))
                } else {
                    Err(CoreError::not_found(format!("task {id} not found")))
                }
            }
            None => Err(CoreError::not_found(format!("task {id} not found"))),
        },
        ShardQuery::Embedding(q) => {
            embedding::query(kv, q, &embedding::ExactScan).map(ShardReadResult::Embedding)
        }
        ShardQuery::Artifact(q) => artifact::query(kv, q).map(ShardReadResult::Artifact),
        // tasks
        ShardQuery::TaskList {
            ws,
            status,
            after,
            limit,
            now_ms,
        } => tasks::list(kv, ws, *status, *after, *limit, *now_ms),
        // topics
        ShardQuery::TopicList { ws, after, limit } => {
            topic::read::list(kv, ws, after.as_deref(), *limit).map(ShardReadResult::TopicPage)
        }
        ShardQuery::TopicSubscriptionGet { ws, topic, agent } => {
            topic::read::subscription(kv, ws, topic, agent).map(ShardReadResult::TopicSubscription)
        }
        ShardQuery::TopicSubscriptionList {
            ws,
            agent,
            after,
            limit,
        } => topic::read::subscriptions(kv, ws, agent, after.as_deref(), *limit)
            .map(ShardReadResult::TopicSubscriptions),
        // agents
        ShardQuery::AgentGet { .. }
        | ShardQuery::AgentList { .. }
        | ShardQuery::AgentsOnline { .. }
        | ShardQuery::MessageGet { .. }
        | ShardQuery::InboxRead { .. }
        | ShardQuery::AgentEvents { .. } => agents::query(kv, q),
        // teams
        ShardQuery::ViolationList {
            ws,
            before,
            agent,
            limit,
        } => violation::list(kv, ws, *before, agent.as_deref(), *limit),
        // a2a
        ShardQuery::AgentCard { ws, name } => agent_card::query(kv, ws, name),
        // topic teams
        ShardQuery::TopicCursorGet {
            ws,
            topic,
            agent,
            teams,
        } => topic_team::read::cursor(kv, ws, topic, agent, teams)
            .map(ShardReadResult::TopicSubscription),
        ShardQuery::TopicSubscriptionListAs {
            ws,
            agent,
            teams,
            after,
            limit,
        } => topic_team::read::subscriptions(kv, ws, agent, teams, after.as_deref(), *limit)
            .map(ShardReadResult::TopicSubscriptionsAs),
        // webhooks
        ShardQuery::Webhook(q) => webhook::query(kv, q),
        // usage
        ShardQuery::Usage { ws } => usage::measure(kv, ws).map(ShardReadResult::Usage),
        ShardQuery::KeyUsage {
            ws,
            from_day,
            to_day,
            key_id,
            after,
            limit,
        } => key_usage::list(
            kv,
            ws,
            *from_day,
            *to_day,
            key_id.as_deref(),
            after.as_ref(),
            *limit,
        )
        .map(ShardReadResult::KeyUsage),
        // audit
        ShardQuery::AuditList {
            ws,
            before,
            filter,
            limit,
        } => audit::list(kv, ws, *before, filter, *limit),
        // live event streams
        ShardQuery::StreamHead(key) => stream::head(kv, key).map(ShardReadResult::StreamHead),
    }
}

/// Applies `cmd` at `at` to an in-memory store on shard `shard` and writes its changes back,
/// as a replica would: the apply tests' stand-in for storage.
#[cfg(test)]
pub(crate) fn apply_to_map(
    store: &mut std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
    shard: GroupId,
    cmd: &ShardCommand,
    at: u64,
) -> ShardResponse {
    let mut txn = Txn::new(&*store);
    let out = apply(&mut txn, shard, cmd, at).expect("in-memory apply");
    for (k, v) in txn.into_writes() {
        match v {
            Some(v) => store.insert(k, v),
            None => store.remove(&k),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::error::ErrorCode;

    /// Every module owns its key prefixes (one letter and a NUL): two modules writing under one
    /// letter would read each other's rows. Shared on purpose: `n` (counters, each named) and
    /// `s` (topic subscriptions, which team subscriptions extend).
    #[test]
    fn each_key_prefix_belongs_to_one_module() {
        let sources = [
            ("mod", include_str!("mod.rs")),
            ("agent_card", include_str!("agent_card.rs")),
            ("agents", include_str!("agents.rs")),
            ("artifact", include_str!("artifact.rs")),
            ("audit", include_str!("audit.rs")),
            ("embedding", include_str!("embedding.rs")),
            ("key_usage", include_str!("key_usage.rs")),
            ("outbox", include_str!("outbox.rs")),
            ("stream", include_str!("stream.rs")),
            ("task_events", include_str!("task_events.rs")),
            ("tasks", include_str!("tasks.rs")),
            ("topic", include_str!("topic.rs")),
            ("topic_team", include_str!("topic_team.rs")),
            ("usage", include_str!("usage.rs")),
            ("violation", include_str!("violation.rs")),
            ("webhook", include_str!("webhook.rs")),
        ];
        let mut owners: BTreeMap<char, &str> = BTreeMap::new();
        for (module, source) in sources {
            let code = source.split("#[cfg(test)]").next().unwrap_or_default();
            for (at, _) in code.match_indices("b\"") {
                let mut chars = code[at + 2..].chars();
                let (Some(letter), Some('\\'), Some('0')) =
                    (chars.next(), chars.next(), chars.next())
                else {
                    continue;
                };
                let owner = match (letter, module) {
                    ('n', _) => continue,
                    ('s', "topic_team") => "topic",
                    _ => module,
                };
                let first = owners.entry(letter).or_insert(owner);
                assert_eq!(
                    *first, owner,
                    "prefix `{letter}` used by {first} and {owner}"
                );
            }
        }
        assert!(owners.len() > 20, "prefixes found: {owners:?}");
    }

    /// Applies commands in order to an in-memory store, as a replica would.
    fn run(
        store: &mut BTreeMap<Vec<u8>, Vec<u8>>,
        cmds: &[(ShardCommand, u64)],
    ) -> Vec<ShardResponse> {
        cmds.iter()
            .map(|(cmd, at)| apply_to_map(store, 3, cmd, *at))
            .collect()
    }

    #[test]
    fn claim_has_one_winner_and_tokens_grow_after_lease_expiry() {
        let mut s = BTreeMap::new();
        let create = ShardCommand::TaskCreate {
            ws: "w".into(),
            queue: "default".into(),
            title: "t".into(),
            description: String::new(),
            mode: TaskMode::Auto,
            priority: 0,
            metadata: "{}".into(),
            created_by: String::new(),
        };
        let claim = |agent: &str| ShardCommand::TaskClaim {
            ws: "w".into(),
            id: "task_3_1".into(),
            agent: agent.into(),
            lease_secs: 10,
        };
        let out = run(
            &mut s,
            &[
                (create, 0),
                (claim("a"), 1_000),
                (claim("b"), 2_000),
                (claim("c"), 11_000),
            ],
        );
        let ShardResponse::Task(t) = &out[0] else {
            panic!()
        };
        assert_eq!(t.id, "task_3_1");
        assert_eq!(shard_of_task_id(&t.id), Some(3));
        let ShardResponse::Task(a) = &out[1] else {
            panic!("{:?}", out[1])
        };
        assert_eq!(
            (a.claimed_by.as_deref(), a.fencing_token, a.lease_expires_at),
            (Some("a"), Some(1), Some(11_000))
        );
        assert!(matches!(&out[2], ShardResponse::Refused(e) if e.code == ErrorCode::Conflict));
        let ShardResponse::Task(c) = &out[3] else {
            panic!("{:?}", out[3])
        };
        assert_eq!(
            (c.claimed_by.as_deref(), c.fencing_token),
            (Some("c"), Some(2))
        );
    }

    #[test]
    fn workspaces_are_isolated_and_context_versions_grow() {
        let mut s = BTreeMap::new();
        let put = |ws: &str, v: &str| ShardCommand::ContextPut {
            ws: ws.into(),
            key: "k".into(),
            value: v.into(),
        };
        let out = run(
            &mut s,
            &[(put("a", "1"), 1), (put("a", "2"), 2), (put("b", "9"), 3)],
        );
        assert!(matches!(&out[1], ShardResponse::Context(e) if e.version == 2 && e.value == "2"));
        assert!(matches!(&out[2], ShardResponse::Context(e) if e.version == 1));
        let get = |s: &BTreeMap<Vec<u8>, Vec<u8>>, ws: &str| {
            query(
                s,
                &ShardQuery::ContextGet {
                    ws: ws.into(),
                    key: "k".into(),
                },
            )
        };
        assert!(matches!(get(&s, "a").unwrap(), ShardReadResult::Context(e) if e.value == "2"));
        assert!(matches!(get(&s, "c"), Err(e) if e.code == ErrorCode::NotFound));
        let del = run(
            &mut s,
            &[(
                ShardCommand::ContextDelete {
                    ws: "a".into(),
                    key: "k".into(),
                },
                4,
            )],
        );
        assert!(matches!(&del[0], ShardResponse::Deleted(_)));
        assert!(get(&s, "a").is_err());
        assert!(get(&s, "b").is_ok());
    }
}
