//! `/v1/context`: the workspace's shared key-value store.

use axum::extract::State;
use axum::Json;
use conclave_actors::{ClientRequest, ClientResponse};
use conclave_raft::meta::Scope;
use conclave_raft::shard::ContextEntry;
use conclave_raft::{ShardCommand, ShardQuery, ShardReadResult, ShardResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{json_text, json_value, run, shard, unexpected};
use crate::auth::Caller;
use crate::error::{ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::state::AppState;
use crate::validate;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PutBody {
    value: Value,
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    limit: Option<usize>,
    cursor: Option<String>,
}

fn entry_json(e: &ContextEntry) -> Value {
    json!({"key": e.key, "value": json_value(&e.value), "version": e.version, "updated_at": e.updated_at})
}

pub(super) async fn put(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
    ApiJson(body): ApiJson<PutBody>,
) -> ApiResult<Json<Value>> {
    caller.require(Scope::Full)?;
    validate::key("key", &key)?;
    let value = json_text(&body.value)?;
    let group = shard(&state, &caller.workspace, "context", &key)?;
    let cmd = ShardCommand::ContextPut {
        ws: caller.workspace.clone(),
        key,
        value,
    };
    match run(&state, group, ClientRequest::Write(cmd)).await? {
        ClientResponse::Write(ShardResponse::Context(e)) => Ok(Json(entry_json(&e))),
        other => Err(unexpected(other)),
    }
}

pub(super) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    caller.require(Scope::Read)?;
    validate::key("key", &key)?;
    let group = shard(&state, &caller.workspace, "context", &key)?;
    let q = ShardQuery::ContextGet {
        ws: caller.workspace.clone(),
        key,
    };
    match run(&state, group, ClientRequest::Read(q)).await? {
        ClientResponse::Read(ShardReadResult::Context(e)) => Ok(Json(entry_json(&e))),
        other => Err(unexpected(other)),
    }
}

pub(super) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    caller.require(Scope::Full)?;
    validate::key("key", &key)?;
    let group = shard(&state, &caller.workspace, "context", &key)?;
    let cmd = ShardCommand::ContextDelete {
        ws: caller.workspace.clone(),
        key,
    };
    match run(&state, group, ClientRequest::Write(cmd)).await? {
        ClientResponse::Write(ShardResponse::Deleted(key)) => {
            Ok(Json(json!({"key": key, "deleted": true})))
        }
        other => Err(unexpected(other)),
    }
}

/// Lists entries in key order across every shard: each shard returns its first `limit` keys
/// after the cursor and the merge keeps the first `limit` overall.
pub(super) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require(Scope::Read)?;
    let limit = validate::limit(q.limit, 100)?;
    if let Some(c) = &q.cursor {
        validate::key("cursor", c)?;
    }
    let shards = state.groups().meta().read().expect("meta lock").shard_count;
    let calls = (1..=shards).map(|group| {
        let state = &state;
        let query = ShardQuery::ContextList {
            ws: caller.workspace.clone(),
            after: q.cursor.clone(),
            limit,
        };
        async move { run(state, group, ClientRequest::Read(query)).await }
    });
    let mut entries = Vec::new();
    for result in futures::future::join_all(calls).await {
        match result? {
            ClientResponse::Read(ShardReadResult::ContextPage(page)) => entries.extend(page),
            other => return Err(unexpected(other)),
        }
    }
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    let more = entries.len() > limit;
    entries.truncate(limit);
    let next_cursor = if more {
        entries.last().map(|e| e.key.clone())
    } else {
        None
    };
    Ok(Json(
        json!({"items": entries.iter().map(entry_json).collect::<Vec<_>>(), "next_cursor": next_cursor}),
    ))
}
