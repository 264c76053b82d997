//! Routes a request to its group's leader: runs it on the local actor when this node leads the
//! group, otherwise forwards it to the leader's router.
//!
//! The leader comes from the local Raft's metrics when this node hosts the group, else from a
//! hint learned from earlier answers, else from the group's replicas in the shard map. A stale
//! target answers "not leader, try N"; the router follows such hints and retries while the
//! group elects a leader, within a bounded budget. Writes whose outcome became unknown are not
//! retried. In-flight work per shard is bounded by a semaphore (ractor mailboxes are not).

use openraft::async_runtime::WatchReceiver;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conclave_raft::command::{Command, Proposal, Response};
use conclave_raft::error::CoreError;
use conclave_raft::shard::query;
use conclave_raft::storage::GroupKv;
use conclave_raft::{
    GroupId, Groups, MetaCommand, MetaResponse, NodeId, ShardQuery, ShardReadResult, TypeConfig,
    META_GROUP,
};
use openraft::errors::ClientWriteError;
use openraft::impls::ProgressResponder;
use openraft::raft::ClientWriteResult;
use openraft::ReadPolicy;
use tokio::sync::Semaphore;

use crate::entity_actor::{actor_key, ActorRegistry, EntityMsg};
use crate::forwarder::{ForwardError, Forwarder};
use crate::presence::{PresenceRegistry, PresenceTimeouts};
use crate::request::{ClientRequest, ClientResponse, ForwardResult};

/// Router limits.
#[derive(Debug, Clone)]
pub struct RouterSettings {
    /// How long a request may keep looking for a leader.
    pub retry_budget: Duration,
    /// Requests running at once per shard on its leader; more wait up to `queue_wait`.
    pub max_inflight_per_shard: usize,
    /// How long a request waits for an in-flight slot before it is refused as overloaded.
    pub queue_wait: Duration,
    /// An online agent with no heartbeat for this long goes offline, unless its workspace
    /// sets its own `presence_timeout_secs`.
    pub presence_timeout: Duration,
}

impl Default for RouterSettings {
    fn default() -> Self {
        Self {
            retry_budget: Duration::from_secs(10),
            max_inflight_per_shard: 2048,
            queue_wait: Duration::from_secs(2),
            presence_timeout: Duration::from_secs(30),
        }
    }
}

/// The node's request router.
pub struct Router {
    groups: Groups,
    actors: ActorRegistry,
    presence: PresenceRegistry,
    /// Shards this node led at the last tick (newly led ones adopt their online agents).
    led: Mutex<HashSet<GroupId>>,
    forwarder: Arc<dyn Forwarder>,
    settings: RouterSettings,
    hints: Mutex<HashMap<GroupId, NodeId>>,
    inflight: Mutex<HashMap<GroupId, Arc<Semaphore>>>,
}

impl Router {
    /// A router over this node's `groups`, reaching other nodes through `forwarder`.
    pub fn new(
        groups: Groups,
        forwarder: Arc<dyn Forwarder>,
        settings: RouterSettings,
    ) -> Arc<Self> {
        let timeouts = PresenceTimeouts::new(settings.presence_timeout, groups.meta().clone());
        let router = Arc::new(Self {
            groups,
            actors: ActorRegistry::default(),
            presence: PresenceRegistry::new(timeouts),
            led: Mutex::default(),
            forwarder,
            settings,
            hints: Mutex::default(),
            inflight: Mutex::default(),
        });
        crate::leases::spawn(Arc::downgrade(&router));
        let weak = Arc::downgrade(&router);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(router) = weak.upgrade() else { return };
                let groups = router.groups.clone();
                let stopped = router
                    .actors
                    .sweep(|g| groups.get(g).is_some_and(|r| r.is_leader()));
                if stopped > 0 {
                    tracing::debug!(stopped, live = router.actors.len(), "swept entity actors");
                }
                router.presence_tick();
            }
        });
        router
    }

    /// Stops presence actors of shards no longer led, on shards newly led adopts the agents
    /// stored online (each gets a full presence timeout from now), and pokes the actors of
    /// workspaces whose presence timeout changed.
    fn presence_tick(&self) {
        let poked = self.presence.retime();
        if poked > 0 {
            tracing::debug!(actors = poked, "presence timeout changed");
        }
        let led: HashSet<GroupId> = self.groups.led_shards().into_iter().collect();
        self.presence.sweep(|g| led.contains(&g));
        let gained: Vec<GroupId> = {
            let mut before = self.led.lock().expect("led lock");
            let gained = led.difference(&before).copied().collect();
            *before = led;
            gained
        };
        for group in gained {
            let Some(raft) = self.groups.get(group) else {
                continue;
            };
            let presence = self.presence.clone();
            let db = self.groups.db().clone();
            tokio::spawn(async move {
                match presence.adopt(group, &raft, &db).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(shard = group, agents = n, "adopted online agents"),
                    Err(e) => {
                        tracing::warn!(shard = group, error = %e, "adopting online agents failed")
                    }
                }
            });
        }
    }

    /// The presence timeout of `ws`'s agents: the workspace's setting, else this node's.
    pub fn presence_timeout(&self, ws: &str) -> Duration {
        self.presence.timeouts().of(ws)
    }

    /// This node's presence timeout, for workspaces that set none.
    pub fn node_presence_timeout(&self) -> Duration {
        self.presence.timeouts().node()
    }

    /// This node's groups.
    pub fn groups(&self) -> &Groups {
        &self.groups
    }

    /// Number of live entity actors on this node.
    pub fn actor_count(&self) -> usize {
        self.actors.len()
    }

    /// The data shard of `(ws, kind, name)`, or `None` before the cluster is bootstrapped.
    pub fn shard_of(&self, ws: &str, kind: &str, name: &str) -> Option<GroupId> {
        let count = self.groups.meta().read().expect("meta lock").shard_count;
        (count > 0).then(|| crate::entity::shard_for(ws, kind, name, count))
    }

    /// The leader of `group` as this node knows it.
    pub fn leader_of(&self, group: GroupId) -> Option<NodeId> {
        if let Some(raft) = self.groups.get(group) {
            if let Some(l) = raft.metrics().borrow_watched().current_leader {
                return Some(l);
            }
        }
        self.hints.lock().expect("hints lock").get(&group).copied()
    }

    /// Runs `req` on `group`'s leader, wherever it is. The first shard write of an audited
    /// call carries the call's audit record (see [`crate::audit_call`]).
    pub async fn execute(
        &self,
        group: GroupId,
        req: ClientRequest,
    ) -> Result<ClientResponse, CoreError> {
        let ClientRequest::Write(cmd) = req else {
            return self.run(group, req).await;
        };
        let (cmd, wrapped) = crate::audit_call::wrap(cmd);
        let outcome = self.run(group, ClientRequest::Write(cmd)).await;
        if wrapped {
            crate::audit_call::settle(group, &outcome);
        }
        outcome
    }

    /// [`Self::execute`] without the audit record.
    async fn run(&self, group: GroupId, req: ClientRequest) -> Result<ClientResponse, CoreError> {
        let deadline = Instant::now() + self.settings.retry_budget;
        let mut backoff = Duration::from_millis(20);
        let mut last_error = String::from("no leader known");
        for attempt in 0usize.. {
            let target = self.pick_target(group, attempt);
            let outcome = match target {
                Some(id) if id == self.groups.node_id() => {
                    Ok(self.execute_local(group, &req).await)
                }
                Some(id) => match self.node_addr(id) {
                    Some(addr) => self.forwarder.forward(&addr, group, &req).await,
                    None => Err(ForwardError::NotSent(format!(
                        "node {id} has no known address"
                    ))),
                },
                None => Err(ForwardError::NotSent("no replica known".to_string())),
            };
            match outcome {
                Ok(ForwardResult::Done(result)) => {
                    if let Some(t) = target {
                        self.hints.lock().expect("hints lock").insert(group, t);
                    }
                    return result;
                }
                Ok(ForwardResult::NotLeader { hint }) => {
                    last_error = format!("node {target:?} is not the leader of group {group}");
                    let fresh = hint.is_some() && hint != target;
                    let mut hints = self.hints.lock().expect("hints lock");
                    match hint {
                        Some(h) if fresh => {
                            hints.insert(group, h);
                        }
                        _ => {
                            hints.remove(&group);
                        }
                    }
                    drop(hints);
                    if fresh && attempt < 3 {
                        continue;
                    }
                }
                Err(e) => {
                    self.hints.lock().expect("hints lock").remove(&group);
                    // A write that may have reached its leader is not sent again.
                    if let (ForwardError::Unknown(m), false) = (
                        &e,
                        matches!(req, ClientRequest::Read(_) | ClientRequest::MetaReadIndex),
                    ) {
                        return Err(CoreError::unavailable(format!(
                            "outcome unknown: the node handling group {group} failed: {m}"
                        )));
                    }
                    last_error = e.to_string();
                }
            }
            if Instant::now() + backoff > deadline {
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(400));
        }
        Err(CoreError::unavailable(format!(
            "group {group} has no reachable leader: {last_error}"
        )))
    }

    /// Runs a meta command on the meta leader; a refusal is an error, so no caller can mistake
    /// it for success.
    pub async fn execute_meta(&self, cmd: MetaCommand) -> Result<MetaResponse, CoreError> {
        match self.execute(META_GROUP, ClientRequest::Meta(cmd)).await? {
            ClientResponse::Meta(MetaResponse::Refused(e)) => Err(e),
            ClientResponse::Meta(resp) => Ok(resp),
            other => Err(CoreError::internal(format!(
                "unexpected meta response {other:?}"
            ))),
        }
    }

    /// Waits until this node's meta replica reflects every meta write committed before the
    /// call: asks the meta leader (wherever it is) for a linearizable read index, then waits,
    /// at most `timeout`, for the local replica to apply up to it. Reads of the local meta
    /// state after this see the writes any node acknowledged before.
    pub async fn meta_barrier(&self, timeout: Duration) -> Result<(), CoreError> {
        let index = match self
            .execute(META_GROUP, ClientRequest::MetaReadIndex)
            .await?
        {
            ClientResponse::ReadIndex(i) => i,
            other => {
                return Err(CoreError::internal(format!(
                    "unexpected read index response {other:?}"
                )))
            }
        };
        let watch = self
            .groups
            .applied_watch(META_GROUP)
            .ok_or_else(|| CoreError::unavailable("this node does not host the meta group yet"))?;
        let mut rx = watch.subscribe();
        let reached = tokio::time::timeout(timeout, async {
            rx.wait_for(|applied| *applied >= index).await.is_ok()
        })
        .await;
        match reached {
            Ok(true) => Ok(()),
            Ok(false) => Err(CoreError::unavailable(
                "the meta group stopped on this node",
            )),
            Err(_) => Err(CoreError::unavailable(format!(
                "this node's meta replica did not reach index {index} in time; retry"
            ))),
        }
    }

    fn pick_target(&self, group: GroupId, attempt: usize) -> Option<NodeId> {
        if let Some(l) = self.leader_of(group) {
            return Some(l);
        }
        let meta = self.groups.meta().read().expect("meta lock");
        let candidates: Vec<NodeId> = if group == META_GROUP {
            meta.nodes.keys().copied().collect()
        } else {
            meta.shards
                .get(&group)
                .map(|s| s.replicas.iter().copied().collect())
                .unwrap_or_default()
        };
        (!candidates.is_empty()).then(|| candidates[attempt % candidates.len()])
    }

    fn node_addr(&self, id: NodeId) -> Option<String> {
        self.groups
            .meta()
            .read()
            .expect("meta lock")
            .nodes
            .get(&id)
            .map(|n| n.info.peer_addr.clone())
    }

    fn semaphore(&self, group: GroupId) -> Arc<Semaphore> {
        self.inflight
            .lock()
            .expect("inflight lock")
            .entry(group)
            .or_insert_with(|| Arc::new(Semaphore::new(self.settings.max_inflight_per_shard)))
            .clone()
    }

    /// Runs `req` here if this node leads `group`; otherwise says who does.
    pub async fn execute_local(&self, group: GroupId, req: &ClientRequest) -> ForwardResult {
        let me = self.groups.node_id();
        let Some(raft) = self.groups.get(group) else {
            return ForwardResult::NotLeader { hint: None };
        };
        let leader = raft.metrics().borrow_watched().current_leader;
        if leader != Some(me) {
            return ForwardResult::NotLeader { hint: leader };
        }
        let Ok(Ok(_permit)) = tokio::time::timeout(
            self.settings.queue_wait,
            self.semaphore(group).acquire_owned(),
        )
        .await
        else {
            return ForwardResult::Done(Err(CoreError::unavailable(format!(
                "shard {group} is overloaded; retry"
            ))));
        };
        match req {
            ClientRequest::Write(cmd) => {
                let actor = match self.actors.get_or_spawn(actor_key(group, cmd), &raft).await {
                    Ok(a) => a,
                    Err(e) => return ForwardResult::Done(Err(e)),
                };
                // The actor orders the proposal; Raft answers this task directly.
                let (responder, pending) = ProgressResponder::complete_only();
                if actor
                    .send_message(EntityMsg::Propose(cmd.clone(), responder))
                    .is_err()
                {
                    return ForwardResult::Done(Err(CoreError::unavailable(
                        "entity actor stopped; retry",
                    )));
                }
                match pending.await {
                    Ok(result) => map_write(result),
                    Err(_) => ForwardResult::Done(Err(CoreError::unavailable(
                        "outcome unknown: raft dropped the write before answering",
                    ))),
                }
            }
            ClientRequest::Meta(cmd) => map_write(
                raft.client_write(Proposal::now(Command::Meta(cmd.clone())))
                    .await
                    .map_err(|e| match e.into_api_error() {
                        Some(api) => api,
                        None => ClientWriteError::ForwardToLeader(
                            openraft::errors::ForwardToLeader::empty(),
                        ),
                    }),
            ),
            ClientRequest::MetaReadIndex => {
                if group != META_GROUP {
                    return ForwardResult::Done(Err(CoreError::internal(
                        "a meta read index was asked of a data shard",
                    )));
                }
                match raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
                    Ok(read) => ForwardResult::Done(Ok(ClientResponse::ReadIndex(read.index()))),
                    Err(e) => {
                        let hint = e.forward_to_leader().and_then(|f| f.leader_id);
                        ForwardResult::NotLeader {
                            hint: hint.filter(|h| *h != me),
                        }
                    }
                }
            }
            ClientRequest::Read(q) => {
                if let Err(e) = raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
                    let hint = e.forward_to_leader().and_then(|f| f.leader_id);
                    return match hint {
                        Some(h) if h != me => ForwardResult::NotLeader { hint: Some(h) },
                        _ => ForwardResult::NotLeader { hint: None },
                    };
                }
                let kv = GroupKv::new(self.groups.db(), group);
                let mut result = query(&kv, q);
                if let Ok(read) = &mut result {
                    self.show_presence(group, q, read);
                }
                ForwardResult::Done(result.map(ClientResponse::Read))
            }
            ClientRequest::Heartbeat { ws, agent } => ForwardResult::Done(
                self.presence
                    .heartbeat(group, ws, agent, &raft, self.groups.db())
                    .await
                    .map(ClientResponse::Heartbeat),
            ),
        }
    }
}

impl Router {
    /// Shows the last heartbeats this leader holds in memory on agents read from its shard.
    fn show_presence(&self, group: GroupId, q: &ShardQuery, read: &mut ShardReadResult) {
        let ws = match q {
            ShardQuery::AgentGet { ws, .. } | ShardQuery::AgentList { ws, .. } => ws,
            _ => return,
        };
        let agents = match read {
            ShardReadResult::Agent(a) => std::slice::from_mut(a),
            ShardReadResult::AgentPage(p) => p.as_mut_slice(),
            _ => return,
        };
        for a in agents {
            if let Some(t) = self.presence.last_seen(group, ws, &a.name) {
                a.last_seen_at = Some(a.last_seen_at.map_or(t, |s| s.max(t)));
            }
        }
    }
}

fn map_write(result: ClientWriteResult<TypeConfig>) -> ForwardResult {
    match result {
        Ok(resp) => ForwardResult::Done(match resp.data {
            Response::Shard(s) => Ok(ClientResponse::Write(s)),
            Response::Meta(m) => Ok(ClientResponse::Meta(m)),
            Response::None => Err(CoreError::internal(
                "command reached the wrong kind of group",
            )),
        }),
        Err(ClientWriteError::ForwardToLeader(f)) => ForwardResult::NotLeader { hint: f.leader_id },
        Err(ClientWriteError::LogEntryDiscarded(_)) => {
            ForwardResult::Done(Err(CoreError::unavailable(
                "outcome unknown: leadership changed before the write committed",
            )))
        }
        Err(e) => ForwardResult::Done(Err(CoreError::internal(e.to_string()))),
    }
}
