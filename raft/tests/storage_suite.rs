//! openraft's storage conformance suite against Conclave's RocksDB log store and state machine,
//! for a data shard and for the meta group.

use std::sync::{Arc, RwLock};

use conclave_raft::storage::{Db, Fsync, LogStore, StateMachine};
use conclave_raft::{GroupId, TypeConfig, META_GROUP};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::StorageError;
use tempfile::TempDir;

struct Builder {
    group: GroupId,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = TempDir::new().expect("temp dir");
        let db = Db::open(dir.path()).expect("open db");
        let fsync = Fsync::start(db.clone());
        let log = LogStore::new(self.group, db.clone(), fsync);
        let sm = StateMachine::open(self.group, db, Arc::new(RwLock::default())).expect("open sm");
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_storage_passes_openraft_suite() {
    Suite::test_all(Builder { group: 7 }).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_storage_passes_openraft_suite() {
    Suite::test_all(Builder { group: META_GROUP })
        .await
        .unwrap();
}
