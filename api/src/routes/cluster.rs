//! `/v1/cluster`: status, entity location, and node removal.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use conclave_actors::status::cluster_status;
use conclave_raft::meta::{NodeState, Scope};
use conclave_raft::shard::shard_of_task_id;
use conclave_raft::{MetaCommand, NodeId};
use serde::Deserialize;
use serde_json::{json, Value};

use super::shard;
use crate::auth::Caller;
use crate::error::{ApiError, ApiPath, ApiQuery, ApiResult};
use crate::state::AppState;
use crate::validate;

#[derive(Deserialize)]
pub(super) struct LocateQuery {
    kind: Option<String>,
    name: Option<String>,
    task: Option<String>,
}

pub(super) async fn status(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Value>> {
    caller.require(Scope::Admin)?;
    let status = cluster_status(state.groups()).await;
    Ok(Json(
        serde_json::to_value(status).map_err(|e| ApiError::internal(e.to_string()))?,
    ))
}

pub(super) async fn locate(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<LocateQuery>,
) -> ApiResult<Json<Value>> {
    caller.require(Scope::Read)?;
    let group = match (q.task, q.kind, q.name) {
        (Some(task), None, None) => {
            shard_of_task_id(&task).ok_or_else(|| ApiError::bad_request("malformed task id"))?
        }
        (None, Some(kind), Some(name)) => {
            if !matches!(kind.as_str(), "context" | "topic" | "queue") {
                return Err(ApiError::bad_request(
                    "kind must be context, topic or queue",
                ));
            }
            validate::key("name", &name)?;
            shard(&state, &caller.workspace, &kind, &name)?
        }
        _ => {
            return Err(ApiError::bad_request(
                "give either `task`, or `kind` and `name`",
            ))
        }
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
    Ok(Json(
        json!({"shard": group, "leader": state.router.leader_of(group), "replicas": replicas}),
    ))
}

pub(super) async fn remove_node(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<NodeId>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require(Scope::Admin)?;
    let cmd = MetaCommand::SetNodeState {
        id,
        state: NodeState::Draining,
    };
    state.router.execute_meta(cmd).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"node_id": id, "state": "draining"})),
    ))
}
