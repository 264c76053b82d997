//! `GET /v1/audit/violations`: the workspace's recorded policy violations, newest first.
//!
//! They live on one shard per workspace (`conclave_raft::shard::violation`), numbered
//! gap-free, so a page is one read on that shard's leader and the cursor is the number of the
//! last violation returned.

use axum::extract::State;
use axum::Json;
use conclave_actors::{ClientRequest, ClientResponse};
use conclave_raft::meta::Scope;
use conclave_raft::shard::violation::Violation;
use conclave_raft::{ShardQuery, ShardReadResult};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{run, shard, unexpected, Page};
use crate::auth::Caller;
use crate::error::{ApiError, ApiQuery, ApiResult};
use crate::state::AppState;
use crate::validate::{self, NameString};

const TAG: &str = "Audit";

/// The routes of this module, with their documentation.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// `?agent=&cursor=&limit=` of `GET /v1/audit/violations`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ViolationListQuery {
    /// Only violations of this agent.
    #[param(value_type = Option<NameString>)]
    agent: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(inline, value_type = Option<ViolationCursor>)]
    cursor: Option<String>,
}

/// A cursor of the violations list: the number of the last violation returned.
pub(super) struct ViolationCursor;

impl PartialSchema for ViolationCursor {
    fn schema() -> RefOr<Schema> {
        super::teams::pattern_schema(r"^[0-9]{1,19}$", 19)
    }
}

/// A refused skill invocation.
#[derive(Serialize, ToSchema)]
pub(super) struct PolicyViolation {
    /// `vio_<n>`, numbered gap-free within the workspace.
    id: String,
    /// When it was recorded, ms since the Unix epoch.
    at: u64,
    /// The agent that tried to invoke the skill.
    agent: String,
    /// The API key the request carried.
    key_id: String,
    /// The skill's id, when the skill exists.
    skill_id: Option<String>,
    /// The skill as the agent named it (its id or its name).
    skill: String,
    /// How the call came in: `rest` (MCP and WebSocket later).
    via: String,
    /// `not_granted` (no team of the agent has the skill) or `unknown_skill`.
    reason: String,
    /// A human-readable explanation.
    detail: String,
}

impl From<Violation> for PolicyViolation {
    fn from(v: Violation) -> Self {
        let w = v.violation;
        Self {
            id: v.id,
            at: v.at,
            agent: w.agent,
            key_id: w.key_id,
            skill_id: w.skill_id,
            skill: w.skill,
            via: w.via,
            reason: w.reason,
            detail: w.detail,
        }
    }
}

/// Lists policy violations, newest first (admin keys only).
///
/// A workspace keeps its newest 10 000 violations.
#[utoipa::path(get, path = "/v1/audit/violations", tag = TAG, params(ViolationListQuery),
    responses((status = 200, description = "A page of violations, newest first", body = Page<PolicyViolation>)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ViolationListQuery>,
) -> ApiResult<Json<Page<PolicyViolation>>> {
    caller.require(Scope::Admin)?;
    let limit = validate::limit(q.limit, super::DEFAULT_PAGE)?;
    if let Some(agent) = &q.agent {
        validate::name("agent", agent)?;
    }
    let before = match &q.cursor {
        None => None,
        // Exactly the documented form: 1 to 19 digits (so it fits a u64), nothing else.
        Some(c) if (1..=19).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_digit()) => {
            Some(c.parse::<u64>().expect("at most 19 digits"))
        }
        Some(_) => return Err(ApiError::bad_request("malformed cursor")),
    };
    let group = shard(&state, &caller.workspace, "violations", "")?;
    let query = ShardQuery::ViolationList {
        ws: caller.workspace.clone(),
        before,
        agent: q.agent,
        limit: limit + 1,
    };
    match run(&state, group, ClientRequest::Read(query)).await? {
        ClientResponse::Read(ShardReadResult::Violations(rows)) => Ok(Json(Page::merged(
            rows,
            limit,
            |v| v.seq.to_string(),
            PolicyViolation::from,
        ))),
        other => Err(unexpected(other)),
    }
}
