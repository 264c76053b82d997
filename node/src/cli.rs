//! The command line: `conclave start`, `conclave status`, `conclave node remove`, and the two
//! helpers a container needs without a shell: `conclave healthcheck`, `conclave admin-credentials`.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use serde_json::Value;

use crate::config::{Config, Overrides};
use crate::identity::{AdminCredentials, CREDENTIALS};

/// Conclave: a highly available coordination layer for AI agents.
#[derive(Debug, Parser)]
#[command(name = "conclave", version, about)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start a node: a new one-node cluster, or a node joining a cluster with --join.
    Start(StartArgs),
    /// Show nodes, shards, replicas, leaders, applied indexes and lag.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Manage nodes.
    Node {
        #[command(subcommand)]
        cmd: NodeCmd,
    },
    /// Exit 0 if a node's health URL answers 2xx within the timeout, 1 otherwise (for container
    /// health checks: no shell or curl needed).
    Healthcheck {
        /// URL to probe.
        #[arg(long, default_value = "http://127.0.0.1:7070/readyz")]
        url: String,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 2)]
        timeout_secs: u64,
    },
    /// Print the admin credentials the first node wrote in its data folder.
    AdminCredentials {
        /// Data folder holding admin-credentials.
        #[arg(long, env = "CONCLAVE_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum NodeCmd {
    /// Drain a node: its replicas move elsewhere, then it leaves the cluster.
    Remove {
        /// The node's id.
        id: u64,
        #[command(flatten)]
        target: Target,
    },
}

/// Flags of `conclave start`; each is also `CONCLAVE_<NAME>` and a config-file key.
#[derive(Debug, Args)]
struct StartArgs {
    /// TOML config file (env CONCLAVE_CONFIG).
    #[arg(long, env = "CONCLAVE_CONFIG")]
    config: Option<PathBuf>,
    /// Data folder [default: ./data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Client address, HOST:PORT [default: 127.0.0.1:7070].
    #[arg(long)]
    listen: Option<String>,
    /// Peer address, HOST:PORT [default: 127.0.0.1:7071].
    #[arg(long)]
    peer_listen: Option<String>,
    /// Peer address other nodes should use [default: the bound peer address].
    #[arg(long)]
    advertise: Option<String>,
    /// Local IP address outgoing peer connections are made from [default: the OS's choice].
    #[arg(long)]
    peer_source_addr: Option<String>,
    /// Peer address of a cluster node to join.
    #[arg(long)]
    join: Option<String>,
    /// The cluster's shared secret (needed to join).
    #[arg(long)]
    cluster_secret: Option<String>,
    /// Number of data shards of a new cluster [default: 16].
    #[arg(long)]
    shards: Option<u64>,
}

/// Which node to ask, and with which key.
#[derive(Debug, Args)]
struct Target {
    /// Client address of any node.
    #[arg(long, env = "CONCLAVE_ADDR", default_value = "127.0.0.1:7070")]
    addr: String,
    /// Admin API key [default: from DATA_DIR/admin-credentials].
    #[arg(long, env = "CONCLAVE_API_KEY")]
    api_key: Option<String>,
    /// Data folder holding admin-credentials.
    #[arg(long, env = "CONCLAVE_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
}

impl Target {
    fn key(&self) -> anyhow::Result<String> {
        if let Some(k) = &self.api_key {
            return Ok(k.clone());
        }
        let path = self.data_dir.join(CREDENTIALS);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!("no --api-key given and {} is not readable", path.display())
        })?;
        Ok(serde_json::from_str::<AdminCredentials>(&text)?.api_key)
    }

    async fn request(&self, method: reqwest::Method, path: &str) -> anyhow::Result<Value> {
        let url = format!("http://{}{}", self.addr, path);
        let resp = reqwest::Client::new()
            .request(method, &url)
            .bearer_auth(self.key()?)
            .timeout(std::time::Duration::from_secs(15))
            .send()
            .await
            .with_context(|| format!("calling {url}"))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{url} answered {status}: {body}");
        }
        Ok(body)
    }
}

impl Cli {
    /// Whether this command runs a node (rather than talking to one).
    pub fn is_server(&self) -> bool {
        matches!(self.cmd, Cmd::Start(_))
    }
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Start(a) => {
            let flags = Overrides {
                data_dir: a.data_dir,
                listen: a.listen,
                peer_listen: a.peer_listen,
                advertise: a.advertise,
                peer_source_addr: a.peer_source_addr,
                join: a.join,
                cluster_secret: a.cluster_secret,
                shards: a.shards,
            };
            let config = Config::load(a.config.as_ref(), flags)?;
            init_tracing(&config.log);
            crate::node::run(config).await
        }
        Cmd::Status { target, json } => {
            let status = target
                .request(reqwest::Method::GET, "/v1/cluster/status")
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print_status(&status);
            }
            Ok(())
        }
        Cmd::Node {
            cmd: NodeCmd::Remove { id, target },
        } => {
            let body = target
                .request(
                    reqwest::Method::POST,
                    &format!("/v1/cluster/nodes/{id}/remove"),
                )
                .await?;
            println!(
                "node {id} is {}; its replicas are moving elsewhere",
                body["state"].as_str().unwrap_or("draining")
            );
            Ok(())
        }
        Cmd::Healthcheck { url, timeout_secs } => healthcheck(&url, timeout_secs).await,
        Cmd::AdminCredentials { data_dir } => {
            let path = data_dir.join(CREDENTIALS);
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "{} is not readable (only the first node of a cluster has it)",
                    path.display()
                )
            })?;
            let creds: AdminCredentials = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", path.display()))?;
            println!("{}", serde_json::to_string_pretty(&creds)?);
            Ok(())
        }
    }
}

/// Probes `url` once: `Ok` on a 2xx answer within `timeout_secs`.
async fn healthcheck(url: &str, timeout_secs: u64) -> anyhow::Result<()> {
    let resp = reqwest::Client::new()
        .get(url)
        .timeout(std::time::Duration::from_secs(timeout_secs))
        .send()
        .await
        .with_context(|| format!("calling {url}"))?;
    let status = resp.status();
    if !status.is_success() {
        bail!("{url} answered {status}");
    }
    Ok(())
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn ids(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// A JSON scalar as plain text (strings unquoted), so table columns pad.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn print_status(s: &Value) {
    println!(
        "answered by node {}; meta leader {}, voters [{}], learners [{}]",
        text(&s["node_id"]),
        text(&s["meta"]["leader"]),
        ids(&s["meta"]["voters"]),
        ids(&s["meta"]["learners"])
    );
    println!();
    println!(
        "{:<6} {:<9} {:<6} {:<22} {:<22}",
        "NODE", "STATE", "ALIVE", "PEER", "API"
    );
    for n in s["nodes"].as_array().into_iter().flatten() {
        println!(
            "{:<6} {:<9} {:<6} {:<22} {:<22}",
            text(&n["id"]),
            text(&n["state"]),
            text(&n["alive"]),
            text(&n["peer_addr"]),
            text(&n["api_addr"])
        );
    }
    println!();
    println!(
        "{:<6} {:<7} {:<12} {:<9} LAG",
        "SHARD", "LEADER", "REPLICAS", "APPLIED"
    );
    for sh in s["shards"].as_array().into_iter().flatten() {
        let lag = sh["lag"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}:{v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let moving = if sh["moving"].is_null() {
            String::new()
        } else {
            format!("  moving {}", sh["moving"])
        };
        println!(
            "{:<6} {:<7} {:<12} {:<9} {lag}{moving}",
            text(&sh["id"]),
            text(&sh["leader"]),
            ids(&sh["replicas"]),
            text(&sh["applied"])
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use axum::routing::get;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["conclave", "healthcheck"]).expect("parses");
        assert!(matches!(
            cli.cmd,
            Cmd::Healthcheck { ref url, timeout_secs: 2 } if url == "http://127.0.0.1:7070/readyz"
        ));
    }

    #[tokio::test]
    async fn healthcheck_passes_on_a_2xx_answer_only() {
        let app = axum::Router::new()
            .route("/ready", get(|| async { "ready" }))
            .route(
                "/not-ready",
                get(|| async { StatusCode::SERVICE_UNAVAILABLE }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        assert!(healthcheck(&format!("http://{addr}/ready"), 2)
            .await
            .is_ok());
        assert!(healthcheck(&format!("http://{addr}/not-ready"), 2)
            .await
            .is_err());

        // Nothing listening: refused.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        assert!(healthcheck(&format!("http://127.0.0.1:{port}/readyz"), 2)
            .await
            .is_err());
    }
}
