//! `/v1/webhooks`: registered endpoints and their deliveries (admin keys only).
//!
//! A workspace's webhooks and deliveries live on its audit shard
//! (`conclave_raft::shard::webhook`): each successful change recorded in the audit log is
//! enqueued there, in the same Raft entry, for every webhook subscribed to its event type, and
//! the shard leader sends it ([`crate::webhooks`]).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use conclave_actors::{ClientRequest, ClientResponse};
use conclave_raft::meta::Scope;
use conclave_raft::shard::webhook::{
    Delivery, DeliveryStatus, Webhook, WebhookCommand, WebhookQuery, WebhookResponse, WebhookResult,
};
use conclave_raft::{ShardCommand, ShardQuery, ShardReadResult, ShardResponse};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{run, shard, unexpected, Deleted, Page, PageQuery};
use crate::auth::{self, Caller};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::state::AppState;
use crate::validate::{self, DigitsCursorString, NameString};

const TAG: &str = "Webhooks";

/// Longest webhook URL, bytes.
const MAX_URL_BYTES: usize = 2048;
/// Most event types one webhook may list.
const MAX_EVENTS: usize = 50;
/// Longest event type, characters.
const MAX_EVENT_CHARS: usize = 64;
/// Longest description, characters.
const MAX_DESCRIPTION_CHARS: usize = 1024;
/// Shortest and longest client-chosen secret, bytes.
const SECRET_BYTES: std::ops::RangeInclusive<usize> = 16..=256;

/// The routes of this module, with their documentation.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(delete))
        .routes(routes!(deliveries))
}

/// Body of `POST /v1/webhooks`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateWebhookBody {
    /// Where deliveries are POSTed: an `http` or `https` URL with a host and no credentials, at
    /// most 2048 bytes.
    #[schema(value_type = WebhookUrlString)]
    url: String,
    /// Event types to receive (e.g. `task.created`, `topic.publish`; see `GET /v1/activity`),
    /// or `*` for all: 1 to 50 of them.
    #[schema(value_type = Vec<EventTypeString>, min_items = 1, max_items = 50)]
    events: Vec<String>,
    /// Free text, at most 1024 characters.
    #[schema(max_length = 1024)]
    description: Option<String>,
    /// The signing secret, 16 to 256 visible ASCII characters; generated (`whsec_…`) when
    /// absent.
    #[schema(min_length = 16, max_length = 256, pattern = r"^[\x21-\x7E]+$")]
    secret: Option<String>,
}

/// A webhook.
#[derive(Serialize, ToSchema)]
pub(super) struct WebhookView {
    /// `wh_<n>`.
    id: String,
    /// Where deliveries go.
    url: String,
    /// Event types it receives (`*`: all).
    events: Vec<String>,
    /// Free text.
    description: String,
    /// Always true (a webhook is active until deleted).
    active: bool,
    /// ms since the Unix epoch.
    created_at: u64,
    /// The signing secret: only in the answer to its creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

impl WebhookView {
    fn new(h: Webhook, with_secret: bool) -> Self {
        Self {
            id: h.id,
            url: h.url,
            events: h.events,
            description: h.description,
            active: true,
            created_at: h.created_at,
            secret: with_secret.then_some(h.secret),
        }
    }
}

/// One attempt of a delivery.
#[derive(Serialize, ToSchema)]
pub(super) struct DeliveryAttemptView {
    /// From 1.
    attempt: u32,
    /// The node that made it.
    node_id: u64,
    /// ms since the Unix epoch.
    started_at: u64,
    /// When its outcome was recorded.
    finished_at: Option<u64>,
    /// The receiver's HTTP status, if it answered.
    response_status: Option<u16>,
    /// Why it failed, if it did.
    error: Option<String>,
}

/// A delivery of one event to one webhook, with its attempts.
#[derive(Serialize, ToSchema)]
pub(super) struct DeliveryView {
    /// `dlv_<n>`, also sent as the `x-conclave-delivery` header (receivers de-duplicate on it).
    id: String,
    /// The webhook.
    webhook_id: String,
    /// The event: the audit entry of the change (`aud_<n>`).
    event_id: String,
    /// E.g. `task.created`.
    event_type: String,
    /// Where it stands.
    status: DeliveryStatus,
    /// Attempts made.
    attempt: u32,
    /// The last attempt's HTTP status, if any.
    response_status: Option<u16>,
    /// The last attempt's error, if any.
    error: Option<String>,
    /// When it is next looked at, while unfinished.
    next_attempt_at: Option<u64>,
    /// ms since the Unix epoch.
    created_at: u64,
    /// Every attempt, oldest first.
    attempts: Vec<DeliveryAttemptView>,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        let last = d.attempts.last();
        Self {
            id: d.id,
            webhook_id: d.webhook_id,
            event_id: d.event.id.clone(),
            event_type: d.event_type,
            status: d.status,
            attempt: d.attempts.len() as u32,
            response_status: last.and_then(|a| a.response_status),
            error: last.and_then(|a| a.error.clone()),
            next_attempt_at: d.next_attempt_at,
            created_at: d.created_at,
            attempts: d
                .attempts
                .into_iter()
                .map(|a| DeliveryAttemptView {
                    attempt: a.attempt,
                    node_id: a.node_id,
                    started_at: a.started_at,
                    finished_at: a.finished_at,
                    response_status: a.response_status,
                    error: a.error,
                })
                .collect(),
        }
    }
}

/// `?cursor=&limit=` of the deliveries list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct DeliveryListQuery {
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<DigitsCursorString>)]
    cursor: Option<String>,
}

/// A webhook URL as [`check_url`] accepts it.
pub(super) struct WebhookUrlString;

impl utoipa::PartialSchema for WebhookUrlString {
    fn schema() -> RefOr<Schema> {
        super::teams::pattern_schema(
            r"^https?://[^\u0000-\u0020/?#@\u007F]+([/?][^\u0000-\u0020\u007F]*)?$",
            MAX_URL_BYTES,
        )
    }
}

impl ToSchema for WebhookUrlString {}

/// An event type as [`check_event`] accepts it.
pub(super) struct EventTypeString;

impl utoipa::PartialSchema for EventTypeString {
    fn schema() -> RefOr<Schema> {
        super::teams::pattern_schema(r"^(\*|[a-z_]+(\.[a-z_]+)*)$", MAX_EVENT_CHARS)
    }
}

impl ToSchema for EventTypeString {}

/// Checks a webhook URL: `http` or `https`, with a host, no credentials, no whitespace or
/// control characters.
fn check_url(url: &str) -> ApiResult<()> {
    if url.len() > MAX_URL_BYTES {
        return Err(ApiError::bad_request(format!(
            "url must be at most {MAX_URL_BYTES} bytes"
        )));
    }
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| ApiError::bad_request("url must be an http or https URL"))?;
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let plain = |c: char| !(c.is_ascii_control() || c == ' ' || c == '\u{7f}');
    if authority.is_empty()
        || !authority
            .chars()
            .all(|c| plain(c) && !matches!(c, '#' | '@'))
        || !rest[authority_end..].chars().all(plain)
    {
        return Err(ApiError::bad_request(
            "url must be http(s)://HOST[:PORT][/PATH], without credentials, spaces or control characters",
        ));
    }
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| ApiError::bad_request(format!("url is not a valid URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ApiError::bad_request("url must be an http or https URL"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(ApiError::bad_request("url must name a host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ApiError::bad_request("url must not carry credentials"));
    }
    Ok(())
}

/// Checks an event type: `*`, or dot-separated lowercase words (`task.created`).
fn check_event(e: &str) -> ApiResult<()> {
    let word = |w: &str| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    if e == "*" || (e.chars().count() <= MAX_EVENT_CHARS && e.split('.').all(word)) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "events: {e:?} must be \"*\" or an event type such as \"task.created\" (at most {MAX_EVENT_CHARS} characters)"
        )))
    }
}

async fn webhook_request(
    state: &AppState,
    ws: &str,
    req: ClientRequest,
) -> ApiResult<ClientResponse> {
    let group = shard(state, ws, "audit", "")?;
    run(state, group, req).await
}

/// Registers a webhook (admin keys only). Each successful change of the workspace whose event
/// type it lists is POSTed to its URL as JSON, signed with HMAC-SHA256 over
/// `<x-conclave-timestamp>.<body>` (header `x-conclave-signature: sha256=<hex>`), at least once,
/// retried with backoff (1 s doubling, at most 5 min apart, 8 attempts).
#[utoipa::path(post, path = "/v1/webhooks", tag = TAG, request_body = CreateWebhookBody,
    responses((status = 201, description = "The webhook, with its secret (shown once)", body = WebhookView)))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateWebhookBody>,
) -> ApiResult<(StatusCode, Json<WebhookView>)> {
    caller.require(Scope::Admin)?;
    check_url(&body.url)?;
    if body.events.is_empty() || body.events.len() > MAX_EVENTS {
        return Err(ApiError::bad_request(format!(
            "events must list 1 to {MAX_EVENTS} event types"
        )));
    }
    for e in &body.events {
        check_event(e)?;
    }
    let description = body.description.unwrap_or_default();
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(ApiError::bad_request(format!(
            "description must be at most {MAX_DESCRIPTION_CHARS} characters"
        )));
    }
    let secret = match body.secret {
        Some(s) if SECRET_BYTES.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic()) => s,
        Some(_) => {
            return Err(ApiError::bad_request(
                "secret must be 16 to 256 visible ASCII characters",
            ))
        }
        None => auth::random_token("whsec_"),
    };
    let mut events = body.events;
    events.sort();
    events.dedup();
    let cmd = ShardCommand::Webhook(WebhookCommand::Create {
        ws: caller.workspace.clone(),
        url: body.url,
        events,
        description,
        secret,
    });
    match webhook_request(&state, &caller.workspace, ClientRequest::Write(cmd)).await? {
        ClientResponse::Write(ShardResponse::Webhook(r)) => match *r {
            WebhookResponse::Created(h) => {
                Ok((StatusCode::CREATED, Json(WebhookView::new(h, true))))
            }
            other => Err(ApiError::internal(format!("unexpected response {other:?}"))),
        },
        other => Err(unexpected(other)),
    }
}

/// Lists the workspace's webhooks in creation order, without their secrets (admin keys only).
#[utoipa::path(get, path = "/v1/webhooks", tag = TAG, params(PageQuery),
    responses((status = 200, description = "A page of webhooks", body = Page<WebhookView>)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<WebhookView>>> {
    caller.require(Scope::Admin)?;
    let limit = q.limit()?;
    if let Some(c) = &q.cursor {
        validate::key("cursor", c)?;
    }
    let query = ShardQuery::Webhook(WebhookQuery::List {
        ws: caller.workspace.clone(),
        after: q.cursor.clone(),
        limit: limit + 1,
    });
    match webhook_request(&state, &caller.workspace, ClientRequest::Read(query)).await? {
        ClientResponse::Read(ShardReadResult::Webhook(WebhookResult::Webhooks(hooks))) => {
            Ok(Json(Page::merged(
                hooks,
                limit,
                |h| h.id.clone(),
                |h| WebhookView::new(h, false),
            )))
        }
        other => Err(unexpected(other)),
    }
}

/// Deletes a webhook (admin keys only); its unfinished deliveries are given up.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = TAG,
    params(("id" = NameString, Path, description = "The webhook")),
    responses((status = 200, description = "Deleted", body = Deleted)))]
async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Deleted>> {
    caller.require(Scope::Admin)?;
    validate::name("id", &id)?;
    let cmd = ShardCommand::Webhook(WebhookCommand::Delete {
        ws: caller.workspace.clone(),
        id,
    });
    match webhook_request(&state, &caller.workspace, ClientRequest::Write(cmd)).await? {
        ClientResponse::Write(ShardResponse::Webhook(r)) => match *r {
            WebhookResponse::Deleted(id) => Ok(Json(Deleted::new(id))),
            other => Err(ApiError::internal(format!("unexpected response {other:?}"))),
        },
        other => Err(unexpected(other)),
    }
}

/// Lists a webhook's deliveries, newest first, each with its attempts (admin keys only).
///
/// A workspace keeps its newest 10 000 deliveries. A page may hold fewer than `limit` items and
/// still have a `next_cursor` (it examines at most 10 000 deliveries).
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = TAG,
    params(("id" = NameString, Path, description = "The webhook"), DeliveryListQuery),
    responses((status = 200, description = "A page of deliveries, newest first", body = Page<DeliveryView>)))]
async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeliveryListQuery>,
) -> ApiResult<Json<Page<DeliveryView>>> {
    caller.require(Scope::Admin)?;
    validate::name("id", &id)?;
    let limit = validate::limit(q.limit, super::DEFAULT_PAGE)?;
    let before = q
        .cursor
        .as_deref()
        .map(|c| validate::digits_cursor("cursor", c))
        .transpose()?;
    let ws = caller.workspace.clone();
    let get = ShardQuery::Webhook(WebhookQuery::Get {
        ws: ws.clone(),
        id: id.clone(),
    });
    webhook_request(&state, &ws, ClientRequest::Read(get)).await?;
    let query = ShardQuery::Webhook(WebhookQuery::Deliveries {
        ws: ws.clone(),
        webhook: Some(id),
        before,
        limit,
    });
    match webhook_request(&state, &ws, ClientRequest::Read(query)).await? {
        ClientResponse::Read(ShardReadResult::Webhook(WebhookResult::Deliveries {
            items,
            next_before,
        })) => Ok(Json(Page {
            items: items.into_iter().map(DeliveryView::from).collect(),
            next_cursor: next_before.map(|n| n.to_string()),
        })),
        other => Err(unexpected(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_with_a_host_are_accepted() {
        assert!(check_url("http://127.0.0.1:8080/hook").is_ok());
        assert!(check_url("https://example.com/h?x=1").is_ok());
        for bad in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "example.com",
            "http://u:p@h/",
            "javascript:alert(1)",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        assert!(check_event("task.created").is_ok());
        assert!(check_event("*").is_ok());
        assert!(check_event("Task.Created").is_err());
        assert!(check_event("task..x").is_err());
    }
}
