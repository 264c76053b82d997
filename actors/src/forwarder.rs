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

/// Why a forwarded request has no outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardError {
    /// The request never left this node (no connection could be made): safe to send again.
    NotSent(String),
    /// The request may have reached the peer and run there: its outcome is unknown.
    Unknown(String),
}

impl std::fmt::Display for ForwardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ForwardError::NotSent(m) | ForwardError::Unknown(m) => f.write_str(m),
        }
    }
}

impl ForwardError {
    /// Classifies a failed gRPC call: only a failure to connect proves nothing was sent.
    pub fn from_status(status: &tonic::Status) -> Self {
        let msg = status.to_string();
        let lower = msg.to_ascii_lowercase();
        let not_connected = status.code() == tonic::Code::Unavailable
            && (lower.contains("tcp connect error") || lower.contains("error trying to connect"));
        if not_connected {
            ForwardError::NotSent(msg)
        } else {
            ForwardError::Unknown(msg)
        }
    }
}

/// Sends a request to the router of the node at `addr`, to run there as leader of `group`.
pub trait Forwarder: Send + Sync + 'static {
    /// Returns the remote outcome, or why there is none.
    fn forward<'a>(
        &'a self,
        addr: &'a str,
        group: GroupId,
        req: &'a ClientRequest,
    ) -> BoxFuture<'a, Result<ForwardResult, ForwardError>>;
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
    ) -> BoxFuture<'a, Result<ForwardResult, ForwardError>> {
        Box::pin(async move {
            let mut client = self
                .peers
                .client(addr)
                .map_err(|e| ForwardError::NotSent(e.to_string()))?;
            let call = client.forward(ForwardRequest {
                shard: group,
                request: encode(req),
            });
            let reply = tokio::time::timeout(FORWARD_TIMEOUT, call)
                .await
                .map_err(|_| ForwardError::Unknown(format!("forwarding to {addr} timed out")))?
                .map_err(|s| ForwardError::from_status(&s))?
                .into_inner();
            decode(&reply.response)
                .map_err(|e| ForwardError::Unknown(format!("malformed reply from {addr}: {e}")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connect_failures_count_as_not_sent() {
        let refused = tonic::Status::unavailable(
            "error trying to connect: tcp connect error: Connection refused (os error 111)",
        );
        assert!(matches!(
            ForwardError::from_status(&refused),
            ForwardError::NotSent(_)
        ));
        let reset = tonic::Status::unavailable(
            "error reading a body from connection: connection reset by peer",
        );
        assert!(matches!(
            ForwardError::from_status(&reset),
            ForwardError::Unknown(_)
        ));
        let broken = tonic::Status::unknown("transport error: connection error");
        assert!(matches!(
            ForwardError::from_status(&broken),
            ForwardError::Unknown(_)
        ));
    }
}
