//! Access rules beyond a key's scope, evaluated on the node's local meta replica.
//!
//! The skill rule: an agent may invoke a skill only if the skill is registered in the
//! workspace and at least one team the agent belongs to has it granted. [`check_skill`] is the
//! rule itself (pure, no I/O); [`enforce_skill`] applies it to a request and, on a refusal,
//! durably records a policy violation before answering, so every refusal a client sees is in
//! `GET /v1/audit/violations`. The REST invoke route goes through [`enforce_skill`]; MCP tool
//! calls go through [`crate::mcp::policy`], which records its refusals the same way.
//!
//! The rule reads the local replica, so a grant or revoke made through another node takes
//! effect here once this node has applied it (normally within one replication round trip).

use conclave_actors::{ClientRequest, ClientResponse};
use conclave_raft::meta::teams::{skill_number, Skill};
use conclave_raft::meta::MetaState;
use conclave_raft::shard::violation::{NewViolation, Violation};
use conclave_raft::{ShardCommand, ShardResponse};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Why an invocation is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// No skill of the workspace has that id or name.
    UnknownSkill,
    /// The skill exists but no team of the agent has it granted.
    NotGranted,
}

impl RefusalReason {
    /// The reason as recorded: `unknown_skill` or `not_granted`.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::UnknownSkill => "unknown_skill",
            RefusalReason::NotGranted => "not_granted",
        }
    }
}

/// The outcome of [`check_skill`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkillDecision {
    /// The agent may invoke the skill.
    Allowed {
        /// The skill.
        skill: Skill,
        /// Ids of the agent's teams that have it granted, in id order (never empty).
        teams: Vec<String>,
    },
    /// The agent may not.
    Refused {
        /// The skill's id, when it exists.
        skill_id: Option<String>,
        /// Why.
        reason: RefusalReason,
        /// A lowercase explanation for the client.
        message: String,
    },
}

/// Whether `agent` of workspace `ws` may invoke `skill`, given as an id (`skill_<n>`) or a
/// name (a skill of `ws` with that id wins over one with that name): the skill exists in `ws`
/// and some team of `ws` with `agent` as a member has it granted.
pub fn check_skill(meta: &MetaState, ws: &str, agent: &str, skill: &str) -> SkillDecision {
    let found = meta
        .teams
        .skill(ws, skill)
        .or_else(|| meta.teams.skill_by_name(ws, skill));
    let Some(found) = found else {
        return SkillDecision::Refused {
            skill_id: None,
            reason: RefusalReason::UnknownSkill,
            message: format!("skill {skill:?} not found"),
        };
    };
    let number = skill_number(&found.id).expect("stored ids are canonical");
    let teams: Vec<String> = meta
        .teams
        .teams_of(ws)
        .filter(|t| t.agents.contains_key(agent) && t.skills.contains_key(&number))
        .map(|t| t.id.clone())
        .collect();
    if teams.is_empty() {
        SkillDecision::Refused {
            skill_id: Some(found.id.clone()),
            reason: RefusalReason::NotGranted,
            message: format!(
                "agent {agent:?} may not invoke skill {:?}: no team of the agent has it granted",
                found.name
            ),
        }
    } else {
        SkillDecision::Allowed {
            skill: found.clone(),
            teams,
        }
    }
}

/// Applies [`check_skill`] for `agent` acting through `caller`'s key. Allowed: the skill and
/// the granting teams. Refused: the violation is recorded on the workspace's violations shard
/// first, then the answer is 403 (not granted) or 404 (no such skill in the workspace); if the
/// record cannot be written the refusal is answered with that error instead (503), so no
/// refusal goes unrecorded.
pub async fn enforce_skill(
    state: &AppState,
    caller: &Caller,
    agent: &str,
    skill: &str,
    via: &str,
) -> ApiResult<(Skill, Vec<String>)> {
    let decision = {
        let meta = state.groups().meta().read().expect("meta lock");
        check_skill(&meta, &caller.workspace, agent, skill)
    };
    let (skill_id, reason, message) = match decision {
        SkillDecision::Allowed { skill, teams } => return Ok((skill, teams)),
        SkillDecision::Refused {
            skill_id,
            reason,
            message,
        } => (skill_id, reason, message),
    };
    let recorded = record_violation(
        state,
        NewViolation {
            ws: caller.workspace.clone(),
            agent: agent.to_string(),
            key_id: caller.key_id.clone(),
            skill_id,
            skill: skill.to_string(),
            via: via.to_string(),
            reason: reason.as_str().to_string(),
            detail: message.clone(),
        },
    )
    .await?;
    let message = format!("{message} (recorded as policy violation {})", recorded.id);
    Err(match reason {
        RefusalReason::UnknownSkill => ApiError::not_found(message),
        RefusalReason::NotGranted => ApiError::forbidden(message),
    })
}

/// Writes one violation to its workspace's violations shard.
pub(crate) async fn record_violation(state: &AppState, v: NewViolation) -> ApiResult<Violation> {
    let group = state
        .router
        .shard_of(&v.ws, "violations", "")
        .ok_or_else(|| ApiError::unavailable("the cluster is not bootstrapped yet"))?;
    let cmd = ShardCommand::RecordViolation(v);
    match state
        .router
        .execute(group, ClientRequest::Write(cmd))
        .await?
    {
        ClientResponse::Write(ShardResponse::Violation(v)) => Ok(*v),
        ClientResponse::Write(ShardResponse::Refused(e)) => Err(e.into()),
        other => Err(ApiError::internal(format!("unexpected response {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use conclave_raft::meta::teams::{MemberKind, TeamsCommand, TeamsReply};
    use conclave_raft::meta::{MetaCommand, MetaResponse, Workspace};

    use super::*;

    fn apply(m: &mut MetaState, cmd: TeamsCommand) -> TeamsReply {
        match m.apply(&MetaCommand::Teams(cmd), 1) {
            MetaResponse::Teams(r) => r,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Workspaces `a` and `b`; in `a`, team_1 (agent `bot`) has skill_1 `deploy`, team_2
    /// (agent `bot`, user `carol`) has nothing, and skill_2 `review` is granted to nobody; in
    /// `b`, team_3 (agent `bot`) has skill_3 `deploy`.
    fn meta() -> MetaState {
        let mut m = MetaState::default();
        for ws in ["a", "b"] {
            let w = Workspace {
                id: ws.into(),
                name: ws.into(),
                created_at: 0,
                tenant: "default".into(),
                settings: Default::default(),
            };
            m.workspaces.insert(ws.into(), w);
        }
        let team = |ws: &str, name: &str| TeamsCommand::CreateTeam {
            workspace: ws.into(),
            name: name.into(),
            description: String::new(),
        };
        let skill = |ws: &str, name: &str| TeamsCommand::CreateSkill {
            workspace: ws.into(),
            name: name.into(),
            description: String::new(),
            metadata: "{}".into(),
        };
        let member = |ws: &str, team: &str, kind, member: &str| TeamsCommand::AddMember {
            workspace: ws.into(),
            team: team.into(),
            kind,
            member: member.into(),
        };
        let grant = |ws: &str, skill: &str, team: &str| TeamsCommand::GrantSkill {
            workspace: ws.into(),
            skill: skill.into(),
            team: team.into(),
        };
        for cmd in [
            team("a", "ops"),
            team("a", "idle"),
            team("b", "theirs"),
            skill("a", "deploy"),
            skill("a", "review"),
            skill("b", "deploy"),
            member("a", "team_1", MemberKind::Agent, "bot"),
            member("a", "team_2", MemberKind::Agent, "bot"),
            member("a", "team_2", MemberKind::User, "carol"),
            member("b", "team_3", MemberKind::Agent, "bot"),
            grant("a", "skill_1", "team_1"),
            grant("b", "skill_3", "team_3"),
        ] {
            apply(&mut m, cmd);
        }
        m
    }

    fn reason(d: SkillDecision) -> Option<RefusalReason> {
        match d {
            SkillDecision::Allowed { .. } => None,
            SkillDecision::Refused { reason, .. } => Some(reason),
        }
    }

    #[test]
    fn a_member_of_a_granted_team_may_invoke_by_name_or_id() {
        let m = meta();
        for skill in ["deploy", "skill_1"] {
            match check_skill(&m, "a", "bot", skill) {
                SkillDecision::Allowed { skill, teams } => {
                    assert_eq!(skill.id, "skill_1");
                    assert_eq!(teams, vec!["team_1".to_string()]);
                }
                other => panic!("{skill}: {other:?}"),
            }
        }
    }

    #[test]
    fn refusals_name_their_reason() {
        let m = meta();
        // Not a member of any granted team.
        assert_eq!(
            reason(check_skill(&m, "a", "stranger", "deploy")),
            Some(RefusalReason::NotGranted)
        );
        // A user member with the agent's name does not count as the agent.
        assert_eq!(
            reason(check_skill(&m, "a", "carol", "deploy")),
            Some(RefusalReason::NotGranted)
        );
        // Registered but granted to nobody.
        assert_eq!(
            reason(check_skill(&m, "a", "bot", "review")),
            Some(RefusalReason::NotGranted)
        );
        assert_eq!(
            reason(check_skill(&m, "a", "bot", "missing")),
            Some(RefusalReason::UnknownSkill)
        );
        // Another workspace's skill id is unknown here, even though `bot` holds it there.
        assert_eq!(
            reason(check_skill(&m, "a", "bot", "skill_3")),
            Some(RefusalReason::UnknownSkill)
        );
    }

    #[test]
    fn revoking_or_leaving_the_team_withdraws_the_skill() {
        let mut m = meta();
        apply(
            &mut m,
            TeamsCommand::RevokeSkill {
                workspace: "a".into(),
                skill: "skill_1".into(),
                team: "team_1".into(),
            },
        );
        assert_eq!(
            reason(check_skill(&m, "a", "bot", "deploy")),
            Some(RefusalReason::NotGranted)
        );
        // The other workspace's grant is untouched.
        assert_eq!(reason(check_skill(&m, "b", "bot", "deploy")), None);

        let mut m = meta();
        apply(
            &mut m,
            TeamsCommand::RemoveMember {
                workspace: "a".into(),
                team: "team_1".into(),
                kind: MemberKind::Agent,
                member: "bot".into(),
            },
        );
        assert_eq!(
            reason(check_skill(&m, "a", "bot", "deploy")),
            Some(RefusalReason::NotGranted)
        );
    }
}
