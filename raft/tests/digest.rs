//! Replica digests: equal for replicas that applied the same entries (whether by apply or by
//! installing a snapshot), different as soon as one applied something else.

use std::sync::{Arc, RwLock};

use conclave_raft::command::{Command, Proposal};
use conclave_raft::storage::{group_digest, Db, GroupDigest, StateMachine};
use conclave_raft::{ShardCommand, TypeConfig};
use futures::stream;
use openraft::entry::RaftEntry;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::testing::log_id;
use tempfile::TempDir;

const GROUP: u64 = 3;

fn put(index: u64, key: &str, value: &str) -> openraft::alias::EntryOf<TypeConfig> {
    let proposal = Proposal {
        at_ms: 1_000 + index,
        command: Command::Shard(ShardCommand::ContextPut {
            ws: "default".into(),
            key: key.into(),
            value: value.into(),
        })
        .into(),
    };
    openraft::alias::EntryOf::<TypeConfig>::new_normal(log_id::<TypeConfig>(1, 1, index), proposal)
}

struct Replica {
    _dir: TempDir,
    db: Db,
    sm: StateMachine,
}

fn replica() -> Replica {
    let dir = TempDir::new().expect("temp dir");
    let db = Db::open(dir.path()).expect("open db");
    let sm = StateMachine::open(GROUP, db.clone(), Arc::new(RwLock::default())).expect("open sm");
    Replica { _dir: dir, db, sm }
}

impl Replica {
    async fn apply(&mut self, entries: Vec<openraft::alias::EntryOf<TypeConfig>>) {
        let items = entries.into_iter().map(|e| Ok((e, None)));
        self.sm.apply(stream::iter(items)).await.expect("apply");
    }

    fn digest(&self) -> GroupDigest {
        group_digest(&self.db, GROUP).expect("digest")
    }
}

#[tokio::test]
async fn replicas_with_the_same_entries_have_the_same_digest() {
    let entries = || vec![put(1, "a", "1"), put(2, "b", "2"), put(3, "a", "3")];
    let mut one = replica();
    let mut two = replica();
    assert_eq!(one.digest(), two.digest(), "empty replicas agree");
    one.apply(entries()).await;
    // The same entries in two batches: batching is not part of the state.
    let mut all = entries();
    let last = all.split_off(2);
    two.apply(all).await;
    two.apply(last).await;
    let digest = one.digest();
    assert_eq!(digest, two.digest());
    assert_eq!((digest.applied, digest.rows), (3, 2));

    // A replica filled from a snapshot agrees too.
    let snapshot = one.sm.build_snapshot().await.expect("snapshot");
    let mut three = replica();
    three
        .sm
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .expect("install");
    assert_eq!(three.digest(), digest);
}

#[tokio::test]
async fn a_different_entry_changes_the_digest() {
    let mut one = replica();
    let mut two = replica();
    one.apply(vec![put(1, "a", "1"), put(2, "b", "2")]).await;
    two.apply(vec![put(1, "a", "1"), put(2, "b", "other")])
        .await;
    let (a, b) = (one.digest(), two.digest());
    assert_eq!(a.applied, b.applied);
    assert_ne!(a.digest, b.digest);
}
