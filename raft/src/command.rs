//! The replicated command: a versioned, serialized enum with the leader's timestamp.
//!
//! Apply is deterministic: it reads only the command, its timestamp and the stored state. Ids
//! and sequence numbers are assigned during apply.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::meta::{MetaCommand, MetaResponse};
use crate::shard::{ShardCommand, ShardResponse};

/// What a Raft log entry carries: a command and the time the leader proposed it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Proposal {
    /// Milliseconds since the Unix epoch, stamped by the proposing leader.
    pub at_ms: u64,
    /// The command, shared: entries are cloned on their way through the log cache, replication
    /// and apply, and a clone is then a reference count. Serialized as the command itself.
    pub command: Arc<Command>,
}

/// A command for the meta group or for a data shard. New variants are only ever appended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    /// A control-plane change.
    Meta(MetaCommand),
    /// A change to entities of one shard.
    Shard(ShardCommand),
}

/// The result of applying a command, returned to the proposer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub enum Response {
    /// Blank and membership entries, and commands sent to the wrong kind of group.
    #[default]
    None,
    /// Result of a [`Command::Meta`].
    Meta(MetaResponse),
    /// Result of a [`Command::Shard`].
    Shard(ShardResponse),
}

impl Proposal {
    /// A proposal stamped with the current wall-clock time (only leaders propose).
    pub fn now(command: Command) -> Self {
        Self {
            at_ms: now_ms(),
            command: Arc::new(command),
        }
    }
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}@{}", self.command, self.at_ms)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
