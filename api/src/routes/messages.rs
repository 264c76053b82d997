//! `/v1/messages`: direct and broadcast messages between agents, read from each agent's inbox
//! with a gap-free sequence.
//!
//! A send is created once on an origin shard, then appended to each recipient's inbox on the
//! recipient's shard (appends are idempotent by message id). The origin is the shard of the
//! idempotency key when there is one (so a key is checked in one place whatever the
//! recipients), else the recipient's shard for a direct message (creation and delivery are one
//! apply), else the workspace's broadcast shard. A retry with the same idempotency key replays
//! the original message and redoes every delivery, which completes a fan-out a failure cut
//! short.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use conclave_actors::{ClientRequest, ClientResponse};
use conclave_raft::meta::Scope;
use conclave_raft::shard::{
    shard_of_message_id, Idempotency, InboxItem, Message, NewMessage, Priority,
};
use conclave_raft::{GroupId, ShardCommand, ShardQuery, ShardReadResult, ShardResponse};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::agents::metadata_text;
use super::{json_text, json_value, run, scatter, shard, unexpected};
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult};
use crate::state::AppState;
use crate::validate::{
    self, AgentRefString, IdempotencyKeyString, MessageIdString, MessageToString,
};

const TAG: &str = "Messages";

/// Largest message body, bytes of JSON.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Longest idempotency key, characters (visible ASCII).
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 128;
/// Most recipients of one broadcast.
pub const MAX_BROADCAST_RECIPIENTS: usize = 10_000;
/// The header carrying an idempotency key.
const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// The routes of this module, with their documentation.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(send, list))
}

/// Body of `POST /v1/messages`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SendMessageBody {
    /// `agent:NAME` for a direct message, or `broadcast` for every agent of the workspace
    /// (except the sender).
    #[schema(value_type = MessageToString)]
    to: String,
    /// Any JSON value, at most 256 KiB.
    body: Value,
    /// The sending agent, `agent:NAME` (or `NAME`); it must exist.
    #[schema(value_type = Option<AgentRefString>)]
    from: Option<String>,
    /// A JSON object, at most 16 KiB.
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    /// `low`, `normal` (default), `high` or `urgent`.
    priority: Option<Priority>,
    /// Id of the message this one answers (of this workspace; 404 when there is none).
    #[schema(value_type = Option<MessageIdString>)]
    reply_to: Option<String>,
    /// Makes a retried send return the original message instead of sending again (1 to 128
    /// visible ASCII characters, no spaces; remembered 24 h). Also accepted as the
    /// `Idempotency-Key` header, which wins when both are given.
    #[schema(value_type = Option<IdempotencyKeyString>)]
    idempotency_key: Option<String>,
}

/// A sent message.
#[derive(Serialize, ToSchema)]
pub(super) struct MessageView {
    /// `msg_<shard>_<n>`.
    id: String,
    /// `agent:NAME` or `broadcast`.
    to: String,
    /// `agent:NAME` of the sender, if given.
    from: Option<String>,
    /// The JSON body.
    body: Value,
    /// A JSON object.
    metadata: Value,
    /// Urgency.
    priority: Priority,
    /// The message this one answers.
    reply_to: Option<String>,
    /// Id of the thread's first message (present on replies).
    thread_id: Option<String>,
    /// ms since the Unix epoch.
    created_at: u64,
    /// How many inboxes it was addressed to.
    recipients: u32,
    /// For a direct message: its sequence in the recipient's inbox.
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
}

impl MessageView {
    fn new(m: Message, seq: Option<u64>) -> Self {
        Self {
            id: m.id,
            to: m.to,
            from: m.from.map(|f| format!("agent:{f}")),
            body: json_value(&m.body),
            metadata: json_value(&m.metadata),
            priority: m.priority,
            reply_to: m.reply_to,
            thread_id: m.thread_id,
            created_at: m.created_at,
            recipients: m.recipients,
            seq,
        }
    }
}

/// An agent address: `agent:NAME`, or a bare `NAME`.
fn agent_address(field: &str, v: &str) -> ApiResult<String> {
    validate::agent_ref(field, v).map(str::to_string)
}

/// The idempotency key of a send, from the header or else the body.
fn idempotency_key(headers: &HeaderMap, body: Option<String>) -> ApiResult<Option<String>> {
    let header = match headers.get(IDEMPOTENCY_HEADER) {
        None => None,
        Some(h) => Some(
            h.to_str()
                .map_err(|_| ApiError::bad_request("Idempotency-Key must be visible ascii"))?
                .to_string(),
        ),
    };
    for k in header.iter().chain(body.iter()) {
        if k.is_empty()
            || k.len() > MAX_IDEMPOTENCY_KEY_CHARS
            || !k.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(ApiError::bad_request(format!(
                "idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} visible ASCII characters without spaces"
            )));
        }
    }
    Ok(header.or(body))
}

async fn agent_exists(state: &AppState, ws: &str, name: &str) -> ApiResult<()> {
    let group = shard(state, ws, "agent", name)?;
    let q = ShardQuery::AgentGet {
        ws: ws.to_string(),
        name: name.to_string(),
    };
    match run(state, group, ClientRequest::Read(q)).await? {
        ClientResponse::Read(ShardReadResult::Agent(_)) => Ok(()),
        other => Err(unexpected(other)),
    }
}

/// Names of every agent of the workspace, gathered from every shard.
async fn all_agents(state: &AppState, ws: &str) -> ApiResult<Vec<String>> {
    let mut names = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = 1000;
        let pages = scatter(state, |_| {
            ClientRequest::Read(ShardQuery::AgentList {
                ws: ws.to_string(),
                status: None,
                after: after.clone(),
                // One more than a page, so a shard holding more makes `more` true.
                limit: page + 1,
            })
        })
        .await?;
        let mut batch = Vec::new();
        for p in pages {
            match p {
                ClientResponse::Read(ShardReadResult::AgentPage(p)) => {
                    batch.extend(p.into_iter().map(|a| a.name))
                }
                other => return Err(unexpected(other)),
            }
        }
        batch.sort();
        let more = batch.len() > page;
        batch.truncate(page);
        after = batch.last().cloned();
        names.extend(batch);
        if names.len() > MAX_BROADCAST_RECIPIENTS {
            return Err(ApiError::bad_request(format!(
                "a broadcast reaches at most {MAX_BROADCAST_RECIPIENTS} agents; this workspace has more"
            )));
        }
        if !more {
            return Ok(names);
        }
    }
}

/// Sends a direct message or a broadcast. Each recipient gets it in its own inbox with its own
/// sequence. With an idempotency key a retry returns the original message (200) and delivers
/// nothing twice; the same key with a different request is a 409.
#[utoipa::path(post, path = "/v1/messages", tag = TAG, request_body = SendMessageBody,
    params(("Idempotency-Key" = Option<IdempotencyKeyString>, Header,
        description = "Same as `idempotency_key` (wins when both are given)")),
    responses((status = 201, description = "Sent", body = MessageView),
        (status = 200, description = "A retry: the message first sent with this idempotency key", body = MessageView)))]
async fn send(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SendMessageBody>,
) -> ApiResult<(StatusCode, Json<MessageView>)> {
    caller.require(Scope::Full)?;
    let ws = caller.workspace.clone();
    // Check everything before anything is written.
    let direct = match body.to.as_str() {
        "broadcast" => None,
        to if to.starts_with("agent:") => Some(agent_address("to", to)?),
        _ => return Err(ApiError::bad_request("to must be agent:NAME or broadcast")),
    };
    let from = body
        .from
        .as_deref()
        .map(|f| agent_address("from", f))
        .transpose()?;
    let text = json_text(&body.body)?;
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(ApiError::too_large(format!(
            "body must be at most {MAX_MESSAGE_BYTES} bytes of JSON"
        )));
    }
    let metadata = metadata_text("metadata", body.metadata.as_ref())?;
    let priority = body.priority.unwrap_or(Priority::Normal);
    let key = idempotency_key(&headers, body.idempotency_key)?;
    let thread_id = match &body.reply_to {
        None => None,
        Some(id) => Some(thread_of(&state, &ws, id).await?),
    };
    if let Some(f) = &from {
        agent_exists(&state, &ws, f).await?;
    }
    let recipients = match &direct {
        Some(name) => vec![name.clone()],
        None => {
            let mut all = all_agents(&state, &ws).await?;
            all.retain(|a| Some(a) != from.as_ref());
            all
        }
    };
    let to = match &direct {
        Some(name) => format!("agent:{name}"),
        None => "broadcast".to_string(),
    };
    let idempotency = key.as_ref().map(|k| Idempotency {
        key: k.clone(),
        payload_hash: payload_hash(
            &to,
            from.as_deref(),
            &text,
            &metadata,
            priority,
            &body.reply_to,
        ),
    });
    let origin = match (&key, &direct) {
        (Some(k), _) => shard(&state, &ws, "idem", k)?,
        (None, Some(name)) => shard(&state, &ws, "agent", name)?,
        (None, None) => shard(&state, &ws, "broadcast", "")?,
    };
    if key.is_some() {
        if let Some(name) = &direct {
            // Created away from the recipient's shard: check it exists first.
            agent_exists(&state, &ws, name).await?;
        }
    }
    let by_shard = group_by_shard(&state, &ws, &recipients)?;
    let cmd = ShardCommand::MessageCreate {
        ws: ws.clone(),
        message: NewMessage {
            to,
            from,
            body: text,
            metadata,
            priority,
            reply_to: body.reply_to.clone(),
            thread_id,
        },
        idempotency,
        recipients: recipients.clone(),
        deliver_here: by_shard.get(&origin).cloned().unwrap_or_default(),
    };
    let (message, all, mut delivered, replay) =
        match run(&state, origin, ClientRequest::Write(cmd)).await? {
            ClientResponse::Write(ShardResponse::Message {
                message,
                recipients,
                delivered,
                replay,
            }) => (message, recipients, delivered, replay),
            other => return Err(unexpected(other)),
        };
    // A replay delivers to the original recipients everywhere (the origin shard did none);
    // a first send to those on other shards.
    let pending = if replay {
        group_by_shard(&state, &ws, &all)?
    } else {
        by_shard.into_iter().filter(|(g, _)| *g != origin).collect()
    };
    let deliveries = pending.into_iter().map(|(group, agents)| {
        let cmd = ShardCommand::InboxDeliver {
            ws: ws.clone(),
            message: (*message).clone(),
            agents,
        };
        run(&state, group, ClientRequest::Write(cmd))
    });
    for outcome in futures::future::join_all(deliveries).await {
        match outcome {
            Ok(ClientResponse::Write(ShardResponse::Delivered(d))) => delivered.extend(d),
            Ok(other) => return Err(unexpected(other)),
            Err(e) => {
                let retry = if key.is_some() {
                    "retry with the same idempotency key to finish it"
                } else {
                    "send it with an idempotency key to make retries safe"
                };
                return Err(ApiError::unavailable(format!(
                    "message {} was created but not every inbox confirmed its delivery ({}); {retry}",
                    message.id, e.message
                )));
            }
        }
    }
    let seq = direct.as_ref().and_then(|name| {
        delivered
            .iter()
            .find(|(a, _)| a == name)
            .map(|(_, seq)| *seq)
    });
    let status = if replay {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(MessageView::new(*message, seq))))
}

/// The thread a reply to `id` belongs to: 400 when `id` is not shaped like a message id
/// (schema: [`MessageIdString`]), 404 when it is no message of this workspace.
async fn thread_of(state: &AppState, ws: &str, id: &str) -> ApiResult<String> {
    let shaped = id
        .strip_prefix("msg_")
        .and_then(|r| r.split_once('_'))
        .is_some_and(|(a, b)| {
            [a, b]
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
        });
    if !shaped || id.len() > 64 {
        return Err(ApiError::bad_request(
            "reply_to must be a message id, msg_<shard>_<n>, of at most 64 characters",
        ));
    }
    let unknown = || {
        ApiError::not_found(format!(
            "reply_to {id:?} is not a message of this workspace"
        ))
    };
    let group = shard_of_message_id(id).ok_or_else(unknown)?;
    let shards = state.groups().meta().read().expect("meta lock").shard_count;
    if !(1..=shards).contains(&group) {
        return Err(unknown());
    }
    let q = ShardQuery::MessageGet {
        ws: ws.to_string(),
        id: id.to_string(),
    };
    match run(state, group, ClientRequest::Read(q)).await {
        Ok(ClientResponse::Read(ShardReadResult::Message(m))) => Ok(m.thread_id.unwrap_or(m.id)),
        Ok(other) => Err(unexpected(other)),
        Err(e) if e.status == StatusCode::NOT_FOUND => Err(unknown()),
        Err(e) => Err(e),
    }
}

fn group_by_shard(
    state: &AppState,
    ws: &str,
    agents: &[String],
) -> ApiResult<BTreeMap<GroupId, Vec<String>>> {
    let mut out: BTreeMap<GroupId, Vec<String>> = BTreeMap::new();
    for a in agents {
        out.entry(shard(state, ws, "agent", a)?)
            .or_default()
            .push(a.clone());
    }
    Ok(out)
}

/// SHA-256 of a send's meaning, so a retry is told from a different request under the same key.
fn payload_hash(
    to: &str,
    from: Option<&str>,
    body: &str,
    metadata: &str,
    priority: Priority,
    reply_to: &Option<String>,
) -> [u8; 32] {
    let canonical = json!([to, from, body, metadata, priority, reply_to]).to_string();
    Sha256::digest(canonical.as_bytes()).into()
}

/// `?agent=&since=&limit=` of `GET /v1/messages`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct InboxQuery {
    /// Whose inbox: `NAME` or `agent:NAME`.
    #[param(value_type = AgentRefString)]
    agent: String,
    /// Return messages with a sequence above this (default 0: from the start).
    #[param(minimum = 0)]
    since: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// A message in an inbox.
#[derive(Serialize, ToSchema)]
pub(super) struct InboxMessage {
    /// Its sequence in this inbox: gap-free from 1.
    seq: u64,
    /// The message id.
    id: String,
    /// `agent:NAME` of the sender, if given.
    from: Option<String>,
    /// `agent:NAME` or `broadcast`.
    to: String,
    /// The JSON body.
    body: Value,
    /// A JSON object.
    metadata: Value,
    /// Urgency.
    priority: Priority,
    /// The message this one answers.
    reply_to: Option<String>,
    /// Id of the thread's first message.
    thread_id: Option<String>,
    /// ms since the Unix epoch.
    created_at: u64,
}

impl From<InboxItem> for InboxMessage {
    fn from(i: InboxItem) -> Self {
        let m = i.message;
        Self {
            seq: i.seq,
            id: m.id,
            from: m.from.map(|f| format!("agent:{f}")),
            to: m.to,
            body: json_value(&m.body),
            metadata: json_value(&m.metadata),
            priority: m.priority,
            reply_to: m.reply_to,
            thread_id: m.thread_id,
            created_at: m.created_at,
        }
    }
}

/// A page of an inbox.
#[derive(Serialize, ToSchema)]
pub(super) struct InboxPage {
    /// Messages with `seq > since`, ascending.
    items: Vec<InboxMessage>,
    /// Pass as `since` to read on: the last item's seq, or `since` when there was none.
    next_since: u64,
}

/// Reads an agent's inbox after `since`, oldest first; `since` never skips or repeats a
/// message.
#[utoipa::path(get, path = "/v1/messages", tag = TAG, params(InboxQuery),
    responses((status = 200, description = "A page of the inbox", body = InboxPage)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<InboxQuery>,
) -> ApiResult<Json<InboxPage>> {
    caller.require(Scope::Read)?;
    let agent = agent_address("agent", &q.agent)?;
    let limit = validate::limit(q.limit, super::DEFAULT_PAGE)?;
    let since = validate::seq("since", q.since)?.unwrap_or(0);
    let group = shard(&state, &caller.workspace, "agent", &agent)?;
    let req = ClientRequest::Read(ShardQuery::InboxRead {
        ws: caller.workspace.clone(),
        agent,
        since,
        limit,
    });
    match run(&state, group, req).await? {
        ClientResponse::Read(ShardReadResult::Inbox { items, .. }) => {
            let next_since = items.last().map_or(since, |i| i.seq);
            Ok(Json(InboxPage {
                items: items.into_iter().map(InboxMessage::from).collect(),
                next_since,
            }))
        }
        other => Err(unexpected(other)),
    }
}
