//! Membership changes that must wait for data: a new replica becomes a voter only once it holds
//! the log.

use std::time::Duration;

use openraft::async_runtime::WatchReceiver;

use crate::error::CoreError;
use crate::{GroupId, NodeId, Raft};

/// Waits, for at most `timeout`, until learner `id` of `group` holds every entry this node (its
/// leader) held when the wait began. A new replica promoted before that would count towards
/// the group's quorum without its data: a majority of a three-replica group could then hang on
/// one node. (openraft's blocking `add_learner` is not enough: it counts a learner up to
/// thousands of entries behind as caught up.)
pub async fn wait_caught_up(
    raft: &Raft,
    group: GroupId,
    id: NodeId,
    timeout: Duration,
) -> Result<(), CoreError> {
    let target = raft.metrics().borrow_watched().last_log_index;
    let caught_up = |m: &openraft::RaftMetrics<_>| match &m.replication {
        Some(replication) => replication
            .get(&id)
            .is_some_and(|matched| matched.as_ref().map(|l| l.index()) >= target),
        // Not the leader any more: stop waiting; the check below reports it.
        None => true,
    };
    let waited = raft
        .wait(Some(timeout))
        .metrics(caught_up, "the new replica catches up")
        .await;
    match waited {
        Ok(m) if m.replication.is_some() => Ok(()),
        Ok(_) => Err(CoreError::unavailable(format!(
            "not the leader of group {group} any more"
        ))),
        Err(_) => Err(CoreError::unavailable(format!(
            "node {id} has not caught up with group {group} yet"
        ))),
    }
}
