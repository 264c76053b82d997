//! Tenancy in the meta group: workspaces and their settings, users and their workspace
//! memberships, API keys beyond creation (revoke, rotate), and invitations.
//!
//! Every command names the caller's workspace (`ws`) and refuses a target of another
//! workspace as not found, so ids never leak across workspaces. Secrets and invitation tokens
//! are generated at the edge: only their SHA-256 hashes enter the log. Apply reads only the
//! command, the state and the leader's `at_ms`, so expiry and "accepted once" are decided
//! identically on every replica.
//!
//! Invariants kept here:
//! - `Tenancy::key_index` maps the hash of every live (unrevoked) key to its id, and nothing
//!   else: a revoke or a rotate changes the key and the index in the same apply, so an old
//!   secret stops authenticating on a node the moment that node applies the change.
//! - every workspace keeps at least one live admin key (revoke and user deletion refuse
//!   otherwise), so no workspace can be locked out by its own admins.
//! - an invitation is accepted at most once: acceptance is one apply that checks and sets
//!   `accepted_at` and creates the user, the membership and the key together.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ApiKeyRecord, MetaState, Scope, Workspace};
use crate::error::CoreError;
use crate::shard::TaskMode;

/// Tenant of the bootstrap workspace and of everything created from it.
pub const DEFAULT_TENANT: &str = "default";
/// Id of the user created at bootstrap, owning the bootstrap admin key.
pub const BOOTSTRAP_USER: &str = "usr_1";
/// Live API keys one workspace may hold.
pub const MAX_KEYS_PER_WORKSPACE: usize = 1000;
/// Pending invitations one workspace may hold.
pub const MAX_PENDING_INVITATIONS: usize = 1000;
/// Workspaces one tenant may hold.
pub const MAX_WORKSPACES_PER_TENANT: usize = 1000;
/// Users one tenant may hold.
pub const MAX_USERS_PER_TENANT: usize = 10_000;
/// Bounds of `presence_timeout_secs`.
pub const PRESENCE_TIMEOUT_RANGE: (u64, u64) = (5, 3600);
/// Bounds of `default_retention_hours`.
pub const RETENTION_HOURS_RANGE: (u64, u64) = (1, 8760);

/// A workspace's settings, read by the features they govern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceSettings {
    /// How new tasks may be taken: `auto`, `approval` or `claim_only`.
    pub task_mode: TaskMode,
    /// Seconds without a heartbeat after which an agent counts as offline; `None` until set,
    /// when each node's own `presence_timeout_secs` applies.
    #[serde(with = "unset_is_zero")]
    pub presence_timeout_secs: Option<u64>,
    /// Retention of a new topic's messages when its creator gives none, hours.
    pub default_retention_hours: u64,
}

impl Default for WorkspaceSettings {
    fn default() -> Self {
        Self {
            task_mode: TaskMode::Auto,
            presence_timeout_secs: None,
            default_retention_hours: 168,
        }
    }
}

/// An optional setting stored as a plain number, 0 meaning "not set" (never a valid value):
/// the stored form of a setting that had no "not set" before, so records written then read
/// unchanged.
mod unset_is_zero {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(v.unwrap_or(0))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Ok(Some(u64::deserialize(d)?).filter(|&v| v != 0))
    }
}

/// A change to a workspace's name and settings; absent fields are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsPatch {
    /// New name.
    pub name: Option<String>,
    /// New task mode.
    pub task_mode: Option<TaskMode>,
    /// New presence timeout, seconds.
    pub presence_timeout_secs: Option<u64>,
    /// New default retention, hours.
    pub default_retention_hours: Option<u64>,
}

impl SettingsPatch {
    /// Refuses values out of range, naming the field (the API checks the same first).
    pub fn check(&self) -> Result<(), CoreError> {
        let in_range = |field: &str, v: Option<u64>, (lo, hi): (u64, u64)| match v {
            Some(v) if v < lo || v > hi => Err(CoreError::bad_request(format!(
                "{field} must be between {lo} and {hi}"
            ))),
            _ => Ok(()),
        };
        in_range(
            "presence_timeout_secs",
            self.presence_timeout_secs,
            PRESENCE_TIMEOUT_RANGE,
        )?;
        in_range(
            "default_retention_hours",
            self.default_retention_hours,
            RETENTION_HOURS_RANGE,
        )?;
        if let Some(name) = &self.name {
            if name.is_empty() || name.len() > 128 {
                return Err(CoreError::bad_request("name must be 1 to 128 bytes"));
            }
        }
        Ok(())
    }

    fn apply_to(&self, ws: &mut Workspace) {
        if let Some(v) = &self.name {
            ws.name = v.clone();
        }
        if let Some(v) = self.task_mode {
            ws.settings.task_mode = v;
        }
        if let Some(v) = self.presence_timeout_secs {
            ws.settings.presence_timeout_secs = Some(v);
        }
        if let Some(v) = self.default_retention_hours {
            ws.settings.default_retention_hours = v;
        }
    }
}

/// A person (or service account) of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// `usr_<n>`.
    pub id: String,
    /// The tenant it belongs to.
    pub tenant: String,
    /// Display name.
    pub name: String,
    /// Contact address, if given.
    pub email: Option<String>,
    /// Workspaces it is a member of, with the scope it was given there.
    pub workspaces: BTreeMap<String, Scope>,
    /// ms since the epoch.
    pub created_at: u64,
}

/// An invitation to join a workspace; found by the hash of its token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    /// `inv_<n>`.
    pub id: String,
    /// The workspace it admits to.
    pub workspace: String,
    /// Hex SHA-256 of the token.
    pub token_hash: String,
    /// Who it is meant for, if said.
    pub email: Option<String>,
    /// Scope of the key the new member gets.
    pub scope: Scope,
    /// Key id of its creator.
    pub created_by: String,
    /// ms since the epoch.
    pub created_at: u64,
    /// Acceptance is refused from this time on, ms since the epoch.
    pub expires_at: u64,
    /// When it was accepted.
    pub accepted_at: Option<u64>,
    /// The user its acceptance created.
    pub accepted_by: Option<String>,
    /// When it was revoked.
    pub revoked_at: Option<u64>,
}

/// Where an invitation stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvitationStatus {
    /// Can be accepted.
    Pending,
    /// Accepted (once).
    Accepted,
    /// Past its expiry without being accepted.
    Expired,
    /// Revoked by an admin.
    Revoked,
}

impl Invitation {
    /// Its status at `now_ms`.
    pub fn status(&self, now_ms: u64) -> InvitationStatus {
        if self.accepted_at.is_some() {
            InvitationStatus::Accepted
        } else if self.revoked_at.is_some() {
            InvitationStatus::Revoked
        } else if now_ms >= self.expires_at {
            InvitationStatus::Expired
        } else {
            InvitationStatus::Pending
        }
    }
}

/// The tenancy part of [`MetaState`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenancy {
    /// Users by id.
    pub users: BTreeMap<String, User>,
    /// Invitations by id.
    pub invitations: BTreeMap<String, Invitation>,
    /// Hash of every live key's secret → key id (see the module's invariants).
    pub key_index: BTreeMap<String, String>,
    /// Hash of every invitation's token → invitation id.
    pub invitation_index: BTreeMap<String, String>,
    /// The number in the next workspace id.
    pub next_workspace_seq: u64,
    /// The number in the next user id.
    pub next_user_seq: u64,
    /// The number in the next invitation id.
    pub next_invitation_seq: u64,
}

/// A tenancy change, carried by [`super::MetaCommand::Tenancy`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum TenancyCommand {
    /// Creates a workspace in the tenant of `from_ws`, with an admin key bound to `user`.
    CreateWorkspace {
        from_ws: String,
        name: String,
        settings: SettingsPatch,
        admin_key_hash: String,
        admin_key_prefix: String,
        user: Option<String>,
    },
    /// Changes a workspace's name and settings.
    UpdateWorkspace { ws: String, patch: SettingsPatch },
    /// Creates a key in `ws`, bound to `user` if given.
    CreateKey {
        ws: String,
        name: String,
        scope: Scope,
        hash: String,
        prefix: String,
        user: Option<String>,
    },
    /// Revokes a key (idempotent); refused for the workspace's last live admin key.
    RevokeKey { ws: String, id: String },
    /// Replaces a live key's secret hash: the old secret dies in the same apply.
    RotateKey {
        ws: String,
        id: String,
        hash: String,
        prefix: String,
    },
    /// Creates an invitation to `ws`.
    CreateInvitation {
        ws: String,
        token_hash: String,
        email: Option<String>,
        scope: Scope,
        expires_at: u64,
        by: String,
    },
    /// Revokes a pending invitation (idempotent); refused once accepted.
    RevokeInvitation { ws: String, id: String },
    /// Accepts an invitation: creates a user, its membership and a key, once, before expiry.
    AcceptInvitation {
        token_hash: String,
        name: String,
        email: Option<String>,
        key_hash: String,
        key_prefix: String,
    },
    /// Deletes a user: revokes all its keys and drops its memberships.
    DeleteUser { ws: String, user: String },
}

/// The result of a [`TenancyCommand`], carried by [`super::MetaResponse::Tenancy`] (boxed
/// there; one lives per request, so the variants' size difference costs nothing).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TenancyResponse {
    /// The workspace as now stored, with the admin key created with it.
    Workspace {
        workspace: Workspace,
        admin_key: Option<ApiKeyRecord>,
    },
    /// The key as now stored.
    Key(ApiKeyRecord),
    /// The invitation as now stored.
    Invitation(Invitation),
    /// An accepted invitation's new user and key.
    Accepted {
        user: User,
        key: ApiKeyRecord,
        invitation: Invitation,
    },
    /// A deleted user and the keys its deletion revoked.
    UserDeleted { id: String, revoked: Vec<String> },
}

type Outcome = Result<TenancyResponse, CoreError>;

fn not_found(what: &str, id: &str) -> CoreError {
    CoreError::not_found(format!("{what} {id:?} not found"))
}

impl MetaState {
    /// Applies a tenancy command at leader time `at_ms`.
    pub(super) fn apply_tenancy(&mut self, cmd: &TenancyCommand, at_ms: u64) -> Outcome {
        match cmd {
            TenancyCommand::CreateWorkspace {
                from_ws,
                name,
                settings,
                admin_key_hash,
                admin_key_prefix,
                user,
            } => self.create_workspace(
                from_ws,
                name,
                settings,
                (admin_key_hash, admin_key_prefix),
                user.as_deref(),
                at_ms,
            ),
            TenancyCommand::UpdateWorkspace { ws, patch } => {
                patch.check()?;
                let workspace = self
                    .workspaces
                    .get_mut(ws)
                    .ok_or_else(|| not_found("workspace", ws))?;
                patch.apply_to(workspace);
                Ok(TenancyResponse::Workspace {
                    workspace: workspace.clone(),
                    admin_key: None,
                })
            }
            TenancyCommand::CreateKey {
                ws,
                name,
                scope,
                hash,
                prefix,
                user,
            } => {
                if !self.workspaces.contains_key(ws) {
                    return Err(not_found("workspace", ws));
                }
                self.check_key_room(ws, hash)?;
                if let Some(u) = user {
                    if !self.tenancy.users.contains_key(u) {
                        return Err(not_found("user", u));
                    }
                }
                let id = self.insert_key(name, ws, *scope, hash, at_ms);
                let key = self.api_keys.get_mut(&id).expect("just inserted");
                key.prefix = prefix.clone();
                key.user = user.clone();
                Ok(TenancyResponse::Key(key.clone()))
            }
            TenancyCommand::RevokeKey { ws, id } => {
                let key = self.key_in(ws, id)?;
                if key.revoked_at.is_some() {
                    return Ok(TenancyResponse::Key(key.clone()));
                }
                if key.scope == Scope::Admin && self.live_admin_keys(ws, &[id]) == 0 {
                    return Err(CoreError::conflict(format!(
                        "key {id:?} is the last live admin key of workspace {ws:?}"
                    )));
                }
                Ok(TenancyResponse::Key(self.revoke_key(id, at_ms)))
            }
            TenancyCommand::RotateKey {
                ws,
                id,
                hash,
                prefix,
            } => {
                let key = self.key_in(ws, id)?;
                if key.revoked_at.is_some() {
                    return Err(CoreError::conflict(format!("key {id:?} is revoked")));
                }
                if self.tenancy.key_index.contains_key(hash) {
                    return Err(CoreError::conflict("a key with this secret already exists"));
                }
                let old = key.hash.clone();
                self.tenancy.key_index.remove(&old);
                self.tenancy.key_index.insert(hash.clone(), id.clone());
                let key = self.api_keys.get_mut(id).expect("checked above");
                key.hash = hash.clone();
                key.prefix = prefix.clone();
                key.rotated_at = Some(at_ms);
                Ok(TenancyResponse::Key(key.clone()))
            }
            TenancyCommand::CreateInvitation {
                ws,
                token_hash,
                email,
                scope,
                expires_at,
                by,
            } => {
                if !self.workspaces.contains_key(ws) {
                    return Err(not_found("workspace", ws));
                }
                if *expires_at <= at_ms {
                    return Err(CoreError::bad_request("expires_at must be in the future"));
                }
                if self.tenancy.invitation_index.contains_key(token_hash) {
                    return Err(CoreError::conflict(
                        "an invitation with this token already exists",
                    ));
                }
                let pending = self
                    .tenancy
                    .invitations
                    .values()
                    .filter(|i| &i.workspace == ws && i.status(at_ms) == InvitationStatus::Pending)
                    .count();
                if pending >= MAX_PENDING_INVITATIONS {
                    return Err(CoreError::conflict(format!(
                        "workspace {ws:?} already has {MAX_PENDING_INVITATIONS} pending invitations"
                    )));
                }
                self.tenancy.next_invitation_seq += 1;
                let id = format!("inv_{}", self.tenancy.next_invitation_seq);
                let inv = Invitation {
                    id: id.clone(),
                    workspace: ws.clone(),
                    token_hash: token_hash.clone(),
                    email: email.clone(),
                    scope: *scope,
                    created_by: by.clone(),
                    created_at: at_ms,
                    expires_at: *expires_at,
                    accepted_at: None,
                    accepted_by: None,
                    revoked_at: None,
                };
                self.tenancy
                    .invitation_index
                    .insert(token_hash.clone(), id.clone());
                self.tenancy.invitations.insert(id, inv.clone());
                Ok(TenancyResponse::Invitation(inv))
            }
            TenancyCommand::RevokeInvitation { ws, id } => {
                let inv = self
                    .tenancy
                    .invitations
                    .get_mut(id)
                    .filter(|i| &i.workspace == ws)
                    .ok_or_else(|| not_found("invitation", id))?;
                if inv.accepted_at.is_some() {
                    return Err(CoreError::conflict(format!(
                        "invitation {id:?} was already accepted"
                    )));
                }
                inv.revoked_at.get_or_insert(at_ms);
                Ok(TenancyResponse::Invitation(inv.clone()))
            }
            TenancyCommand::AcceptInvitation {
                token_hash,
                name,
                email,
                key_hash,
                key_prefix,
            } => self.accept_invitation(token_hash, name, email, (key_hash, key_prefix), at_ms),
            TenancyCommand::DeleteUser { ws, user } => self.delete_user(ws, user, at_ms),
        }
    }

    fn create_workspace(
        &mut self,
        from_ws: &str,
        name: &str,
        settings: &SettingsPatch,
        (hash, prefix): (&str, &str),
        user: Option<&str>,
        at_ms: u64,
    ) -> Outcome {
        let tenant = self
            .workspaces
            .get(from_ws)
            .ok_or_else(|| not_found("workspace", from_ws))?
            .tenant
            .clone();
        settings.check()?;
        let in_tenant: Vec<&Workspace> = self
            .workspaces
            .values()
            .filter(|w| w.tenant == tenant)
            .collect();
        if in_tenant.len() >= MAX_WORKSPACES_PER_TENANT {
            return Err(CoreError::conflict(format!(
                "tenant {tenant:?} already has {MAX_WORKSPACES_PER_TENANT} workspaces"
            )));
        }
        if in_tenant.iter().any(|w| w.name == name) {
            return Err(CoreError::conflict(format!(
                "a workspace named {name:?} already exists"
            )));
        }
        if self.tenancy.key_index.contains_key(hash) {
            return Err(CoreError::conflict("a key with this secret already exists"));
        }
        if let Some(u) = user {
            if !self.tenancy.users.contains_key(u) {
                return Err(not_found("user", u));
            }
        }
        self.tenancy.next_workspace_seq += 1;
        let id = format!("ws_{}", self.tenancy.next_workspace_seq);
        let mut workspace = Workspace {
            id: id.clone(),
            name: name.to_string(),
            created_at: at_ms,
            tenant,
            settings: WorkspaceSettings::default(),
        };
        settings.apply_to(&mut workspace);
        workspace.name = name.to_string();
        self.workspaces.insert(id.clone(), workspace.clone());
        let key_id = self.insert_key("admin", &id, Scope::Admin, hash, at_ms);
        let key = self.api_keys.get_mut(&key_id).expect("just inserted");
        key.prefix = prefix.to_string();
        key.user = user.map(str::to_string);
        let key = key.clone();
        if let Some(u) = user {
            let user = self.tenancy.users.get_mut(u).expect("checked above");
            user.workspaces.insert(id, Scope::Admin);
        }
        Ok(TenancyResponse::Workspace {
            workspace,
            admin_key: Some(key),
        })
    }

    fn accept_invitation(
        &mut self,
        token_hash: &str,
        name: &str,
        email: &Option<String>,
        (key_hash, key_prefix): (&str, &str),
        at_ms: u64,
    ) -> Outcome {
        let inv = self
            .tenancy
            .invitation_index
            .get(token_hash)
            .and_then(|id| self.tenancy.invitations.get(id))
            .ok_or_else(|| CoreError::not_found("no such invitation"))?;
        match inv.status(at_ms) {
            InvitationStatus::Pending => {}
            InvitationStatus::Revoked => {
                return Err(CoreError::not_found("no such invitation"));
            }
            InvitationStatus::Accepted => {
                return Err(CoreError::conflict("the invitation was already accepted"));
            }
            InvitationStatus::Expired => {
                return Err(CoreError::conflict("the invitation has expired"));
            }
        }
        let (inv_id, ws, scope) = (inv.id.clone(), inv.workspace.clone(), inv.scope);
        let email = inv.email.clone().or_else(|| email.clone());
        let tenant = self
            .workspaces
            .get(&ws)
            .ok_or_else(|| not_found("workspace", &ws))?
            .tenant
            .clone();
        let users = self
            .tenancy
            .users
            .values()
            .filter(|u| u.tenant == tenant)
            .count();
        if users >= MAX_USERS_PER_TENANT {
            return Err(CoreError::conflict(format!(
                "tenant {tenant:?} already has {MAX_USERS_PER_TENANT} users"
            )));
        }
        self.check_key_room(&ws, key_hash)?;
        self.tenancy.next_user_seq += 1;
        let user_id = format!("usr_{}", self.tenancy.next_user_seq);
        let user = User {
            id: user_id.clone(),
            tenant,
            name: name.to_string(),
            email,
            workspaces: BTreeMap::from([(ws.clone(), scope)]),
            created_at: at_ms,
        };
        self.tenancy.users.insert(user_id.clone(), user.clone());
        let key_id = self.insert_key(&format!("invitation-{inv_id}"), &ws, scope, key_hash, at_ms);
        let key = self.api_keys.get_mut(&key_id).expect("just inserted");
        key.prefix = key_prefix.to_string();
        key.user = Some(user_id.clone());
        let key = key.clone();
        let inv = self
            .tenancy
            .invitations
            .get_mut(&inv_id)
            .expect("found above");
        inv.accepted_at = Some(at_ms);
        inv.accepted_by = Some(user_id);
        Ok(TenancyResponse::Accepted {
            user,
            key,
            invitation: inv.clone(),
        })
    }

    fn delete_user(&mut self, ws: &str, user: &str, at_ms: u64) -> Outcome {
        // A user is visible from the workspaces it belongs to (and its own keys' workspace).
        let visible = self
            .tenancy
            .users
            .get(user)
            .is_some_and(|u| u.workspaces.contains_key(ws) || self.user_has_key_in(user, ws));
        if !visible {
            return Err(not_found("user", user));
        }
        let keys: Vec<String> = self
            .api_keys
            .values()
            .filter(|k| k.user.as_deref() == Some(user) && k.revoked_at.is_none())
            .map(|k| k.id.clone())
            .collect();
        let workspaces: std::collections::BTreeSet<String> = keys
            .iter()
            .map(|id| self.api_keys[id].workspace.clone())
            .collect();
        let ids: Vec<&str> = keys.iter().map(String::as_str).collect();
        for w in &workspaces {
            let has_admin = self
                .api_keys
                .values()
                .any(|k| &k.workspace == w && k.scope == Scope::Admin && k.revoked_at.is_none());
            if has_admin && self.live_admin_keys(w, &ids) == 0 {
                return Err(CoreError::conflict(format!(
                    "user {user:?} holds the last live admin key of workspace {w:?}"
                )));
            }
        }
        for id in &keys {
            self.revoke_key(id, at_ms);
        }
        self.tenancy.users.remove(user);
        Ok(TenancyResponse::UserDeleted {
            id: user.to_string(),
            revoked: keys,
        })
    }

    fn user_has_key_in(&self, user: &str, ws: &str) -> bool {
        self.api_keys
            .values()
            .any(|k| k.user.as_deref() == Some(user) && k.workspace == ws)
    }

    /// The key `id` if it belongs to `ws` (else not found).
    fn key_in(&self, ws: &str, id: &str) -> Result<&ApiKeyRecord, CoreError> {
        self.api_keys
            .get(id)
            .filter(|k| k.workspace == ws)
            .ok_or_else(|| not_found("api key", id))
    }

    /// Live admin keys of `ws`, not counting `except`.
    fn live_admin_keys(&self, ws: &str, except: &[&str]) -> usize {
        self.api_keys
            .values()
            .filter(|k| {
                k.workspace == ws
                    && k.scope == Scope::Admin
                    && k.revoked_at.is_none()
                    && !except.contains(&k.id.as_str())
            })
            .count()
    }

    fn check_key_room(&self, ws: &str, hash: &str) -> Result<(), CoreError> {
        if self.tenancy.key_index.contains_key(hash) {
            return Err(CoreError::conflict("a key with this secret already exists"));
        }
        let live = self
            .api_keys
            .values()
            .filter(|k| k.workspace == ws && k.revoked_at.is_none())
            .count();
        if live >= MAX_KEYS_PER_WORKSPACE {
            return Err(CoreError::conflict(format!(
                "workspace {ws:?} already has {MAX_KEYS_PER_WORKSPACE} live keys"
            )));
        }
        Ok(())
    }

    fn revoke_key(&mut self, id: &str, at_ms: u64) -> ApiKeyRecord {
        let key = self.api_keys.get_mut(id).expect("caller checked");
        key.revoked_at.get_or_insert(at_ms);
        self.tenancy.key_index.remove(&key.hash);
        key.clone()
    }

    /// Creates the bootstrap user owning `key` in `ws` (part of bootstrap).
    pub(super) fn bootstrap_user(&mut self, ws: &str, key: &str, at_ms: u64) {
        self.tenancy.next_user_seq += 1;
        let id = format!("usr_{}", self.tenancy.next_user_seq);
        let user = User {
            id: id.clone(),
            tenant: DEFAULT_TENANT.to_string(),
            name: "admin".to_string(),
            email: None,
            workspaces: BTreeMap::from([(ws.to_string(), Scope::Admin)]),
            created_at: at_ms,
        };
        self.tenancy.users.insert(id.clone(), user);
        if let Some(k) = self.api_keys.get_mut(key) {
            k.user = Some(id);
        }
    }

    /// The invitation whose token hashes to `token_hash`, if any.
    pub fn invitation_by_token_hash(&self, token_hash: &str) -> Option<&Invitation> {
        self.tenancy
            .invitation_index
            .get(token_hash)
            .and_then(|id| self.tenancy.invitations.get(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{MetaCommand, MetaResponse};
    use crate::types::NodeInfo;

    fn boot() -> MetaState {
        let mut m = MetaState::default();
        let cmd = MetaCommand::Bootstrap {
            node: NodeInfo {
                peer_addr: "a".into(),
                api_addr: "b".into(),
            },
            shard_count: 1,
            workspace: "default".into(),
            admin_key_hash: "h_admin".into(),
        };
        assert_eq!(m.apply(&cmd, 1), MetaResponse::NodeId(1));
        m
    }

    fn run(m: &mut MetaState, cmd: TenancyCommand, at: u64) -> Outcome {
        match m.apply(&MetaCommand::Tenancy(cmd), at) {
            MetaResponse::Tenancy(r) => Ok(*r),
            MetaResponse::Refused(e) => Err(e),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn key(m: &mut MetaState, ws: &str, scope: Scope, hash: &str) -> ApiKeyRecord {
        let cmd = TenancyCommand::CreateKey {
            ws: ws.into(),
            name: "k".into(),
            scope,
            hash: hash.into(),
            prefix: "p".into(),
            user: None,
        };
        match run(m, cmd, 5).expect("created") {
            TenancyResponse::Key(k) => k,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn code(r: Outcome) -> crate::error::ErrorCode {
        r.expect_err("refused").code
    }

    #[test]
    fn bootstrap_binds_the_admin_key_to_the_first_user() {
        let m = boot();
        let k = m.key_by_hash("h_admin").expect("admin key");
        assert_eq!(k.user.as_deref(), Some(BOOTSTRAP_USER));
        assert_eq!(
            m.tenancy.users[BOOTSTRAP_USER].workspaces["default"],
            Scope::Admin
        );
        assert_eq!(m.workspaces["default"].tenant, DEFAULT_TENANT);
    }

    #[test]
    fn rotate_swaps_the_hash_atomically_and_revoke_kills_it() {
        let mut m = boot();
        let k = key(&mut m, "default", Scope::Full, "h1");
        let rotate = TenancyCommand::RotateKey {
            ws: "default".into(),
            id: k.id.clone(),
            hash: "h2".into(),
            prefix: "p2".into(),
        };
        let TenancyResponse::Key(r) = run(&mut m, rotate, 10).unwrap() else {
            panic!()
        };
        assert_eq!(r.rotated_at, Some(10));
        assert!(m.key_by_hash("h1").is_none(), "old secret dead at once");
        assert_eq!(
            m.key_by_hash("h2").map(|k| k.id.clone()),
            Some(k.id.clone())
        );
        let revoke = TenancyCommand::RevokeKey {
            ws: "default".into(),
            id: k.id.clone(),
        };
        run(&mut m, revoke.clone(), 11).unwrap();
        assert!(m.key_by_hash("h2").is_none());
        // Idempotent, keeps the first revocation time.
        let TenancyResponse::Key(again) = run(&mut m, revoke, 12).unwrap() else {
            panic!()
        };
        assert_eq!(again.revoked_at, Some(11));
        // A revoked key cannot be rotated back to life.
        let rotate = TenancyCommand::RotateKey {
            ws: "default".into(),
            id: k.id,
            hash: "h3".into(),
            prefix: "p3".into(),
        };
        assert_eq!(
            code(run(&mut m, rotate, 13)),
            crate::error::ErrorCode::Conflict
        );
        assert!(m.key_by_hash("h3").is_none());
    }

    #[test]
    fn the_last_live_admin_key_cannot_be_revoked() {
        let mut m = boot();
        let admin = m.key_by_hash("h_admin").unwrap().id.clone();
        let revoke = |id: &str| TenancyCommand::RevokeKey {
            ws: "default".into(),
            id: id.into(),
        };
        assert_eq!(
            code(run(&mut m, revoke(&admin), 2)),
            crate::error::ErrorCode::Conflict
        );
        let second = key(&mut m, "default", Scope::Admin, "h_admin2");
        run(&mut m, revoke(&admin), 3).unwrap();
        assert!(m.key_by_hash("h_admin").is_none());
        assert_eq!(
            code(run(&mut m, revoke(&second.id), 4)),
            crate::error::ErrorCode::Conflict
        );
        assert!(m.key_by_hash("h_admin2").is_some());
    }

    fn second_workspace(m: &mut MetaState) -> (Workspace, ApiKeyRecord) {
        let cmd = TenancyCommand::CreateWorkspace {
            from_ws: "default".into(),
            name: "second".into(),
            settings: SettingsPatch::default(),
            admin_key_hash: "h_b".into(),
            admin_key_prefix: "pb".into(),
            user: Some(BOOTSTRAP_USER.into()),
        };
        match run(m, cmd, 20).unwrap() {
            TenancyResponse::Workspace {
                workspace,
                admin_key: Some(k),
            } => (workspace, k),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn another_workspaces_ids_are_not_found() {
        let mut m = boot();
        let (b, b_admin) = second_workspace(&mut m);
        assert_eq!(b.id, "ws_1");
        assert_eq!(b.tenant, DEFAULT_TENANT);
        assert_eq!(m.key_by_hash("h_b").unwrap().workspace, b.id);
        let a_key = key(&mut m, "default", Scope::Read, "h_r");
        let not_found = crate::error::ErrorCode::NotFound;
        for cmd in [
            TenancyCommand::RevokeKey {
                ws: b.id.clone(),
                id: a_key.id.clone(),
            },
            TenancyCommand::RotateKey {
                ws: b.id.clone(),
                id: a_key.id.clone(),
                hash: "x".into(),
                prefix: "x".into(),
            },
        ] {
            assert_eq!(code(run(&mut m, cmd, 21)), not_found);
        }
        let inv = TenancyCommand::CreateInvitation {
            ws: "default".into(),
            token_hash: "t".into(),
            email: None,
            scope: Scope::Full,
            expires_at: 1000,
            by: "key_1".into(),
        };
        let TenancyResponse::Invitation(inv) = run(&mut m, inv, 22).unwrap() else {
            panic!()
        };
        let revoke = TenancyCommand::RevokeInvitation {
            ws: b.id.clone(),
            id: inv.id.clone(),
        };
        assert_eq!(code(run(&mut m, revoke, 23)), not_found);
        assert!(m.tenancy.invitations[&inv.id].revoked_at.is_none());
        // Nothing of workspace A changed.
        assert!(m.key_by_hash("h_r").is_some());
        assert!(m.key_by_hash("x").is_none());
        assert_eq!(b_admin.user.as_deref(), Some(BOOTSTRAP_USER));
        // Same name twice in one tenant: refused.
        let again = TenancyCommand::CreateWorkspace {
            from_ws: "default".into(),
            name: "second".into(),
            settings: SettingsPatch::default(),
            admin_key_hash: "h_c".into(),
            admin_key_prefix: "pc".into(),
            user: None,
        };
        assert_eq!(
            code(run(&mut m, again, 24)),
            crate::error::ErrorCode::Conflict
        );
        assert!(m.key_by_hash("h_c").is_none());
    }

    fn invite(m: &mut MetaState, token: &str, expires_at: u64) -> Invitation {
        let cmd = TenancyCommand::CreateInvitation {
            ws: "default".into(),
            token_hash: token.into(),
            email: Some("a@example.com".into()),
            scope: Scope::Full,
            expires_at,
            by: "key_1".into(),
        };
        match run(m, cmd, 100).unwrap() {
            TenancyResponse::Invitation(i) => i,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn accept(token: &str, key_hash: &str) -> TenancyCommand {
        TenancyCommand::AcceptInvitation {
            token_hash: token.into(),
            name: "ann".into(),
            email: None,
            key_hash: key_hash.into(),
            key_prefix: "pk".into(),
        }
    }

    #[test]
    fn an_invitation_is_accepted_once_and_never_after_expiry() {
        let mut m = boot();
        let inv = invite(&mut m, "t1", 1000);
        assert_eq!(inv.id, "inv_1");
        let TenancyResponse::Accepted { user, key, .. } =
            run(&mut m, accept("t1", "hk"), 500).unwrap()
        else {
            panic!()
        };
        assert_eq!(user.workspaces["default"], Scope::Full);
        assert_eq!(user.email.as_deref(), Some("a@example.com"));
        assert_eq!(key.user.as_deref(), Some(user.id.as_str()));
        assert_eq!(m.key_by_hash("hk").map(|k| k.scope), Some(Scope::Full));
        // Second accept: refused, nothing created.
        let users = m.tenancy.users.len();
        assert_eq!(
            code(run(&mut m, accept("t1", "hk2"), 600)),
            crate::error::ErrorCode::Conflict
        );
        assert_eq!(m.tenancy.users.len(), users);
        assert!(m.key_by_hash("hk2").is_none());
        // Accepted invitations cannot be revoked.
        let revoke = TenancyCommand::RevokeInvitation {
            ws: "default".into(),
            id: inv.id,
        };
        assert_eq!(
            code(run(&mut m, revoke, 700)),
            crate::error::ErrorCode::Conflict
        );

        // Expiry is decided by the leader's time in the entry.
        invite(&mut m, "t2", 1000);
        assert_eq!(
            code(run(&mut m, accept("t2", "hk3"), 1000)),
            crate::error::ErrorCode::Conflict
        );
        assert!(m.key_by_hash("hk3").is_none());
        // Revoked and unknown invitations are not found.
        let inv3 = invite(&mut m, "t3", 5000);
        let revoke = TenancyCommand::RevokeInvitation {
            ws: "default".into(),
            id: inv3.id,
        };
        run(&mut m, revoke, 200).unwrap();
        for token in ["t3", "nope"] {
            assert_eq!(
                code(run(&mut m, accept(token, "hk4"), 300)),
                crate::error::ErrorCode::NotFound
            );
        }
    }

    #[test]
    fn deleting_a_user_revokes_its_keys_but_not_the_last_admin() {
        let mut m = boot();
        invite(&mut m, "t1", 1000);
        let TenancyResponse::Accepted { user, key, .. } =
            run(&mut m, accept("t1", "hk"), 500).unwrap()
        else {
            panic!()
        };
        // Another workspace cannot delete it.
        second_workspace(&mut m);
        let del = |ws: &str, u: &str| TenancyCommand::DeleteUser {
            ws: ws.into(),
            user: u.into(),
        };
        assert_eq!(
            code(run(&mut m, del("ws_1", &user.id), 600)),
            crate::error::ErrorCode::NotFound
        );
        let TenancyResponse::UserDeleted { revoked, .. } =
            run(&mut m, del("default", &user.id), 600).unwrap()
        else {
            panic!()
        };
        assert_eq!(revoked, vec![key.id]);
        assert!(m.key_by_hash("hk").is_none());
        assert!(!m.tenancy.users.contains_key(&user.id));
        // The bootstrap user holds the only admin keys of both workspaces.
        assert_eq!(
            code(run(&mut m, del("default", BOOTSTRAP_USER), 700)),
            crate::error::ErrorCode::Conflict
        );
        assert!(m.key_by_hash("h_admin").is_some());
    }

    #[test]
    fn settings_are_checked_and_patched() {
        let mut m = boot();
        let bad = TenancyCommand::UpdateWorkspace {
            ws: "default".into(),
            patch: SettingsPatch {
                presence_timeout_secs: Some(1),
                ..Default::default()
            },
        };
        assert_eq!(
            code(run(&mut m, bad, 2)),
            crate::error::ErrorCode::BadRequest
        );
        assert_eq!(
            m.workspaces["default"].settings,
            WorkspaceSettings::default()
        );
        let good = TenancyCommand::UpdateWorkspace {
            ws: "default".into(),
            patch: SettingsPatch {
                task_mode: Some(TaskMode::Approval),
                name: Some("main".into()),
                ..Default::default()
            },
        };
        run(&mut m, good, 3).unwrap();
        let ws = &m.workspaces["default"];
        assert_eq!(ws.settings.task_mode, TaskMode::Approval);
        assert_eq!(ws.name, "main");
        assert_eq!(
            ws.settings.presence_timeout_secs, None,
            "not set: the node's applies"
        );
        let timeout = TenancyCommand::UpdateWorkspace {
            ws: "default".into(),
            patch: SettingsPatch {
                presence_timeout_secs: Some(45),
                ..Default::default()
            },
        };
        run(&mut m, timeout, 4).unwrap();
        assert_eq!(
            m.workspaces["default"].settings.presence_timeout_secs,
            Some(45)
        );
    }

    /// A setting stored before "not set" existed (a plain number) reads as set, and "not set"
    /// is stored as 0, so the stored form is unchanged.
    #[test]
    fn the_presence_timeout_keeps_its_stored_form() {
        #[derive(Serialize)]
        struct Before {
            task_mode: TaskMode,
            presence_timeout_secs: u64,
            default_retention_hours: u64,
        }
        let old = crate::codec::encode(&Before {
            task_mode: TaskMode::Auto,
            presence_timeout_secs: 30,
            default_retention_hours: 168,
        });
        let read: WorkspaceSettings = crate::codec::decode(&old).unwrap();
        assert_eq!(read.presence_timeout_secs, Some(30));
        let unset = crate::codec::encode(&WorkspaceSettings::default());
        let zero = crate::codec::encode(&Before {
            task_mode: TaskMode::Auto,
            presence_timeout_secs: 0,
            default_retention_hours: 168,
        });
        assert_eq!(unset, zero);
        let back: WorkspaceSettings = crate::codec::decode(&unset).unwrap();
        assert_eq!(back, WorkspaceSettings::default());
    }
}
