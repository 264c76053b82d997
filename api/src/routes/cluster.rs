//! `/v1/cluster`: status, entity location, node removal, and this node's replica digests.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use conclave_actors::status::cluster_status;
use conclave_raft::meta::{NodeState, Scope};
use conclave_raft::shard::shard_of_task_id;
use conclave_raft::{MetaCommand, NodeId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::shard;
use crate::auth::Caller;
use crate::error::{ApiError, ApiPath, ApiQuery, ApiResult};
use crate::state::AppState;
use crate::validate::{self, KeyString};

const TAG: &str = "Cluster";

/// The routes of this module, with their documentation.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(status))
        .routes(routes!(locate))
        .routes(routes!(remove_node))
        .routes(routes!(digests))
}

/// `?kind=&name=` of `GET /v1/cluster/locate`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct LocateQuery {
    /// What kind of entity `name` is.
    #[param(inline)]
    kind: LocateKind,
    /// The entity's name or key, or the task's id.
    #[param(value_type = KeyString)]
    name: String,
}

/// Kinds of entity `locate` finds by name.
#[derive(Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(super) enum LocateKind {
    /// A context key.
    Context,
    /// A topic.
    Topic,
    /// A task queue.
    Queue,
    /// A task, by id.
    Task,
    /// An agent.
    Agent,
    /// The workspace's audit log (`name` is ignored).
    Audit,
}

impl LocateKind {
    fn as_str(self) -> &'static str {
        match self {
            LocateKind::Context => "context",
            LocateKind::Topic => "topic",
            LocateKind::Queue => "queue",
            LocateKind::Task => "task",
            LocateKind::Agent => "agent",
            LocateKind::Audit => "audit",
        }
    }
}

/// Where an entity lives.
#[derive(Serialize, ToSchema)]
pub(super) struct Location {
    /// Its shard.
    shard: u64,
    /// The node leading the shard, if one is known.
    leader: Option<NodeId>,
    /// The nodes holding a replica.
    replicas: Vec<NodeId>,
}

/// A node being drained.
#[derive(Serialize, ToSchema)]
pub(super) struct Draining {
    /// The node.
    node_id: NodeId,
    /// Always `draining`.
    state: &'static str,
}

/// The cluster as this node sees it: nodes, shards, leaders, lag (admin keys only).
#[utoipa::path(get, path = "/v1/cluster/status", tag = TAG,
    responses((status = 200, description = "Nodes and shards", body = Object)))]
async fn status(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require(Scope::Admin)?;
    let status = cluster_status(state.groups()).await;
    Ok(Json(
        serde_json::to_value(status).map_err(|e| ApiError::internal(e.to_string()))?,
    ))
}

/// The shard, leader and replicas of an entity.
#[utoipa::path(get, path = "/v1/cluster/locate", tag = TAG, params(LocateQuery),
    responses((status = 200, description = "Where the entity lives", body = Location)))]
async fn locate(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<LocateQuery>,
) -> ApiResult<Json<Location>> {
    caller.require(Scope::Read)?;
    validate::key("name", &q.name)?;
    let group = match q.kind {
        // A task id names its shard; a malformed one names no task.
        LocateKind::Task => shard_of_task_id(&q.name)
            .ok_or_else(|| ApiError::not_found(format!("task {} not found", q.name)))?,
        // One log per workspace.
        LocateKind::Audit => shard(&state, &caller.workspace, "audit", "")?,
        kind => shard(&state, &caller.workspace, kind.as_str(), &q.name)?,
    };
    let replicas: Vec<NodeId> = state
        .groups()
        .meta()
        .read()
        .expect("meta lock")
        .shards
        .get(&group)
        .map(|s| s.replicas.iter().copied().collect())
        .ok_or_else(|| ApiError::not_found(format!("shard {group} not found")))?;
    Ok(Json(Location {
        shard: group,
        leader: state.router.leader_of(group),
        replicas,
    }))
}

/// Starts draining a node: its replicas move elsewhere, then it leaves (admin keys only).
#[utoipa::path(post, path = "/v1/cluster/nodes/{id}/remove", tag = TAG,
    params(("id" = u64, Path, description = "The node's id")),
    responses((status = 202, description = "Draining started", body = Draining)))]
async fn remove_node(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<NodeId>,
) -> ApiResult<(StatusCode, Json<Draining>)> {
    caller.require(Scope::Admin)?;
    let cmd = MetaCommand::SetNodeState {
        id,
        state: NodeState::Draining,
    };
    state.router.execute_meta(cmd).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Draining {
            node_id: id,
            state: "draining",
        }),
    ))
}

/// This node's replicas and their state digests.
#[derive(Serialize, ToSchema)]
pub(super) struct ReplicaDigests {
    /// The answering node.
    node_id: NodeId,
    /// Every group hosted here, in id order (0 is the meta group).
    groups: Vec<ReplicaDigest>,
}

/// One replica's applied index and state digest.
#[derive(Serialize, ToSchema)]
pub(super) struct ReplicaDigest {
    /// The group (0: meta; 1..: data shards).
    group: u64,
    /// Index of the last entry applied here.
    applied: u64,
    /// Hex SHA-256 of the applied log id, membership and state-machine contents.
    digest: String,
    /// State-machine rows hashed.
    rows: u64,
}

/// This node's replicas: per group, the applied index and a digest of the replicated state at
/// that index (admin keys only). Replicas of a group at the same applied index have the same
/// digest; a difference means they diverged.
#[utoipa::path(get, path = "/v1/cluster/digests", tag = TAG,
    responses((status = 200, description = "This node's replica digests", body = ReplicaDigests)))]
async fn digests(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<ReplicaDigests>> {
    caller.require(Scope::Admin)?;
    let groups = state.groups().clone();
    let node_id = groups.node_id();
    let digests = tokio::task::spawn_blocking(move || {
        groups
            .hosted()
            .into_iter()
            .map(|g| conclave_raft::storage::group_digest(groups.db(), g))
            .collect::<std::io::Result<Vec<_>>>()
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(ReplicaDigests {
        node_id,
        groups: digests
            .into_iter()
            .map(|d| ReplicaDigest {
                group: d.group,
                applied: d.applied,
                digest: d.digest,
                rows: d.rows,
            })
            .collect(),
    }))
}
