//! `/v1/api-keys`: keys are random, shown once, stored as SHA-256 hashes in the meta group and
//! scoped to one workspace. Revoking or rotating a key changes the hash index in the same
//! apply, so the old secret fails on each node as soon as that node applies the change.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use conclave_raft::meta::{Scope, TenancyCommand, TenancyResponse};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::tenancy::{execute, page, ApiKeyView, ApiKeyWithSecret};
use super::{Page, PageQuery};
use crate::auth::{hash_secret, new_secret, secret_prefix, Caller};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::state::AppState;
use crate::validate::{self, KeyString, NameString};

const TAG: &str = "API Keys";

/// The routes of this module, with their documentation.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(revoke))
        .routes(routes!(rotate))
}

/// Body of `POST /v1/api-keys`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateApiKeyBody {
    /// A label: 1 to 128 of letters, digits, `.`, `_`, `-`, `:`.
    #[schema(value_type = NameString)]
    name: String,
    /// What the key may do: `read`, `full` or `admin`.
    scope: Scope,
}

/// Creates an API key in the caller's workspace, owned by the caller's user (admin keys only).
#[utoipa::path(post, path = "/v1/api-keys", tag = TAG, request_body = CreateApiKeyBody,
    responses((status = 201, description = "The key, with its secret (shown only here)", body = ApiKeyWithSecret)))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateApiKeyBody>,
) -> ApiResult<(StatusCode, Json<ApiKeyWithSecret>)> {
    caller.require(Scope::Admin)?;
    validate::name("name", &body.name)?;
    let secret = new_secret();
    let cmd = TenancyCommand::CreateKey {
        ws: caller.workspace.clone(),
        name: body.name,
        scope: body.scope,
        hash: hash_secret(&secret),
        prefix: secret_prefix(&secret),
        user: caller.user.clone(),
    };
    match execute(&state, cmd).await? {
        TenancyResponse::Key(k) => {
            Ok((StatusCode::CREATED, Json(ApiKeyWithSecret::new(&k, secret))))
        }
        other => Err(ApiError::internal(format!("unexpected response {other:?}"))),
    }
}

/// `GET /v1/api-keys` query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListApiKeysQuery {
    /// Whether revoked keys are listed too (default true).
    include_revoked: Option<bool>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<KeyString>)]
    cursor: Option<String>,
}

/// Lists the workspace's API keys in creation order; never a secret or a hash (admin keys only).
#[utoipa::path(get, path = "/v1/api-keys", tag = TAG, params(ListApiKeysQuery),
    responses((status = 200, description = "A page of keys in creation order", body = Page<ApiKeyView>)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListApiKeysQuery>,
) -> ApiResult<Json<Page<ApiKeyView>>> {
    caller.require(Scope::Admin)?;
    let include_revoked = q.include_revoked.unwrap_or(true);
    let paging = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    };
    state.meta_barrier().await?;
    let meta = state.groups().meta().read().expect("meta lock");
    let keys = meta
        .api_keys
        .values()
        .filter(|k| k.workspace == caller.workspace)
        .filter(|k| include_revoked || k.revoked_at.is_none());
    Ok(Json(page(keys, |k| &k.id, &paging, ApiKeyView::from)?))
}

/// Revokes (disables) a key of the workspace; revoking a revoked key changes nothing. The
/// workspace's last live admin key cannot be revoked (409).
#[utoipa::path(post, path = "/v1/api-keys/{id}/revoke", tag = TAG,
    params(("id" = KeyString, Path, description = "The key's id")),
    responses((status = 200, description = "The key, with `revoked_at` set", body = ApiKeyView)))]
async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ApiKeyView>> {
    caller.require(Scope::Admin)?;
    validate::key("id", &id)?;
    let cmd = TenancyCommand::RevokeKey {
        ws: caller.workspace,
        id,
    };
    match execute(&state, cmd).await? {
        TenancyResponse::Key(k) => Ok(Json(ApiKeyView::from(&k))),
        other => Err(ApiError::internal(format!("unexpected response {other:?}"))),
    }
}

/// Gives a live key a new secret: the old one stops working in the same step (409 if the key
/// is revoked).
#[utoipa::path(post, path = "/v1/api-keys/{id}/rotate", tag = TAG,
    params(("id" = KeyString, Path, description = "The key's id")),
    responses((status = 200, description = "The key with its new secret (shown only here)", body = ApiKeyWithSecret)))]
async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ApiKeyWithSecret>> {
    caller.require(Scope::Admin)?;
    validate::key("id", &id)?;
    let secret = new_secret();
    let cmd = TenancyCommand::RotateKey {
        ws: caller.workspace,
        id,
        hash: hash_secret(&secret),
        prefix: secret_prefix(&secret),
    };
    match execute(&state, cmd).await? {
        TenancyResponse::Key(k) => Ok(Json(ApiKeyWithSecret::new(&k, secret))),
        other => Err(ApiError::internal(format!("unexpected response {other:?}"))),
    }
}
