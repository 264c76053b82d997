//! The gRPC forwarder against a scripted peer: replies find their requests whatever their order,
//! a broken stream fails its waiting requests as "may have run" and the next request opens a new
//! stream, and a peer that cannot be reached, or that answers it is still starting, means
//! "never sent".

use std::pin::Pin;
use std::time::Duration;

use conclave_actors::{ClientRequest, ForwardError, ForwardResult, Forwarder, GrpcForwarder};
use conclave_proto::peer::peer_server::{Peer, PeerServer};
use conclave_proto::peer::*;
use conclave_raft::codec::encode;
use conclave_raft::network::{Peers, NODE_STARTING};
use conclave_raft::ShardQuery;
use futures::Stream;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};

/// Shard number that makes the scripted peer break the stream.
const BREAK: u64 = 999;

type Replies = Pin<Box<dyn Stream<Item = Result<ForwardReply, Status>> + Send>>;
type Events = Pin<Box<dyn Stream<Item = Result<WatchEvent, Status>> + Send>>;

/// Answers each forwarded request "not leader, try <shard>" after `10 - shard` ms (so later
/// requests answer first), or breaks the stream when asked to; while `starting`, refuses every
/// forward stream as a starting node does.
struct ScriptedPeer {
    starting: bool,
}

#[tonic::async_trait]
impl Peer for ScriptedPeer {
    type ForwardStream = Replies;
    type WatchStream = Events;

    async fn forward(
        &self,
        req: Request<Streaming<ForwardRequest>>,
    ) -> Result<Response<Replies>, Status> {
        if self.starting {
            return Err(Status::unavailable(NODE_STARTING));
        }
        let mut requests = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(req)) = requests.message().await {
                if req.shard == BREAK {
                    let _ = tx.send(Err(Status::internal("scripted failure")));
                    return;
                }
                let tx = tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(10 - req.shard)).await;
                    let result = ForwardResult::NotLeader {
                        hint: Some(req.shard),
                    };
                    let _ = tx.send(Ok(ForwardReply {
                        response: encode(&result),
                        id: req.id,
                    }));
                });
            }
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }

    async fn raft(&self, _: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        Err(Status::unimplemented("raft"))
    }

    async fn heartbeat(
        &self,
        _: Request<HeartbeatBatch>,
    ) -> Result<Response<HeartbeatBatchReply>, Status> {
        Err(Status::unimplemented("heartbeat"))
    }

    async fn install_snapshot(
        &self,
        _: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftReply>, Status> {
        Err(Status::unimplemented("install_snapshot"))
    }

    async fn watch(&self, _: Request<WatchRequest>) -> Result<Response<Events>, Status> {
        Err(Status::unimplemented("watch"))
    }

    async fn join(&self, _: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        Err(Status::unimplemented("join"))
    }

    async fn leave(&self, _: Request<LeaveRequest>) -> Result<Response<LeaveReply>, Status> {
        Err(Status::unimplemented("leave"))
    }

    async fn local_status(
        &self,
        _: Request<LocalStatusRequest>,
    ) -> Result<Response<LocalStatusReply>, Status> {
        Err(Status::unimplemented("local_status"))
    }

    async fn shard_admin(
        &self,
        _: Request<ShardAdminRequest>,
    ) -> Result<Response<ShardAdminReply>, Status> {
        Err(Status::unimplemented("shard_admin"))
    }
}

/// Starts the scripted peer on a loopback port; returns its address.
async fn scripted_peer() -> String {
    scripted_peer_starting(false).await
}

/// Starts a scripted peer that is (or is not) still starting; returns its address.
async fn scripted_peer_starting(starting: bool) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(PeerServer::new(ScriptedPeer { starting }))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}

fn request() -> ClientRequest {
    ClientRequest::Read(ShardQuery::ContextGet {
        ws: "default".into(),
        key: "k".into(),
    })
}

fn hint(result: Result<ForwardResult, ForwardError>) -> Option<u64> {
    match result {
        Ok(ForwardResult::NotLeader { hint }) => hint,
        other => panic!("expected a not-leader answer, got {other:?}"),
    }
}

#[tokio::test]
async fn replies_reach_their_own_requests_in_any_order() {
    let addr = scripted_peer().await;
    let forwarder = GrpcForwarder::new(Peers::new("secret"));
    let req = request();
    let calls = (1..=8u64).map(|shard| forwarder.forward(&addr, shard, &req));
    let hints: Vec<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(hint)
        .collect();
    assert_eq!(hints, (1..=8).map(Some).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_broken_stream_fails_its_requests_as_unknown_and_the_next_opens_anew() {
    let addr = scripted_peer().await;
    let forwarder = GrpcForwarder::new(Peers::new("secret"));
    let req = request();
    assert_eq!(hint(forwarder.forward(&addr, 2, &req).await), Some(2));
    // Failed by the stream's end, not left to the forwarder's 10 s timeout.
    let broken = tokio::time::timeout(
        Duration::from_secs(5),
        forwarder.forward(&addr, BREAK, &req),
    )
    .await
    .expect("the broken stream fails its waiting request at once");
    assert!(
        matches!(broken, Err(ForwardError::Unknown(_))),
        "a request on a broken stream may have run: {broken:?}"
    );
    assert_eq!(hint(forwarder.forward(&addr, 3, &req).await), Some(3));
}

#[tokio::test]
async fn an_unreachable_peer_means_never_sent() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let forwarder = GrpcForwarder::new(Peers::new("secret"));
    let result = forwarder.forward(&addr, 1, &request()).await;
    assert!(
        matches!(result, Err(ForwardError::NotSent(_))),
        "nothing left this node: {result:?}"
    );
}

#[tokio::test]
async fn a_peer_still_starting_means_never_sent() {
    // Found by the chaos harness (a restarted node refused forwarded requests unread, and
    // clients were told the outcome was unknown).
    let addr = scripted_peer_starting(true).await;
    let forwarder = GrpcForwarder::new(Peers::new("secret"));
    let result = forwarder.forward(&addr, 1, &request()).await;
    assert!(
        matches!(result, Err(ForwardError::NotSent(_))),
        "a starting peer runs nothing: {result:?}"
    );
}
