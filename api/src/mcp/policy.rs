//! The skill rule for MCP tools: a tool may require a skill (by name, see
//! [`super::catalog::Tool::skill`]). Where the caller's workspace registers a skill of that
//! name, the tool may be called only by a caller on a team granted it: the team has the
//! calling agent (named by the `Conclave-Agent` header) or the key's user as a member. Where
//! the workspace registers no such skill, the tool is open to every key whose scope allows
//! the operation. A refusal is recorded as a policy violation before it is answered, like the
//! REST skill rule ([`crate::policy`]).

use conclave_raft::meta::teams::skill_number;
use conclave_raft::meta::MetaState;
use conclave_raft::shard::violation::NewViolation;

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::state::AppState;

/// The outcome of [`check_tool`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolDecision {
    /// The caller may call the tool.
    Allowed,
    /// It may not.
    Refused {
        /// The id of the skill it lacks.
        skill_id: String,
        /// A lowercase explanation.
        message: String,
    },
}

/// Whether a caller of workspace `ws` acting as `agent` (if named) with the key's `user` (if
/// any) may call a tool requiring `skill`.
pub fn check_tool(
    meta: &MetaState,
    ws: &str,
    agent: Option<&str>,
    user: Option<&str>,
    tool: &str,
    skill: &str,
) -> ToolDecision {
    let Some(found) = meta.teams.skill_by_name(ws, skill) else {
        return ToolDecision::Allowed;
    };
    let number = skill_number(&found.id).expect("stored ids are canonical");
    let granted = meta.teams.teams_of(ws).any(|t| {
        t.skills.contains_key(&number)
            && (agent.is_some_and(|a| t.agents.contains_key(a))
                || user.is_some_and(|u| t.users.contains_key(u)))
    });
    if granted {
        return ToolDecision::Allowed;
    }
    let who = match (agent, user) {
        (Some(a), _) => format!("agent {a:?}"),
        (None, Some(u)) => format!("user {u:?}"),
        (None, None) => "a caller naming no agent".to_string(),
    };
    ToolDecision::Refused {
        skill_id: found.id.clone(),
        message: format!(
            "{who} may not call tool {tool:?}: it requires skill {skill:?} and no team of the caller has it granted"
        ),
    }
}

/// Applies [`check_tool`]; on a refusal records the violation (via `mcp:<tool>`) and returns
/// the message with the violation's id. An error means the violation could not be recorded.
pub async fn enforce_tool(
    state: &AppState,
    caller: &Caller,
    agent: Option<&str>,
    tool: &str,
    skill: &str,
) -> ApiResult<Result<(), String>> {
    let decision = {
        let meta = state.groups().meta().read().expect("meta lock");
        check_tool(
            &meta,
            &caller.workspace,
            agent,
            caller.user.as_deref(),
            tool,
            skill,
        )
    };
    let ToolDecision::Refused { skill_id, message } = decision else {
        return Ok(Ok(()));
    };
    let recorded = crate::policy::record_violation(
        state,
        NewViolation {
            ws: caller.workspace.clone(),
            agent: agent.map_or_else(|| format!("key:{}", caller.key_id), str::to_string),
            key_id: caller.key_id.clone(),
            skill_id: Some(skill_id),
            skill: skill.to_string(),
            via: format!("mcp:{tool}"),
            reason: "not_granted".to_string(),
            detail: message.clone(),
        },
    )
    .await?;
    Ok(Err(format!(
        "{message} (recorded as policy violation {})",
        recorded.id
    )))
}

#[cfg(test)]
mod tests {
    use conclave_raft::meta::teams::{MemberKind, TeamsCommand};
    use conclave_raft::meta::{MetaCommand, Workspace};

    use super::*;

    /// Workspace `a`: skill `mcp.tasks` granted to team_1 (agent `bot`, user `user_1`);
    /// no skill `mcp.topics`.
    fn meta() -> MetaState {
        let mut m = MetaState::default();
        m.workspaces.insert(
            "a".into(),
            Workspace {
                id: "a".into(),
                name: "a".into(),
                created_at: 0,
                tenant: "default".into(),
                settings: Default::default(),
            },
        );
        for cmd in [
            TeamsCommand::CreateTeam {
                workspace: "a".into(),
                name: "ops".into(),
                description: String::new(),
            },
            TeamsCommand::CreateSkill {
                workspace: "a".into(),
                name: "mcp.tasks".into(),
                description: String::new(),
                metadata: "{}".into(),
            },
            TeamsCommand::AddMember {
                workspace: "a".into(),
                team: "team_1".into(),
                kind: MemberKind::Agent,
                member: "bot".into(),
            },
            TeamsCommand::AddMember {
                workspace: "a".into(),
                team: "team_1".into(),
                kind: MemberKind::User,
                member: "user_1".into(),
            },
            TeamsCommand::GrantSkill {
                workspace: "a".into(),
                skill: "skill_1".into(),
                team: "team_1".into(),
            },
        ] {
            m.apply(&MetaCommand::Teams(cmd), 1);
        }
        m
    }

    #[test]
    fn an_unregistered_skill_restricts_nothing() {
        let m = meta();
        assert_eq!(
            check_tool(&m, "a", None, None, "publish_topic", "mcp.topics"),
            ToolDecision::Allowed
        );
    }

    #[test]
    fn a_registered_skill_needs_a_granted_team_of_the_agent_or_user() {
        let m = meta();
        let check = |agent, user| check_tool(&m, "a", agent, user, "create_task", "mcp.tasks");
        assert_eq!(check(Some("bot"), None), ToolDecision::Allowed);
        assert_eq!(check(None, Some("user_1")), ToolDecision::Allowed);
        for (agent, user) in [(Some("other"), None), (None, Some("user_2")), (None, None)] {
            match check(agent, user) {
                ToolDecision::Refused { skill_id, message } => {
                    assert_eq!(skill_id, "skill_1");
                    assert!(message.contains("mcp.tasks"), "{message}");
                }
                other => panic!("{agent:?}/{user:?}: {other:?}"),
            }
        }
    }
}
