//! `/v1/api-keys`: keys are random, shown once, stored as SHA-256 hashes in the meta group.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use conclave_raft::meta::Scope;
use conclave_raft::{MetaCommand, MetaResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{hash_secret, new_secret, Caller};
use crate::error::{ApiError, ApiJson, ApiResult};
use crate::state::AppState;
use crate::validate::{self, NameString};

const TAG: &str = "API Keys";

/// The routes of this module, with their documentation.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create))
}

/// Body of `POST /v1/api-keys`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBody {
    /// A label: 1 to 128 of letters, digits, `.`, `_`, `-`, `:`.
    #[schema(value_type = NameString)]
    name: String,
    /// What the key may do.
    scope: Scope,
}

/// A new key, with its secret (shown only here).
#[derive(Serialize, ToSchema)]
pub(super) struct CreatedKey {
    /// The key's id.
    id: String,
    /// Its label.
    name: String,
    /// What it may do.
    scope: Scope,
    /// The workspace it is scoped to.
    workspace_id: String,
    /// The secret, for `Authorization: Bearer`; only its hash is stored.
    key: String,
}

/// Creates an API key in the caller's workspace (admin keys only).
#[utoipa::path(post, path = "/v1/api-keys", tag = TAG, request_body = CreateBody,
    responses((status = 201, description = "The key, with its secret", body = CreatedKey)))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateBody>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    caller.require(Scope::Admin)?;
    validate::name("name", &body.name)?;
    let secret = new_secret();
    let cmd = MetaCommand::CreateApiKey {
        name: body.name.clone(),
        workspace: caller.workspace.clone(),
        scope: body.scope,
        hash: hash_secret(&secret),
    };
    match state.router.execute_meta(cmd).await? {
        MetaResponse::ApiKeyId(id) => Ok((
            StatusCode::CREATED,
            Json(CreatedKey {
                id,
                name: body.name,
                scope: body.scope,
                workspace_id: caller.workspace,
                key: secret,
            }),
        )),
        other => Err(ApiError::internal(format!("unexpected response {other:?}"))),
    }
}
