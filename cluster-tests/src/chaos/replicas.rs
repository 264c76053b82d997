//! The replica check after healing: every replica of every group (the meta group on every
//! node, each shard on the replicas the shard map names) reaches the same applied index with
//! the same state digest (`GET /v1/cluster/digests` on each node).
//!
//! Replicas are compared once they report the same applied index: equal indexes with different
//! digests mean their state machines diverged, a violation at once. Replicas that do not reach
//! a common index before the deadline are a violation too ("not converged").

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;
use tokio::time::Instant;

use super::checks::Verdict;
use crate::sandbox::Cluster;
use crate::wait::POLL_INTERVAL;

/// `GET /v1/cluster/digests`.
#[derive(Debug, Clone, Deserialize)]
struct Digests {
    groups: Vec<GroupDigest>,
}

#[derive(Debug, Clone, Deserialize)]
struct GroupDigest {
    group: u64,
    applied: u64,
    digest: String,
    rows: u64,
}

/// What one poll found for one group.
enum GroupState {
    /// Every replica at one index with one digest.
    Agree { applied: u64, rows: u64 },
    /// Same index, different digests.
    Diverged(String),
    /// Not (yet) at one index, or a replica did not answer.
    Pending(String),
}

/// Compares every group's replicas until they agree or `timeout` passes.
pub async fn check(cluster: &Cluster, timeout: Duration) -> Verdict {
    let mut verdict = Verdict::new("replicas identical");
    verdict.count("groups diverged", 0);
    verdict.count("groups not converged", 0);
    let deadline = Instant::now() + timeout;
    let mut settled: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let mut diverged: BTreeMap<u64, String> = BTreeMap::new();
    loop {
        let pending = poll(cluster, &mut settled, &mut diverged).await;
        if pending.is_empty() || Instant::now() >= deadline {
            for (group, detail) in &diverged {
                verdict.violation("groups diverged", format!("group {group}: {detail}"));
            }
            for (group, detail) in pending {
                verdict.violation("groups not converged", format!("group {group}: {detail}"));
            }
            verdict.count("groups compared", settled.len() as u64);
            verdict.count(
                "state rows compared (per replica)",
                settled.values().map(|&(_, rows)| rows).sum(),
            );
            return verdict;
        }
        tokio::time::sleep(POLL_INTERVAL * 10).await;
    }
}

/// One round: fills `settled` and `diverged`; returns the groups still pending.
async fn poll(
    cluster: &Cluster,
    settled: &mut BTreeMap<u64, (u64, u64)>,
    diverged: &mut BTreeMap<u64, String>,
) -> BTreeMap<u64, String> {
    let mut pending = BTreeMap::new();
    let via = cluster.running().first().copied().unwrap_or(0);
    let status = match cluster.status(via).await {
        Ok(status) => status,
        Err(error) => {
            pending.insert(0, format!("no cluster status: {error:#}"));
            return pending;
        }
    };
    // Every node's digests, by node id.
    let mut reports: BTreeMap<u64, BTreeMap<u64, GroupDigest>> = BTreeMap::new();
    for index in cluster.running() {
        let node = cluster.node(index);
        if node.is_removed() {
            continue;
        }
        let client = node.client();
        let request = client.request(Method::GET, &["v1", "cluster", "digests"]);
        if let Ok(digests) = client.call::<Digests>(request).await {
            reports.insert(
                node.node_id(),
                digests.groups.into_iter().map(|g| (g.group, g)).collect(),
            );
        }
    }
    let mut groups: Vec<(u64, Vec<u64>)> = status
        .shards
        .iter()
        .map(|s| (s.id, s.replicas.clone()))
        .collect();
    groups.push((0, cluster.member_ids().into_iter().collect()));
    for (group, replicas) in groups {
        if settled.contains_key(&group) || diverged.contains_key(&group) {
            continue;
        }
        match compare(group, &replicas, &reports) {
            GroupState::Agree { applied, rows } => {
                settled.insert(group, (applied, rows));
            }
            GroupState::Diverged(detail) => {
                diverged.insert(group, detail);
            }
            GroupState::Pending(detail) => {
                pending.insert(group, detail);
            }
        }
    }
    pending
}

fn compare(
    group: u64,
    replicas: &[u64],
    reports: &BTreeMap<u64, BTreeMap<u64, GroupDigest>>,
) -> GroupState {
    let mut seen: Vec<(u64, &GroupDigest)> = Vec::new();
    for id in replicas {
        match reports.get(id).map(|r| r.get(&group)) {
            Some(Some(digest)) => seen.push((*id, digest)),
            Some(None) => return GroupState::Pending(format!("node {id} does not host it")),
            None => return GroupState::Pending(format!("node {id} did not answer")),
        }
    }
    let Some(&(_, first)) = seen.first() else {
        return GroupState::Pending("no replicas listed".into());
    };
    let describe = || {
        seen.iter()
            .map(|(id, d)| format!("node {id} applied {} digest {:.12}", d.applied, d.digest))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if seen.iter().any(|(_, d)| d.applied != first.applied) {
        return GroupState::Pending(describe());
    }
    if seen.iter().any(|(_, d)| d.digest != first.digest) {
        return GroupState::Diverged(describe());
    }
    GroupState::Agree {
        applied: first.applied,
        rows: first.rows,
    }
}
