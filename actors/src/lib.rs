//! Conclave's entity actors and the request router, plus the placement controller that moves
//! shard replicas and leaderships between nodes.
//!
//! An entity's actor lives on the node leading its shard; any node accepts a request and the
//! [`Router`] either runs it locally or forwards it to the leader over gRPC.

pub mod audit_call;
pub mod controller;
pub mod entity;
pub mod entity_actor;
pub mod forwarder;
pub mod leases;
pub mod maintenance;
pub mod placement;
pub mod presence;
pub mod reconciler;
pub mod request;
pub mod router;
pub mod status;
pub mod watch;

pub use entity::shard_for;
pub use forwarder::{ForwardError, Forwarder, GrpcForwarder};
pub use request::{ClientRequest, ClientResponse, ForwardResult};
pub use router::Router;
