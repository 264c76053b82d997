//! The HTTP routes, one module per resource.

mod cluster;
mod context;
mod keys;
mod tasks;
mod topics;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use conclave_actors::{ClientRequest, ClientResponse};
use conclave_raft::error::CoreError;
use conclave_raft::{GroupId, ShardResponse};
use serde_json::{json, Value};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::trace::TraceLayer;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Client requests handled at once by one node.
pub const MAX_IN_FLIGHT_REQUESTS: usize = 8192;

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/context", get(context::list))
        .route(
            "/v1/context/{key}",
            put(context::put).get(context::get).delete(context::delete),
        )
        .route("/v1/topics", post(topics::create))
        .route("/v1/topics/{name}/publish", post(topics::publish))
        .route("/v1/topics/{name}/messages", get(topics::messages))
        .route("/v1/tasks", post(tasks::create))
        .route("/v1/tasks/{id}", get(tasks::get))
        .route("/v1/tasks/{id}/claim", post(tasks::claim))
        .route("/v1/api-keys", post(keys::create))
        .route("/v1/cluster/status", get(cluster::status))
        .route("/v1/cluster/locate", get(cluster::locate))
        .route("/v1/cluster/nodes/{id}/remove", post(cluster::remove_node))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        // Requests beyond this many in flight wait for a slot: memory stays bounded however
        // many clients connect.
        .layer(GlobalConcurrencyLimitLayer::new(MAX_IN_FLIGHT_REQUESTS))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> (StatusCode, Json<Value>) {
    if state.ready() {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready"})),
        )
    }
}

/// Runs a shard request on `group` through the router; a deterministic refusal becomes its
/// error (meta writes go through `Router::execute_meta`, which does the same).
async fn run(state: &AppState, group: GroupId, req: ClientRequest) -> ApiResult<ClientResponse> {
    match state.router.execute(group, req).await? {
        ClientResponse::Write(ShardResponse::Refused(e)) => Err(e.into()),
        other => Ok(other),
    }
}

/// The shard of an entity, or 503 before the cluster is bootstrapped.
fn shard(state: &AppState, ws: &str, kind: &str, name: &str) -> ApiResult<GroupId> {
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

fn unexpected(resp: ClientResponse) -> ApiError {
    ApiError::from(CoreError::internal(format!("unexpected response {resp:?}")))
}
