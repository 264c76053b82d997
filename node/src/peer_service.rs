//! The peer gRPC service: Raft traffic for every group, request forwarding, event watch,
//! join/leave, status and shard administration. Calls without the cluster secret are refused.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use conclave_actors::controller::{run_shard_action, ShardAction};
use conclave_actors::status::local_status;
use conclave_actors::watch;
use conclave_actors::{ClientRequest, ForwardResult, Router};
use conclave_proto::peer::peer_server::Peer;
use conclave_proto::peer::*;
use conclave_raft::codec::{decode, encode};
use conclave_raft::error::CoreError;
use conclave_raft::meta::NodeState;
use conclave_raft::network::{NODE_STARTING, SECRET_HEADER};
use conclave_raft::{Groups, MetaCommand, MetaResponse, NodeInfo};
use futures::{Stream, StreamExt};
use subtle::ConstantTimeEq;
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};

/// Replies of one forward stream.
type ForwardReplies = Pin<Box<dyn Stream<Item = Result<ForwardReply, Status>> + Send>>;

/// Events buffered per watch stream; a slow watcher makes the sender wait, never grow memory.
const WATCH_BUFFER: usize = 256;

/// What the service needs once the node knows its id.
#[derive(Clone)]
pub struct NodeCtx {
    /// The node's groups.
    pub groups: Groups,
    /// The node's router.
    pub router: Arc<Router>,
}

/// The service; it answers `unavailable` until the node is started.
#[derive(Clone, Default)]
pub struct PeerService {
    ctx: Arc<OnceLock<NodeCtx>>,
}

impl PeerService {
    /// Makes the service live.
    pub fn set(&self, ctx: NodeCtx) {
        let _ = self.ctx.set(ctx);
    }

    fn ctx(&self) -> Result<&NodeCtx, Status> {
        self.ctx
            .get()
            .ok_or_else(|| Status::unavailable(NODE_STARTING))
    }
}

/// Refuses calls without the cluster secret.
pub fn check_secret(secret: String) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req| {
        let given = req
            .metadata()
            .get(SECRET_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if bool::from(given.ct_eq(secret.as_bytes())) {
            Ok(req)
        } else {
            Err(Status::unauthenticated("missing or wrong cluster secret"))
        }
    }
}

fn core_status(e: CoreError) -> Status {
    Status::failed_precondition(e.message)
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Peer for PeerService {
    async fn raft(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        Ok(Response::new(
            self.ctx()?.groups.handle_raft(req.into_inner()).await,
        ))
    }

    async fn heartbeat(
        &self,
        req: Request<HeartbeatBatch>,
    ) -> Result<Response<HeartbeatBatchReply>, Status> {
        Ok(Response::new(
            self.ctx()?.groups.handle_heartbeats(req.into_inner()).await,
        ))
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftReply>, Status> {
        Ok(Response::new(
            self.ctx()?.groups.handle_snapshot(req.into_inner()).await,
        ))
    }

    type ForwardStream = ForwardReplies;

    async fn forward(
        &self,
        req: Request<Streaming<ForwardRequest>>,
    ) -> Result<Response<ForwardReplies>, Status> {
        let router = self.ctx()?.router.clone();
        let mut requests = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        // Each request runs in its own task, so a slow shard never holds up the others' replies.
        // The sender bounds what it has in flight; the replies end when the requests do.
        tokio::spawn(async move {
            while let Ok(Some(req)) = requests.message().await {
                let (router, tx) = (router.clone(), tx.clone());
                tokio::spawn(async move {
                    let result = match decode::<ClientRequest>(&req.request) {
                        Ok(client_req) => router.execute_local(req.shard, &client_req).await,
                        Err(e) => ForwardResult::Done(Err(CoreError::internal(format!(
                            "malformed forwarded request: {e}"
                        )))),
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

    type WatchStream = WatchStream;

    async fn watch(&self, req: Request<WatchRequest>) -> Result<Response<WatchStream>, Status> {
        let groups = self.ctx()?.groups.clone();
        let r = req.into_inner();
        let key = watch::from_request(&r).map_err(|e| watch::status_of(&e))?;
        let items = watch::serve_local(groups, r.shard, key, r.from_seq, WATCH_BUFFER)
            .map_err(|e| watch::status_of(&e))?;
        let events = ReceiverStream::new(items).map(|item| match item {
            Ok(item) => Ok(WatchEvent {
                seq: item.seq(),
                event: item.encode_payload(),
            }),
            Err(e) => Err(watch::status_of(&e)),
        });
        Ok(Response::new(Box::pin(events)))
    }

    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        let ctx = self.ctx()?;
        let r = req.into_inner();
        if r.peer_addr.is_empty() || r.api_addr.is_empty() {
            return Err(Status::invalid_argument(
                "peer_addr and api_addr are required",
            ));
        }
        let info = NodeInfo {
            peer_addr: r.peer_addr,
            api_addr: r.api_addr,
        };
        let resp = ctx
            .router
            .execute_meta(MetaCommand::AddNode { info: info.clone() })
            .await
            .map_err(core_status)?;
        match resp {
            MetaResponse::NodeId(id) => {
                tracing::info!(node = id, %info, "node joined");
                let nodes: Vec<(u64, NodeInfo)> = ctx
                    .groups
                    .meta_snapshot()
                    .nodes
                    .values()
                    .map(|n| (n.id, n.info.clone()))
                    .collect();
                Ok(Response::new(JoinReply {
                    node_id: id,
                    nodes: encode(&nodes),
                }))
            }
            other => Err(Status::internal(format!("unexpected response {other:?}"))),
        }
    }

    async fn leave(&self, req: Request<LeaveRequest>) -> Result<Response<LeaveReply>, Status> {
        let ctx = self.ctx()?;
        let id = req.into_inner().node_id;
        let cmd = MetaCommand::SetNodeState {
            id,
            state: NodeState::Draining,
        };
        ctx.router.execute_meta(cmd).await.map_err(core_status)?;
        Ok(Response::new(LeaveReply {}))
    }

    async fn local_status(
        &self,
        _req: Request<LocalStatusRequest>,
    ) -> Result<Response<LocalStatusReply>, Status> {
        Ok(Response::new(LocalStatusReply {
            status: encode(&local_status(&self.ctx()?.groups)),
        }))
    }

    async fn shard_admin(
        &self,
        req: Request<ShardAdminRequest>,
    ) -> Result<Response<ShardAdminReply>, Status> {
        let ctx = self.ctx()?;
        let r = req.into_inner();
        let action: ShardAction = decode(&r.action)
            .map_err(|e| Status::invalid_argument(format!("malformed action: {e}")))?;
        let result = run_shard_action(&ctx.groups, r.group, action).await;
        Ok(Response::new(ShardAdminReply {
            result: encode(&result),
        }))
    }
}
