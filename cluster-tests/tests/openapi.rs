//! The OpenAPI document: served by every node, rendered offline at `/docs`, and honoured by the
//! server — Schemathesis (installed by `scripts/setup.sh`) generates requests from it, valid
//! and invalid, and checks every answer against it (`--checks all`). Run
//! `cargo build -p conclave-node` first.

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{bail, ensure, Context, Result};
use conclave_cluster_tests::Cluster;
use serde_json::Value;

/// Examples Schemathesis generates per operation and phase: enough to find schema drift,
/// bounded so the test takes a minute or two.
const MAX_EXAMPLES: &str = "15";

/// Per-operation settings, written to `schemathesis.toml` for the run.
///
/// `GET /v1/usage` refuses a `from` after `to`, or more than 366 days before it, with 400: a rule
/// between two parameters that the document's JSON Schema cannot state, so requests valid by
/// the schema alone may be refused there (every other 4xx stays a failure).
const CONFIG: &str = r#"
[[operations]]
include-operation-id = "get_usage"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404"]
"#;

/// The Schemathesis command: `CONCLAVE_SCHEMATHESIS`, or the one `scripts/setup.sh` installs.
fn schemathesis() -> Result<PathBuf> {
    let path = match std::env::var_os("CONCLAVE_SCHEMATHESIS") {
        Some(p) => PathBuf::from(p),
        None => {
            let home = std::env::var_os("HOME").context("HOME is not set")?;
            PathBuf::from(home).join(".cache/conclave/venv/bin/schemathesis")
        }
    };
    ensure!(
        path.exists(),
        "schemathesis not found at {}: run `bash scripts/setup.sh`",
        path.display()
    );
    Ok(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_serves_the_document_and_the_docs_page() -> Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let mut first: Option<Value> = None;
    for i in 0..cluster.len() {
        let base = cluster.node(i).url();
        let doc: Value = cluster
            .client()
            .get(format!("{base}/openapi.json"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let version = doc["openapi"].as_str().unwrap_or_default();
        ensure!(version.starts_with("3.1"), "openapi version {version:?}");
        ensure!(
            doc["paths"]["/v1/context/{key}"]["put"].is_object(),
            "document lacks PUT /v1/context/{{key}}"
        );
        match &first {
            None => first = Some(doc),
            Some(f) => ensure!(*f == doc, "node {i} serves a different document"),
        }
        let page = cluster
            .client()
            .get(format!("{base}/docs/"))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        ensure!(page.contains("swagger"), "the docs page is not Swagger UI");
        // Its assets are served by the node itself (no network needed).
        cluster
            .client()
            .get(format!("{base}/docs/swagger-ui-bundle.js"))
            .send()
            .await?
            .error_for_status()
            .context("the docs page's script is not served")?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_failures() -> Result<()> {
    let schemathesis = schemathesis()?;
    let cluster = Cluster::builder().nodes(3).start().await?;
    // Through a node that is not necessarily any shard's leader, so forwarding is exercised.
    let base = cluster.node(1).url();
    let report = tempfile::tempdir()?;
    let config = report.path().join("schemathesis.toml");
    std::fs::write(&config, CONFIG)?;
    let output = tokio::process::Command::new(&schemathesis)
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("{base}/openapi.json"))
        .args(["--checks", "all", "--max-examples", MAX_EXAMPLES])
        .args(["--seed", "1", "--workers", "1"])
        .args(["--request-timeout", "30"])
        // Draining a random node would take the cluster under test apart mid-run; node removal
        // has its own tests in cluster.rs.
        .args(["--exclude-operation-id", "post_cluster_nodes_id_remove"])
        // The A2A JSON-RPC endpoint answers protocol errors as JSON-RPC errors inside HTTP 200,
        // as A2A clients require, which Schemathesis' negative-data check reads as accepting
        // bad input; tests/a2a.rs covers its errors, and the agent card route stays checked.
        .args(["--exclude-operation-id", "post_a2a_workspace_agents_name"])
        // A registered webhook makes the cluster POST every later change to the URL it names:
        // generated URLs would send traffic off loopback. Registration has its own tests in
        // webhooks.rs; listing, deleting and deliveries stay covered here.
        .args(["--exclude-operation-id", "post_webhooks"])
        // Server-sent event streams never end, so no response of theirs completes for
        // Schemathesis to check; realtime.rs tests them (events, resume, errors).
        .args(["--exclude-operation-id", "get_events"])
        .args(["--exclude-operation-id", "get_tasks_id_events"])
        .arg("--header")
        .arg(format!("Authorization: Bearer {}", cluster.api_key()))
        .env("NO_COLOR", "1")
        .current_dir(report.path())
        .stdin(Stdio::null())
        .output()
        .await
        .context("running schemathesis")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!("schemathesis found failures:\n{stdout}\n{stderr}");
    }
    ensure!(
        stdout.contains("passed") || stdout.contains("No issues found"),
        "schemathesis printed no result:\n{stdout}"
    );
    Ok(())
}
