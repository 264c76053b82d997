//! Process-level chaos testing: concurrent clients against a cluster of real `conclave`
//! processes while a nemesis kills, freezes, restarts and partitions nodes; then, once
//! everything is healed, checkers read the recorded history and the cluster's final state.
//!
//! - [`net`]: fault-injecting TCP proxies on the nodes' peer links (both ways and one way);
//! - [`nemesis`]: the seeded fault schedule;
//! - [`workload`]: the clients (context, publishers, subscribers, task workers), and [`ws`]
//!   the WebSocket connection its WebSocket subscribers open;
//! - [`history`]: what the clients record (invoke, ok / fail / unknown, times);
//! - [`checks`], [`wgl`], [`replicas`]: the checkers;
//! - [`report`]: the report (`docs/chaos.md` shows one).
//!
//! [`run`] does all of it; [`check`] runs the history checkers alone on a saved [`Recording`],
//! which is how a history that once exposed a bug is kept as a regression test.

pub mod checks;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod replicas;
pub mod report;
pub mod wgl;
pub mod workload;
pub mod ws;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::time::Instant;
use tracing::info;

use crate::sandbox::Cluster;
use crate::wait::{retry_transient, retry_until_ok};
use checks::Verdict;
use history::{Answer, Call, Clock, History, Op, Outcome};
use net::Network;
use report::Report;
use workload::{Client, Shared, SubscriberKind, WorkloadConfig};

/// How long setup steps and final reads may retry.
const SETTLE: Duration = Duration::from_secs(120);
/// The client id of the final reads made after healing.
const FINAL_CLIENT: usize = 10_000;

/// A run's settings.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosConfig {
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Data shards.
    pub shards: u32,
    /// Seed of the fault schedule and the clients' choices.
    pub seed: u64,
    /// Seconds during which the nemesis injects faults.
    pub fault_secs: u64,
    /// Seconds the clients keep running after the last fault is healed.
    pub recovery_secs: u64,
    /// Log entries after which a group snapshots (the node's `snapshot_after_logs`): small, so
    /// snapshots are built, sent and installed during the run.
    pub snapshot_after_logs: u64,
    /// Seconds of silence after which a node's replicas are re-created elsewhere (the node's
    /// `dead_node_timeout_secs`); with more than three nodes, shorter than a fault's hold makes
    /// replicas move during the run.
    pub dead_node_timeout_secs: u64,
    /// The clients.
    pub workload: WorkloadConfig,
}

impl Default for ChaosConfig {
    fn default() -> Self {
        ChaosConfig {
            nodes: 3,
            shards: 8,
            seed: 1,
            fault_secs: 60,
            recovery_secs: 5,
            snapshot_after_logs: 200,
            dead_node_timeout_secs: 30,
            workload: WorkloadConfig::default(),
        }
    }
}

/// What a history checker needs: every operation and each topic's final messages.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Recording {
    /// Every operation.
    pub history: History,
    /// Each topic's messages `(seq, id)` read after healing.
    pub topics: BTreeMap<String, Vec<(u64, u64)>>,
}

/// A finished run.
#[derive(Debug)]
pub struct Run {
    /// The report.
    pub report: Report,
    /// What the checkers read.
    pub recording: Recording,
}

/// The history checkers: topics, WebSocket subscribers, tasks and the context store's
/// linearizability.
pub fn check(recording: &Recording) -> Vec<Verdict> {
    vec![
        checks::topics(&recording.history, &recording.topics),
        checks::websocket(&recording.history, &recording.topics),
        checks::tasks(&recording.history),
        checks::linearizability(&recording.history),
    ]
}

/// Starts a cluster, runs the workload under the nemesis, heals, and checks.
pub async fn run(config: &ChaosConfig) -> anyhow::Result<Run> {
    let started = Instant::now();
    let started_at = rfc3339(Clock::wall_ms() / 1000);
    info!(
        seed = config.seed,
        nodes = config.nodes,
        "chaos run starting"
    );
    let network = Network::new();
    let mut cluster = Cluster::builder()
        .nodes(config.nodes)
        .shards(config.shards)
        .network(network.clone())
        .env(
            "CONCLAVE_SNAPSHOT_AFTER_LOGS",
            config.snapshot_after_logs.to_string(),
        )
        .env(
            "CONCLAVE_DEAD_NODE_TIMEOUT_SECS",
            config.dead_node_timeout_secs.to_string(),
        )
        .start()
        .await?;
    setup(&cluster, &config.workload).await?;

    // Clients run through the faults and the recovery after them.
    let clock = Clock::new();
    let fault_end = Instant::now() + Duration::from_secs(config.fault_secs);
    let shared = Shared {
        nodes: (0..cluster.len()).map(|i| cluster.api(i).clone()).collect(),
        token: cluster.api_key().to_string(),
        clock,
        ids: Arc::new(AtomicU64::new(0)),
        tasks: Arc::new(Mutex::new(Vec::new())),
        deadline: fault_end + Duration::from_secs(config.recovery_secs),
        think_ms: config.workload.think_ms,
    };
    let clients = spawn_clients(config, &shared);
    let nemesis = nemesis::Nemesis::new(config.seed, clock_start(&clock));
    let faults = nemesis.run(&mut cluster, fault_end).await;
    // Whatever happened, leave nothing frozen or cut.
    network.heal();
    let faults = faults?;
    let mut history = History::default();
    for client in clients {
        history.extend(client.await.context("a client panicked")?);
    }
    info!(
        ops = history.ops.len(),
        faults = faults.len(),
        "workload done; checking"
    );

    cluster.wait_converged().await?;
    let topics = final_topics(&cluster, &config.workload).await?;
    history.extend(final_gets(&cluster, &config.workload, &clock).await);
    let recording = Recording { history, topics };
    let mut verdicts = check(&recording);
    verdicts.push(replicas::check(&cluster, SETTLE).await);
    let report = Report {
        seed: config.seed,
        nodes: config.nodes,
        shards: config.shards,
        snapshot_after_logs: config.snapshot_after_logs,
        dead_node_timeout_secs: config.dead_node_timeout_secs,
        fault_secs: config.fault_secs,
        elapsed_secs: started.elapsed().as_secs_f64(),
        started_at,
        machine: report::machine(),
        operations: Report::count_ops(&recording.history),
        faults,
        verdicts,
    };
    Ok(Run { report, recording })
}

/// The instant a [`Clock`] counts from, as a tokio instant.
fn clock_start(clock: &Clock) -> Instant {
    Instant::now() - Duration::from_micros(clock.now_us())
}

/// Creates the topics and the cursor and WebSocket subscribers' subscriptions.
async fn setup(cluster: &Cluster, workload: &WorkloadConfig) -> anyhow::Result<()> {
    let api = cluster.api(0);
    for topic in workload.topic_names() {
        retry_until_ok(SETTLE, async || match api.create_topic(&topic).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_status(409) => Ok(()),
            Err(e) => Err(e),
        })
        .await
        .with_context(|| format!("creating topic {topic}"))?;
    }
    let topics = workload.topic_names();
    let cursor = (0..workload.cursor_subscribers).map(|i| {
        (
            &topics[i % topics.len()],
            WorkloadConfig::subscriber_agent(i),
        )
    });
    let websocket = (0..workload.ws_subscribers)
        .map(|i| (&topics[i % topics.len()], WorkloadConfig::ws_agent(i)));
    for (topic, agent) in cursor.chain(websocket) {
        retry_until_ok(SETTLE, async || {
            let request = api
                .request(Method::POST, &["v1", "topics", topic, "subscribe"])
                .json(&json!({ "agent": agent, "from": "earliest" }));
            api.call::<Value>(request).await
        })
        .await
        .with_context(|| format!("subscribing {agent} to {topic}"))?;
    }
    Ok(())
}

fn spawn_clients(config: &ChaosConfig, shared: &Shared) -> Vec<tokio::task::JoinHandle<Vec<Op>>> {
    let w = &config.workload;
    let seed = config.seed;
    let mut handles = Vec::new();
    let mut id = 0;
    let mut next = || {
        id += 1;
        Client::new(id, seed, shared.clone())
    };
    for _ in 0..w.context_clients {
        handles.push(tokio::spawn(next().context(w.key_names())));
    }
    for _ in 0..w.publishers {
        handles.push(tokio::spawn(next().publisher(w.topic_names())));
    }
    let topics = w.topic_names();
    for i in 0..w.paging_subscribers {
        let topic = topics[i % topics.len()].clone();
        // Paging subscribers are numbered after the cursor ones.
        let index = w.cursor_subscribers + i;
        handles.push(tokio::spawn(next().subscriber(
            index,
            SubscriberKind::Paging,
            topic,
        )));
    }
    for i in 0..w.cursor_subscribers {
        let topic = topics[i % topics.len()].clone();
        handles.push(tokio::spawn(next().subscriber(
            i,
            SubscriberKind::Cursor,
            topic,
        )));
    }
    for _ in 0..w.task_workers {
        handles.push(tokio::spawn(next().task_worker()));
    }
    // Last, so the other clients keep the ids (and the seeded choices) they had before
    // WebSocket subscribers existed.
    for i in 0..w.ws_subscribers {
        let topic = topics[i % topics.len()].clone();
        handles.push(tokio::spawn(next().ws_subscriber(i, topic)));
    }
    handles
}

/// Every topic's messages, read through the first node once healed.
async fn final_topics(
    cluster: &Cluster,
    workload: &WorkloadConfig,
) -> anyhow::Result<BTreeMap<String, Vec<(u64, u64)>>> {
    let api = cluster.api(0);
    let mut out = BTreeMap::new();
    for topic in workload.topic_names() {
        let page = retry_transient(SETTLE, async || api.read_topic_all(&topic).await)
            .await
            .with_context(|| format!("reading topic {topic} after healing"))?;
        let items = page
            .items
            .iter()
            .map(|m| (m.seq, m.body["id"].as_u64().unwrap_or(0)))
            .collect();
        out.insert(topic, items);
    }
    Ok(out)
}

/// A get of every key through each node in turn, recorded like the clients' operations.
async fn final_gets(cluster: &Cluster, workload: &WorkloadConfig, clock: &Clock) -> Vec<Op> {
    let mut ops = Vec::new();
    for (i, key) in workload.key_names().into_iter().enumerate() {
        let node = i % cluster.len();
        let api = cluster.api(node);
        let invoke_wall_ms = Clock::wall_ms();
        let invoke_us = clock.now_us();
        let result = retry_transient(SETTLE, async || api.get_context(&key).await).await;
        let outcome = match result {
            Ok(entry) => Outcome::Ok(Answer::Entry {
                version: entry.version,
                value: entry.value["w"].as_u64(),
            }),
            Err(e) if e.is_status(404) => Outcome::Ok(Answer::NotFound),
            Err(e) => Outcome::of_error(&e),
        };
        ops.push(Op {
            client: FINAL_CLIENT,
            node,
            call: Call::Get { key },
            invoke_us,
            complete_us: clock.now_us(),
            invoke_wall_ms,
            outcome,
        });
    }
    ops
}

/// `secs` since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recording_saved_before_websocket_subscribers_still_loads_and_checks() {
        // The shape `chaos --history` wrote before WebSocket subscribers were recorded.
        let saved = r#"{
            "history": {"ops": [
                {"client": 1, "node": 0, "call": {"op": "publish", "topic": "t", "id": 7},
                 "invoke_us": 10, "complete_us": 20, "invoke_wall_ms": 1,
                 "outcome": {"type": "ok", "value": {"answer": "published", "seq": 1}}},
                {"client": 2, "node": 1, "call": {"op": "read", "topic": "t", "subscriber": 0,
                 "from": {"since": 0}, "limit": 100},
                 "invoke_us": 30, "complete_us": 40, "invoke_wall_ms": 2,
                 "outcome": {"type": "ok", "value": {"answer": "page", "items": [[1, 7]],
                 "last_seq": 1}}}
            ]},
            "topics": {"t": [[1, 7]]}
        }"#;
        let recording: Recording = serde_json::from_str(saved).expect("an old recording loads");
        let verdicts = check(&recording);
        assert!(verdicts.iter().all(|v| v.passed), "{verdicts:?}");
        let websocket = verdicts
            .iter()
            .find(|v| v.name == "websocket subscribers")
            .expect("a websocket verdict");
        assert_eq!(websocket.counts.get("connections"), None);
    }

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
    }
}
