//! A2A (Agent2Agent) v1.0, and 0.3 for clients that send no `A2A-Version` header: every agent
//! registered with a `card` can be discovered and messaged by any A2A client.
//!
//! URL layout (on every node):
//! - `GET /a2a/{workspace}/agents/{name}/.well-known/agent-card.json`: the agent card, public
//!   (registering a card is the agent's consent to be discovered); it names the JSON-RPC
//!   endpoint on the node that served it and the bearer scheme.
//! - `POST /a2a/{workspace}/agents/{name}`: JSON-RPC 2.0, `Authorization: Bearer <api key>` of
//!   that workspace. v1.0 methods `SendMessage`, `SendStreamingMessage`, `GetTask`,
//!   `ListTasks`, `CancelTask`, `SubscribeToTask`; 0.3 methods `message/send`,
//!   `message/stream`, `tasks/get`, `tasks/cancel`, `tasks/resubscribe`.
//!
//! An A2A task is a Conclave task of the workspace's queue whose `metadata.a2a` names the agent
//! and the A2A context; a message sent to the agent lands in its inbox with `metadata.a2a`
//! naming that task, so the agent claims it, works it and finishes it with the ordinary task
//! API, and the A2A client sees each step as a state change. The mapping of statuses to A2A
//! states is [`protocol::state`]; `docs/a2a.md` has the whole contract.
//!
//! Invariants: bad input is a JSON-RPC -32602 (or a 4xx before the JSON-RPC layer) and changes
//! nothing; a task of another agent, another workspace or not made through A2A is
//! TaskNotFound; streams are bounded in number per node and in duration.

pub mod card;
pub mod protocol;
mod stream;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use conclave_actors::{ClientRequest, ClientResponse};
use conclave_raft::command::now_ms;
use conclave_raft::meta::Scope;
use conclave_raft::shard::{
    shard_of_task_id, NewMessage, Priority, Task, TaskMode, TaskPatch, TaskStatus,
};
use conclave_raft::{ShardCommand, ShardQuery, ShardReadResult, ShardResponse};
use serde::Serialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::protocol::{Origin, RpcError, Version};
use crate::auth::{random_token, Caller};
use crate::error::{ApiError, ApiPath, ApiResult};
use crate::routes::{run, shard, unexpected};
use crate::state::AppState;
use crate::validate;

const TAG: &str = "A2A";

/// The queue A2A tasks go to (the workspace's queue).
const QUEUE: &str = "default";
/// Largest message accepted by `SendMessage`, bytes of JSON (as for `POST /v1/messages`).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Largest first message kept on its task for `GetTask`'s history, bytes of JSON; larger
/// ones are in the agent's inbox only.
pub const MAX_HISTORY_BYTES: usize = 8 * 1024;
/// Default and largest page of `ListTasks`.
pub const DEFAULT_LIST_PAGE: usize = 50;
/// Largest page of `ListTasks`.
pub const MAX_LIST_PAGE: usize = 100;
/// Most tasks of the workspace one `ListTasks` call looks at; a page may then be short, and
/// its `nextPageToken` continues from the last one looked at.
pub const MAX_LIST_SCAN: usize = 5_000;
/// Longest task title made from a message's text, characters.
const TITLE_CHARS: usize = 200;

/// The routes of this module, with their documentation.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(agent_card))
        .routes(routes!(rpc))
}

/// The workspace and agent of a path: 404 unless both could exist and the workspace does.
fn path_target(state: &AppState, ws: &str, name: &str) -> ApiResult<()> {
    let missing = || ApiError::not_found(format!("agent {name:?} not found"));
    validate::name("workspace", ws).map_err(|_| missing())?;
    validate::agent_name("name", name).map_err(|_| missing())?;
    let meta = state.groups().meta().read().expect("meta lock");
    if !meta.workspaces.contains_key(ws) {
        return Err(missing());
    }
    Ok(())
}

/// The agent's description and card text: 404 when it has no card.
async fn agent_with_card(state: &AppState, ws: &str, name: &str) -> ApiResult<(String, String)> {
    let group = shard(state, ws, "agent", name)?;
    let q = ShardQuery::AgentCard {
        ws: ws.to_string(),
        name: name.to_string(),
    };
    match run(state, group, ClientRequest::Read(q)).await? {
        ClientResponse::Read(ShardReadResult::AgentCard { agent, card }) => match card {
            Some(c) => Ok((agent.description, c.card)),
            None => Err(ApiError::not_found(format!(
                "agent {name:?} has no A2A card: register it with a `card` to make it reachable over A2A"
            ))),
        },
        other => Err(unexpected(other)),
    }
}

/// This node's JSON-RPC URL for the agent.
fn endpoint(state: &AppState, ws: &str, name: &str) -> ApiResult<String> {
    let groups = state.groups();
    let meta = groups.meta().read().expect("meta lock");
    let addr = meta
        .nodes
        .get(&groups.node_id())
        .map(|n| n.info.api_addr.clone())
        .ok_or_else(|| ApiError::unavailable("this node has not joined the cluster yet"))?;
    let base = if addr.starts_with("http://") || addr.starts_with("https://") {
        addr
    } else {
        format!("http://{addr}")
    };
    Ok(format!(
        "{}/a2a/{ws}/agents/{name}",
        base.trim_end_matches('/')
    ))
}

/// Serves the A2A agent card of an agent registered with a `card`: v1.0 form when the request
/// says `A2A-Version: 1.0`, else the 0.3 form. Public: registering a card makes it public.
#[utoipa::path(get, path = "/a2a/{workspace}/agents/{name}/.well-known/agent-card.json", tag = TAG,
    security(()),
    params(("workspace" = String, Path, description = "The workspace's id"),
        ("name" = String, Path, description = "The agent's name"),
        ("A2A-Version" = Option<String>, Header, description = "`1.0` for the v1.0 card; none or `0.3` for the 0.3 card")),
    responses((status = 200, description = "The agent card", body = Object)))]
async fn agent_card(
    State(state): State<AppState>,
    ApiPath((ws, name)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    path_target(&state, &ws, &name)?;
    let version = Version::of(&headers).map_err(|v| {
        ApiError::bad_request(format!(
            "A2A-Version {v:?} is not supported; use 1.0, or 0.3 (no header)"
        ))
    })?;
    let (description, card) = agent_with_card(&state, &ws, &name).await?;
    let url = endpoint(&state, &ws, &name)?;
    Ok(Json(card::build(version, &name, &description, &card, &url)))
}

/// A JSON-RPC 2.0 request (documentation only: the handler reads the body itself to answer
/// JSON-RPC errors in JSON-RPC form).
#[derive(Serialize, ToSchema)]
struct JsonRpcRequest {
    /// Always `2.0`.
    jsonrpc: String,
    /// The request id, echoed in the answer.
    #[schema(value_type = Object)]
    id: Value,
    /// An A2A method (see the tag's description).
    method: String,
    /// The method's parameters.
    #[schema(value_type = Object)]
    params: Value,
}

/// The A2A JSON-RPC endpoint of an agent. Protocol errors are JSON-RPC errors in a 200 answer;
/// `SendStreamingMessage` and `SubscribeToTask` (`message/stream`, `tasks/resubscribe`)
/// answer a `text/event-stream` of JSON-RPC responses.
#[utoipa::path(post, path = "/a2a/{workspace}/agents/{name}", tag = TAG,
    params(("workspace" = String, Path, description = "The workspace's id (the API key's)"),
        ("name" = String, Path, description = "The agent's name"),
        ("A2A-Version" = Option<String>, Header, description = "`1.0`; none means 0.3")),
    request_body = JsonRpcRequest,
    responses((status = 200, description = "A JSON-RPC response, or an event stream of them",
        content((Object = "application/json"), (String = "text/event-stream")))))]
async fn rpc(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((ws, name)): ApiPath<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body = body.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large("request body is too large")
        } else {
            ApiError::bad_request(format!("unreadable body: {}", e.body_text()))
        }
    })?;
    path_target(&state, &ws, &name)?;
    if caller.workspace != ws {
        // Another workspace's agents do not exist for this key.
        return Err(ApiError::not_found(format!("agent {name:?} not found")));
    }
    agent_with_card(&state, &ws, &name).await?;
    let header_version = Version::of(&headers);
    let reply_version = header_version.clone().unwrap_or(Version::V1);
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            let err = RpcError::parse(format!("the body is not JSON: {e}"));
            return Ok(Json(err.response(reply_version, &Value::Null)).into_response());
        }
    };
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let fail = |e: RpcError| Ok(Json(e.response(reply_version, &id)).into_response());
    let Some(obj) = request.as_object() else {
        return fail(RpcError::invalid_request(
            "the body must be one JSON-RPC request object (batches are not supported)",
        ));
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return fail(RpcError::invalid_request("jsonrpc must be \"2.0\""));
    }
    if !matches!(obj.get("id"), Some(Value::String(_) | Value::Number(_))) {
        return fail(RpcError::invalid_request(
            "id must be a string or a number (notifications are not supported)",
        ));
    }
    let Some(method) = obj.get("method").and_then(Value::as_str) else {
        return fail(RpcError::invalid_request("method must be a string"));
    };
    let version = match header_version {
        Ok(v) => v,
        Err(v) => return fail(RpcError::version_not_supported(&v)),
    };
    let params = match obj.get("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p.clone(),
        Some(_) => return fail(RpcError::invalid_params("params must be an object")),
    };
    let Some(m) = Method::of(method, version) else {
        let hint = match version {
            Version::V1 => "",
            Version::V03 => " (without an A2A-Version header the 0.3 method names apply; send `A2A-Version: 1.0` for the v1.0 names)",
        };
        return fail(RpcError::method_not_found(format!(
            "method {method:?} not found{hint}"
        )));
    };
    caller.require(m.scope())?;
    let target = Target {
        state,
        caller,
        ws,
        agent: name,
        version,
    };
    match target.call(m, &params, &id).await {
        Ok(Reply::Json(v)) => Ok(Json(protocol::result(&id, v)).into_response()),
        Ok(Reply::Stream(r)) => Ok(r),
        Err(e) => fail(e),
    }
}

/// The A2A methods, by their meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Send,
    SendStreaming,
    Get,
    List,
    Cancel,
    Subscribe,
    PushConfig,
    ExtendedCard,
}

impl Method {
    /// The method called `name` in protocol `version`.
    fn of(name: &str, version: Version) -> Option<Method> {
        Some(match (version, name) {
            (Version::V1, "SendMessage") | (Version::V03, "message/send") => Method::Send,
            (Version::V1, "SendStreamingMessage") | (Version::V03, "message/stream") => {
                Method::SendStreaming
            }
            (Version::V1, "GetTask") | (Version::V03, "tasks/get") => Method::Get,
            (Version::V1, "ListTasks") | (Version::V03, "tasks/list") => Method::List,
            (Version::V1, "CancelTask") | (Version::V03, "tasks/cancel") => Method::Cancel,
            (Version::V1, "SubscribeToTask") | (Version::V03, "tasks/resubscribe") => {
                Method::Subscribe
            }
            (
                Version::V1,
                "CreateTaskPushNotificationConfig"
                | "GetTaskPushNotificationConfig"
                | "ListTaskPushNotificationConfigs"
                | "DeleteTaskPushNotificationConfig",
            ) => Method::PushConfig,
            (Version::V03, m) if m.starts_with("tasks/pushNotificationConfig/") => {
                Method::PushConfig
            }
            (Version::V1, "GetExtendedAgentCard")
            | (Version::V03, "agent/getAuthenticatedExtendedCard") => Method::ExtendedCard,
            _ => return None,
        })
    }

    /// The key scope the method needs.
    fn scope(self) -> Scope {
        match self {
            Method::Send | Method::SendStreaming | Method::Cancel => Scope::Full,
            _ => Scope::Read,
        }
    }
}

/// A method's answer: one result, or an event stream.
enum Reply {
    Json(Value),
    Stream(Response),
}

/// One JSON-RPC call on one agent.
struct Target {
    state: AppState,
    caller: Caller,
    ws: String,
    agent: String,
    version: Version,
}

impl Target {
    async fn call(
        &self,
        m: Method,
        params: &Map<String, Value>,
        id: &Value,
    ) -> Result<Reply, RpcError> {
        match m {
            Method::Send => {
                let history = history_length(params)?;
                let (task, origin) = self.send(params).await?;
                Ok(Reply::Json(protocol::task_result(
                    &task,
                    &origin,
                    self.version,
                    history,
                )))
            }
            Method::SendStreaming => {
                let (task, origin) = self.send(params).await?;
                self.stream(task, origin, id)
            }
            Method::Get => {
                let tid = protocol::req_id(params, "id")?;
                let history = protocol::opt_uint(params, "historyLength")?;
                let (task, origin) = self.load(&tid).await?;
                Ok(Reply::Json(protocol::render_task(
                    &task,
                    &origin,
                    self.version,
                    history,
                )))
            }
            Method::List => self.list(params).await.map(Reply::Json),
            Method::Cancel => {
                let tid = protocol::req_id(params, "id")?;
                let (task, origin) = self.cancel(&tid).await?;
                Ok(Reply::Json(protocol::render_task(
                    &task,
                    &origin,
                    self.version,
                    None,
                )))
            }
            Method::Subscribe => {
                let tid = protocol::req_id(params, "id")?;
                let (task, origin) = self.load(&tid).await?;
                if task.status.is_terminal() {
                    return Err(RpcError::unsupported(format!(
                        "task {tid} is {}: a finished task has no updates to subscribe to",
                        protocol::state(task.status, self.version)
                    )));
                }
                self.stream(task, origin, id)
            }
            Method::PushConfig => Err(RpcError::push_not_supported()),
            Method::ExtendedCard => Err(RpcError::no_extended_card()),
        }
    }

    fn stream(&self, task: Task, origin: Origin, id: &Value) -> Result<Reply, RpcError> {
        stream::follow(
            self.state.clone(),
            self.ws.clone(),
            task,
            origin,
            self.version,
            id.clone(),
        )
        .map(Reply::Stream)
        .map_err(RpcError::from)
    }

    /// Reads a task of this agent made through A2A, as it stands now.
    async fn load(&self, id: &str) -> Result<(Task, Origin), RpcError> {
        let count = self
            .state
            .groups()
            .meta()
            .read()
            .expect("meta lock")
            .shard_count;
        let group = shard_of_task_id(id)
            .filter(|s| (1..=count).contains(s))
            .ok_or_else(|| RpcError::task_not_found(id))?;
        let q = ShardQuery::TaskGet {
            ws: self.ws.clone(),
            id: id.to_string(),
        };
        let task = match run(&self.state, group, ClientRequest::Read(q)).await {
            Ok(ClientResponse::Read(ShardReadResult::Task(t))) => t.at(now_ms()),
            Ok(other) => return Err(RpcError::from(unexpected(other))),
            Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => {
                return Err(RpcError::task_not_found(id))
            }
            Err(e) => return Err(RpcError::internal(e.message)),
        };
        match Origin::of(&task) {
            Some(o) if o.agent == self.agent => Ok((task, o)),
            _ => Err(RpcError::task_not_found(id)),
        }
    }

    /// `SendMessage`: a new task (or a follow-up to one named by `message.taskId`) and the
    /// message in the agent's inbox. Everything is checked before anything is written.
    async fn send(&self, params: &Map<String, Value>) -> Result<(Task, Origin), RpcError> {
        let msg = protocol::in_message(params, self.version)?;
        if let Some(cfg) = params.get("configuration").filter(|c| !c.is_null()) {
            let cfg = cfg
                .as_object()
                .ok_or_else(|| RpcError::invalid_params("configuration must be an object"))?;
            let push = ["taskPushNotificationConfig", "pushNotificationConfig"];
            if push
                .iter()
                .any(|k| cfg.get(*k).is_some_and(|v| !v.is_null()))
            {
                return Err(RpcError::push_not_supported());
            }
        }
        if let Some(md) = params.get("metadata").filter(|v| !v.is_null()) {
            if !md.is_object() {
                return Err(RpcError::invalid_params("metadata must be an object"));
            }
        }
        let size = serde_json::to_string(&msg.message).map_or(usize::MAX, |s| s.len());
        if size > MAX_MESSAGE_BYTES {
            return Err(RpcError::invalid_params(format!(
                "message must be at most {MAX_MESSAGE_BYTES} bytes of JSON"
            )));
        }
        let (task, origin) = match &msg.task_id {
            Some(tid) => {
                let (task, origin) = self.load(tid).await?;
                if task.status.is_terminal() {
                    return Err(RpcError::unsupported(format!(
                        "task {tid} is {}: send a new message without taskId to start a new task",
                        protocol::state(task.status, self.version)
                    )));
                }
                if msg
                    .context_id
                    .as_ref()
                    .is_some_and(|c| *c != origin.context_id)
                {
                    return Err(RpcError::invalid_params(format!(
                        "task {tid} belongs to context {:?}",
                        origin.context_id
                    )));
                }
                (task, origin)
            }
            None => self.create_task(&msg).await?,
        };
        if let Err(e) = self.deliver(&msg, &task, &origin).await {
            if msg.task_id.is_none() {
                // A task nobody was told about would wait forever: withdraw it.
                self.withdraw(&task.id).await;
            }
            return Err(e);
        }
        Ok((task, origin))
    }

    async fn create_task(&self, msg: &protocol::InMessage) -> Result<(Task, Origin), RpcError> {
        let context_id = msg
            .context_id
            .clone()
            .unwrap_or_else(|| random_token("ctx_"));
        let text = msg.text();
        let first_line = text.lines().map(str::trim).find(|l| !l.is_empty());
        let title = match first_line {
            Some(l) => {
                let short: String = l.chars().take(TITLE_CHARS).collect();
                format!("A2A: {short}")
            }
            None => format!("A2A message {}", msg.message_id),
        };
        let description: String = text.chars().take(validate::MAX_DESCRIPTION_CHARS).collect();
        let mut a2a = json!({
            "agent": self.agent,
            "contextId": context_id,
            "messageId": msg.message_id,
        });
        let message = Value::Object(msg.message.clone());
        if serde_json::to_string(&message).is_ok_and(|s| s.len() <= MAX_HISTORY_BYTES) {
            a2a["message"] = message.clone();
        }
        let metadata = json!({ "a2a": a2a }).to_string();
        let group = shard(&self.state, &self.ws, "queue", QUEUE)?;
        let cmd = ShardCommand::TaskCreate {
            ws: self.ws.clone(),
            queue: QUEUE.to_string(),
            title,
            description,
            mode: TaskMode::Auto,
            priority: 0,
            metadata,
            created_by: self.caller.key_id.clone(),
        };
        let task = match run(&self.state, group, ClientRequest::Write(cmd)).await? {
            ClientResponse::Write(ShardResponse::Task(t)) => *t,
            other => return Err(RpcError::from(unexpected(other))),
        };
        let origin = Origin {
            agent: self.agent.clone(),
            context_id,
            message: a2a.get("message").cloned(),
        };
        Ok((task, origin))
    }

    /// Puts the message in the agent's inbox, linked to its task.
    async fn deliver(
        &self,
        msg: &protocol::InMessage,
        task: &Task,
        origin: &Origin,
    ) -> Result<(), RpcError> {
        let mut body = msg.message.clone();
        body.insert("contextId".into(), json!(origin.context_id));
        body.insert("taskId".into(), json!(task.id));
        let protocol_version = match self.version {
            Version::V1 => "1.0",
            Version::V03 => "0.3",
        };
        let metadata = json!({"a2a": {
            "taskId": task.id,
            "contextId": origin.context_id,
            "messageId": msg.message_id,
            "protocolVersion": protocol_version,
            "keyId": self.caller.key_id,
        }});
        let to = format!("agent:{}", self.agent);
        let group = shard(&self.state, &self.ws, "agent", &self.agent)?;
        let cmd = ShardCommand::MessageCreate {
            ws: self.ws.clone(),
            message: NewMessage {
                to,
                from: None,
                body: Value::Object(body).to_string(),
                metadata: metadata.to_string(),
                priority: Priority::Normal,
                reply_to: None,
                thread_id: None,
            },
            idempotency: None,
            recipients: vec![self.agent.clone()],
            deliver_here: vec![self.agent.clone()],
        };
        match run(&self.state, group, ClientRequest::Write(cmd)).await? {
            ClientResponse::Write(ShardResponse::Message { delivered, .. })
                if delivered.iter().any(|(a, _)| *a == self.agent) =>
            {
                Ok(())
            }
            ClientResponse::Write(ShardResponse::Message { .. }) => {
                Err(RpcError::internal(format!(
                    "agent {:?} was removed while the message was sent",
                    self.agent
                )))
            }
            other => Err(RpcError::from(unexpected(other))),
        }
    }

    /// Cancels a task whose message could not be delivered (best effort: the error the client
    /// gets says what happened either way).
    async fn withdraw(&self, id: &str) {
        if let Err(e) = self
            .set_cancelled(id, "the A2A message could not be delivered")
            .await
        {
            tracing::warn!(task = id, error = %e.message, "could not withdraw an undelivered a2a task");
        }
    }

    async fn set_cancelled(&self, id: &str, note: &str) -> Result<Task, RpcError> {
        let group = shard_of_task_id(id).ok_or_else(|| RpcError::task_not_found(id))?;
        let cmd = ShardCommand::TaskUpdate {
            ws: self.ws.clone(),
            id: id.to_string(),
            patch: TaskPatch {
                agent: None,
                fencing_token: None,
                status: Some(TaskStatus::Cancelled),
                note: Some(note.to_string()),
                lease_secs: None,
                by: self.caller.key_id.clone(),
            },
        };
        match self
            .state
            .router
            .execute(group, ClientRequest::Write(cmd))
            .await
        {
            Ok(ClientResponse::Write(ShardResponse::Task(t))) => Ok(*t),
            Ok(ClientResponse::Write(ShardResponse::Refused(e))) => {
                Err(RpcError::not_cancelable(e.message))
            }
            Ok(other) => Err(RpcError::from(unexpected(other))),
            Err(e) => Err(RpcError::internal(e.message)),
        }
    }

    /// `CancelTask`: by the key that sent the task's message, or an admin key.
    async fn cancel(&self, id: &str) -> Result<(Task, Origin), RpcError> {
        let (task, origin) = self.load(id).await?;
        if task.status.is_terminal() {
            return Err(RpcError::not_cancelable(format!(
                "task {id} is already {}",
                protocol::state(task.status, self.version)
            )));
        }
        if task.created_by != self.caller.key_id && self.caller.scope < Scope::Admin {
            return Err(RpcError::not_cancelable(format!(
                "only the API key that sent task {id}'s message, or an admin key, may cancel it"
            )));
        }
        let task = self.set_cancelled(id, "canceled over A2A").await?;
        Ok((task, origin))
    }

    /// `ListTasks`: this agent's A2A tasks in creation order, filtered by context and state.
    async fn list(&self, params: &Map<String, Value>) -> Result<Value, RpcError> {
        let context = protocol::opt_id(params, "contextId")?;
        let statuses = match params.get("status").filter(|v| !v.is_null()) {
            None => None,
            Some(Value::String(s)) => Some(protocol::statuses_of(s)?.unwrap_or(&[])),
            Some(_) => return Err(RpcError::invalid_params("status must be a task state")),
        };
        let page_size = match protocol::opt_uint(params, "pageSize")? {
            None => DEFAULT_LIST_PAGE,
            Some(n) if (1..=MAX_LIST_PAGE as u64).contains(&n) => n as usize,
            Some(_) => {
                return Err(RpcError::invalid_params(format!(
                    "pageSize must be 1 to {MAX_LIST_PAGE}"
                )))
            }
        };
        let mut after = match params.get("pageToken") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(validate::digits_cursor("pageToken", s)?),
            Some(_) => return Err(RpcError::invalid_params("pageToken must be a string")),
        };
        let history = protocol::opt_uint(params, "historyLength")?;
        if params
            .get("statusTimestampAfter")
            .is_some_and(|v| !v.is_null())
        {
            return Err(RpcError::invalid_params(
                "statusTimestampAfter is not supported; filter by status or contextId",
            ));
        }
        let group = shard(&self.state, &self.ws, "queue", QUEUE)?;
        let mut tasks = Vec::new();
        let mut scanned = 0;
        let next = loop {
            let q = ShardQuery::TaskList {
                ws: self.ws.clone(),
                status: None,
                after,
                limit: 1000,
                now_ms: now_ms(),
            };
            let page = match run(&self.state, group, ClientRequest::Read(q)).await? {
                ClientResponse::Read(ShardReadResult::TaskPage(p)) => p,
                other => return Err(RpcError::from(unexpected(other))),
            };
            let mut stop = None;
            for t in page.tasks {
                scanned += 1;
                let number = t.number();
                after = number;
                let keep = Origin::of(&t).filter(|o| {
                    o.agent == self.agent
                        && context.as_ref().is_none_or(|c| *c == o.context_id)
                        && statuses.is_none_or(|s| s.contains(&t.status))
                });
                if let Some(o) = keep {
                    tasks.push(protocol::render_task(&t, &o, self.version, history));
                }
                if tasks.len() == page_size || scanned >= MAX_LIST_SCAN {
                    stop = Some(number);
                    break;
                }
            }
            match stop {
                Some(n) => break n,
                None if page.next_after.is_none() => break None,
                None => {}
            }
        };
        Ok(json!({
            "tasks": tasks,
            "nextPageToken": next.map(|n| n.to_string()).unwrap_or_default(),
            "pageSize": page_size,
        }))
    }
}

/// `configuration.historyLength` of a send.
fn history_length(params: &Map<String, Value>) -> Result<Option<u64>, RpcError> {
    match params.get("configuration").and_then(Value::as_object) {
        Some(c) => protocol::opt_uint(c, "historyLength"),
        None => Ok(None),
    }
}
