//! One RocksDB per node; groups are separated by an 8-byte big-endian group-id key prefix in
//! each column family.
//!
//! Column families: `log` (group, index) → entry; `raft` (group, tag) → vote / last purged;
//! `sm` (group, key) → state-machine data; `smmeta` (group, tag) → applied log id, membership,
//! meta state, latest snapshot.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{
    BlockBasedOptions, ColumnFamilyDescriptor, Direction, IteratorMode, Options, ReadOptions, DB,
};

use crate::kv::KvRead;
use crate::types::GroupId;

/// Column family names.
pub(crate) const CF_LOG: &str = "log";
pub(crate) const CF_RAFT: &str = "raft";
pub(crate) const CF_SM: &str = "sm";
pub(crate) const CF_SMMETA: &str = "smmeta";

/// The node's database.
#[derive(Clone)]
pub struct Db {
    pub(crate) inner: Arc<DB>,
}

impl Db {
    /// Opens (creating if needed) the database under `dir`.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        let cfs = [CF_LOG, CF_RAFT, CF_SM, CF_SMMETA]
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, cf_options(name)));
        let db = DB::open_cf_descriptors(&opts, dir, cfs).map_err(io_err)?;
        Ok(Self {
            inner: Arc::new(db),
        })
    }

    /// Makes everything written so far durable (a synced WAL) and stops RocksDB's background
    /// flushes and compactions, waiting for running ones: what a process must do before it
    /// ends while other threads may still hold the database open.
    pub fn sync_and_quiesce(&self) -> std::io::Result<()> {
        self.inner.flush_wal(true).map_err(io_err)?;
        self.inner.cancel_all_background_work(true);
        Ok(())
    }

    pub(crate) fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.inner
            .cf_handle(name)
            .expect("column family created at open")
    }

    /// Groups that have any Raft state stored here.
    pub fn stored_groups(&self) -> std::io::Result<Vec<GroupId>> {
        let mut groups = Vec::new();
        let mut from = 0u64;
        loop {
            let key = from.to_be_bytes();
            let mut it = self.inner.iterator_cf(
                self.cf(CF_RAFT),
                IteratorMode::From(&key, Direction::Forward),
            );
            match it.next() {
                Some(item) => {
                    let (k, _) = item.map_err(io_err)?;
                    let g = group_of(&k);
                    groups.push(g);
                    match g.checked_add(1) {
                        Some(n) => from = n,
                        None => break,
                    }
                }
                None => break,
            }
        }
        Ok(groups)
    }

    /// Deletes everything stored for `group` (after it left this node).
    pub fn purge_group(&self, group: GroupId) -> std::io::Result<()> {
        let (from, to) = group_range(group);
        let mut batch = rocksdb::WriteBatch::default();
        for cf in [CF_LOG, CF_RAFT, CF_SM, CF_SMMETA] {
            batch.delete_range_cf(self.cf(cf), &from, &to);
        }
        // Synced: a group whose removal a power loss undid would be reopened as a replica.
        self.write(batch, true)
    }

    /// Writes `batch` atomically; `sync` waits until the WAL is on disk. Unsynced writes reach
    /// the disk with the next synced write or WAL flush (the log's group commit).
    pub(crate) fn write(&self, batch: rocksdb::WriteBatch, sync: bool) -> std::io::Result<()> {
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(sync);
        self.inner.write_opt(batch, &opts).map_err(io_err)
    }
}

/// Read options whose iterators stop before the first key not starting with `prefix`: without
/// a bound, an iterator run to the end of its rows walks on over the deleted keys after them.
pub(crate) fn bounded(prefix: &[u8]) -> ReadOptions {
    let mut opts = ReadOptions::default();
    if let Some(end) = prefix_end(prefix) {
        opts.set_iterate_upper_bound(end);
    }
    opts
}

/// The smallest key greater than every key starting with `prefix`, if there is one.
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// `group` ++ `suffix`.
pub(crate) fn gkey(group: GroupId, suffix: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + suffix.len());
    k.extend_from_slice(&group.to_be_bytes());
    k.extend_from_slice(suffix);
    k
}

/// The key range `[group, group + 1)`.
pub(crate) fn group_range(group: GroupId) -> (Vec<u8>, Vec<u8>) {
    let from = group.to_be_bytes().to_vec();
    let to = match group.checked_add(1) {
        Some(next) => next.to_be_bytes().to_vec(),
        None => vec![0xff; 9],
    };
    (from, to)
}

pub(crate) fn group_of(key: &[u8]) -> GroupId {
    let mut b = [0u8; 8];
    b.copy_from_slice(&key[..8]);
    u64::from_be_bytes(b)
}

pub(crate) fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// A shard's state-machine key space as a [`KvRead`], for queries and apply.
pub struct GroupKv<'a> {
    db: &'a Db,
    group: GroupId,
}

impl<'a> GroupKv<'a> {
    /// The key space of `group`.
    pub fn new(db: &'a Db, group: GroupId) -> Self {
        Self { db, group }
    }
}

impl KvRead for GroupKv<'_> {
    fn get(&self, key: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        self.db
            .inner
            .get_cf(self.db.cf(CF_SM), gkey(self.group, key))
            .map_err(io_err)
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> std::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let full_prefix = gkey(self.group, prefix);
        let start = match after {
            Some(a) if a > prefix => {
                let mut k = gkey(self.group, a);
                k.push(0);
                k
            }
            _ => full_prefix.clone(),
        };
        let mut out = Vec::new();
        let mut it = self.db.inner.iterator_cf_opt(
            self.db.cf(CF_SM),
            bounded(&full_prefix),
            IteratorMode::From(&start, Direction::Forward),
        );
        // Never step past the last row wanted: stepping skips every older version of the row
        // just read still in the memtable (a counter rewritten on each apply has thousands).
        while out.len() < limit {
            let Some(item) = it.next() else { break };
            let (k, v) = item.map_err(io_err)?;
            if !k.starts_with(&full_prefix) {
                break;
            }
            out.push((k[8..].to_vec(), v.to_vec()));
        }
        Ok(out)
    }
}

/// Options of one column family. State-machine rows get a bloom filter: apply looks up many
/// keys that do not exist yet (a new record, a first counter), and without a filter each such
/// lookup searches every table file.
fn cf_options(name: &str) -> Options {
    let mut opts = Options::default();
    if name == CF_SM {
        let mut table = BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        opts.set_block_based_table_factory(&table);
    }
    opts
}

/// Turns off RocksDB's perf counters on the calling thread. They are on by default, per
/// thread, and every read and write then updates them through thread-local storage in the
/// shared library (a `__tls_get_addr` call each time); Conclave never reads them. Call it on
/// every thread that uses the database: at 256 clients it gave 4–7 % more writes per second.
pub fn disable_perf_counters() {
    rocksdb::perf::set_perf_stats(rocksdb::perf::PerfStatsLevel::Disable);
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn a_prefix_ends_at_its_successor() {
        assert_eq!(prefix_end(b"c\0"), Some(b"c\x01".to_vec()));
        assert_eq!(prefix_end(&[0, 0, 0, 7]), Some(vec![0, 0, 0, 8]));
        assert_eq!(prefix_end(&[1, 0xff, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }
}
