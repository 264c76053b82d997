//! `/v1/tasks`: the workspace's task queue; a claim has exactly one winner.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use conclave_actors::{ClientRequest, ClientResponse};
use conclave_raft::meta::Scope;
use conclave_raft::shard::{shard_of_task_id, Task, TaskMode, DEFAULT_LEASE_SECS};
use conclave_raft::{ShardCommand, ShardQuery, ShardReadResult, ShardResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{run, shard, unexpected};
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiPath, ApiResult};
use crate::state::AppState;
use crate::validate;

/// The queue tasks go to.
pub(super) const DEFAULT_QUEUE: &str = "default";
/// Longest lease a claim may ask for: one day.
const MAX_LEASE_SECS: u64 = 24 * 3600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBody {
    title: String,
    #[serde(default)]
    description: String,
    mode: Option<TaskMode>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClaimBody {
    agent: String,
    lease_secs: Option<u64>,
}

fn task_json(t: &Task) -> Value {
    json!({
        "id": t.id, "queue": t.queue, "title": t.title, "description": t.description, "mode": t.mode,
        "status": t.status, "created_at": t.created_at, "claimed_by": t.claimed_by,
        "lease_expires_at": t.lease_expires_at, "fencing_token": t.fencing_token,
    })
}

fn task_shard(state: &AppState, id: &str) -> ApiResult<u64> {
    let count = state.groups().meta().read().expect("meta lock").shard_count;
    shard_of_task_id(id)
        .filter(|s| (1..=count).contains(s))
        .ok_or_else(|| ApiError::not_found(format!("task {id} not found")))
}

fn task_result(resp: ClientResponse) -> ApiResult<Json<Value>> {
    match resp {
        ClientResponse::Write(ShardResponse::Task(t))
        | ClientResponse::Read(ShardReadResult::Task(t)) => Ok(Json(task_json(&t))),
        other => Err(unexpected(other)),
    }
}

pub(super) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require(Scope::Full)?;
    validate::text("title", &body.title, validate::MAX_TITLE_BYTES, true)?;
    validate::text(
        "description",
        &body.description,
        validate::MAX_DESCRIPTION_BYTES,
        false,
    )?;
    let group = shard(&state, &caller.workspace, "queue", DEFAULT_QUEUE)?;
    let cmd = ShardCommand::TaskCreate {
        ws: caller.workspace.clone(),
        queue: DEFAULT_QUEUE.to_string(),
        title: body.title,
        description: body.description,
        mode: body.mode.unwrap_or(TaskMode::Auto),
    };
    let resp = run(&state, group, ClientRequest::Write(cmd)).await?;
    task_result(resp).map(|j| (StatusCode::CREATED, j))
}

pub(super) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    caller.require(Scope::Read)?;
    let group = task_shard(&state, &id)?;
    let q = ShardQuery::TaskGet {
        ws: caller.workspace.clone(),
        id,
    };
    task_result(run(&state, group, ClientRequest::Read(q)).await?)
}

pub(super) async fn claim(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ClaimBody>,
) -> ApiResult<Json<Value>> {
    caller.require(Scope::Full)?;
    let group = task_shard(&state, &id)?;
    validate::name("agent", &body.agent)?;
    let lease_secs = body.lease_secs.unwrap_or(DEFAULT_LEASE_SECS);
    if !(1..=MAX_LEASE_SECS).contains(&lease_secs) {
        return Err(ApiError::bad_request(format!(
            "lease_secs must be 1 to {MAX_LEASE_SECS}"
        )));
    }
    let cmd = ShardCommand::TaskClaim {
        ws: caller.workspace.clone(),
        id,
        agent: body.agent,
        lease_secs,
    };
    task_result(run(&state, group, ClientRequest::Write(cmd)).await?)
}
