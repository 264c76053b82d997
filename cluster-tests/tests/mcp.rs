//! MCP at `/mcp`, driven by the official Python MCP SDK (`mcp` 2.3.0, installed by
//! `scripts/test.sh` into its own virtualenv, named by `CONCLAVE_MCP_PYTHON`) against a
//! three-node cluster: the session form (`ClientSession.initialize()`, `list_tools`, a call of
//! every tool), the stateless form (`mcp.Client(URL)` in its default auto mode), the skill rule
//! with recorded violations, and a session that continues on another node after the node that
//! began it is killed. The script is `cluster-tests/python/mcp_client.py`. Run
//! `cargo build -p conclave-node` first.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use conclave_cluster_tests::http::{expect, wait_key_usable};
use conclave_cluster_tests::Cluster;
use reqwest::Method;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// Longest a script may run.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(900);

/// The Python with the MCP SDK: `CONCLAVE_MCP_PYTHON`, else the virtualenv `scripts/test.sh`
/// installs. Under CI the variable must be set, so a missing install fails the run.
fn python() -> Result<PathBuf> {
    let path = match std::env::var_os("CONCLAVE_MCP_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => {
            ensure!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CONCLAVE_MCP_PYTHON is not set: run the tests through scripts/test.sh"
            );
            let home = std::env::var_os("HOME").context("HOME is not set")?;
            PathBuf::from(home).join(".cache/conclave/venv-mcp/bin/python")
        }
    };
    ensure!(
        path.exists(),
        "python with the mcp sdk not found at {}: run `bash scripts/test.sh`",
        path.display()
    );
    Ok(path)
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/mcp_client.py")
}

fn urls(cluster: &Cluster) -> String {
    (0..cluster.len())
        .map(|i| cluster.node(i).url())
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs the script in `mode` against node `index` and checks it succeeded.
async fn run(cluster: &Cluster, mode: &str, index: usize) -> Result<String> {
    let output = tokio::time::timeout(
        SCRIPT_TIMEOUT,
        Command::new(python()?)
            .arg(script())
            .arg(mode)
            .arg(format!("{}/mcp", cluster.node(index).url()))
            .arg(cluster.api_key())
            .arg(urls(cluster))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("mcp {mode} did not finish in time"))??;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!("mcp {mode} failed:\n{stdout}\n{stderr}");
    }
    Ok(stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_clients_call_every_tool_in_both_forms() -> Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    wait_key_usable(cluster.api(1)).await?;
    // The session form through a node that is not necessarily any shard's leader.
    let out = run(&cluster, "session", 1).await?;
    ensure!(out.contains("session:"), "session run printed {out}");
    // The stateless form, found by the SDK's auto mode.
    let out = run(&cluster, "auto", 2).await?;
    ensure!(out.contains("auto:"), "auto run printed {out}");
    // Last: it registers the skill that restricts the task tools in this workspace.
    let out = run(&cluster, "skills", 0).await?;
    ensure!(out.contains("skills:"), "skills run printed {out}");
    // Every tool call is in the audit log, and so are the changes the tools made.
    let tools = audited_tool_calls(&cluster).await?;
    ensure!(tools.len() >= 30, "tool calls audited for only {tools:?}");
    let q = [("via", "mcp"), ("action", "POST"), ("limit", "10")];
    let page = expect(
        cluster
            .api(1)
            .request(Method::GET, &["v1", "audit", "log"])
            .query(&q),
        200,
        "the audit log of changes made through MCP",
    )
    .await?;
    ensure!(
        page["items"].as_array().is_some_and(|i| !i.is_empty()),
        "no REST change made through MCP was audited: {page}"
    );
    Ok(())
}

/// The tools whose calls the audit log records (entries `CALL mcp:<tool>`, via `mcp`).
async fn audited_tool_calls(cluster: &Cluster) -> Result<BTreeSet<String>> {
    let mut tools = BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = vec![("via", "mcp"), ("action", "CALL"), ("limit", "1000")];
        if let Some(c) = &cursor {
            q.push(("cursor", c));
        }
        let page = expect(
            cluster
                .api(0)
                .request(Method::GET, &["v1", "audit", "log"])
                .query(&q),
            200,
            "the audit log of tool calls",
        )
        .await?;
        for item in page["items"].as_array().context("items")? {
            let route = item["route"].as_str().context("route")?;
            let tool = route.strip_prefix("mcp:").context("a tool call's route")?;
            tools.insert(tool.to_string());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return Ok(tools),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_continues_on_another_node_after_its_node_dies() -> Result<()> {
    let mut cluster = Cluster::builder().nodes(3).start().await?;
    for i in 0..cluster.len() {
        wait_key_usable(cluster.api(i)).await?;
    }
    // Phase 1: a session begun on node 0, the bootstrap node (leader of the meta group and
    // of shards at first), used for writes.
    let mut child = Command::new(python()?)
        .arg(script())
        .arg("failover")
        .arg(format!("{}/mcp", cluster.node(0).url()))
        .arg(cluster.api_key())
        .arg(urls(&cluster))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the mcp client")?;
    let mut stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
    let ready = tokio::time::timeout(SCRIPT_TIMEOUT, async {
        while let Some(line) = stdout.next_line().await? {
            if line.trim() == "READY" {
                return anyhow::Ok(true);
            }
        }
        anyhow::Ok(false)
    })
    .await
    .context("the client never became ready")??;
    if !ready {
        let out = child.wait_with_output().await?;
        bail!(
            "the client ended before its session was ready:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Phase 2: the node that began the session dies; the client's "load balancer" sends the
    // same session to another node.
    cluster.kill(0)?;
    let mut stdin = child.stdin.take().expect("piped");
    stdin
        .write_all(format!("SWITCH {}\n", cluster.node(1).url()).as_bytes())
        .await?;
    stdin.flush().await?;
    let out = tokio::time::timeout(SCRIPT_TIMEOUT, child.wait_with_output())
        .await
        .context("the client did not finish after the failover")??;
    let mut rest = String::new();
    while let Some(line) = stdout.next_line().await? {
        rest.push_str(&line);
        rest.push('\n');
    }
    if !out.status.success() {
        bail!(
            "the session did not survive the failover:\n{rest}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    ensure!(rest.contains("failover:"), "failover run printed {rest}");
    Ok(())
}
