//! MCP at `/mcp`: the Model Context Protocol's Streamable HTTP transport, with tools that
//! mirror the REST API.
//!
//! Both forms of the protocol are served on one endpoint:
//! - **the session form** (protocol 2025-11-25 and older): `initialize` answers with an
//!   `Mcp-Session-Id`; every later message carries it (and `MCP-Protocol-Version`);
//!   notifications answer 202; `DELETE` ends the session; `GET` answers 405 (the server sends
//!   nothing unasked in this form).
//! - **the stateless form** (2026-07-28): every request carries its protocol version and client
//!   capabilities in `params._meta`, mirrored by the `MCP-Protocol-Version`, `Mcp-Method` and
//!   (for `tools/call`) `Mcp-Name` headers; `server/discover` describes the server;
//!   `subscriptions/listen` opens an event stream.
//!
//! A request is of the stateless form when its method is `server/discover` or its `_meta`
//! names a protocol version; otherwise it belongs to a session.
//!
//! Sessions hold no server memory: the id is signed with the cluster secret ([`session`]), so
//! any node serves any session and a client behind a load balancer keeps its session when a
//! node dies. Ending one is recorded in the meta group, so it ends on every node.
//!
//! Every request is authenticated with the workspace API key (`Authorization: Bearer <key>`, or
//! HTTP Basic with the key as password, so a URL like `http://agent:<key>@host/mcp` works), and
//! a session is bound to the key that began it.
//!
//! Tools ([`catalog`]) run the REST operation they mirror in-process ([`dispatch`]), after the
//! skill rule ([`policy`]); every decided call passes [`audit::tool_called`].

pub mod audit;
pub mod catalog;
pub mod dispatch;
pub mod events;
pub mod jsonrpc;
pub mod policy;
pub mod session;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use conclave_raft::command::now_ms;
use conclave_raft::meta::MetaCommand;
use futures::StreamExt;
use serde_json::{json, Map, Value};
use tokio::sync::Semaphore;

use crate::auth::{authenticate, Caller};
use crate::error::ApiError;
use crate::state::AppState;
use audit::{Outcome, ToolCall};
use catalog::Catalog;
use dispatch::{BadArguments, RestAnswer, Via};
use jsonrpc::{Incoming, RpcError};
use session::SessionClaims;

/// Protocol versions of the session form, oldest first; the newest is offered by default.
pub const SESSION_VERSIONS: &[&str] = &["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// Protocol versions of the stateless form.
pub const STATELESS_VERSIONS: &[&str] = &["2026-07-28"];
/// Most messages in one JSON-RPC batch (session form, 2025-03-26).
pub const MAX_BATCH: usize = 32;
/// Most `subscriptions/listen` streams one node holds open at once.
pub const MAX_LISTENS: usize = 1024;
/// How long a `subscriptions/listen` stream stays open before it is closed gracefully.
pub const LISTEN_DURATION: Duration = Duration::from_secs(300);

/// `_meta` key of the protocol version (stateless form).
const PROTOCOL_VERSION_META: &str = "io.modelcontextprotocol/protocolVersion";
/// `_meta` key of the client capabilities (stateless form).
const CLIENT_CAPABILITIES_META: &str = "io.modelcontextprotocol/clientCapabilities";
/// `_meta` key of the server's identity.
const SERVER_INFO_META: &str = "io.modelcontextprotocol/serverInfo";
/// `_meta` key naming a subscription stream.
const SUBSCRIPTION_ID_META: &str = "io.modelcontextprotocol/subscriptionId";

const SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
const PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");
/// The agent a caller acts as, for the skill rule and the audit record.
const AGENT: HeaderName = HeaderName::from_static("conclave-agent");

const INSTRUCTIONS: &str = "Conclave coordinates AI agents: register an agent, send and read \
messages, create and claim tasks, publish to topics, share context and artifacts. Every tool \
mirrors a REST operation of the same workspace. Call wait_for_events to block until an agent \
has new messages, tasks or topic messages instead of polling.";

/// An answer that ends a request early (boxed: a `Response` is large).
type Refusal = Box<Response>;

/// What the MCP handlers share.
#[derive(Clone)]
struct Mcp {
    state: AppState,
    /// The REST routes, called in-process by tools.
    rest: Router,
    catalog: &'static Catalog,
    listens: Arc<Semaphore>,
}

/// The `/mcp` route. `rest` is the node's REST router (with its state), which tools call.
pub fn routes(state: AppState, rest: Router) -> Router {
    let limit = state.max_body_bytes;
    let mcp = Mcp {
        state,
        rest,
        catalog: Catalog::get(),
        listens: Arc::new(Semaphore::new(MAX_LISTENS)),
    };
    Router::new()
        .route(
            "/mcp",
            post(handle_post).get(handle_get).delete(handle_delete),
        )
        .layer(DefaultBodyLimit::max(limit))
        .with_state(mcp)
}

/// The caller of a request, and the `Authorization` header tools pass on (always `Bearer`).
fn caller(state: &AppState, headers: &HeaderMap) -> Result<(Caller, HeaderValue), Refusal> {
    let unauthorized = |e: ApiError| {
        let mut r = e.into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        Box::new(r)
    };
    let mut headers = headers.clone();
    if let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    {
        let key = STANDARD
            .decode(basic.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|pair| pair.split_once(':').map(|(_, key)| key.to_string()))
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                unauthorized(ApiError::unauthorized(
                    "basic credentials must be `<any>:<api key>`",
                ))
            })?;
        let bearer = HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|_| unauthorized(ApiError::unauthorized("invalid api key")))?;
        headers.insert(header::AUTHORIZATION, bearer);
    }
    let caller = authenticate(state, &headers).map_err(unauthorized)?;
    let auth = headers
        .get(header::AUTHORIZATION)
        .cloned()
        .expect("authenticated requests carry the header");
    Ok((caller, auth))
}

/// One request's context.
struct Ctx<'a> {
    mcp: &'a Mcp,
    caller: Caller,
    auth: HeaderValue,
    agent: Option<String>,
    /// The session's nonce (session form).
    session: Option<String>,
    /// Whether the stateless form is spoken.
    modern: bool,
}

/// A JSON answer with `status`.
fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// A JSON-RPC error answer with `status`.
fn rpc_error(status: StatusCode, id: &Value, e: &RpcError) -> Response {
    json_response(status, jsonrpc::error(id, e))
}

fn header_str<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn handle_post(
    State(mcp): State<Mcp>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (caller, auth) = match caller(&mcp.state, &headers) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let body = match body {
        Ok(b) => b,
        Err(r) => {
            let status = r.status();
            return rpc_error(
                status,
                &Value::Null,
                &RpcError::invalid_request(r.body_text().to_lowercase()),
            );
        }
    };
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                &Value::Null,
                &RpcError::new(jsonrpc::PARSE_ERROR, format!("invalid json: {e}")),
            )
        }
    };
    let agent = match header_str(&headers, &AGENT) {
        None => None,
        Some(a) if !a.is_empty() && a.len() <= 128 => Some(a.to_string()),
        Some(_) => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                &Value::Null,
                &RpcError::invalid_request("conclave-agent must name an agent (1 to 128 bytes)"),
            )
        }
    };
    let mut ctx = Ctx {
        mcp: &mcp,
        caller,
        auth,
        agent,
        session: None,
        modern: false,
    };
    match value {
        Value::Array(batch) => post_batch(&mut ctx, &headers, batch).await,
        Value::Object(obj) => {
            let method = obj.get("method").and_then(Value::as_str).unwrap_or("");
            if method == "initialize" {
                initialize(&ctx, Value::Object(obj))
            } else if is_stateless(&obj) {
                ctx.modern = true;
                post_stateless(&ctx, &headers, obj).await
            } else {
                match open_session(&mut ctx, &headers) {
                    Ok(()) => match one_message(&ctx, Value::Object(obj)).await {
                        Reply::None => StatusCode::ACCEPTED.into_response(),
                        Reply::Json(v) => json_response(StatusCode::OK, v),
                        Reply::Stream(r) => r,
                    },
                    Err(r) => *r,
                }
            }
        }
        _ => rpc_error(
            StatusCode::BAD_REQUEST,
            &Value::Null,
            &RpcError::invalid_request("the body must be a json-rpc message or a batch of them"),
        ),
    }
}

/// Whether a message is of the stateless form.
fn is_stateless(obj: &Map<String, Value>) -> bool {
    obj.get("method").and_then(Value::as_str) == Some("server/discover")
        || obj
            .get("params")
            .and_then(|p| p.get("_meta"))
            .and_then(|m| m.get(PROTOCOL_VERSION_META))
            .is_some()
}

/// A batch of session-form messages.
async fn post_batch(ctx: &mut Ctx<'_>, headers: &HeaderMap, batch: Vec<Value>) -> Response {
    if batch.is_empty() || batch.len() > MAX_BATCH {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            &Value::Null,
            &RpcError::invalid_request(format!("a batch holds 1 to {MAX_BATCH} messages")),
        );
    }
    if let Err(r) = open_session(ctx, headers) {
        return *r;
    }
    let mut answers = Vec::new();
    for msg in batch {
        let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
        if method == "initialize" || method == "server/discover" || method == "subscriptions/listen"
        {
            let id = msg.get("id").cloned().unwrap_or(Value::Null);
            answers.push(jsonrpc::error(
                &id,
                &RpcError::invalid_request(format!("{method} may not be part of a batch")),
            ));
            continue;
        }
        match one_message(ctx, msg).await {
            Reply::None => {}
            Reply::Json(v) => answers.push(v),
            Reply::Stream(_) => unreachable!("streams are refused in batches above"),
        }
    }
    if answers.is_empty() {
        StatusCode::ACCEPTED.into_response()
    } else {
        json_response(StatusCode::OK, Value::Array(answers))
    }
}

/// Checks the request's session: 400 without one, 404 for one that is unknown, expired, of
/// another key, or ended; 400 when `MCP-Protocol-Version` disagrees with it.
fn open_session(ctx: &mut Ctx<'_>, headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(id) = header_str(headers, &SESSION_ID) else {
        return Err(Box::new(rpc_error(
            StatusCode::BAD_REQUEST,
            &Value::Null,
            &RpcError::invalid_request(
                "missing mcp-session-id header: send initialize first, or use the stateless form",
            ),
        )));
    };
    let claims = verify_session(ctx.mcp, &ctx.caller, id)?;
    if let Some(v) = header_str(headers, &PROTOCOL_VERSION) {
        if v != claims.pv {
            return Err(Box::new(rpc_error(
                StatusCode::BAD_REQUEST,
                &Value::Null,
                &RpcError::invalid_request(format!(
                    "mcp-protocol-version {v:?} differs from the session's {:?}",
                    claims.pv
                )),
            )));
        }
    }
    ctx.session = Some(claims.n);
    Ok(())
}

/// The claims of session `id` if it is live for `caller`; else the 404 answer.
fn verify_session(mcp: &Mcp, caller: &Caller, id: &str) -> Result<SessionClaims, Refusal> {
    let not_found = |message: &str| {
        Box::new(rpc_error(
            StatusCode::NOT_FOUND,
            &Value::Null,
            &RpcError::invalid_request(message),
        ))
    };
    let claims = session::verify(
        mcp.state.cluster_secret.as_bytes(),
        id,
        &caller.key_id,
        now_ms(),
    )
    .map_err(|e| not_found(e.message()))?;
    let ended = mcp
        .state
        .groups()
        .meta()
        .read()
        .expect("meta lock")
        .mcp_sessions
        .is_ended(&claims.n);
    if ended || claims.ws != caller.workspace {
        return Err(not_found("the mcp session has ended"));
    }
    Ok(claims)
}

/// `initialize`: begins a session at the client's version if it is one of ours, else at the
/// newest.
fn initialize(ctx: &Ctx<'_>, msg: Value) -> Response {
    let (id, params) = match jsonrpc::parse(msg) {
        Ok(Incoming::Request { id, params, .. }) => (id, params),
        Ok(_) => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                &Value::Null,
                &RpcError::invalid_request("initialize must be a request with an id"),
            )
        }
        Err((id, e)) => return rpc_error(StatusCode::BAD_REQUEST, &id, &e),
    };
    let requested = params.get("protocolVersion").and_then(Value::as_str);
    let version = match requested {
        Some(v) if SESSION_VERSIONS.contains(&v) => v,
        _ => SESSION_VERSIONS[SESSION_VERSIONS.len() - 1],
    };
    let claims = session::new_claims(&ctx.caller.workspace, &ctx.caller.key_id, version, now_ms());
    let sid = session::sign(ctx.mcp.state.cluster_secret.as_bytes(), &claims);
    let result = json!({
        "protocolVersion": version,
        "capabilities": {"tools": {"listChanged": false}},
        "serverInfo": server_info(),
        "instructions": INSTRUCTIONS,
    });
    let mut resp = json_response(StatusCode::OK, jsonrpc::result(&id, result));
    resp.headers_mut().insert(
        SESSION_ID,
        HeaderValue::from_str(&sid).expect("session ids are header-safe"),
    );
    resp
}

fn server_info() -> Value {
    json!({"name": "conclave", "version": env!("CARGO_PKG_VERSION")})
}

/// A stateless-form request: the envelope and header checks, then the method.
async fn post_stateless(ctx: &Ctx<'_>, headers: &HeaderMap, obj: Map<String, Value>) -> Response {
    let id = obj.get("id").cloned().unwrap_or(Value::Null);
    if let Err(e) = check_envelope(&obj, headers) {
        return rpc_error(e.modern_status(), &id, &e);
    }
    match one_message(ctx, Value::Object(obj)).await {
        Reply::None => StatusCode::ACCEPTED.into_response(),
        Reply::Json(v) => {
            let status = match v.get("error") {
                Some(e) => RpcError::new(e["code"].as_i64().unwrap_or(0), "").modern_status(),
                None => StatusCode::OK,
            };
            json_response(status, v)
        }
        Reply::Stream(r) => r,
    }
}

/// The stateless form's checks, in its order: the `_meta` envelope, then the headers against
/// the body, then the version.
fn check_envelope(obj: &Map<String, Value>, headers: &HeaderMap) -> Result<(), RpcError> {
    let meta = obj
        .get("params")
        .and_then(|p| p.get("_meta"))
        .and_then(Value::as_object)
        .ok_or_else(|| {
            RpcError::invalid_params(format!(
                "params._meta must be an object carrying {PROTOCOL_VERSION_META:?} and {CLIENT_CAPABILITIES_META:?}"
            ))
        })?;
    let missing: Vec<&str> = [PROTOCOL_VERSION_META, CLIENT_CAPABILITIES_META]
        .into_iter()
        .filter(|k| !meta.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        return Err(RpcError::invalid_params(format!(
            "params._meta lacks {}",
            missing.join(", ")
        )));
    }
    let version = &meta[PROTOCOL_VERSION_META];
    let mismatch = |m: String| RpcError::new(jsonrpc::HEADER_MISMATCH, m);
    if header_str(headers, &PROTOCOL_VERSION)
        .map(|v| json!(v))
        .as_ref()
        != Some(version)
    {
        return Err(mismatch(
            "mcp-protocol-version header does not match params._meta's protocol version".into(),
        ));
    }
    let method = obj.get("method").and_then(Value::as_str);
    if header_str(headers, &MCP_METHOD) != method {
        return Err(mismatch(
            "mcp-method header does not match the method".into(),
        ));
    }
    if method == Some("tools/call") {
        if let Some(name) = obj
            .get("params")
            .and_then(|p| p.get("name"))
            .and_then(Value::as_str)
        {
            let header = header_str(headers, &MCP_NAME).map(decode_header_value);
            if header.as_deref() != Some(name) {
                return Err(mismatch(
                    "mcp-name header does not match the tool name".into(),
                ));
            }
        }
    }
    let Some(version) = version.as_str() else {
        return Err(RpcError::invalid_params(
            "the protocol version must be a string",
        ));
    };
    if !STATELESS_VERSIONS.contains(&version) {
        return Err(RpcError::new(
            jsonrpc::UNSUPPORTED_PROTOCOL_VERSION,
            "unsupported protocol version",
        )
        .with_data(json!({"supported": STATELESS_VERSIONS, "requested": version})));
    }
    Ok(())
}

/// A header value as MCP encodes it: plain, or `=?base64?<utf-8 in base64>?=`.
fn decode_header_value(v: &str) -> String {
    v.strip_prefix("=?base64?")
        .and_then(|rest| rest.strip_suffix("?="))
        .and_then(|b64| STANDARD.decode(b64).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .unwrap_or_else(|| v.to_string())
}

/// What one message gets back.
enum Reply {
    /// Nothing (a notification or a response).
    None,
    /// A JSON-RPC answer.
    Json(Value),
    /// An event stream (`subscriptions/listen`).
    Stream(Response),
}

/// Answers one message of an open session or of the stateless form.
async fn one_message(ctx: &Ctx<'_>, msg: Value) -> Reply {
    let (id, method, params) = match jsonrpc::parse(msg) {
        Ok(Incoming::Request { id, method, params }) => (id, method, params),
        Ok(Incoming::Notification { .. } | Incoming::Response) => return Reply::None,
        Err((id, e)) => return Reply::Json(jsonrpc::error(&id, &e)),
    };
    let result = match method.as_str() {
        "ping" => Ok(json!({})),
        "tools/list" => Ok(tools_list(ctx)),
        "tools/call" => call_tool(ctx, &params).await,
        "server/discover" if ctx.modern => Ok(discover()),
        "subscriptions/listen" if ctx.modern => match listen(ctx, &id, &params) {
            Ok(stream) => return Reply::Stream(stream),
            Err(e) => Err(e),
        },
        "initialize" => Err(RpcError::invalid_request(
            "initialize is answered only as a single message",
        )),
        other => Err(RpcError::new(
            jsonrpc::METHOD_NOT_FOUND,
            format!("method {other:?} not found"),
        )),
    };
    Reply::Json(match result {
        Ok(mut r) => {
            if ctx.modern {
                r["resultType"] = json!("complete");
            }
            jsonrpc::result(&id, r)
        }
        Err(e) => jsonrpc::error(&id, &e),
    })
}

/// `server/discover`.
fn discover() -> Value {
    json!({
        "supportedVersions": STATELESS_VERSIONS,
        "capabilities": {"tools": {"listChanged": false}},
        "serverInfo": server_info(),
        "instructions": INSTRUCTIONS,
        "ttlMs": 60_000,
        "cacheScope": "public",
        "_meta": {SERVER_INFO_META: server_info()},
    })
}

/// `tools/list`: every tool, in name order, in one page.
fn tools_list(ctx: &Ctx<'_>) -> Value {
    let tools: Vec<Value> = ctx
        .mcp
        .catalog
        .tools()
        .iter()
        .map(|t| t.listing())
        .collect();
    let mut r = json!({"tools": tools});
    if ctx.modern {
        r["ttlMs"] = json!(60_000);
        r["cacheScope"] = json!("public");
    }
    r
}

/// `tools/call`: the skill rule, then the tool; business errors are results with `isError`.
async fn call_tool(ctx: &Ctx<'_>, params: &Map<String, Value>) -> Result<Value, RpcError> {
    let name = params
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::invalid_params("params.name must name a tool"))?;
    let tool = ctx
        .mcp
        .catalog
        .tool(name)
        .ok_or_else(|| RpcError::invalid_params(format!("unknown tool {name:?}")))?;
    let args = match params.get("arguments") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(a)) => a.clone(),
        Some(_) => return Err(RpcError::invalid_params("arguments must be an object")),
    };
    let record = |outcome| async move {
        audit::tool_called(
            &ctx.mcp.state,
            &ToolCall {
                caller: &ctx.caller,
                agent: ctx.agent.as_deref(),
                tool: tool.name,
                session: ctx.session.as_deref(),
                outcome,
            },
        )
        .await
    };
    if let Some(skill) = tool.skill {
        match policy::enforce_tool(
            &ctx.mcp.state,
            &ctx.caller,
            ctx.agent.as_deref(),
            tool.name,
            skill,
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(message)) => {
                record(Outcome::Refused).await;
                return Ok(tool_error(json!({"error": {
                    "code": "policy_violation", "status": 403, "message": message}})));
            }
            Err(e) => {
                record(Outcome::Failed {
                    status: e.status.as_u16(),
                })
                .await;
                return Ok(tool_error(json!({"error": {
                    "code": e.code, "status": e.status.as_u16(), "message": e.message}})));
            }
        }
    }
    let via = Via::Mcp {
        tool: tool.name.to_string(),
        session: ctx.session.clone(),
    };
    let answer = match &tool.route {
        Some(route) => match dispatch::build_request(route, &args, Some(&ctx.auth), via) {
            Ok(req) => Ok(dispatch::send(&ctx.mcp.rest, req).await),
            Err(e) => Err(e),
        },
        None => match events::parse_args(&args) {
            Ok(wait) => Ok(events::wait(
                &ctx.mcp.state,
                &ctx.mcp.rest,
                &ctx.caller.workspace,
                Some(&ctx.auth),
                ctx.session.as_deref(),
                wait,
            )
            .await),
            Err(e) => Err(e),
        },
    };
    match answer {
        Err(BadArguments(message)) => {
            record(Outcome::BadArguments).await;
            Ok(tool_error(json!({"error": {
                "code": "bad_request", "status": 400, "message": message}})))
        }
        Ok(RestAnswer { status, body }) => {
            let code = status.as_u16();
            if status.is_success() {
                record(Outcome::Ok { status: code }).await;
                Ok(tool_result(body, false))
            } else {
                record(Outcome::Failed { status: code }).await;
                Ok(tool_result(body, true))
            }
        }
    }
}

fn tool_error(body: Value) -> Value {
    tool_result(body, true)
}

/// A `CallToolResult`: the answer as JSON text, and as structured content when an object.
fn tool_result(body: Value, is_error: bool) -> Value {
    let text = match &body {
        Value::Null => "{}".to_string(),
        other => other.to_string(),
    };
    let mut r = json!({"content": [{"type": "text", "text": text}], "isError": is_error});
    if body.is_object() {
        r["structuredContent"] = body;
    }
    r
}

/// `subscriptions/listen`: acknowledges the notifications it will honour (none change: the
/// tool list is fixed, so `toolsListChanged` is honoured and never fires), keeps the stream
/// alive, and closes it gracefully after [`LISTEN_DURATION`].
fn listen(ctx: &Ctx<'_>, id: &Value, params: &Map<String, Value>) -> Result<Response, RpcError> {
    let filter = params
        .get("notifications")
        .and_then(Value::as_object)
        .ok_or_else(|| RpcError::invalid_params("params.notifications must be an object"))?;
    let permit = ctx.mcp.listens.clone().try_acquire_owned().map_err(|_| {
        RpcError::new(
            jsonrpc::INTERNAL_ERROR,
            "too many open subscriptions on this node",
        )
    })?;
    let mut honoured = Map::new();
    if filter.get("toolsListChanged") == Some(&json!(true)) {
        honoured.insert("toolsListChanged".into(), json!(true));
    }
    let ack = json!({
        "jsonrpc": "2.0",
        "method": "notifications/subscriptions/acknowledged",
        "params": {"notifications": honoured, "_meta": {SUBSCRIPTION_ID_META: id}},
    });
    let end = jsonrpc::result(
        id,
        json!({"resultType": "complete", "_meta": {SUBSCRIPTION_ID_META: id, SERVER_INFO_META: server_info()}}),
    );
    let events = futures::stream::iter([Ok::<_, Infallible>(
        Event::default().event("message").data(ack.to_string()),
    )])
    .chain(futures::stream::once(async move {
        tokio::time::sleep(LISTEN_DURATION).await;
        drop(permit);
        Ok(Event::default().event("message").data(end.to_string()))
    }));
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// `GET /mcp`: this server sends nothing unasked in the session form, so no stream: 405.
async fn handle_get(State(mcp): State<Mcp>, headers: HeaderMap) -> Response {
    if let Err(r) = caller(&mcp.state, &headers) {
        return *r;
    }
    let mut r = ApiError::method_not_allowed().into_response();
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST, DELETE"));
    r
}

/// `DELETE /mcp`: ends the session on every node (recorded in the meta group).
async fn handle_delete(State(mcp): State<Mcp>, headers: HeaderMap) -> Response {
    let (caller, _) = match caller(&mcp.state, &headers) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let Some(id) = header_str(&headers, &SESSION_ID) else {
        return ApiError::bad_request("missing mcp-session-id header").into_response();
    };
    let claims = match verify_session(&mcp, &caller, id) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let cmd = MetaCommand::EndMcpSession {
        nonce: claims.n,
        expires_at: claims.exp,
    };
    match mcp.state.router.execute_meta(cmd).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_static(k),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn request(method: &str, version: &str, name: Option<&str>) -> Map<String, Value> {
        let mut params = json!({"_meta": {
            PROTOCOL_VERSION_META: version,
            CLIENT_CAPABILITIES_META: {},
        }});
        if let Some(n) = name {
            params["name"] = json!(n);
        }
        json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
            .as_object()
            .unwrap()
            .clone()
    }

    #[test]
    fn a_coherent_stateless_request_passes() {
        let req = request("tools/call", "2026-07-28", Some("whoami"));
        let h = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "whoami"),
        ]);
        assert!(is_stateless(&req));
        assert_eq!(check_envelope(&req, &h), Ok(()));
        // The name may come base64-encoded.
        let h = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?d2hvYW1p?="),
        ]);
        assert_eq!(check_envelope(&req, &h), Ok(()));
    }

    #[test]
    fn stateless_refusals_follow_the_ladder() {
        let ok = [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/list"),
        ];
        // No envelope.
        let mut bare = request("tools/list", "2026-07-28", None);
        bare["params"] = json!({});
        assert_eq!(
            check_envelope(&bare, &headers(&ok)).unwrap_err().code,
            jsonrpc::INVALID_PARAMS
        );
        // Headers that disagree with the body.
        let req = request("tools/list", "2026-07-28", None);
        for h in [
            headers(&[("mcp-method", "tools/list")]),
            headers(&[
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "ping"),
            ]),
        ] {
            let e = check_envelope(&req, &h).unwrap_err();
            assert_eq!(
                (e.code, e.modern_status()),
                (jsonrpc::HEADER_MISMATCH, StatusCode::BAD_REQUEST)
            );
        }
        let call = request("tools/call", "2026-07-28", Some("whoami"));
        let h = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "list_tasks"),
        ]);
        assert_eq!(
            check_envelope(&call, &h).unwrap_err().code,
            jsonrpc::HEADER_MISMATCH
        );
        // An unknown version names the supported ones.
        let old = request("tools/list", "2099-01-01", None);
        let h = headers(&[
            ("mcp-protocol-version", "2099-01-01"),
            ("mcp-method", "tools/list"),
        ]);
        let e = check_envelope(&old, &h).unwrap_err();
        assert_eq!(e.code, jsonrpc::UNSUPPORTED_PROTOCOL_VERSION);
        assert_eq!(e.data.unwrap()["supported"], json!(STATELESS_VERSIONS));
    }

    #[test]
    fn session_messages_are_not_stateless() {
        let msg = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}});
        assert!(!is_stateless(msg.as_object().unwrap()));
        let bare = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
        assert!(!is_stateless(bare.as_object().unwrap()));
        let discover = json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover"});
        assert!(is_stateless(discover.as_object().unwrap()));
    }

    #[test]
    fn tool_results_carry_text_and_structured_content() {
        let r = tool_result(json!({"id": "x"}), false);
        assert_eq!(r["isError"], false);
        assert_eq!(r["structuredContent"], json!({"id": "x"}));
        assert_eq!(r["content"][0]["text"], "{\"id\":\"x\"}");
        let r = tool_result(json!([1]), true);
        assert_eq!(r["isError"], true);
        assert!(r.get("structuredContent").is_none());
    }
}
