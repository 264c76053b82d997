//! Conclave's replicated core: openraft over one RocksDB, many Raft groups in one process.
//!
//! Group 0 is the meta group (nodes, shard map, workspaces, API keys); groups `1..=shards` are
//! data shards. Every group shares the node's RocksDB, its fsync thread and one gRPC connection
//! per peer node. Commands are a versioned, serialized enum whose apply is deterministic.

pub mod codec;
pub mod command;
pub mod error;
pub mod groups;
pub mod kv;
pub mod membership;
pub mod meta;
pub mod network;
pub mod runtime;
pub mod service;
pub mod shard;
pub mod storage;
pub mod types;

pub use command::{Command, Proposal, Response};
pub use groups::{GroupSettings, Groups};
pub use meta::{MetaCommand, MetaResponse, MetaState};
pub use shard::{ShardCommand, ShardQuery, ShardReadResult, ShardResponse};
pub use types::{GroupId, NodeId, NodeInfo, Raft, TypeConfig, META_GROUP};
