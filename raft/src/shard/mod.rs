//! Entities of a data shard (context entries, topics and their messages, tasks) and the
//! deterministic apply of their commands.
//!
//! Invariants kept here: a topic's sequence numbers are gap-free from 1; a task has at most one
//! holder at a time and every claim gets a fencing token greater than any before it on the
//! shard; every stored record carries a format version (see [`crate::codec`]).

use serde::{Deserialize, Serialize};

mod agents;

pub use agents::{
    message_id, shard_of_message_id, Agent, AgentEvent, AgentEventKind, AgentStatus, Idempotency,
    InboxItem, Message, NewMessage, Priority, IDEMPOTENCY_WINDOW_MS,
};

use crate::codec::{decode_io, encode};
use crate::error::CoreError;
use crate::kv::{KvRead, Txn};
use crate::types::GroupId;

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
        retention_hours: u64,
    },
    /// Publish to a topic; `body` is JSON text.
    TopicPublish {
        ws: String,
        topic: String,
        body: String,
    },
    /// Create a task in a queue; the id is assigned in apply.
    TaskCreate {
        ws: String,
        queue: String,
        title: String,
        description: String,
        mode: TaskMode,
    },
    /// Claim an open task for `agent`.
    TaskClaim {
        ws: String,
        id: String,
        agent: String,
        lease_secs: u64,
    },
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
            ShardCommand::TaskCreate { ws, queue, .. } => (ws, "queue", queue),
            ShardCommand::TaskClaim { ws, id, .. } => (ws, "task", id),
            // agents
            ShardCommand::AgentRegister { ws, name, .. }
            | ShardCommand::AgentPresence { ws, name, .. }
            | ShardCommand::AgentDelete { ws, name } => (ws, "agent", name),
            ShardCommand::MessageCreate { ws, .. } => (ws, "messages", ""),
            ShardCommand::InboxDeliver { ws, .. } => (ws, "inbox", ""),
        }
    }
}

/// How a task may be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskMode {
    /// Claimable as soon as created.
    Auto,
    /// Claimable only after an approval.
    Approval,
    /// Agents may claim but not create.
    ClaimOnly,
}

/// A task's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Waiting for approval (mode `approval`).
    PendingApproval,
    /// Claimable.
    Open,
    /// Held by an agent under a lease.
    Claimed,
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

/// A topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    /// Its name.
    pub name: String,
    /// How long messages are kept.
    pub retention_hours: u64,
    /// Milliseconds since the epoch.
    pub created_at: u64,
    /// The sequence of the newest message (0 before any).
    pub last_seq: u64,
}

/// A published topic message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMessage {
    /// Gap-free from 1 within its topic.
    pub seq: u64,
    /// JSON text.
    pub body: String,
    /// Milliseconds since the epoch.
    pub published_at: u64,
}

/// A task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// `task_<shard>_<n>`: the shard is part of the id so lookups route without an index.
    pub id: String,
    /// Queue it belongs to.
    pub queue: String,
    /// Short title.
    pub title: String,
    /// Longer text.
    pub description: String,
    /// How it may be taken.
    pub mode: TaskMode,
    /// Its state.
    pub status: TaskStatus,
    /// Milliseconds since the epoch.
    pub created_at: u64,
    /// The agent holding it.
    pub claimed_by: Option<String>,
    /// When the current lease ends, ms since the epoch.
    pub lease_expires_at: Option<u64>,
    /// The token of the current claim; grows with every claim on the shard.
    pub fencing_token: Option<u64>,
}

/// The result of a shard command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardResponse {
    /// A context entry after a put.
    Context(ContextEntry),
    /// A deleted context key.
    Deleted(String),
    /// A topic after creation.
    Topic(Topic),
    /// A published message's sequence and time.
    Published {
        topic: String,
        seq: u64,
        published_at: u64,
    },
    /// A task after creation or a claim.
    Task(Task),
    /// The command was refused, identically on every replica.
    Refused(CoreError),
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
    /// Messages with `seq > since`, ascending.
    TopicMessages {
        ws: String,
        topic: String,
        since: u64,
        limit: usize,
    },
    /// One task.
    TaskGet { ws: String, id: String },
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
}

/// The result of a [`ShardQuery`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardReadResult {
    /// One context entry.
    Context(ContextEntry),
    /// A page of context entries.
    ContextPage(Vec<ContextEntry>),
    /// One topic.
    Topic(Topic),
    /// A page of topic messages.
    Messages(Vec<TopicMessage>),
    /// One task.
    Task(Task),
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
    pub fn topic(ws: &str, name: &str) -> Vec<u8> {
        [b"t\0", ws.as_bytes(), b"\0", name.as_bytes()].concat()
    }
    pub fn message_prefix(ws: &str, topic: &str) -> Vec<u8> {
        [b"m\0", ws.as_bytes(), b"\0", topic.as_bytes(), b"\0"].concat()
    }
    pub fn message(ws: &str, topic: &str, seq: u64) -> Vec<u8> {
        [message_prefix(ws, topic), seq.to_be_bytes().to_vec()].concat()
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
            retention_hours,
        } => {
            let k = keys::topic(ws, name);
            if txn.get(&k)?.is_some() {
                ShardResponse::Refused(CoreError::conflict(format!(
                    "topic {name:?} already exists"
                )))
            } else {
                let topic = Topic {
                    name: name.clone(),
                    retention_hours: *retention_hours,
                    created_at: at_ms,
                    last_seq: 0,
                };
                txn.put(k, encode(&topic));
                ShardResponse::Topic(topic)
            }
        }
        ShardCommand::TopicPublish { ws, topic, body } => {
            let k = keys::topic(ws, topic);
            match get::<Topic, R>(txn, &k)? {
                None => ShardResponse::Refused(CoreError::not_found(format!(
                    "topic {topic:?} not found"
                ))),
                Some(mut t) => {
                    t.last_seq += 1;
                    let msg = TopicMessage {
                        seq: t.last_seq,
                        body: body.clone(),
                        published_at: at_ms,
                    };
                    txn.put(keys::message(ws, topic, msg.seq), encode(&msg));
                    txn.put(k, encode(&t));
                    ShardResponse::Published {
                        topic: topic.clone(),
                        seq: msg.seq,
                        published_at: at_ms,
                    }
                }
            }
        }
        ShardCommand::TaskCreate {
            ws,
            queue,
            title,
            description,
            mode,
        } => {
            let n = counter(txn, keys::TASK_COUNTER)?;
            let task = Task {
                id: task_id(shard, n),
                queue: queue.clone(),
                title: title.clone(),
                description: description.clone(),
                mode: *mode,
                status: if *mode == TaskMode::Approval {
                    TaskStatus::PendingApproval
                } else {
                    TaskStatus::Open
                },
                created_at: at_ms,
                claimed_by: None,
                lease_expires_at: None,
                fencing_token: None,
            };
            txn.put(
                keys::task(&task.id),
                encode(&StoredTask {
                    ws: ws.clone(),
                    task: task.clone(),
                }),
            );
            ShardResponse::Task(task)
        }
        ShardCommand::TaskClaim {
            ws,
            id,
            agent,
            lease_secs,
        } => {
            let k = keys::task(id);
            match get::<StoredTask, R>(txn, &k)? {
                Some(stored) if &stored.ws == ws => {
                    let mut task = stored.task;
                    let lease_over = task.lease_expires_at.is_some_and(|end| end <= at_ms);
                    let claimable = match task.status {
                        TaskStatus::Open => true,
                        TaskStatus::Claimed => lease_over,
                        TaskStatus::PendingApproval => false,
                    };
                    if !claimable {
                        let why = match task.status {
                            TaskStatus::PendingApproval => "task awaits approval".to_string(),
                            _ => format!(
                                "task {id} is already claimed by {}",
                                task.claimed_by.as_deref().unwrap_or("another agent")
                            ),
                        };
                        ShardResponse::Refused(CoreError::conflict(why))
                    } else {
                        let token = counter(txn, keys::FENCE_COUNTER)?;
                        task.status = TaskStatus::Claimed;
                        task.claimed_by = Some(agent.clone());
                        task.lease_expires_at = Some(at_ms + lease_secs * 1000);
                        task.fencing_token = Some(token);
                        txn.put(
                            k,
                            encode(&StoredTask {
                                ws: ws.clone(),
                                task: task.clone(),
                            }),
                        );
                        ShardResponse::Task(task)
                    }
                }
                _ => ShardResponse::Refused(CoreError::not_found(format!("task {id} not found"))),
            }
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
    })
}

/// A task with the workspace that owns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredTask {
    ws: String,
    task: Task,
}

/// Runs a read against a shard's key space.
pub fn query<R: KvRead + ?Sized>(kv: &R, q: &ShardQuery) -> Result<ShardReadResult, CoreError> {
    fn io(e: std::io::Error) -> CoreError {
        CoreError::internal(format!("storage read failed: {e}"))
    }
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
        ShardQuery::TopicGet { ws, name } => match kv.get(&keys::topic(ws, name)).map_err(io)? {
            Some(b) => Ok(ShardReadResult::Topic(dec(&b)?)),
            None => Err(CoreError::not_found(format!("topic {name:?} not found"))),
        },
        ShardQuery::TopicMessages {
            ws,
            topic,
            since,
            limit,
        } => {
            if kv.get(&keys::topic(ws, topic)).map_err(io)?.is_none() {
                return Err(CoreError::not_found(format!("topic {topic:?} not found")));
            }
            let prefix = keys::message_prefix(ws, topic);
            let after = keys::message(ws, topic, *since);
            let rows = kv.scan(&prefix, Some(&after), *limit).map_err(io)?;
            let msgs = rows.iter().map(|(_, v)| dec(v)).collect::<Result<_, _>>()?;
            Ok(ShardReadResult::Messages(msgs))
        }
        ShardQuery::TaskGet { ws, id } => match kv.get(&keys::task(id)).map_err(io)? {
            Some(b) => {
                let stored: StoredTask = dec(&b)?;
                if &stored.ws == ws {
                    Ok(ShardReadResult::Task(stored.task))
                } else {
                    Err(CoreError::not_found(format!("task {id} not found")))
                }
            }
            None => Err(CoreError::not_found(format!("task {id} not found"))),
        },
        // agents
        ShardQuery::AgentGet { .. }
        | ShardQuery::AgentList { .. }
        | ShardQuery::AgentsOnline { .. }
        | ShardQuery::MessageGet { .. }
        | ShardQuery::InboxRead { .. }
        | ShardQuery::AgentEvents { .. } => agents::query(kv, q),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::error::ErrorCode;

    /// Applies commands in order to an in-memory store, as a replica would.
    fn run(
        store: &mut BTreeMap<Vec<u8>, Vec<u8>>,
        cmds: &[(ShardCommand, u64)],
    ) -> Vec<ShardResponse> {
        let mut out = Vec::new();
        for (cmd, at) in cmds {
            let mut txn = Txn::new(&*store);
            out.push(apply(&mut txn, 3, cmd, *at).unwrap());
            for (k, v) in txn.into_writes() {
                match v {
                    Some(v) => store.insert(k, v),
                    None => store.remove(&k),
                };
            }
        }
        out
    }

    fn publish(topic: &str, body: &str) -> ShardCommand {
        ShardCommand::TopicPublish {
            ws: "w".into(),
            topic: topic.into(),
            body: body.into(),
        }
    }

    #[test]
    fn topic_sequences_are_gap_free_and_publish_needs_the_topic() {
        let mut s = BTreeMap::new();
        let create = ShardCommand::TopicCreate {
            ws: "w".into(),
            name: "t".into(),
            retention_hours: 1,
        };
        let out = run(
            &mut s,
            &[
                (publish("t", "0"), 1),
                (create.clone(), 2),
                (publish("t", "1"), 3),
                (publish("t", "2"), 4),
                (create, 5),
            ],
        );
        assert!(matches!(&out[0], ShardResponse::Refused(e) if e.code == ErrorCode::NotFound));
        assert!(matches!(&out[2], ShardResponse::Published { seq: 1, .. }));
        assert!(matches!(
            &out[3],
            ShardResponse::Published {
                seq: 2,
                published_at: 4,
                ..
            }
        ));
        assert!(matches!(&out[4], ShardResponse::Refused(e) if e.code == ErrorCode::Conflict));
        let q = ShardQuery::TopicMessages {
            ws: "w".into(),
            topic: "t".into(),
            since: 1,
            limit: 10,
        };
        match query(&s, &q).unwrap() {
            ShardReadResult::Messages(m) => {
                assert_eq!(m.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![2])
            }
            other => panic!("unexpected {other:?}"),
        }
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
