//! The state machine of one group: meta state kept in memory and persisted whole, or shard data
//! stored key by key; both in the node's RocksDB.
//!
//! Applied writes are not synced on their own: the log is the truth, and a later synced log
//! append makes every earlier write durable. The applied log id is written in the same batch as
//! the data, so after a crash the two agree and openraft re-applies the rest from the log.

use std::io::Cursor;
use std::sync::{Arc, RwLock};

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use rocksdb::{Direction, IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};

use crate::codec::{decode_io, encode};
use crate::command::{Command, Response};
use crate::kv::Txn;
use crate::meta::MetaState;
use crate::shard;
use crate::storage::db::{gkey, group_range, io_err, CF_SM, CF_SMMETA};
use crate::storage::{Db, GroupKv};
use crate::types::typ::{LogId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership};
use crate::types::{GroupId, TypeConfig, META_GROUP};

pub(crate) const APPLIED: &[u8] = b"applied";
pub(crate) const MEMBERSHIP: &[u8] = b"membership";
pub(crate) const META_STATE: &[u8] = b"meta";
const SNAPSHOT: &[u8] = b"snapshot";

/// Publishes the last applied index of a group, for watchers (event streams, reconcilers).
pub type ApplyWatch = tokio::sync::watch::Sender<u64>;

/// What a snapshot's bytes hold.
#[derive(Serialize, Deserialize)]
struct SnapshotPayload {
    meta_state: Option<MetaState>,
    kvs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A snapshot as kept in `smmeta`, so the latest one can be served again.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// The state machine of one group.
#[derive(Clone)]
pub struct StateMachine {
    group: GroupId,
    db: Db,
    meta: Arc<RwLock<MetaState>>,
    applied: Arc<ApplyWatch>,
}

impl StateMachine {
    /// The state machine of `group`. `meta` is the node's in-memory meta state, loaded here for
    /// the meta group and only read by shards.
    pub fn open(group: GroupId, db: Db, meta: Arc<RwLock<MetaState>>) -> std::io::Result<Self> {
        let sm = Self {
            group,
            db,
            meta,
            applied: Arc::new(tokio::sync::watch::channel(0).0),
        };
        if group == META_GROUP {
            if let Some(state) = sm.get_smmeta::<MetaState>(META_STATE)? {
                *sm.meta.write().expect("meta lock") = state;
            }
        }
        let applied: Option<LogId> = sm.get_smmeta::<Option<LogId>>(APPLIED)?.flatten();
        sm.applied.send_replace(applied.map_or(0, |l| l.index()));
        Ok(sm)
    }

    /// Watch of the last applied index.
    pub fn applied_watch(&self) -> Arc<ApplyWatch> {
        self.applied.clone()
    }

    fn get_smmeta<T: serde::de::DeserializeOwned>(&self, tag: &[u8]) -> std::io::Result<Option<T>> {
        let v = self
            .db
            .inner
            .get_cf(self.db.cf(CF_SMMETA), gkey(self.group, tag))
            .map_err(io_err)?;
        v.map(|b| decode_io(&b)).transpose()
    }

    fn read_applied(&self) -> std::io::Result<(Option<LogId>, StoredMembership)> {
        let applied = self.get_smmeta::<Option<LogId>>(APPLIED)?.flatten();
        let membership = self
            .get_smmeta::<StoredMembership>(MEMBERSHIP)?
            .unwrap_or_default();
        Ok((applied, membership))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> std::io::Result<Snapshot> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let snap = this.db.inner.snapshot();
            let read = |tag: &[u8]| {
                snap.get_cf(this.db.cf(CF_SMMETA), gkey(this.group, tag))
                    .map_err(io_err)
            };
            let applied: Option<LogId> = read(APPLIED)?
                .map(|b| decode_io::<Option<LogId>>(&b))
                .transpose()?
                .flatten();
            let membership: StoredMembership = read(MEMBERSHIP)?
                .map(|b| decode_io(&b))
                .transpose()?
                .unwrap_or_default();
            let meta_state: Option<MetaState> =
                read(META_STATE)?.map(|b| decode_io(&b)).transpose()?;
            let (from, to) = group_range(this.group);
            let mut kvs = Vec::new();
            for item in snap.iterator_cf(
                this.db.cf(CF_SM),
                IteratorMode::From(&from, Direction::Forward),
            ) {
                let (k, v) = item.map_err(io_err)?;
                if k.as_ref() >= to.as_slice() {
                    break;
                }
                kvs.push((k[8..].to_vec(), v.to_vec()));
            }
            let meta = SnapshotMeta {
                last_log_id: applied,
                last_membership: membership,
            };
            let data = encode(&SnapshotPayload { meta_state, kvs });
            let stored = StoredSnapshot {
                meta: meta.clone(),
                data: data.clone(),
            };
            this.db
                .inner
                .put_cf(
                    this.db.cf(CF_SMMETA),
                    gkey(this.group, SNAPSHOT),
                    encode(&stored),
                )
                .map_err(io_err)?;
            tracing::info!(group = this.group, bytes = data.len(), "built snapshot");
            Ok(Snapshot {
                meta,
                snapshot: Cursor::new(data),
            })
        })
        .await
        .map_err(io_err)?
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> std::io::Result<(Option<LogId>, StoredMembership)> {
        self.read_applied()
    }

    async fn apply<S>(&mut self, mut entries: S) -> std::io::Result<()>
    where
        S: Stream<Item = std::io::Result<EntryResponder<TypeConfig>>> + Unpin + OptionalSend,
    {
        let kv = GroupKv::new(&self.db, self.group);
        let mut txn = Txn::new(&kv);
        let mut batch = WriteBatch::default();
        let mut last_applied = None;
        let mut membership = None;
        let mut meta_changed = false;
        let mut replies = Vec::new();

        while let Some((entry, responder)) = entries.try_next().await? {
            last_applied = Some(entry.log_id);
            let response = match &entry.payload {
                EntryPayload::Blank => Response::None,
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(entry.log_id), m.clone()));
                    Response::None
                }
                EntryPayload::Normal(p) => match (&*p.command, self.group == META_GROUP) {
                    (Command::Meta(cmd), true) => {
                        meta_changed = true;
                        Response::Meta(self.meta.write().expect("meta lock").apply(cmd, p.at_ms))
                    }
                    (Command::Shard(cmd), false) => {
                        Response::Shard(shard::apply(&mut txn, self.group, cmd, p.at_ms)?)
                    }
                    _ => {
                        tracing::warn!(
                            group = self.group,
                            "command sent to the wrong kind of group"
                        );
                        Response::None
                    }
                },
            };
            if let Some(r) = responder {
                replies.push((r, response));
            }
        }

        for (k, v) in txn.into_writes() {
            match v {
                Some(v) => batch.put_cf(self.db.cf(CF_SM), gkey(self.group, &k), v),
                None => batch.delete_cf(self.db.cf(CF_SM), gkey(self.group, &k)),
            }
        }
        if meta_changed {
            let state = encode(&*self.meta.read().expect("meta lock"));
            batch.put_cf(self.db.cf(CF_SMMETA), gkey(self.group, META_STATE), state);
        }
        if let Some(m) = &membership {
            batch.put_cf(
                self.db.cf(CF_SMMETA),
                gkey(self.group, MEMBERSHIP),
                encode(m),
            );
        }
        if let Some(l) = &last_applied {
            batch.put_cf(
                self.db.cf(CF_SMMETA),
                gkey(self.group, APPLIED),
                encode(&Some(*l)),
            );
        }
        // A failed write here would let replicas diverge: the error halts this group's Raft.
        self.db.write(batch, false)?;
        if let Some(l) = last_applied {
            self.applied.send_replace(l.index());
        }
        for (r, resp) in replies {
            r.send(resp);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> std::io::Result<()> {
        let payload: SnapshotPayload = decode_io(snapshot.get_ref())?;
        let (from, to) = group_range(self.group);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.db.cf(CF_SM), &from, &to);
        for (k, v) in &payload.kvs {
            batch.put_cf(self.db.cf(CF_SM), gkey(self.group, k), v);
        }
        if let Some(state) = &payload.meta_state {
            batch.put_cf(
                self.db.cf(CF_SMMETA),
                gkey(self.group, META_STATE),
                encode(state),
            );
        }
        batch.put_cf(
            self.db.cf(CF_SMMETA),
            gkey(self.group, MEMBERSHIP),
            encode(&meta.last_membership),
        );
        batch.put_cf(
            self.db.cf(CF_SMMETA),
            gkey(self.group, APPLIED),
            encode(&meta.last_log_id),
        );
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: snapshot.into_inner(),
        };
        batch.put_cf(
            self.db.cf(CF_SMMETA),
            gkey(self.group, SNAPSHOT),
            encode(&stored),
        );
        self.db.write(batch, true)?;
        if let Some(state) = payload.meta_state {
            *self.meta.write().expect("meta lock") = state;
        }
        self.applied
            .send_replace(meta.last_log_id.as_ref().map_or(0, |l| l.index()));
        tracing::info!(group = self.group, last = ?meta.last_log_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> std::io::Result<Option<Snapshot>> {
        Ok(self
            .get_smmeta::<StoredSnapshot>(SNAPSHOT)?
            .map(|s| Snapshot {
                meta: s.meta,
                snapshot: Cursor::new(s.data),
            }))
    }
}
