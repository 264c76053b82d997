//! `/v1/users` and `/v1/session/me`: the users of the caller's tenant, who the caller is, and
//! deleting one's own account (which revokes every key of that user at once).

use axum::extract::State;
use axum::Json;
use conclave_raft::meta::{Scope, TenancyCommand, TenancyResponse, User};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::tenancy::{execute, page};
use super::{Deleted, Page, PageQuery};
use crate::auth::Caller;
use crate::error::{ApiError, ApiQuery, ApiResult};
use crate::state::AppState;

const TAG: &str = "Users";

/// The routes of this module, with their documentation.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(me))
        .routes(routes!(delete_me))
}

/// A user's membership of a workspace.
#[derive(Serialize, ToSchema)]
pub(super) struct UserWorkspace {
    /// The workspace's id.
    id: String,
    /// The scope the user was given there.
    scope: Scope,
}

/// A user of the tenant.
#[derive(Serialize, ToSchema)]
pub(super) struct UserView {
    /// Its id (`usr_<n>`).
    id: String,
    /// Display name.
    name: String,
    /// Contact address, if given.
    email: Option<String>,
    /// The tenant it belongs to.
    tenant_id: String,
    /// The workspaces it is a member of.
    workspaces: Vec<UserWorkspace>,
    /// When it was created, ms since the Unix epoch.
    created_at: u64,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id.clone(),
            name: u.name.clone(),
            email: u.email.clone(),
            tenant_id: u.tenant.clone(),
            workspaces: u
                .workspaces
                .iter()
                .map(|(id, scope)| UserWorkspace {
                    id: id.clone(),
                    scope: *scope,
                })
                .collect(),
            created_at: u.created_at,
        }
    }
}

/// Lists the users of the caller's tenant in creation order (admin keys only).
#[utoipa::path(get, path = "/v1/users", tag = TAG, params(PageQuery),
    responses((status = 200, description = "A page of users in creation order", body = Page<UserView>)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<UserView>>> {
    caller.require(Scope::Admin)?;
    state.meta_barrier().await?;
    let meta = state.groups().meta().read().expect("meta lock");
    let tenant = meta
        .workspaces
        .get(&caller.workspace)
        .map(|w| w.tenant.clone())
        .ok_or_else(|| ApiError::not_found("the key's workspace no longer exists"))?;
    let users = meta.tenancy.users.values().filter(|u| u.tenant == tenant);
    Ok(Json(page(users, |u| &u.id, &q, UserView::from)?))
}

/// The key of the session.
#[derive(Serialize, ToSchema)]
pub(super) struct SessionKey {
    /// The key's id.
    id: String,
    /// Its label.
    name: String,
    /// What it may do.
    scope: Scope,
    /// The first characters of its secret.
    prefix: String,
    /// When it was created, ms since the Unix epoch.
    created_at: u64,
}

/// The workspace of the session.
#[derive(Serialize, ToSchema)]
pub(super) struct SessionWorkspace {
    /// Its id.
    id: String,
    /// Its name.
    name: String,
}

/// Who is calling: the key, its user (if the key belongs to one) and its workspace.
#[derive(Serialize, ToSchema)]
pub(super) struct SessionView {
    /// The key's user; null for a key that belongs to no user.
    user: Option<UserView>,
    /// The key in use.
    key: SessionKey,
    /// The key's workspace.
    workspace: SessionWorkspace,
    /// The workspace's tenant.
    tenant_id: String,
}

/// Describes the caller: its key, user and workspace (any scope). Read from this node's meta
/// replica, the same one that just authenticated the key.
#[utoipa::path(get, path = "/v1/session/me", tag = TAG,
    responses((status = 200, description = "The session", body = SessionView)))]
async fn me(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<SessionView>> {
    caller.require(Scope::Read)?;
    let meta = state.groups().meta().read().expect("meta lock");
    let gone = || ApiError::unauthorized("invalid or revoked api key");
    let key = meta.api_keys.get(&caller.key_id).ok_or_else(gone)?;
    let ws = meta.workspaces.get(&key.workspace).ok_or_else(gone)?;
    let user = key
        .user
        .as_ref()
        .and_then(|u| meta.tenancy.users.get(u))
        .map(UserView::from);
    Ok(Json(SessionView {
        user,
        key: SessionKey {
            id: key.id.clone(),
            name: key.name.clone(),
            scope: key.scope,
            prefix: key.prefix.clone(),
            created_at: key.created_at,
        },
        workspace: SessionWorkspace {
            id: ws.id.clone(),
            name: ws.name.clone(),
        },
        tenant_id: ws.tenant.clone(),
    }))
}

/// Deletes the caller's own user: every key of the user (this one included) is revoked and its
/// memberships dropped. 404 when the key belongs to no user; 409 when the user holds the last
/// live admin key of a workspace.
#[utoipa::path(delete, path = "/v1/users/me", tag = TAG,
    responses((status = 200, description = "The user was deleted", body = Deleted)))]
async fn delete_me(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Deleted>> {
    caller.require(Scope::Full)?;
    let user = caller
        .user
        .ok_or_else(|| ApiError::not_found("this api key belongs to no user"))?;
    let cmd = TenancyCommand::DeleteUser {
        ws: caller.workspace,
        user,
    };
    match execute(&state, cmd).await? {
        TenancyResponse::UserDeleted { id, .. } => Ok(Json(Deleted::new(id))),
        other => Err(ApiError::internal(format!("unexpected response {other:?}"))),
    }
}
