//! JSON shapes of `docs/http-contract.md`, as the tests read them.
//!
//! Fields the tests do not assert on are kept loose (`serde_json::Value` timestamps, defaults for
//! optional fields) so a harmless encoding choice in the server does not fail every test; fields
//! the tests do assert on (versions, seqs, claimants, replicas) are typed.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// A context entry: `{"key","value","version","updated_at"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextEntry {
    /// The key, as sent.
    pub key: String,
    /// The stored JSON value.
    pub value: Value,
    /// Starts at 1 and grows by one per put of the key.
    pub version: u64,
    /// Time of the last put; its encoding is not asserted on.
    #[serde(default)]
    pub updated_at: Value,
}

/// A topic: `{"name","retention_hours","created_at","last_seq"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Topic {
    /// Topic name.
    pub name: String,
    /// Retention in hours.
    #[serde(default)]
    pub retention_hours: Option<u64>,
    /// Creation time; its encoding is not asserted on.
    #[serde(default)]
    pub created_at: Value,
    /// Highest assigned sequence number, 0 when empty.
    #[serde(default)]
    pub last_seq: u64,
}

/// The answer to a publish: `{"topic","seq","published_at"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Published {
    /// Topic name.
    pub topic: String,
    /// Gap-free sequence number, from 1 per topic.
    pub seq: u64,
    /// Publication time; its encoding is not asserted on.
    #[serde(default)]
    pub published_at: Value,
}

/// One message of a topic read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Sequence number.
    pub seq: u64,
    /// The published body.
    pub body: Value,
    /// Publication time; its encoding is not asserted on.
    #[serde(default)]
    pub published_at: Value,
}

/// A page of a topic read: `{"items","next_since"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessagePage {
    /// Messages with `seq > since`, ascending.
    pub items: Vec<Message>,
    /// The `since` to pass for the next page.
    #[serde(default)]
    pub next_since: u64,
}

/// A task identifier; the contract does not fix its JSON type, so a string or a number is
/// accepted and kept as text (it is only ever echoed back in a URL).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct TaskId(pub String);

impl<'de> Deserialize<'de> for TaskId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::String(text) => Ok(TaskId(text)),
            Value::Number(number) => Ok(TaskId(number.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "task id must be a string or a number, got {other}"
            ))),
        }
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A task, as returned by create, claim and get.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Task identifier.
    pub id: TaskId,
    /// Title, as sent.
    pub title: String,
    /// Optional description.
    #[serde(default)]
    pub description: Option<String>,
    /// `auto`, `approval` or `claim_only`.
    #[serde(default)]
    pub mode: Option<String>,
    /// `open`, `claimed`, ...
    pub status: String,
    /// Creation time; its encoding is not asserted on.
    #[serde(default)]
    pub created_at: Value,
    /// The agent holding the claim.
    #[serde(default)]
    pub claimed_by: Option<String>,
    /// End of the claim's lease; its encoding is not asserted on.
    #[serde(default)]
    pub lease_expires_at: Value,
    /// Fencing token of the current claim; grows with every claim.
    #[serde(default)]
    pub fencing_token: Option<u64>,
}

/// A new API key: `{"id","name","scope","key"}`; the secret `key` is shown only here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Key identifier; its JSON type is not asserted on.
    #[serde(default)]
    pub id: Value,
    /// Name, as sent.
    pub name: String,
    /// `read`, `full` or `admin`.
    pub scope: String,
    /// The secret to send as `Authorization: Bearer <key>`.
    pub key: String,
}

/// The kind of named object a shard holds, for `/v1/cluster/locate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShardKind {
    /// Context keys.
    Context,
    /// Topics.
    Topic,
    /// Task queues; tasks live in the queue `default`.
    Queue,
    /// The workspace's audit log (the name is ignored).
    Audit,
}

impl ShardKind {
    /// The `kind=` query value.
    pub fn as_str(self) -> &'static str {
        match self {
            ShardKind::Context => "context",
            ShardKind::Topic => "topic",
            ShardKind::Queue => "queue",
            ShardKind::Audit => "audit",
        }
    }
}

/// The answer of `/v1/cluster/locate`: `{"shard","leader","replicas"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Locate {
    /// Shard id.
    pub shard: u64,
    /// Node id of the shard leader, as the answering node knows it.
    #[serde(default)]
    pub leader: Option<u64>,
    /// Node ids of the shard's replicas.
    #[serde(default)]
    pub replicas: Vec<u64>,
}

/// `GET /v1/cluster/status`, as seen by one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// Id of the answering node.
    pub node_id: u64,
    /// Cluster members known to the answering node.
    #[serde(default)]
    pub nodes: Vec<NodeStatus>,
    /// The metadata group.
    #[serde(default)]
    pub meta: MetaStatus,
    /// Every data shard.
    #[serde(default)]
    pub shards: Vec<ShardStatus>,
}

/// One member in [`ClusterStatus::nodes`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Node id.
    pub id: u64,
    /// Node-to-node address.
    #[serde(default)]
    pub peer_addr: String,
    /// Client HTTP address.
    #[serde(default)]
    pub api_addr: String,
    /// Whether the answering node considers it alive.
    #[serde(default)]
    pub alive: bool,
}

/// The metadata group in [`ClusterStatus::meta`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetaStatus {
    /// Node id of the metadata leader.
    #[serde(default)]
    pub leader: Option<u64>,
    /// Voting members.
    #[serde(default)]
    pub voters: Vec<u64>,
    /// Non-voting members.
    #[serde(default)]
    pub learners: Vec<u64>,
}

/// One shard in [`ClusterStatus::shards`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardStatus {
    /// Shard id.
    pub id: u64,
    /// Node ids of its replicas.
    #[serde(default)]
    pub replicas: Vec<u64>,
    /// Node id of its leader.
    #[serde(default)]
    pub leader: Option<u64>,
    /// Last log index applied on the answering node, when it holds a replica.
    #[serde(default)]
    pub applied: Option<u64>,
    /// Replication lag per follower node id, in entries (reported by the leader).
    #[serde(default)]
    pub lag: BTreeMap<u64, Option<u64>>,
    /// Applied index per replica node id, as each replica reports it (missing when it did not
    /// answer).
    #[serde(default)]
    pub replica_applied: BTreeMap<u64, u64>,
    /// The replica move in progress, as the meta group records it (`{"add", "remove"}`).
    #[serde(default)]
    pub moving: Option<serde_json::Value>,
}

impl ClusterStatus {
    /// The shard with id `id`.
    pub fn shard(&self, id: u64) -> Option<&ShardStatus> {
        self.shards.iter().find(|shard| shard.id == id)
    }

    /// Whether the member list names node `id`.
    pub fn has_node(&self, id: u64) -> bool {
        self.nodes.iter().any(|node| node.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_parses_contract_example() {
        let json = r#"{"node_id": 1, "nodes": [{"id": 1, "peer_addr": "a", "api_addr": "b", "alive": true}],
            "meta": {"leader": 1, "voters": [1], "learners": []},
            "shards": [{"id": 1, "replicas": [1,2,3], "leader": 2, "applied": 17, "lag": {"2": 0, "3": null}}]}"#;
        let status: ClusterStatus = serde_json::from_str(json).unwrap();
        assert_eq!(status.shards[0].lag.get(&2), Some(&Some(0)));
        assert_eq!(status.shards[0].lag.get(&3), Some(&None));
        assert!(status.has_node(1));
    }

    #[test]
    fn task_id_accepts_string_and_number() {
        let a: TaskId = serde_json::from_str("\"t_1\"").unwrap();
        let b: TaskId = serde_json::from_str("42").unwrap();
        assert_eq!((a.0.as_str(), b.0.as_str()), ("t_1", "42"));
    }
}
