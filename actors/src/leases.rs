//! Task lease expiry: on every data shard this node leads, proposes the return to the queue of
//! the tasks whose lease has ended, so the stored state catches up with what readers already
//! see (a read shows an ended lease as open; a claim treats it as open).
//!
//! The loop only finds candidates in the leader's local lease index; apply checks each lease
//! again against the entry's `at_ms`, so a lease renewed meanwhile is left alone and a
//! duplicate proposal changes nothing. Nothing is kept in memory: a new leader simply starts
//! proposing on its next tick.

use std::sync::Weak;
use std::time::Duration;

use conclave_raft::command::now_ms;
use conclave_raft::shard::tasks::due_leases;
use conclave_raft::storage::GroupKv;
use conclave_raft::ShardCommand;

use crate::request::ClientRequest;
use crate::router::Router;

/// How often each led shard is checked for ended leases.
pub const EXPIRY_PERIOD: Duration = Duration::from_secs(1);
/// Most tasks returned to the queue by one proposal; more wait for the next tick.
pub const EXPIRY_BATCH: usize = 256;

/// Starts the expiry loop; it stops when the router is dropped.
pub(crate) fn spawn(router: Weak<Router>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EXPIRY_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(router) = router.upgrade() else {
                return;
            };
            expire_due(&router).await;
        }
    });
}

/// One pass over the data shards this node leads.
async fn expire_due(router: &Router) {
    let groups = router.groups();
    for group in groups.led_shards() {
        let kv = GroupKv::new(groups.db(), group);
        let ids = match due_leases(&kv, now_ms(), EXPIRY_BATCH) {
            Ok(ids) if !ids.is_empty() => ids,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(shard = group, error = %e, "reading the lease index failed");
                continue;
            }
        };
        let count = ids.len();
        let cmd = ShardCommand::TaskExpireLeases { ids };
        match router
            .execute_local(group, &ClientRequest::Write(cmd))
            .await
        {
            crate::request::ForwardResult::Done(Ok(_)) => {
                tracing::debug!(shard = group, count, "returned tasks with ended leases");
            }
            crate::request::ForwardResult::Done(Err(e)) => {
                tracing::warn!(shard = group, error = %e, "proposing lease expiry failed");
            }
            crate::request::ForwardResult::NotLeader { .. } => {}
        }
    }
}
