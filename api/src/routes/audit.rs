//! `GET /v1/audit/log`: the workspace's audit log, newest first.
//!
//! Entries are written by [`crate::audit`] (one per mutating call, REST or MCP). They live on
//! one shard per workspace (`conclave_raft::shard::audit`), numbered gap-free, so a page is one
//! read on that shard's leader and the cursor is a number: a page continues strictly below it,
//! never skipping or repeating an entry. A filtered read examines a bounded number of entries
//! and may answer fewer items than `limit` (even none) with a cursor to continue from.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use conclave_actors::{ClientRequest, ClientResponse};
use conclave_raft::meta::Scope;
use conclave_raft::shard::audit::{AuditEntry, AuditFilter};
use conclave_raft::{ShardQuery, ShardReadResult};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{run, shard, unexpected, Page};
use crate::audit::Via;
use crate::auth::Caller;
use crate::error::{ApiError, ApiQuery, ApiResult};
use crate::state::AppState;
use crate::validate::{self, DigitsCursorString, NameString};

const TAG: &str = "Audit";

/// Longest `action` filter, characters.
const MAX_ACTION_CHARS: usize = 256;

/// The routes of this module, with their documentation.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// `?key_id=&via=&action=&since=&until=&cursor=&limit=` of `GET /v1/audit/log`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct AuditListQuery {
    /// Only calls made with this API key (its id).
    #[param(value_type = Option<NameString>)]
    key_id: Option<String>,
    /// Only calls that came in by this transport.
    #[param(inline)]
    via: Option<Via>,
    /// Only calls whose action (`METHOD /route/{template}`) starts with this, e.g. `POST
    /// /v1/tasks` or `DELETE`.
    #[param(max_length = 256)]
    action: Option<String>,
    /// Only entries recorded at or after this time, ms since the Unix epoch.
    #[param(minimum = 0)]
    since: Option<i64>,
    /// Only entries recorded at or before this time, ms since the Unix epoch.
    #[param(minimum = 0)]
    until: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<DigitsCursorString>)]
    cursor: Option<String>,
}

/// One mutating call.
#[derive(Serialize, ToSchema)]
pub(super) struct AuditLogEntry {
    /// `aud_<n>`, numbered gap-free within the workspace.
    id: String,
    /// When the entry was recorded, ms since the Unix epoch.
    at: u64,
    /// When the serving node received the call, ms since the Unix epoch (that node's clock).
    received_at: u64,
    /// The API key the call carried.
    key_id: String,
    /// The user the key belongs to, if any.
    user_id: Option<String>,
    /// The transport: `rest` or `mcp`.
    via: String,
    /// `METHOD route`, e.g. `POST /v1/tasks/{id}/claim`.
    action: String,
    /// The HTTP method.
    method: String,
    /// The route template.
    route: String,
    /// Ids the call addressed: its path parameters by name, and `id`, the id of what a
    /// successful call created or changed.
    targets: BTreeMap<String, String>,
    /// The HTTP status answered.
    status: u16,
    /// `ok` (2xx), `refused` (4xx) or `error` (5xx).
    outcome: &'static str,
    /// The request's id, also answered in its `x-request-id` header.
    request_id: String,
    /// The node that served the call.
    node_id: u64,
}

impl From<AuditEntry> for AuditLogEntry {
    fn from(e: AuditEntry) -> Self {
        let n = e.entry;
        let outcome = match n.status {
            200..=399 => "ok",
            400..=499 => "refused",
            _ => "error",
        };
        Self {
            id: e.id,
            at: e.at,
            received_at: n.received_at,
            key_id: n.key_id,
            user_id: n.user_id,
            via: n.via,
            action: format!("{} {}", n.method, n.route),
            method: n.method,
            route: n.route,
            targets: n.targets.into_iter().collect(),
            status: n.status,
            outcome,
            request_id: n.request_id,
            node_id: n.node_id,
        }
    }
}

/// Lists the audit log: one entry per mutating call (`POST`, `PUT`, `PATCH`, `DELETE` under
/// `/v1`, by REST or MCP), newest first (admin keys only).
///
/// A filtered page may hold fewer than `limit` entries and still have a `next_cursor`: the
/// read examines at most 10 000 entries per page. Entries are kept for the node's
/// `audit_retention_days` (default 90) and at most `audit_max_entries` per workspace.
#[utoipa::path(get, path = "/v1/audit/log", tag = TAG, params(AuditListQuery),
    responses((status = 200, description = "A page of the audit log, newest first", body = Page<AuditLogEntry>)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AuditListQuery>,
) -> ApiResult<Json<Page<AuditLogEntry>>> {
    caller.require(Scope::Admin)?;
    let limit = validate::limit(q.limit, super::DEFAULT_PAGE)?;
    if let Some(k) = &q.key_id {
        validate::name("key_id", k)?;
    }
    if let Some(a) = &q.action {
        if a.chars().count() > MAX_ACTION_CHARS {
            return Err(ApiError::bad_request(format!(
                "action must be at most {MAX_ACTION_CHARS} characters"
            )));
        }
    }
    let since = validate::seq("since", q.since)?;
    let until = validate::seq("until", q.until)?;
    let before = q
        .cursor
        .as_deref()
        .map(|c| validate::digits_cursor("cursor", c))
        .transpose()?;
    let group = shard(&state, &caller.workspace, "audit", "")?;
    let query = ShardQuery::AuditList {
        ws: caller.workspace.clone(),
        before,
        filter: AuditFilter {
            key_id: q.key_id,
            via: q.via.map(|v| v.as_str().to_string()),
            action: q.action.filter(|a| !a.is_empty()),
            since,
            until,
            succeeded: false,
        },
        limit,
    };
    match run(&state, group, ClientRequest::Read(query)).await? {
        ClientResponse::Read(ShardReadResult::AuditPage(page)) => Ok(Json(Page {
            items: page.items.into_iter().map(AuditLogEntry::from).collect(),
            next_cursor: page.next_before.map(|n| n.to_string()),
        })),
        other => Err(unexpected(other)),
    }
}
