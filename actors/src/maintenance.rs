//! Periodic maintenance of the shards this node leads: topic retention and the purge of deleted
//! topics.
//!
//! Every interval, for each data shard whose leader is this node, it proposes
//! [`ShardCommand::TopicCompact`]; apply decides deterministically (from the stored state and the
//! entry's leader time) what to delete, at most a budget of rows per entry. While an entry
//! reports more work left, another is proposed, up to a bounded number of rounds per tick, so a
//! large backlog is worked off over several ticks without starving client writes. Nothing here
//! is state: a new leader simply starts proposing after its first tick.

use std::sync::Arc;
use std::time::Duration;

use conclave_raft::kv::KvRead;
use conclave_raft::storage::GroupKv;
use conclave_raft::{ShardCommand, ShardResponse, META_GROUP};

use crate::request::{ClientRequest, ClientResponse};
use crate::router::Router;

/// Rows one compaction entry may delete.
pub const COMPACTION_BUDGET: u64 = 1000;
/// Compaction entries proposed per shard per tick at most.
const MAX_ROUNDS_PER_TICK: usize = 8;

/// Proposes a compaction on every shard this node leads, every `interval`, for as long as the
/// router lives.
pub async fn run(router: Arc<Router>, interval: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for group in router.groups().hosted() {
            if group == META_GROUP {
                continue;
            }
            for _ in 0..MAX_ROUNDS_PER_TICK {
                if !router.groups().get(group).is_some_and(|r| r.is_leader())
                    || !has_topic_rows(&router, group)
                {
                    break;
                }
                let cmd = ShardCommand::TopicCompact {
                    budget: COMPACTION_BUDGET,
                };
                match router
                    .execute_local(group, &ClientRequest::Write(cmd))
                    .await
                {
                    crate::request::ForwardResult::Done(Ok(ClientResponse::Write(
                        ShardResponse::TopicCompacted(c),
                    ))) => {
                        if c.deleted > 0 {
                            tracing::debug!(shard = group, deleted = c.deleted, "compacted topics");
                        }
                        if !c.more {
                            break;
                        }
                    }
                    other => {
                        tracing::debug!(shard = group, outcome = ?other, "topic compaction not done");
                        break;
                    }
                }
            }
        }
    }
}

/// Whether the shard holds any topic or deleted-topic row, read from the local replica: a shard
/// without topics gets no compaction entries. Only an optimization; apply decides the work.
fn has_topic_rows(router: &Router, group: conclave_raft::GroupId) -> bool {
    let kv = GroupKv::new(router.groups().db(), group);
    [b"t\0".as_slice(), b"p\0".as_slice()].iter().any(|prefix| {
        kv.scan(prefix, None, 1)
            .map_or(true, |rows| !rows.is_empty())
    })
}
