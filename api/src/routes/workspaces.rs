//! `/v1/workspaces`: workspaces of the caller's tenant and their settings, in the meta group.
//!
//! Visibility: an admin key sees the workspaces of its tenant; a read or full key sees only its
//! own. Anything else answers 404, as does changing any workspace but the key's own.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use conclave_raft::meta::{
    MetaState, Scope, SettingsPatch, TenancyCommand, TenancyResponse, Workspace,
};
use conclave_raft::shard::TaskMode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::tenancy::{execute, page, ApiKeyWithSecret};
use super::{Page, PageQuery};
use crate::auth::{hash_secret, new_secret, secret_prefix, Caller};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::state::AppState;
use crate::validate::{self, KeyString, NameString};

const TAG: &str = "Workspaces";

/// The routes of this module, with their documentation.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get))
        .routes(routes!(update_settings))
}

/// A workspace.
#[derive(Serialize, ToSchema)]
pub(super) struct WorkspaceView {
    /// Its id.
    id: String,
    /// Its name.
    name: String,
    /// The tenant it belongs to.
    tenant_id: String,
    /// Its settings.
    settings: WorkspaceSettingsView,
    /// When it was created, ms since the Unix epoch.
    created_at: u64,
}

/// A workspace's settings, as they apply.
#[derive(Serialize, ToSchema)]
pub(super) struct WorkspaceSettingsView {
    /// How new tasks may be taken: `auto`, `approval` or `claim_only`.
    task_mode: TaskMode,
    /// Seconds without a heartbeat after which an agent counts as offline: the workspace's
    /// setting, or the answering node's `presence_timeout_secs` while the workspace sets none.
    presence_timeout_secs: u64,
    /// Retention of a new topic's messages when its creator gives none, hours.
    default_retention_hours: u64,
}

impl WorkspaceView {
    /// `w` as shown by a node whose own presence timeout is `node_presence`.
    fn new(w: &Workspace, node_presence: Duration) -> Self {
        let s = &w.settings;
        Self {
            id: w.id.clone(),
            name: w.name.clone(),
            tenant_id: w.tenant.clone(),
            settings: WorkspaceSettingsView {
                task_mode: s.task_mode,
                presence_timeout_secs: s.presence_timeout_secs.unwrap_or(node_presence.as_secs()),
                default_retention_hours: s.default_retention_hours,
            },
            created_at: w.created_at,
        }
    }
}

/// A new workspace and the admin key that opens it.
#[derive(Serialize, ToSchema)]
pub(super) struct CreatedWorkspace {
    /// The workspace.
    workspace: WorkspaceView,
    /// Its first admin key, owned by the caller's user, with its secret (shown only here).
    admin_key: ApiKeyWithSecret,
}

/// Settings to change; absent fields keep their value.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct WorkspaceSettingsBody {
    /// New name: 1 to 128 of letters, digits, `.`, `_`, `-`, `:`.
    #[schema(value_type = Option<NameString>)]
    name: Option<String>,
    /// How new tasks may be taken: `auto`, `approval` or `claim_only`.
    task_mode: Option<TaskMode>,
    /// Seconds without a heartbeat after which an agent is offline, 5 to 3600.
    #[schema(minimum = 5, maximum = 3600)]
    #[serde(default, deserialize_with = "crate::validate::lenient_int")]
    presence_timeout_secs: Option<u64>,
    /// Retention of new topics' messages when not given, hours, 1 to 8760.
    #[schema(minimum = 1, maximum = 8760)]
    #[serde(default, deserialize_with = "crate::validate::lenient_int")]
    default_retention_hours: Option<u64>,
}

impl WorkspaceSettingsBody {
    fn into_patch(self) -> ApiResult<SettingsPatch> {
        if let Some(name) = &self.name {
            validate::name("name", name)?;
        }
        let patch = SettingsPatch {
            name: self.name,
            task_mode: self.task_mode,
            presence_timeout_secs: self.presence_timeout_secs,
            default_retention_hours: self.default_retention_hours,
        };
        patch.check()?;
        Ok(patch)
    }
}

/// Body of `POST /v1/workspaces`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateWorkspaceBody {
    /// 1 to 128 of letters, digits, `.`, `_`, `-`, `:`; unique in the tenant.
    #[schema(value_type = NameString)]
    name: String,
    /// Initial settings; defaults apply to what is absent (`name` here is ignored).
    #[serde(default, deserialize_with = "validate::object_only")]
    settings: Option<WorkspaceSettingsBody>,
}

/// Creates a workspace in the caller's tenant with a first admin key (admin keys only). The
/// key is the only way into the new workspace: its secret is shown only in this answer.
#[utoipa::path(post, path = "/v1/workspaces", tag = TAG, request_body = CreateWorkspaceBody,
    responses((status = 201, description = "The workspace and its admin key", body = CreatedWorkspace)))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateWorkspaceBody>,
) -> ApiResult<(StatusCode, Json<CreatedWorkspace>)> {
    caller.require(Scope::Admin)?;
    validate::name("name", &body.name)?;
    let mut settings = body.settings.unwrap_or_default().into_patch()?;
    settings.name = None;
    let secret = new_secret();
    let cmd = TenancyCommand::CreateWorkspace {
        from_ws: caller.workspace,
        name: body.name,
        settings,
        admin_key_hash: hash_secret(&secret),
        admin_key_prefix: secret_prefix(&secret),
        user: caller.user,
    };
    match execute(&state, cmd).await? {
        TenancyResponse::Workspace {
            workspace,
            admin_key: Some(key),
        } => Ok((
            StatusCode::CREATED,
            Json(CreatedWorkspace {
                workspace: WorkspaceView::new(&workspace, state.router.node_presence_timeout()),
                admin_key: ApiKeyWithSecret::new(&key, secret),
            }),
        )),
        other => Err(ApiError::internal(format!("unexpected response {other:?}"))),
    }
}

/// Whether `caller` may see workspace `w`: its own, or any of its tenant for admin keys.
fn visible(meta: &MetaState, caller: &Caller, w: &Workspace) -> bool {
    if w.id == caller.workspace {
        return true;
    }
    caller.scope == Scope::Admin
        && meta
            .workspaces
            .get(&caller.workspace)
            .is_some_and(|own| own.tenant == w.tenant)
}

/// Lists the workspaces the key can see, in creation order: its tenant's for admin keys, its own
/// otherwise.
#[utoipa::path(get, path = "/v1/workspaces", tag = TAG, params(PageQuery),
    responses((status = 200, description = "A page of workspaces in creation order", body = Page<WorkspaceView>)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<WorkspaceView>>> {
    caller.require(Scope::Read)?;
    state.meta_barrier().await?;
    let meta = state.groups().meta().read().expect("meta lock");
    let workspaces = meta
        .workspaces
        .values()
        .filter(|w| visible(&meta, &caller, w));
    let node_presence = state.router.node_presence_timeout();
    Ok(Json(page(
        workspaces,
        |w| &w.id,
        &q,
        |w| WorkspaceView::new(w, node_presence),
    )?))
}

/// Reads one workspace the key can see (as in the list; 404 otherwise).
#[utoipa::path(get, path = "/v1/workspaces/{id}", tag = TAG,
    params(("id" = KeyString, Path, description = "The workspace's id")),
    responses((status = 200, description = "The workspace", body = WorkspaceView)))]
async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<WorkspaceView>> {
    caller.require(Scope::Read)?;
    validate::key("id", &id)?;
    state.meta_barrier().await?;
    let meta = state.groups().meta().read().expect("meta lock");
    meta.workspaces
        .get(&id)
        .filter(|w| visible(&meta, &caller, w))
        .map(|w| Json(WorkspaceView::new(w, state.router.node_presence_timeout())))
        .ok_or_else(|| ApiError::not_found(format!("workspace {id:?} not found")))
}

/// Changes the name and settings of the key's own workspace (admin keys only); bad values are
/// refused with 400 and change nothing.
#[utoipa::path(patch, path = "/v1/workspaces/{id}/settings", tag = TAG,
    params(("id" = KeyString, Path, description = "The workspace's id: the key's own")),
    request_body = WorkspaceSettingsBody,
    responses((status = 200, description = "The workspace as changed", body = WorkspaceView)))]
async fn update_settings(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<WorkspaceSettingsBody>,
) -> ApiResult<Json<WorkspaceView>> {
    caller.require(Scope::Admin)?;
    let patch = body.into_patch()?;
    if id != caller.workspace {
        return Err(ApiError::not_found(format!("workspace {id:?} not found")));
    }
    if patch == SettingsPatch::default() {
        // Nothing to change: the workspace as it is.
        state.meta_barrier().await?;
        let meta = state.groups().meta().read().expect("meta lock");
        return meta
            .workspaces
            .get(&id)
            .map(|w| Json(WorkspaceView::new(w, state.router.node_presence_timeout())))
            .ok_or_else(|| ApiError::not_found(format!("workspace {id:?} not found")));
    }
    let cmd = TenancyCommand::UpdateWorkspace { ws: id, patch };
    match execute(&state, cmd).await? {
        TenancyResponse::Workspace { workspace, .. } => Ok(Json(WorkspaceView::new(
            &workspace,
            state.router.node_presence_timeout(),
        ))),
        other => Err(ApiError::internal(format!("unexpected response {other:?}"))),
    }
}
