//! Process-level test harness for Conclave clusters.
//!
//! Runs real `conclave` processes on loopback ports in temporary directories, so tests and the
//! benchmark exercise the same binary, CLI and HTTP contract (`docs/http-contract.md`) that an
//! operator would. Nothing here links against the server crates: the contract is the only
//! interface, which keeps the harness honest about what clients can observe. The [`chaos`]
//! harness runs the same processes under injected faults and checks what clients observed.

pub mod binary;
pub mod chaos;
pub mod client;
pub mod dataset;
pub mod http;
pub mod model;
pub mod sandbox;
pub mod wait;

pub use client::{ApiError, NodeClient};
pub use dataset::Dataset;
pub use model::{
    ApiKey, ClusterStatus, ContextEntry, Locate, Message, MessagePage, Published, ShardKind,
    ShardStatus, Task, TaskId, Topic,
};
pub use sandbox::{Cluster, ClusterBuilder, Node};
pub use wait::{retry_transient, retry_until_ok, wait_for, wait_until};
