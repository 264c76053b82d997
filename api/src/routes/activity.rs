//! `GET /v1/activity` (the workspace's activity feed) and `GET /v1/usage` (its usage figures).
//!
//! The feed is the successful changes of the audit log ([`crate::audit`]), each named by an
//! event type derived from its route (`POST /v1/tasks` → `task.created`): every change made
//! through the API, by REST or MCP, newest first, paged like the audit log. Changes the cluster
//! makes by itself (a presence timeout, a lease expiry, retention) are not in it.
//!
//! Usage is measured on every shard from the stored rows (`conclave_raft::shard::usage`) and
//! summed, so it is exact at the moment of the request.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use conclave_actors::{ClientRequest, ClientResponse};
use conclave_raft::meta::Scope;
use conclave_raft::shard::audit::{event_type, AuditEntry, AuditFilter};
use conclave_raft::shard::usage::Usage;
use conclave_raft::{ShardQuery, ShardReadResult};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{run, scatter, shard, unexpected, Page};
use crate::auth::Caller;
use crate::error::{ApiQuery, ApiResult};
use crate::state::AppState;
use crate::validate::{self, DigitsCursorString};

const TAG: &str = "Activity";

/// The routes of this module, with their documentation.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(activity))
        .routes(routes!(usage))
}

/// `?since=&cursor=&limit=` of `GET /v1/activity`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ActivityQuery {
    /// Only events at or after this time, ms since the Unix epoch.
    #[param(minimum = 0)]
    since: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<DigitsCursorString>)]
    cursor: Option<String>,
}

/// One change in the workspace.
#[derive(Serialize, ToSchema)]
pub(super) struct ActivityEvent {
    /// The audit entry it comes from, `aud_<n>`.
    id: String,
    /// ms since the Unix epoch.
    at: u64,
    /// What happened, e.g. `task.created`, `task.claim`, `context.set`, `topic.teams.added`.
    #[serde(rename = "type")]
    kind: String,
    /// The API key that made the change.
    key_id: String,
    /// The key's user, if any.
    user_id: Option<String>,
    /// `rest` or `mcp`.
    via: String,
    /// `METHOD route`.
    action: String,
    /// Ids the change addressed, by name (path parameters, and `id` of what it created).
    targets: BTreeMap<String, String>,
}

impl From<AuditEntry> for ActivityEvent {
    fn from(e: AuditEntry) -> Self {
        let n = e.entry;
        Self {
            id: e.id,
            at: e.at,
            kind: event_type(&n.method, &n.route),
            key_id: n.key_id,
            user_id: n.user_id,
            via: n.via,
            action: format!("{} {}", n.method, n.route),
            targets: n.targets.into_iter().collect(),
        }
    }
}

/// The workspace's activity: every successful change made through the API, newest first.
///
/// A page may hold fewer than `limit` events and still have a `next_cursor` (a page examines at
/// most 10 000 audit entries). Kept as long as the audit log keeps its entries.
#[utoipa::path(get, path = "/v1/activity", tag = TAG, params(ActivityQuery),
    responses((status = 200, description = "A page of events, newest first", body = Page<ActivityEvent>)))]
async fn activity(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ActivityQuery>,
) -> ApiResult<Json<Page<ActivityEvent>>> {
    caller.require(Scope::Read)?;
    let limit = validate::limit(q.limit, super::DEFAULT_PAGE)?;
    let since = validate::seq("since", q.since)?;
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
            since,
            succeeded: true,
            ..AuditFilter::default()
        },
        limit,
    };
    match run(&state, group, ClientRequest::Read(query)).await? {
        ClientResponse::Read(ShardReadResult::AuditPage(page)) => Ok(Json(Page {
            items: page.items.into_iter().map(ActivityEvent::from).collect(),
            next_cursor: page.next_before.map(|n| n.to_string()),
        })),
        other => Err(unexpected(other)),
    }
}

/// A workspace's usage.
#[derive(Serialize, ToSchema)]
pub(super) struct UsageView {
    /// The workspace.
    workspace_id: String,
    /// When it was measured, ms since the Unix epoch.
    measured_at: u64,
    /// Registered agents.
    agents: u64,
    /// Agents online.
    agents_online: u64,
    /// Tasks, in any status.
    tasks: u64,
    /// Topics.
    topics: u64,
    /// Messages retained in topics.
    topic_messages: u64,
    /// Messages ever published to the current topics.
    topic_messages_published: u64,
    /// Direct and broadcast messages retained in inboxes (a broadcast counts once per
    /// recipient).
    inbox_messages: u64,
    /// Context entries.
    context_entries: u64,
    /// Embeddings.
    embeddings: u64,
    /// Artifacts.
    artifacts: u64,
    /// Mutating API calls (REST and MCP) since the workspace began, as counted by the audit log;
    /// reads are not counted.
    api_calls: u64,
    /// Audit entries retained.
    audit_entries: u64,
    /// Bytes of the workspace's stored data (keys and values, one replica, before compression).
    storage_bytes: u64,
}

/// Usage figures of the caller's workspace, measured from the stored data of every shard
/// (admin keys only).
#[utoipa::path(get, path = "/v1/usage", tag = TAG,
    responses((status = 200, description = "The workspace's usage", body = UsageView)))]
async fn usage(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<UsageView>> {
    caller.require(Scope::Admin)?;
    let ws = caller.workspace.clone();
    let mut total = Usage::default();
    let answers = scatter(&state, |_| {
        ClientRequest::Read(ShardQuery::Usage { ws: ws.clone() })
    })
    .await?;
    for answer in answers {
        match answer {
            ClientResponse::Read(ShardReadResult::Usage(u)) => total.add(&u),
            other => return Err(unexpected(other)),
        }
    }
    Ok(Json(UsageView {
        workspace_id: ws,
        measured_at: conclave_raft::command::now_ms(),
        agents: total.agents,
        agents_online: total.agents_online,
        tasks: total.tasks,
        topics: total.topics,
        topic_messages: total.topic_messages,
        topic_messages_published: total.topic_messages_published,
        inbox_messages: total.inbox_messages,
        context_entries: total.context_entries,
        embeddings: total.embeddings,
        artifacts: total.artifacts,
        api_calls: total.api_calls,
        audit_entries: total.audit_entries,
        storage_bytes: total.storage_bytes,
    }))
}
