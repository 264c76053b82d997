//! What the tenancy routes (workspaces, API keys, users, invitations) share: running a tenancy
//! command on the meta leader, paging over the meta replica, and the API key views.

use conclave_raft::meta::{ApiKeyRecord, Scope, TenancyCommand, TenancyResponse};
use conclave_raft::{MetaCommand, MetaResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::{Page, PageQuery};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::validate;

/// Runs a tenancy command on the meta leader; a refusal is its error.
pub(super) async fn execute(state: &AppState, cmd: TenancyCommand) -> ApiResult<TenancyResponse> {
    match state.router.execute_meta(MetaCommand::Tenancy(cmd)).await? {
        MetaResponse::Tenancy(r) => Ok(*r),
        other => Err(ApiError::internal(format!("unexpected response {other:?}"))),
    }
}

/// The order of meta lists: ids by length, then text. Ids a list holds share their prefix
/// (`key_`, `usr_`, `inv_`, `ws_`) and end in a growing number, so this is creation order
/// (`key_9` before `key_10`), and the cursor (the last id) stays a plain id.
fn id_order(id: &str) -> (usize, &str) {
    (id.len(), id)
}

/// One page of meta records in creation order (see [`id_order`]): those after the cursor, at
/// most `limit`.
pub(super) fn page<'a, R: 'a, V>(
    records: impl Iterator<Item = &'a R>,
    id: impl Fn(&R) -> &str,
    q: &PageQuery,
    view: impl Fn(&'a R) -> V,
) -> ApiResult<Page<V>> {
    let limit = q.limit()?;
    if let Some(c) = &q.cursor {
        validate::key("cursor", c)?;
    }
    let after = q.cursor.as_deref().map(id_order);
    let mut selected: Vec<&R> = records
        .filter(|r| after.is_none_or(|c| id_order(id(r)) > c))
        .collect();
    selected.sort_by(|a, b| id_order(id(a)).cmp(&id_order(id(b))));
    selected.truncate(limit + 1);
    Ok(Page::merged(selected, limit, |r| id(r).to_string(), view))
}

/// An API key as listed: never its secret or its hash.
#[derive(Serialize, ToSchema)]
pub(super) struct ApiKeyView {
    /// The key's id (`key_<n>`).
    id: String,
    /// Its label.
    name: String,
    /// What it may do.
    scope: Scope,
    /// The workspace it is scoped to.
    workspace_id: String,
    /// The user it belongs to, if any.
    user_id: Option<String>,
    /// The first characters of its secret, to tell keys apart.
    prefix: String,
    /// When it was created, ms since the Unix epoch.
    created_at: u64,
    /// When it was revoked; a revoked key authenticates nothing.
    revoked_at: Option<u64>,
    /// When its secret was last rotated.
    rotated_at: Option<u64>,
}

impl From<&ApiKeyRecord> for ApiKeyView {
    fn from(k: &ApiKeyRecord) -> Self {
        Self {
            id: k.id.clone(),
            name: k.name.clone(),
            scope: k.scope,
            workspace_id: k.workspace.clone(),
            user_id: k.user.clone(),
            prefix: k.prefix.clone(),
            created_at: k.created_at,
            revoked_at: k.revoked_at,
            rotated_at: k.rotated_at,
        }
    }
}

/// An API key with its secret, shown only in the answer that created or rotated it.
#[derive(Serialize, ToSchema)]
pub(super) struct ApiKeyWithSecret {
    /// The key's id (`key_<n>`).
    id: String,
    /// Its label.
    name: String,
    /// What it may do.
    scope: Scope,
    /// The workspace it is scoped to.
    workspace_id: String,
    /// The user it belongs to, if any.
    user_id: Option<String>,
    /// The first characters of its secret.
    prefix: String,
    /// When it was created, ms since the Unix epoch.
    created_at: u64,
    /// When its secret was last rotated.
    rotated_at: Option<u64>,
    /// The secret, for `Authorization: Bearer`; only its hash is stored, so keep it now.
    key: String,
}

impl ApiKeyWithSecret {
    /// The view of `k` with its `secret`.
    pub(super) fn new(k: &ApiKeyRecord, secret: String) -> Self {
        Self {
            id: k.id.clone(),
            name: k.name.clone(),
            scope: k.scope,
            workspace_id: k.workspace.clone(),
            user_id: k.user.clone(),
            prefix: k.prefix.clone(),
            created_at: k.created_at,
            rotated_at: k.rotated_at,
            key: secret,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(p: &Page<String>) -> Vec<&str> {
        p.items.iter().map(String::as_str).collect()
    }

    /// Pages follow creation order and a cursor never skips or repeats an id.
    #[test]
    fn pages_follow_creation_order() {
        let records: Vec<String> = (1..=12).map(|n| format!("key_{n}")).collect();
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let q = PageQuery {
                limit: Some(5),
                cursor: cursor.clone(),
            };
            let p = page(records.iter().rev(), |r| r.as_str(), &q, |r| r.clone()).unwrap();
            seen.extend(ids(&p).into_iter().map(str::to_string));
            match p.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, records);
        let bad = PageQuery {
            limit: Some(0),
            cursor: None,
        };
        assert!(page(records.iter(), |r| r.as_str(), &bad, |r| r.clone()).is_err());
    }
}
