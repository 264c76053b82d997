//! Cluster behaviour seen through the public contract, against real `conclave` processes.
//!
//! Each test starts its own [`Cluster`], reads as a sequence of phases, and checks one property
//! named by the test. Waits poll an observable state with a deadline; the only sleeps are
//! back-offs between retried requests. Run `cargo build -p conclave-node` first.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use conclave_cluster_tests::{
    retry_transient, wait_for, wait_until, ApiError, Cluster, Dataset, NodeClient, ShardKind, Task,
    TaskId,
};
use futures::future::join_all;
use futures::StreamExt;
use serde_json::{json, Value};
use tracing::info;

/// Deadline of waits and retries in these tests.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Deadline of waits on shard movement (join, removal), which takes several Raft rounds.
const REBALANCE_TIMEOUT: Duration = Duration::from_secs(120);
/// Deadline for writes to succeed again after a leader is killed.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed write before the next attempt, so a dead node is not hammered.
const RETRY_BACKOFF: Duration = Duration::from_millis(20);
/// Tasks contended for in the claim tests.
const CLAIM_TASKS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_write_restart_read() -> Result<()> {
    let mut cluster = Cluster::builder().nodes(1).start().await?;

    // Write context keys, a topic with 10 messages and tasks.
    let data = Dataset::write(cluster.api(0), "one").await?;
    data.verify(cluster.api(0)).await?;

    // A graceful stop and restart keeps everything.
    cluster.stop(0).await?;
    cluster.restart(0).await?;
    data.verify(cluster.api(0))
        .await
        .context("after stop and restart")?;

    // So do SIGKILL and restart: acknowledged writes were durable.
    cluster.kill(0)?;
    cluster.restart(0).await?;
    data.verify(cluster.api(0))
        .await
        .context("after kill and restart")?;

    // Versions and sequence numbers continue where they stopped.
    let first = &data.entries[0];
    let entry = cluster.put_context(0, &first.key, json!("after")).await?;
    ensure!(
        entry.version == first.version + 1,
        "version {}",
        entry.version
    );
    let published = cluster.publish(0, &data.topic, json!("after")).await?;
    ensure!(
        published.seq == data.messages.len() as u64 + 1,
        "seq {}",
        published.seq
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_write_through_each_read_through_another() -> Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let n = cluster.len();

    // Context: a key written through node i reads back through node i+1.
    for i in 0..n {
        let key = format!("ctx-{i}");
        let written = cluster.put_context(i, &key, json!({ "via": i })).await?;
        ensure!(written.version == 1, "{key}: version {}", written.version);
        let read = cluster.get_context((i + 1) % n, &key).await?;
        ensure!(read == written, "{key}: wrote {written:?}, read {read:?}");
    }

    // Topics: publishes through every node share one gap-free sequence.
    cluster.create_topic(0, "shared").await?;
    let mut published = Vec::new();
    for round in 0..5 {
        for i in 0..n {
            let body = json!({ "via": i, "round": round });
            let answer = cluster.publish(i, "shared", body.clone()).await?;
            published.push((answer.seq, body));
        }
    }
    let seqs: Vec<u64> = published.iter().map(|(seq, _)| *seq).collect();
    let expected: Vec<u64> = (1..=published.len() as u64).collect();
    ensure!(seqs == expected, "publish seqs {seqs:?}");

    // Reading through any node returns all of them, in order.
    for i in 0..n {
        let page = cluster.read_topic(i, "shared").await?;
        let read: Vec<(u64, Value)> = page.items.into_iter().map(|m| (m.seq, m.body)).collect();
        ensure!(read == published, "via node {i}: read {read:?}");
    }

    // Tasks: created through node i, read through i+1, claimed through i+2, seen through i.
    for i in 0..n {
        let task = cluster.create_task(i, &format!("task-{i}")).await?;
        ensure!(
            task.status == "open" && task.claimed_by.is_none(),
            "created {task:?}"
        );
        let read = cluster.get_task((i + 1) % n, &task.id).await?;
        ensure!(read == task, "created {task:?}, read {read:?}");
        let agent = format!("agent-{i}");
        let claimed = cluster.claim_task((i + 2) % n, &task.id, &agent).await?;
        ensure!(
            claimed.status == "claimed" && claimed.claimed_by.as_deref() == Some(agent.as_str()),
            "claimed {claimed:?}"
        );
        let seen = cluster.get_task(i, &task.id).await?;
        ensure!(
            seen.claimed_by == claimed.claimed_by && seen.fencing_token == claimed.fencing_token,
            "claimed {claimed:?}, read {seen:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_loses_no_acknowledged_write() -> Result<()> {
    const HOT_KEY: &str = "hot";
    let mut cluster = Cluster::builder().nodes(3).start().await?;

    // Find the leader of the hot key's shard; writes go through the two other nodes.
    let leader_id = cluster.leader_of(ShardKind::Context, HOT_KEY).await?;
    let leader = cluster
        .node_index_by_id(leader_id)
        .context("the leader is not a sandbox node")?;
    let survivors: Vec<usize> = (0..cluster.len()).filter(|&i| i != leader).collect();
    let clients: Vec<NodeClient> = survivors.iter().map(|&i| cluster.api(i).clone()).collect();
    info!(leader_id, ?survivors, "hot key leader found");

    // Two writers run: one rewrites the hot key, one rotates over other keys.
    let log = WriteLog::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers = [
        tokio::spawn(run_writer(
            clients.clone(),
            |_| HOT_KEY.to_string(),
            log.clone(),
            stop.clone(),
        )),
        tokio::spawn(run_writer(
            clients.clone(),
            |n| format!("cold-{}", n % 16),
            log.clone(),
            stop.clone(),
        )),
    ];
    let progress = wait_until("hot key writes before the kill", TIMEOUT, async || {
        Ok(log.acked_since(HOT_KEY, None) >= 20)
    })
    .await;

    // Kill the leader with SIGKILL while the writers run.
    let killed_at = Instant::now();
    let killed = progress.and_then(|()| cluster.kill(leader));

    // Writes to the hot key succeed again through a survivor within the deadline.
    let failover = match killed {
        Ok(()) => {
            wait_for(
                "a hot key write after the kill",
                FAILOVER_TIMEOUT,
                async || Ok(log.first_ack_started_after(HOT_KEY, killed_at)),
            )
            .await
        }
        Err(error) => Err(error),
    };
    let settled = match &failover {
        Ok(_) => {
            wait_until("hot key writes after failover", TIMEOUT, async || {
                Ok(log.acked_since(HOT_KEY, Some(killed_at)) >= 20)
            })
            .await
        }
        Err(_) => Ok(()),
    };
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await?;
    }
    let failover = failover? - killed_at;
    settled?;
    println!("failover time after killing the leader: {failover:?}");
    info!(?failover, "failover measured");

    // Every key holds its last acknowledged value, or a later attempted one.
    let attempts = log.snapshot();
    let finals = read_finals(cluster.api(survivors[0]), &attempts).await?;
    check_no_lost_write(&attempts, &finals)?;

    // The killed node restarts and its replica of the hot key's shard catches up.
    cluster.restart(leader).await?;
    let shard = cluster.locate(ShardKind::Context, HOT_KEY).await?.shard;
    wait_until("the restarted replica to catch up", TIMEOUT, async || {
        replica_caught_up(&cluster, shard, leader_id).await
    })
    .await?;

    // Reads through the restarted node see the same values.
    let through_restarted = read_finals(cluster.api(leader), &attempts).await?;
    ensure!(through_restarted == finals, "restarted node disagrees");
    Ok(())
}

/// A node stopped with SIGTERM while writes flow through the cluster exits with status 0
/// (`Cluster::stop` requires it) and loses nothing acknowledged. Graceful stops under load used
/// to end in SIGABRT or SIGSEGV: exit handlers tore RocksDB down while other threads held it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_restarts_under_load_exit_cleanly() -> Result<()> {
    const ROUNDS: usize = 6;
    let mut cluster = Cluster::builder().nodes(3).start().await?;
    let clients: Vec<NodeClient> = (0..cluster.len()).map(|i| cluster.api(i).clone()).collect();
    let log = WriteLog::default();
    let stop = Arc::new(AtomicBool::new(false));
    // Each writer has keys of its own, so a value names one attempt.
    let key_sets: [fn(u64) -> String; 4] = [
        |n| format!("graceful-a-{}", n % 8),
        |n| format!("graceful-b-{}", n % 8),
        |n| format!("graceful-c-{}", n % 8),
        |n| format!("graceful-d-{}", n % 8),
    ];
    let writers: Vec<_> = key_sets
        .into_iter()
        .map(|key_of| {
            tokio::spawn(run_writer(
                clients.clone(),
                key_of,
                log.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let mut outcome = Ok(());
    for round in 0..ROUNDS {
        let victim = 1 + round % 2;
        let before = log.snapshot().len();
        outcome = async {
            wait_until("writes before the stop", TIMEOUT, async || {
                Ok(log.snapshot().len() >= before + 50)
            })
            .await?;
            cluster.stop(victim).await?;
            cluster.restart(victim).await
        }
        .await
        .with_context(|| format!("round {round}, node {victim}"));
        if outcome.is_err() {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await?;
    }
    outcome?;
    let attempts = log.snapshot();
    let finals = read_finals(cluster.api(0), &attempts).await?;
    check_no_lost_write(&attempts, &finals)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claim_has_one_winner() -> Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let n = cluster.len();

    // Create the tasks.
    let mut ids = Vec::new();
    for t in 0..CLAIM_TASKS {
        ids.push(cluster.create_task(t % n, &format!("task-{t}")).await?.id);
    }

    // Every task is claimed through all three nodes at once, by a distinct agent per node.
    let cluster = &cluster;
    let results = join_all(ids.iter().map(|id| async move {
        let claims = (0..n).map(|i| async move { cluster.claim_task(i, id, &agent(i)).await });
        (id, join_all(claims).await)
    }))
    .await;

    // Exactly one claim won per task, the others got 409, and the task names the winner.
    for (id, outcomes) in results {
        let winners: Vec<usize> = (0..n).filter(|&i| outcomes[i].is_ok()).collect();
        ensure!(winners.len() == 1, "task {id}: winners {winners:?}");
        for (i, outcome) in outcomes.iter().enumerate() {
            if let Err(error) = outcome {
                ensure!(
                    error.is_status(409),
                    "task {id}: claim via node {i}: {error}"
                );
            }
        }
        let task = cluster.get_task(0, id).await?;
        let winner = agent(winners[0]);
        ensure!(
            task.claimed_by.as_deref() == Some(winner.as_str()),
            "task {id}: {winner} won but the task reads {task:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_has_one_winner_under_leader_kill() -> Result<()> {
    let mut cluster = Cluster::builder().nodes(3).start().await?;
    let n = cluster.len();

    // Create the tasks and find the leader of the queue shard they live in.
    let mut ids = Vec::new();
    for t in 0..CLAIM_TASKS {
        ids.push(cluster.create_task(t % n, &format!("task-{t}")).await?.id);
    }
    let leader_id = cluster.leader_of(ShardKind::Queue, "default").await?;
    let leader = cluster
        .node_index_by_id(leader_id)
        .context("the leader is not a sandbox node")?;
    let clients: Vec<NodeClient> = (0..n).map(|i| cluster.api(i).clone()).collect();

    // Claims run a few tasks at a time; the task half-way triggers the kill, and the last
    // quarter waits for it, so claims are in flight during the kill and others come after.
    let kill_now = tokio::sync::Notify::new();
    let (killed_tx, killed_rx) = tokio::sync::watch::channel(false);
    let claims = futures::stream::iter(ids.iter().enumerate())
        .map(|(t, id)| {
            let (clients, kill_now, mut killed_rx) = (&clients, &kill_now, killed_rx.clone());
            async move {
                if t == CLAIM_TASKS / 2 {
                    kill_now.notify_one();
                }
                if t >= CLAIM_TASKS * 3 / 4 {
                    let _ = killed_rx.wait_for(|&killed| killed).await;
                }
                let claims = (0..n).map(|i| claim_with_retries(clients, i, id, agent(i)));
                (id.clone(), join_all(claims).await)
            }
        })
        .buffer_unordered(4)
        .collect::<Vec<_>>();
    let kill = async {
        kill_now.notified().await;
        let killed = cluster.kill(leader);
        let _ = killed_tx.send(true);
        killed
    };
    let (results, killed) = tokio::join!(claims, kill);
    killed?;
    info!(leader_id, "queue leader killed mid-way");

    // Per task: at most one 200, and the final claimant is the winner, or, if the winner's
    // answer was lost, an agent whose claim was retried; a first-try 409 never owns the task.
    let survivor = (0..n).find(|&i| i != leader).expect("two survivors");
    for (id, outcomes) in results {
        let task = retry_transient(TIMEOUT, async || cluster.get_task(survivor, &id).await)
            .await
            .with_context(|| format!("reading task {id}"))?;
        check_one_claimant(&id, &outcomes, &task)?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fourth_node_joins_and_takes_replicas_and_leaderships() -> Result<()> {
    let mut cluster = Cluster::builder().nodes(3).start().await?;

    // Write data while the cluster has three nodes.
    let data = Dataset::write(cluster.api(0), "before-join").await?;

    // A fourth node joins.
    let fourth = cluster.add_node().await?;
    let id = cluster.node(fourth).node_id();

    // It ends up holding replicas and leading a shard, every shard still fully replicated.
    wait_until(
        "the new node to take replicas and a leadership",
        REBALANCE_TIMEOUT,
        async || {
            let status = cluster.status(0).await?;
            let held = status
                .shards
                .iter()
                .filter(|s| s.replicas.contains(&id))
                .count();
            let led = status
                .shards
                .iter()
                .filter(|s| s.leader == Some(id))
                .count();
            let full = status
                .shards
                .iter()
                .all(|s| s.replicas.len() == 3 && s.leader.is_some());
            ensure!(
                held > 0 && led > 0 && full,
                "node {id} holds {held} replicas, leads {led} shards, all shards full: {full}"
            );
            Ok(true)
        },
    )
    .await?;
    cluster.wait_converged().await?;

    // Data written before the join is readable through the new node.
    data.verify(cluster.api(fourth)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_node_replicas_recreated_elsewhere() -> Result<()> {
    let mut cluster = Cluster::builder().nodes(4).start().await?;

    // Write data across the four nodes.
    let data = Dataset::write(cluster.api(1), "before-removal").await?;

    // Remove the non-bootstrap node holding the most replicas.
    let (victim, victim_id, held) = cluster.busiest_non_bootstrap_node().await?;
    info!(victim_id, replicas = held, "removing node");
    cluster.remove_node(victim_id).await?;

    // No shard lists it any more and every shard has three replicas and a leader again.
    cluster
        .wait_replicas_moved_off(0, victim_id, REBALANCE_TIMEOUT)
        .await?;
    cluster.wait_converged().await?;

    // Everything is readable through every remaining node.
    let remaining: Vec<usize> = (0..cluster.len()).filter(|&i| i != victim).collect();
    for &i in &remaining {
        data.verify(cluster.api(i))
            .await
            .with_context(|| format!("via node {i}"))?;
    }

    // The removed node's process is no longer needed.
    cluster.kill(victim)?;
    data.verify(cluster.api(remaining[0])).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_restart_keeps_acknowledged_data() -> Result<()> {
    let mut cluster = Cluster::builder().nodes(3).start().await?;

    // Write data.
    let data = Dataset::write(cluster.api(1), "whole").await?;

    // Kill every node, then start them all again.
    for i in 0..cluster.len() {
        cluster.kill(i)?;
    }
    cluster.restart_all().await?;

    // Context, topic sequence numbers and tasks are all back, through every node.
    for i in 0..cluster.len() {
        data.verify(cluster.api(i))
            .await
            .with_context(|| format!("via node {i}"))?;
    }
    Ok(())
}

/// One put a writer attempted, and when it was acknowledged, if it was.
#[derive(Debug, Clone)]
struct Attempt {
    key: String,
    value: Value,
    started: Instant,
    acked: Option<Instant>,
}

/// Every put the writers attempted, in attempt order; each key has a single writer, so the
/// attempts on one key are ordered.
#[derive(Debug, Clone, Default)]
struct WriteLog(Arc<Mutex<Vec<Attempt>>>);

impl WriteLog {
    fn start(&self, key: &str, value: &Value) -> usize {
        let mut attempts = self.0.lock().unwrap();
        attempts.push(Attempt {
            key: key.to_string(),
            value: value.clone(),
            started: Instant::now(),
            acked: None,
        });
        attempts.len() - 1
    }

    fn ack(&self, index: usize) {
        self.0.lock().unwrap()[index].acked = Some(Instant::now());
    }

    /// Acknowledged puts of `key` started after `since` (all when `None`).
    fn acked_since(&self, key: &str, since: Option<Instant>) -> usize {
        let attempts = self.0.lock().unwrap();
        attempts
            .iter()
            .filter(|a| a.key == key && a.acked.is_some())
            .filter(|a| since.is_none_or(|since| a.started >= since))
            .count()
    }

    /// When the first put of `key` that started after `since` was acknowledged.
    fn first_ack_started_after(&self, key: &str, since: Instant) -> Option<Instant> {
        let attempts = self.0.lock().unwrap();
        attempts
            .iter()
            .filter(|a| a.key == key && a.started >= since)
            .find_map(|a| a.acked)
    }

    fn snapshot(&self) -> Vec<Attempt> {
        self.0.lock().unwrap().clone()
    }
}

/// Puts `key_of(n)` = `{"n": n, ...}` for n = 0, 1, ... through `clients` in turn until `stop`,
/// recording every attempt in `log`.
async fn run_writer(
    clients: Vec<NodeClient>,
    key_of: fn(u64) -> String,
    log: WriteLog,
    stop: Arc<AtomicBool>,
) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = key_of(n);
        let value = json!({ "key": key, "n": n });
        let index = log.start(&key, &value);
        let client = &clients[n as usize % clients.len()];
        match client.put_context(&key, value).await {
            Ok(_) => log.ack(index),
            Err(_) => tokio::time::sleep(RETRY_BACKOFF).await,
        }
        n += 1;
    }
}

/// The current value of every key in `attempts`, read through `api`.
async fn read_finals(api: &NodeClient, attempts: &[Attempt]) -> Result<BTreeMap<String, Value>> {
    let keys: BTreeSet<&str> = attempts.iter().map(|a| a.key.as_str()).collect();
    let mut finals = BTreeMap::new();
    for key in keys {
        let entry = retry_transient(TIMEOUT, async || api.get_context(key).await).await;
        match entry {
            Ok(entry) => finals.insert(key.to_string(), entry.value),
            Err(error) if error.is_status(404) => finals.insert(key.to_string(), Value::Null),
            Err(error) => return Err(error).with_context(|| format!("reading {key}")),
        };
    }
    Ok(finals)
}

/// Each key's final value is its last acknowledged put or a later attempted one (an
/// unacknowledged put may or may not have been applied). This assumes an unanswered put is not
/// applied after a later put of the same key was acknowledged: Raft orders entries by log
/// position, and the client timeout (10 s) dwarfs the time a proposal waits in a queue.
fn check_no_lost_write(attempts: &[Attempt], finals: &BTreeMap<String, Value>) -> Result<()> {
    let mut acked_total = 0;
    for (key, value) in finals {
        let history: Vec<&Attempt> = attempts.iter().filter(|a| &a.key == key).collect();
        let last_acked = history.iter().rposition(|a| a.acked.is_some());
        acked_total += history.iter().filter(|a| a.acked.is_some()).count();
        let found = history.iter().position(|a| &a.value == value);
        match (last_acked, found) {
            (None, found) => ensure!(
                found.is_some() || value.is_null(),
                "{key}: reads {value}, which was never written"
            ),
            (Some(acked), Some(found)) if found >= acked => {}
            (Some(acked), found) => bail!(
                "{key}: last acknowledged write was attempt {acked} ({}), but it reads {value} \
                 (attempt {found:?})",
                history[acked].value
            ),
        }
    }
    info!(
        acked_total,
        attempts = attempts.len(),
        "no acknowledged write lost"
    );
    Ok(())
}

/// Whether node `id`'s replica of `shard` has caught up: it leads the shard, or the leader
/// reports its lag as 0, or its applied index equals the leader's.
async fn replica_caught_up(cluster: &Cluster, shard: u64, id: u64) -> Result<bool> {
    let leader_id = cluster
        .status(0)
        .await?
        .shard(shard)
        .and_then(|s| s.leader)
        .context("no leader")?;
    if leader_id == id {
        // Raft only elects a node whose log holds every committed entry.
        return Ok(true);
    }
    let leader = cluster
        .node_index_by_id(leader_id)
        .context("unknown leader")?;
    let replica = cluster.node_index_by_id(id).context("unknown replica")?;
    let leader_view = cluster.status(leader).await?;
    let replica_view = cluster.status(replica).await?;
    let (Some(at_leader), Some(at_replica)) = (leader_view.shard(shard), replica_view.shard(shard))
    else {
        bail!("shard {shard} missing from a status");
    };
    let lag = at_leader.lag.get(&id).copied().flatten();
    let same_applied = at_replica.applied.is_some() && at_replica.applied == at_leader.applied;
    ensure!(
        lag == Some(0) || same_applied,
        "lag {lag:?}, applied {:?} on the replica vs {:?} on the leader",
        at_replica.applied,
        at_leader.applied
    );
    Ok(true)
}

/// The agent claiming through node `i`.
fn agent(i: usize) -> String {
    format!("agent-{i}")
}

/// How one agent's claim of one task ended.
#[derive(Debug)]
enum ClaimOutcome {
    /// 200: this agent holds the claim.
    Won,
    /// 409 on the first attempt: someone else holds it.
    Lost,
    /// 409 after a transient error: someone holds it, possibly this agent (an earlier attempt
    /// may have been applied without its answer arriving).
    LostAfterRetry,
    /// A non-transient error other than 409, or transient errors until the deadline.
    Failed(ApiError),
}

/// Claims `id` for `agent` through node `first`, moving to the next node after each transient
/// error until the deadline.
async fn claim_with_retries(
    clients: &[NodeClient],
    first: usize,
    id: &TaskId,
    agent: String,
) -> (String, ClaimOutcome) {
    let deadline = Instant::now() + TIMEOUT;
    let mut node = first;
    let mut retried = false;
    loop {
        let outcome = match clients[node].claim_task(id, &agent).await {
            Ok(_) => ClaimOutcome::Won,
            Err(error) if error.is_status(409) && retried => ClaimOutcome::LostAfterRetry,
            Err(error) if error.is_status(409) => ClaimOutcome::Lost,
            Err(error) if error.is_transient() && Instant::now() < deadline => {
                retried = true;
                node = (node + 1) % clients.len();
                tokio::time::sleep(RETRY_BACKOFF).await;
                continue;
            }
            Err(error) => ClaimOutcome::Failed(error),
        };
        return (agent, outcome);
    }
}

/// Checks the outcomes of one task's concurrent claims against its final state.
fn check_one_claimant(id: &TaskId, outcomes: &[(String, ClaimOutcome)], task: &Task) -> Result<()> {
    let claimant = task
        .claimed_by
        .as_deref()
        .with_context(|| format!("task {id} is not claimed: {task:?}"))?;
    let mut winners = Vec::new();
    for (agent, outcome) in outcomes {
        match outcome {
            ClaimOutcome::Won => winners.push(agent.as_str()),
            ClaimOutcome::Lost => {
                ensure!(
                    claimant != agent,
                    "task {id}: {agent} got 409 yet holds the claim"
                )
            }
            ClaimOutcome::LostAfterRetry => {}
            ClaimOutcome::Failed(error) => bail!("task {id}: {agent}'s claim failed: {error}"),
        }
    }
    match winners.as_slice() {
        [] => {
            let retried = outcomes.iter().any(|(agent, outcome)| {
                agent == claimant && matches!(outcome, ClaimOutcome::LostAfterRetry)
            });
            ensure!(retried, "task {id}: no claim won, yet {claimant} holds it");
        }
        [winner] => ensure!(
            claimant == *winner,
            "task {id}: {winner} won, {claimant} holds it"
        ),
        _ => bail!("task {id}: several claims won: {winners:?}"),
    }
    Ok(())
}
