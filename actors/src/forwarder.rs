//! How the router reaches another node's router: a trait, with the gRPC implementation here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use conclave_proto::peer::{ForwardReply, ForwardRequest};
use conclave_raft::codec::{decode, encode};
use conclave_raft::network::{Peers, NODE_STARTING};
use conclave_raft::GroupId;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;

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
    /// Classifies a failed gRPC call: only a failure to connect, or a peer answering that it is
    /// still starting (it runs nothing until it can route), proves nothing ran.
    pub fn from_status(status: &tonic::Status) -> Self {
        let msg = status.to_string();
        let lower = msg.to_ascii_lowercase();
        let unavailable = status.code() == tonic::Code::Unavailable;
        let not_connected = unavailable
            && (lower.contains("tcp connect error") || lower.contains("error trying to connect"));
        let starting = unavailable && status.message() == NODE_STARTING;
        if not_connected || starting {
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

/// [`Forwarder`] over the peer gRPC service. Each peer gets one long-lived `Forward` stream on
/// the shared connection, carrying every request forwarded to it tagged with an id; replies come
/// back tagged in completion order. Under load one connection write carries many requests and
/// one wake-up reads many replies, where a call per request would pay a stream, headers and
/// trailers, and a server task each.
pub struct GrpcForwarder {
    peers: Peers,
    streams: Mutex<HashMap<String, Arc<Stream>>>,
    next_id: AtomicU64,
}

/// Requests awaiting replies on one peer's stream.
type Pending = HashMap<u64, oneshot::Sender<Result<ForwardResult, ForwardError>>>;

/// One peer's forward stream.
struct Stream {
    requests: mpsc::UnboundedSender<ForwardRequest>,
    /// `None` once the stream has ended: its requests were answered with errors, and a new
    /// stream takes over.
    pending: Mutex<Option<Pending>>,
}

impl Stream {
    fn pending(&self) -> std::sync::MutexGuard<'_, Option<Pending>> {
        self.pending.lock().expect("pending lock")
    }

    /// Ends the stream, failing every request still waiting with `error`.
    fn close(&self, error: ForwardError) {
        let pending = self.pending().take();
        for (_, tx) in pending.into_iter().flatten() {
            let _ = tx.send(Err(error.clone()));
        }
    }
}

impl GrpcForwarder {
    /// A forwarder using `peers`' connections.
    pub fn new(peers: Peers) -> Self {
        Self {
            peers,
            streams: Mutex::default(),
            next_id: AtomicU64::new(1),
        }
    }

    /// The live stream to `addr`, opened if there is none.
    fn stream(&self, addr: &str) -> Result<Arc<Stream>, ForwardError> {
        let mut streams = self.streams.lock().expect("streams lock");
        if let Some(stream) = streams.get(addr) {
            if stream.pending().is_some() {
                return Ok(stream.clone());
            }
        }
        let mut client = self
            .peers
            .client(addr)
            .map_err(|e| ForwardError::NotSent(e.to_string()))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let stream = Arc::new(Stream {
            requests: tx,
            pending: Mutex::new(Some(HashMap::new())),
        });
        streams.insert(addr.to_string(), stream.clone());
        let driven = stream.clone();
        let addr = addr.to_string();
        tokio::spawn(async move {
            let replies = match client.forward(UnboundedReceiverStream::new(rx)).await {
                Ok(replies) => replies.into_inner(),
                // Only a failure to connect proves the queued requests never left.
                Err(status) => return driven.close(ForwardError::from_status(&status)),
            };
            let error = read_replies(&driven, replies, &addr).await;
            driven.close(ForwardError::Unknown(error));
        });
        Ok(stream)
    }
}

/// Hands each reply on `replies` to its waiting request; returns why the stream ended.
async fn read_replies(
    stream: &Stream,
    mut replies: tonic::Streaming<ForwardReply>,
    addr: &str,
) -> String {
    loop {
        let reply = match replies.message().await {
            Ok(Some(reply)) => reply,
            Ok(None) => return format!("forward stream to {addr} ended"),
            Err(status) => return format!("forward stream to {addr} failed: {status}"),
        };
        let waiting = stream.pending().as_mut().and_then(|p| p.remove(&reply.id));
        if let Some(tx) = waiting {
            let result = decode(&reply.response)
                .map_err(|e| ForwardError::Unknown(format!("malformed reply from {addr}: {e}")));
            let _ = tx.send(result);
        }
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
            let stream = self.stream(addr)?;
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            match stream.pending().as_mut() {
                Some(pending) => pending.insert(id, tx),
                None => return Err(ForwardError::NotSent(format!("stream to {addr} ended"))),
            };
            let request = ForwardRequest {
                shard: group,
                request: encode(req),
                id,
            };
            if stream.requests.send(request).is_err() {
                // The stream's reader is gone, so the request was never taken.
                return Err(ForwardError::NotSent(format!("stream to {addr} ended")));
            }
            match tokio::time::timeout(FORWARD_TIMEOUT, rx).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(ForwardError::Unknown(format!(
                    "forward stream to {addr} dropped the request"
                ))),
                Err(_) => {
                    if let Some(p) = stream.pending().as_mut() {
                        p.remove(&id);
                    }
                    Err(ForwardError::Unknown(format!(
                        "forwarding to {addr} timed out"
                    )))
                }
            }
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

    #[test]
    fn a_peer_still_starting_ran_nothing() {
        // Found by the chaos harness: requests forwarded to a restarting node were answered
        // "outcome unknown" although the node had refused them unread.
        let starting = tonic::Status::unavailable(NODE_STARTING);
        assert!(matches!(
            ForwardError::from_status(&starting),
            ForwardError::NotSent(_)
        ));
        let other = tonic::Status::unavailable("node is starting over");
        assert!(matches!(
            ForwardError::from_status(&other),
            ForwardError::Unknown(_)
        ));
    }
}
