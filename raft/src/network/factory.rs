//! openraft's network for one group, over the node's shared peer connections.
//!
//! Each RPC goes in a [`RaftRequest`] envelope naming the group; the payload is openraft's own
//! request, encoded by [`crate::codec`]. Heartbeat clients route through the
//! [`HeartbeatCoalescer`].

use std::future::Future;

use conclave_proto::peer::{RaftKind, RaftReply, RaftRequest, SnapshotChunk};
use openraft::errors::{NetworkError, ReplicationClosed, Timeout, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::{AnyError, OptionalSend};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{decode, encode};
use std::sync::Arc;

use crate::network::{HeartbeatCoalescer, RaftTransport, TransportError};
use crate::types::typ::*;
use crate::types::{GroupId, NodeId, NodeInfo, TypeConfig};

/// Snapshot bytes per streamed chunk.
const SNAPSHOT_CHUNK: usize = 1 << 20;

/// Creates the network clients of one group.
#[derive(Clone)]
pub struct GroupNetworkFactory {
    group: GroupId,
    transport: Arc<dyn RaftTransport>,
    heartbeats: HeartbeatCoalescer,
}

impl GroupNetworkFactory {
    /// The network of `group`.
    pub fn new(
        group: GroupId,
        transport: Arc<dyn RaftTransport>,
        heartbeats: HeartbeatCoalescer,
    ) -> Self {
        Self {
            group,
            transport,
            heartbeats,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for GroupNetworkFactory {
    type Network = GroupNetwork;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> GroupNetwork {
        GroupNetwork::new(self, target, node, false)
    }

    async fn new_heartbeat_client(&mut self, target: NodeId, node: &NodeInfo) -> GroupNetwork {
        GroupNetwork::new(self, target, node, true)
    }
}

/// One group's client to one peer.
pub struct GroupNetwork {
    group: GroupId,
    target: NodeId,
    addr: String,
    transport: Arc<dyn RaftTransport>,
    heartbeats: Option<HeartbeatCoalescer>,
}

impl GroupNetwork {
    fn new(f: &GroupNetworkFactory, target: NodeId, node: &NodeInfo, heartbeat: bool) -> Self {
        Self {
            group: f.group,
            target,
            addr: node.peer_addr.clone(),
            transport: f.transport.clone(),
            heartbeats: heartbeat.then(|| f.heartbeats.clone()),
        }
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        kind: RaftKind,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError> {
        let payload = encode(req);
        let ttl = option.soft_ttl();
        let fut = async {
            match (&self.heartbeats, kind) {
                (Some(hb), RaftKind::Append) => hb
                    .send(&self.addr, self.group, payload)
                    .await
                    .map_err(unreachable),
                _ => {
                    let req = RaftRequest {
                        group: self.group,
                        kind: kind as i32,
                        payload,
                    };
                    self.transport
                        .raft(&self.addr, req)
                        .await
                        .map_err(transport_err)
                }
            }
        };
        let reply = tokio::time::timeout(ttl, fut).await.map_err(|_| {
            RPCError::Timeout(Timeout {
                action: openraft::RPCTypes::AppendEntries,
                id: self.target,
                target: self.target,
                timeout: ttl,
            })
        })??;
        decode_reply(reply)
    }
}

fn unreachable(msg: impl ToString) -> RPCError {
    RPCError::Unreachable(Unreachable::new(&AnyError::error(msg.to_string())))
}

fn transport_err(e: TransportError) -> RPCError {
    match e {
        TransportError::Unreachable(m) => unreachable(m),
        TransportError::Failed(m) => RPCError::Network(NetworkError::new(&AnyError::error(m))),
    }
}

fn decode_reply<Resp: DeserializeOwned>(reply: RaftReply) -> Result<Resp, RPCError> {
    let net = |m: String| RPCError::Network(NetworkError::new(&AnyError::error(m)));
    if !reply.error.is_empty() {
        return Err(net(reply.error));
    }
    let result: Result<Resp, String> = decode(&reply.payload).map_err(|e| net(e.to_string()))?;
    result.map_err(net)
}

impl RaftNetworkV2<TypeConfig> for GroupNetwork {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse, RPCError> {
        self.call(RaftKind::Append, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest,
        option: RPCOption,
    ) -> Result<VoteResponse, RPCError> {
        self.call(RaftKind::Vote, &rpc, &option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest,
        option: RPCOption,
    ) -> Result<VoteResponse, RPCError> {
        self.call(RaftKind::PreVote, &rpc, &option).await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse, RPCError> {
        self.call(RaftKind::TransferLeader, &req, &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse, StreamingError> {
        let group = self.group;
        let meta = encode(&(vote, snapshot.meta.clone()));
        let data = snapshot.snapshot.into_inner();
        let mut chunks: Vec<SnapshotChunk> = data
            .chunks(SNAPSHOT_CHUNK)
            .map(|c| SnapshotChunk {
                group,
                meta: Vec::new(),
                data: c.to_vec(),
            })
            .collect();
        if chunks.is_empty() {
            chunks.push(SnapshotChunk {
                group,
                meta: Vec::new(),
                data: Vec::new(),
            });
        }
        chunks[0].meta = meta;
        tracing::info!(
            group,
            target = self.target,
            bytes = data.len(),
            chunks = chunks.len(),
            "sending snapshot"
        );
        let transport = self.transport.clone();
        let addr = self.addr.clone();
        let send = async move {
            let reply = transport
                .install_snapshot(&addr, chunks)
                .await
                .map_err(transport_err)?;
            decode_reply::<SnapshotResponse>(reply)
        };
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = send => r.map_err(StreamingError::from),
        }
    }
}
