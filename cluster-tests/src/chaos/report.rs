//! A chaos run's report: the run's settings and machine, operations by kind and outcome, the
//! faults injected, and each checker's verdict; as Markdown (the shape of `docs/chaos.md`) or
//! JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::checks::Verdict;
use super::history::History;
use super::nemesis::FaultRecord;

/// Operations of one kind by outcome.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OpCounts {
    /// Completed.
    pub ok: u64,
    /// Refused: did not happen.
    pub fail: u64,
    /// Outcome unknown.
    pub unknown: u64,
}

/// Everything a run reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The seed of the run's schedule and clients.
    pub seed: u64,
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Data shards.
    pub shards: u32,
    /// The nodes' `snapshot_after_logs`.
    pub snapshot_after_logs: u64,
    /// The nodes' `dead_node_timeout_secs`.
    pub dead_node_timeout_secs: u64,
    /// Seconds of faults.
    pub fault_secs: u64,
    /// Seconds of the whole run, setup to verdicts.
    pub elapsed_secs: f64,
    /// When it started (UTC, RFC 3339).
    pub started_at: String,
    /// CPU model, cores and load average when it ended.
    pub machine: String,
    /// Operations by kind.
    pub operations: BTreeMap<String, OpCounts>,
    /// Faults injected, in order.
    pub faults: Vec<FaultRecord>,
    /// Each checker's verdict.
    pub verdicts: Vec<Verdict>,
}

impl Report {
    /// Whether every checker passed.
    pub fn passed(&self) -> bool {
        self.verdicts.iter().all(|v| v.passed)
    }

    /// Operation counts of `history`, by kind.
    pub fn count_ops(history: &History) -> BTreeMap<String, OpCounts> {
        let mut counts: BTreeMap<String, OpCounts> = BTreeMap::new();
        for op in &history.ops {
            let c = counts.entry(op.kind().to_string()).or_default();
            match op.outcome.kind() {
                "ok" => c.ok += 1,
                "fail" => c.fail += 1,
                _ => c.unknown += 1,
            }
        }
        counts
    }

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "## Chaos run, seed {}\n", self.seed);
        let _ = writeln!(
            out,
            "{} nodes, {} shards, {} s of faults; {:.0} s in all from setup to verdicts; \
             started {}.\n\nMachine: {}.\n",
            self.nodes,
            self.shards,
            self.fault_secs,
            self.elapsed_secs,
            self.started_at,
            self.machine
        );
        let verdict = if self.passed() { "PASS" } else { "FAIL" };
        let _ = writeln!(out, "**Verdict: {verdict}**\n");

        let _ = writeln!(out, "### Operations\n");
        let _ = writeln!(out, "| operation | ok | fail | unknown |");
        let _ = writeln!(out, "|---|---:|---:|---:|");
        let mut total = OpCounts::default();
        for (kind, c) in &self.operations {
            let _ = writeln!(out, "| {kind} | {} | {} | {} |", c.ok, c.fail, c.unknown);
            total.ok += c.ok;
            total.fail += c.fail;
            total.unknown += c.unknown;
        }
        let _ = writeln!(
            out,
            "| **all** | **{}** | **{}** | **{}** |\n",
            total.ok, total.fail, total.unknown
        );

        let _ = writeln!(out, "### Faults ({})\n", self.faults.len());
        let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
        for f in &self.faults {
            let kind = serde_json::to_value(&f.fault)
                .ok()
                .and_then(|v| v["fault"].as_str().map(str::to_string))
                .unwrap_or_default();
            *by_kind.entry(leak_kind(&kind)).or_default() += 1;
        }
        let summary: Vec<String> = by_kind.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
        let _ = writeln!(out, "{}\n", summary.join(", "));
        let _ = writeln!(out, "| at (s) | held (s) | fault |");
        let _ = writeln!(out, "|---:|---:|---|");
        for f in &self.faults {
            let _ = writeln!(
                out,
                "| {:.1} | {:.1} | {} |",
                f.at_secs, f.held_secs, f.text
            );
        }
        let _ = writeln!(out);

        let _ = writeln!(out, "### Checkers\n");
        for v in &self.verdicts {
            let mark = if v.passed { "PASS" } else { "FAIL" };
            let _ = writeln!(out, "- **{}**: {mark}", v.name);
            for (what, n) in &v.counts {
                let _ = writeln!(out, "  - {what}: {n}");
            }
            for p in &v.problems {
                let _ = writeln!(out, "  - problem: {p}");
            }
        }
        out
    }
}

/// Fault kind names as static strings, for the summary line.
fn leak_kind(kind: &str) -> &'static str {
    match kind {
        "kill" => "kill -9",
        "pause" => "SIGSTOP",
        "restart" => "graceful restart",
        "isolate" => "node isolated",
        "leader_isolate" => "leader isolated",
        "leader_one_way" => "leader one-way",
        "split" => "minority split",
        _ => "other",
    }
}

/// CPU model, core count and load average of this machine.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, load average {load} at the end")
}
