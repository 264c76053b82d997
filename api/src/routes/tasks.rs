//! `/v1/tasks`: the workspace's task queue. A claim has exactly one winner and returns a lease
//! and a fencing token that only grows; the holder moves the task on and renews its lease with
//! `PATCH`; an ended lease returns the task to the queue; tasks in mode `approval` wait for an
//! admin's approval before anyone may claim them.

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use conclave_actors::{ClientRequest, ClientResponse};
use conclave_raft::command::now_ms;
use conclave_raft::meta::Scope;
use conclave_raft::shard::tasks::{MAX_LEASE_SECS, MAX_NOTE_CHARS};
use conclave_raft::shard::{
    shard_of_task_id, Task, TaskMode, TaskNote, TaskPatch, TaskStatus, DEFAULT_LEASE_SECS,
};
use conclave_raft::{ShardCommand, ShardQuery, ShardReadResult, ShardResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{json_text, json_value, run, shard, unexpected, Page, DEFAULT_PAGE};
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::state::AppState;
use crate::validate::{self, DigitsCursorString, NameString};

const TAG: &str = "Tasks";

/// The queue tasks go to.
pub(super) const DEFAULT_QUEUE: &str = "default";
/// Largest `metadata` of a task, bytes of JSON text.
pub const MAX_TASK_METADATA_BYTES: usize = 16 * 1024;

/// The routes of this module, with their documentation.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get, update))
        .routes(routes!(claim))
        .routes(routes!(approve))
}

/// Body of `POST /v1/tasks`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateTaskBody {
    /// Short title, 1 to 512 characters, not only whitespace.
    #[schema(
        min_length = 1,
        max_length = 512,
        pattern = r"[^\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    title: String,
    /// Longer text, up to 16384 characters.
    #[serde(default)]
    #[schema(max_length = 16384)]
    description: String,
    /// Larger is more urgent (default 0); informational.
    #[serde(default, deserialize_with = "crate::validate::lenient_int")]
    priority: Option<i32>,
    /// Any JSON object, up to 16 KiB (default `{}`).
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    /// `auto` (claimable at once), `approval` (claimable after an admin's approve) or
    /// `claim_only` (agents may claim but not create: needs an admin key); default: the
    /// workspace's `task_mode` setting, which non-admin keys may not loosen.
    mode: Option<TaskMode>,
}

/// Body of `POST /v1/tasks/{id}/claim`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ClaimTaskBody {
    /// The claiming agent's name.
    #[schema(value_type = NameString)]
    agent: String,
    /// Lease length, 1 to 86400 seconds (default 60).
    #[schema(minimum = 1, maximum = 86400)]
    #[serde(default, deserialize_with = "crate::validate::lenient_int")]
    lease_secs: Option<u64>,
}

/// Body of `POST /v1/tasks/{id}/approve` (optional).
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ApproveTaskBody {
    /// A note to keep on the task, 1 to 4096 characters, not only whitespace.
    #[schema(
        min_length = 1,
        max_length = 4096,
        pattern = r"[^\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    note: Option<String>,
}

/// Body of `PATCH /v1/tasks/{id}`: at least one of `status`, `note`, `lease_secs`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateTaskBody {
    /// `in_progress`, `done`, `failed`, `open` (release): by the holder, with `agent` and
    /// `fencing_token`; `cancelled`: by an admin key.
    status: Option<TaskStatus>,
    /// A note to append, 1 to 4096 characters, not only whitespace.
    #[schema(
        min_length = 1,
        max_length = 4096,
        pattern = r"[^\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    note: Option<String>,
    /// Renew the lease to end this many seconds from now (1 to 86400), by the holder.
    #[schema(minimum = 1, maximum = 86400)]
    #[serde(default, deserialize_with = "crate::validate::lenient_int")]
    lease_secs: Option<u64>,
    /// The holder's agent name.
    #[schema(value_type = Option<NameString>)]
    agent: Option<String>,
    /// The holder's fencing token, from its claim.
    #[serde(default, deserialize_with = "crate::validate::lenient_int")]
    fencing_token: Option<u64>,
}

/// `?status=&cursor=&limit=` of `GET /v1/tasks`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListTasksQuery {
    /// Only tasks with this status (an ended lease counts as `open`).
    status: Option<TaskStatus>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<DigitsCursorString>)]
    cursor: Option<String>,
}

/// A note on a task.
#[derive(Serialize, ToSchema)]
pub(super) struct TaskNoteView {
    /// When it was added, ms since the Unix epoch.
    at: u64,
    /// The agent that wrote it, else the API key id.
    by: String,
    /// Its text.
    text: String,
}

/// A task.
#[derive(Serialize, ToSchema)]
pub(super) struct TaskView {
    /// `task_<shard>_<n>`.
    id: String,
    /// Its queue (`default`).
    queue: String,
    /// Short title.
    title: String,
    /// Longer text.
    description: String,
    /// How it may be taken.
    mode: TaskMode,
    /// Its status; a task whose lease has ended is `open`.
    status: TaskStatus,
    /// Larger is more urgent.
    priority: i32,
    /// The client's metadata object.
    metadata: Value,
    /// ms since the Unix epoch.
    created_at: u64,
    /// Id of the API key that created it.
    created_by: String,
    /// Id of the API key that approved it.
    approved_by: Option<String>,
    /// When it was approved, ms since the Unix epoch.
    approved_at: Option<u64>,
    /// The agent holding it (or that finished it).
    claimed_by: Option<String>,
    /// When the current lease ends, ms since the Unix epoch.
    lease_expires_at: Option<u64>,
    /// Token of the latest claim: every claim gets a larger one; send it with `PATCH`.
    fencing_token: Option<u64>,
    /// Notes, oldest first (at most 100).
    notes: Vec<TaskNoteView>,
    /// When it last changed, ms since the Unix epoch.
    updated_at: u64,
}

impl From<Task> for TaskView {
    fn from(t: Task) -> Self {
        Self {
            metadata: json_value(&t.metadata),
            notes: t.notes.into_iter().map(TaskNoteView::from).collect(),
            id: t.id,
            queue: t.queue,
            title: t.title,
            description: t.description,
            mode: t.mode,
            status: t.status,
            priority: t.priority,
            created_at: t.created_at,
            created_by: t.created_by,
            approved_by: t.approved_by,
            approved_at: t.approved_at,
            claimed_by: t.claimed_by,
            lease_expires_at: t.lease_expires_at,
            fencing_token: t.fencing_token,
            updated_at: t.updated_at,
        }
    }
}

impl From<TaskNote> for TaskNoteView {
    fn from(n: TaskNote) -> Self {
        Self {
            at: n.at,
            by: n.by,
            text: n.text,
        }
    }
}

/// The shard named by a task id; a malformed id or unknown shard is a 404.
fn task_shard(state: &AppState, id: &str) -> ApiResult<u64> {
    let count = state.groups().meta().read().expect("meta lock").shard_count;
    shard_of_task_id(id)
        .filter(|s| (1..=count).contains(s))
        .ok_or_else(|| ApiError::not_found(format!("task {id} not found")))
}

fn task_result(resp: ClientResponse) -> ApiResult<Json<TaskView>> {
    match resp {
        ClientResponse::Write(ShardResponse::Task(t)) => Ok(Json(TaskView::from(*t))),
        ClientResponse::Read(ShardReadResult::Task(t)) => {
            Ok(Json(TaskView::from((*t).at(now_ms()))))
        }
        other => Err(unexpected(other)),
    }
}

fn lease(field: &str, secs: u64) -> ApiResult<u64> {
    if (1..=MAX_LEASE_SECS).contains(&secs) {
        Ok(secs)
    } else {
        Err(ApiError::bad_request(format!(
            "{field} must be 1 to {MAX_LEASE_SECS}"
        )))
    }
}

/// How much a mode gates a task: `auto` < `approval` < `claim_only`.
fn strictness(mode: TaskMode) -> u8 {
    match mode {
        TaskMode::Auto => 0,
        TaskMode::Approval => 1,
        TaskMode::ClaimOnly => 2,
    }
}

fn mode_name(mode: TaskMode) -> &'static str {
    match mode {
        TaskMode::Auto => "auto",
        TaskMode::Approval => "approval",
        TaskMode::ClaimOnly => "claim_only",
    }
}

/// Creates a task in the workspace's queue: `open`, or `pending_approval` in mode `approval`.
/// Without `mode` the task takes the workspace's `task_mode` setting; a non-admin key may not
/// choose a looser mode than that setting (403), and only admin keys create `claim_only` tasks.
#[utoipa::path(post, path = "/v1/tasks", tag = TAG, request_body = CreateTaskBody,
    responses((status = 201, description = "The new task", body = TaskView)))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateTaskBody>,
) -> ApiResult<(StatusCode, Json<TaskView>)> {
    caller.require(Scope::Full)?;
    // The workspace's `task_mode` is the default, and the floor for non-admin keys.
    let workspace_mode = state
        .groups()
        .meta()
        .read()
        .expect("meta lock")
        .workspaces
        .get(&caller.workspace)
        .map_or(TaskMode::Auto, |w| w.settings.task_mode);
    let mode = body.mode.unwrap_or(workspace_mode);
    if mode == TaskMode::ClaimOnly && caller.scope < Scope::Admin {
        return Err(ApiError::forbidden(
            "only an admin key may create a claim_only task; agents may claim it",
        ));
    }
    if strictness(mode) < strictness(workspace_mode) && caller.scope < Scope::Admin {
        return Err(ApiError::forbidden(format!(
            "the workspace's task_mode is {}; only an admin key may create a task in a looser mode",
            mode_name(workspace_mode)
        )));
    }
    validate::text("title", &body.title, validate::MAX_TITLE_CHARS, true)?;
    validate::text(
        "description",
        &body.description,
        validate::MAX_DESCRIPTION_CHARS,
        false,
    )?;
    let metadata = match &body.metadata {
        None => "{}".to_string(),
        Some(v @ Value::Object(_)) => json_text(v)?,
        Some(_) => return Err(ApiError::bad_request("metadata must be a JSON object")),
    };
    if metadata.len() > MAX_TASK_METADATA_BYTES {
        return Err(ApiError::bad_request(format!(
            "metadata must be at most {MAX_TASK_METADATA_BYTES} bytes of JSON"
        )));
    }
    let group = shard(&state, &caller.workspace, "queue", DEFAULT_QUEUE)?;
    let cmd = ShardCommand::TaskCreate {
        ws: caller.workspace.clone(),
        queue: DEFAULT_QUEUE.to_string(),
        title: body.title,
        description: body.description,
        mode,
        priority: body.priority.unwrap_or(0),
        metadata,
        created_by: caller.key_id,
    };
    let resp = run(&state, group, ClientRequest::Write(cmd)).await?;
    task_result(resp).map(|j| (StatusCode::CREATED, j))
}

/// Lists the workspace's tasks in creation order, optionally only those with one status.
#[utoipa::path(get, path = "/v1/tasks", tag = TAG, params(ListTasksQuery),
    responses((status = 200, description = "A page of tasks in creation order", body = Page<TaskView>)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListTasksQuery>,
) -> ApiResult<Json<Page<TaskView>>> {
    caller.require(Scope::Read)?;
    let limit = validate::limit(q.limit, DEFAULT_PAGE)?;
    let after = match &q.cursor {
        None => None,
        Some(c) => Some(validate::digits_cursor("cursor", c)?),
    };
    let group = shard(&state, &caller.workspace, "queue", DEFAULT_QUEUE)?;
    let query = ShardQuery::TaskList {
        ws: caller.workspace.clone(),
        status: q.status,
        after,
        limit,
        now_ms: now_ms(),
    };
    match run(&state, group, ClientRequest::Read(query)).await? {
        ClientResponse::Read(ShardReadResult::TaskPage(page)) => Ok(Json(Page {
            items: page.tasks.into_iter().map(TaskView::from).collect(),
            next_cursor: page.next_after.map(|n| n.to_string()),
        })),
        other => Err(unexpected(other)),
    }
}

/// Reads one task (a task whose lease has ended shows as `open`).
#[utoipa::path(get, path = "/v1/tasks/{id}", tag = TAG,
    params(("id" = String, Path, description = "The task's id")),
    responses((status = 200, description = "The task", body = TaskView)))]
async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<TaskView>> {
    caller.require(Scope::Read)?;
    let group = task_shard(&state, &id)?;
    let q = ShardQuery::TaskGet {
        ws: caller.workspace.clone(),
        id,
    };
    task_result(run(&state, group, ClientRequest::Read(q)).await?)
}

/// Claims an open task for an agent: exactly one claimant wins; the answer carries the lease's
/// end and a fencing token larger than any earlier claim's.
#[utoipa::path(post, path = "/v1/tasks/{id}/claim", tag = TAG,
    params(("id" = String, Path, description = "The task's id")),
    request_body = ClaimTaskBody,
    responses((status = 200, description = "The claimed task", body = TaskView)))]
async fn claim(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ClaimTaskBody>,
) -> ApiResult<Json<TaskView>> {
    caller.require(Scope::Full)?;
    let group = task_shard(&state, &id)?;
    validate::name("agent", &body.agent)?;
    let lease_secs = lease("lease_secs", body.lease_secs.unwrap_or(DEFAULT_LEASE_SECS))?;
    let cmd = ShardCommand::TaskClaim {
        ws: caller.workspace.clone(),
        id,
        agent: body.agent,
        lease_secs,
    };
    task_result(run(&state, group, ClientRequest::Write(cmd)).await?)
}

/// Approves a task waiting for approval (admin keys): it becomes `open` and claimable.
#[utoipa::path(post, path = "/v1/tasks/{id}/approve", tag = TAG,
    params(("id" = String, Path, description = "The task's id")),
    request_body(content = ApproveTaskBody, description = "Optional"),
    responses((status = 200, description = "The approved task", body = TaskView)))]
async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    body: Result<Option<Json<ApproveTaskBody>>, JsonRejection>,
) -> ApiResult<Json<TaskView>> {
    caller.require(Scope::Admin)?;
    let body = body?.map(|Json(b)| b).unwrap_or_default();
    let group = task_shard(&state, &id)?;
    if let Some(note) = &body.note {
        validate::text("note", note, MAX_NOTE_CHARS, true)?;
    }
    let cmd = ShardCommand::TaskApprove {
        ws: caller.workspace.clone(),
        id,
        by: caller.key_id,
        note: body.note,
    };
    task_result(run(&state, group, ClientRequest::Write(cmd)).await?)
}

/// Moves a task on (holder: `in_progress`, `done`, `failed`, `open`; admin: `cancelled`),
/// renews the holder's lease, or appends a note.
#[utoipa::path(patch, path = "/v1/tasks/{id}", tag = TAG,
    params(("id" = String, Path, description = "The task's id")),
    request_body = UpdateTaskBody,
    responses((status = 200, description = "The task after the change", body = TaskView)))]
async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateTaskBody>,
) -> ApiResult<Json<TaskView>> {
    caller.require(Scope::Full)?;
    if body.status == Some(TaskStatus::Cancelled) {
        caller.require(Scope::Admin)?;
    }
    let group = task_shard(&state, &id)?;
    if body.status.is_none() && body.note.is_none() && body.lease_secs.is_none() {
        // Nothing to change: the task as it is.
        let q = ShardQuery::TaskGet {
            ws: caller.workspace.clone(),
            id,
        };
        return task_result(run(&state, group, ClientRequest::Read(q)).await?);
    }
    if let Some(note) = &body.note {
        validate::text("note", note, MAX_NOTE_CHARS, true)?;
    }
    if let Some(agent) = &body.agent {
        validate::name("agent", agent)?;
    }
    if let Some(secs) = body.lease_secs {
        // With a status that ends the lease, the apply refuses it (409).
        lease("lease_secs", secs)?;
    }
    let patch = TaskPatch {
        agent: body.agent,
        fencing_token: body.fencing_token,
        status: body.status,
        note: body.note,
        lease_secs: body.lease_secs,
        by: caller.key_id,
    };
    let cmd = ShardCommand::TaskUpdate {
        ws: caller.workspace.clone(),
        id,
        patch,
    };
    task_result(run(&state, group, ClientRequest::Write(cmd)).await?)
}
