//! RocksDB storage shared by every Raft group of a node: the log store, the state machine and
//! the fsync thread that makes log appends of all groups durable together.

mod db;
mod digest;
mod fsync;
mod log_store;
mod state_machine;

pub use db::{disable_perf_counters, Db, GroupKv};
pub use digest::{group_digest, GroupDigest};
pub use fsync::Fsync;
pub use log_store::LogStore;
pub use state_machine::{ApplyWatch, StateMachine};
