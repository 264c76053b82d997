//! The multi-group runtime: every Raft group this node hosts, created on demand, sharing the
//! node's RocksDB, fsync thread, peer connections and heartbeat batching.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::meta::MetaState;
use crate::network::{GroupNetworkFactory, HeartbeatCoalescer, Peers, RaftTransport};
use crate::storage::{ApplyWatch, Db, Fsync, LogStore, StateMachine};
use crate::types::{GroupId, NodeId, Raft, META_GROUP};

/// Raft timings shared by every group.
#[derive(Debug, Clone)]
pub struct GroupSettings {
    /// Leader heartbeat period, ms.
    pub heartbeat_ms: u64,
    /// Lower bound of the election timeout, ms.
    pub election_min_ms: u64,
    /// Upper bound of the election timeout, ms.
    pub election_max_ms: u64,
    /// Logs since the last snapshot that trigger a new one.
    pub snapshot_after_logs: u64,
    /// Whether log appends wait for an fsync. Only the deterministic simulation turns it off
    /// (see [`Fsync::unsynced`]).
    pub sync_wal: bool,
}

impl Default for GroupSettings {
    fn default() -> Self {
        Self {
            heartbeat_ms: 200,
            election_min_ms: 1000,
            election_max_ms: 2000,
            snapshot_after_logs: 20_000,
            sync_wal: true,
        }
    }
}

struct GroupHandle {
    raft: Raft,
    applied: Arc<ApplyWatch>,
}

struct Inner {
    node_id: NodeId,
    db: Db,
    fsync: Fsync,
    peers: Peers,
    transport: Arc<dyn RaftTransport>,
    heartbeats: HeartbeatCoalescer,
    config: Arc<openraft::Config>,
    meta: Arc<RwLock<MetaState>>,
    groups: RwLock<BTreeMap<GroupId, GroupHandle>>,
    creating: tokio::sync::Mutex<()>,
}

/// Handle to this node's Raft groups. Cheap to clone.
#[derive(Clone)]
pub struct Groups {
    inner: Arc<Inner>,
}

impl Groups {
    /// The runtime of node `node_id` over `db`, its Raft traffic over `peers`.
    pub fn new(
        node_id: NodeId,
        db: Db,
        peers: Peers,
        settings: &GroupSettings,
    ) -> Result<Self, openraft::ConfigError> {
        let transport = Arc::new(peers.clone());
        Self::with_transport(node_id, db, peers, transport, settings)
    }

    /// The runtime of node `node_id` over `db`, its Raft traffic over `transport`.
    pub fn with_transport(
        node_id: NodeId,
        db: Db,
        peers: Peers,
        transport: Arc<dyn RaftTransport>,
        settings: &GroupSettings,
    ) -> Result<Self, openraft::ConfigError> {
        let config = openraft::Config {
            cluster_name: "conclave".into(),
            heartbeat_interval: settings.heartbeat_ms,
            election_timeout_min: settings.election_min_ms,
            election_timeout_max: settings.election_max_ms,
            install_snapshot_timeout: 10_000,
            enable_pre_vote: Some(true),
            // Leaders' periodic heartbeats come from one node-wide tick (below), so the
            // heartbeats of all groups leave together and coalesce into one RPC per peer.
            enable_heartbeat: false,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(settings.snapshot_after_logs),
            max_in_snapshot_log_to_keep: 1000,
            ..Default::default()
        }
        .validate()?;
        let fsync = if settings.sync_wal {
            Fsync::start(db.clone())
        } else {
            Fsync::unsynced(db.clone())
        };
        let groups = Self {
            inner: Arc::new(Inner {
                node_id,
                db,
                fsync,
                heartbeats: HeartbeatCoalescer::new(transport.clone()),
                peers,
                transport,
                config: Arc::new(config),
                meta: Arc::default(),
                groups: RwLock::default(),
                creating: tokio::sync::Mutex::new(()),
            }),
        };
        groups.spawn_heartbeat_tick(std::time::Duration::from_millis(settings.heartbeat_ms));
        Ok(groups)
    }

    /// Every `period`, asks every group this node leads to heartbeat its followers at once.
    /// Must be called within a tokio runtime; stops when the last handle is dropped.
    fn spawn_heartbeat_tick(&self, period: std::time::Duration) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let leaders: Vec<Raft> = inner
                    .groups
                    .read()
                    .expect("groups lock")
                    .values()
                    .filter(|h| h.raft.is_leader())
                    .map(|h| h.raft.clone())
                    .collect();
                drop(inner);
                for raft in leaders {
                    let _ = raft.trigger().heartbeat().await;
                }
            }
        });
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// The node's database.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The peer connections.
    pub fn peers(&self) -> &Peers {
        &self.inner.peers
    }

    /// Heartbeat RPCs sent and group heartbeats they carried.
    pub fn heartbeat_stats(&self) -> (u64, u64) {
        self.inner.heartbeats.stats()
    }

    /// The meta state as last applied on this node.
    pub fn meta(&self) -> &Arc<RwLock<MetaState>> {
        &self.inner.meta
    }

    /// A copy of the meta state.
    pub fn meta_snapshot(&self) -> MetaState {
        self.inner.meta.read().expect("meta lock").clone()
    }

    /// The Raft of `group`, if hosted here.
    pub fn get(&self, group: GroupId) -> Option<Raft> {
        self.inner
            .groups
            .read()
            .expect("groups lock")
            .get(&group)
            .map(|h| h.raft.clone())
    }

    /// Watch of `group`'s last applied index, if hosted here.
    pub fn applied_watch(&self, group: GroupId) -> Option<Arc<ApplyWatch>> {
        self.inner
            .groups
            .read()
            .expect("groups lock")
            .get(&group)
            .map(|h| h.applied.clone())
    }

    /// Ids of the data shards (every group but the meta group) this node leads now.
    pub fn led_shards(&self) -> Vec<GroupId> {
        self.hosted()
            .into_iter()
            .filter(|&g| g != META_GROUP && self.get(g).is_some_and(|r| r.is_leader()))
            .collect()
    }

    /// Ids of the groups hosted here.
    pub fn hosted(&self) -> Vec<GroupId> {
        let mut ids: Vec<_> = self
            .inner
            .groups
            .read()
            .expect("groups lock")
            .keys()
            .copied()
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The Raft of `group`, starting it (from its stored state, or empty) if needed.
    pub async fn ensure(&self, group: GroupId) -> std::io::Result<Raft> {
        if let Some(r) = self.get(group) {
            return Ok(r);
        }
        let _guard = self.inner.creating.lock().await;
        if let Some(r) = self.get(group) {
            return Ok(r);
        }
        let sm = StateMachine::open(group, self.inner.db.clone(), self.inner.meta.clone())?;
        let applied = sm.applied_watch();
        let log = LogStore::new(group, self.inner.db.clone(), self.inner.fsync.clone());
        let network = GroupNetworkFactory::new(
            group,
            self.inner.transport.clone(),
            self.inner.heartbeats.clone(),
        );
        let raft = Raft::new(
            self.inner.node_id,
            self.inner.config.clone(),
            network,
            log,
            sm,
        )
        .await
        .map_err(std::io::Error::other)?;
        tracing::info!(group, node = self.inner.node_id, "started raft group");
        self.inner.groups.write().expect("groups lock").insert(
            group,
            GroupHandle {
                raft: raft.clone(),
                applied,
            },
        );
        Ok(raft)
    }

    /// Stops `group` here and deletes its data (after this node left its membership).
    pub async fn remove(&self, group: GroupId) -> std::io::Result<()> {
        let handle = self
            .inner
            .groups
            .write()
            .expect("groups lock")
            .remove(&group);
        if let Some(h) = handle {
            if let Err(e) = h.raft.shutdown().await {
                tracing::warn!(group, error = %e, "raft shutdown failed");
            }
        }
        self.inner.db.purge_group(group)?;
        tracing::info!(group, node = self.inner.node_id, "removed raft group");
        Ok(())
    }

    /// Stops every group (graceful shutdown).
    pub async fn shutdown(&self) {
        let rafts: Vec<Raft> = self
            .inner
            .groups
            .read()
            .expect("groups lock")
            .values()
            .map(|h| h.raft.clone())
            .collect();
        for r in rafts {
            let _ = r.shutdown().await;
        }
    }
}
