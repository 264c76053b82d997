//! The placement controller: runs on the meta leader, keeps the meta group's voters and
//! learners in line with the nodes, drives replica moves and leadership transfers, and retires
//! drained nodes.
//!
//! Every step is idempotent and every move is recorded in the meta group before it starts, so a
//! new meta leader picks up a half-done move where the old one left it.

use openraft::async_runtime::WatchReceiver;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conclave_proto::peer::ShardAdminRequest;
use conclave_raft::codec::{decode, encode};
use conclave_raft::error::{CoreError, ErrorCode};
use conclave_raft::membership::wait_caught_up;
use conclave_raft::meta::{MetaState, NodeState};
use conclave_raft::{GroupId, Groups, MetaCommand, NodeId, NodeInfo, Raft, META_GROUP};
use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};

use crate::placement::{plan, NodeHealth, Step, View};
use crate::router::Router;
use crate::status::{gather, LocalStatus};

/// Controller timings.
#[derive(Debug, Clone)]
pub struct ControllerSettings {
    /// Period of one control round.
    pub tick: Duration,
    /// A node silent this long is dead: its replicas are re-created elsewhere.
    pub dead_after: Duration,
    /// Replica moves in progress at once, cluster-wide.
    pub max_moves: usize,
    /// Leadership transfers started per round.
    pub max_transfers: usize,
}

impl Default for ControllerSettings {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(1),
            dead_after: Duration::from_secs(30),
            max_moves: 4,
            max_transfers: 2,
        }
    }
}

/// How long one [`ShardAction::ApplyMove`] waits for its new replica to catch up before it
/// reports the move unfinished; the next control round waits again (with a new target). Short,
/// because the control round waits for it: a replica streaming a snapshot or a long log takes
/// several rounds, and dead nodes are still noticed between them.
const CATCH_UP_WAIT: Duration = Duration::from_secs(3);

/// How long a control round waits for a meta learner to catch up before making it a voter;
/// the meta log is small, so a live learner is there within a round.
const PROMOTE_WAIT: Duration = Duration::from_secs(1);

/// Work a shard's leader does for the controller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ShardAction {
    /// Add `add` as a voter (through learner catch-up) and/or remove `remove`.
    ApplyMove {
        add: Option<(NodeId, NodeInfo)>,
        remove: Option<NodeId>,
    },
    /// Hand leadership to `to`.
    TransferLeader { to: NodeId },
    /// Drop `node` from the group if it is only a learner; refused with
    /// [`ErrorCode::Conflict`] if it already votes.
    CancelAdd { node: NodeId },
}

/// Runs `action` on `group`, which this node must lead. Idempotent.
pub async fn run_shard_action(
    groups: &Groups,
    group: GroupId,
    action: ShardAction,
) -> Result<(), CoreError> {
    let raft = groups
        .get(group)
        .ok_or_else(|| CoreError::not_found(format!("group {group} is not hosted here")))?;
    if !raft.is_leader() {
        return Err(CoreError::unavailable(format!(
            "not the leader of group {group}"
        )));
    }
    let err = |e: String| CoreError::unavailable(e);
    match action {
        ShardAction::ApplyMove { add, remove } => {
            let voters: BTreeSet<NodeId> = voter_ids(&raft);
            if let Some((id, info)) = add {
                if !voters.contains(&id) {
                    if !member_ids(&raft).contains(&id) {
                        raft.add_learner(id, info, false)
                            .await
                            .map_err(|e| err(e.to_string()))?;
                    }
                    wait_caught_up(&raft, group, id, CATCH_UP_WAIT).await?;
                    raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                        .await
                        .map_err(|e| err(e.to_string()))?;
                }
            }
            if let Some(id) = remove {
                let voters: BTreeSet<NodeId> = voter_ids(&raft);
                if voters.contains(&id) {
                    raft.change_membership(
                        ChangeMembers::RemoveVoters(BTreeSet::from([id])),
                        false,
                    )
                    .await
                    .map_err(|e| err(e.to_string()))?;
                }
            }
            Ok(())
        }
        ShardAction::TransferLeader { to } => raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| err(e.to_string())),
        ShardAction::CancelAdd { node } => {
            if voter_ids(&raft).contains(&node) {
                return Err(CoreError::conflict(format!(
                    "node {node} already votes in group {group}"
                )));
            }
            if member_ids(&raft).contains(&node) {
                raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([node])), false)
                    .await
                    .map_err(|e| err(e.to_string()))?;
            }
            Ok(())
        }
    }
}

/// The controller of one node; it acts only while the node leads the meta group.
pub struct Controller {
    router: Arc<Router>,
    settings: ControllerSettings,
    last_seen: HashMap<NodeId, Instant>,
}

impl Controller {
    /// A controller routing its meta writes through `router`.
    pub fn new(router: Arc<Router>, settings: ControllerSettings) -> Self {
        Self {
            router,
            settings,
            last_seen: HashMap::new(),
        }
    }

    /// Runs control rounds until the task is dropped.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(self.settings.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.round().await {
                tracing::debug!(error = %e.message, "control round incomplete");
            }
        }
    }

    fn groups(&self) -> &Groups {
        self.router.groups()
    }

    async fn round(&mut self) -> Result<(), CoreError> {
        let Some(meta_raft) = self.groups().get(META_GROUP) else {
            return Ok(());
        };
        if !meta_raft.is_leader() {
            self.last_seen.clear();
            return Ok(());
        }
        let meta = self.groups().meta_snapshot();
        if !meta.bootstrapped {
            return Ok(());
        }
        let reports = gather(self.groups(), Duration::from_millis(500)).await;
        let now = Instant::now();
        for id in meta.nodes.keys() {
            if reports.contains_key(id) {
                self.last_seen.insert(*id, now);
            } else {
                // A node first seen missing gets the full grace period from now.
                self.last_seen.entry(*id).or_insert(now);
            }
        }
        let alive: BTreeSet<NodeId> = meta
            .nodes
            .keys()
            .filter(|id| {
                self.last_seen
                    .get(id)
                    .is_some_and(|t| now.duration_since(*t) < self.settings.dead_after)
            })
            .copied()
            .collect();

        self.reconcile_meta_membership(&meta, &alive).await?;

        let leaders = leaders(&reports);
        let view = View {
            nodes: meta
                .nodes
                .values()
                .map(|n| {
                    (
                        n.id,
                        NodeHealth {
                            state: n.state,
                            alive: alive.contains(&n.id),
                        },
                    )
                })
                .collect(),
            shards: meta.shards.clone(),
            leaders: leaders.clone(),
        };
        // Moves recorded earlier (perhaps by a previous meta leader) and new ones are driven
        // together, concurrently: each waits for its learner to catch up.
        let mut moves: Vec<(GroupId, u64, Option<NodeId>, Option<NodeId>)> = meta
            .shards
            .iter()
            .filter_map(|(id, rec)| {
                rec.moving
                    .as_ref()
                    .map(|m| (*id, rec.epoch, m.add, m.remove))
            })
            .collect();
        let mut transfers = Vec::new();
        for step in plan(&view, self.settings.max_moves, self.settings.max_transfers) {
            match step {
                Step::Move {
                    shard,
                    epoch,
                    add,
                    remove,
                } => {
                    tracing::info!(shard, ?add, ?remove, "starting replica move");
                    self.meta_write(MetaCommand::BeginMove {
                        shard,
                        epoch,
                        add,
                        remove,
                    })
                    .await?;
                    moves.push((shard, epoch, add, remove));
                }
                Step::TransferLeader { shard, to } => transfers.push((shard, to)),
            }
        }
        let this = &*self;
        let drives = moves.iter().map(|(shard, epoch, add, remove)| {
            let (meta, leaders, alive) = (&meta, &leaders, &alive);
            async move {
                let leader = leaders.get(shard);
                let driven = match add {
                    // Its new replica's node died: the replica will never catch up.
                    Some(node) if !alive.contains(node) => {
                        this.abandon_move(meta, *shard, *epoch, *node, *remove, leader)
                            .await
                    }
                    _ => {
                        this.drive_move(meta, *shard, *epoch, *add, *remove, leader)
                            .await
                    }
                };
                if let Err(e) = driven {
                    tracing::info!(shard, error = %e.message, "move not finished yet");
                }
            }
        });
        futures::future::join_all(drives).await;
        for (shard, to) in transfers {
            if let Some(leader) = leaders.get(&shard) {
                tracing::info!(shard, from = leader, to, "transferring leadership");
                let _ = self
                    .shard_action(&meta, *leader, shard, ShardAction::TransferLeader { to })
                    .await;
            }
        }

        self.retire_drained(&meta).await
    }

    async fn meta_write(&self, cmd: MetaCommand) -> Result<(), CoreError> {
        self.router.execute_meta(cmd).await.map(|_| ())
    }

    async fn drive_move(
        &self,
        meta: &MetaState,
        shard: GroupId,
        epoch: u64,
        add: Option<NodeId>,
        remove: Option<NodeId>,
        leader: Option<&NodeId>,
    ) -> Result<(), CoreError> {
        let leader = *leader
            .ok_or_else(|| CoreError::unavailable(format!("shard {shard} has no leader")))?;
        let add = match add {
            Some(id) => Some((
                id,
                meta.nodes
                    .get(&id)
                    .map(|n| n.info.clone())
                    .ok_or_else(|| CoreError::not_found("node"))?,
            )),
            None => None,
        };
        self.shard_action(meta, leader, shard, ShardAction::ApplyMove { add, remove })
            .await?;
        self.meta_write(MetaCommand::FinishMove { shard, epoch })
            .await?;
        tracing::info!(shard, "replica move finished");
        Ok(())
    }

    /// Ends a move whose new replica is on the dead node `add`: the shard's leader drops that
    /// learner and the meta group records the move cancelled, so the planner can place the
    /// replica elsewhere. If the node already votes in the shard, the move is finished as
    /// planned instead, and the dead node's replica is replaced like any other.
    async fn abandon_move(
        &self,
        meta: &MetaState,
        shard: GroupId,
        epoch: u64,
        add: NodeId,
        remove: Option<NodeId>,
        leader: Option<&NodeId>,
    ) -> Result<(), CoreError> {
        let leader_id = *leader
            .ok_or_else(|| CoreError::unavailable(format!("shard {shard} has no leader")))?;
        let cancel = ShardAction::CancelAdd { node: add };
        match self.shard_action(meta, leader_id, shard, cancel).await {
            Ok(()) => {
                self.meta_write(MetaCommand::CancelMove { shard, epoch })
                    .await?;
                tracing::info!(
                    shard,
                    node = add,
                    "replica move abandoned: its node is dead"
                );
                Ok(())
            }
            Err(e) if e.code == ErrorCode::Conflict => {
                self.drive_move(meta, shard, epoch, Some(add), remove, leader)
                    .await
            }
            Err(e) => Err(e),
        }
    }

    async fn shard_action(
        &self,
        meta: &MetaState,
        leader: NodeId,
        shard: GroupId,
        action: ShardAction,
    ) -> Result<(), CoreError> {
        if leader == self.groups().node_id() {
            return run_shard_action(self.groups(), shard, action).await;
        }
        let addr = meta
            .nodes
            .get(&leader)
            .map(|n| n.info.peer_addr.clone())
            .ok_or_else(|| CoreError::not_found("leader address"))?;
        let mut client = self
            .groups()
            .peers()
            .client(&addr)
            .map_err(|e| CoreError::unavailable(e.to_string()))?;
        let req = ShardAdminRequest {
            group: shard,
            action: encode(&action),
        };
        let reply = tokio::time::timeout(Duration::from_secs(30), client.shard_admin(req))
            .await
            .map_err(|_| CoreError::unavailable("shard admin timed out"))?
            .map_err(|s| CoreError::unavailable(s.to_string()))?;
        decode::<Result<(), CoreError>>(&reply.into_inner().result)
            .map_err(|e| CoreError::internal(e.to_string()))?
    }

    /// Voters: up to three eligible nodes, current ones first; every other node a learner.
    async fn reconcile_meta_membership(
        &self,
        meta: &MetaState,
        alive: &BTreeSet<NodeId>,
    ) -> Result<(), CoreError> {
        let Some(raft) = self.groups().get(META_GROUP) else {
            return Ok(());
        };
        let membership = raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .clone();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members: BTreeSet<NodeId> = membership.nodes().map(|(id, _)| *id).collect();
        let err = |e: String| CoreError::unavailable(e);

        for n in meta
            .nodes
            .values()
            .filter(|n| n.state != NodeState::Removed && !members.contains(&n.id))
        {
            tracing::info!(node = n.id, "adding node to the meta group as a learner");
            raft.add_learner(n.id, n.info.clone(), false)
                .await
                .map_err(|e| err(e.to_string()))?;
        }
        let eligible = |id: &NodeId| {
            alive.contains(id)
                && meta
                    .nodes
                    .get(id)
                    .is_some_and(|n| n.state == NodeState::Active)
        };
        let mut desired: BTreeSet<NodeId> =
            voters.iter().filter(|v| eligible(v)).copied().collect();
        for id in members.iter().filter(|id| eligible(id)) {
            if desired.len() >= 3 {
                break;
            }
            // A learner votes only once it holds the meta log: a node that joined and went
            // silent must not become a voter the group then waits for.
            if voters.contains(id)
                || wait_caught_up(&raft, META_GROUP, *id, PROMOTE_WAIT)
                    .await
                    .is_ok()
            {
                desired.insert(*id);
            }
        }
        // Keep dead voters while no replacement exists: removing them gains nothing.
        for v in &voters {
            if desired.len() >= 3 {
                break;
            }
            if meta
                .nodes
                .get(v)
                .is_some_and(|n| n.state == NodeState::Active)
            {
                desired.insert(*v);
            }
        }
        if !desired.is_empty() && desired != voters && desired.iter().all(|d| members.contains(d)) {
            tracing::info!(?voters, ?desired, "changing meta voters");
            raft.change_membership(ChangeMembers::ReplaceAllVoters(desired), true)
                .await
                .map_err(|e| err(e.to_string()))?;
        }
        Ok(())
    }

    /// Marks drained nodes removed and drops them from the meta group.
    async fn retire_drained(&self, meta: &MetaState) -> Result<(), CoreError> {
        let Some(raft) = self.groups().get(META_GROUP) else {
            return Ok(());
        };
        for n in meta
            .nodes
            .values()
            .filter(|n| n.state == NodeState::Draining)
        {
            if meta.shards.values().any(|s| s.hosts(n.id)) {
                continue;
            }
            let voters: BTreeSet<NodeId> = voter_ids(&raft);
            if voters.contains(&n.id) {
                continue;
            }
            tracing::info!(node = n.id, "node drained; removing it");
            self.meta_write(MetaCommand::SetNodeState {
                id: n.id,
                state: NodeState::Removed,
            })
            .await?;
            raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([n.id])), false)
                .await
                .map_err(|e| CoreError::unavailable(e.to_string()))?;
        }
        Ok(())
    }
}

/// Every member (voter or learner) of `raft`'s latest membership config.
fn member_ids(raft: &Raft) -> BTreeSet<NodeId> {
    raft.metrics()
        .borrow_watched()
        .membership_config
        .membership()
        .nodes()
        .map(|(id, _)| *id)
        .collect()
}

/// The voters of `raft`'s latest membership config.
fn voter_ids(raft: &Raft) -> BTreeSet<NodeId> {
    raft.metrics()
        .borrow_watched()
        .membership_config
        .membership()
        .voter_ids()
        .collect()
}

/// Each group's leader, as reported by the node leading it (highest term wins).
fn leaders(reports: &BTreeMap<NodeId, LocalStatus>) -> BTreeMap<GroupId, NodeId> {
    let mut best: BTreeMap<GroupId, (u64, NodeId)> = BTreeMap::new();
    for r in reports.values() {
        for g in r
            .groups
            .iter()
            .filter(|g| g.leader == Some(r.node_id) && g.group != META_GROUP)
        {
            let e = best.entry(g.group).or_insert((g.term, r.node_id));
            if g.term > e.0 {
                *e = (g.term, r.node_id);
            }
        }
    }
    best.into_iter().map(|(g, (_, n))| (g, n)).collect()
}
