//! The sequenced streams of a shard that live events follow: a topic's messages, an agent's
//! inbox, one task's events, a workspace's task events and a workspace's agent (presence)
//! events on this shard.
//!
//! Each stream is read from the replicated state by sequence (`seq > since`, ascending), so
//! any replica serves it and a watcher that moves to another replica (a new leader after a
//! failover) resumes from its last delivered sequence with no gap and no repeat. Topic, inbox
//! and task streams are gap-free from 1; a workspace's agent events take their numbers from
//! the shard-wide counter, so they ascend with gaps (another workspace's events in between).

use super::io;
use serde::{Deserialize, Serialize};

use super::task_events::{self, TaskEvent};
use super::{agents, query, AgentEvent, InboxItem, ShardQuery, ShardReadResult, TopicMessage};
use crate::codec::{decode_io, encode};
use crate::error::CoreError;
use crate::kv::KvRead;

/// Which stream of a shard.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StreamKey {
    /// A topic's messages.
    Topic { ws: String, topic: String },
    /// An agent's inbox.
    Inbox { ws: String, agent: String },
    /// One task's events.
    Task { ws: String, id: String },
    /// The workspace's task events on this shard.
    Tasks { ws: String },
    /// The workspace's agent events (registrations, presence, deletes) on this shard.
    Agents { ws: String },
}

/// One item of a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StreamItem {
    /// A topic message.
    Topic(TopicMessage),
    /// An inbox item.
    Inbox(InboxItem),
    /// A task event (of one task, or of the workspace's log).
    Task(TaskEvent),
    /// An agent event.
    Agent(AgentEvent),
}

impl StreamItem {
    /// Its sequence in its stream.
    pub fn seq(&self) -> u64 {
        match self {
            StreamItem::Topic(m) => m.seq,
            StreamItem::Inbox(i) => i.seq,
            StreamItem::Task(e) => e.seq,
            StreamItem::Agent(e) => e.seq,
        }
    }

    /// The item alone, encoded (a watch event's payload; the watcher knows the stream kind).
    pub fn encode_payload(&self) -> Vec<u8> {
        match self {
            StreamItem::Topic(m) => encode(m),
            StreamItem::Inbox(i) => encode(i),
            StreamItem::Task(e) => encode(e),
            StreamItem::Agent(e) => encode(e),
        }
    }

    /// Decodes a payload of a stream of `key`'s kind.
    pub fn decode_payload(key: &StreamKey, bytes: &[u8]) -> std::io::Result<Self> {
        Ok(match key {
            StreamKey::Topic { .. } => StreamItem::Topic(decode_io(bytes)?),
            StreamKey::Inbox { .. } => StreamItem::Inbox(decode_io(bytes)?),
            StreamKey::Task { .. } | StreamKey::Tasks { .. } => StreamItem::Task(decode_io(bytes)?),
            StreamKey::Agents { .. } => StreamItem::Agent(decode_io(bytes)?),
        })
    }
}

/// Task `id` of `ws` must exist (another workspace's task answers 404).
fn check_task<R: KvRead>(kv: &R, ws: &str, id: &str) -> Result<(), CoreError> {
    let q = ShardQuery::TaskGet {
        ws: ws.to_string(),
        id: id.to_string(),
    };
    match query(kv, &q)? {
        ShardReadResult::Task(_) => Ok(()),
        other => Err(CoreError::internal(format!(
            "unexpected task read {other:?}"
        ))),
    }
}

/// Items of `key`'s stream with `seq > since`, ascending, at most `limit`. A missing topic,
/// agent or task is `not found`.
pub fn read<R: KvRead>(
    kv: &R,
    key: &StreamKey,
    since: u64,
    limit: usize,
) -> Result<Vec<StreamItem>, CoreError> {
    Ok(match key {
        StreamKey::Topic { ws, topic } => {
            let q = ShardQuery::TopicMessages {
                ws: ws.clone(),
                topic: topic.clone(),
                since,
                limit,
            };
            match query(kv, &q)? {
                ShardReadResult::TopicMessages { items, .. } => {
                    items.into_iter().map(StreamItem::Topic).collect()
                }
                other => return Err(unexpected(other)),
            }
        }
        StreamKey::Inbox { ws, agent } => {
            let q = ShardQuery::InboxRead {
                ws: ws.clone(),
                agent: agent.clone(),
                since,
                limit,
            };
            match query(kv, &q)? {
                ShardReadResult::Inbox { items, .. } => {
                    items.into_iter().map(StreamItem::Inbox).collect()
                }
                other => return Err(unexpected(other)),
            }
        }
        StreamKey::Task { ws, id } => {
            check_task(kv, ws, id)?;
            task_events::of_task(kv, id, since, limit)?
                .into_iter()
                .map(StreamItem::Task)
                .collect()
        }
        StreamKey::Tasks { ws } => task_events::of_workspace(kv, ws, since, limit)?
            .into_iter()
            .map(StreamItem::Task)
            .collect(),
        StreamKey::Agents { ws } => {
            let q = ShardQuery::AgentEvents {
                ws: ws.clone(),
                since,
                limit,
            };
            match query(kv, &q)? {
                ShardReadResult::AgentEvents(events) => {
                    events.into_iter().map(StreamItem::Agent).collect()
                }
                other => return Err(unexpected(other)),
            }
        }
    })
}

/// The newest sequence of `key`'s stream (0 before any): following from one past it delivers
/// only what comes after now.
pub fn head<R: KvRead>(kv: &R, key: &StreamKey) -> Result<u64, CoreError> {
    match key {
        StreamKey::Topic { ws, topic } => {
            let q = ShardQuery::TopicGet {
                ws: ws.clone(),
                name: topic.clone(),
            };
            match query(kv, &q)? {
                ShardReadResult::Topic(t) => Ok(t.last_seq),
                other => Err(unexpected(other)),
            }
        }
        StreamKey::Inbox { ws, agent } => {
            let q = ShardQuery::InboxRead {
                ws: ws.clone(),
                agent: agent.clone(),
                since: u64::MAX,
                limit: 0,
            };
            match query(kv, &q)? {
                ShardReadResult::Inbox { last_seq, .. } => Ok(last_seq),
                other => Err(unexpected(other)),
            }
        }
        StreamKey::Task { ws, id } => {
            check_task(kv, ws, id)?;
            task_events::task_head(kv, id)
        }
        StreamKey::Tasks { ws } => task_events::workspace_head(kv, ws),
        StreamKey::Agents { .. } => agents::event_head(kv).map_err(io),
    }
}

fn unexpected(r: ShardReadResult) -> CoreError {
    CoreError::internal(format!("unexpected stream read {r:?}"))
}
