//! Files a node keeps in its data folder: its identity (id and cluster secret), the
//! bootstrap admin credentials (written once, mode 0600) and `node.json` (bound addresses).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Who this node is; written once its id is known.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    /// Stored format version.
    pub format: u32,
    /// The node's id.
    pub node_id: u64,
    /// The cluster's peer secret.
    pub cluster_secret: String,
}

/// The first node's admin credentials.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminCredentials {
    /// The admin API key (shown once).
    pub api_key: String,
    /// The workspace it is scoped to.
    pub workspace_id: String,
    /// The secret other nodes need to join.
    pub cluster_secret: String,
}

/// Addresses this run bound, for scripts and tests.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeFile {
    /// The node's id.
    pub node_id: u64,
    /// Bound client address.
    pub listen: String,
    /// Bound peer address.
    pub peer_listen: String,
}

const IDENTITY: &str = "identity.json";
/// File name of the bootstrap credentials.
pub const CREDENTIALS: &str = "admin-credentials";
const NODE_FILE: &str = "node.json";

/// Reads the identity, if this data folder has one.
pub fn read_identity(dir: &Path) -> anyhow::Result<Option<Identity>> {
    let path = dir.join(IDENTITY);
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?,
    ))
}

/// Writes `value` as JSON to `dir/name` atomically (temp file, fsync, rename), with `mode`.
fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T, mode: u32) -> anyhow::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(serde_json::to_string_pretty(value)?.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Persists the identity (0600: it holds the cluster secret).
pub fn write_identity(dir: &Path, id: &Identity) -> anyhow::Result<()> {
    write_json(dir, IDENTITY, id, 0o600)
}

/// Persists the bootstrap credentials (0600).
pub fn write_credentials(dir: &Path, c: &AdminCredentials) -> anyhow::Result<()> {
    write_json(dir, CREDENTIALS, c, 0o600)
}

/// Writes `node.json`.
pub fn write_node_file(dir: &Path, n: &NodeFile) -> anyhow::Result<()> {
    write_json(dir, NODE_FILE, n, 0o644)
}
