//! What each node reports of its groups, and the cluster-wide status assembled from those
//! reports and the shard map (served by `/v1/cluster/status` and `conclave status`).

use openraft::async_runtime::WatchReceiver;
use std::collections::BTreeMap;
use std::time::Duration;

use conclave_proto::peer::LocalStatusRequest;
use conclave_raft::codec::decode;
use conclave_raft::{GroupId, Groups, NodeId, META_GROUP};
use serde::{Deserialize, Serialize};

/// One group as seen by one node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupStatus {
    /// The group.
    pub group: GroupId,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// The current term.
    pub term: u64,
    /// Index of the last log entry.
    pub last_log: u64,
    /// Index of the last applied entry.
    pub applied: u64,
    /// Voters in this node's latest membership config.
    pub voters: Vec<NodeId>,
    /// Learners in it.
    pub learners: Vec<NodeId>,
    /// On the leader: each follower's matched index.
    pub matched: BTreeMap<NodeId, u64>,
}

/// A node's report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalStatus {
    /// The reporting node.
    pub node_id: NodeId,
    /// Its groups.
    pub groups: Vec<GroupStatus>,
    /// Coalesced heartbeat RPCs this node has sent.
    pub heartbeat_batches: u64,
    /// Group heartbeats those RPCs carried.
    pub heartbeat_items: u64,
}

/// This node's report.
pub fn local_status(groups: &Groups) -> LocalStatus {
    let mut out = Vec::new();
    for g in groups.hosted() {
        let Some(raft) = groups.get(g) else { continue };
        let m = raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        out.push(GroupStatus {
            group: g,
            leader: m.current_leader,
            term: m.current_term,
            last_log: m.last_log_index.unwrap_or(0),
            applied: m.last_applied.as_ref().map_or(0, |l| l.index()),
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            matched: m
                .replication
                .as_ref()
                .map(|r| {
                    r.iter()
                        .map(|(id, l)| (*id, l.as_ref().map_or(0, |l| l.index())))
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    let (heartbeat_batches, heartbeat_items) = groups.heartbeat_stats();
    LocalStatus {
        node_id: groups.node_id(),
        groups: out,
        heartbeat_batches,
        heartbeat_items,
    }
}

/// Asks every known node for its report, `timeout` each, in parallel. Unreachable nodes are
/// missing from the result.
pub async fn gather(groups: &Groups, timeout: Duration) -> BTreeMap<NodeId, LocalStatus> {
    let me = groups.node_id();
    let nodes: Vec<(NodeId, String)> = groups
        .meta_snapshot()
        .nodes
        .values()
        .map(|n| (n.id, n.info.peer_addr.clone()))
        .collect();
    let calls = nodes.into_iter().map(|(id, addr)| async move {
        if id == me {
            return Some((id, local_status(groups)));
        }
        let mut client = groups.peers().client(&addr).ok()?;
        let reply = tokio::time::timeout(timeout, client.local_status(LocalStatusRequest {}))
            .await
            .ok()?
            .ok()?;
        decode::<LocalStatus>(&reply.into_inner().status)
            .ok()
            .map(|s| (id, s))
    });
    futures::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// A node in the cluster status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeView {
    /// Its id.
    pub id: NodeId,
    /// Peer address.
    pub peer_addr: String,
    /// Client API address.
    pub api_addr: String,
    /// `active`, `draining` or `removed`.
    pub state: conclave_raft::meta::NodeState,
    /// Whether it answered just now.
    pub alive: bool,
    /// Coalesced heartbeat RPCs it has sent (when it answered).
    pub heartbeat_batches: Option<u64>,
    /// Group heartbeats those RPCs carried.
    pub heartbeat_items: Option<u64>,
}

/// The meta group in the cluster status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetaView {
    /// Its leader.
    pub leader: Option<NodeId>,
    /// Its voters.
    pub voters: Vec<NodeId>,
    /// Its learners.
    pub learners: Vec<NodeId>,
}

/// A shard in the cluster status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardView {
    /// The shard's group id.
    pub id: GroupId,
    /// Replicas in the shard map.
    pub replicas: Vec<NodeId>,
    /// Its leader, as reported by a node that leads it.
    pub leader: Option<NodeId>,
    /// Voters in the leader's membership config.
    pub voters: Vec<NodeId>,
    /// The leader's applied index.
    pub applied: u64,
    /// Per replica: how many entries it is behind the leader's log.
    pub lag: BTreeMap<NodeId, u64>,
    /// Per replica: its applied index as it reports it.
    pub replica_applied: BTreeMap<NodeId, u64>,
    /// A move in progress.
    pub moving: Option<conclave_raft::meta::ShardMove>,
}

/// The whole cluster as seen from one node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The answering node.
    pub node_id: NodeId,
    /// Every node.
    pub nodes: Vec<NodeView>,
    /// The meta group.
    pub meta: MetaView,
    /// Every data shard.
    pub shards: Vec<ShardView>,
}

/// Assembles the cluster status from the shard map and every node's report.
pub async fn cluster_status(groups: &Groups) -> ClusterStatus {
    let reports = gather(groups, Duration::from_millis(800)).await;
    let meta = groups.meta_snapshot();
    let view_of = |g: GroupId| -> Option<&GroupStatus> {
        reports
            .values()
            .flat_map(|r| {
                r.groups
                    .iter()
                    .filter(move |s| s.group == g && s.leader == Some(r.node_id))
            })
            .max_by_key(|s| s.term)
    };
    let nodes = meta
        .nodes
        .values()
        .map(|n| NodeView {
            id: n.id,
            peer_addr: n.info.peer_addr.clone(),
            api_addr: n.info.api_addr.clone(),
            state: n.state,
            alive: reports.contains_key(&n.id),
            heartbeat_batches: reports.get(&n.id).map(|r| r.heartbeat_batches),
            heartbeat_items: reports.get(&n.id).map(|r| r.heartbeat_items),
        })
        .collect();
    let meta_view = match view_of(META_GROUP) {
        Some(s) => MetaView {
            leader: s.leader,
            voters: s.voters.clone(),
            learners: s.learners.clone(),
        },
        None => MetaView {
            leader: None,
            voters: Vec::new(),
            learners: Vec::new(),
        },
    };
    let shards = meta
        .shards
        .iter()
        .map(|(id, rec)| {
            let leader = view_of(*id);
            let last_log = leader.map_or(0, |s| s.last_log);
            let replica_applied: BTreeMap<NodeId, u64> = reports
                .values()
                .flat_map(|r| {
                    r.groups
                        .iter()
                        .filter(|s| s.group == *id)
                        .map(|s| (r.node_id, s.applied))
                })
                .collect();
            let lag = match leader {
                Some(l) => rec
                    .replicas
                    .iter()
                    .map(|n| {
                        let matched = if Some(*n) == l.leader {
                            l.last_log
                        } else {
                            l.matched.get(n).copied().unwrap_or(0)
                        };
                        (*n, last_log.saturating_sub(matched))
                    })
                    .collect(),
                None => BTreeMap::new(),
            };
            ShardView {
                id: *id,
                replicas: rec.replicas.iter().copied().collect(),
                leader: leader.and_then(|s| s.leader),
                voters: leader.map(|s| s.voters.clone()).unwrap_or_default(),
                applied: leader.map_or(0, |s| s.applied),
                lag,
                replica_applied,
                moving: rec.moving.clone(),
            }
        })
        .collect();
    ClusterStatus {
        node_id: groups.node_id(),
        nodes,
        meta: meta_view,
        shards,
    }
}
