//! Group commit: one fsync makes the log appends of every group durable together.
//!
//! A log append writes its entries to RocksDB unsynced (so they are readable at once) and hands
//! its completion callback here. This thread takes every callback queued, syncs the WAL once,
//! and completes them all. While one sync runs the next batch gathers, so under load each fsync
//! covers many appends of many groups. The queue is unbounded but holds at most one callback
//! per in-flight append, which openraft itself bounds per group.

use std::sync::mpsc;

use openraft::storage::IOFlushed;

use crate::storage::db::io_err;
use crate::storage::Db;
use crate::types::TypeConfig;

/// Handle to the node's fsync thread.
#[derive(Clone)]
pub struct Fsync {
    mode: Mode,
}

#[derive(Clone)]
enum Mode {
    Thread(mpsc::Sender<IOFlushed<TypeConfig>>),
    Unsynced(Db),
}

impl Fsync {
    /// No fsync: appends complete once written to the WAL file, in the caller's task. For the
    /// deterministic simulation, whose crashes stop a node's groups but not the process (so
    /// nothing written is lost) and which must not wait on another thread.
    pub fn unsynced(db: Db) -> Self {
        Self {
            mode: Mode::Unsynced(db),
        }
    }

    /// Starts the fsync thread for `db`.
    pub fn start(db: Db) -> Self {
        let (tx, rx) = mpsc::channel::<IOFlushed<TypeConfig>>();
        std::thread::Builder::new()
            .name("conclave-fsync".into())
            .spawn(move || {
                super::disable_perf_counters();
                while let Ok(first) = rx.recv() {
                    let mut waiting = vec![first];
                    waiting.extend(rx.try_iter());
                    let result = db.inner.flush_wal(true);
                    if let Err(e) = &result {
                        tracing::error!(error = %e, "wal sync failed");
                    }
                    for cb in waiting {
                        cb.io_completed(result.as_ref().map(|_| ()).map_err(io_err));
                    }
                }
            })
            .expect("spawn fsync thread");
        Self {
            mode: Mode::Thread(tx),
        }
    }

    /// Completes `callback` once everything written before this call is durable.
    pub fn after_sync(&self, callback: IOFlushed<TypeConfig>) {
        match &self.mode {
            Mode::Thread(tx) => {
                if let Err(mpsc::SendError(cb)) = tx.send(callback) {
                    cb.io_completed(Err(std::io::Error::other("fsync thread stopped")));
                }
            }
            Mode::Unsynced(db) => {
                callback.io_completed(db.inner.flush_wal(false).map_err(io_err));
            }
        }
    }
}
