//! The Raft type configuration shared by every group, and the ids that name nodes and groups.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::command::{Proposal, Response};
use crate::storage::StateMachine;

/// A node's id, assigned by the meta group when the node joins (the first node is 1).
pub type NodeId = u64;

/// A Raft group's id: [`META_GROUP`] or a data shard `1..=shards`.
pub type GroupId = u64;

/// The meta group: the cluster's control plane.
pub const META_GROUP: GroupId = 0;

/// How to reach a node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Address of the peer gRPC server (`--advertise`, or the bound `--peer-listen`).
    pub peer_addr: String,
    /// Address of the client API (REST, WebSocket, MCP).
    pub api_addr: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer={} api={}", self.peer_addr, self.api_addr)
    }
}

openraft::declare_raft_types!(
    /// Conclave's Raft types: one configuration for the meta group and every shard.
    pub TypeConfig:
        D = Proposal,
        R = Response,
        NodeId = NodeId,
        Node = NodeInfo,
        AsyncRuntime = crate::runtime::ConclaveRuntime,
);

/// A Raft group handle.
pub type Raft = openraft::Raft<TypeConfig, StateMachine>;

/// Aliases for openraft's generic types under [`TypeConfig`].
pub mod typ {
    use super::TypeConfig;

    /// A log id.
    pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
    /// A vote.
    pub type Vote = <TypeConfig as openraft::RaftTypeConfig>::Vote;
    /// A log entry.
    pub type Entry = <TypeConfig as openraft::RaftTypeConfig>::Entry;
    /// A membership change as stored with the state machine.
    pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
    /// Snapshot metadata.
    pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
    /// Snapshot bytes.
    pub type SnapshotData = std::io::Cursor<Vec<u8>>;
    /// A snapshot.
    pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotData>;
    /// openraft's RPC error.
    pub type RPCError<E = openraft::errors::Infallible> = openraft::errors::RPCError<TypeConfig, E>;
    /// openraft's API error.
    pub type RaftError<E = openraft::errors::Infallible> =
        openraft::errors::RaftError<TypeConfig, E>;
    /// openraft's streaming error.
    pub type StreamingError = openraft::errors::StreamingError<TypeConfig>;
    /// AppendEntries request.
    pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
    /// AppendEntries response.
    pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<TypeConfig>;
    /// Vote request.
    pub type VoteRequest = openraft::raft::VoteRequest<TypeConfig>;
    /// Vote response.
    pub type VoteResponse = openraft::raft::VoteResponse<TypeConfig>;
    /// Snapshot response.
    pub type SnapshotResponse = openraft::raft::SnapshotResponse<TypeConfig>;
    /// TransferLeader request.
    pub type TransferLeaderRequest = openraft::raft::TransferLeaderRequest<TypeConfig>;
    /// TransferLeader response.
    pub type TransferLeaderResponse = openraft::raft::TransferLeaderResponse<TypeConfig>;
}
