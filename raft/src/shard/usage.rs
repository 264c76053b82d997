//! Usage of one workspace on one shard, measured from the stored rows: what `GET /v1/usage`
//! sums over every shard.
//!
//! Nothing is counted separately: each figure is read from the rows that hold the data (a count
//! of rows, a topic's sequence range, the audit log's counter), so figures cannot drift from the
//! data. The cost is one scan of the workspace's rows on each shard per request.

use super::io;
use serde::{Deserialize, Serialize};

use super::topic::Topic;
use crate::codec::decode_io;
use crate::error::CoreError;
use crate::kv::KvRead;

/// Rows read per scan.
const SCAN_CHUNK: usize = 1024;

/// A workspace's usage on one shard (or, summed, on all).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Registered agents.
    pub agents: u64,
    /// Agents stored online.
    pub agents_online: u64,
    /// Tasks, in any status.
    pub tasks: u64,
    /// Topics.
    pub topics: u64,
    /// Messages retained in topics.
    pub topic_messages: u64,
    /// Messages ever published to the current topics.
    pub topic_messages_published: u64,
    /// Inbox deliveries retained (a broadcast counts once per recipient).
    pub inbox_messages: u64,
    /// Context entries.
    pub context_entries: u64,
    /// Embeddings.
    pub embeddings: u64,
    /// Artifacts.
    pub artifacts: u64,
    /// Mutating API calls recorded in the audit log since the workspace began.
    pub api_calls: u64,
    /// Audit entries retained.
    pub audit_entries: u64,
    /// Bytes of the workspace's stored rows (keys and values, before storage compression).
    pub storage_bytes: u64,
}

impl Usage {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Usage) {
        self.agents += other.agents;
        self.agents_online += other.agents_online;
        self.tasks += other.tasks;
        self.topics += other.topics;
        self.topic_messages += other.topic_messages;
        self.topic_messages_published += other.topic_messages_published;
        self.inbox_messages += other.inbox_messages;
        self.context_entries += other.context_entries;
        self.embeddings += other.embeddings;
        self.artifacts += other.artifacts;
        self.api_calls += other.api_calls;
        self.audit_entries += other.audit_entries;
        self.storage_bytes += other.storage_bytes;
    }
}

/// Every row prefix holding data of a workspace (`<letter>\0<ws>\0`), and what it counts.
#[derive(Clone, Copy)]
enum Counted {
    Agents,
    Tasks,
    Topics,
    Inbox,
    Context,
    Embeddings,
    Artifacts,
    Audit,
    /// Counted only in `storage_bytes`.
    Bytes,
}

const PREFIXES: &[(u8, Counted)] = &[
    (b'a', Counted::Agents),
    (b'K', Counted::Tasks),
    (b't', Counted::Topics),
    (b'i', Counted::Inbox),
    (b'c', Counted::Context),
    (b'v', Counted::Embeddings),
    (b'f', Counted::Artifacts),
    (b'A', Counted::Audit),
    (b'F', Counted::Bytes),
    (b'I', Counted::Bytes),
    (b'x', Counted::Bytes),
    (b'e', Counted::Bytes),
    (b'g', Counted::Bytes),
    (b'C', Counted::Bytes),
    (b'm', Counted::Bytes),
    (b's', Counted::Bytes),
    (b'S', Counted::Bytes),
    (b'T', Counted::Bytes),
    (b'U', Counted::Bytes),
    (b'u', Counted::Bytes),
    (b'V', Counted::Bytes),
    (b'W', Counted::Bytes),
    (b'd', Counted::Bytes),
    (b'D', Counted::Bytes),
];

/// Measures `ws`'s usage on this shard.
pub(super) fn measure<R: KvRead + ?Sized>(kv: &R, ws: &str) -> Result<Usage, CoreError> {
    let mut u = Usage::default();
    for (letter, what) in PREFIXES {
        let prefix = [&[*letter, 0][..], ws.as_bytes(), b"\0"].concat();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let rows = kv.scan(&prefix, after.as_deref(), SCAN_CHUNK).map_err(io)?;
            let done = rows.len() < SCAN_CHUNK;
            for (k, v) in &rows {
                u.storage_bytes += (k.len() + v.len()) as u64;
                match what {
                    Counted::Agents => {
                        u.agents += 1;
                        let agent: super::Agent = decode_io(v).map_err(io)?;
                        if agent.status == super::AgentStatus::Online {
                            u.agents_online += 1;
                        }
                    }
                    Counted::Tasks => u.tasks += 1,
                    Counted::Topics => {
                        u.topics += 1;
                        let t: Topic = decode_io(v).map_err(io)?;
                        u.topic_messages += (t.last_seq + 1).saturating_sub(t.first_seq);
                        u.topic_messages_published += t.last_seq;
                    }
                    Counted::Inbox => u.inbox_messages += 1,
                    Counted::Context => u.context_entries += 1,
                    Counted::Embeddings => u.embeddings += 1,
                    Counted::Artifacts => u.artifacts += 1,
                    Counted::Audit => u.audit_entries += 1,
                    Counted::Bytes => {}
                }
            }
            after = rows.last().map(|(k, _)| k.clone());
            if done {
                break;
            }
        }
    }
    u.api_calls = super::audit::recorded(kv, ws).map_err(io)?;
    Ok(u)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::shard::audit::{AuditRetention, NewAuditEntry};
    use crate::shard::{apply_to_map, query, ShardCommand, ShardQuery, ShardReadResult};

    #[test]
    fn usage_counts_what_is_stored_per_workspace() {
        let mut s = BTreeMap::new();
        let cmds = [
            ShardCommand::AgentRegister {
                ws: "w".into(),
                name: "ana".into(),
                description: String::new(),
                capabilities: vec![],
                metadata: "{}".into(),
            },
            ShardCommand::TopicCreate {
                ws: "w".into(),
                name: "news".into(),
                retention_secs: 3600,
                description: String::new(),
            },
            ShardCommand::TopicPublish {
                ws: "w".into(),
                topic: "news".into(),
                body: "1".into(),
                from: None,
                metadata: None,
            },
            ShardCommand::TopicPublish {
                ws: "w".into(),
                topic: "news".into(),
                body: "2".into(),
                from: None,
                metadata: None,
            },
            ShardCommand::ContextPut {
                ws: "w".into(),
                key: "k".into(),
                value: "1".into(),
            },
            ShardCommand::ContextPut {
                ws: "other".into(),
                key: "k".into(),
                value: "1".into(),
            },
            ShardCommand::AuditAppend {
                ws: "w".into(),
                entries: vec![NewAuditEntry {
                    key_id: "key_1".into(),
                    user_id: None,
                    via: "rest".into(),
                    method: "PUT".into(),
                    route: "/v1/context/{key}".into(),
                    targets: vec![],
                    status: 200,
                    request_id: "r".into(),
                    received_at: 0,
                    node_id: 1,
                }],
                retention: AuditRetention {
                    max_age_ms: u64::MAX,
                    max_entries: u64::MAX,
                },
            },
        ];
        for (i, c) in cmds.iter().enumerate() {
            apply_to_map(&mut s, 2, c, i as u64);
        }
        let ShardReadResult::Usage(u) = query(&s, &ShardQuery::Usage { ws: "w".into() }).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (
                u.agents,
                u.agents_online,
                u.topics,
                u.topic_messages,
                u.topic_messages_published
            ),
            (1, 0, 1, 2, 2)
        );
        assert_eq!(
            (u.context_entries, u.api_calls, u.audit_entries, u.tasks),
            (1, 1, 1, 0)
        );
        assert!(u.storage_bytes > 0);
        let ShardReadResult::Usage(o) =
            query(&s, &ShardQuery::Usage { ws: "other".into() }).unwrap()
        else {
            panic!()
        };
        assert_eq!((o.context_entries, o.agents, o.api_calls), (1, 0, 0));
    }
}
