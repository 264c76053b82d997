//! `GET /v1/activity` (the workspace's activity feed) and `GET /v1/usage` (its usage figures).
//!
//! The feed is the successful changes of the audit log ([`crate::audit`]), each named by an
//! event type derived from its route (`POST /v1/tasks` → `task.created`): every change made
//! through the API, by REST or MCP, newest first, paged like the audit log. Changes the cluster
//! makes by itself (a presence timeout, a lease expiry, retention) are not in it.
//!
//! Usage is measured on every shard from the stored rows (`conclave_raft::shard::usage`) and
//! summed, so it is exact at the moment of the request. Its breakdown of mutating calls per API
//! key and UTC day is read from the counters the audit append keeps on the workspace's audit
//! shard (`conclave_raft::shard::key_usage`); reads are not counted.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use conclave_actors::{ClientRequest, ClientResponse};
use conclave_raft::meta::Scope;
use conclave_raft::shard::audit::{event_type, AuditEntry, AuditFilter};
use conclave_raft::shard::key_usage::{self, KeyDayUsage};
use conclave_raft::shard::usage::Usage;
use conclave_raft::{ShardQuery, ShardReadResult};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{run, scatter, shard, unexpected, Page};
use crate::auth::Caller;
use crate::calendar::{format_date, parse_date};
use crate::error::{ApiError, ApiQuery, ApiResult};
use crate::state::AppState;
use crate::validate::{self, DateString, DigitsCursorString, NameString, UsageCursorString};

/// Days one usage request may span, both ends included.
pub const MAX_USAGE_DAYS: i64 = 366;
/// Days a usage request spans when it gives no `from`, both ends included.
pub const DEFAULT_USAGE_DAYS: i64 = 30;

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

/// `?from=&to=&key_id=&limit=&cursor=` of `GET /v1/usage`: the range of the per-key, per-day
/// breakdown.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct UsageQuery {
    /// First UTC day of the breakdown, `YYYY-MM-DD` (default: 29 days before `to`, or before
    /// today when neither is given).
    #[param(value_type = Option<DateString>)]
    from: Option<String>,
    /// Last UTC day of the breakdown, included, `YYYY-MM-DD` (default: 29 days after `from`,
    /// or today when neither is given). At most 366 days from `from`, both included.
    #[param(value_type = Option<DateString>)]
    to: Option<String>,
    /// Only this API key's calls (its id).
    #[param(value_type = Option<NameString>)]
    key_id: Option<String>,
    /// Rows of the breakdown per page, 1 to 1000 (default 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `daily.next_cursor` of the previous page (same range and key).
    #[param(value_type = Option<UsageCursorString>)]
    cursor: Option<String>,
}

/// One API key's mutating calls on one UTC day.
#[derive(Serialize, ToSchema)]
pub(super) struct KeyDayView {
    /// The UTC day, `YYYY-MM-DD`.
    day: String,
    /// The API key.
    key_id: String,
    /// Mutating calls (REST and MCP) it made that day.
    calls: u64,
    /// Of those, calls answered with an error (4xx or 5xx).
    errors: u64,
    /// Of those, calls answered with a server error (5xx).
    server_errors: u64,
}

impl From<KeyDayUsage> for KeyDayView {
    fn from(u: KeyDayUsage) -> Self {
        Self {
            day: format_date(i64::try_from(u.day).unwrap_or(i64::MAX)),
            key_id: u.key_id,
            calls: u.count.calls,
            errors: u.count.errors,
            server_errors: u.count.server_errors,
        }
    }
}

/// Mutating calls per API key and UTC day over a range of days.
#[derive(Serialize, ToSchema)]
pub(super) struct DailyUsageView {
    /// First day of the range, `YYYY-MM-DD`.
    from: String,
    /// Last day of the range, included, `YYYY-MM-DD`.
    to: String,
    /// Every key with calls on a day of the range, by day then key id (days and keys without
    /// calls are left out).
    items: Vec<KeyDayView>,
    /// Pass as `cursor` (with the same range and key) for the rest; `null` when there is none.
    next_cursor: Option<String>,
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
    /// `api_calls` broken down per API key and UTC day, over the requested range (kept for
    /// the last 400 days, whatever the audit log's retention).
    daily: DailyUsageView,
}

/// The breakdown's range and position, checked.
struct DailyRange {
    from: i64,
    to: i64,
    key_id: Option<String>,
    after: Option<(u64, String)>,
    limit: usize,
}

impl DailyRange {
    fn parse(q: UsageQuery, today: i64) -> ApiResult<Self> {
        let date = |field: &str, v: Option<&str>| {
            v.map(|t| {
                parse_date(t).ok_or_else(|| {
                    ApiError::bad_request(format!("{field} must be a date, YYYY-MM-DD"))
                })
            })
            .transpose()
        };
        // A missing end is 30 days from the other one; with neither, the 30 days to today.
        let span = DEFAULT_USAGE_DAYS - 1;
        let (from, to) = match (
            date("from", q.from.as_deref())?,
            date("to", q.to.as_deref())?,
        ) {
            (Some(from), Some(to)) => (from, to),
            (Some(from), None) => (from, from + span),
            (None, Some(to)) => (to - span, to),
            (None, None) => (today - span, today),
        };
        if from > to {
            return Err(ApiError::bad_request("from must not be after to"));
        }
        if to - from + 1 > MAX_USAGE_DAYS {
            return Err(ApiError::bad_request(format!(
                "from and to may be at most {MAX_USAGE_DAYS} days apart, both included"
            )));
        }
        if let Some(k) = &q.key_id {
            validate::name("key_id", k)?;
        }
        let after = q
            .cursor
            .as_deref()
            .map(|c| {
                c.split_once(':')
                    .filter(|(d, k)| {
                        !d.is_empty()
                            && d.len() <= 10
                            && d.bytes().all(|b| b.is_ascii_digit())
                            && validate::name("cursor", k).is_ok()
                    })
                    .and_then(|(d, k)| Some((d.parse::<u64>().ok()?, k.to_string())))
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "cursor must be the daily.next_cursor of a previous answer",
                        )
                    })
            })
            .transpose()?;
        Ok(Self {
            from,
            to,
            key_id: q.key_id,
            after,
            limit: validate::limit(q.limit, validate::MAX_PAGE)?,
        })
    }
}

/// Usage figures of the caller's workspace, measured from the stored data of every shard, and
/// its mutating calls per API key and UTC day over a range of days (admin keys only).
#[utoipa::path(get, path = "/v1/usage", tag = TAG, params(UsageQuery),
    responses((status = 200, description = "The workspace's usage", body = UsageView)))]
async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> ApiResult<Json<UsageView>> {
    caller.require(Scope::Admin)?;
    let now = conclave_raft::command::now_ms();
    let today = i64::try_from(key_usage::day_of(now)).unwrap_or(i64::MAX);
    let range = DailyRange::parse(q, today)?;
    let ws = caller.workspace.clone();
    let daily = daily(&state, &ws, &range).await?;
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
        measured_at: now,
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
        daily,
    }))
}

/// The page of `ws`'s per-key, per-day counters that `range` asks for, from its audit shard.
async fn daily(state: &AppState, ws: &str, range: &DailyRange) -> ApiResult<DailyUsageView> {
    let mut view = DailyUsageView {
        from: format_date(range.from),
        to: format_date(range.to),
        items: Vec::new(),
        next_cursor: None,
    };
    // No counter is older than the epoch.
    let Ok(to_day) = u64::try_from(range.to) else {
        return Ok(view);
    };
    let query = ShardQuery::KeyUsage {
        ws: ws.to_string(),
        from_day: u64::try_from(range.from).unwrap_or(0),
        to_day,
        key_id: range.key_id.clone(),
        after: range.after.clone(),
        limit: range.limit,
    };
    let group = shard(state, ws, "audit", "")?;
    match run(state, group, ClientRequest::Read(query)).await? {
        ClientResponse::Read(ShardReadResult::KeyUsage(page)) => {
            view.items = page.items.into_iter().map(KeyDayView::from).collect();
            view.next_cursor = page.next_after.map(|(day, key)| format!("{day}:{key}"));
            Ok(view)
        }
        other => Err(unexpected(other)),
    }
}
