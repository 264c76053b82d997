//! The bounded chaos run of CI: a three-node cluster under about 45 seconds of faults (kills,
//! freezes, restarts, partitions both ways and one way) from a fixed seed, with every client
//! operation recorded (WebSocket subscribers' frames included); every checker must pass. Run `cargo build -p conclave-node` first;
//! `scripts/chaos.sh` runs longer and larger versions.

use anyhow::{ensure, Result};
use conclave_cluster_tests::chaos::history::{Answer, Call, Outcome};
use conclave_cluster_tests::chaos::{self, checks, ChaosConfig};

/// The seed of the CI run: its fault schedule and client choices.
const SEED: u64 = 20_261_122;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_keep_every_promise_under_faults() -> Result<()> {
    let config = ChaosConfig {
        nodes: 3,
        seed: SEED,
        fault_secs: 45,
        ..ChaosConfig::default()
    };
    let run = chaos::run(&config).await?;
    let report = &run.report;
    println!("{}", report.markdown());

    // Every checker's verdict.
    for verdict in &report.verdicts {
        ensure!(
            verdict.passed,
            "checker {} failed: {:?}\n{:#?}",
            verdict.name,
            verdict.problems,
            verdict.counts
        );
    }
    ensure!(
        report.verdicts.len() == 5,
        "{} verdicts",
        report.verdicts.len()
    );
    ensure!(!report.faults.is_empty(), "no fault was injected");
    for kind in ["context put", "context get", "topic publish", "task claim"] {
        let ok = report.operations.get(kind).map_or(0, |c| c.ok);
        ensure!(ok > 0, "no {kind} succeeded in the whole run");
    }
    // WebSocket subscribers were delivered messages and reconnected along the way.
    let websocket = report
        .verdicts
        .iter()
        .find(|v| v.name == "websocket subscribers")
        .expect("a websocket verdict");
    let figure = |what: &str| websocket.counts.get(what).copied().unwrap_or(0);
    ensure!(
        figure("frames delivered") > 0,
        "no websocket frame: {websocket:?}"
    );
    ensure!(
        figure("connections") > 2 * config.workload.ws_subscribers as u64,
        "websocket subscribers never reconnected: {websocket:?}"
    );
    ensure!(
        report.operations.get("websocket ack").map_or(0, |c| c.ok) > 0,
        "no ack answered"
    );

    // The checkers see real violations in this very history: an acknowledged publish removed
    // from its topic, and a read answering a value nobody wrote.
    let mut lost = run.recording.clone();
    let acked = lost.history.ops.iter().find_map(|op| match &op.outcome {
        Outcome::Ok(Answer::Published { .. }) => Some(op.call.clone()),
        _ => None,
    });
    if let Some(Call::Publish { topic, id }) = acked {
        lost.topics
            .get_mut(&topic)
            .expect("published topic read back")
            .retain(|&(_, body)| body != id);
        let verdict = checks::topics(&lost.history, &lost.topics);
        ensure!(
            verdict.counts["acknowledged publishes missing"] == 1,
            "a lost publish went unnoticed: {verdict:?}"
        );
    }
    // A frame delivered twice on one WebSocket connection.
    let mut repeated = run.recording.clone();
    let frames = repeated
        .history
        .ops
        .iter_mut()
        .find_map(|op| match &mut op.outcome {
            Outcome::Ok(Answer::Frames { frames, .. }) if !frames.is_empty() => Some(frames),
            _ => None,
        });
    if let Some(frames) = frames {
        frames.push(*frames.last().expect("a frame"));
        let verdict = checks::websocket(&repeated.history, &repeated.topics);
        ensure!(
            verdict.counts["duplicates beyond a subscriber's resume point"] == 1,
            "a repeated websocket frame went unnoticed: {verdict:?}"
        );
    }
    let mut phantom = run.recording.clone();
    let read = phantom.history.ops.iter_mut().find(|op| {
        matches!(
            op.outcome,
            Outcome::Ok(Answer::Entry { version, .. }) if version > 0
        ) && matches!(op.call, Call::Get { .. })
    });
    if let Some(op) = read {
        op.outcome = Outcome::Ok(Answer::Entry {
            version: 1,
            value: Some(u64::MAX),
        });
        let verdict = checks::linearizability(&phantom.history);
        ensure!(
            !verdict.passed,
            "a read of a value nobody wrote went unnoticed"
        );
    }
    Ok(())
}
