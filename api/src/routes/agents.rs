//! `/v1/agents`: registration, presence (heartbeats, disconnects) and removal of agents.
//!
//! An agent's id is its name, unique in its workspace; the agent and its inbox live on
//! `shard_for(ws, "agent", name)`. A heartbeat goes to the agent's presence actor on that
//! shard's leader and costs no Raft write unless it brings the agent online.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use conclave_actors::{ClientRequest, ClientResponse};
use conclave_raft::meta::teams::TeamsCommand;
use conclave_raft::meta::Scope;
use conclave_raft::shard::agent_card::CardRegister;
use conclave_raft::shard::{Agent, AgentStatus};
use conclave_raft::{MetaCommand, ShardCommand, ShardQuery, ShardReadResult, ShardResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{gather, json_text, json_value, run, shard, unexpected, Deleted, Page};
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::state::AppState;
use crate::validate::{self, AgentNameString, CapabilityString};

const TAG: &str = "Agents";

/// Longest agent description, characters.
pub const MAX_AGENT_DESCRIPTION_CHARS: usize = 4 * 1024;
/// Most capabilities of one agent.
pub const MAX_CAPABILITIES: usize = 64;
/// Longest capability, characters.
pub const MAX_CAPABILITY_CHARS: usize = 128;
/// Largest metadata object (agents and messages), bytes of JSON.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// The routes of this module, with their documentation.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register, list))
        .routes(routes!(heartbeat))
        .routes(routes!(disconnect))
        .routes(routes!(delete))
}

/// An agent id from a path: one that cannot name an agent answers 404.
fn path_agent(id: &str) -> ApiResult<()> {
    validate::agent_name("id", id)
        .map_err(|_| ApiError::not_found(format!("agent {id:?} not found")))
}

/// Metadata: a JSON object of at most [`MAX_METADATA_BYTES`]; absent means `{}`.
pub(super) fn metadata_text(field: &str, v: Option<&Value>) -> ApiResult<String> {
    match v {
        None => Ok("{}".to_string()),
        Some(Value::Object(_)) => {
            let text = json_text(v.expect("present"))?;
            if text.len() > MAX_METADATA_BYTES {
                return Err(ApiError::bad_request(format!(
                    "{field} must be at most {MAX_METADATA_BYTES} bytes of JSON"
                )));
            }
            Ok(text)
        }
        Some(_) => Err(ApiError::bad_request(format!(
            "{field} must be a JSON object"
        ))),
    }
}

/// The body of heartbeat and disconnect: nothing, or an empty JSON object.
pub(super) struct EmptyAgentBody;

impl utoipa::PartialSchema for EmptyAgentBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Object)
            .additional_properties(Some(
                utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
            ))
            .description(Some("Empty: this request takes no fields"))
            .into()
    }
}

impl ToSchema for EmptyAgentBody {}

/// A body that must be empty, `null` or an empty JSON object.
fn empty_body(body: &Bytes) -> ApiResult<()> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) if m.is_empty() => Ok(()),
        Ok(Value::Null) => Ok(()),
        _ => Err(ApiError::bad_request(
            "this request takes no body: send nothing or {}",
        )),
    }
}

/// Body of `POST /v1/agents`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RegisterAgentBody {
    /// 1 to 128 of letters, digits, `.`, `_`, `-`; unique in the workspace; also the agent's id.
    #[schema(value_type = AgentNameString)]
    name: String,
    /// Free text, at most 4096 characters.
    #[schema(max_length = 4096)]
    description: Option<String>,
    /// Up to 64 strings of 1 to 128 characters, no control characters.
    #[schema(value_type = Option<Vec<CapabilityString>>, max_items = 64)]
    capabilities: Option<Vec<String>>,
    /// A JSON object, at most 16 KiB.
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    /// The agent's A2A card fields (at most 16 KiB of JSON): giving one makes the agent
    /// discoverable and reachable over A2A (see `docs/a2a.md`); registering without one
    /// removes it.
    #[schema(value_type = Option<crate::a2a::card::CardInput>)]
    card: Option<Value>,
}

/// An agent.
#[derive(Serialize, ToSchema)]
pub(super) struct AgentView {
    /// Its id: the name.
    id: String,
    /// Its name.
    name: String,
    /// Free text.
    description: String,
    /// What it can do.
    capabilities: Vec<String>,
    /// A JSON object.
    metadata: Value,
    /// Whether it is connected.
    status: AgentStatus,
    /// Last heartbeat, ms since the Unix epoch; null before any.
    last_seen_at: Option<u64>,
    /// When `status` last changed, ms.
    status_changed_at: u64,
    /// First registration, ms.
    registered_at: u64,
    /// Last registration, ms.
    updated_at: u64,
}

impl From<Agent> for AgentView {
    fn from(a: Agent) -> Self {
        Self {
            id: a.name.clone(),
            name: a.name,
            description: a.description,
            capabilities: a.capabilities,
            metadata: json_value(&a.metadata),
            status: a.status,
            last_seen_at: a.last_seen_at,
            status_changed_at: a.status_changed_at,
            registered_at: a.registered_at,
            updated_at: a.updated_at,
        }
    }
}

/// Registers an agent; registering an existing name updates its description, capabilities and
/// metadata and keeps its presence and inbox.
#[utoipa::path(post, path = "/v1/agents", tag = TAG, request_body = RegisterAgentBody,
    responses((status = 201, description = "Registered", body = AgentView),
        (status = 200, description = "Already registered; updated", body = AgentView)))]
async fn register(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<RegisterAgentBody>,
) -> ApiResult<(StatusCode, Json<AgentView>)> {
    caller.require(Scope::Full)?;
    validate::agent_name("name", &body.name)?;
    let description = body.description.unwrap_or_default();
    validate::text(
        "description",
        &description,
        MAX_AGENT_DESCRIPTION_CHARS,
        false,
    )?;
    let capabilities = body.capabilities.unwrap_or_default();
    if capabilities.len() > MAX_CAPABILITIES {
        return Err(ApiError::bad_request(format!(
            "capabilities must have at most {MAX_CAPABILITIES} entries"
        )));
    }
    for c in &capabilities {
        validate::key("capability", c).map_err(|_| {
            ApiError::bad_request(format!(
                "each capability must be 1 to {MAX_CAPABILITY_CHARS} characters with no control characters"
            ))
        })?;
        if c.chars().count() > MAX_CAPABILITY_CHARS {
            return Err(ApiError::bad_request(format!(
                "each capability must be 1 to {MAX_CAPABILITY_CHARS} characters with no control characters"
            )));
        }
    }
    let metadata = metadata_text("metadata", body.metadata.as_ref())?;
    let card = body
        .card
        .as_ref()
        .map(crate::a2a::card::card_text)
        .transpose()?;
    let group = shard(&state, &caller.workspace, "agent", &body.name)?;
    let cmd = ShardCommand::AgentRegisterCard(CardRegister {
        ws: caller.workspace.clone(),
        name: body.name,
        description,
        capabilities,
        metadata,
        card,
    });
    match run(&state, group, ClientRequest::Write(cmd)).await? {
        ClientResponse::Write(ShardResponse::Agent { agent, created }) => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((status, Json((*agent).into())))
        }
        other => Err(unexpected(other)),
    }
}

/// `?status=&cursor=&limit=` of `GET /v1/agents`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct AgentListQuery {
    /// Only agents with this status.
    #[param(inline)]
    status: Option<AgentStatus>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<AgentNameString>)]
    cursor: Option<String>,
}

/// Lists the workspace's agents in name order, gathered from every shard.
#[utoipa::path(get, path = "/v1/agents", tag = TAG, params(AgentListQuery),
    responses((status = 200, description = "A page of agents in name order", body = Page<AgentView>)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AgentListQuery>,
) -> ApiResult<Json<Page<AgentView>>> {
    caller.require(Scope::Read)?;
    let limit = validate::limit(q.limit, super::DEFAULT_PAGE)?;
    if let Some(c) = &q.cursor {
        validate::agent_name("cursor", c)?;
    }
    let agents = gather(
        &state,
        |_| {
            ClientRequest::Read(ShardQuery::AgentList {
                ws: caller.workspace.clone(),
                status: q.status,
                after: q.cursor.clone(),
                // One more than a page: a shard with more than a page makes the
                // merged set longer than `limit`, so `next_cursor` is set.
                limit: limit + 1,
            })
        },
        |answer| match answer {
            ClientResponse::Read(ShardReadResult::AgentPage(p)) => Ok(p),
            other => Err(unexpected(other)),
        },
        |x| x.name.clone(),
    )
    .await?;
    Ok(Json(Page::merged(
        agents,
        limit,
        |a| a.name.clone(),
        AgentView::from,
    )))
}

/// Answer to a heartbeat.
#[derive(Serialize, ToSchema)]
pub(super) struct HeartbeatView {
    /// The agent's id.
    id: String,
    /// Always `online` after a heartbeat.
    status: AgentStatus,
    /// This heartbeat's time, ms since the Unix epoch.
    last_seen_at: Option<u64>,
    /// Send the next heartbeat within this many seconds to stay online (the workspace's
    /// presence timeout).
    timeout_secs: u64,
}

/// Records a presence heartbeat: the agent is online until `timeout_secs` pass without one.
/// Only the offline→online transition is written to the cluster.
#[utoipa::path(post, path = "/v1/agents/{id}/heartbeat", tag = TAG,
    params(("id" = AgentNameString, Path, description = "The agent's id (its name)")),
    request_body(content = Option<EmptyAgentBody>, description = "Empty, or `{}`"),
    responses((status = 200, description = "The agent is online", body = HeartbeatView)))]
async fn heartbeat(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    body: Bytes,
) -> ApiResult<Json<HeartbeatView>> {
    caller.require(Scope::Full)?;
    path_agent(&id)?;
    empty_body(&body)?;
    let group = shard(&state, &caller.workspace, "agent", &id)?;
    let req = ClientRequest::Heartbeat {
        ws: caller.workspace.clone(),
        agent: id,
    };
    match run(&state, group, req).await? {
        ClientResponse::Heartbeat(agent) => Ok(Json(HeartbeatView {
            id: agent.name,
            status: agent.status,
            last_seen_at: agent.last_seen_at,
            timeout_secs: state.router.presence_timeout(&caller.workspace).as_secs(),
        })),
        other => Err(unexpected(other)),
    }
}

/// Marks an agent offline now (a no-op when it already is); a later heartbeat brings it back.
#[utoipa::path(post, path = "/v1/agents/{id}/disconnect", tag = TAG,
    params(("id" = AgentNameString, Path, description = "The agent's id (its name)")),
    request_body(content = Option<EmptyAgentBody>, description = "Empty, or `{}`"),
    responses((status = 200, description = "The agent, offline", body = AgentView)))]
async fn disconnect(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    body: Bytes,
) -> ApiResult<Json<AgentView>> {
    caller.require(Scope::Full)?;
    path_agent(&id)?;
    empty_body(&body)?;
    let group = shard(&state, &caller.workspace, "agent", &id)?;
    let cmd = ShardCommand::AgentPresence {
        ws: caller.workspace.clone(),
        name: id,
        online: false,
        last_seen_at: None,
    };
    match run(&state, group, ClientRequest::Write(cmd)).await? {
        ClientResponse::Write(ShardResponse::Agent { agent, .. }) => Ok(Json((*agent).into())),
        other => Err(unexpected(other)),
    }
}

/// Removes an agent, its inbox and its team memberships.
#[utoipa::path(delete, path = "/v1/agents/{id}", tag = TAG,
    params(("id" = AgentNameString, Path, description = "The agent's id (its name)")),
    responses((status = 200, description = "The agent was removed", body = Deleted)))]
async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Deleted>> {
    caller.require(Scope::Full)?;
    path_agent(&id)?;
    let group = shard(&state, &caller.workspace, "agent", &id)?;
    let cmd = ShardCommand::AgentDelete {
        ws: caller.workspace.clone(),
        name: id.clone(),
    };
    let deleted = run(&state, group, ClientRequest::Write(cmd)).await;
    // The memberships live in the meta group: a second write, made also when the agent is
    // already gone, so retrying a delete that failed between the two writes finishes it.
    let gone = match &deleted {
        Ok(_) => true,
        Err(e) => e.status == axum::http::StatusCode::NOT_FOUND,
    };
    if gone {
        let forget = TeamsCommand::ForgetAgent {
            workspace: caller.workspace.clone(),
            agent: id,
        };
        state
            .router
            .execute_meta(MetaCommand::Teams(forget))
            .await?;
    }
    match deleted? {
        ClientResponse::Write(ShardResponse::Deleted(name)) => Ok(Json(Deleted::new(name))),
        other => Err(unexpected(other)),
    }
}
