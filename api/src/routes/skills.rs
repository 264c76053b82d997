//! `/v1/skills`: a workspace's skills, their grants to teams, and the invoke check (meta
//! group; the check itself is `crate::policy`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use conclave_raft::meta::teams::{skill_number, Skill, TeamsCommand, TeamsReply};
use conclave_raft::meta::{MetaState, Scope};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::teams::{description, team_id, teams_write, SkillCursor};
use super::{json_text, json_value, Deleted, Page};
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::policy;
use crate::state::AppState;
use crate::validate::{self, NameString};

const TAG: &str = "Skills";

/// Largest skill metadata, bytes of JSON text.
const MAX_SKILL_METADATA_BYTES: usize = 2048;

/// The routes of this module, with their documentation.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register, list))
        .routes(routes!(delete))
        .routes(routes!(grant, revoke))
        .routes(routes!(invoke))
}

/// 404 unless `id` is shaped like a skill id (`skill_<n>`).
fn skill_id(id: &str) -> ApiResult<()> {
    match skill_number(id) {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found(format!("skill {id:?} not found"))),
    }
}

/// Body of `POST /v1/skills`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RegisterSkillBody {
    /// Unique in the workspace: 1 to 128 of letters, digits, `.`, `_`, `-`, `:`.
    #[schema(value_type = NameString)]
    name: String,
    /// Free text, at most 1024 characters.
    #[serde(default)]
    #[schema(max_length = 1024)]
    description: String,
    /// A JSON object, at most 2048 bytes as JSON text.
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
}

/// A skill.
#[derive(Serialize, ToSchema)]
pub(super) struct SkillView {
    /// `skill_<n>`.
    id: String,
    /// Unique in the workspace.
    name: String,
    /// Free text.
    description: String,
    /// A JSON object.
    metadata: Value,
    /// Ids of the teams it is granted to, in id order.
    teams: Vec<String>,
    /// ms since the Unix epoch.
    created_at: u64,
}

impl SkillView {
    fn new(meta: &MetaState, s: &Skill) -> Self {
        let n = skill_number(&s.id).expect("stored ids are canonical");
        Self {
            id: s.id.clone(),
            name: s.name.clone(),
            description: s.description.clone(),
            metadata: json_value(&s.metadata),
            teams: meta
                .teams
                .teams_of(&s.workspace)
                .filter(|t| t.skills.contains_key(&n))
                .map(|t| t.id.clone())
                .collect(),
            created_at: s.created_at,
        }
    }
}

/// Registers a skill (admin keys only).
#[utoipa::path(post, path = "/v1/skills", tag = TAG, request_body = RegisterSkillBody,
    responses((status = 201, description = "The new skill", body = SkillView),
        (status = 409, description = "The name is taken, or the workspace has 1000 skills")))]
async fn register(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<RegisterSkillBody>,
) -> ApiResult<(StatusCode, Json<SkillView>)> {
    caller.require(Scope::Admin)?;
    validate::name("name", &body.name)?;
    description(&body.description)?;
    let metadata = match &body.metadata {
        None => "{}".to_string(),
        Some(v @ Value::Object(_)) => json_text(v)?,
        Some(_) => return Err(ApiError::bad_request("metadata must be a JSON object")),
    };
    if metadata.len() > MAX_SKILL_METADATA_BYTES {
        return Err(ApiError::bad_request(format!(
            "metadata must be at most {MAX_SKILL_METADATA_BYTES} bytes as JSON"
        )));
    }
    let cmd = TeamsCommand::CreateSkill {
        workspace: caller.workspace,
        name: body.name,
        description: body.description,
        metadata,
    };
    match teams_write(&state, cmd).await? {
        TeamsReply::Skill(s) => Ok((
            StatusCode::CREATED,
            Json(SkillView {
                id: s.id,
                name: s.name,
                description: s.description,
                metadata: json_value(&s.metadata),
                teams: Vec::new(),
                created_at: s.created_at,
            }),
        )),
        other => Err(ApiError::internal(format!("unexpected reply {other:?}"))),
    }
}

/// `?team=&cursor=&limit=` of `GET /v1/skills`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct SkillListQuery {
    /// Only skills granted to this team.
    team: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(inline, value_type = Option<SkillCursor>)]
    cursor: Option<String>,
}

/// Lists the workspace's skills in id (registration) order.
#[utoipa::path(get, path = "/v1/skills", tag = TAG, params(SkillListQuery),
    responses((status = 200, description = "A page of skills", body = Page<SkillView>)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<SkillListQuery>,
) -> ApiResult<Json<Page<SkillView>>> {
    caller.require(Scope::Read)?;
    let limit = validate::limit(q.limit, super::DEFAULT_PAGE)?;
    let after = match &q.cursor {
        None => 0,
        Some(c) => skill_number(c).ok_or_else(|| ApiError::bad_request("malformed cursor"))?,
    };
    let meta = state.groups().meta().read().expect("meta lock");
    let team = match &q.team {
        None => None,
        Some(id) => Some(
            meta.teams
                .team(&caller.workspace, id)
                .ok_or_else(|| ApiError::not_found(format!("team {id:?} not found")))?,
        ),
    };
    let skills: Vec<&Skill> = meta
        .teams
        .skills
        .range(after + 1..)
        .filter(|(n, s)| {
            s.workspace == caller.workspace && team.is_none_or(|t| t.skills.contains_key(n))
        })
        .map(|(_, s)| s)
        .take(limit + 1)
        .collect();
    Ok(Json(Page::merged(
        skills,
        limit,
        |s| s.id.clone(),
        |s| SkillView::new(&meta, s),
    )))
}

/// Deletes a skill and every grant of it (admin keys only).
#[utoipa::path(delete, path = "/v1/skills/{id}", tag = TAG,
    params(("id" = String, Path, description = "The skill's id")),
    responses((status = 200, description = "The skill was deleted", body = Deleted)))]
async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Deleted>> {
    caller.require(Scope::Admin)?;
    skill_id(&id)?;
    let cmd = TeamsCommand::DeleteSkill {
        workspace: caller.workspace,
        id: id.clone(),
    };
    teams_write(&state, cmd).await?;
    Ok(Json(Deleted::new(id)))
}

/// A skill granted to a team.
#[derive(Serialize, ToSchema)]
pub(super) struct SkillGrant {
    /// The skill.
    skill_id: String,
    /// The team.
    team_id: String,
    /// When it was granted, ms since the Unix epoch.
    granted_at: u64,
}

/// A revoked grant.
#[derive(Serialize, ToSchema)]
pub(super) struct SkillGrantRevoked {
    /// The skill.
    skill_id: String,
    /// The team.
    team_id: String,
    /// Always true.
    deleted: bool,
}

/// Grants a skill to a team (admin keys only); granting it again changes nothing.
#[utoipa::path(post, path = "/v1/skills/{id}/teams/{teamId}", tag = TAG,
    params(("id" = String, Path, description = "The skill's id"),
        ("teamId" = String, Path, description = "The team's id")),
    responses((status = 201, description = "The skill was granted", body = SkillGrant),
        (status = 200, description = "The skill was already granted", body = SkillGrant),
        (status = 409, description = "The workspace is at its grant cap")))]
async fn grant(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, team)): ApiPath<(String, String)>,
) -> ApiResult<(StatusCode, Json<SkillGrant>)> {
    caller.require(Scope::Admin)?;
    skill_id(&id)?;
    team_id(&team)?;
    let cmd = TeamsCommand::GrantSkill {
        workspace: caller.workspace,
        skill: id.clone(),
        team: team.clone(),
    };
    match teams_write(&state, cmd).await? {
        TeamsReply::Grant {
            granted_at,
            created,
        } => Ok((
            if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            Json(SkillGrant {
                skill_id: id,
                team_id: team,
                granted_at,
            }),
        )),
        other => Err(ApiError::internal(format!("unexpected reply {other:?}"))),
    }
}

/// Revokes a skill from a team (admin keys only); 404 when it was not granted.
#[utoipa::path(delete, path = "/v1/skills/{id}/teams/{teamId}", tag = TAG,
    params(("id" = String, Path, description = "The skill's id"),
        ("teamId" = String, Path, description = "The team's id")),
    responses((status = 200, description = "The grant was revoked", body = SkillGrantRevoked)))]
async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, team)): ApiPath<(String, String)>,
) -> ApiResult<Json<SkillGrantRevoked>> {
    caller.require(Scope::Admin)?;
    skill_id(&id)?;
    team_id(&team)?;
    let cmd = TeamsCommand::RevokeSkill {
        workspace: caller.workspace,
        skill: id.clone(),
        team: team.clone(),
    };
    teams_write(&state, cmd).await?;
    Ok(Json(SkillGrantRevoked {
        skill_id: id,
        team_id: team,
        deleted: true,
    }))
}

/// Body of `POST /v1/skills/{id}/invoke`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct InvokeSkillBody {
    /// The agent that wants to invoke the skill, by name.
    #[schema(value_type = NameString)]
    agent: String,
}

/// An allowed invocation.
#[derive(Serialize, ToSchema)]
pub(super) struct SkillInvocation {
    /// Always true (a refusal is an error answer).
    allowed: bool,
    /// The agent.
    agent: String,
    /// The skill's id.
    skill_id: String,
    /// The skill's name.
    skill_name: String,
    /// The agent's teams that have the skill granted, in id order.
    teams: Vec<String>,
}

/// Checks whether an agent may invoke a skill (Conclave extension, not in the reference API).
///
/// Allowed when the skill exists in the workspace and some team the agent belongs to has it
/// granted. A refusal is recorded as a policy violation (`GET /v1/audit/violations`) before
/// the answer: 403 when no team of the agent has the skill, 404 when the workspace has no
/// such skill. MCP tool calls apply the same rule.
#[utoipa::path(post, path = "/v1/skills/{id}/invoke", tag = TAG,
    params(("id" = NameString, Path, description = "The skill's id, or its name (an id wins)")),
    request_body = InvokeSkillBody,
    responses((status = 200, description = "The agent may invoke the skill", body = SkillInvocation),
        (status = 403, description = "Refused and recorded as a policy violation: no team of the agent has the skill (or the key's scope is below full)"),
        (status = 404, description = "No such skill in this workspace; the attempt is recorded as a policy violation")))]
async fn invoke(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<InvokeSkillBody>,
) -> ApiResult<Json<SkillInvocation>> {
    caller.require(Scope::Full)?;
    validate::name("agent", &body.agent)?;
    validate::name("id", &id)?;
    let (skill, teams) = policy::enforce_skill(&state, &caller, &body.agent, &id, "rest").await?;
    Ok(Json(SkillInvocation {
        allowed: true,
        agent: body.agent,
        skill_id: skill.id,
        skill_name: skill.name,
        teams,
    }))
}
