//! The HTTP routes, one module per resource.

mod agents;
mod artifacts;
mod cluster;
mod context;
mod embeddings;
mod invitations;
mod keys;
mod messages;
mod tasks;
mod tenancy;
mod topics;
mod users;
mod workspaces;
// teams
mod skills;
mod teams;
mod violations;
// audit
mod activity;
mod audit;
mod webhooks;
// live events
mod events;
mod live;
mod ws;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::{Json, Router};
use conclave_actors::{ClientRequest, ClientResponse};
use conclave_raft::error::CoreError;
use conclave_raft::{GroupId, ShardResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::trace::TraceLayer;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::error::{ApiError, ApiResult};
use crate::openapi::ApiDoc;
use crate::state::AppState;
use crate::validate::{self, KeyString};

/// Client requests handled at once by one node.
pub const MAX_IN_FLIGHT_REQUESTS: usize = 8192;

/// Default of the node's `max_artifact_bytes`, for the document built without a node.
const DEFAULT_MAX_ARTIFACT_BYTES: usize = 4 << 20;

/// Every documented route, each registered with its OpenAPI operation.
fn documented(max_artifact_bytes: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .merge(context::routes())
        .merge(embeddings::routes())
        .merge(artifacts::routes(max_artifact_bytes))
        .merge(keys::routes())
        .merge(workspaces::routes())
        .merge(users::routes())
        .merge(invitations::routes())
        .merge(cluster::routes())
        .merge(tasks::routes())
        .merge(topics::routes())
        .merge(agents::routes())
        .merge(messages::routes())
        // teams
        .merge(teams::routes())
        .merge(skills::routes())
        .merge(violations::routes())
        // a2a
        .merge(crate::a2a::routes())
        // audit
        .merge(audit::routes())
        .merge(activity::routes())
        .merge(webhooks::routes())
        // live events
        .merge(events::routes())
}

/// The OpenAPI document served at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    crate::openapi::finish(documented(DEFAULT_MAX_ARTIFACT_BYTES).split_for_parts().1)
}

/// The whole HTTP application: every documented route, `/openapi.json` and the `/docs` page.
pub fn app(state: AppState) -> Router {
    let (router, doc) = documented(state.max_artifact_bytes).split_for_parts();
    // Inside routing, so the audit layer sees the matched route template and path parameters.
    let router = router.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        crate::audit::layer,
    ));
    let rest = router
        // The WebSocket is not a REST operation: its frame protocol is in docs/realtime.md.
        .route("/ws", axum::routing::get(ws::upgrade))
        .merge(SwaggerUi::new("/docs").url("/openapi.json", crate::openapi::finish(doc)))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .with_state(state.clone());
    // MCP tools call the REST routes in-process (`rest`), inside the slot of their MCP request.
    rest.clone()
        .merge(crate::mcp::routes(state, rest))
        // Requests beyond this many in flight wait for a slot: memory stays bounded however
        // many clients connect.
        .layer(GlobalConcurrencyLimitLayer::new(MAX_IN_FLIGHT_REQUESTS))
        .layer(TraceLayer::new_for_http())
}

/// Health and readiness answers.
#[derive(Serialize, ToSchema)]
struct Health {
    /// `ok`, `ready` or `not ready`.
    status: &'static str,
}

/// Whether the process is up (it answers at all).
#[utoipa::path(get, path = "/healthz", tag = "Cluster",
    responses((status = 200, description = "The process is up", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Whether this node can serve requests: it knows the shard map and a meta leader.
#[utoipa::path(get, path = "/readyz", tag = "Cluster",
    responses((status = 200, description = "Ready", body = Health),
        (status = 503, description = "Not ready yet", body = Health)))]
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    if state.ready() {
        (StatusCode::OK, Json(Health { status: "ready" }))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "not ready",
            }),
        )
    }
}

/// `?cursor=&limit=` of a list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageQuery {
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<KeyString>)]
    pub cursor: Option<String>,
}

impl PageQuery {
    /// The page size asked for, validated.
    pub fn limit(&self) -> ApiResult<usize> {
        validate::limit(self.limit, DEFAULT_PAGE)
    }
}

/// Default page size.
pub const DEFAULT_PAGE: usize = 100;

/// One page of a list.
#[derive(Serialize, ToSchema)]
pub(crate) struct Page<T> {
    /// The items, in the list's order.
    pub items: Vec<T>,
    /// Pass as `cursor` to read the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// The first `limit` of `sorted` (which may hold more, gathered from several shards),
    /// with a cursor (the last item's `key`) when more remain.
    pub fn merged<S>(
        mut sorted: Vec<S>,
        limit: usize,
        key: impl Fn(&S) -> String,
        item: impl Fn(S) -> T,
    ) -> Self {
        let more = sorted.len() > limit;
        sorted.truncate(limit);
        let next_cursor = if more { sorted.last().map(key) } else { None };
        Page {
            items: sorted.into_iter().map(item).collect(),
            next_cursor,
        }
    }
}

/// The answer to a delete.
#[derive(Serialize, ToSchema)]
pub(crate) struct Deleted {
    /// Id, name or key of what was deleted.
    pub id: String,
    /// Always true.
    pub deleted: bool,
}

impl Deleted {
    /// The answer for `id`.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            deleted: true,
        }
    }
}

/// Asks every shard for one page (`request`) and merges the pages in the order of `key`;
/// `items` takes the items out of each answer. Each shard must be asked for one item more than
/// the page ([`Page::merged`] then sets `next_cursor` exactly when items remain anywhere).
async fn gather<T, K: Ord>(
    state: &AppState,
    request: impl Fn(GroupId) -> ClientRequest,
    items: impl Fn(ClientResponse) -> ApiResult<Vec<T>>,
    key: impl Fn(&T) -> K,
) -> ApiResult<Vec<T>> {
    let mut all = Vec::new();
    for answer in scatter(state, request).await? {
        all.extend(items(answer)?);
    }
    all.sort_by_key(&key);
    Ok(all)
}

/// Runs one request per shard (built by `request`) at once and gathers the answers in shard
/// order; any shard failing fails the whole (a partial list would silently miss items).
async fn scatter(
    state: &AppState,
    request: impl Fn(GroupId) -> ClientRequest,
) -> ApiResult<Vec<ClientResponse>> {
    let shards = state.groups().meta().read().expect("meta lock").shard_count;
    let calls = (1..=shards).map(|group| run(state, group, request(group)));
    futures::future::join_all(calls).await.into_iter().collect()
}

/// Runs a shard request on `group` through the router; a deterministic refusal becomes its
/// error (meta writes go through `Router::execute_meta`, which does the same).
pub(crate) async fn run(
    state: &AppState,
    group: GroupId,
    req: ClientRequest,
) -> ApiResult<ClientResponse> {
    match state.router.execute(group, req).await? {
        ClientResponse::Write(ShardResponse::Refused(e)) => Err(e.into()),
        other => Ok(other),
    }
}

/// The shard of an entity, or 503 before the cluster is bootstrapped.
pub(crate) fn shard(state: &AppState, ws: &str, kind: &str, name: &str) -> ApiResult<GroupId> {
    state
        .router
        .shard_of(ws, kind, name)
        .ok_or_else(|| ApiError::unavailable("the cluster is not bootstrapped yet"))
}

/// A client's JSON value as the text the state machine stores.
fn json_text(value: &Value) -> ApiResult<String> {
    serde_json::to_string(value).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Parses stored JSON text back into a value.
fn json_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

pub(crate) fn unexpected(resp: ClientResponse) -> ApiError {
    ApiError::from(CoreError::internal(format!("unexpected response {resp:?}")))
}
