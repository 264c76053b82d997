//! The Raft log and vote of one group, in the node's shared RocksDB.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use rocksdb::{Direction, IteratorMode, WriteBatch};

use crate::codec::{decode_io, encode};
use crate::storage::db::{bounded, gkey, io_err, CF_LOG, CF_RAFT};
use crate::storage::{Db, Fsync};
use crate::types::typ::{Entry, LogId, Vote};
use crate::types::{GroupId, TypeConfig};

const VOTE: &[u8] = b"vote";
const PURGED: &[u8] = b"purged";
const COMMITTED: &[u8] = b"committed";

/// How many of a group's newest entries are also kept in memory...
const RECENT_ENTRIES: usize = 1024;
/// ...and at most this many bytes of them (encoded), so large entries (artifacts) cannot make
/// the run hold gigabytes.
const RECENT_BYTES: usize = 8 << 20;

/// Log storage of one group.
#[derive(Clone)]
pub struct LogStore {
    group: GroupId,
    db: Db,
    fsync: Fsync,
    recent: Arc<Mutex<Recent>>,
}

/// The newest entries of the log, so replication reads what it just appended from memory rather
/// than decoding it back from RocksDB. Always a contiguous run ending at the last stored entry.
#[derive(Default)]
struct Recent {
    /// Entries with their encoded size.
    entries: VecDeque<(Entry, usize)>,
    /// Sum of the sizes.
    bytes: usize,
}

impl Recent {
    fn append(&mut self, entry: Entry, size: usize) {
        let index = entry.index();
        self.truncate(index);
        if self
            .entries
            .back()
            .is_some_and(|(e, _)| e.index() + 1 != index)
        {
            self.entries.clear();
            self.bytes = 0;
        }
        self.entries.push_back((entry, size));
        self.bytes += size;
        while self.entries.len() > RECENT_ENTRIES || self.bytes > RECENT_BYTES {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
        }
    }

    /// Forgets entries from index `from` on.
    fn truncate(&mut self, from: u64) {
        while self.entries.back().is_some_and(|(e, _)| e.index() >= from) {
            if let Some((_, size)) = self.entries.pop_back() {
                self.bytes -= size;
            }
        }
    }

    /// Forgets entries up to and including index `upto`.
    fn purge(&mut self, upto: u64) {
        while self.entries.front().is_some_and(|(e, _)| e.index() <= upto) {
            self.pop_front();
        }
    }

    /// The stored entries in `range` if they start inside the kept run (the run reaches the end
    /// of the log, so nothing past it exists); `None` when RocksDB must be read.
    fn get(&self, range: &impl RangeBounds<u64>, start: u64) -> Option<Vec<Entry>> {
        let first = self.entries.front()?.0.index();
        if start < first {
            return None;
        }
        let skip = usize::try_from(start - first).ok()?;
        Some(
            self.entries
                .iter()
                .skip(skip)
                .take_while(|(e, _)| range.contains(&e.index()))
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }
}

impl LogStore {
    /// The log of `group`.
    pub fn new(group: GroupId, db: Db, fsync: Fsync) -> Self {
        Self {
            group,
            db,
            fsync,
            recent: Arc::default(),
        }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().expect("recent entries lock")
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
        let mut batch = WriteBatch::default();
        batch.put_cf(self.db.cf(CF_RAFT), gkey(self.group, tag), encode(value));
        self.db.write(batch, sync)
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
        if let Some(entries) = self.recent().get(&range, start) {
            return Ok(entries);
        }
        let from = self.log_key(start);
        let mut out = Vec::new();
        let mut opts = bounded(&self.group.to_be_bytes());
        match range.end_bound() {
            Bound::Included(&x) if x < u64::MAX => {
                opts.set_iterate_upper_bound(self.log_key(x + 1))
            }
            Bound::Excluded(&x) => opts.set_iterate_upper_bound(self.log_key(x)),
            _ => {}
        }
        let it = self.db.inner.iterator_cf_opt(
            self.db.cf(CF_LOG),
            opts,
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
        let mut opts = bounded(&self.group.to_be_bytes());
        opts.set_iterate_lower_bound(self.log_key(0));
        let mut it = self.db.inner.iterator_cf_opt(
            self.db.cf(CF_LOG),
            opts,
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
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut sizes = Vec::with_capacity(entries.len());
        for entry in &entries {
            let bytes = encode(entry);
            sizes.push(bytes.len());
            batch.put_cf(self.db.cf(CF_LOG), self.log_key(entry.index()), bytes);
        }
        // Written unsynced so the entries are readable now; durable once the fsync thread runs.
        self.db.write(batch, false)?;
        let mut recent = self.recent();
        for (entry, size) in entries.into_iter().zip(sizes) {
            recent.append(entry, size);
        }
        drop(recent);
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
        self.db.write(batch, false)?;
        self.recent().truncate(from);
        Ok(())
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
        self.db.write(batch, false)?;
        self.recent().purge(log_id.index());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64) -> Entry {
        let leader = openraft::impls::leader_id_adv::LeaderId {
            term: 1,
            node_id: 1,
        };
        Entry::new_blank(LogId::new(leader, index))
    }

    fn indexes(entries: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        entries.map(|es| es.iter().map(|e| e.index()).collect())
    }

    #[test]
    fn recent_entries_stay_a_contiguous_suffix() {
        let mut recent = Recent::default();
        for i in 1..=5 {
            recent.append(entry(i), 10);
        }
        assert_eq!(indexes(recent.get(&(2..4), 2)), Some(vec![2, 3]));
        assert_eq!(indexes(recent.get(&(4..), 4)), Some(vec![4, 5]));
        // Starting before the kept run means RocksDB must be read.
        recent.purge(2);
        assert_eq!(indexes(recent.get(&(2..), 2)), None);
        assert_eq!(indexes(recent.get(&(3..), 3)), Some(vec![3, 4, 5]));
        // An overwrite drops everything from its index on; a gap starts over.
        recent.append(entry(4), 10);
        assert_eq!(indexes(recent.get(&(3..), 3)), Some(vec![3, 4]));
        recent.truncate(4);
        assert_eq!(indexes(recent.get(&(3..), 3)), Some(vec![3]));
        recent.append(entry(9), 10);
        assert_eq!(indexes(recent.get(&(3..), 3)), None);
        assert_eq!(indexes(recent.get(&(9..), 9)), Some(vec![9]));
        for i in 10..10 + RECENT_ENTRIES as u64 {
            recent.append(entry(i), 10);
        }
        assert_eq!(recent.entries.len(), RECENT_ENTRIES);
        assert_eq!(recent.entries.front().map(|(e, _)| e.index()), Some(10));
        assert_eq!(recent.bytes, 10 * RECENT_ENTRIES);
        // Large entries are kept only up to the byte bound, newest first.
        let big = RECENT_BYTES / 3;
        let next = 10 + RECENT_ENTRIES as u64;
        for i in next..next + 4 {
            recent.append(entry(i), big);
        }
        assert!(recent.bytes <= RECENT_BYTES);
        assert_eq!(
            indexes(recent.get(&(next + 1..), next + 1)),
            Some(vec![next + 1, next + 2, next + 3])
        );
        assert_eq!(indexes(recent.get(&(next..), next)), None);
    }
}
