//! Recovery paths of a cluster of real `conclave` processes: a dead node's replicas re-created
//! elsewhere, a replica too far behind for the log catching up through a snapshot.
//!
//! Node settings that make these paths quick (a short dead-node timeout, frequent snapshots)
//! are passed as `CONCLAVE_*` variables. Run `cargo build -p conclave-node` first.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use conclave_cluster_tests::{
    retry_transient, wait_until, Cluster, Dataset, NodeClient, ShardKind, ShardStatus,
};
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};
use tracing::info;

/// Deadline of waits on replica movement and catch-up.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(120);
/// Deadline of one read, retries of transient errors included.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Seconds of silence after which a node counts as dead in the dead-node test.
const DEAD_NODE_TIMEOUT_SECS: u64 = 3;
/// Seconds of silence after which a node counts as dead in the silent-node test: long enough
/// for a few control rounds while the silent node still counts as alive.
const SILENT_NODE_TIMEOUT_SECS: u64 = 10;
/// Log entries between snapshots in the catch-up test.
const SNAPSHOT_AFTER_LOGS: u64 = 200;
/// Distinct keys of the lagging shard the catch-up test writes.
const LAG_KEYS: usize = 50;
/// Puts of each of those keys: 50 × 30 = 1500 entries, well past a snapshot and the 1000 logs
/// a leader keeps after one.
const LAG_ROUNDS: u64 = 30;
/// Keys written at once in the catch-up test (each key by one writer, in order).
const WRITERS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_node_replicas_are_recreated_elsewhere() -> Result<()> {
    let mut cluster = Cluster::builder()
        .nodes(4)
        .env(
            "CONCLAVE_DEAD_NODE_TIMEOUT_SECS",
            DEAD_NODE_TIMEOUT_SECS.to_string(),
        )
        .start()
        .await?;

    // Write data across the four nodes.
    let data = Dataset::write(cluster.api(1), "before-death").await?;

    // SIGKILL the non-bootstrap node holding the most replicas, and leave it dead.
    let (victim, victim_id, held) = cluster.busiest_non_bootstrap_node().await?;
    ensure!(held > 0, "node {victim_id} holds no replica");
    info!(victim_id, replicas = held, "killing node");
    cluster.kill(victim)?;

    // Its replicas move to the survivors: no shard lists it, each has 3 replicas and a leader.
    let survivors: Vec<usize> = (0..cluster.len()).filter(|&i| i != victim).collect();
    cluster
        .wait_replicas_moved_off(survivors[0], victim_id, RECOVERY_TIMEOUT)
        .await?;

    // Everything is readable through every survivor.
    for &i in &survivors {
        data.verify(cluster.api(i))
            .await
            .with_context(|| format!("via node {i}"))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_replica_catches_up_through_a_snapshot() -> Result<()> {
    let mut cluster = Cluster::builder()
        .nodes(3)
        .shards(4)
        .env(
            "CONCLAVE_SNAPSHOT_AFTER_LOGS",
            SNAPSHOT_AFTER_LOGS.to_string(),
        )
        .start()
        .await?;

    // Pick a shard through a key, and keys enough that live in it.
    let shard = cluster.locate(ShardKind::Context, "lag-0").await?.shard;
    let keys = keys_of_shard(cluster.api(0), shard, LAG_KEYS).await?;
    let leader_id = cluster.leader_of(ShardKind::Context, &keys[0]).await?;

    // Kill a follower replica of that shard, preferring one that is not the bootstrap node.
    let replicas = cluster.locate(ShardKind::Context, &keys[0]).await?.replicas;
    let followers: Vec<usize> = replicas
        .iter()
        .filter(|&&id| id != leader_id)
        .filter_map(|&id| cluster.node_index_by_id(id))
        .collect();
    let victim = followers
        .iter()
        .copied()
        .find(|&i| i > 0)
        .or(followers.first().copied())
        .with_context(|| format!("no follower among replicas {replicas:?}"))?;
    let victim_id = cluster.node(victim).node_id();
    let leader = cluster
        .node_index_by_id(leader_id)
        .context("the leader is not a sandbox node")?;
    // The shard is idle, so the dead replica's log ends at or before the leader's applied index.
    let applied_at_kill = shard_view(&cluster, shard)
        .await?
        .applied
        .context("no applied index for the shard")?;
    info!(
        shard,
        leader_id, victim_id, applied_at_kill, "killing a follower replica"
    );
    cluster.kill(victim)?;

    // Write 1500 puts to the shard through the survivors, so its leader snapshots and purges
    // the log the dead replica would need.
    let survivors: Vec<NodeClient> = (0..cluster.len())
        .filter(|&i| i != victim)
        .map(|i| cluster.api(i).clone())
        .collect();
    let finals = write_rounds(&survivors, &keys).await?;
    let leader_applied = shard_view(&cluster, shard).await?.applied;
    info!(shard, ?leader_applied, "writes done");
    let leader_applied = leader_applied.context("no applied index for the shard")?;

    // The leader purges lazily (openraft defers it while a replication stream to the dead node
    // has those entries in flight), so wait until its log says it purged past the dead
    // replica's last entry; only this shard has the 1000+ entries a purge needs.
    wait_until(
        "the leader to purge the entries the dead replica needs",
        RECOVERY_TIMEOUT,
        async || {
            let purged = purged_upto(&cluster.stderr_log(leader)?);
            ensure!(
                purged > Some(applied_at_kill),
                "leader purged up to {purged:?}, the dead replica is at {applied_at_kill}"
            );
            Ok(true)
        },
    )
    .await?;

    // Restart the dead replica and wait until it has applied everything the leader had.
    let log_before = cluster.stderr_log(victim)?.len();
    cluster.restart(victim).await?;
    wait_until(
        "the restarted replica to catch up",
        RECOVERY_TIMEOUT,
        async || {
            let view = shard_view(&cluster, shard).await?;
            let applied = view.replica_applied.get(&victim_id).copied();
            let lag = view.lag.get(&victim_id).copied().flatten();
            let caught_up = lag == Some(0) || (applied.is_some() && applied == view.applied);
            ensure!(
            caught_up && applied >= Some(leader_applied),
            "replica applied {applied:?}, lag {lag:?}; leader applied {:?} (was {leader_applied} \
             after the writes)",
            view.applied
        );
            Ok(true)
        },
    )
    .await?;

    // It got there by installing a snapshot, not by replaying the purged log.
    let log = cluster.stderr_log(victim)?;
    let since_restart = log.get(log_before..).unwrap_or_default();
    let group = format!("group={shard}");
    ensure!(
        since_restart
            .lines()
            .any(|line| line.contains("installed snapshot") && line.contains(&group)),
        "node {victim_id} never logged \"installed snapshot\" for shard {shard} after restarting"
    );

    // Every final value reads back through the restarted node.
    let api = cluster.api(victim);
    for (key, expected) in &finals {
        let entry = retry_transient(READ_TIMEOUT, async || api.get_context(key).await)
            .await
            .with_context(|| format!("reading {key}"))?;
        ensure!(
            entry.value == *expected && entry.version == LAG_ROUNDS,
            "{key}: expected {expected} at version {LAG_ROUNDS}, read {entry:?}"
        );
    }
    Ok(())
}

/// The first `count` keys `lag-<n>` that `locate` puts in `shard`.
async fn keys_of_shard(api: &NodeClient, shard: u64, count: usize) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    for n in 0.. {
        let key = format!("lag-{n}");
        if api.locate(ShardKind::Context, &key).await?.shard == shard {
            keys.push(key);
            if keys.len() == count {
                break;
            }
        }
        ensure!(n < 100 * count, "too few keys land in shard {shard}");
    }
    Ok(keys)
}

/// Puts each key `LAG_ROUNDS` times in order, `WRITERS` keys at once, spreading the puts over
/// `clients`; returns each key's last value. Nothing is retried: a majority is up, so every put
/// must succeed, each at the version its round implies.
async fn write_rounds(clients: &[NodeClient], keys: &[String]) -> Result<BTreeMap<String, Value>> {
    futures::stream::iter(keys.iter().enumerate())
        .map(|(k, key)| async move {
            let mut last = Value::Null;
            for round in 0..LAG_ROUNDS {
                let value = json!({ "key": key, "round": round });
                let client = &clients[(k + round as usize) % clients.len()];
                let entry = client
                    .put_context(key, value.clone())
                    .await
                    .with_context(|| format!("put {key} round {round}"))?;
                ensure!(
                    entry.version == round + 1,
                    "put {key} round {round} got version {}",
                    entry.version
                );
                last = value;
            }
            anyhow::Ok((key.clone(), last))
        })
        .buffer_unordered(WRITERS)
        .try_collect()
        .await
}

/// The highest index in openraft's `purge log, last_purged: .., purge_upto: T1-N1.410` lines
/// of a node's log.
fn purged_upto(log: &str) -> Option<u64> {
    log.lines()
        .filter(|line| line.contains("purge log"))
        .filter_map(|line| {
            let upto = line.split("purge_upto: ").nth(1)?;
            let log_id = upto.split(|c: char| c.is_whitespace() || c == ',').next()?;
            log_id.rsplit('.').next()?.parse().ok()
        })
        .max()
}

/// `shard` in the cluster status, as the first running node reports it.
async fn shard_view(cluster: &Cluster, shard: u64) -> Result<ShardStatus> {
    let via = *cluster.running().first().context("no running node")?;
    cluster
        .status(via)
        .await?
        .shard(shard)
        .cloned()
        .with_context(|| format!("shard {shard} missing from the status"))
}

#[test]
fn purged_upto_reads_the_highest_purge() {
    let log = "INFO openraft::engine::handler::log_handler: purge log, last_purged: None, \
               purge_upto: T1-N1.210\n\
               INFO other line\n\
               INFO openraft::engine::handler::log_handler: purge log, last_purged: T1-N1.210, \
               purge_upto: T1-N1.410\n";
    assert_eq!(purged_upto(log), Some(410));
    assert_eq!(purged_upto("INFO nothing purged"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_meta_leader_resumes_the_moves_in_progress() -> Result<()> {
    let mut cluster = Cluster::builder().nodes(3).start().await?;
    let data = Dataset::write(cluster.api(0), "before-moves").await?;

    // A fourth node joins and is frozen as soon as it has an id, before any replica can move
    // onto it, so the moves onto it cannot finish: a move waits for its new replica to catch up.
    let fourth = cluster.add_node_unready().await?;
    let fourth_id = cluster.node(fourth).node_id();
    cluster.pause(fourth)?;

    // The meta group records at least one move onto it.
    wait_until(
        "a move onto the frozen node",
        RECOVERY_TIMEOUT,
        async || {
            let status = cluster.status(0).await?;
            Ok(status.shards.iter().any(|s| s.moving.is_some()))
        },
    )
    .await?;
    let status = cluster.status(0).await?;
    let meta_leader = status.meta.leader.context("a meta leader")?;
    let leader_index = cluster
        .node_index_by_id(meta_leader)
        .context("meta leader is a sandbox node")?;
    ensure!(
        leader_index != fourth,
        "the frozen node cannot lead the meta group"
    );
    let survivor = (0..3)
        .find(|&i| i != leader_index)
        .expect("two of three survive");
    info!(
        meta_leader,
        "killing the meta leader while moves are in progress"
    );

    // The meta leader dies; the recorded moves survive it and a new meta leader takes over.
    cluster.kill(leader_index)?;
    wait_until(
        "a new meta leader that still records the moves",
        RECOVERY_TIMEOUT,
        async || {
            let status = cluster.status(survivor).await?;
            let new_leader = status.meta.leader.filter(|l| *l != meta_leader);
            Ok(new_leader.is_some() && status.shards.iter().any(|s| s.moving.is_some()))
        },
    )
    .await?;

    // Thawed, the fourth node catches up and the new meta leader finishes every move.
    cluster.resume(fourth)?;
    wait_holds_replicas(&cluster, survivor, fourth_id).await?;

    // The killed node comes back, the cluster converges, and nothing written is lost.
    cluster.restart(leader_index).await?;
    cluster.wait_converged().await?;
    data.verify(cluster.api(fourth)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_goes_silent_after_joining_gets_no_vote() -> Result<()> {
    // Two nodes: every shard has two replicas and the meta group two voters, so a third node
    // is wanted in every group.
    let mut cluster = Cluster::builder()
        .nodes(2)
        .env(
            "CONCLAVE_DEAD_NODE_TIMEOUT_SECS",
            SILENT_NODE_TIMEOUT_SECS.to_string(),
        )
        .start()
        .await?;
    let data = Dataset::write(cluster.api(0), "before-silence").await?;

    // A third node joins and freezes at once. Replicas start moving onto it, but none can catch
    // up, so it may not become a voter anywhere; once it counts as dead the moves are
    // abandoned and everything stays on the two live nodes.
    let third = cluster.add_node_unready().await?;
    let third_id = cluster.node(third).node_id();
    cluster.pause(third)?;
    wait_until(
        "a move onto the frozen node abandoned",
        RECOVERY_TIMEOUT,
        async || {
            for i in 0..2 {
                if cluster.stderr_log(i)?.contains("replica move abandoned") {
                    return Ok(true);
                }
            }
            Ok(false)
        },
    )
    .await?;
    wait_until(
        "every move onto the frozen node abandoned",
        RECOVERY_TIMEOUT,
        async || {
            let status = cluster.status(0).await?;
            for shard in &status.shards {
                ensure!(
                    shard.moving.is_none() && shard.leader.is_some(),
                    "shard {} is moving or has no leader",
                    shard.id
                );
                ensure!(
                    shard.replicas.len() == 2 && !shard.replicas.contains(&third_id),
                    "shard {} has replicas {:?}",
                    shard.id,
                    shard.replicas
                );
            }
            ensure!(
                !status.meta.voters.contains(&third_id),
                "node {third_id} votes in the meta group: {:?}",
                status.meta.voters
            );
            Ok(true)
        },
    )
    .await?;
    for i in 0..2 {
        data.verify(cluster.api(i))
            .await
            .with_context(|| format!("via node {i}"))?;
    }

    // Thawed, the third node is alive again: it gets its replicas and a meta vote.
    cluster.resume(third)?;
    wait_holds_replicas(&cluster, 0, third_id).await?;
    wait_until(
        "the third node voting in the meta group",
        RECOVERY_TIMEOUT,
        async || Ok(cluster.status(0).await?.meta.voters.contains(&third_id)),
    )
    .await?;
    data.verify(cluster.api(third)).await
}

/// Waits until, as node `via` reports, no move is in progress, every shard has a leader and
/// node `id` holds at least one replica.
async fn wait_holds_replicas(cluster: &Cluster, via: usize, id: u64) -> Result<()> {
    wait_until(
        "every move finished, some onto the new node",
        RECOVERY_TIMEOUT,
        async || {
            let status = cluster.status(via).await?;
            let idle = status
                .shards
                .iter()
                .all(|s| s.moving.is_none() && s.leader.is_some());
            let held = status
                .shards
                .iter()
                .filter(|s| s.replicas.contains(&id))
                .count();
            ensure!(
                idle && held > 0,
                "moves idle: {idle}, replicas on node {id}: {held}"
            );
            Ok(true)
        },
    )
    .await
}
