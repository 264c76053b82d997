//! `/v1/topics`: durable pub/sub with gap-free per-topic sequences.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use conclave_actors::{ClientRequest, ClientResponse};
use conclave_raft::meta::Scope;
use conclave_raft::shard::Topic;
use conclave_raft::{ShardCommand, ShardQuery, ShardReadResult, ShardResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{json_text, json_value, run, shard, unexpected};
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::state::AppState;
use crate::validate;

/// Default retention of a topic's messages: 7 days.
const DEFAULT_RETENTION_HOURS: u64 = 7 * 24;
/// Longest retention a topic may ask for: 1 year.
const MAX_RETENTION_HOURS: u64 = 365 * 24;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBody {
    name: String,
    retention_hours: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PublishBody {
    body: Value,
}

#[derive(Deserialize)]
pub(super) struct MessagesQuery {
    since: Option<u64>,
    limit: Option<usize>,
}

fn topic_json(t: &Topic) -> Value {
    json!({"name": t.name, "retention_hours": t.retention_hours, "created_at": t.created_at, "last_seq": t.last_seq})
}

pub(super) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require(Scope::Full)?;
    validate::name("name", &body.name)?;
    let retention_hours = body.retention_hours.unwrap_or(DEFAULT_RETENTION_HOURS);
    if !(1..=MAX_RETENTION_HOURS).contains(&retention_hours) {
        return Err(ApiError::bad_request(format!(
            "retention_hours must be 1 to {MAX_RETENTION_HOURS}"
        )));
    }
    let group = shard(&state, &caller.workspace, "topic", &body.name)?;
    let cmd = ShardCommand::TopicCreate {
        ws: caller.workspace.clone(),
        name: body.name,
        retention_hours,
    };
    match run(&state, group, ClientRequest::Write(cmd)).await? {
        ClientResponse::Write(ShardResponse::Topic(t)) => {
            Ok((StatusCode::CREATED, Json(topic_json(&t))))
        }
        other => Err(unexpected(other)),
    }
}

pub(super) async fn publish(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<PublishBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require(Scope::Full)?;
    validate::name("topic", &name)?;
    let text = json_text(&body.body)?;
    let group = shard(&state, &caller.workspace, "topic", &name)?;
    let cmd = ShardCommand::TopicPublish {
        ws: caller.workspace.clone(),
        topic: name,
        body: text,
    };
    match run(&state, group, ClientRequest::Write(cmd)).await? {
        ClientResponse::Write(ShardResponse::Published {
            topic,
            seq,
            published_at,
        }) => Ok((
            StatusCode::CREATED,
            Json(json!({"topic": topic, "seq": seq, "published_at": published_at})),
        )),
        other => Err(unexpected(other)),
    }
}

pub(super) async fn messages(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<MessagesQuery>,
) -> ApiResult<Json<Value>> {
    caller.require(Scope::Read)?;
    validate::name("topic", &name)?;
    let limit = validate::limit(q.limit, 100)?;
    let since = q.since.unwrap_or(0);
    let group = shard(&state, &caller.workspace, "topic", &name)?;
    let query = ShardQuery::TopicMessages {
        ws: caller.workspace.clone(),
        topic: name,
        since,
        limit,
    };
    match run(&state, group, ClientRequest::Read(query)).await? {
        ClientResponse::Read(ShardReadResult::Messages(msgs)) => {
            let next_since = msgs.last().map_or(since, |m| m.seq);
            let items: Vec<Value> = msgs
                .iter()
                .map(|m| json!({"seq": m.seq, "body": json_value(&m.body), "published_at": m.published_at}))
                .collect();
            Ok(Json(json!({"items": items, "next_since": next_since})))
        }
        other => Err(unexpected(other)),
    }
}
