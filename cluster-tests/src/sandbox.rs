//! A cluster of real `conclave` processes on loopback, for tests and the benchmark.
//!
//! Each node runs in its own directory under one [`TempDir`] and binds `127.0.0.1:0`; the sandbox
//! learns the bound ports from the node's `node.json` (so there is no pick-then-bind race) and
//! reuses them on restart. Nodes are addressed by *index*, 0-based in start order (index 0 is
//! the bootstrap node); node *ids* are whatever the cluster assigned. The invariant kept: while a
//! [`Cluster`] is alive its directory is too, and when it drops every child it started is
//! SIGKILLed, so a failing test leaves no stray process behind.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use tempfile::TempDir;
use tracing::info;

use crate::binary::conclave_binary;
use crate::chaos::net::{Network, NodeLink};
use crate::client::{ApiError, NodeClient};
use crate::model::{
    ClusterStatus, ContextEntry, Locate, MessagePage, Published, ShardKind, Task, TaskId, Topic,
};
use crate::wait::{wait_for, wait_until};

/// Most replicas a shard gets; a smaller cluster replicates every shard on every node.
pub const REPLICATION_FACTOR: usize = 3;
/// Per-request timeout of the sandbox's HTTP client, so a request to a dead leader cannot hang
/// a test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connect timeout of the sandbox's HTTP client.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a node gets to exit after SIGTERM before it is SIGKILLed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of a node's log files quoted when a wait on it fails.
const LOG_TAIL_LINES: usize = 30;
/// Set to keep the cluster directory after the test (its path is printed).
const KEEP_DATA_ENV: &str = "CONCLAVE_KEEP_DATA";

/// `DATA_DIR/node.json`, written by a node once it is bound and knows its id.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct NodeInfo {
    node_id: u64,
    listen: String,
    peer_listen: String,
}

/// `DATA_DIR/admin-credentials`, written by the bootstrap node on first start.
#[derive(Debug, Clone, Deserialize)]
struct AdminCredentials {
    api_key: String,
    workspace_id: String,
    cluster_secret: String,
}

/// Configures and starts a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    nodes: usize,
    shards: u32,
    binary: Option<PathBuf>,
    timeout: Duration,
    env: Vec<(String, String)>,
    network: Option<Network>,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        ClusterBuilder {
            nodes: 3,
            shards: 8,
            binary: None,
            timeout: Duration::from_secs(60),
            env: Vec::new(),
            network: None,
        }
    }
}

impl ClusterBuilder {
    /// Number of nodes to start (default 3).
    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = nodes;
        self
    }

    /// Number of data shards the bootstrap node creates (default 8).
    pub fn shards(mut self, shards: u32) -> Self {
        self.shards = shards;
        self
    }

    /// The `conclave` binary to run (default: see [`conclave_binary`]).
    pub fn binary(mut self, binary: impl Into<PathBuf>) -> Self {
        self.binary = Some(binary.into());
        self
    }

    /// Deadline of every wait the sandbox does itself (default 60 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the environment variable `key` to `value` on every node process the cluster starts:
    /// initial nodes, restarts and added nodes. It is applied after the inherited `CONCLAVE_*`
    /// variables are removed, so this is how a test passes node settings such as
    /// `CONCLAVE_DEAD_NODE_TIMEOUT_SECS`. A later call with the same key wins.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        self.env.retain(|(existing, _)| *existing != key);
        self.env.push((key, value.into()));
        self
    }

    /// Routes the nodes' peer traffic through `network`'s fault-injecting proxies: each node
    /// advertises its proxy and connects to its peers from its own loopback address (see
    /// [`crate::chaos::net`]), so a test can cut links between nodes.
    pub fn network(mut self, network: Network) -> Self {
        self.network = Some(network);
        self
    }

    /// Starts the bootstrap node, joins the others one by one, and waits until the cluster has
    /// converged (see [`Cluster::wait_converged`]).
    pub async fn start(self) -> anyhow::Result<Cluster> {
        init_tracing();
        ensure!(self.nodes >= 1, "a cluster needs at least one node");
        let binary = self.binary.unwrap_or_else(conclave_binary);
        let root = tempfile::Builder::new()
            .prefix("conclave-cluster-")
            .tempdir()
            .context("cannot create the cluster directory")?;
        info!(root = %root.path().display(), nodes = self.nodes, shards = self.shards, "starting cluster");

        // The bootstrap node creates the cluster and its admin credentials.
        let data_dir = root.path().join("n1");
        let shards = self.shards.to_string();
        let link = match &self.network {
            Some(network) => Some(network.add_node(0).await?),
            None => None,
        };
        let mut args = vec!["--shards".to_string(), shards];
        args.extend(link_args(link.as_ref()));
        let mut child = spawn_node(&binary, &self.env, &data_dir, &as_strs(&args))?;
        let started = async {
            let info = wait_for_node_info(&mut child, &data_dir, self.timeout).await?;
            if let Some(network) = &self.network {
                network.set_target(0, info.peer_listen.parse()?);
            }
            let credentials_path = data_dir.join("admin-credentials");
            let credentials: AdminCredentials =
                wait_for_file(&mut child, &data_dir, &credentials_path, self.timeout).await?;
            anyhow::Ok((info, credentials))
        }
        .await;
        let (info, credentials) = match started {
            Ok(started) => started,
            Err(error) => {
                kill_child(&mut child);
                return Err(error.context("the bootstrap node did not start"));
            }
        };
        let http = bearer_http_client(&credentials.api_key)?;
        let node = Node::new(&http, data_dir, info, child, link)?;
        let mut cluster = Cluster {
            binary,
            network: self.network,
            env: self.env,
            shards: self.shards,
            timeout: self.timeout,
            http,
            credentials,
            nodes: vec![node],
            root,
        };
        cluster.wait_ready(0).await?;

        // The others join through the bootstrap node, one at a time so ids follow indices.
        for _ in 1..self.nodes {
            cluster.add_node().await?;
        }
        cluster.wait_converged().await?;
        info!(nodes = self.nodes, "cluster converged");
        Ok(cluster)
    }
}

/// One `conclave` process of a [`Cluster`], running or not.
#[derive(Debug)]
pub struct Node {
    data_dir: PathBuf,
    info: NodeInfo,
    client: NodeClient,
    child: Option<Child>,
    removed: bool,
    /// How its peer traffic goes through the cluster's network, if it has one.
    link: Option<NodeLink>,
}

impl Node {
    fn new(
        http: &reqwest::Client,
        data_dir: PathBuf,
        info: NodeInfo,
        child: Child,
        link: Option<NodeLink>,
    ) -> anyhow::Result<Self> {
        let client = NodeClient::new(http.clone(), &format!("http://{}", info.listen))?;
        Ok(Node {
            data_dir,
            info,
            client,
            child: Some(child),
            removed: false,
            link,
        })
    }

    /// Base URL of the node's HTTP API, `http://<listen>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.info.listen)
    }

    /// The HTTP `--listen` address.
    pub fn listen_addr(&self) -> &str {
        &self.info.listen
    }

    /// The node-to-node `--peer-listen` address.
    pub fn peer_addr(&self) -> &str {
        &self.info.peer_listen
    }

    /// The id the cluster assigned to this node.
    pub fn node_id(&self) -> u64 {
        self.info.node_id
    }

    /// The node's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Whether the sandbox has a live process for this node.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether the node was removed from the cluster with [`Cluster::remove_node`].
    pub fn is_removed(&self) -> bool {
        self.removed
    }

    /// Typed HTTP calls against this node, authenticated with the admin key.
    pub fn client(&self) -> &NodeClient {
        &self.client
    }

    /// The OS process id, when running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// A running cluster of `conclave` processes; see the module documentation.
#[derive(Debug)]
pub struct Cluster {
    binary: PathBuf,
    /// The fault-injecting network the nodes' peer traffic goes through, if any.
    network: Option<Network>,
    /// Variables set on every node process, see [`ClusterBuilder::env`].
    env: Vec<(String, String)>,
    shards: u32,
    timeout: Duration,
    http: reqwest::Client,
    credentials: AdminCredentials,
    nodes: Vec<Node>,
    /// Last field, so the directory outlives every use of it.
    root: TempDir,
}

impl Cluster {
    /// A builder for a 3-node, 8-shard cluster.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// The node at `index` (0-based, start order). Panics when out of range.
    pub fn node(&self, index: usize) -> &Node {
        &self.nodes[index]
    }

    /// Every node ever started, removed ones included, by index.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Number of nodes ever started, removed ones included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no node (never true once started).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Number of data shards the cluster was created with.
    pub fn shard_count(&self) -> u32 {
        self.shards
    }

    /// The fault-injecting network of [`ClusterBuilder::network`], if the cluster has one.
    pub fn network(&self) -> Option<&Network> {
        self.network.as_ref()
    }

    /// The deadline the sandbox uses for its own waits.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The index of the node with id `id`.
    pub fn node_index_by_id(&self, id: u64) -> Option<usize> {
        self.nodes.iter().position(|node| node.node_id() == id)
    }

    /// Indices of nodes with a live process.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_running())
            .collect()
    }

    /// Ids of the nodes that are cluster members (started and not removed), running or not.
    pub fn member_ids(&self) -> BTreeSet<u64> {
        self.nodes
            .iter()
            .filter(|node| !node.removed)
            .map(Node::node_id)
            .collect()
    }

    /// A reqwest client carrying `Authorization: Bearer <admin key>`; clones share its pool.
    pub fn client(&self) -> &reqwest::Client {
        &self.http
    }

    /// The admin API key from the bootstrap node's `admin-credentials`.
    pub fn api_key(&self) -> &str {
        &self.credentials.api_key
    }

    /// The workspace of the admin key.
    pub fn workspace_id(&self) -> &str {
        &self.credentials.workspace_id
    }

    /// The secret joining nodes present.
    pub fn cluster_secret(&self) -> &str {
        &self.credentials.cluster_secret
    }

    /// The cluster directory holding every node's data directory.
    pub fn root_dir(&self) -> &Path {
        self.root.path()
    }

    /// Typed HTTP calls against node `index`.
    pub fn api(&self, index: usize) -> &NodeClient {
        self.nodes[index].client()
    }

    /// HTTP calls against node `index` authenticated with `api_key` instead of the admin key,
    /// or with no `Authorization` header at all when `None`.
    pub fn api_with_key(&self, index: usize, api_key: Option<&str>) -> anyhow::Result<NodeClient> {
        let http = match api_key {
            Some(key) => bearer_http_client(key)?,
            None => http_client(HeaderMap::new())?,
        };
        NodeClient::new(http, &self.nodes[index].url())
    }

    /// The contents of node `index`'s stderr log (where the node writes its tracing output),
    /// across all its starts, with terminal colour codes removed so `key=value` fields read as
    /// plain text.
    pub fn stderr_log(&self, index: usize) -> anyhow::Result<String> {
        let path = self.nodes[index].data_dir.join("stderr.log");
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        Ok(strip_ansi(&String::from_utf8_lossy(&bytes)))
    }

    /// Starts a new node that joins through the first running member, waits until it is ready,
    /// and returns its index. It does not wait for shards to move onto it.
    pub async fn add_node(&mut self) -> anyhow::Result<usize> {
        let index = self.add_node_unready().await?;
        self.wait_ready(index).await?;
        Ok(index)
    }

    /// Starts a new node that joins through the first running member and returns its index as
    /// soon as it has an id (its `node.json` exists), before it is ready.
    pub async fn add_node_unready(&mut self) -> anyhow::Result<usize> {
        let index = self.nodes.len();
        let seed = self.first_running_member()?;
        let seed_peer = self.nodes[seed].peer_addr().to_string();
        let data_dir = self.root.path().join(format!("n{}", index + 1));
        let link = match &self.network {
            Some(network) => Some(network.add_node(index).await?),
            None => None,
        };
        let mut args = vec![
            "--join".to_string(),
            seed_peer,
            "--cluster-secret".to_string(),
            self.credentials.cluster_secret.clone(),
        ];
        args.extend(link_args(link.as_ref()));
        let mut child = spawn_node(&self.binary, &self.env, &data_dir, &as_strs(&args))?;
        let info = match wait_for_node_info(&mut child, &data_dir, self.timeout).await {
            Ok(info) => info,
            Err(error) => {
                kill_child(&mut child);
                return Err(error.context(format!("node {index} did not join")));
            }
        };
        info!(index, node_id = info.node_id, listen = %info.listen, "node joined");
        if let Some(network) = &self.network {
            network.set_target(index, info.peer_listen.parse()?);
        }
        self.nodes
            .push(Node::new(&self.http, data_dir, info, child, link)?);
        Ok(index)
    }

    /// SIGKILLs node `index` and reaps it.
    pub fn kill(&mut self, index: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[index];
        let Some(mut child) = node.child.take() else {
            bail!("node {index} is not running");
        };
        child.kill().context("cannot SIGKILL the node")?;
        let status = child.wait().context("cannot reap the node")?;
        info!(index, node_id = node.info.node_id, %status, "node killed");
        Ok(())
    }

    /// Freezes node `index` with SIGSTOP: the process keeps its sockets but does nothing until
    /// [`Cluster::resume`].
    pub fn pause(&mut self, index: usize) -> anyhow::Result<()> {
        self.signal(index, libc::SIGSTOP)?;
        info!(index, "node paused");
        Ok(())
    }

    /// Lets node `index` run again after [`Cluster::pause`] (SIGCONT).
    pub fn resume(&mut self, index: usize) -> anyhow::Result<()> {
        self.signal(index, libc::SIGCONT)?;
        info!(index, "node resumed");
        Ok(())
    }

    fn signal(&self, index: usize, signal: libc::c_int) -> anyhow::Result<()> {
        let child = self.nodes[index]
            .child
            .as_ref()
            .with_context(|| format!("node {index} is not running"))?;
        let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
        // SAFETY: `pid` is our own unreaped child, so it cannot name another process.
        if unsafe { libc::kill(pid, signal) } != 0 {
            bail!(
                "cannot signal node {index}: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// Sends SIGTERM to node `index` and waits for it to exit (SIGKILL and an error if it has
    /// not exited within 30 s). A graceful stop must end with status 0: a node that crashes
    /// while shutting down is an error.
    pub async fn stop(&mut self, index: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[index];
        let Some(mut child) = node.child.take() else {
            bail!("node {index} is not running");
        };
        let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
        // SAFETY: `pid` is our own unreaped child, so it cannot name another process.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            let error = std::io::Error::last_os_error();
            kill_child(&mut child);
            bail!("cannot SIGTERM node {index}: {error}");
        }
        let waited = wait_for(
            &format!("node {index} to exit after SIGTERM"),
            STOP_TIMEOUT,
            async || Ok(child.try_wait()?),
        )
        .await;
        match waited {
            Ok(status) => {
                info!(index, node_id = node.info.node_id, %status, "node stopped");
                ensure!(
                    status.success(),
                    "node {index} ended with {status} after SIGTERM\n{}",
                    log_tails(&node.data_dir)
                );
                Ok(())
            }
            Err(error) => {
                kill_child(&mut child);
                Err(error.context(log_tails(&node.data_dir)))
            }
        }
    }

    /// Starts node `index` again on its data directory and its previous ports, without
    /// `--join` (its membership is on disk), and waits until it is ready.
    pub async fn restart(&mut self, index: usize) -> anyhow::Result<()> {
        self.respawn(index)?;
        self.wait_ready(index).await
    }

    /// Restarts every member that is not running, all at once (a lone node of a stopped cluster
    /// may not become ready until a quorum is back), then waits until they are all ready and the
    /// cluster has converged.
    pub async fn restart_all(&mut self) -> anyhow::Result<()> {
        let stopped: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| !self.nodes[i].is_running() && !self.nodes[i].removed)
            .collect();
        for &index in &stopped {
            self.respawn(index)?;
        }
        for &index in &stopped {
            self.wait_ready(index).await?;
        }
        self.wait_converged().await
    }

    /// Runs `conclave node remove ID` against the first running member and checks that it
    /// succeeded. The node's process keeps running; [`Cluster::kill`] it when done.
    pub async fn remove_node(&mut self, id: u64) -> anyhow::Result<()> {
        let index = self
            .node_index_by_id(id)
            .with_context(|| format!("no node with id {id}"))?;
        let via = (0..self.nodes.len())
            .find(|&i| i != index && self.nodes[i].is_running() && !self.nodes[i].removed)
            .context("no other running member to send the removal to")?;
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .args(["node", "remove", &id.to_string()])
            .args(["--addr", self.nodes[via].listen_addr()])
            .args(["--api-key", &self.credentials.api_key])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        scrub_env(command.as_std_mut());
        let output = tokio::time::timeout(self.timeout, command.output())
            .await
            .with_context(|| format!("`conclave node remove {id}` timed out"))?
            .context("cannot run `conclave node remove`")?;
        ensure!(
            output.status.success(),
            "`conclave node remove {id}` failed with {}\nstdout: {}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
        self.nodes[index].removed = true;
        info!(index, node_id = id, "node removed");
        Ok(())
    }

    /// The cluster status as node `index` sees it.
    pub async fn status(&self, index: usize) -> anyhow::Result<ClusterStatus> {
        Ok(self.api(index).status().await?)
    }

    /// Where `name` of `kind` lives, as the first running member sees it.
    pub async fn locate(&self, kind: ShardKind, name: &str) -> anyhow::Result<Locate> {
        let via = self.first_running_member()?;
        Ok(self.api(via).locate(kind, name).await?)
    }

    /// The node id leading the shard of `name` of `kind`, waiting until one is known.
    pub async fn leader_of(&self, kind: ShardKind, name: &str) -> anyhow::Result<u64> {
        let desc = format!("a leader for {} {name:?}", kind.as_str());
        wait_for(&desc, self.timeout, async || {
            Ok(self.locate(kind, name).await?.leader)
        })
        .await
    }

    /// Waits until node `index` answers `GET /readyz` with 200, failing early if it exits.
    pub async fn wait_ready(&mut self, index: usize) -> anyhow::Result<()> {
        let timeout = self.timeout;
        let node = &mut self.nodes[index];
        let Some(child) = node.child.as_mut() else {
            bail!("node {index} is not running");
        };
        let client = &node.client;
        let ready = wait_until(&format!("node {index} to be ready"), timeout, async || {
            ensure_alive(child)?;
            client.readyz().await?;
            Ok(true)
        })
        .await;
        ready.map_err(|error| error.context(log_tails(&node.data_dir)))
    }

    /// The node other than the bootstrap node (index 0) holding the most replicas, as
    /// `(index, node id, replicas held)`.
    pub async fn busiest_non_bootstrap_node(&self) -> anyhow::Result<(usize, u64, usize)> {
        let status = self.status(0).await?;
        let held = |id: u64| {
            status
                .shards
                .iter()
                .filter(|s| s.replicas.contains(&id))
                .count()
        };
        let index = (1..self.len())
            .max_by_key(|&i| held(self.node(i).node_id()))
            .context("the cluster has a single node")?;
        let id = self.node(index).node_id();
        Ok((index, id, held(id)))
    }

    /// Waits until, as node `via` reports, no shard lists node `id` as a replica and every shard
    /// has three replicas and a leader.
    pub async fn wait_replicas_moved_off(
        &self,
        via: usize,
        id: u64,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        wait_until(
            "the node's replicas to be re-created elsewhere",
            timeout,
            async || {
                let status = self.status(via).await?;
                ensure!(
                    status.shards.len() == self.shard_count() as usize,
                    "{} shards listed",
                    status.shards.len()
                );
                for shard in &status.shards {
                    ensure!(
                        !shard.replicas.contains(&id),
                        "shard {} still on node {id}: {:?}",
                        shard.id,
                        shard.replicas
                    );
                    ensure!(
                        shard.replicas.len() == REPLICATION_FACTOR,
                        "shard {} has replicas {:?}",
                        shard.id,
                        shard.replicas
                    );
                    ensure!(shard.leader.is_some(), "shard {} has no leader", shard.id);
                }
                Ok(true)
            },
        )
        .await
    }

    /// Waits until the first running member reports every member, `min(3, members)` replicas
    /// and a leader on every shard.
    pub async fn wait_converged(&self) -> anyhow::Result<()> {
        let members = self.member_ids();
        let replicas = members.len().min(REPLICATION_FACTOR);
        let converged = wait_until("the cluster to converge", self.timeout, async || {
            let via = self.first_running_member()?;
            let status = self.status(via).await?;
            match convergence_gap(&status, &members, replicas, self.shards) {
                None => Ok(true),
                Some(gap) => bail!("{gap}"),
            }
        })
        .await;
        converged.map_err(|error| error.context(self.all_log_tails()))
    }

    /// `PUT /v1/context/{key}` through node `index`.
    pub async fn put_context(
        &self,
        index: usize,
        key: &str,
        value: Value,
    ) -> Result<ContextEntry, ApiError> {
        self.api(index).put_context(key, value).await
    }

    /// `GET /v1/context/{key}` through node `index`.
    pub async fn get_context(&self, index: usize, key: &str) -> Result<ContextEntry, ApiError> {
        self.api(index).get_context(key).await
    }

    /// `POST /v1/topics` through node `index`.
    pub async fn create_topic(&self, index: usize, name: &str) -> Result<Topic, ApiError> {
        self.api(index).create_topic(name).await
    }

    /// `POST /v1/topics/{name}/publish` through node `index`.
    pub async fn publish(
        &self,
        index: usize,
        topic: &str,
        body: Value,
    ) -> Result<Published, ApiError> {
        self.api(index).publish(topic, body).await
    }

    /// Every message of `topic`, read through node `index`.
    pub async fn read_topic(&self, index: usize, topic: &str) -> Result<MessagePage, ApiError> {
        self.api(index).read_topic_all(topic).await
    }

    /// `POST /v1/tasks` through node `index`.
    pub async fn create_task(&self, index: usize, title: &str) -> Result<Task, ApiError> {
        self.api(index).create_task(title).await
    }

    /// `POST /v1/tasks/{id}/claim` through node `index`.
    pub async fn claim_task(
        &self,
        index: usize,
        id: &TaskId,
        agent: &str,
    ) -> Result<Task, ApiError> {
        self.api(index).claim_task(id, agent).await
    }

    /// `GET /v1/tasks/{id}` through node `index`.
    pub async fn get_task(&self, index: usize, id: &TaskId) -> Result<Task, ApiError> {
        self.api(index).get_task(id).await
    }

    fn first_running_member(&self) -> anyhow::Result<usize> {
        (0..self.nodes.len())
            .find(|&i| self.nodes[i].is_running() && !self.nodes[i].removed)
            .context("no running member")
    }

    /// Spawns node `index` on its data directory and recorded ports.
    fn respawn(&mut self, index: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[index];
        ensure!(!node.is_running(), "node {index} is already running");
        ensure!(!node.removed, "node {index} was removed from the cluster");
        let mut args = vec![
            "--listen".to_string(),
            node.info.listen.clone(),
            "--peer-listen".to_string(),
            node.info.peer_listen.clone(),
        ];
        args.extend(link_args(node.link.as_ref()));
        node.child = Some(spawn_node(
            &self.binary,
            &self.env,
            &node.data_dir,
            &as_strs(&args),
        )?);
        info!(index, node_id = node.info.node_id, "node restarted");
        Ok(())
    }

    fn all_log_tails(&self) -> String {
        let tails: Vec<String> = self.nodes.iter().map(|n| log_tails(&n.data_dir)).collect();
        tails.join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                kill_child(&mut child);
            }
        }
        if std::thread::panicking() || std::env::var_os(KEEP_DATA_ENV).is_some() {
            self.root.disable_cleanup(true);
            eprintln!("cluster directory kept at {}", self.root.path().display());
        }
    }
}

/// What still keeps `status` from showing a converged cluster, or `None`.
fn convergence_gap(
    status: &ClusterStatus,
    members: &BTreeSet<u64>,
    replicas: usize,
    shards: u32,
) -> Option<String> {
    if let Some(missing) = members.iter().find(|&&id| !status.has_node(id)) {
        return Some(format!("node {missing} is not in the member list"));
    }
    if status.shards.len() != shards as usize {
        return Some(format!(
            "{} shards listed, want {shards}",
            status.shards.len()
        ));
    }
    for shard in &status.shards {
        let mut ids: Vec<u64> = shard.replicas.clone();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != replicas || ids.iter().any(|id| !members.contains(id)) {
            return Some(format!(
                "shard {} has replicas {:?}, want {replicas} among members {members:?}",
                shard.id, shard.replicas
            ));
        }
        match shard.leader {
            Some(leader) if ids.contains(&leader) => {}
            leader => return Some(format!("shard {} has leader {leader:?}", shard.id)),
        }
    }
    None
}

/// The flags that send a node's peer traffic through its network link.
fn link_args(link: Option<&NodeLink>) -> Vec<String> {
    match link {
        Some(link) => vec![
            "--advertise".to_string(),
            link.advertise.to_string(),
            "--peer-source-addr".to_string(),
            link.source_ip.to_string(),
        ],
        None => Vec::new(),
    }
}

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Installs a test-friendly tracing subscriber once (`RUST_LOG`, default `info`).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_test_writer()
        .try_init();
}

/// A client sending `Authorization: Bearer <api_key>` with every request.
fn bearer_http_client(api_key: &str) -> anyhow::Result<reqwest::Client> {
    let mut headers = HeaderMap::new();
    let mut bearer = HeaderValue::from_str(&format!("Bearer {api_key}"))?;
    bearer.set_sensitive(true);
    headers.insert(AUTHORIZATION, bearer);
    http_client(headers)
}

/// A client sending `headers` with every request, with the sandbox's timeouts.
fn http_client(headers: HeaderMap) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_max_idle_per_host(1024)
        .build()?)
}

/// Spawns `conclave start --data-dir DIR` plus `args`, with `127.0.0.1:0` listeners unless
/// `args` name them, the variables of `env` set, and stdout/stderr appended to files in the
/// data directory.
fn spawn_node(
    binary: &Path,
    env: &[(String, String)],
    data_dir: &Path,
    args: &[&str],
) -> anyhow::Result<Child> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let log = |name: &str| -> anyhow::Result<File> {
        let path = data_dir.join(name);
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))
    };
    let mut command = Command::new(binary);
    command.arg("start").arg("--data-dir").arg(data_dir);
    if !args.contains(&"--listen") {
        command.args(["--listen", "127.0.0.1:0"]);
    }
    if !args.contains(&"--peer-listen") {
        command.args(["--peer-listen", "127.0.0.1:0"]);
    }
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(log("stdout.log")?)
        .stderr(log("stderr.log")?);
    scrub_env(&mut command);
    command.envs(env.iter().map(|(key, value)| (key, value)));
    command
        .spawn()
        .with_context(|| format!("cannot spawn {}", binary.display()))
}

/// Removes `CONCLAVE_*` settings inherited from the test's environment (a stray
/// `CONCLAVE_JOIN` would change what a node does); `RUST_LOG` and the rest pass through.
fn scrub_env(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CONCLAVE_") {
            command.env_remove(name);
        }
    }
}

/// Waits for `node.json` in `data_dir`, failing early if the process exits.
async fn wait_for_node_info(
    child: &mut Child,
    data_dir: &Path,
    timeout: Duration,
) -> anyhow::Result<NodeInfo> {
    wait_for_file(child, data_dir, &data_dir.join("node.json"), timeout).await
}

/// Waits until `path` holds valid JSON of type `T`, failing early if the process exits; the
/// error quotes the node's log tails.
async fn wait_for_file<T: DeserializeOwned>(
    child: &mut Child,
    data_dir: &Path,
    path: &Path,
    timeout: Duration,
) -> anyhow::Result<T> {
    let desc = format!("{} to appear", path.display());
    let found = wait_for(&desc, timeout, async || {
        ensure_alive(child)?;
        match std::fs::read(path) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error.into()),
        }
    })
    .await;
    found.map_err(|error| error.context(log_tails(data_dir)))
}

/// Errors if `child` has exited.
fn ensure_alive(child: &mut Child) -> anyhow::Result<()> {
    match child.try_wait()? {
        Some(status) => Err(anyhow::anyhow!("the node exited early with {status}")),
        None => Ok(()),
    }
}

/// SIGKILLs and reaps `child`, ignoring errors (it may have exited already).
fn kill_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// `text` without ANSI escape sequences (`ESC [ parameters final-byte`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            // Parameters and intermediates, up to and including the final byte `@`..=`~`.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

/// The last lines of a node's stdout and stderr logs, for error messages.
fn log_tails(data_dir: &Path) -> String {
    let mut out = String::new();
    for name in ["stdout.log", "stderr.log"] {
        let path = data_dir.join(name);
        out.push_str(&format!("--- tail of {} ---\n", path.display()));
        out.push_str(&tail(&path, LOG_TAIL_LINES));
    }
    out
}

/// The last `lines` lines of the file at `path` (reads at most its last 64 KiB).
fn tail(path: &Path, lines: usize) -> String {
    const WINDOW: u64 = 64 * 1024;
    let Ok(mut file) = File::open(path) else {
        return "(missing)\n".to_string();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(WINDOW)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    let mut out = all[all.len().saturating_sub(lines)..].join("\n");
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MetaStatus, NodeStatus, ShardStatus};

    fn status(shards: Vec<(Vec<u64>, Option<u64>)>) -> ClusterStatus {
        ClusterStatus {
            node_id: 1,
            nodes: (1..=3)
                .map(|id| NodeStatus {
                    id,
                    peer_addr: String::new(),
                    api_addr: String::new(),
                    alive: true,
                })
                .collect(),
            meta: MetaStatus::default(),
            shards: shards
                .into_iter()
                .enumerate()
                .map(|(i, (replicas, leader))| ShardStatus {
                    id: i as u64 + 1,
                    replicas,
                    leader,
                    applied: Some(0),
                    lag: Default::default(),
                    replica_applied: Default::default(),
                    moving: None,
                })
                .collect(),
        }
    }

    #[test]
    fn convergence_needs_full_replicas_and_leaders() {
        let members: BTreeSet<u64> = [1, 2, 3].into();
        let good = status(vec![(vec![1, 2, 3], Some(2)), (vec![3, 1, 2], Some(1))]);
        assert_eq!(convergence_gap(&good, &members, 3, 2), None);
        let short = status(vec![(vec![1, 2], Some(2)), (vec![1, 2, 3], Some(1))]);
        assert!(convergence_gap(&short, &members, 3, 2).is_some());
        let leaderless = status(vec![(vec![1, 2, 3], None), (vec![1, 2, 3], Some(1))]);
        assert!(convergence_gap(&leaderless, &members, 3, 2).is_some());
        let more_members: BTreeSet<u64> = [1, 2, 3, 4].into();
        assert!(convergence_gap(&good, &more_members, 3, 2).is_some());
    }

    #[test]
    fn strip_ansi_keeps_plain_text() {
        let colored = "\u{1b}[32m INFO\u{1b}[0m installed snapshot \u{1b}[3mgroup\u{1b}[0m\u{1b}[2m=\u{1b}[0m4";
        assert_eq!(strip_ansi(colored), " INFO installed snapshot group=4");
    }

    #[test]
    fn tail_keeps_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "a\nb\nc\n").unwrap();
        assert_eq!(tail(&path, 2), "b\nc\n");
    }
}
