//! The Raft log and vote of one group, in the node's shared RocksDB.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions};

use crate::codec::{decode_io, encode};
use crate::storage::db::{gkey, io_err, CF_LOG, CF_RAFT};
use crate::storage::{Db, Fsync};
use crate::types::typ::{Entry, LogId, Vote};
use crate::types::{GroupId, TypeConfig};

const VOTE: &[u8] = b"vote";
const PURGED: &[u8] = b"purged";
const COMMITTED: &[u8] = b"committed";

/// Log storage of one group.
#[derive(Clone)]
pub struct LogStore {
    group: GroupId,
    db: Db,
    fsync: Fsync,
}

impl LogStore {
    /// The log of `group`.
    pub fn new(group: GroupId, db: Db, fsync: Fsync) -> Self {
        Self { group, db, fsync }
    }

    fn log_key(&self, index: u64) -> Vec<u8> {
        gkey(self.group, &index.to_be_bytes())
    }

    fn get_raft<T: serde::de::DeserializeOwned>(&self, tag: &[u8]) -> std::io::Result<Option<T>> {
        let v = self
            .db
            .inner
            .get_cf(self.db.cf(CF_RAFT), gkey(self.group, tag))
            .map_err(io_err)?;
        v.map(|b| decode_io(&b)).transpose()
    }

    fn put_raft<T: serde::Serialize>(
        &self,
        tag: &[u8],
        value: &T,
        sync: bool,
    ) -> std::io::Result<()> {
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        let mut batch = WriteBatch::default();
        batch.put_cf(self.db.cf(CF_RAFT), gkey(self.group, tag), encode(value));
        self.db.inner.write_opt(batch, &opts).map_err(io_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> std::io::Result<Vec<Entry>> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => *x + 1,
            Bound::Unbounded => 0,
        };
        let from = self.log_key(start);
        let mut out = Vec::new();
        let it = self.db.inner.iterator_cf(
            self.db.cf(CF_LOG),
            IteratorMode::From(&from, Direction::Forward),
        );
        for item in it {
            let (k, v) = item.map_err(io_err)?;
            if k.len() != 16 || k[..8] != self.group.to_be_bytes() {
                break;
            }
            let index = u64::from_be_bytes(k[8..16].try_into().expect("16-byte log key"));
            if !range.contains(&index) {
                break;
            }
            out.push(decode_io(&v)?);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> std::io::Result<Option<Vote>> {
        self.get_raft(VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> std::io::Result<LogState<TypeConfig>> {
        let last_purged: Option<LogId> = self.get_raft(PURGED)?;
        let end = self.log_key(u64::MAX);
        let mut it = self.db.inner.iterator_cf(
            self.db.cf(CF_LOG),
            IteratorMode::From(&end, Direction::Reverse),
        );
        let last = match it.next() {
            Some(item) => {
                let (k, v) = item.map_err(io_err)?;
                if k.len() == 16 && k[..8] == self.group.to_be_bytes() {
                    let e: Entry = decode_io(&v)?;
                    Some(e.log_id())
                } else {
                    None
                }
            }
            None => None,
        };
        Ok(LogState {
            last_log_id: last.or(last_purged),
            last_purged_log_id: last_purged,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> std::io::Result<()> {
        self.put_raft(VOTE, vote, true)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> std::io::Result<()> {
        self.put_raft(COMMITTED, &committed, false)
    }

    async fn read_committed(&mut self) -> std::io::Result<Option<LogId>> {
        Ok(self.get_raft::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> std::io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put_cf(
                self.db.cf(CF_LOG),
                self.log_key(entry.index()),
                encode(&entry),
            );
        }
        // Written unsynced so the entries are readable now; durable once the fsync thread runs.
        self.db.inner.write(batch).map_err(io_err)?;
        self.fsync.after_sync(callback);
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> std::io::Result<()> {
        let from = last_log_id.map_or(0, |l| l.index() + 1);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            self.db.cf(CF_LOG),
            self.log_key(from),
            self.log_key(u64::MAX),
        );
        batch.delete_cf(self.db.cf(CF_LOG), self.log_key(u64::MAX));
        self.db.inner.write(batch).map_err(io_err)
    }

    async fn purge(&mut self, log_id: LogId) -> std::io::Result<()> {
        // Record the purge point first: entries at or below it are ignored from then on.
        self.put_raft(PURGED, &log_id, false)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            self.db.cf(CF_LOG),
            self.log_key(0),
            self.log_key(log_id.index() + 1),
        );
        self.db.inner.write(batch).map_err(io_err)
    }
}
