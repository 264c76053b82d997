//! Teams and skills of a workspace, kept in the meta group so every node can answer "may this
//! agent use this skill?" from its local replica.
//!
//! A team holds its members (agents by name, users by id) and the skills granted to it; a
//! skill is a named capability of one workspace. Invariants kept by `apply`:
//! - every team and skill belongs to exactly one workspace, and a command naming an id of
//!   another workspace is refused as not found, as if the id did not exist;
//! - team names and skill names are unique within their workspace;
//! - a grant refers only to a live skill of the team's workspace: deleting a skill removes it
//!   from every team, deleting a team removes its memberships and grants with it;
//! - ids (`team_<n>`, `skill_<n>`) are assigned here, from counters in the state, and are
//!   never reused;
//! - the per-workspace caps below hold (the meta state is persisted whole, so it must stay
//!   small); a command that would pass one is refused as a conflict and changes nothing.
//!
//! Members are not checked against the agents and users of the workspace: those live elsewhere
//! (agents on data shards), so a membership may name an agent that is registered later or was
//! removed since. Readers treat membership as "this name, if it acts, acts as a member".

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{MetaResponse, MetaState};
use crate::error::CoreError;

/// Most teams one workspace may hold.
pub const MAX_TEAMS_PER_WORKSPACE: usize = 1000;
/// Most skills one workspace may hold.
pub const MAX_SKILLS_PER_WORKSPACE: usize = 1000;
/// Most members (agents and users together) of one team.
pub const MAX_MEMBERS_PER_TEAM: usize = 1000;
/// Most memberships (summed over the workspace's teams) of one workspace.
pub const MAX_MEMBERSHIPS_PER_WORKSPACE: usize = 20_000;
/// Most grants (summed over the workspace's teams) of one workspace.
pub const MAX_GRANTS_PER_WORKSPACE: usize = 20_000;

/// A team of agents and users sharing granted skills.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Team {
    /// `team_<n>`.
    pub id: String,
    /// The workspace it belongs to.
    pub workspace: String,
    /// Unique within the workspace.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Member agents by name → when added, ms since the epoch.
    pub agents: BTreeMap<String, u64>,
    /// Member users by id → when added, ms since the epoch.
    pub users: BTreeMap<String, u64>,
    /// Granted skills by skill number (`skill_<n>`) → when granted, ms since the epoch.
    pub skills: BTreeMap<u64, u64>,
    /// ms since the epoch.
    pub created_at: u64,
}

impl Team {
    /// Agents and users together.
    pub fn member_count(&self) -> usize {
        self.agents.len() + self.users.len()
    }

    /// The members of one kind.
    pub fn members(&self, kind: MemberKind) -> &BTreeMap<String, u64> {
        match kind {
            MemberKind::Agent => &self.agents,
            MemberKind::User => &self.users,
        }
    }

    fn members_mut(&mut self, kind: MemberKind) -> &mut BTreeMap<String, u64> {
        match kind {
            MemberKind::Agent => &mut self.agents,
            MemberKind::User => &mut self.users,
        }
    }
}

/// A capability of a workspace, granted to teams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skill {
    /// `skill_<n>`.
    pub id: String,
    /// The workspace it belongs to.
    pub workspace: String,
    /// Unique within the workspace; how agents name it when they invoke it.
    pub name: String,
    /// Free text.
    pub description: String,
    /// A JSON object, as text.
    pub metadata: String,
    /// ms since the epoch.
    pub created_at: u64,
}

/// What kind of member a team member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum MemberKind {
    /// An agent, by name.
    Agent,
    /// A user, by id.
    User,
}

impl MemberKind {
    /// `agent` or `user`.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberKind::Agent => "agent",
            MemberKind::User => "user",
        }
    }
}

/// Every team and skill of every workspace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Teams {
    /// Teams by number (`team_<n>`).
    pub teams: BTreeMap<u64, Team>,
    /// Skills by number (`skill_<n>`).
    pub skills: BTreeMap<u64, Skill>,
    /// The number the last created team got.
    pub last_team: u64,
    /// The number the last created skill got.
    pub last_skill: u64,
}

/// A change to teams or skills; every variant names the caller's workspace and is refused as
/// not found when an id it names belongs to another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum TeamsCommand {
    /// Creates a team; its id is assigned in apply.
    CreateTeam {
        workspace: String,
        name: String,
        description: String,
    },
    /// Deletes a team with its memberships and grants.
    DeleteTeam { workspace: String, id: String },
    /// Adds a member (idempotent: an existing member keeps its `added_at`).
    AddMember {
        workspace: String,
        team: String,
        kind: MemberKind,
        member: String,
    },
    /// Removes a member; refused as not found if it is not one.
    RemoveMember {
        workspace: String,
        team: String,
        kind: MemberKind,
        member: String,
    },
    /// Registers a skill; its id is assigned in apply.
    CreateSkill {
        workspace: String,
        name: String,
        description: String,
        metadata: String,
    },
    /// Deletes a skill and every grant of it.
    DeleteSkill { workspace: String, id: String },
    /// Grants a skill to a team (idempotent: an existing grant keeps its `granted_at`).
    GrantSkill {
        workspace: String,
        skill: String,
        team: String,
    },
    /// Revokes a skill from a team; refused as not found if it was not granted.
    RevokeSkill {
        workspace: String,
        skill: String,
        team: String,
    },
    /// Removes a deleted agent from every team of its workspace, so an agent registered later
    /// under the same name inherits none of its memberships (and none of its skills).
    ForgetAgent { workspace: String, agent: String },
}

/// The result of a [`TeamsCommand`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TeamsReply {
    /// The team just created.
    Team(Team),
    /// The skill just registered.
    Skill(Skill),
    /// A membership; `created` is false when it existed already.
    Member { added_at: u64, created: bool },
    /// A grant; `created` is false when it existed already.
    Grant { granted_at: u64, created: bool },
    /// The team, skill, membership or grant is gone.
    Removed,
}

/// The number in `team_<n>`.
pub fn team_number(id: &str) -> Option<u64> {
    number(id, "team_")
}

/// The number in `skill_<n>`.
pub fn skill_number(id: &str) -> Option<u64> {
    number(id, "skill_")
}

fn number(id: &str, prefix: &str) -> Option<u64> {
    let digits = id.strip_prefix(prefix)?;
    // Only the canonical spelling (no sign, no leading zero, at most 19 digits so it always
    // fits a u64) names an entity.
    if digits.is_empty()
        || digits.len() > 19
        || digits.starts_with('0')
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    digits.parse().ok()
}

impl Teams {
    /// The workspace's team `id`, if it exists there.
    pub fn team(&self, workspace: &str, id: &str) -> Option<&Team> {
        let t = self.teams.get(&team_number(id)?)?;
        (t.workspace == workspace).then_some(t)
    }

    /// The workspace's skill `id`, if it exists there.
    pub fn skill(&self, workspace: &str, id: &str) -> Option<&Skill> {
        let s = self.skills.get(&skill_number(id)?)?;
        (s.workspace == workspace).then_some(s)
    }

    /// The workspace's skill named `name`.
    pub fn skill_by_name(&self, workspace: &str, name: &str) -> Option<&Skill> {
        self.skills
            .values()
            .find(|s| s.workspace == workspace && s.name == name)
    }

    /// The workspace's teams, in id order.
    pub fn teams_of<'a>(&'a self, workspace: &'a str) -> impl Iterator<Item = &'a Team> + 'a {
        self.teams
            .values()
            .filter(move |t| t.workspace == workspace)
    }

    /// The workspace's skills, in id order.
    pub fn skills_of<'a>(&'a self, workspace: &'a str) -> impl Iterator<Item = &'a Skill> + 'a {
        self.skills
            .values()
            .filter(move |s| s.workspace == workspace)
    }

    fn team_mut(&mut self, workspace: &str, id: &str) -> Result<&mut Team, CoreError> {
        match team_number(id).and_then(|n| self.teams.get_mut(&n)) {
            Some(t) if t.workspace == workspace => Ok(t),
            _ => Err(CoreError::not_found(format!("team {id:?} not found"))),
        }
    }

    fn skill_number_in(&self, workspace: &str, id: &str) -> Result<u64, CoreError> {
        match skill_number(id) {
            Some(n)
                if self
                    .skills
                    .get(&n)
                    .is_some_and(|s| s.workspace == workspace) =>
            {
                Ok(n)
            }
            _ => Err(CoreError::not_found(format!("skill {id:?} not found"))),
        }
    }

    fn apply(
        &mut self,
        cmd: &TeamsCommand,
        workspace_exists: bool,
        at_ms: u64,
    ) -> Result<TeamsReply, CoreError> {
        match cmd {
            TeamsCommand::CreateTeam {
                workspace,
                name,
                description,
            } => {
                if !workspace_exists {
                    return Err(CoreError::not_found(format!(
                        "workspace {workspace:?} not found"
                    )));
                }
                if self.teams_of(workspace).any(|t| &t.name == name) {
                    return Err(CoreError::conflict(format!(
                        "a team named {name:?} already exists"
                    )));
                }
                if self.teams_of(workspace).count() >= MAX_TEAMS_PER_WORKSPACE {
                    return Err(CoreError::conflict(format!(
                        "a workspace holds at most {MAX_TEAMS_PER_WORKSPACE} teams"
                    )));
                }
                self.last_team += 1;
                let team = Team {
                    id: format!("team_{}", self.last_team),
                    workspace: workspace.clone(),
                    name: name.clone(),
                    description: description.clone(),
                    agents: BTreeMap::new(),
                    users: BTreeMap::new(),
                    skills: BTreeMap::new(),
                    created_at: at_ms,
                };
                self.teams.insert(self.last_team, team.clone());
                Ok(TeamsReply::Team(team))
            }
            TeamsCommand::DeleteTeam { workspace, id } => {
                self.team_mut(workspace, id)?;
                let n = team_number(id).expect("checked by team_mut");
                self.teams.remove(&n);
                Ok(TeamsReply::Removed)
            }
            TeamsCommand::AddMember {
                workspace,
                team,
                kind,
                member,
            } => {
                let memberships: usize = self.teams_of(workspace).map(Team::member_count).sum();
                let t = self.team_mut(workspace, team)?;
                if let Some(&added_at) = t.members(*kind).get(member) {
                    return Ok(TeamsReply::Member {
                        added_at,
                        created: false,
                    });
                }
                if t.member_count() >= MAX_MEMBERS_PER_TEAM {
                    return Err(CoreError::conflict(format!(
                        "a team holds at most {MAX_MEMBERS_PER_TEAM} members"
                    )));
                }
                if memberships >= MAX_MEMBERSHIPS_PER_WORKSPACE {
                    return Err(CoreError::conflict(format!(
                        "a workspace holds at most {MAX_MEMBERSHIPS_PER_WORKSPACE} team memberships"
                    )));
                }
                t.members_mut(*kind).insert(member.clone(), at_ms);
                Ok(TeamsReply::Member {
                    added_at: at_ms,
                    created: true,
                })
            }
            TeamsCommand::RemoveMember {
                workspace,
                team,
                kind,
                member,
            } => {
                let t = self.team_mut(workspace, team)?;
                match t.members_mut(*kind).remove(member) {
                    Some(_) => Ok(TeamsReply::Removed),
                    None => Err(CoreError::not_found(format!(
                        "{} {member:?} is not a member of team {team:?}",
                        kind.as_str()
                    ))),
                }
            }
            TeamsCommand::CreateSkill {
                workspace,
                name,
                description,
                metadata,
            } => {
                if !workspace_exists {
                    return Err(CoreError::not_found(format!(
                        "workspace {workspace:?} not found"
                    )));
                }
                if self.skill_by_name(workspace, name).is_some() {
                    return Err(CoreError::conflict(format!(
                        "a skill named {name:?} already exists"
                    )));
                }
                if self.skills_of(workspace).count() >= MAX_SKILLS_PER_WORKSPACE {
                    return Err(CoreError::conflict(format!(
                        "a workspace holds at most {MAX_SKILLS_PER_WORKSPACE} skills"
                    )));
                }
                self.last_skill += 1;
                let skill = Skill {
                    id: format!("skill_{}", self.last_skill),
                    workspace: workspace.clone(),
                    name: name.clone(),
                    description: description.clone(),
                    metadata: metadata.clone(),
                    created_at: at_ms,
                };
                self.skills.insert(self.last_skill, skill.clone());
                Ok(TeamsReply::Skill(skill))
            }
            TeamsCommand::DeleteSkill { workspace, id } => {
                let n = self.skill_number_in(workspace, id)?;
                self.skills.remove(&n);
                for t in self.teams.values_mut() {
                    t.skills.remove(&n);
                }
                Ok(TeamsReply::Removed)
            }
            TeamsCommand::GrantSkill {
                workspace,
                skill,
                team,
            } => {
                let n = self.skill_number_in(workspace, skill)?;
                let grants: usize = self.teams_of(workspace).map(|t| t.skills.len()).sum();
                let t = self.team_mut(workspace, team)?;
                if let Some(&granted_at) = t.skills.get(&n) {
                    return Ok(TeamsReply::Grant {
                        granted_at,
                        created: false,
                    });
                }
                if grants >= MAX_GRANTS_PER_WORKSPACE {
                    return Err(CoreError::conflict(format!(
                        "a workspace holds at most {MAX_GRANTS_PER_WORKSPACE} skill grants"
                    )));
                }
                t.skills.insert(n, at_ms);
                Ok(TeamsReply::Grant {
                    granted_at: at_ms,
                    created: true,
                })
            }
            TeamsCommand::RevokeSkill {
                workspace,
                skill,
                team,
            } => {
                let n = self.skill_number_in(workspace, skill)?;
                let t = self.team_mut(workspace, team)?;
                match t.skills.remove(&n) {
                    Some(_) => Ok(TeamsReply::Removed),
                    None => Err(CoreError::not_found(format!(
                        "skill {skill:?} is not granted to team {team:?}"
                    ))),
                }
            }
            TeamsCommand::ForgetAgent { workspace, agent } => {
                for t in self
                    .teams
                    .values_mut()
                    .filter(|t| &t.workspace == workspace)
                {
                    t.members_mut(MemberKind::Agent).remove(agent);
                }
                Ok(TeamsReply::Removed)
            }
        }
    }
}

/// Applies `cmd` to the meta state at leader time `at_ms`.
pub(super) fn apply(state: &mut MetaState, cmd: &TeamsCommand, at_ms: u64) -> MetaResponse {
    let workspace = match cmd {
        TeamsCommand::CreateTeam { workspace, .. }
        | TeamsCommand::CreateSkill { workspace, .. } => workspace,
        _ => "",
    };
    let exists = state.workspaces.contains_key(workspace);
    match state.teams.apply(cmd, exists, at_ms) {
        Ok(reply) => MetaResponse::Teams(reply),
        Err(e) => MetaResponse::Refused(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::meta::{MetaCommand, Workspace};

    #[test]
    fn a_forgotten_agent_leaves_every_team_of_its_workspace_only() {
        let mut m = state();
        let mut team = |ws: &str, name: &str| match run(
            &mut m,
            TeamsCommand::CreateTeam {
                workspace: ws.into(),
                name: name.into(),
                description: String::new(),
            },
        ) {
            Ok(TeamsReply::Team(t)) => t.id,
            other => panic!("create team: {other:?}"),
        };
        let (t1, t2, t3) = (team("a", "one"), team("a", "two"), team("b", "three"));
        for (ws, t) in [("a", &t1), ("a", &t2), ("b", &t3)] {
            let add = TeamsCommand::AddMember {
                workspace: ws.into(),
                team: t.clone(),
                kind: MemberKind::Agent,
                member: "scout".into(),
            };
            run(&mut m, add).expect("add member");
        }
        let forget = TeamsCommand::ForgetAgent {
            workspace: "a".into(),
            agent: "scout".into(),
        };
        run(&mut m, forget).expect("forget");
        let member = |m: &MetaState, ws: &str, t: &str| {
            m.teams
                .team(ws, t)
                .expect("team")
                .agents
                .contains_key("scout")
        };
        assert!(!member(&m, "a", &t1) && !member(&m, "a", &t2));
        assert!(
            member(&m, "b", &t3),
            "another workspace's team is untouched"
        );
    }

    /// A meta state with workspaces `a` and `b`.
    fn state() -> MetaState {
        let mut m = MetaState::default();
        for ws in ["a", "b"] {
            m.workspaces.insert(
                ws.into(),
                Workspace {
                    id: ws.into(),
                    name: ws.into(),
                    created_at: 0,
                    tenant: "default".into(),
                    settings: Default::default(),
                },
            );
        }
        m
    }

    fn run(m: &mut MetaState, cmd: TeamsCommand) -> Result<TeamsReply, CoreError> {
        match m.apply(&MetaCommand::Teams(cmd), 7) {
            MetaResponse::Teams(r) => Ok(r),
            MetaResponse::Refused(e) => Err(e),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn create_team(m: &mut MetaState, ws: &str, name: &str) -> String {
        match run(
            m,
            TeamsCommand::CreateTeam {
                workspace: ws.into(),
                name: name.into(),
                description: String::new(),
            },
        ) {
            Ok(TeamsReply::Team(t)) => t.id,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn create_skill(m: &mut MetaState, ws: &str, name: &str) -> String {
        match run(
            m,
            TeamsCommand::CreateSkill {
                workspace: ws.into(),
                name: name.into(),
                description: String::new(),
                metadata: "{}".into(),
            },
        ) {
            Ok(TeamsReply::Skill(s)) => s.id,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn add_agent(ws: &str, team: &str, agent: &str) -> TeamsCommand {
        TeamsCommand::AddMember {
            workspace: ws.into(),
            team: team.into(),
            kind: MemberKind::Agent,
            member: agent.into(),
        }
    }

    fn grant(ws: &str, skill: &str, team: &str) -> TeamsCommand {
        TeamsCommand::GrantSkill {
            workspace: ws.into(),
            skill: skill.into(),
            team: team.into(),
        }
    }

    fn code(r: Result<TeamsReply, CoreError>) -> ErrorCode {
        r.expect_err("refused").code
    }

    #[test]
    fn ids_come_from_counters_and_names_are_unique_per_workspace() {
        let mut m = state();
        assert_eq!(create_team(&mut m, "a", "ops"), "team_1");
        assert_eq!(create_team(&mut m, "b", "ops"), "team_2");
        let dup = TeamsCommand::CreateTeam {
            workspace: "a".into(),
            name: "ops".into(),
            description: String::new(),
        };
        assert_eq!(code(run(&mut m, dup)), ErrorCode::Conflict);
        assert_eq!(create_skill(&mut m, "a", "deploy"), "skill_1");
        assert_eq!(create_skill(&mut m, "b", "deploy"), "skill_2");
        // A deleted id is never handed out again.
        let del = TeamsCommand::DeleteTeam {
            workspace: "a".into(),
            id: "team_1".into(),
        };
        assert_eq!(run(&mut m, del), Ok(TeamsReply::Removed));
        assert_eq!(create_team(&mut m, "a", "ops"), "team_3");
        let missing = TeamsCommand::CreateTeam {
            workspace: "nope".into(),
            name: "x".into(),
            description: String::new(),
        };
        assert_eq!(code(run(&mut m, missing)), ErrorCode::NotFound);
    }

    #[test]
    fn deleting_a_team_drops_its_memberships_and_grants() {
        let mut m = state();
        let team = create_team(&mut m, "a", "ops");
        let skill = create_skill(&mut m, "a", "deploy");
        run(&mut m, add_agent("a", &team, "bot")).unwrap();
        run(&mut m, grant("a", &skill, &team)).unwrap();
        assert_eq!(m.teams.teams[&1].skills.len(), 1);
        let del = TeamsCommand::DeleteTeam {
            workspace: "a".into(),
            id: team.clone(),
        };
        run(&mut m, del.clone()).unwrap();
        assert!(m.teams.teams.is_empty());
        assert_eq!(code(run(&mut m, del)), ErrorCode::NotFound);
        // The skill survives, granted to nobody.
        assert!(m.teams.skill("a", &skill).is_some());
        assert_eq!(
            code(run(&mut m, add_agent("a", &team, "bot"))),
            ErrorCode::NotFound
        );
    }

    #[test]
    fn deleting_a_skill_revokes_it_everywhere() {
        let mut m = state();
        let t1 = create_team(&mut m, "a", "one");
        let t2 = create_team(&mut m, "a", "two");
        let skill = create_skill(&mut m, "a", "deploy");
        let other = create_skill(&mut m, "a", "review");
        for t in [&t1, &t2] {
            run(&mut m, grant("a", &skill, t)).unwrap();
            run(&mut m, grant("a", &other, t)).unwrap();
        }
        let del = TeamsCommand::DeleteSkill {
            workspace: "a".into(),
            id: skill.clone(),
        };
        run(&mut m, del).unwrap();
        for t in m.teams.teams.values() {
            assert_eq!(t.skills.keys().copied().collect::<Vec<_>>(), vec![2]);
        }
        assert_eq!(
            code(run(&mut m, grant("a", &skill, &t1))),
            ErrorCode::NotFound
        );
    }

    #[test]
    fn grants_and_memberships_are_idempotent_and_removals_need_presence() {
        let mut m = state();
        let team = create_team(&mut m, "a", "ops");
        let skill = create_skill(&mut m, "a", "deploy");
        assert_eq!(
            m.apply(&MetaCommand::Teams(grant("a", &skill, &team)), 10),
            MetaResponse::Teams(TeamsReply::Grant {
                granted_at: 10,
                created: true
            })
        );
        assert_eq!(
            m.apply(&MetaCommand::Teams(grant("a", &skill, &team)), 20),
            MetaResponse::Teams(TeamsReply::Grant {
                granted_at: 10,
                created: false
            })
        );
        let revoke = TeamsCommand::RevokeSkill {
            workspace: "a".into(),
            skill: skill.clone(),
            team: team.clone(),
        };
        assert_eq!(run(&mut m, revoke.clone()), Ok(TeamsReply::Removed));
        assert_eq!(code(run(&mut m, revoke)), ErrorCode::NotFound);

        assert_eq!(
            m.apply(&MetaCommand::Teams(add_agent("a", &team, "bot")), 30),
            MetaResponse::Teams(TeamsReply::Member {
                added_at: 30,
                created: true
            })
        );
        assert_eq!(
            m.apply(&MetaCommand::Teams(add_agent("a", &team, "bot")), 40),
            MetaResponse::Teams(TeamsReply::Member {
                added_at: 30,
                created: false
            })
        );
        // An agent and a user may share a name: they are different members.
        let user = TeamsCommand::AddMember {
            workspace: "a".into(),
            team: team.clone(),
            kind: MemberKind::User,
            member: "bot".into(),
        };
        assert!(matches!(
            run(&mut m, user),
            Ok(TeamsReply::Member { created: true, .. })
        ));
        let remove = |kind| TeamsCommand::RemoveMember {
            workspace: "a".into(),
            team: team.clone(),
            kind,
            member: "bot".into(),
        };
        assert_eq!(
            run(&mut m, remove(MemberKind::Agent)),
            Ok(TeamsReply::Removed)
        );
        assert_eq!(
            code(run(&mut m, remove(MemberKind::Agent))),
            ErrorCode::NotFound
        );
        assert_eq!(m.teams.teams[&1].users.len(), 1);
        assert_eq!(
            run(&mut m, remove(MemberKind::User)),
            Ok(TeamsReply::Removed)
        );
    }

    #[test]
    fn another_workspaces_ids_are_not_found_and_change_nothing() {
        let mut m = state();
        let team = create_team(&mut m, "a", "ops");
        let skill = create_skill(&mut m, "a", "deploy");
        run(&mut m, grant("a", &skill, &team)).unwrap();
        run(&mut m, add_agent("a", &team, "bot")).unwrap();
        let their_team = create_team(&mut m, "b", "theirs");
        let before = m.clone();
        let cmds = [
            TeamsCommand::DeleteTeam {
                workspace: "b".into(),
                id: team.clone(),
            },
            add_agent("b", &team, "intruder"),
            TeamsCommand::RemoveMember {
                workspace: "b".into(),
                team: team.clone(),
                kind: MemberKind::Agent,
                member: "bot".into(),
            },
            TeamsCommand::DeleteSkill {
                workspace: "b".into(),
                id: skill.clone(),
            },
            // Their own team with our skill, and our team with... their view of our skill.
            grant("b", &skill, &their_team),
            grant("a", &skill, &their_team),
            TeamsCommand::RevokeSkill {
                workspace: "b".into(),
                skill: skill.clone(),
                team: team.clone(),
            },
        ];
        for cmd in cmds {
            assert_eq!(
                code(run(&mut m, cmd.clone())),
                ErrorCode::NotFound,
                "{cmd:?}"
            );
        }
        assert_eq!(m, before);
        assert!(m.teams.team("b", &team).is_none());
        assert!(m.teams.skill("b", &skill).is_none());
        assert!(m.teams.team("a", &team).is_some());
    }

    #[test]
    fn caps_refuse_with_a_conflict_and_change_nothing() {
        let mut m = state();
        for i in 0..MAX_TEAMS_PER_WORKSPACE {
            create_team(&mut m, "a", &format!("t{i}"));
        }
        let over = TeamsCommand::CreateTeam {
            workspace: "a".into(),
            name: "one-more".into(),
            description: String::new(),
        };
        let before = m.clone();
        assert_eq!(code(run(&mut m, over)), ErrorCode::Conflict);
        assert_eq!(m, before);
        // Another workspace has its own allowance.
        create_team(&mut m, "b", "t0");

        for i in 0..MAX_SKILLS_PER_WORKSPACE {
            create_skill(&mut m, "b", &format!("s{i}"));
        }
        let over = TeamsCommand::CreateSkill {
            workspace: "b".into(),
            name: "one-more".into(),
            description: String::new(),
            metadata: "{}".into(),
        };
        assert_eq!(code(run(&mut m, over)), ErrorCode::Conflict);

        let team = "team_1";
        for i in 0..MAX_MEMBERS_PER_TEAM {
            run(&mut m, add_agent("a", team, &format!("a{i}"))).unwrap();
        }
        let before = m.clone();
        assert_eq!(
            code(run(&mut m, add_agent("a", team, "late"))),
            ErrorCode::Conflict
        );
        // Re-adding an existing member is still fine at the cap.
        assert!(run(&mut m, add_agent("a", team, "a0")).is_ok());
        assert_eq!(m, before);
    }

    #[test]
    fn workspace_wide_caps_count_every_team() {
        let mut m = state();
        let teams_needed = MAX_MEMBERSHIPS_PER_WORKSPACE / MAX_MEMBERS_PER_TEAM;
        let teams: Vec<String> = (0..=teams_needed)
            .map(|i| create_team(&mut m, "a", &format!("t{i}")))
            .collect();
        for team in &teams[..teams_needed] {
            for i in 0..MAX_MEMBERS_PER_TEAM {
                run(&mut m, add_agent("a", team, &format!("a{i}"))).unwrap();
            }
        }
        // The last team is empty, but the workspace is full.
        let spare = &teams[teams_needed];
        assert_eq!(
            code(run(&mut m, add_agent("a", spare, "x"))),
            ErrorCode::Conflict
        );
        let other = create_team(&mut m, "b", "t");
        assert!(run(&mut m, add_agent("b", &other, "x")).is_ok());

        let skills_needed = MAX_GRANTS_PER_WORKSPACE.div_ceil(teams.len());
        let skills: Vec<String> = (0..skills_needed)
            .map(|i| create_skill(&mut m, "a", &format!("s{i}")))
            .collect();
        let mut granted = 0;
        'fill: for skill in &skills {
            for team in &teams {
                if granted == MAX_GRANTS_PER_WORKSPACE {
                    break 'fill;
                }
                run(&mut m, grant("a", skill, team)).unwrap();
                granted += 1;
            }
        }
        let ungranted = m
            .teams
            .teams_of("a")
            .find(|t| t.skills.len() < skills.len())
            .map(|t| t.id.clone())
            .expect("a team lacks a skill");
        let skill = skills.last().unwrap();
        assert_eq!(
            code(run(&mut m, grant("a", skill, &ungranted))),
            ErrorCode::Conflict
        );
    }

    #[test]
    fn ids_parse_only_in_their_canonical_form() {
        assert_eq!(team_number("team_12"), Some(12));
        assert_eq!(skill_number("skill_3"), Some(3));
        assert_eq!(
            team_number("team_9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        for bad in [
            "team_",
            "team_01",
            "team_+1",
            "team_1x",
            "skill_1",
            "team_0",
            "team_10000000000000000000",
        ] {
            assert_eq!(team_number(bad), None, "{bad}");
        }
    }
}
