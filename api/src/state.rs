//! What every handler shares.

use std::sync::Arc;

use std::time::Duration;

use conclave_actors::Router;
use conclave_raft::{Groups, META_GROUP};

use crate::error::ApiResult;

/// How long a handler waits for its node's meta replica to catch up with the meta leader.
pub const META_BARRIER_TIMEOUT: Duration = Duration::from_secs(5);

/// Shared handler state: a handle, cloned for every request (one reference count), to the
/// node's [`Shared`] parts.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// A handle to `shared`.
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What every handler shares.
pub struct Shared {
    /// The node's router.
    pub router: Arc<Router>,
    /// Largest request body accepted, bytes.
    pub max_body_bytes: usize,
    /// Largest artifact content accepted, bytes.
    pub max_artifact_bytes: usize,
    /// The cluster secret every node holds: signs MCP session ids, so any node accepts them.
    pub cluster_secret: Arc<str>,
    /// The node's audit writer.
    pub audit: crate::audit::AuditLog,
    /// Limits and connection slots of live event connections (WebSocket, SSE).
    pub streams: crate::live::Streams,
}

impl Shared {
    /// The node's groups.
    pub fn groups(&self) -> &Groups {
        self.router.groups()
    }

    /// Makes this node's meta reads reflect every meta write committed before the call
    /// (a read index from the meta leader, then a bounded wait for the local replica); 503 if
    /// the replica cannot catch up in time. Handlers of meta lists and gets call it first.
    pub async fn meta_barrier(&self) -> ApiResult<()> {
        Ok(self.router.meta_barrier(META_BARRIER_TIMEOUT).await?)
    }

    /// Whether this node knows the shard map and a meta leader, so it can route.
    pub fn ready(&self) -> bool {
        let groups = self.groups();
        let known = {
            let meta = groups.meta().read().expect("meta lock");
            meta.bootstrapped && meta.nodes.contains_key(&groups.node_id())
        };
        known && self.router.leader_of(META_GROUP).is_some()
    }
}
