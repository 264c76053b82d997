//! The Raft network of every group: one gRPC connection per peer node, heartbeats of all groups
//! to the same peer coalesced into one RPC, snapshots streamed in chunks.

mod factory;
mod heartbeat;
mod peers;
mod transport;

pub use factory::{GroupNetwork, GroupNetworkFactory};
pub use heartbeat::HeartbeatCoalescer;
pub use peers::{PeerClient, Peers, NODE_STARTING, SECRET_HEADER};
pub use transport::{RaftTransport, TransportError};
