//! How the router reaches another node's router: a trait, with the gRPC implementation here.

use conclave_proto::peer::ForwardRequest;
use conclave_raft::codec::{decode, encode};
use conclave_raft::network::Peers;
use conclave_raft::GroupId;
use futures::future::BoxFuture;

use crate::request::{ClientRequest, ForwardResult};

/// How long a forwarded request may take before the caller gives up on that node (a stopped
/// or partitioned node must not hold requests forever).
pub const FORWARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Sends a request to the router of the node at `addr`, to run there as leader of `group`.
pub trait Forwarder: Send + Sync + 'static {
    /// Returns the remote outcome, or a transport error message.
    fn forward<'a>(
        &'a self,
        addr: &'a str,
        group: GroupId,
        req: &'a ClientRequest,
    ) -> BoxFuture<'a, Result<ForwardResult, String>>;
}

/// [`Forwarder`] over the peer gRPC service, on the shared per-peer connection.
pub struct GrpcForwarder {
    peers: Peers,
}

impl GrpcForwarder {
    /// A forwarder using `peers`' connections.
    pub fn new(peers: Peers) -> Self {
        Self { peers }
    }
}

impl Forwarder for GrpcForwarder {
    fn forward<'a>(
        &'a self,
        addr: &'a str,
        group: GroupId,
        req: &'a ClientRequest,
    ) -> BoxFuture<'a, Result<ForwardResult, String>> {
        Box::pin(async move {
            let mut client = self.peers.client(addr).map_err(|e| e.to_string())?;
            let reply = client
                .forward(ForwardRequest {
                    shard: group,
                    request: encode(req),
                })
                .await
                .map_err(|s| s.to_string())?
                .into_inner();
            decode(&reply.response).map_err(|e| e.to_string())
        })
    }
}
