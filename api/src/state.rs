//! What every handler shares.

use std::sync::Arc;

use conclave_actors::Router;
use conclave_raft::{Groups, META_GROUP};

/// Shared handler state.
#[derive(Clone)]
pub struct AppState {
    /// The node's router.
    pub router: Arc<Router>,
    /// Largest request body accepted, bytes.
    pub max_body_bytes: usize,
    /// Largest artifact content accepted, bytes.
    pub max_artifact_bytes: usize,
}

impl AppState {
    /// The node's groups.
    pub fn groups(&self) -> &Groups {
        self.router.groups()
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
