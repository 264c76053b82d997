//! The Docker packaging of `docker/`: `docker/build-image.sh` builds the image from the release
//! binary, `docker/docker-compose.yml` runs three nodes, and the cluster keeps every write it
//! acknowledged while the container of a shard leader is `docker kill`ed and restarted.
//!
//! Needs a reachable Docker engine, `docker-compose` (v1) and the release binary
//! (`cargo build --release -p conclave-node`, or `CONCLAVE_RELEASE_BIN`); `scripts/test.sh`
//! builds it when a Docker engine answers. Without them the test skips with a message, except
//! under `CI=true`, where it fails (`CONCLAVE_SKIP_DOCKER=1` skips it on purpose).
//!
//! Each run has its own compose project (and so its own network and volumes), image tag and
//! host ports (free ports picked at start, bound to 127.0.0.1), and takes them all down, volumes
//! included, however it ends.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use conclave_cluster_tests::{
    retry_transient, retry_until_ok, wait_for, wait_until, ClusterStatus, NodeClient, ShardKind,
};
use rand::Rng;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use serde_json::{json, Value};
use tokio::process::Command;

/// The compose services, in start order; node ids follow it.
const SERVICES: [&str; 3] = ["node1", "node2", "node3"];
/// Data shards of the test cluster: few, so it starts fast.
const SHARDS: u32 = 4;
/// Replicas per shard on three nodes.
const REPLICAS: usize = 3;
/// Deadline of every wait on the cluster (start, readiness, election, catch-up).
const WAIT: Duration = Duration::from_secs(180);
/// Deadline of one write, retries of transient errors (no leader yet) included.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Context puts and topic publishes in each phase (before the kill, while the leader is dead).
const WRITES_PER_PHASE: usize = 20;
/// Writes through the restarted node.
const WRITES_AFTER_RESTART: usize = 5;
/// The topic the writes publish to; its shard's leader is the container killed.
const TOPIC: &str = "docker-events";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_cluster_keeps_acknowledged_writes_across_a_killed_leader_container() -> Result<()>
{
    let started = Instant::now();
    let Some(binary) = prerequisites()? else {
        return Ok(());
    };
    let mut cluster = ComposeCluster::new()?;

    // The image, built by the script an operator uses.
    let build = Command::new("bash")
        .arg(repo_root().join("docker/build-image.sh"))
        .env("CONCLAVE_BIN", &binary)
        .env("CONCLAVE_IMAGE", &cluster.image)
        .output()
        .await
        .context("running docker/build-image.sh")?;
    ensure!(
        build.status.success(),
        "docker/build-image.sh failed: {}{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );
    cluster.image_built = true;
    log(
        started,
        &format!(
            "image built: {}",
            String::from_utf8_lossy(&build.stdout).trim()
        ),
    );

    // `up` returns once node1 and node2 are healthy (node3 starts after node2 is).
    cluster.compose(&["up", "-d"]).await?;
    for service in SERVICES {
        cluster.wait_healthy(service).await?;
    }
    log(started, "three containers healthy");

    // The admin key, read the documented way: `conclave admin-credentials` in node1.
    let credentials: Value = retry_until_ok(WAIT, async || {
        let out = cluster
            .compose(&["exec", "-T", "node1", "conclave", "admin-credentials"])
            .await?;
        anyhow::Ok(serde_json::from_str::<Value>(&out)?)
    })
    .await?;
    let api_key = credentials["api_key"]
        .as_str()
        .context("admin-credentials has no api_key")?;
    let http = bearer_client(api_key)?;
    let apis: BTreeMap<&str, NodeClient> = SERVICES
        .iter()
        .zip(&cluster.ports)
        .map(|(&service, port)| {
            let api = NodeClient::new(http.clone(), &format!("http://127.0.0.1:{port}"))?;
            anyhow::Ok((service, api))
        })
        .collect::<Result<_>>()?;
    wait_converged(&apis["node1"], None).await?;
    log(started, "cluster converged");

    // Writes through one container.
    let mut acked = Acked::default();
    retry_transient(WRITE_TIMEOUT, async || {
        apis["node1"].create_topic(TOPIC).await
    })
    .await
    .context("creating the topic")?;
    acked
        .write(&[&apis["node1"]], "before", WRITES_PER_PHASE)
        .await?;

    // The leader of the topic's shard, and its container.
    let node1 = &apis["node1"];
    let leader_id = wait_for("a leader of the topic's shard", WAIT, async || {
        Ok(node1.locate(ShardKind::Topic, TOPIC).await?.leader)
    })
    .await?;
    let status = node1.status().await?;
    let victim = service_of(&status, leader_id)?;
    let survivors: Vec<&str> = SERVICES.into_iter().filter(|&s| s != victim).collect();
    let container = cluster.container(victim).await?;
    docker(&["kill", &container]).await?;
    log(
        started,
        &format!("killed {victim} (node {leader_id}), leader of the topic's shard"),
    );

    // Writes keep going through the two other containers, and the shard elects another leader.
    let survivor_apis: Vec<&NodeClient> = survivors.iter().map(|s| &apis[s]).collect();
    acked
        .write(&survivor_apis, "while-dead", WRITES_PER_PHASE)
        .await?;
    let new_leader = wait_for("a new leader of the topic's shard", WAIT, async || {
        let leader = survivor_apis[0]
            .locate(ShardKind::Topic, TOPIC)
            .await?
            .leader;
        Ok(leader.filter(|&id| id != leader_id))
    })
    .await?;
    log(
        started,
        &format!("node {new_leader} leads the topic's shard; {victim} restarting"),
    );

    // The killed container comes back with its volume, catches up and serves writes.
    docker(&["start", &container]).await?;
    cluster.wait_healthy(victim).await?;
    let restarted = &apis[victim];
    wait_until("the restarted node to be ready", WAIT, async || {
        restarted.readyz().await?;
        Ok(true)
    })
    .await?;
    acked
        .write(&[restarted], "after-restart", WRITES_AFTER_RESTART)
        .await?;

    // Every replica of every shard has applied the same log, and every acknowledged write
    // reads back through every node.
    wait_converged(restarted, Some(survivor_apis.as_slice())).await?;
    for (service, api) in &apis {
        acked
            .verify(api)
            .await
            .with_context(|| format!("reading through {service}"))?;
    }
    log(
        started,
        &format!(
            "{} puts and {} publishes acknowledged, all present on every node",
            acked.context.len(),
            acked.messages.len()
        ),
    );
    cluster.passed = true;
    Ok(())
}

/// The release binary to package, or `None` (after saying why) when the test cannot run here
/// and is not under CI.
fn prerequisites() -> Result<Option<PathBuf>> {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    if std::env::var_os("CONCLAVE_SKIP_DOCKER").is_some_and(|v| !v.is_empty()) {
        eprintln!("skipping the Docker test: CONCLAVE_SKIP_DOCKER is set");
        return Ok(None);
    }
    let missing = |why: String| -> Result<Option<PathBuf>> {
        if ci {
            bail!("{why} (CI is set: the Docker test must run; CONCLAVE_SKIP_DOCKER=1 skips it)");
        }
        eprintln!("skipping the Docker test: {why}");
        Ok(None)
    };
    let engine = std::process::Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdin(Stdio::null())
        .output();
    match engine {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return missing(format!("no Docker engine is reachable: {why}"));
        }
        Err(e) => return missing(format!("the docker command cannot run: {e}")),
    }
    let compose = std::process::Command::new("docker-compose")
        .arg("version")
        .stdin(Stdio::null())
        .output();
    if !compose.is_ok_and(|out| out.status.success()) {
        return missing("docker-compose is not installed".into());
    }
    let binary = match std::env::var_os("CONCLAVE_RELEASE_BIN") {
        Some(path) => PathBuf::from(path),
        None => {
            // Test executables live in <target>/<profile>/deps/.
            let exe = std::env::current_exe()?;
            let target = exe.ancestors().nth(3).context("no target directory")?;
            target.join("release/conclave")
        }
    };
    if !binary.is_file() {
        return missing(format!(
            "no release binary at {}: run `cargo build --release -p conclave-node` or set \
             CONCLAVE_RELEASE_BIN",
            binary.display()
        ));
    }
    Ok(Some(binary))
}

/// One compose project: its name, image tag, host ports and environment file. Dropping it takes
/// the project down with its volumes and removes the image tag; a failed run prints the
/// containers' logs first.
struct ComposeCluster {
    project: String,
    image: String,
    ports: Vec<u16>,
    /// Holds the environment file compose reads instead of `docker/.env`.
    dir: tempfile::TempDir,
    image_built: bool,
    passed: bool,
}

impl ComposeCluster {
    fn new() -> Result<Self> {
        let suffix = format!("{}-{:08x}", std::process::id(), rand::rng().random::<u32>());
        let project = format!("conclave-test-{suffix}");
        let image = format!("conclave-test:{suffix}");
        let ports = free_ports(SERVICES.len())?;
        let dir = tempfile::tempdir()?;
        let secret = format!("{:032x}", rand::rng().random::<u128>());
        let mut env = format!(
            "CONCLAVE_IMAGE={image}\nCONCLAVE_CLUSTER_SECRET={secret}\nCONCLAVE_SHARDS={SHARDS}\n"
        );
        for (i, port) in ports.iter().enumerate() {
            env.push_str(&format!("CONCLAVE_PORT_{}={port}\n", i + 1));
        }
        std::fs::write(dir.path().join("env"), env)?;
        Ok(ComposeCluster {
            project,
            image,
            ports,
            dir,
            image_built: false,
            passed: false,
        })
    }

    /// `docker-compose` with this project's file, name and environment.
    fn command_args(&self) -> Vec<String> {
        let env_file = self.dir.path().join("env");
        let file = repo_root().join("docker/docker-compose.yml");
        vec![
            "--env-file".into(),
            env_file.display().to_string(),
            "-f".into(),
            file.display().to_string(),
            "-p".into(),
            self.project.clone(),
        ]
    }

    /// Runs `docker-compose ARGS`; its stdout.
    async fn compose(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("docker-compose")
            .args(self.command_args())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .context("running docker-compose")?;
        ensure!(
            out.status.success(),
            "docker-compose {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    }

    /// The container id of `service`.
    async fn container(&self, service: &str) -> Result<String> {
        let id = self.compose(&["ps", "-q", service]).await?;
        let id = id.trim();
        ensure!(!id.is_empty(), "no container for {service}");
        Ok(id.to_string())
    }

    /// Waits until Docker reports `service`'s container healthy (its `conclave healthcheck`).
    async fn wait_healthy(&self, service: &str) -> Result<()> {
        let container = self.container(service).await?;
        wait_until(&format!("{service} to be healthy"), WAIT, async || {
            let state = docker(&[
                "inspect",
                "--format",
                "{{.State.Health.Status}}",
                &container,
            ])
            .await?;
            let state = state.trim();
            ensure!(state == "healthy", "{service} is {state:?}");
            Ok(true)
        })
        .await
    }

    /// Runs `docker-compose ARGS` from a destructor: no async; its output printed when the
    /// test failed or the command did.
    fn compose_blocking(&self, args: &[&str]) {
        let out = std::process::Command::new("docker-compose")
            .args(self.command_args())
            .args(args)
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(out) if self.passed && out.status.success() => {}
            Ok(out) => eprint!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("docker-compose {}: {e}", args.join(" ")),
        }
    }
}

impl Drop for ComposeCluster {
    fn drop(&mut self) {
        if !self.passed {
            self.compose_blocking(&["logs", "--no-color", "--tail", "40"]);
        }
        self.compose_blocking(&["down", "-v", "--remove-orphans", "-t", "5"]);
        if self.image_built {
            let _ = std::process::Command::new("docker")
                .args(["rmi", &self.image])
                .stdout(Stdio::null())
                .status();
        }
    }
}

/// What the cluster acknowledged: context values by key, topic messages by sequence number.
#[derive(Default)]
struct Acked {
    context: BTreeMap<String, Value>,
    messages: BTreeMap<u64, Value>,
}

impl Acked {
    /// `count` context puts and as many publishes, spread over `apis` in turn, each retried
    /// while the cluster answers "no leader yet"; records what was acknowledged.
    async fn write(&mut self, apis: &[&NodeClient], phase: &str, count: usize) -> Result<()> {
        for i in 0..count {
            let api = apis[i % apis.len()];
            let key = format!("{phase}-{i}");
            let value = json!({ "phase": phase, "i": i });
            let entry = retry_transient(WRITE_TIMEOUT, async || {
                api.put_context(&key, value.clone()).await
            })
            .await
            .with_context(|| format!("putting {key}"))?;
            ensure!(entry.value == value, "{key}: the put answered {entry:?}");
            self.context.insert(key, value);

            let body = json!({ "phase": phase, "i": i });
            let published = retry_transient(WRITE_TIMEOUT, async || {
                api.publish(TOPIC, body.clone()).await
            })
            .await
            .with_context(|| format!("publishing {phase} {i}"))?;
            ensure!(
                self.messages.insert(published.seq, body).is_none(),
                "seq {} acknowledged twice",
                published.seq
            );
        }
        Ok(())
    }

    /// Every acknowledged value and message reads back through `api`.
    async fn verify(&self, api: &NodeClient) -> Result<()> {
        for (key, value) in &self.context {
            let entry = retry_transient(WRITE_TIMEOUT, async || api.get_context(key).await)
                .await
                .with_context(|| format!("reading {key}"))?;
            ensure!(
                entry.value == *value,
                "{key}: expected {value}, read {entry:?}"
            );
        }
        let page = retry_transient(WRITE_TIMEOUT, async || api.read_topic_all(TOPIC).await)
            .await
            .context("reading the topic")?;
        let read: BTreeMap<u64, &Value> = page.items.iter().map(|m| (m.seq, &m.body)).collect();
        for (seq, body) in &self.messages {
            ensure!(
                read.get(seq) == Some(&body),
                "message {seq}: acknowledged {body}, read {:?}",
                read.get(seq)
            );
        }
        Ok(())
    }
}

/// Waits until `via` (or, failing that, any of `others`) reports three live nodes and every
/// shard with three replicas, a leader and the same applied index on every replica.
async fn wait_converged(via: &NodeClient, others: Option<&[&NodeClient]>) -> Result<()> {
    let apis: Vec<&NodeClient> = std::iter::once(via)
        .chain(others.unwrap_or_default().iter().copied())
        .collect();
    wait_until("every replica to converge", WAIT, async || {
        let mut last = None;
        for api in &apis {
            match api.status().await {
                Ok(status) => match convergence_gap(&status) {
                    None => return Ok(true),
                    Some(gap) => last = Some(gap),
                },
                Err(e) => last = Some(e.to_string()),
            }
        }
        bail!("{}", last.unwrap_or_default())
    })
    .await
}

/// Why `status` does not show a converged three-node cluster, if it does not.
fn convergence_gap(status: &ClusterStatus) -> Option<String> {
    if status.nodes.len() != SERVICES.len() || status.nodes.iter().any(|n| !n.alive) {
        return Some(format!("nodes {:?}", status.nodes));
    }
    if status.shards.len() != SHARDS as usize {
        return Some(format!("{} shards listed", status.shards.len()));
    }
    for shard in &status.shards {
        let applied: Vec<u64> = shard.replica_applied.values().copied().collect();
        let even = applied.len() == REPLICAS && applied.windows(2).all(|w| w[0] == w[1]);
        if shard.replicas.len() != REPLICAS || shard.leader.is_none() || !even {
            return Some(format!(
                "shard {}: replicas {:?}, leader {:?}, applied {:?}",
                shard.id, shard.replicas, shard.leader, shard.replica_applied
            ));
        }
    }
    None
}

/// The compose service of node `id`: the host of its advertised peer address (`nodeN:7071`).
fn service_of(status: &ClusterStatus, id: u64) -> Result<&'static str> {
    let node = status
        .nodes
        .iter()
        .find(|n| n.id == id)
        .with_context(|| format!("node {id} is not listed"))?;
    let host = node.peer_addr.split(':').next().unwrap_or_default();
    SERVICES
        .into_iter()
        .find(|&s| s == host)
        .with_context(|| format!("node {id} advertises {}", node.peer_addr))
}

/// Runs `docker ARGS`; its stdout.
async fn docker(args: &[&str]) -> Result<String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running docker")?;
    ensure!(
        out.status.success(),
        "docker {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// `count` distinct free ports on 127.0.0.1, for the containers' published client ports.
fn free_ports(count: usize) -> Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// An HTTP client sending the admin key, with timeouts so a dead container cannot hang a call.
fn bearer_client(api_key: &str) -> Result<reqwest::Client> {
    let mut headers = HeaderMap::new();
    let mut bearer = HeaderValue::from_str(&format!("Bearer {api_key}"))?;
    bearer.set_sensitive(true);
    headers.insert(AUTHORIZATION, bearer);
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(2))
        .build()?)
}

fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn log(started: Instant, what: &str) {
    eprintln!("[{:>6.1}s] {what}", started.elapsed().as_secs_f64());
}
