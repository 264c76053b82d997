//! `/v1/api-keys`: keys are random, shown once, stored as SHA-256 hashes in the meta group.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use conclave_raft::meta::Scope;
use conclave_raft::{MetaCommand, MetaResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{hash_secret, new_secret, Caller};
use crate::error::{ApiError, ApiJson, ApiResult};
use crate::state::AppState;
use crate::validate;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBody {
    name: String,
    scope: Scope,
}

pub(super) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
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
            Json(
                json!({"id": id, "name": body.name, "scope": body.scope, "workspace_id": caller.workspace, "key": secret}),
            ),
        )),
        other => Err(ApiError::internal(format!("unexpected response {other:?}"))),
    }
}
