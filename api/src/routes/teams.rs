//! `/v1/teams`: teams of agents and users, and the skills granted to them (meta group).
//!
//! Writes go to the meta leader from any node, and answer once this node's replica shows them;
//! reads answer from this node's replica, which may lag a write just made through another node
//! by a replication round trip. Agent members
//! are stored by agent name and user members by user id, neither checked against the
//! registered agents or users (see `conclave_raft::meta::teams`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use std::time::Duration;

use conclave_raft::meta::teams::{
    skill_number, team_number, MemberKind, Team, TeamsCommand, TeamsReply,
};
use conclave_raft::meta::{MetaState, Scope};
use conclave_raft::{MetaCommand, MetaResponse, META_GROUP};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Deleted, Page};
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::state::AppState;
use crate::validate::{self, NameString};

const TAG: &str = "Teams";

/// Longest team or skill description, characters.
pub(super) const MAX_TEAM_DESCRIPTION_CHARS: usize = 1024;

/// A string parameter matching `pattern` (at most `max` characters), stating exactly what its
/// handler accepts.
pub(super) fn pattern_schema(pattern: &str, max: usize) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .min_length(Some(1))
        .max_length(Some(max))
        .into()
}

/// A description: at most [`MAX_TEAM_DESCRIPTION_CHARS`] characters.
pub(super) fn description(v: &str) -> ApiResult<()> {
    if v.chars().count() > MAX_TEAM_DESCRIPTION_CHARS {
        return Err(ApiError::bad_request(format!(
            "description must be at most {MAX_TEAM_DESCRIPTION_CHARS} characters"
        )));
    }
    Ok(())
}

/// A cursor of the teams list: the last team id returned.
pub(super) struct TeamCursor;

impl PartialSchema for TeamCursor {
    fn schema() -> RefOr<Schema> {
        pattern_schema(r"^team_[1-9][0-9]{0,18}$", 24)
    }
}

/// A cursor of a skills list: the last skill id returned.
pub(super) struct SkillCursor;

impl PartialSchema for SkillCursor {
    fn schema() -> RefOr<Schema> {
        pattern_schema(r"^skill_[1-9][0-9]{0,18}$", 25)
    }
}

/// A cursor of the members list: `<kind>:<id>` of the last member returned.
pub(super) struct MemberCursor;

impl PartialSchema for MemberCursor {
    fn schema() -> RefOr<Schema> {
        pattern_schema(r"^(agent|user):[A-Za-z0-9._:-]{1,128}$", 133)
    }
}

/// The routes of this module, with their documentation.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_team, list_teams))
        .routes(routes!(delete_team))
        .routes(routes!(add_agent, list_members))
        .routes(routes!(remove_agent))
        .routes(routes!(add_user))
        .routes(routes!(remove_user))
        .routes(routes!(team_skills))
}

/// Longest a write waits for this node's replica to show it (see [`teams_write`]).
const LOCAL_APPLY_WAIT: Duration = Duration::from_secs(2);

/// Runs a teams command on the meta group, then waits (at most [`LOCAL_APPLY_WAIT`]) until
/// this node's replica shows its effect, so reads through the node that answered a write see
/// that write. Reads through other nodes may still lag by a replication round trip.
pub(super) async fn teams_write(state: &AppState, cmd: TeamsCommand) -> ApiResult<TeamsReply> {
    let applied = state.groups().applied_watch(META_GROUP);
    let mut changes = applied.map(|w| w.subscribe());
    let reply = match state
        .router
        .execute_meta(MetaCommand::Teams(cmd.clone()))
        .await?
    {
        MetaResponse::Teams(reply) => reply,
        other => return Err(ApiError::internal(format!("unexpected response {other:?}"))),
    };
    let deadline = tokio::time::Instant::now() + LOCAL_APPLY_WAIT;
    while !shows(&read_meta(state), &cmd, &reply) {
        let Some(rx) = changes.as_mut() else { break };
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            // Timed out, or the group stopped here: answer anyway, the write is committed.
            _ => break,
        }
    }
    Ok(reply)
}

/// Whether `meta` shows the effect of `cmd`, which answered `reply`. Creations are checked
/// against the id counters (monotonic); memberships and grants also count as shown once their
/// team is gone, since nothing more can come of them.
fn shows(meta: &MetaState, cmd: &TeamsCommand, reply: &TeamsReply) -> bool {
    let teams = &meta.teams;
    match (cmd, reply) {
        (_, TeamsReply::Team(t)) => team_number(&t.id).is_some_and(|n| teams.last_team >= n),
        (_, TeamsReply::Skill(s)) => skill_number(&s.id).is_some_and(|n| teams.last_skill >= n),
        (TeamsCommand::DeleteTeam { workspace, id }, _) => teams.team(workspace, id).is_none(),
        (TeamsCommand::DeleteSkill { workspace, id }, _) => teams.skill(workspace, id).is_none(),
        (
            TeamsCommand::AddMember {
                workspace,
                team,
                kind,
                member,
            }
            | TeamsCommand::RemoveMember {
                workspace,
                team,
                kind,
                member,
            },
            _,
        ) => {
            let adding = matches!(cmd, TeamsCommand::AddMember { .. });
            teams
                .team(workspace, team)
                .is_none_or(|t| t.members(*kind).contains_key(member) == adding)
        }
        (
            TeamsCommand::GrantSkill {
                workspace,
                skill,
                team,
            }
            | TeamsCommand::RevokeSkill {
                workspace,
                skill,
                team,
            },
            _,
        ) => {
            let granting = matches!(cmd, TeamsCommand::GrantSkill { .. });
            let n = skill_number(skill).unwrap_or(0);
            teams
                .team(workspace, team)
                .is_none_or(|t| t.skills.contains_key(&n) == granting)
        }
        _ => true,
    }
}

/// 404 unless `id` is shaped like a team id (`team_<n>`); shape only, existence is checked
/// against the replica or in apply.
pub(super) fn team_id(id: &str) -> ApiResult<()> {
    match team_number(id) {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found(format!("team {id:?} not found"))),
    }
}

/// The caller's team `id` in this node's replica, or 404.
fn read_team<'a>(meta: &'a MetaState, caller: &Caller, id: &str) -> ApiResult<&'a Team> {
    meta.teams
        .team(&caller.workspace, id)
        .ok_or_else(|| ApiError::not_found(format!("team {id:?} not found")))
}

fn read_meta(state: &AppState) -> std::sync::RwLockReadGuard<'_, MetaState> {
    state.groups().meta().read().expect("meta lock")
}

/// The first `limit` of `items` (already after the cursor, in order), with a cursor when
/// more remain.
fn page<S, T>(
    items: impl Iterator<Item = S>,
    limit: usize,
    key: impl Fn(&S) -> String,
    item: impl Fn(S) -> T,
) -> Page<T> {
    Page::merged(items.take(limit + 1).collect(), limit, key, item)
}

/// Body of `POST /v1/teams`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateTeamBody {
    /// Unique in the workspace: 1 to 128 of letters, digits, `.`, `_`, `-`, `:`.
    #[schema(value_type = NameString)]
    name: String,
    /// Free text, at most 1024 characters.
    #[serde(default)]
    #[schema(max_length = 1024)]
    description: String,
}

/// A team.
#[derive(Serialize, ToSchema)]
pub(super) struct TeamView {
    /// `team_<n>`.
    id: String,
    /// Unique in the workspace.
    name: String,
    /// Free text.
    description: String,
    /// Member agents.
    agent_count: usize,
    /// Member users.
    user_count: usize,
    /// Skills granted to the team.
    skill_count: usize,
    /// ms since the Unix epoch.
    created_at: u64,
}

impl From<&Team> for TeamView {
    fn from(t: &Team) -> Self {
        Self {
            id: t.id.clone(),
            name: t.name.clone(),
            description: t.description.clone(),
            agent_count: t.agents.len(),
            user_count: t.users.len(),
            skill_count: t.skills.len(),
            created_at: t.created_at,
        }
    }
}

/// Creates a team (admin keys only).
#[utoipa::path(post, path = "/v1/teams", tag = TAG, request_body = CreateTeamBody,
    responses((status = 201, description = "The new team", body = TeamView),
        (status = 409, description = "The name is taken, or the workspace has 1000 teams")))]
async fn create_team(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateTeamBody>,
) -> ApiResult<(StatusCode, Json<TeamView>)> {
    caller.require(Scope::Admin)?;
    validate::name("name", &body.name)?;
    description(&body.description)?;
    let cmd = TeamsCommand::CreateTeam {
        workspace: caller.workspace,
        name: body.name,
        description: body.description,
    };
    match teams_write(&state, cmd).await? {
        TeamsReply::Team(t) => Ok((StatusCode::CREATED, Json(TeamView::from(&t)))),
        other => Err(ApiError::internal(format!("unexpected reply {other:?}"))),
    }
}

/// `?cursor=&limit=` of `GET /v1/teams`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct TeamListQuery {
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(inline, value_type = Option<TeamCursor>)]
    cursor: Option<String>,
}

/// Lists the workspace's teams in id (creation) order.
#[utoipa::path(get, path = "/v1/teams", tag = TAG, params(TeamListQuery),
    responses((status = 200, description = "A page of teams", body = Page<TeamView>)))]
async fn list_teams(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<TeamListQuery>,
) -> ApiResult<Json<Page<TeamView>>> {
    caller.require(Scope::Read)?;
    let limit = validate::limit(q.limit, super::DEFAULT_PAGE)?;
    let after = match &q.cursor {
        None => 0,
        Some(c) => team_number(c).ok_or_else(|| ApiError::bad_request("malformed cursor"))?,
    };
    let meta = read_meta(&state);
    let teams = meta
        .teams
        .teams
        .range(after + 1..)
        .map(|(_, t)| t)
        .filter(|t| t.workspace == caller.workspace);
    Ok(Json(page(teams, limit, |t| t.id.clone(), TeamView::from)))
}

/// Deletes a team with its memberships and skill grants (admin keys only).
#[utoipa::path(delete, path = "/v1/teams/{id}", tag = TAG,
    params(("id" = String, Path, description = "The team's id")),
    responses((status = 200, description = "The team was deleted", body = Deleted)))]
async fn delete_team(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Deleted>> {
    caller.require(Scope::Admin)?;
    team_id(&id)?;
    let cmd = TeamsCommand::DeleteTeam {
        workspace: caller.workspace,
        id: id.clone(),
    };
    teams_write(&state, cmd).await?;
    Ok(Json(Deleted::new(id)))
}

/// What kind of member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum TeamMemberKind {
    /// An agent, by name.
    Agent,
    /// A user, by id.
    User,
}

impl From<TeamMemberKind> for MemberKind {
    fn from(k: TeamMemberKind) -> Self {
        match k {
            TeamMemberKind::Agent => MemberKind::Agent,
            TeamMemberKind::User => MemberKind::User,
        }
    }
}

impl From<MemberKind> for TeamMemberKind {
    fn from(k: MemberKind) -> Self {
        match k {
            MemberKind::Agent => TeamMemberKind::Agent,
            MemberKind::User => TeamMemberKind::User,
        }
    }
}

/// Body of `POST /v1/teams/{id}/members`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AddTeamAgentBody {
    /// The agent's name (its id); it need not be registered yet.
    #[schema(value_type = NameString)]
    agent: String,
}

/// Body of `POST /v1/teams/{id}/users`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AddTeamUserBody {
    /// The user's id.
    #[schema(value_type = NameString)]
    user_id: String,
}

/// A membership.
#[derive(Serialize, ToSchema)]
pub(super) struct TeamMembership {
    /// The team.
    team_id: String,
    /// `agent` or `user`.
    kind: TeamMemberKind,
    /// The agent's name or the user's id.
    id: String,
    /// When it joined the team, ms since the Unix epoch.
    added_at: u64,
}

/// A removed membership.
#[derive(Serialize, ToSchema)]
pub(super) struct TeamMembershipRemoved {
    /// The team.
    team_id: String,
    /// `agent` or `user`.
    kind: TeamMemberKind,
    /// The agent's name or the user's id.
    id: String,
    /// Always true.
    deleted: bool,
}

async fn add_member(
    state: &AppState,
    caller: Caller,
    team: String,
    kind: TeamMemberKind,
    member: String,
) -> ApiResult<(StatusCode, Json<TeamMembership>)> {
    caller.require(Scope::Admin)?;
    let field = match kind {
        TeamMemberKind::Agent => "agent",
        TeamMemberKind::User => "user_id",
    };
    validate::name(field, &member)?;
    team_id(&team)?;
    let cmd = TeamsCommand::AddMember {
        workspace: caller.workspace,
        team: team.clone(),
        kind: kind.into(),
        member: member.clone(),
    };
    match teams_write(state, cmd).await? {
        TeamsReply::Member { added_at, created } => Ok((
            if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            Json(TeamMembership {
                team_id: team,
                kind,
                id: member,
                added_at,
            }),
        )),
        other => Err(ApiError::internal(format!("unexpected reply {other:?}"))),
    }
}

async fn remove_member(
    state: &AppState,
    caller: Caller,
    team: String,
    kind: TeamMemberKind,
    member: String,
) -> ApiResult<Json<TeamMembershipRemoved>> {
    caller.require(Scope::Admin)?;
    let field = match kind {
        TeamMemberKind::Agent => "agentId",
        TeamMemberKind::User => "userId",
    };
    validate::name(field, &member)?;
    team_id(&team)?;
    let cmd = TeamsCommand::RemoveMember {
        workspace: caller.workspace,
        team: team.clone(),
        kind: kind.into(),
        member: member.clone(),
    };
    teams_write(state, cmd).await?;
    Ok(Json(TeamMembershipRemoved {
        team_id: team,
        kind,
        id: member,
        deleted: true,
    }))
}

/// Adds an agent to a team (admin keys only); adding a member again changes nothing.
#[utoipa::path(post, path = "/v1/teams/{id}/members", tag = TAG,
    params(("id" = String, Path, description = "The team's id")),
    request_body = AddTeamAgentBody,
    responses((status = 201, description = "The agent joined the team", body = TeamMembership),
        (status = 200, description = "The agent was already a member", body = TeamMembership),
        (status = 409, description = "The team or the workspace is at its membership cap")))]
async fn add_agent(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<AddTeamAgentBody>,
) -> ApiResult<(StatusCode, Json<TeamMembership>)> {
    add_member(&state, caller, id, TeamMemberKind::Agent, body.agent).await
}

/// Removes an agent from a team (admin keys only).
#[utoipa::path(delete, path = "/v1/teams/{id}/members/{agentId}", tag = TAG,
    params(("id" = String, Path, description = "The team's id"),
        ("agentId" = NameString, Path, description = "The agent's name")),
    responses((status = 200, description = "The agent left the team", body = TeamMembershipRemoved)))]
async fn remove_agent(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, agent)): ApiPath<(String, String)>,
) -> ApiResult<Json<TeamMembershipRemoved>> {
    remove_member(&state, caller, id, TeamMemberKind::Agent, agent).await
}

/// Adds a user to a team (admin keys only); adding a member again changes nothing.
#[utoipa::path(post, path = "/v1/teams/{id}/users", tag = TAG,
    params(("id" = String, Path, description = "The team's id")),
    request_body = AddTeamUserBody,
    responses((status = 201, description = "The user joined the team", body = TeamMembership),
        (status = 200, description = "The user was already a member", body = TeamMembership),
        (status = 409, description = "The team or the workspace is at its membership cap")))]
async fn add_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<AddTeamUserBody>,
) -> ApiResult<(StatusCode, Json<TeamMembership>)> {
    add_member(&state, caller, id, TeamMemberKind::User, body.user_id).await
}

/// Removes a user from a team (admin keys only).
#[utoipa::path(delete, path = "/v1/teams/{id}/users/{userId}", tag = TAG,
    params(("id" = String, Path, description = "The team's id"),
        ("userId" = NameString, Path, description = "The user's id")),
    responses((status = 200, description = "The user left the team", body = TeamMembershipRemoved)))]
async fn remove_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, user)): ApiPath<(String, String)>,
) -> ApiResult<Json<TeamMembershipRemoved>> {
    remove_member(&state, caller, id, TeamMemberKind::User, user).await
}

/// `?kind=&cursor=&limit=` of `GET /v1/teams/{id}/members`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct TeamMembersQuery {
    /// Only members of this kind.
    kind: Option<TeamMemberKind>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(inline, value_type = Option<MemberCursor>)]
    cursor: Option<String>,
}

/// A member of a team.
#[derive(Serialize, ToSchema)]
pub(super) struct TeamMember {
    /// `agent` or `user`.
    kind: TeamMemberKind,
    /// The agent's name or the user's id.
    id: String,
    /// When it joined the team, ms since the Unix epoch.
    added_at: u64,
}

/// Lists a team's members: agents by name, then users by id.
#[utoipa::path(get, path = "/v1/teams/{id}/members", tag = TAG,
    params(("id" = String, Path, description = "The team's id"), TeamMembersQuery),
    responses((status = 200, description = "A page of members", body = Page<TeamMember>)))]
async fn list_members(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<TeamMembersQuery>,
) -> ApiResult<Json<Page<TeamMember>>> {
    caller.require(Scope::Read)?;
    let limit = validate::limit(q.limit, super::DEFAULT_PAGE)?;
    // The cursor is `<kind>:<id>` of the last member returned.
    let after = match &q.cursor {
        None => None,
        Some(c) => {
            let (kind, member) = c
                .split_once(':')
                .ok_or_else(|| ApiError::bad_request("malformed cursor"))?;
            let kind = match kind {
                "agent" => MemberKind::Agent,
                "user" => MemberKind::User,
                _ => return Err(ApiError::bad_request("malformed cursor")),
            };
            validate::name("cursor", member)?;
            Some((kind, member.to_string()))
        }
    };
    let meta = read_meta(&state);
    let team = read_team(&meta, &caller, &id)?;
    let kinds = [MemberKind::Agent, MemberKind::User]
        .into_iter()
        .filter(|k| q.kind.is_none_or(|want| MemberKind::from(want) == *k));
    let members = kinds
        .flat_map(|k| team.members(k).iter().map(move |(m, at)| (k, m, *at)))
        .filter(|(k, m, _)| {
            after
                .as_ref()
                .is_none_or(|(ak, am)| (*k, m.as_str()) > (*ak, am.as_str()))
        });
    Ok(Json(page(
        members,
        limit,
        |(k, m, _)| format!("{}:{m}", k.as_str()),
        |(k, m, at)| TeamMember {
            kind: k.into(),
            id: m.clone(),
            added_at: at,
        },
    )))
}

/// A skill granted to a team.
#[derive(Serialize, ToSchema)]
pub(super) struct TeamSkillGrant {
    /// The skill's id.
    skill_id: String,
    /// The skill's name.
    name: String,
    /// When it was granted to the team, ms since the Unix epoch.
    granted_at: u64,
}

/// `?cursor=&limit=` of `GET /v1/teams/{id}/skills`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct TeamSkillsQuery {
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(inline, value_type = Option<SkillCursor>)]
    cursor: Option<String>,
}

/// Lists the skills granted to a team, in skill id order.
#[utoipa::path(get, path = "/v1/teams/{id}/skills", tag = TAG,
    params(("id" = String, Path, description = "The team's id"), TeamSkillsQuery),
    responses((status = 200, description = "A page of granted skills", body = Page<TeamSkillGrant>)))]
async fn team_skills(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<TeamSkillsQuery>,
) -> ApiResult<Json<Page<TeamSkillGrant>>> {
    caller.require(Scope::Read)?;
    let limit = validate::limit(q.limit, super::DEFAULT_PAGE)?;
    let after = match &q.cursor {
        None => 0,
        Some(c) => skill_number(c).ok_or_else(|| ApiError::bad_request("malformed cursor"))?,
    };
    let meta = read_meta(&state);
    let team = read_team(&meta, &caller, &id)?;
    let grants = team
        .skills
        .range(after + 1..)
        .filter_map(|(n, at)| meta.teams.skills.get(n).map(|s| (s, *at)));
    Ok(Json(page(
        grants,
        limit,
        |(s, _)| s.id.clone(),
        |(s, at)| TeamSkillGrant {
            skill_id: s.id.clone(),
            name: s.name.clone(),
            granted_at: at,
        },
    )))
}

#[cfg(test)]
mod tests {
    use conclave_raft::meta::Workspace;

    use super::*;

    /// A replica shows a write once it has applied it, and not before.
    #[test]
    fn a_replica_shows_each_write_once_applied() {
        let mut leader = MetaState::default();
        let ws = Workspace {
            id: "a".into(),
            name: "a".into(),
            created_at: 0,
            tenant: "default".into(),
            settings: Default::default(),
        };
        leader.workspaces.insert("a".into(), ws);
        let cmds = [
            TeamsCommand::CreateTeam {
                workspace: "a".into(),
                name: "ops".into(),
                description: String::new(),
            },
            TeamsCommand::CreateSkill {
                workspace: "a".into(),
                name: "deploy".into(),
                description: String::new(),
                metadata: "{}".into(),
            },
            TeamsCommand::AddMember {
                workspace: "a".into(),
                team: "team_1".into(),
                kind: MemberKind::Agent,
                member: "bot".into(),
            },
            TeamsCommand::GrantSkill {
                workspace: "a".into(),
                skill: "skill_1".into(),
                team: "team_1".into(),
            },
            TeamsCommand::RevokeSkill {
                workspace: "a".into(),
                skill: "skill_1".into(),
                team: "team_1".into(),
            },
            TeamsCommand::RemoveMember {
                workspace: "a".into(),
                team: "team_1".into(),
                kind: MemberKind::Agent,
                member: "bot".into(),
            },
            TeamsCommand::DeleteSkill {
                workspace: "a".into(),
                id: "skill_1".into(),
            },
            TeamsCommand::DeleteTeam {
                workspace: "a".into(),
                id: "team_1".into(),
            },
        ];
        for cmd in cmds {
            let lagging = leader.clone();
            let reply = match leader.apply(&MetaCommand::Teams(cmd.clone()), 1) {
                MetaResponse::Teams(r) => r,
                other => panic!("{cmd:?}: {other:?}"),
            };
            assert!(!shows(&lagging, &cmd, &reply), "{cmd:?} shown before apply");
            assert!(
                shows(&leader, &cmd, &reply),
                "{cmd:?} not shown after apply"
            );
        }
    }
}
