//! Generated tonic/prost code for Conclave's node-to-node service.
//!
//! The service and its messages are defined in `proto/peer.proto`; nothing here faces clients.

#![allow(clippy::all, missing_docs)]

/// The `conclave.peer.v1` package.
pub mod peer {
    tonic::include_proto!("conclave.peer.v1");
}
