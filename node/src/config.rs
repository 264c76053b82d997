//! Node configuration: one serde struct, layered defaults → file → `CONCLAVE_*` env → flags,
//! validated at start. `docs/conclave.example.toml` is a commented example.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{bail, Context};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Everything a node is configured with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Folder for the node's database, identity and credentials.
    pub data_dir: PathBuf,
    /// Client address (REST, and later WebSocket and MCP); port 0 picks a free port.
    pub listen: String,
    /// Peer gRPC address; port 0 picks a free port.
    pub peer_listen: String,
    /// Peer address other nodes use to reach this one; defaults to the bound `peer_listen`.
    pub advertise: Option<String>,
    /// Local IP address this node's outgoing peer connections are made from (on a multi-homed
    /// host, the interface peer traffic leaves by); the OS chooses when absent.
    pub peer_source_addr: Option<String>,
    /// A peer address of a running cluster to join; absent on the first node.
    pub join: Option<String>,
    /// Shared secret of the cluster's peer traffic; generated on the first node if absent.
    pub cluster_secret: Option<String>,
    /// Number of data shards, fixed when the cluster is bootstrapped.
    pub shards: u64,
    /// Raft heartbeat period, ms.
    pub heartbeat_ms: u64,
    /// Raft election timeout lower bound, ms.
    pub election_min_ms: u64,
    /// Raft election timeout upper bound, ms.
    pub election_max_ms: u64,
    /// A node silent this long has its replicas re-created elsewhere, seconds.
    pub dead_node_timeout_secs: u64,
    /// An online agent with no heartbeat for this long goes offline, seconds, in workspaces
    /// that set no `presence_timeout_secs` of their own.
    pub presence_timeout_secs: u64,
    /// Log entries since a group's last snapshot that trigger a new one (and let older logs go).
    pub snapshot_after_logs: u64,
    /// Largest request body accepted, bytes.
    pub max_body_bytes: usize,
    /// Largest artifact upload (decoded content), bytes; its request may exceed
    /// `max_body_bytes` by the base64 and JSON overhead. At most 16 MiB.
    pub max_artifact_bytes: usize,
    /// Log filter (tracing `EnvFilter` syntax); `RUST_LOG` overrides it.
    pub log: String,
    /// How often a shard leader enforces topic retention and purges deleted topics, seconds.
    pub compaction_interval_secs: u64,
    /// Audit entries older than this many days are removed (1 to 3650).
    pub audit_retention_days: u64,
    /// At most this many of a workspace's newest audit entries are kept (1 000 to 100 000 000).
    pub audit_max_entries: u64,
    /// How old (seconds) a call's audit record in its shard's outbox must be before the
    /// shard's leader appends the entry itself, its serving node having failed to (1 to 3600).
    pub audit_relay_after_secs: u64,
    // live events (WebSocket, SSE)
    /// Live connections (WebSocket and SSE together) one node holds at once.
    pub stream_max_connections: usize,
    /// Subscriptions one WebSocket connection may hold at once.
    pub stream_max_subscriptions: usize,
    /// Frames queued for sending per live connection; a client further behind is disconnected.
    pub stream_send_queue: usize,
    /// How long a new WebSocket may take to send its auth frame, seconds.
    pub stream_auth_timeout_secs: u64,
    /// How often idle live connections are pinged (and their key re-checked), seconds.
    pub stream_ping_interval_secs: u64,
    /// A WebSocket silent this long (not even a pong) is closed, seconds.
    pub stream_idle_timeout_secs: u64,
    /// Largest frame a WebSocket client may send, bytes.
    pub stream_max_frame_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            listen: "127.0.0.1:7070".into(),
            peer_listen: "127.0.0.1:7071".into(),
            advertise: None,
            peer_source_addr: None,
            join: None,
            cluster_secret: None,
            shards: 16,
            heartbeat_ms: 200,
            election_min_ms: 1000,
            election_max_ms: 2000,
            dead_node_timeout_secs: 30,
            presence_timeout_secs: 30,
            snapshot_after_logs: 20_000,
            max_body_bytes: 1 << 20,
            max_artifact_bytes: 4 << 20,
            log: "info".into(),
            compaction_interval_secs: 60,
            audit_retention_days: 90,
            audit_max_entries: 1_000_000,
            audit_relay_after_secs: 60,
            stream_max_connections: 10_000,
            stream_max_subscriptions: 64,
            stream_send_queue: 1024,
            stream_auth_timeout_secs: 10,
            stream_ping_interval_secs: 20,
            stream_idle_timeout_secs: 60,
            stream_max_frame_bytes: 64 * 1024,
        }
    }
}

/// Command-line overrides; only the flags given are applied.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_source_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shards: Option<u64>,
}

/// Fields settable through `CONCLAVE_*` variables (other `CONCLAVE_*` names belong to the CLI).
const FIELDS: &[&str] = &[
    "data_dir",
    "listen",
    "peer_listen",
    "advertise",
    "peer_source_addr",
    "join",
    "cluster_secret",
    "shards",
    "heartbeat_ms",
    "election_min_ms",
    "election_max_ms",
    "dead_node_timeout_secs",
    "presence_timeout_secs",
    "snapshot_after_logs",
    "max_body_bytes",
    "max_artifact_bytes",
    "log",
    "compaction_interval_secs",
    "audit_retention_days",
    "audit_max_entries",
    "audit_relay_after_secs",
    "stream_max_connections",
    "stream_max_subscriptions",
    "stream_send_queue",
    "stream_auth_timeout_secs",
    "stream_ping_interval_secs",
    "stream_idle_timeout_secs",
    "stream_max_frame_bytes",
];

impl Config {
    /// The limits of live event connections, as the API takes them.
    pub fn stream_settings(&self) -> conclave_api::live::StreamSettings {
        use std::time::Duration;
        conclave_api::live::StreamSettings {
            max_connections: self.stream_max_connections,
            max_subscriptions: self.stream_max_subscriptions,
            send_queue: self.stream_send_queue,
            auth_timeout: Duration::from_secs(self.stream_auth_timeout_secs),
            ping_interval: Duration::from_secs(self.stream_ping_interval_secs),
            idle_timeout: Duration::from_secs(self.stream_idle_timeout_secs),
            max_frame_bytes: self.stream_max_frame_bytes,
        }
    }

    /// Loads defaults, then `file` (if given), then `CONCLAVE_*` variables, then `flags`.
    pub fn load(file: Option<&PathBuf>, flags: Overrides) -> anyhow::Result<Self> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(f) = file {
            if !f.exists() {
                bail!("config file {} does not exist", f.display());
            }
            fig = fig.merge(Toml::file(f));
        }
        let config: Config = fig
            .merge(Env::prefixed("CONCLAVE_").only(FIELDS))
            .merge(Serialized::defaults(flags))
            .extract()
            .context("invalid configuration")?;
        config.validate()?;
        Ok(config)
    }

    /// The parsed `peer_source_addr` (validated at load).
    pub fn peer_source_ip(&self) -> Option<IpAddr> {
        self.peer_source_addr
            .as_deref()
            .and_then(|ip| ip.parse().ok())
    }

    fn validate(&self) -> anyhow::Result<()> {
        for (name, v) in [("listen", &self.listen), ("peer_listen", &self.peer_listen)] {
            v.parse::<SocketAddr>().with_context(|| {
                format!("{name} must be HOST:PORT with a numeric host, got {v:?}")
            })?;
        }
        if let Some(ip) = &self.peer_source_addr {
            ip.parse::<IpAddr>().with_context(|| {
                format!("peer_source_addr must be a numeric IP address, got {ip:?}")
            })?;
        }
        if !(1..=4096).contains(&self.shards) {
            bail!("shards must be 1 to 4096");
        }
        if self.election_min_ms <= self.heartbeat_ms || self.election_max_ms <= self.election_min_ms
        {
            bail!("timings must satisfy heartbeat_ms < election_min_ms < election_max_ms");
        }
        if !(1..=86_400).contains(&self.compaction_interval_secs) {
            bail!("compaction_interval_secs must be 1 to 86400");
        }
        if !(1..=3650).contains(&self.audit_retention_days) {
            bail!("audit_retention_days must be 1 to 3650");
        }
        if !(1_000..=100_000_000).contains(&self.audit_max_entries) {
            bail!("audit_max_entries must be 1000 to 100000000");
        }
        if !(1..=3600).contains(&self.audit_relay_after_secs) {
            bail!("audit_relay_after_secs must be 1 to 3600");
        }
        if !(1..=86_400).contains(&self.presence_timeout_secs) {
            bail!("presence_timeout_secs must be 1 to 86400");
        }
        if self.snapshot_after_logs < 10 {
            bail!("snapshot_after_logs must be at least 10");
        }
        if !(1..=16 << 20).contains(&self.max_artifact_bytes) {
            bail!("max_artifact_bytes must be 1 to 16777216");
        }
        for (name, v, max) in [
            (
                "stream_max_connections",
                self.stream_max_connections,
                1_000_000,
            ),
            (
                "stream_max_subscriptions",
                self.stream_max_subscriptions,
                10_000,
            ),
            ("stream_send_queue", self.stream_send_queue, 1_000_000),
            (
                "stream_max_frame_bytes",
                self.stream_max_frame_bytes,
                16 << 20,
            ),
        ] {
            if !(1..=max).contains(&v) {
                bail!("{name} must be 1 to {max}");
            }
        }
        if !(1..=3600).contains(&self.stream_auth_timeout_secs)
            || !(1..=3600).contains(&self.stream_ping_interval_secs)
        {
            bail!("stream_auth_timeout_secs and stream_ping_interval_secs must be 1 to 3600");
        }
        if self.stream_idle_timeout_secs <= self.stream_ping_interval_secs
            || self.stream_idle_timeout_secs > 86_400
        {
            bail!("stream_idle_timeout_secs must exceed stream_ping_interval_secs, at most 86400");
        }
        if let Some(s) = &self.cluster_secret {
            if s.len() < 16 || !s.chars().all(|c| c.is_ascii_graphic()) {
                bail!("cluster_secret must be at least 16 printable ascii characters");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_is_the_defaults() {
        let path = PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/conclave.example.toml"
        ));
        let from_file: Config = Figment::from(Toml::file(&path))
            .extract()
            .expect("example parses");
        let defaults = Config::default();
        assert_eq!(
            serde_json::to_value(&from_file).unwrap(),
            serde_json::to_value(&defaults).unwrap()
        );
    }

    #[test]
    fn flags_override_and_bad_values_are_refused() {
        let flags = Overrides {
            listen: Some("127.0.0.1:0".into()),
            shards: Some(4),
            ..Default::default()
        };
        let c = Config::load(None, flags).expect("valid");
        assert_eq!((c.listen.as_str(), c.shards), ("127.0.0.1:0", 4));
        let bad = Overrides {
            listen: Some("localhost".into()),
            ..Default::default()
        };
        assert!(Config::load(None, bad).is_err());
        let bad = Overrides {
            shards: Some(0),
            ..Default::default()
        };
        assert!(Config::load(None, bad).is_err());
        let bad = Overrides {
            cluster_secret: Some("short".into()),
            ..Default::default()
        };
        assert!(Config::load(None, bad).is_err());
        let bad = Overrides {
            peer_source_addr: Some("localhost".into()),
            ..Default::default()
        };
        assert!(Config::load(None, bad).is_err());
        let source = Overrides {
            peer_source_addr: Some("127.0.0.2".into()),
            ..Default::default()
        };
        let c = Config::load(None, source).expect("valid");
        assert_eq!(c.peer_source_ip(), Some([127, 0, 0, 2].into()));
    }
}
