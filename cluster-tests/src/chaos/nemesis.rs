//! The nemesis: every few seconds it injects one fault into the cluster, holds it for a while,
//! then heals it. Its choices (which fault, which node or shard, how long) come from a seeded
//! generator, so a seed names a schedule; which node a leader-targeted fault hits depends on
//! who leads at that moment.
//!
//! Faults: `kill -9` a node (restarted when healed), SIGSTOP one (SIGCONT when healed), a
//! graceful restart, and network partitions through [`Network`]: a node isolated both ways,
//! a shard's or the meta group's leader cut off from its followers both ways or one way, and a
//! minority split off from the majority. One fault at a time, so a majority can always make
//! progress once it is healed.

use std::time::Duration;

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::time::Instant;
use tracing::info;

use super::net::Network;
use crate::sandbox::Cluster;

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum Fault {
    /// SIGKILL, restarted on heal.
    Kill { node: usize },
    /// SIGSTOP, SIGCONT on heal.
    Pause { node: usize },
    /// SIGTERM, then started again at once.
    Restart { node: usize },
    /// Every link to and from the node cut.
    Isolate { node: usize },
    /// The group's leader cut off from the group's other replicas, both ways.
    LeaderIsolate { group: u64, node: usize },
    /// Only the leader's traffic to its followers dropped (`outbound`), or only theirs to it.
    LeaderOneWay {
        group: u64,
        node: usize,
        outbound: bool,
    },
    /// The nodes listed cut off from the others.
    Split { minority: Vec<usize> },
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Kill { node } => write!(f, "kill -9 node {node}"),
            Fault::Pause { node } => write!(f, "SIGSTOP node {node}"),
            Fault::Restart { node } => write!(f, "graceful restart of node {node}"),
            Fault::Isolate { node } => write!(f, "isolate node {node} (both ways)"),
            Fault::LeaderIsolate { group, node } => {
                write!(f, "cut group {group}'s leader (node {node}) off, both ways")
            }
            Fault::LeaderOneWay {
                group,
                node,
                outbound: true,
            } => write!(f, "drop group {group}'s leader (node {node}) → followers"),
            Fault::LeaderOneWay {
                group,
                node,
                outbound: false,
            } => write!(f, "drop followers → group {group}'s leader (node {node})"),
            Fault::Split { minority } => write!(f, "split nodes {minority:?} from the rest"),
        }
    }
}

/// A fault as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    /// Seconds into the run when it began.
    pub at_secs: f64,
    /// Seconds it was held.
    pub held_secs: f64,
    /// What it was.
    pub fault: Fault,
    /// Human-readable form.
    pub text: String,
}

/// Injects faults into `cluster` until `until`, then heals everything.
pub struct Nemesis {
    rng: StdRng,
    start: Instant,
    faults: Vec<FaultRecord>,
    /// Longest pause between faults, ms.
    pub max_gap_ms: u64,
    /// Longest time a fault is held, ms.
    pub max_hold_ms: u64,
}

impl Nemesis {
    /// A nemesis whose choices come from `seed`; times count from `start`.
    pub fn new(seed: u64, start: Instant) -> Self {
        Nemesis {
            rng: StdRng::seed_from_u64(seed),
            start,
            faults: Vec::new(),
            max_gap_ms: 3_000,
            max_hold_ms: 6_000,
        }
    }

    /// Runs faults until `until`; every fault is healed before it returns.
    pub async fn run(
        mut self,
        cluster: &mut Cluster,
        until: Instant,
    ) -> anyhow::Result<Vec<FaultRecord>> {
        let network = cluster
            .network()
            .cloned()
            .context("the nemesis needs a cluster with a network")?;
        loop {
            let gap = self.rng.random_range(1_000..=self.max_gap_ms.max(1_000));
            tokio::time::sleep(Duration::from_millis(gap)).await;
            if Instant::now() >= until {
                break;
            }
            let hold =
                Duration::from_millis(self.rng.random_range(1_500..=self.max_hold_ms.max(1_500)));
            let fault = self.choose(cluster).await;
            let began = Instant::now();
            info!(fault = %fault, "nemesis: inject");
            self.inject(cluster, &network, &fault).await?;
            if !matches!(fault, Fault::Restart { .. }) {
                tokio::time::sleep(hold).await;
            }
            self.heal(cluster, &network, &fault).await?;
            info!(fault = %fault, "nemesis: healed");
            self.faults.push(FaultRecord {
                at_secs: (began - self.start).as_secs_f64(),
                held_secs: began.elapsed().as_secs_f64(),
                text: fault.to_string(),
                fault,
            });
        }
        Ok(self.faults)
    }

    /// Picks the next fault.
    async fn choose(&mut self, cluster: &Cluster) -> Fault {
        let nodes = cluster.len();
        let node = self.rng.random_range(0..nodes);
        let kind = self.rng.random_range(0..8);
        let group = self.rng.random_range(0..=u64::from(cluster.shard_count()));
        let outbound = self.rng.random_bool(0.5);
        match kind {
            0 => Fault::Kill { node },
            1 => Fault::Pause { node },
            2 => Fault::Restart { node },
            3 => Fault::Isolate { node },
            4 | 5 => match leader_of(cluster, group).await {
                Some(leader) => Fault::LeaderIsolate {
                    group,
                    node: leader,
                },
                None => Fault::Isolate { node },
            },
            6 => match leader_of(cluster, group).await {
                Some(leader) => Fault::LeaderOneWay {
                    group,
                    node: leader,
                    outbound,
                },
                None => Fault::Isolate { node },
            },
            _ => {
                let size = (nodes - 1) / 2;
                let mut minority: Vec<usize> = Vec::new();
                while minority.len() < size.max(1) {
                    let n = self.rng.random_range(0..nodes);
                    if !minority.contains(&n) {
                        minority.push(n);
                    }
                }
                minority.sort_unstable();
                Fault::Split { minority }
            }
        }
    }

    async fn inject(
        &mut self,
        cluster: &mut Cluster,
        network: &Network,
        fault: &Fault,
    ) -> anyhow::Result<()> {
        let all: Vec<usize> = (0..cluster.len()).collect();
        match fault {
            Fault::Kill { node } => cluster.kill(*node)?,
            Fault::Pause { node } => cluster.pause(*node)?,
            Fault::Restart { node } => cluster.stop(*node).await?,
            Fault::Isolate { node } => network.partition(&[*node], &all),
            Fault::LeaderIsolate { node, .. } => network.partition(&[*node], &all),
            Fault::LeaderOneWay { node, outbound, .. } => {
                for other in all.iter().filter(|&&o| o != *node) {
                    if *outbound {
                        network.block(*node, *other);
                    } else {
                        network.block(*other, *node);
                    }
                }
            }
            Fault::Split { minority } => network.partition(minority, &all),
        }
        Ok(())
    }

    async fn heal(
        &mut self,
        cluster: &mut Cluster,
        network: &Network,
        fault: &Fault,
    ) -> anyhow::Result<()> {
        match fault {
            Fault::Kill { node } | Fault::Restart { node } => cluster
                .restart(*node)
                .await
                .with_context(|| format!("node {node} did not come back after {fault}"))?,
            Fault::Pause { node } => cluster.resume(*node)?,
            _ => network.heal(),
        }
        Ok(())
    }
}

/// The node index leading `group` (0: the meta group), as a running node reports it.
async fn leader_of(cluster: &Cluster, group: u64) -> Option<usize> {
    for via in cluster.running() {
        let Ok(status) = tokio::time::timeout(Duration::from_secs(3), cluster.status(via)).await
        else {
            continue;
        };
        let Ok(status) = status else { continue };
        let leader = if group == 0 {
            status.meta.leader
        } else {
            status.shard(group).and_then(|s| s.leader)
        };
        if let Some(id) = leader {
            return cluster.node_index_by_id(id);
        }
    }
    None
}
