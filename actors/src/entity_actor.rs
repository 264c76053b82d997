//! One ractor actor per entity (topic, task queue, task, and each workspace's context store on a
//! shard), living on the node that leads the entity's shard.
//!
//! The actor orders proposals for its entity: it hands each to Raft without waiting for the
//! commit, so one entity's writes pipeline while keeping their submission order. It holds no
//! state that is not in the state machine. The registry stops actors whose shard this node no
//! longer leads, and actors idle for longer than [`IDLE_AFTER`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conclave_raft::command::{Command, Proposal};
use conclave_raft::error::CoreError;
use conclave_raft::{GroupId, Raft, ShardCommand, TypeConfig};
use openraft::alias::WriteResponderOf;
use ractor::{Actor, ActorProcessingErr, ActorRef};

/// An actor idle this long is stopped; it is spawned again on next use.
pub const IDLE_AFTER: Duration = Duration::from_secs(30);

/// Identity of an entity actor: shard, workspace, kind, name.
pub type EntityKey = (GroupId, String, &'static str, String);

/// The actor that orders `cmd` on shard `group`: the addressed topic, task queue or task, or
/// for context keys, embeddings and artifacts the workspace's store of them on that shard (one
/// actor for all of its keys there, which keeps each key's writes in order without an actor
/// per key).
pub fn actor_key(group: GroupId, cmd: &ShardCommand) -> EntityKey {
    let (ws, kind, name) = cmd.entity();
    let shared = matches!(kind, "context" | "embedding" | "artifact");
    let name = if shared { "" } else { name };
    (group, ws.to_string(), kind, name.to_string())
}

/// Messages an entity actor handles.
pub enum EntityMsg {
    /// Hand `cmd` to Raft; Raft answers through the responder once the entry is applied (a
    /// dropped responder means the write was never proposed or its outcome is unknown).
    Propose(ShardCommand, WriteResponderOf<TypeConfig>),
}

/// The entity actor.
pub struct EntityActor;

/// Its state: the shard's Raft.
pub struct EntityState {
    raft: Raft,
}

impl Actor for EntityActor {
    type Msg = EntityMsg;
    type State = EntityState;
    type Arguments = Raft;

    async fn pre_start(
        &self,
        _myself: ActorRef<EntityMsg>,
        raft: Raft,
    ) -> Result<EntityState, ActorProcessingErr> {
        Ok(EntityState { raft })
    }

    async fn handle(
        &self,
        _myself: ActorRef<EntityMsg>,
        msg: EntityMsg,
        state: &mut EntityState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            EntityMsg::Propose(cmd, responder) => {
                let proposal = Proposal::now(Command::Shard(cmd));
                if let Err(e) = state.raft.client_write_ff(proposal, Some(responder)).await {
                    tracing::warn!(error = %e, "raft stopped; write dropped");
                }
            }
        }
        Ok(())
    }
}

struct Entry {
    actor: ActorRef<EntityMsg>,
    last_used: Instant,
}

/// The entity actors of this node.
#[derive(Clone, Default)]
pub struct ActorRegistry {
    actors: Arc<Mutex<HashMap<EntityKey, Entry>>>,
}

impl ActorRegistry {
    /// The actor of `key`, spawned on first use with the shard's `raft`.
    pub async fn get_or_spawn(
        &self,
        key: EntityKey,
        raft: &Raft,
    ) -> Result<ActorRef<EntityMsg>, CoreError> {
        if let Some(e) = self.actors.lock().expect("actors lock").get_mut(&key) {
            e.last_used = Instant::now();
            return Ok(e.actor.clone());
        }
        let (actor, _join) = Actor::spawn(None, EntityActor, raft.clone())
            .await
            .map_err(|e| CoreError::internal(format!("spawning entity actor failed: {e}")))?;
        let mut actors = self.actors.lock().expect("actors lock");
        // Another request may have spawned one meanwhile; keep the first.
        let entry = actors.entry(key).or_insert(Entry {
            actor: actor.clone(),
            last_used: Instant::now(),
        });
        if entry.actor.get_id() != actor.get_id() {
            actor.stop(None);
        }
        Ok(entry.actor.clone())
    }

    /// Stops actors of shards this node no longer leads and actors idle past [`IDLE_AFTER`].
    pub fn sweep(&self, leads: impl Fn(GroupId) -> bool) -> usize {
        let mut actors = self.actors.lock().expect("actors lock");
        let before = actors.len();
        actors.retain(|(shard, ..), e| {
            let keep = leads(*shard) && e.last_used.elapsed() < IDLE_AFTER;
            if !keep {
                e.actor.stop(Some("leadership lost or idle".into()));
            }
            keep
        });
        before - actors.len()
    }

    /// Number of live actors.
    pub fn len(&self) -> usize {
        self.actors.lock().expect("actors lock").len()
    }

    /// Whether no actor is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
