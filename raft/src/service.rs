//! The receiving side of Raft traffic: decodes an envelope, finds the group, calls its Raft.

use conclave_proto::peer::{
    HeartbeatBatch, HeartbeatBatchReply, RaftKind, RaftReply, RaftRequest, SnapshotChunk,
};
use futures::{Stream, StreamExt};
use serde::Serialize;

use crate::codec::{decode, encode};
use crate::groups::Groups;
use crate::types::typ::{Snapshot, SnapshotMeta, Vote};
use crate::types::GroupId;

fn reply<T: Serialize, E: std::fmt::Display>(r: Result<T, E>) -> RaftReply {
    RaftReply {
        payload: encode(&r.map_err(|e| e.to_string())),
        error: String::new(),
    }
}

fn refuse(msg: impl Into<String>) -> RaftReply {
    RaftReply {
        payload: Vec::new(),
        error: msg.into(),
    }
}

impl Groups {
    /// Handles one Raft RPC for one of this node's groups.
    pub async fn handle_raft(&self, req: RaftRequest) -> RaftReply {
        self.dispatch(req.group, req.kind, &req.payload).await
    }

    /// Handles a batch of heartbeats, one reply per item in order.
    pub async fn handle_heartbeats(&self, batch: HeartbeatBatch) -> HeartbeatBatchReply {
        let replies = batch.items.into_iter().map(|hb| async move {
            self.dispatch(hb.group, RaftKind::Append as i32, &hb.payload)
                .await
        });
        HeartbeatBatchReply {
            items: futures::future::join_all(replies).await,
        }
    }

    async fn dispatch(&self, group: GroupId, kind: i32, payload: &[u8]) -> RaftReply {
        let Some(raft) = self.get(group) else {
            return refuse(format!(
                "group {group} is not hosted on node {}",
                self.node_id()
            ));
        };
        macro_rules! call {
            ($method:ident) => {
                match decode(payload) {
                    Ok(req) => reply(raft.$method(req).await),
                    Err(e) => refuse(format!("malformed raft payload: {e}")),
                }
            };
        }
        match RaftKind::try_from(kind) {
            Ok(RaftKind::Append) => call!(append_entries),
            Ok(RaftKind::Vote) => call!(vote),
            Ok(RaftKind::PreVote) => call!(pre_vote),
            Ok(RaftKind::TransferLeader) => match decode(payload) {
                Ok(req) => reply(raft.handle_transfer_leader(req).await),
                Err(e) => refuse(format!("malformed raft payload: {e}")),
            },
            Err(_) => refuse(format!("unknown raft rpc kind {kind}")),
        }
    }

    /// Receives a streamed snapshot and installs it.
    pub async fn handle_snapshot<S>(&self, mut chunks: S) -> RaftReply
    where
        S: Stream<Item = Result<SnapshotChunk, tonic::Status>> + Unpin,
    {
        let mut group = None;
        let mut head: Option<(Vote, SnapshotMeta)> = None;
        let mut data = Vec::new();
        while let Some(chunk) = chunks.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(s) => return refuse(format!("snapshot stream broke: {s}")),
            };
            group.get_or_insert(chunk.group);
            if !chunk.meta.is_empty() {
                match decode(&chunk.meta) {
                    Ok(h) => head = Some(h),
                    Err(e) => return refuse(format!("malformed snapshot meta: {e}")),
                }
            }
            data.extend_from_slice(&chunk.data);
        }
        let (Some(group), Some((vote, meta))) = (group, head) else {
            return refuse("snapshot stream without metadata");
        };
        let Some(raft) = self.get(group) else {
            return refuse(format!(
                "group {group} is not hosted on node {}",
                self.node_id()
            ));
        };
        let snapshot = Snapshot {
            meta,
            snapshot: std::io::Cursor::new(data),
        };
        reply(raft.install_full_snapshot(vote, snapshot).await)
    }
}
