//! How Raft traffic reaches a peer. A node sends it over gRPC ([`Peers`]); the deterministic
//! simulation hands it straight to the peer's [`crate::groups::Groups`] through a simulated
//! network. Everything above this trait (envelopes, encoding, heartbeat batching, snapshot
//! chunking) is the same in both.

use conclave_proto::peer::{
    HeartbeatBatch, HeartbeatBatchReply, RaftReply, RaftRequest, SnapshotChunk,
};
use futures::future::BoxFuture;

use crate::network::{PeerClient, Peers};

/// Why a call to a peer failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// The peer could not be reached or did not answer: the call may be retried elsewhere.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The peer answered with an error.
    #[error("{0}")]
    Failed(String),
}

/// Carries Raft RPCs to the peer at a peer address.
pub trait RaftTransport: Send + Sync + 'static {
    /// One Raft RPC of one group.
    fn raft<'a>(
        &'a self,
        addr: &'a str,
        req: RaftRequest,
    ) -> BoxFuture<'a, Result<RaftReply, TransportError>>;

    /// A batch of heartbeats of several groups, one reply per item in order.
    fn heartbeat<'a>(
        &'a self,
        addr: &'a str,
        batch: HeartbeatBatch,
    ) -> BoxFuture<'a, Result<HeartbeatBatchReply, TransportError>>;

    /// A snapshot, in chunks, the first carrying its metadata.
    fn install_snapshot<'a>(
        &'a self,
        addr: &'a str,
        chunks: Vec<SnapshotChunk>,
    ) -> BoxFuture<'a, Result<RaftReply, TransportError>>;
}

fn status_err(s: tonic::Status) -> TransportError {
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
            TransportError::Unreachable(s.to_string())
        }
        _ => TransportError::Failed(s.to_string()),
    }
}

/// The client of the peer at `addr`; an address that cannot be used is unreachable.
fn peer(peers: &Peers, addr: &str) -> Result<PeerClient, TransportError> {
    peers
        .client(addr)
        .map_err(|e| TransportError::Unreachable(e.to_string()))
}

impl RaftTransport for Peers {
    fn raft<'a>(
        &'a self,
        addr: &'a str,
        req: RaftRequest,
    ) -> BoxFuture<'a, Result<RaftReply, TransportError>> {
        Box::pin(async move {
            let mut client = peer(self, addr)?;
            client
                .raft(req)
                .await
                .map(|r| r.into_inner())
                .map_err(status_err)
        })
    }

    fn heartbeat<'a>(
        &'a self,
        addr: &'a str,
        batch: HeartbeatBatch,
    ) -> BoxFuture<'a, Result<HeartbeatBatchReply, TransportError>> {
        Box::pin(async move {
            let mut client = peer(self, addr)?;
            client
                .heartbeat(batch)
                .await
                .map(|r| r.into_inner())
                .map_err(status_err)
        })
    }

    fn install_snapshot<'a>(
        &'a self,
        addr: &'a str,
        chunks: Vec<SnapshotChunk>,
    ) -> BoxFuture<'a, Result<RaftReply, TransportError>> {
        Box::pin(async move {
            let mut client = peer(self, addr)?;
            client
                .install_snapshot(tokio_stream::iter(chunks))
                .await
                .map(|r| r.into_inner())
                .map_err(status_err)
        })
    }
}
