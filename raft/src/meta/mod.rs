//! The meta group's state: nodes, the shard map, workspaces and API keys (users and
//! invitations in [`tenancy`]), and its deterministic apply.
//!
//! Every node holds a replica (voter on up to three nodes, learner elsewhere), so auth and
//! placement are read locally. A shard's `replicas` is the placement controller's intent; the
//! shard's own Raft membership is the truth, and `moving` records the one move in progress on
//! that shard so a new meta leader resumes it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::types::{GroupId, NodeId, NodeInfo};

pub mod mcp_sessions;
pub mod teams;
pub mod topic_acl;

use topic_acl::{TopicAccess, TopicAccessMode, TopicAclEntry, TopicAcls, TopicPermission};
pub mod tenancy;

pub use tenancy::{
    Invitation, InvitationStatus, SettingsPatch, Tenancy, TenancyCommand, TenancyResponse, User,
    WorkspaceSettings,
};

/// Lifecycle of a node in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Serving and eligible for replicas.
    Active,
    /// Being drained: its replicas move elsewhere, then it is removed.
    Draining,
    /// Out of the cluster.
    Removed,
}

/// A node as the meta group knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Its id.
    pub id: NodeId,
    /// How to reach it.
    pub info: NodeInfo,
    /// Its lifecycle state.
    pub state: NodeState,
    /// When it joined, ms since the epoch.
    pub joined_at: u64,
}

/// One replica move in progress on a shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMove {
    /// The node gaining a replica, if any.
    pub add: Option<NodeId>,
    /// The node losing its replica, if any.
    pub remove: Option<NodeId>,
}

/// A data shard's placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    /// Nodes holding a replica once no move is in progress.
    pub replicas: BTreeSet<NodeId>,
    /// Grows with every completed move; moves are compare-and-set on it.
    pub epoch: u64,
    /// The move in progress.
    pub moving: Option<ShardMove>,
}

impl ShardRecord {
    /// Whether `node` should host a replica of this shard now (including an incoming one).
    pub fn hosts(&self, node: NodeId) -> bool {
        self.replicas.contains(&node) || self.moving.as_ref().is_some_and(|m| m.add == Some(node))
    }
}

/// What an API key may do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Reads only.
    Read,
    /// Reads and writes.
    Full,
    /// Everything, including keys and cluster administration.
    Admin,
}

/// A stored API key: only the SHA-256 of its secret is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// Public id.
    pub id: String,
    /// Label.
    pub name: String,
    /// The workspace it is scoped to.
    pub workspace: String,
    /// What it may do.
    pub scope: Scope,
    /// Hex SHA-256 of the secret.
    pub hash: String,
    /// ms since the epoch.
    pub created_at: u64,
    /// When it was revoked; revoked keys authenticate nothing.
    pub revoked_at: Option<u64>,
    /// The user it belongs to, if any.
    pub user: Option<String>,
    /// The first characters of its secret, to tell keys apart (never enough to use it).
    pub prefix: String,
    /// When its secret was last replaced.
    pub rotated_at: Option<u64>,
}

/// A workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workspace {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// ms since the epoch.
    pub created_at: u64,
    /// The tenant it belongs to.
    pub tenant: String,
    /// Its settings.
    pub settings: WorkspaceSettings,
}

/// The meta group's whole state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaState {
    /// Set once by [`MetaCommand::Bootstrap`].
    pub bootstrapped: bool,
    /// The id the next joining node gets.
    pub next_node_id: NodeId,
    /// Nodes by id.
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    /// Number of data shards, fixed at bootstrap.
    pub shard_count: u64,
    /// Data shards by group id (`1..=shard_count`).
    pub shards: BTreeMap<GroupId, ShardRecord>,
    /// Workspaces by id.
    pub workspaces: BTreeMap<String, Workspace>,
    /// API keys by id.
    pub api_keys: BTreeMap<String, ApiKeyRecord>,
    /// The id the next API key gets.
    pub next_key_seq: u64,
    // embeddings
    /// Dimension of each embedding namespace, by `(workspace, namespace)`: fixed by its first
    /// embedding, so every vector searched together has one length.
    pub embedding_dims: BTreeMap<(String, String), u32>,
    // topics
    /// Access modes and ACL entries of topics.
    pub topic_acls: TopicAcls,
    /// Users, invitations and the key and invitation indexes.
    pub tenancy: Tenancy,
    // teams
    /// Teams and skills of every workspace.
    pub teams: teams::Teams,
    // mcp
    /// MCP sessions ended before their expiry.
    pub mcp_sessions: mcp_sessions::McpSessions,
}

/// A control-plane change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MetaCommand {
    /// Creates the cluster: the first node, every shard on it, a workspace and an admin key.
    Bootstrap {
        node: NodeInfo,
        shard_count: u64,
        workspace: String,
        admin_key_hash: String,
    },
    /// Admits a node (idempotent per peer address) and returns its id.
    AddNode { info: NodeInfo },
    /// Changes a node's lifecycle state.
    SetNodeState { id: NodeId, state: NodeState },
    /// Starts a move on a shard if its epoch is still `epoch` and no move is in progress.
    BeginMove {
        shard: GroupId,
        epoch: u64,
        add: Option<NodeId>,
        remove: Option<NodeId>,
    },
    /// Completes the shard's move in progress if its epoch is still `epoch`.
    FinishMove { shard: GroupId, epoch: u64 },
    /// Creates an API key.
    CreateApiKey {
        name: String,
        workspace: String,
        scope: Scope,
        hash: String,
    },
    // embeddings
    /// Fixes the dimension of an embedding namespace, unless it already has one; refused when
    /// it has another.
    SetEmbeddingDim {
        workspace: String,
        namespace: String,
        dim: u32,
    },
    // topics
    /// Sets a topic's access mode; `reset` also drops its ACL entries (a new topic).
    SetTopicAccess {
        ws: String,
        topic: String,
        mode: TopicAccessMode,
        reset: bool,
    },
    /// Grants permissions on a topic to a principal (`agent:NAME` or `key:ID`).
    GrantTopicAcl {
        ws: String,
        topic: String,
        principal: String,
        permissions: Vec<TopicPermission>,
    },
    /// Forgets a deleted topic's access record.
    DropTopicAccess { ws: String, topic: String },
    // tenancy
    /// Workspaces, keys, users and invitations.
    Tenancy(TenancyCommand),
    // teams
    /// A change to teams or skills.
    Teams(teams::TeamsCommand),
    // mcp
    /// Ends an MCP session (by its nonce) on every node until it expires at `expires_at`.
    EndMcpSession { nonce: String, expires_at: u64 },
    // placement (appended here: a variant's position is its encoding)
    /// Abandons the shard's move in progress if its epoch is still `epoch`: the replicas stay
    /// as they were. For a move whose new replica's node died before it caught up.
    CancelMove { shard: GroupId, epoch: u64 },
}

/// The result of a meta command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaResponse {
    /// Done.
    Ok,
    /// The node's id.
    NodeId(NodeId),
    /// The key's id.
    ApiKeyId(String),
    /// Refused, identically on every replica.
    Refused(CoreError),
    // topics
    /// A topic's access record.
    TopicAccess(TopicAccess),
    /// An ACL entry and whether it was created (rather than merged).
    TopicAclEntry { entry: TopicAclEntry, created: bool },
    // tenancy
    /// Result of a [`MetaCommand::Tenancy`].
    Tenancy(Box<TenancyResponse>),
    // teams
    /// Result of a [`MetaCommand::Teams`].
    Teams(teams::TeamsReply),
}

impl MetaState {
    /// Applies `cmd` at leader time `at_ms`.
    pub fn apply(&mut self, cmd: &MetaCommand, at_ms: u64) -> MetaResponse {
        match cmd {
            MetaCommand::Bootstrap {
                node,
                shard_count,
                workspace,
                admin_key_hash,
            } => {
                if self.bootstrapped {
                    return MetaResponse::Refused(CoreError::conflict(
                        "cluster is already bootstrapped",
                    ));
                }
                self.bootstrapped = true;
                self.nodes.insert(
                    1,
                    NodeRecord {
                        id: 1,
                        info: node.clone(),
                        state: NodeState::Active,
                        joined_at: at_ms,
                    },
                );
                self.next_node_id = 2;
                self.shard_count = *shard_count;
                for shard in 1..=*shard_count {
                    let record = ShardRecord {
                        replicas: BTreeSet::from([1]),
                        epoch: 1,
                        moving: None,
                    };
                    self.shards.insert(shard, record);
                }
                self.workspaces.insert(
                    workspace.clone(),
                    Workspace {
                        id: workspace.clone(),
                        name: workspace.clone(),
                        created_at: at_ms,
                        tenant: tenancy::DEFAULT_TENANT.to_string(),
                        settings: WorkspaceSettings::default(),
                    },
                );
                let key = self.insert_key("admin", workspace, Scope::Admin, admin_key_hash, at_ms);
                self.bootstrap_user(workspace, &key, at_ms);
                MetaResponse::NodeId(1)
            }
            MetaCommand::AddNode { info } => {
                if let Some(existing) = self
                    .nodes
                    .values()
                    .find(|n| n.info.peer_addr == info.peer_addr && n.state != NodeState::Removed)
                {
                    return MetaResponse::NodeId(existing.id);
                }
                let id = self.next_node_id;
                self.next_node_id += 1;
                self.nodes.insert(
                    id,
                    NodeRecord {
                        id,
                        info: info.clone(),
                        state: NodeState::Active,
                        joined_at: at_ms,
                    },
                );
                MetaResponse::NodeId(id)
            }
            MetaCommand::SetNodeState { id, state } => match self.nodes.get_mut(id) {
                Some(n) if n.state == NodeState::Removed => {
                    MetaResponse::Refused(CoreError::conflict(format!("node {id} was removed")))
                }
                Some(n) => {
                    n.state = *state;
                    MetaResponse::Ok
                }
                None => MetaResponse::Refused(CoreError::not_found(format!("node {id} not found"))),
            },
            MetaCommand::BeginMove {
                shard,
                epoch,
                add,
                remove,
            } => match self.shards.get_mut(shard) {
                Some(s) if s.epoch == *epoch && s.moving.is_none() => {
                    s.moving = Some(ShardMove {
                        add: *add,
                        remove: *remove,
                    });
                    MetaResponse::Ok
                }
                Some(_) => MetaResponse::Refused(CoreError::conflict(format!(
                    "shard {shard} changed or is moving"
                ))),
                None => {
                    MetaResponse::Refused(CoreError::not_found(format!("shard {shard} not found")))
                }
            },
            MetaCommand::FinishMove { shard, epoch } => self.end_move(*shard, *epoch, true),
            MetaCommand::CancelMove { shard, epoch } => self.end_move(*shard, *epoch, false),
            MetaCommand::CreateApiKey {
                name,
                workspace,
                scope,
                hash,
            } => {
                if !self.workspaces.contains_key(workspace) {
                    return MetaResponse::Refused(CoreError::not_found(format!(
                        "workspace {workspace:?} not found"
                    )));
                }
                if self.tenancy.key_index.contains_key(hash) {
                    return MetaResponse::Refused(CoreError::conflict(
                        "a key with this secret already exists",
                    ));
                }
                MetaResponse::ApiKeyId(self.insert_key(name, workspace, *scope, hash, at_ms))
            }
            MetaCommand::SetEmbeddingDim {
                workspace,
                namespace,
                dim,
            } => {
                let key = (workspace.clone(), namespace.clone());
                match self.embedding_dims.get(&key) {
                    Some(d) if d != dim => MetaResponse::Refused(CoreError::bad_request(format!(
                        "namespace {namespace:?} holds vectors of dimension {d}, not {dim}"
                    ))),
                    Some(_) => MetaResponse::Ok,
                    None if !self.workspaces.contains_key(workspace) => MetaResponse::Refused(
                        CoreError::not_found(format!("workspace {workspace:?} not found")),
                    ),
                    None => {
                        self.embedding_dims.insert(key, *dim);
                        MetaResponse::Ok
                    }
                }
            }
            // topics
            MetaCommand::SetTopicAccess {
                ws,
                topic,
                mode,
                reset,
            } => match self.workspace_known(ws) {
                Err(e) => MetaResponse::Refused(e),
                Ok(()) => MetaResponse::TopicAccess(
                    self.topic_acls.set_mode(ws, topic, *mode, *reset, at_ms),
                ),
            },
            MetaCommand::GrantTopicAcl {
                ws,
                topic,
                principal,
                permissions,
            } => match self.workspace_known(ws).and_then(|()| {
                self.topic_acls
                    .grant(ws, topic, principal, permissions, at_ms)
            }) {
                Err(e) => MetaResponse::Refused(e),
                Ok((entry, created)) => MetaResponse::TopicAclEntry { entry, created },
            },
            MetaCommand::DropTopicAccess { ws, topic } => {
                self.topic_acls.drop_topic(ws, topic);
                MetaResponse::Ok
            }
            MetaCommand::Tenancy(cmd) => match self.apply_tenancy(cmd, at_ms) {
                Ok(r) => MetaResponse::Tenancy(Box::new(r)),
                Err(e) => MetaResponse::Refused(e),
            },
            // teams
            MetaCommand::Teams(cmd) => teams::apply(self, cmd, at_ms),
            // mcp
            MetaCommand::EndMcpSession { nonce, expires_at } => {
                match self.mcp_sessions.end(nonce, *expires_at, at_ms) {
                    Ok(()) => MetaResponse::Ok,
                    Err(e) => MetaResponse::Refused(e),
                }
            }
        }
    }

    /// Ends `shard`'s move in progress if its epoch is still `epoch`, applying it (`finish`)
    /// or leaving the replicas as they were; either way the epoch moves on.
    fn end_move(&mut self, shard: GroupId, epoch: u64, finish: bool) -> MetaResponse {
        match self.shards.get_mut(&shard) {
            Some(s) if s.epoch == epoch && s.moving.is_some() => {
                let m = s.moving.take().expect("checked above");
                if finish {
                    if let Some(add) = m.add {
                        s.replicas.insert(add);
                    }
                    if let Some(remove) = m.remove {
                        s.replicas.remove(&remove);
                    }
                }
                s.epoch += 1;
                MetaResponse::Ok
            }
            Some(_) => MetaResponse::Refused(CoreError::conflict(format!(
                "shard {shard} has no such move"
            ))),
            None => MetaResponse::Refused(CoreError::not_found(format!("shard {shard} not found"))),
        }
    }

    fn workspace_known(&self, ws: &str) -> Result<(), CoreError> {
        if self.workspaces.contains_key(ws) {
            Ok(())
        } else {
            Err(CoreError::not_found(format!("workspace {ws:?} not found")))
        }
    }

    fn insert_key(
        &mut self,
        name: &str,
        workspace: &str,
        scope: Scope,
        hash: &str,
        at_ms: u64,
    ) -> String {
        self.next_key_seq += 1;
        let id = format!("key_{}", self.next_key_seq);
        self.api_keys.insert(
            id.clone(),
            ApiKeyRecord {
                id: id.clone(),
                name: name.to_string(),
                workspace: workspace.to_string(),
                scope,
                hash: hash.to_string(),
                created_at: at_ms,
                revoked_at: None,
                user: None,
                prefix: String::new(),
                rotated_at: None,
            },
        );
        self.tenancy.key_index.insert(hash.to_string(), id.clone());
        id
    }

    /// The live key whose secret hashes to `hash` (an index lookup).
    pub fn key_by_hash(&self, hash: &str) -> Option<&ApiKeyRecord> {
        self.tenancy
            .key_index
            .get(hash)
            .and_then(|id| self.api_keys.get(id))
            .filter(|k| k.revoked_at.is_none())
    }

    /// Nodes that may receive replicas.
    pub fn active_nodes(&self) -> impl Iterator<Item = &NodeRecord> {
        self.nodes.values().filter(|n| n.state == NodeState::Active)
    }

    /// Shards this node should host now.
    pub fn shards_hosted_by(&self, node: NodeId) -> impl Iterator<Item = GroupId> + '_ {
        self.shards
            .iter()
            .filter(move |(_, s)| s.hosts(node))
            .map(|(id, _)| *id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(p: &str) -> NodeInfo {
        NodeInfo {
            peer_addr: p.into(),
            api_addr: format!("api-{p}"),
        }
    }

    #[test]
    fn bootstrap_then_join_assigns_ids_once() {
        let mut m = MetaState::default();
        let boot = MetaCommand::Bootstrap {
            node: info("a"),
            shard_count: 4,
            workspace: "default".into(),
            admin_key_hash: "h".into(),
        };
        assert_eq!(m.apply(&boot, 1), MetaResponse::NodeId(1));
        assert!(matches!(m.apply(&boot, 2), MetaResponse::Refused(_)));
        assert_eq!(m.shards.len(), 4);
        assert_eq!(
            m.apply(&MetaCommand::AddNode { info: info("b") }, 3),
            MetaResponse::NodeId(2)
        );
        assert_eq!(
            m.apply(&MetaCommand::AddNode { info: info("b") }, 4),
            MetaResponse::NodeId(2)
        );
        assert_eq!(
            m.apply(&MetaCommand::AddNode { info: info("c") }, 5),
            MetaResponse::NodeId(3)
        );
        assert_eq!(m.key_by_hash("h").map(|k| k.scope), Some(Scope::Admin));
    }

    #[test]
    fn moves_are_compare_and_set_on_the_epoch() {
        let mut m = MetaState::default();
        m.apply(
            &MetaCommand::Bootstrap {
                node: info("a"),
                shard_count: 1,
                workspace: "w".into(),
                admin_key_hash: "h".into(),
            },
            0,
        );
        let begin = MetaCommand::BeginMove {
            shard: 1,
            epoch: 1,
            add: Some(2),
            remove: None,
        };
        assert_eq!(m.apply(&begin, 1), MetaResponse::Ok);
        assert!(m.shards[&1].hosts(2));
        assert!(matches!(m.apply(&begin, 2), MetaResponse::Refused(_)));
        assert_eq!(
            m.apply(&MetaCommand::FinishMove { shard: 1, epoch: 1 }, 3),
            MetaResponse::Ok
        );
        assert!(matches!(
            m.apply(&MetaCommand::FinishMove { shard: 1, epoch: 1 }, 4),
            MetaResponse::Refused(_)
        ));
        assert_eq!(m.shards[&1].replicas, BTreeSet::from([1, 2]));
        assert_eq!(m.shards[&1].epoch, 2);

        // A cancelled move leaves the replicas as they were and moves the epoch on.
        let begin = MetaCommand::BeginMove {
            shard: 1,
            epoch: 2,
            add: Some(3),
            remove: Some(1),
        };
        assert_eq!(m.apply(&begin, 5), MetaResponse::Ok);
        assert!(matches!(
            m.apply(&MetaCommand::CancelMove { shard: 1, epoch: 1 }, 6),
            MetaResponse::Refused(_)
        ));
        assert_eq!(
            m.apply(&MetaCommand::CancelMove { shard: 1, epoch: 2 }, 7),
            MetaResponse::Ok
        );
        assert!(m.shards[&1].moving.is_none());
        assert!(!m.shards[&1].hosts(3));
        assert_eq!(m.shards[&1].replicas, BTreeSet::from([1, 2]));
        assert_eq!(m.shards[&1].epoch, 3);
        assert!(matches!(
            m.apply(&MetaCommand::FinishMove { shard: 1, epoch: 2 }, 8),
            MetaResponse::Refused(_)
        ));
    }
}
