//! `/v1/context`: the workspace's shared key-value store.

use axum::extract::State;
use axum::Json;
use conclave_actors::{ClientRequest, ClientResponse};
use conclave_raft::meta::Scope;
use conclave_raft::shard::ContextEntry as StoredEntry;
use conclave_raft::{ShardCommand, ShardQuery, ShardReadResult, ShardResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{gather, json_text, json_value, run, shard, unexpected, Deleted, Page, PageQuery};
use crate::auth::Caller;
use crate::error::{ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::state::AppState;
use crate::validate::{self, KeyString};

const TAG: &str = "Context Store";

/// The routes of this module, with their documentation.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(put, get, delete))
}

/// Body of `PUT /v1/context/{key}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PutBody {
    /// Any JSON value.
    value: Value,
}

/// A context entry.
#[derive(Serialize, ToSchema)]
pub(super) struct ContextEntry {
    /// Its key.
    key: String,
    /// The stored JSON value.
    value: Value,
    /// 1 for the first put, then one more per put.
    version: u64,
    /// When it was last set, ms since the Unix epoch.
    updated_at: u64,
}

impl From<&StoredEntry> for ContextEntry {
    fn from(e: &StoredEntry) -> Self {
        Self {
            key: e.key.clone(),
            value: json_value(&e.value),
            version: e.version,
            updated_at: e.updated_at,
        }
    }
}

/// Sets a key to a JSON value (a new version each time).
#[utoipa::path(put, path = "/v1/context/{key}", tag = TAG,
    params(("key" = KeyString, Path, description = "1 to 256 characters, no control characters")),
    request_body = PutBody,
    responses((status = 200, description = "The entry as stored", body = ContextEntry)))]
async fn put(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
    ApiJson(body): ApiJson<PutBody>,
) -> ApiResult<Json<ContextEntry>> {
    caller.require(Scope::Full)?;
    validate::context_key("key", &key)?;
    let value = json_text(&body.value)?;
    let group = shard(&state, &caller.workspace, "context", &key)?;
    let cmd = ShardCommand::ContextPut {
        ws: caller.workspace.clone(),
        key,
        value,
    };
    match run(&state, group, ClientRequest::Write(cmd)).await? {
        ClientResponse::Write(ShardResponse::Context(e)) => Ok(Json(ContextEntry::from(&e))),
        other => Err(unexpected(other)),
    }
}

/// Reads one key.
#[utoipa::path(get, path = "/v1/context/{key}", tag = TAG,
    params(("key" = KeyString, Path, description = "The key")),
    responses((status = 200, description = "The entry", body = ContextEntry)))]
async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<Json<ContextEntry>> {
    caller.require(Scope::Read)?;
    validate::context_key("key", &key)?;
    let group = shard(&state, &caller.workspace, "context", &key)?;
    let q = ShardQuery::ContextGet {
        ws: caller.workspace.clone(),
        key,
    };
    match run(&state, group, ClientRequest::Read(q)).await? {
        ClientResponse::Read(ShardReadResult::Context(e)) => Ok(Json(ContextEntry::from(&e))),
        other => Err(unexpected(other)),
    }
}

/// Deletes one key.
#[utoipa::path(delete, path = "/v1/context/{key}", tag = TAG,
    params(("key" = KeyString, Path, description = "The key")),
    responses((status = 200, description = "The key was deleted", body = Deleted)))]
async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<Json<Deleted>> {
    caller.require(Scope::Full)?;
    validate::context_key("key", &key)?;
    let group = shard(&state, &caller.workspace, "context", &key)?;
    let cmd = ShardCommand::ContextDelete {
        ws: caller.workspace.clone(),
        key,
    };
    match run(&state, group, ClientRequest::Write(cmd)).await? {
        ClientResponse::Write(ShardResponse::Deleted(key)) => Ok(Json(Deleted::new(key))),
        other => Err(unexpected(other)),
    }
}

/// Lists entries in key order across every shard: each shard returns its first `limit` keys
/// after the cursor and the merge keeps the first `limit` overall.
#[utoipa::path(get, path = "/v1/context", tag = TAG, params(PageQuery),
    responses((status = 200, description = "A page of entries in key order", body = Page<ContextEntry>)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<ContextEntry>>> {
    caller.require(Scope::Read)?;
    let limit = q.limit()?;
    if let Some(c) = &q.cursor {
        validate::key("cursor", c)?;
    }
    let entries = gather(
        &state,
        |_| {
            ClientRequest::Read(ShardQuery::ContextList {
                ws: caller.workspace.clone(),
                after: q.cursor.clone(),
                // One more than a page: a shard with more than a page makes the
                // merged set longer than `limit`, so `next_cursor` is set.
                limit: limit + 1,
            })
        },
        |answer| match answer {
            ClientResponse::Read(ShardReadResult::ContextPage(p)) => Ok(p),
            other => Err(unexpected(other)),
        },
        |e| e.key.clone(),
    )
    .await?;
    Ok(Json(Page::merged(
        entries,
        limit,
        |e| e.key.clone(),
        |e| ContextEntry::from(&e),
    )))
}
