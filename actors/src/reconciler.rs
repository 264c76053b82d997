//! Keeps the Raft groups running on this node in line with the shard map: starts a group the
//! map places here, and stops and deletes one the map moved away once this node is no longer
//! in that group's own membership (a voter never forgets its log while it may still count).

use openraft::async_runtime::WatchReceiver;
use std::collections::BTreeSet;
use std::time::Duration;

use conclave_raft::{Groups, NodeId, META_GROUP};

/// Runs forever: reconciles on every meta apply, and at least every second.
pub async fn run(groups: Groups) {
    let mut applied = match groups.applied_watch(META_GROUP) {
        Some(w) => w.subscribe(),
        None => return,
    };
    loop {
        reconcile(&groups).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), applied.changed()).await;
    }
}

/// One reconciliation pass.
pub async fn reconcile(groups: &Groups) {
    let me: NodeId = groups.node_id();
    let meta = groups.meta_snapshot();
    if !meta.bootstrapped {
        return;
    }
    let wanted: BTreeSet<_> = meta.shards_hosted_by(me).collect();
    for shard in &wanted {
        if groups.get(*shard).is_none() {
            if let Err(e) = groups.ensure(*shard).await {
                tracing::error!(shard, error = %e, "could not start shard group");
            }
        }
    }
    for shard in groups.hosted() {
        if shard == META_GROUP || wanted.contains(&shard) || !meta.shards.contains_key(&shard) {
            continue;
        }
        let Some(raft) = groups.get(shard) else {
            continue;
        };
        let still_member = raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .nodes()
            .any(|(id, _)| *id == me);
        if !still_member {
            if let Err(e) = groups.remove(shard).await {
                tracing::error!(shard, error = %e, "could not remove shard group");
            }
        }
    }
}
