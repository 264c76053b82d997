//! What the router carries between nodes: a client's request for one group and its outcome.

use conclave_raft::error::CoreError;
use conclave_raft::shard::Agent;
use conclave_raft::{
    MetaCommand, MetaResponse, NodeId, ShardCommand, ShardQuery, ShardReadResult, ShardResponse,
};
use serde::{Deserialize, Serialize};

/// A request for one group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ClientRequest {
    /// A write to a data shard.
    Write(ShardCommand),
    /// A linearizable read of a data shard.
    Read(ShardQuery),
    /// A write to the meta group.
    Meta(MetaCommand),
    /// Asks the meta leader for a linearizable read index: the log index a replica must have
    /// applied to reflect everything committed before the request.
    MetaReadIndex,
    // agents
    /// A presence heartbeat, served from the agent's presence actor on the shard leader with
    /// no Raft write unless the agent was offline.
    Heartbeat { ws: String, agent: String },
}

/// The outcome of a [`ClientRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientResponse {
    /// Result of a shard write (which may be a deterministic refusal).
    Write(ShardResponse),
    /// Result of a shard read.
    Read(ShardReadResult),
    /// Result of a meta write.
    Meta(MetaResponse),
    /// The meta leader's read index.
    ReadIndex(u64),
    // agents
    /// The agent after a heartbeat, with its new last-seen time.
    Heartbeat(Agent),
}

/// What a node answers when asked to run a request as leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardResult {
    /// It ran (or failed for a reason other than leadership).
    Done(Result<ClientResponse, CoreError>),
    /// This node does not lead the group; `hint` is the leader it knows of.
    NotLeader {
        /// The leader this node knows of.
        hint: Option<NodeId>,
    },
}
