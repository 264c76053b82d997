//! Agent presence: one actor per agent on its shard's leader keeps the last heartbeat in memory;
//! only online↔offline transitions are proposed to Raft.
//!
//! A heartbeat reaches the actor from any node through the router (`ClientRequest::Heartbeat`)
//! and costs no Raft write unless the agent is stored offline. A timer proposes the offline
//! transition once the presence timeout has passed with no heartbeat. The actor trusts the
//! replicated status over its memory, so a disconnect, a delete or a failover never leaves it
//! believing something the state machine does not say. After a failover the new leader adopts
//! every agent stored online as freshly seen (a full grace period) rather than flipping it
//! offline at once.
//!
//! The timeout is the agent's workspace's `presence_timeout_secs` setting, read from this
//! node's meta replica, or the node's own setting while the workspace has none
//! ([`PresenceTimeouts`]). An actor reads it again on every heartbeat and check, and the
//! router's 1 s tick pokes the actors of a workspace whose timeout changed, so a change applies
//! within about a second, to agents already online too: a shorter timeout can send an agent
//! offline at once if it has been silent longer than the new value.
//!
//! The decisions are made by [`Presence`], a plain struct driven by an injected clock; the actor
//! around it only reads the stored status, proposes and arms timers. The registry's maps
//! (actors, last-seen times, timeouts told) are never locked at the same time, and the meta
//! lock is taken only with none of them held.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use conclave_raft::command::{now_ms, Command, Proposal, Response};
use conclave_raft::error::{CoreError, ErrorCode};
use conclave_raft::meta::MetaState;
use conclave_raft::shard::{query, Agent, AgentStatus};
use conclave_raft::storage::{Db, GroupKv};
use conclave_raft::{GroupId, Raft, ShardCommand, ShardQuery, ShardReadResult, ShardResponse};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;

/// What a heartbeat needs from the replicated state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatAction {
    /// The agent does not exist: answer 404 and forget it.
    Unknown,
    /// Stored online already: no write.
    Nothing,
    /// Stored offline: propose the online transition.
    ProposeOnline,
}

/// What a timer check decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckAction {
    /// Nothing to watch (the agent is offline or gone): the actor may stop.
    Stop,
    /// Silent past the timeout: propose the offline transition.
    ProposeOffline,
    /// Check again at this time (ms).
    WaitUntil(u64),
}

/// The presence logic of one agent, over an injected clock (ms).
#[derive(Debug, Clone)]
pub struct Presence {
    timeout_ms: u64,
    last_seen: Option<u64>,
    offline_proposed: bool,
    armed_until: Option<u64>,
}

impl Presence {
    /// A presence with nothing seen yet.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout_ms: timeout.as_millis() as u64,
            last_seen: None,
            offline_proposed: false,
            armed_until: None,
        }
    }

    /// The last heartbeat (or adoption) time, ms.
    pub fn last_seen(&self) -> Option<u64> {
        self.last_seen
    }

    /// Changes the timeout. When that moves the deadline before the pending timer, returns
    /// the new deadline to arm a timer for (a later deadline needs none: the pending timer's
    /// check waits on).
    pub fn set_timeout(&mut self, timeout: Duration) -> Option<u64> {
        let timeout_ms = timeout.as_millis() as u64;
        if timeout_ms == self.timeout_ms {
            return None;
        }
        self.timeout_ms = timeout_ms;
        let deadline = self.last_seen? + timeout_ms;
        match self.armed_until {
            Some(armed) if armed > deadline => {
                self.armed_until = Some(deadline);
                Some(deadline)
            }
            _ => None,
        }
    }

    /// A heartbeat at `now`, with the agent's `stored` status. Returns what to do and, when
    /// no timer is pending, when to arm one.
    pub fn heartbeat(
        &mut self,
        now: u64,
        stored: Option<AgentStatus>,
    ) -> (HeartbeatAction, Option<u64>) {
        let Some(status) = stored else {
            self.last_seen = None;
            return (HeartbeatAction::Unknown, None);
        };
        self.last_seen = Some(now);
        self.offline_proposed = false;
        let action = match status {
            AgentStatus::Online => HeartbeatAction::Nothing,
            AgentStatus::Offline => HeartbeatAction::ProposeOnline,
        };
        (action, self.arm(now + self.timeout_ms))
    }

    /// A timer fired at `now` (also the adoption of an agent stored online after a failover:
    /// with nothing seen yet, `now` counts as its last heartbeat).
    pub fn check(&mut self, now: u64, stored: Option<AgentStatus>) -> CheckAction {
        self.armed_until = None;
        if stored != Some(AgentStatus::Online) {
            return CheckAction::Stop;
        }
        let last = *self.last_seen.get_or_insert(now);
        let deadline = last + self.timeout_ms;
        if now < deadline {
            self.armed_until = Some(deadline);
            return CheckAction::WaitUntil(deadline);
        }
        if self.offline_proposed {
            // Our proposal did not take (lost leadership or failed): try again a bit later.
            self.offline_proposed = false;
            let retry = now + self.timeout_ms.clamp(100, 1000);
            self.armed_until = Some(retry);
            return CheckAction::WaitUntil(retry);
        }
        self.offline_proposed = true;
        CheckAction::ProposeOffline
    }

    fn arm(&mut self, at: u64) -> Option<u64> {
        if self.armed_until.is_some() {
            return None;
        }
        self.armed_until = Some(at);
        Some(at)
    }
}

/// Identity of a presence actor: shard, workspace, agent name.
pub type PresenceKey = (GroupId, String, String);

/// Messages a presence actor handles.
pub enum PresenceMsg {
    /// A heartbeat; answers the agent as stored, with the new last-seen time.
    Heartbeat(oneshot::Sender<Result<Agent, CoreError>>),
    /// A timer fired, or this node just took the shard's leadership.
    Check,
}

/// Shared between the registry and its actors: the last-seen times of agents, so reads can
/// show a heartbeat that was never written.
type SeenMap = Arc<Mutex<HashMap<PresenceKey, u64>>>;

/// The presence timeout of each workspace: its `presence_timeout_secs` setting in this node's
/// meta replica, else the node's own setting.
#[derive(Clone)]
pub struct PresenceTimeouts {
    node: Duration,
    meta: Arc<RwLock<MetaState>>,
}

impl PresenceTimeouts {
    /// Timeouts read from `meta`, `node` where a workspace sets none (or is not known here).
    pub fn new(node: Duration, meta: Arc<RwLock<MetaState>>) -> Self {
        Self { node, meta }
    }

    /// The node's own setting.
    pub fn node(&self) -> Duration {
        self.node
    }

    /// The timeout of `ws`'s agents.
    pub fn of(&self, ws: &str) -> Duration {
        let set = self
            .meta
            .read()
            .expect("meta lock")
            .workspaces
            .get(ws)
            .and_then(|w| w.settings.presence_timeout_secs);
        set.map_or(self.node, Duration::from_secs)
    }
}

/// The presence actor of one agent.
struct PresenceActor;

/// What a presence actor is started with.
struct PresenceArgs {
    key: PresenceKey,
    raft: Raft,
    db: Db,
    timeouts: PresenceTimeouts,
    seen: SeenMap,
    actors: Arc<Mutex<HashMap<PresenceKey, ActorRef<PresenceMsg>>>>,
}

struct PresenceState {
    args: PresenceArgs,
    core: Presence,
}

impl PresenceState {
    fn stored(&self) -> Result<Option<Agent>, CoreError> {
        let (group, ws, name) = &self.args.key;
        let q = ShardQuery::AgentGet {
            ws: ws.clone(),
            name: name.clone(),
        };
        match query(&GroupKv::new(&self.args.db, *group), &q) {
            Ok(ShardReadResult::Agent(a)) => Ok(Some(a)),
            Ok(other) => Err(CoreError::internal(format!("unexpected read {other:?}"))),
            Err(e) if e.code == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn propose(&self, online: bool) -> Result<Agent, CoreError> {
        let (_, ws, name) = &self.args.key;
        let cmd = ShardCommand::AgentPresence {
            ws: ws.clone(),
            name: name.clone(),
            online,
            last_seen_at: self.core.last_seen(),
        };
        let resp = self
            .args
            .raft
            .client_write(Proposal::now(Command::Shard(cmd)))
            .await
            .map_err(|e| CoreError::unavailable(format!("presence change not written: {e}")))?;
        match resp.data {
            Response::Shard(ShardResponse::Agent { agent, .. }) => Ok(*agent),
            Response::Shard(ShardResponse::Refused(e)) => Err(e),
            other => Err(CoreError::internal(format!(
                "unexpected presence response {other:?}"
            ))),
        }
    }

    fn publish_seen(&self) {
        let mut seen = self.args.seen.lock().expect("seen lock");
        match self.core.last_seen() {
            Some(t) => seen.insert(self.args.key.clone(), t),
            None => seen.remove(&self.args.key),
        };
    }

    fn arm(myself: &ActorRef<PresenceMsg>, at: u64) {
        let wait = Duration::from_millis(at.saturating_sub(now_ms()));
        myself.send_after(wait, || PresenceMsg::Check);
    }

    /// Takes the workspace's current timeout, arming an earlier timer if it moved the deadline
    /// forward.
    fn retime(&mut self, myself: &ActorRef<PresenceMsg>) {
        let timeout = self.args.timeouts.of(&self.args.key.1);
        if let Some(at) = self.core.set_timeout(timeout) {
            Self::arm(myself, at);
        }
    }

    async fn heartbeat(&mut self, myself: &ActorRef<PresenceMsg>) -> Result<Agent, CoreError> {
        self.retime(myself);
        let stored = self.stored()?;
        let now = now_ms();
        let (action, arm) = self.core.heartbeat(now, stored.as_ref().map(|a| a.status));
        self.publish_seen();
        if let Some(at) = arm {
            Self::arm(myself, at);
        }
        let (_, _, name) = &self.args.key;
        let mut agent = match action {
            HeartbeatAction::Unknown => {
                return Err(CoreError::not_found(format!("agent {name:?} not found")))
            }
            HeartbeatAction::Nothing => stored.expect("known agent"),
            HeartbeatAction::ProposeOnline => self.propose(true).await?,
        };
        agent.last_seen_at = Some(now);
        Ok(agent)
    }

    /// Runs a check; `true` when the actor should stop.
    async fn check(&mut self, myself: &ActorRef<PresenceMsg>) -> bool {
        self.retime(myself);
        let stored = match self.stored() {
            Ok(s) => s.map(|a| a.status),
            Err(e) => {
                tracing::warn!(error = %e, "presence check could not read the agent");
                Self::arm(myself, now_ms() + 1000);
                return false;
            }
        };
        match self.core.check(now_ms(), stored) {
            CheckAction::Stop => true,
            CheckAction::WaitUntil(at) => {
                self.publish_seen();
                Self::arm(myself, at);
                false
            }
            CheckAction::ProposeOffline => {
                let (group, ws, name) = &self.args.key;
                match self.propose(false).await {
                    Ok(_) => {
                        tracing::info!(shard = group, ws = %ws, agent = %name, "agent went offline after the presence timeout");
                        true
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, agent = %name, "offline transition not written; will retry");
                        Self::arm(myself, now_ms() + 500);
                        false
                    }
                }
            }
        }
    }
}

impl Actor for PresenceActor {
    type Msg = PresenceMsg;
    type State = PresenceState;
    type Arguments = PresenceArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<PresenceMsg>,
        args: PresenceArgs,
    ) -> Result<PresenceState, ActorProcessingErr> {
        Ok(PresenceState {
            core: Presence::new(args.timeouts.of(&args.key.1)),
            args,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<PresenceMsg>,
        msg: PresenceMsg,
        state: &mut PresenceState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PresenceMsg::Heartbeat(reply) => {
                let out = state.heartbeat(&myself).await;
                // Nothing to watch for an unknown agent: heartbeats for made-up names leave no
                // actor behind.
                let unknown = matches!(&out, Err(e) if e.code == ErrorCode::NotFound);
                let _ = reply.send(out);
                if unknown {
                    myself.stop(Some("unknown agent".into()));
                }
            }
            PresenceMsg::Check => {
                if state.check(&myself).await {
                    myself.stop(Some("agent offline".into()));
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<PresenceMsg>,
        state: &mut PresenceState,
    ) -> Result<(), ActorProcessingErr> {
        let key = &state.args.key;
        let removed = {
            let mut actors = state.args.actors.lock().expect("presence lock");
            let mine = actors
                .get(key)
                .is_some_and(|a| a.get_id() == myself.get_id());
            if mine {
                actors.remove(key);
            }
            mine
        };
        if removed {
            state.args.seen.lock().expect("seen lock").remove(key);
        }
        Ok(())
    }
}

/// The presence actors of this node.
#[derive(Clone)]
pub struct PresenceRegistry {
    timeouts: PresenceTimeouts,
    actors: Arc<Mutex<HashMap<PresenceKey, ActorRef<PresenceMsg>>>>,
    seen: SeenMap,
    /// The timeout each workspace with actors had at the last [`PresenceRegistry::retime`].
    told: Arc<Mutex<HashMap<String, Duration>>>,
}

impl PresenceRegistry {
    /// A registry whose agents go offline after their workspace's timeout without a heartbeat.
    pub fn new(timeouts: PresenceTimeouts) -> Self {
        Self {
            timeouts,
            actors: Arc::default(),
            seen: Arc::default(),
            told: Arc::default(),
        }
    }

    /// The presence timeouts.
    pub fn timeouts(&self) -> &PresenceTimeouts {
        &self.timeouts
    }

    /// Pokes the actors of every workspace whose timeout changed since the last call, so they
    /// re-arm their timers by it; returns how many were poked.
    ///
    /// A workspace seen for the first time counts as changed: its actors may have started
    /// before a change this registry never saw.
    pub fn retime(&self) -> usize {
        let workspaces: HashSet<String> = self
            .actors
            .lock()
            .expect("presence lock")
            .keys()
            .map(|(_, ws, _)| ws.clone())
            .collect();
        let now: HashMap<String, Duration> = workspaces
            .into_iter()
            .map(|ws| {
                let t = self.timeouts.of(&ws);
                (ws, t)
            })
            .collect();
        let changed: HashSet<String> = {
            let mut told = self.told.lock().expect("told lock");
            let changed = now
                .iter()
                .filter(|(ws, t)| told.get(*ws) != Some(*t))
                .map(|(ws, _)| ws.clone())
                .collect();
            *told = now;
            changed
        };
        if changed.is_empty() {
            return 0;
        }
        let poke: Vec<ActorRef<PresenceMsg>> = self
            .actors
            .lock()
            .expect("presence lock")
            .iter()
            .filter(|((_, ws, _), _)| changed.contains(ws))
            .map(|(_, a)| a.clone())
            .collect();
        poke.iter()
            .filter(|a| a.send_message(PresenceMsg::Check).is_ok())
            .count()
    }

    async fn get_or_spawn(
        &self,
        key: PresenceKey,
        raft: &Raft,
        db: &Db,
    ) -> Result<ActorRef<PresenceMsg>, CoreError> {
        if let Some(a) = self.actors.lock().expect("presence lock").get(&key) {
            return Ok(a.clone());
        }
        let args = PresenceArgs {
            key: key.clone(),
            raft: raft.clone(),
            db: db.clone(),
            timeouts: self.timeouts.clone(),
            seen: self.seen.clone(),
            actors: self.actors.clone(),
        };
        let (actor, _join) = Actor::spawn(None, PresenceActor, args)
            .await
            .map_err(|e| CoreError::internal(format!("spawning presence actor failed: {e}")))?;
        let mut actors = self.actors.lock().expect("presence lock");
        // Another request may have spawned one meanwhile; keep the first.
        let kept = actors.entry(key).or_insert_with(|| actor.clone()).clone();
        if kept.get_id() != actor.get_id() {
            actor.stop(None);
        }
        Ok(kept)
    }

    /// Handles a heartbeat of agent `name` of `ws` on shard `group`, which this node leads.
    pub async fn heartbeat(
        &self,
        group: GroupId,
        ws: &str,
        name: &str,
        raft: &Raft,
        db: &Db,
    ) -> Result<Agent, CoreError> {
        let key = (group, ws.to_string(), name.to_string());
        // An actor stopping right now refuses the message: spawn a fresh one once.
        for _ in 0..2 {
            let actor = self.get_or_spawn(key.clone(), raft, db).await?;
            let (tx, rx) = oneshot::channel();
            if actor.send_message(PresenceMsg::Heartbeat(tx)).is_err() {
                self.forget(&key, &actor);
                continue;
            }
            match rx.await {
                Ok(out) => return out,
                // It stopped before handling the heartbeat.
                Err(_) => self.forget(&key, &actor),
            }
        }
        Err(CoreError::unavailable("presence actor unavailable; retry"))
    }

    /// Adopts the agents stored online on `group`, which this node has just become leader
    /// of: each counts as seen now, so it gets a full presence timeout to heartbeat again.
    pub async fn adopt(&self, group: GroupId, raft: &Raft, db: &Db) -> Result<usize, CoreError> {
        let mut after = None;
        let mut adopted = 0;
        loop {
            let q = ShardQuery::AgentsOnline { after, limit: 512 };
            let page = match query(&GroupKv::new(db, group), &q)? {
                ShardReadResult::OnlineAgents(p) => p,
                other => return Err(CoreError::internal(format!("unexpected read {other:?}"))),
            };
            let Some(last) = page.last().cloned() else {
                return Ok(adopted);
            };
            for (ws, name) in page {
                let actor = self.get_or_spawn((group, ws, name), raft, db).await?;
                let _ = actor.send_message(PresenceMsg::Check);
                adopted += 1;
            }
            after = Some(last);
        }
    }

    /// The last heartbeat this node saw of an agent, ms.
    pub fn last_seen(&self, group: GroupId, ws: &str, name: &str) -> Option<u64> {
        self.seen
            .lock()
            .expect("seen lock")
            .get(&(group, ws.to_string(), name.to_string()))
            .copied()
    }

    /// Stops the actors of shards this node no longer leads.
    pub fn sweep(&self, leads: impl Fn(GroupId) -> bool) -> usize {
        let mut stopped = 0;
        self.actors.lock().expect("presence lock").retain(|key, a| {
            let keep = leads(key.0);
            if !keep {
                a.stop(Some("leadership lost".into()));
                stopped += 1;
            }
            keep
        });
        self.seen
            .lock()
            .expect("seen lock")
            .retain(|key, _| leads(key.0));
        stopped
    }

    fn forget(&self, key: &PresenceKey, actor: &ActorRef<PresenceMsg>) {
        let mut actors = self.actors.lock().expect("presence lock");
        if actors
            .get(key)
            .is_some_and(|a| a.get_id() == actor.get_id())
        {
            actors.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    /// Drives a presence against a fake stored status: proposals apply at once.
    struct Sim {
        core: Presence,
        stored: Option<AgentStatus>,
        proposals: Vec<bool>,
        timer: Option<u64>,
    }

    impl Sim {
        fn new(stored: Option<AgentStatus>) -> Self {
            Self {
                core: Presence::new(TIMEOUT),
                stored,
                proposals: Vec::new(),
                timer: None,
            }
        }

        fn heartbeat(&mut self, now: u64) -> HeartbeatAction {
            let (action, arm) = self.core.heartbeat(now, self.stored);
            if let Some(at) = arm {
                self.timer = Some(at);
            }
            if action == HeartbeatAction::ProposeOnline {
                self.proposals.push(true);
                self.stored = Some(AgentStatus::Online);
            }
            action
        }

        /// Fires every timer due by `until`, as the actor would.
        fn run_until(&mut self, until: u64) {
            while let Some(at) = self.timer.filter(|&t| t <= until) {
                self.timer = None;
                match self.core.check(at, self.stored) {
                    CheckAction::Stop => {}
                    CheckAction::WaitUntil(next) => self.timer = Some(next),
                    CheckAction::ProposeOffline => {
                        self.proposals.push(false);
                        self.stored = Some(AgentStatus::Offline);
                        self.timer = Some(at);
                    }
                }
            }
        }
    }

    #[test]
    fn heartbeats_of_an_online_agent_propose_nothing() {
        let mut sim = Sim::new(Some(AgentStatus::Offline));
        assert_eq!(sim.heartbeat(0), HeartbeatAction::ProposeOnline);
        for t in (1..100).map(|i| i * 1000) {
            assert_eq!(sim.heartbeat(t), HeartbeatAction::Nothing);
            sim.run_until(t);
        }
        assert_eq!(sim.proposals, vec![true]);
        assert_eq!(sim.core.last_seen(), Some(99_000));
    }

    #[test]
    fn silence_past_the_timeout_proposes_offline_exactly_once() {
        let mut sim = Sim::new(Some(AgentStatus::Offline));
        sim.heartbeat(0);
        sim.heartbeat(4_000);
        sim.run_until(13_999);
        assert_eq!(
            sim.stored,
            Some(AgentStatus::Online),
            "still within the timeout"
        );
        sim.run_until(1_000_000);
        assert_eq!(sim.proposals, vec![true, false]);
        assert_eq!(sim.timer, None, "nothing left to watch");
        // A heartbeat after going offline brings it back with one proposal.
        assert_eq!(sim.heartbeat(2_000_000), HeartbeatAction::ProposeOnline);
        assert_eq!(sim.proposals, vec![true, false, true]);
    }

    #[test]
    fn an_adopted_online_agent_gets_a_full_grace_period() {
        // A new leader finds the agent stored online with no heartbeat in memory.
        let mut sim = Sim::new(Some(AgentStatus::Online));
        assert_eq!(
            sim.core.check(50_000, sim.stored),
            CheckAction::WaitUntil(60_000)
        );
        sim.timer = Some(60_000);
        sim.run_until(59_999);
        assert!(sim.proposals.is_empty());
        sim.run_until(60_000);
        assert_eq!(sim.proposals, vec![false]);
    }

    #[test]
    fn unknown_or_disconnected_agents_are_not_watched() {
        let mut p = Presence::new(TIMEOUT);
        assert_eq!(p.heartbeat(0, None), (HeartbeatAction::Unknown, None));
        assert_eq!(p.last_seen(), None);
        assert_eq!(
            p.heartbeat(0, Some(AgentStatus::Online)),
            (HeartbeatAction::Nothing, Some(10_000))
        );
        // Disconnected meanwhile: the timer finds it offline and stops, proposing nothing.
        assert_eq!(
            p.check(10_000, Some(AgentStatus::Offline)),
            CheckAction::Stop
        );
        assert_eq!(p.check(10_000, None), CheckAction::Stop);
    }

    #[test]
    fn a_shorter_timeout_moves_the_pending_deadline_forward() {
        let mut sim = Sim::new(Some(AgentStatus::Offline));
        sim.heartbeat(0);
        assert_eq!(sim.timer, Some(10_000));
        // The workspace's timeout drops to 5 s: a timer is armed for the earlier deadline.
        assert_eq!(sim.core.set_timeout(Duration::from_secs(5)), Some(5_000));
        sim.timer = Some(5_000);
        sim.run_until(4_999);
        assert_eq!(sim.proposals, vec![true]);
        sim.run_until(5_000);
        assert_eq!(sim.proposals, vec![true, false]);
        // The same value again changes nothing.
        assert_eq!(sim.core.set_timeout(Duration::from_secs(5)), None);
    }

    #[test]
    fn a_longer_timeout_keeps_an_agent_online_past_the_old_deadline() {
        let mut sim = Sim::new(Some(AgentStatus::Offline));
        sim.heartbeat(0);
        // No earlier timer is needed: the pending one finds the new deadline and waits on.
        assert_eq!(sim.core.set_timeout(Duration::from_secs(60)), None);
        sim.run_until(59_999);
        assert_eq!(sim.proposals, vec![true]);
        assert_eq!(sim.timer, Some(60_000));
        sim.run_until(60_000);
        assert_eq!(sim.proposals, vec![true, false]);
    }

    #[test]
    fn an_agent_silent_past_a_new_shorter_timeout_goes_offline_at_the_next_check() {
        let mut p = Presence::new(Duration::from_secs(60));
        p.heartbeat(0, Some(AgentStatus::Online));
        assert_eq!(p.set_timeout(Duration::from_secs(5)), Some(5_000));
        assert_eq!(
            p.check(20_000, Some(AgentStatus::Online)),
            CheckAction::ProposeOffline
        );
    }

    #[test]
    fn a_workspace_timeout_overrides_the_node_one_and_changes_live() {
        let meta = Arc::new(RwLock::new(MetaState::default()));
        let timeouts = PresenceTimeouts::new(TIMEOUT, meta.clone());
        assert_eq!(timeouts.of("w"), TIMEOUT, "unknown workspace: the node's");
        let ws = conclave_raft::meta::Workspace {
            id: "w".into(),
            name: "w".into(),
            created_at: 0,
            tenant: "t".into(),
            settings: Default::default(),
        };
        meta.write().unwrap().workspaces.insert("w".into(), ws);
        assert_eq!(timeouts.of("w"), TIMEOUT, "not set: the node's");
        let set = |secs| {
            let mut m = meta.write().unwrap();
            m.workspaces
                .get_mut("w")
                .unwrap()
                .settings
                .presence_timeout_secs = secs;
        };
        set(Some(5));
        assert_eq!(timeouts.of("w"), Duration::from_secs(5));
        assert_eq!(timeouts.of("v"), TIMEOUT);
        set(None);
        assert_eq!(timeouts.of("w"), TIMEOUT);
    }

    #[test]
    fn a_failed_offline_proposal_is_retried_not_repeated_at_once() {
        let mut p = Presence::new(TIMEOUT);
        p.heartbeat(0, Some(AgentStatus::Online));
        assert_eq!(
            p.check(10_000, Some(AgentStatus::Online)),
            CheckAction::ProposeOffline
        );
        // The proposal was lost; the next check waits before proposing again.
        assert_eq!(
            p.check(10_001, Some(AgentStatus::Online)),
            CheckAction::WaitUntil(11_001)
        );
        assert_eq!(
            p.check(11_001, Some(AgentStatus::Online)),
            CheckAction::ProposeOffline
        );
    }
}
