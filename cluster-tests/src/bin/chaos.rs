//! Runs the chaos harness once and writes its report.
//!
//! Usage: `chaos [--seconds N] [--nodes N] [--seed N] [--shards N] [--snapshot-after N]
//! [--dead-node-timeout SECS] [--out report.md|report.json] [--history history.json]`. `--seconds` is how long faults are injected (the run also
//! includes setup, a few seconds of recovery and the checks); the seed is printed, and the same
//! seed gives the same fault schedule and client choices. The report goes to `--out` (Markdown
//! unless the name ends in `.json`) and to stdout; `--history` also saves the recorded history,
//! which `conclave_cluster_tests::chaos::check` can check again later. Exits 1 when a checker
//! fails. It runs the `conclave` binary next to it (or `CONCLAVE_BIN`).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use conclave_cluster_tests::chaos::{self, ChaosConfig};

/// Command-line flags.
#[derive(Debug)]
struct Args {
    config: ChaosConfig,
    out: Option<PathBuf>,
    history: Option<PathBuf>,
}

impl Args {
    fn parse() -> Result<Self> {
        let mut args = Args {
            config: ChaosConfig {
                seed: seed_from_clock(),
                ..ChaosConfig::default()
            },
            out: None,
            history: None,
        };
        let mut flags = std::env::args().skip(1);
        while let Some(flag) = flags.next() {
            if flag == "--help" || flag == "-h" {
                println!(
                    "chaos [--seconds N] [--nodes N] [--seed N] [--shards N] \
                     [--snapshot-after N] [--dead-node-timeout SECS] \
                     [--out report.md|report.json] [--history history.json]"
                );
                std::process::exit(0);
            }
            let value = flags
                .next()
                .with_context(|| format!("{flag} needs a value"))?;
            let c = &mut args.config;
            match flag.as_str() {
                "--seconds" => c.fault_secs = value.parse().context("--seconds")?,
                "--nodes" => c.nodes = value.parse().context("--nodes")?,
                "--seed" => c.seed = value.parse().context("--seed")?,
                "--shards" => c.shards = value.parse().context("--shards")?,
                "--snapshot-after" => {
                    c.snapshot_after_logs = value.parse().context("--snapshot-after")?
                }
                "--dead-node-timeout" => {
                    c.dead_node_timeout_secs = value.parse().context("--dead-node-timeout")?
                }
                "--out" => args.out = Some(PathBuf::from(value)),
                "--history" => args.history = Some(PathBuf::from(value)),
                _ => bail!("unknown flag {flag}; try --help"),
            }
        }
        if !(3..=9).contains(&args.config.nodes) {
            bail!("--nodes must be 3 to 9");
        }
        Ok(args)
    }
}

/// A seed for a run that was not given one: the clock's nanoseconds.
fn seed_from_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse()?;
    println!(
        "chaos: seed {} ({} nodes, {} shards, {} s of faults)",
        args.config.seed, args.config.nodes, args.config.shards, args.config.fault_secs
    );
    let run = chaos::run(&args.config).await?;
    let markdown = run.report.markdown();
    println!("{markdown}");
    if let Some(path) = &args.out {
        let text = if path.extension().is_some_and(|e| e == "json") {
            serde_json::to_string_pretty(&run.report)?
        } else {
            markdown
        };
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.history {
        std::fs::write(path, serde_json::to_vec(&run.recording)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if !run.report.passed() {
        eprintln!("chaos: a checker failed (seed {})", args.config.seed);
        std::process::exit(1);
    }
    Ok(())
}
