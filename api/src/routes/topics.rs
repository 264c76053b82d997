//! `/v1/topics`: durable pub/sub with gap-free per-topic sequences, retention, subscriptions
//! with a server-side cursor, and access modes with ACL entries.
//!
//! Topics, messages and subscriptions live on the topic's shard; access modes and ACL entries
//! live in the meta group, so every node checks them locally before routing a publish, read or
//! subscribe. Admin keys bypass ACLs.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use conclave_actors::{ClientRequest, ClientResponse};
use conclave_raft::meta::topic_acl::{TopicAccessMode, TopicAclEntry, TopicPermission};
use conclave_raft::meta::Scope;
use conclave_raft::shard::topic_team::{SubscriptionView, TeamSubscription};
use conclave_raft::shard::{SubscribeFrom, Subscription, Topic, TopicMessage};
use conclave_raft::{
    MetaCommand, MetaResponse, ShardCommand, ShardQuery, ShardReadResult, ShardResponse,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{gather, json_text, json_value, run, shard, unexpected, Deleted, Page, DEFAULT_PAGE};
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::state::AppState;
use crate::validate::{
    self, AgentRefString, NameString, TopicAclCursorString, TopicPrincipalString,
};
use utoipa::openapi::schema::{
    AdditionalProperties, AnyOfBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::RefOr;

const TAG: &str = "Topics";

/// Default retention of a topic's messages: 7 days.
const DEFAULT_RETENTION_SECS: u64 = 7 * 24 * 3600;
/// Longest retention a topic may ask for: 1 year, in hours.
const MAX_RETENTION_HOURS: u64 = 365 * 24;
/// Longest retention a topic may ask for, in seconds.
const MAX_RETENTION_SECS: u64 = MAX_RETENTION_HOURS * 3600;
/// Largest published body, bytes of JSON text.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Largest message metadata, bytes of JSON text.
const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Longest topic description, characters.
const MAX_TOPIC_DESCRIPTION_CHARS: usize = 4096;
/// Largest sequence number a subscription may start from (the largest integer JSON numbers
/// carry exactly).
const MAX_SEQ: u64 = (1 << 53) - 1;
/// Topic names that would shadow other routes under `/v1/topics/`.
const RESERVED_TOPIC_NAMES: &[&str] = &["subscriptions"];

/// The routes of this module, with their documentation.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(subscriptions))
        .routes(routes!(delete))
        .routes(routes!(subscribe, unsubscribe))
        .routes(routes!(publish))
        .routes(routes!(messages))
        .routes(routes!(set_access))
        .routes(routes!(grant_acl, list_acl))
        // topic teams
        .routes(routes!(team_subscribe, team_unsubscribe))
}

/// Body of `POST /v1/topics` (its schema, [`CreateTopicBody::schema`], also says that
/// `retention_hours` and `retention_secs` do not go together).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateTopicBody {
    /// 1 to 128 of letters, digits, `.`, `_`, `-`, `:`; `subscriptions` is reserved.
    name: String,
    /// Free text, up to 4096 characters.
    description: Option<String>,
    /// How long messages are kept, 1 to 8760 hours (default 168: 7 days).
    #[serde(default, deserialize_with = "crate::validate::lenient_int")]
    retention_hours: Option<u64>,
    /// Retention in seconds instead of hours, 1 to 31536000 (not with `retention_hours`).
    #[serde(default, deserialize_with = "crate::validate::lenient_int")]
    retention_secs: Option<u64>,
    /// `open` (default) or `restricted` (needs an admin key).
    access: Option<TopicAccessMode>,
}

impl utoipa::PartialSchema for CreateTopicBody {
    /// Either retention field may be given, not both: one object shape per choice.
    fn schema() -> RefOr<Schema> {
        fn nullable(types: Type) -> SchemaType {
            SchemaType::from_iter([types, Type::Null])
        }
        let null = || ObjectBuilder::new().schema_type(Type::Null);
        let hours = || {
            ObjectBuilder::new()
                .schema_type(nullable(Type::Integer))
                .minimum(Some(1))
                .maximum(Some(MAX_RETENTION_HOURS as f64))
                .description(Some(
                    "How long messages are kept, 1 to 8760 hours (default 168: 7 days)",
                ))
        };
        let secs = || {
            ObjectBuilder::new()
                .schema_type(nullable(Type::Integer))
                .minimum(Some(1))
                .maximum(Some(MAX_RETENTION_SECS as f64))
                .description(Some(
                    "Retention in seconds instead of hours, 1 to 31536000 (not with retention_hours)",
                ))
        };
        let shape = |hours: ObjectBuilder, secs: ObjectBuilder| {
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property("name", NameString::schema())
                .required("name")
                .property(
                    "description",
                    ObjectBuilder::new()
                        .schema_type(nullable(Type::String))
                        .max_length(Some(MAX_TOPIC_DESCRIPTION_CHARS))
                        .description(Some("Free text, up to 4096 characters")),
                )
                .property("retention_hours", hours)
                .property("retention_secs", secs)
                .property(
                    "access",
                    OneOfBuilder::new()
                        .item(null())
                        .item(TopicAccessMode::schema())
                        .description(Some(
                            "`open` (default) or `restricted` (needs an admin key)",
                        )),
                )
                .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        };
        AnyOfBuilder::new()
            .item(shape(hours(), null()))
            .item(shape(null(), secs()))
            .description(Some(
                "A new topic; `retention_hours` or `retention_secs`, not both",
            ))
            .into()
    }
}

impl ToSchema for CreateTopicBody {}

/// A topic.
#[derive(Serialize, ToSchema)]
pub(super) struct TopicView {
    /// Its name.
    name: String,
    /// Free text.
    description: String,
    /// Retention in whole hours (rounded down).
    retention_hours: u64,
    /// Retention in seconds.
    retention_secs: u64,
    /// `open` or `restricted`.
    access: TopicAccessMode,
    /// ms since the Unix epoch.
    created_at: u64,
    /// Sequence of the newest message (0 before any).
    last_seq: u64,
    /// Sequence of the oldest retained message (`last_seq + 1` when none is retained).
    first_seq: u64,
}

impl TopicView {
    fn new(t: Topic, access: TopicAccessMode) -> Self {
        Self {
            name: t.name,
            description: t.description,
            retention_hours: t.retention_secs / 3600,
            retention_secs: t.retention_secs,
            access,
            created_at: t.created_at,
            last_seq: t.last_seq,
            first_seq: t.first_seq,
        }
    }
}

/// Body of `POST /v1/topics/{name}/publish`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PublishTopicBody {
    /// Any JSON value, up to 256 KiB as JSON text.
    body: Value,
    /// The publishing agent: `NAME` or `agent:NAME`; on a restricted topic its ACL entry counts.
    #[schema(value_type = Option<AgentRefString>)]
    from: Option<String>,
    /// A JSON object, up to 16 KiB.
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
}

/// The answer to a publish.
#[derive(Serialize, ToSchema)]
pub(super) struct TopicPublished {
    /// The topic.
    topic: String,
    /// The message's sequence: gap-free from 1 within the topic.
    seq: u64,
    /// ms since the Unix epoch.
    published_at: u64,
}

/// `?since=&limit=&agent=` of a topic read.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct TopicMessagesQuery {
    /// Read messages after this sequence (default 0, or the subscription's cursor with `agent`).
    /// With `agent`, also acknowledges every message up to it (the cursor moves to it).
    #[param(minimum = 0)]
    since: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// A subscribed agent (`NAME` or `agent:NAME`): without `since`, reading resumes from its
    /// server-side cursor.
    #[param(value_type = Option<AgentRefString>)]
    agent: Option<String>,
}

/// One message of a topic.
#[derive(Serialize, ToSchema)]
pub(super) struct TopicMessageView {
    /// Sequence, gap-free from 1 within the topic.
    seq: u64,
    /// The published JSON value.
    body: Value,
    /// The publishing agent, if named.
    from: Option<String>,
    /// The published metadata object, if any.
    metadata: Option<Value>,
    /// ms since the Unix epoch.
    published_at: u64,
}

impl From<TopicMessage> for TopicMessageView {
    fn from(m: TopicMessage) -> Self {
        Self {
            seq: m.seq,
            body: json_value(&m.body),
            from: m.from,
            metadata: m.metadata.as_deref().map(json_value),
            published_at: m.published_at,
        }
    }
}

/// A page of a topic's history.
#[derive(Serialize, ToSchema)]
pub(super) struct TopicMessagePage {
    /// Messages with `seq > since`, ascending.
    items: Vec<TopicMessageView>,
    /// The `since` of the next page (the last item's seq, or the `since` read from).
    next_since: u64,
    /// The oldest retained sequence: above `since + 1`, retention removed the messages between.
    first_seq: u64,
    /// The newest sequence of the topic.
    last_seq: u64,
}

/// Body of `POST /v1/topics/{name}/subscribe`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SubscribeTopicBody {
    /// The subscribing agent's name (`NAME` or `agent:NAME`).
    #[schema(value_type = AgentRefString)]
    agent: String,
    /// Where reading starts: `"latest"` (default: only new messages), `"earliest"` (the oldest
    /// retained message) or a sequence number (that message first).
    #[schema(value_type = Option<SubscribeFromSchema>)]
    from: Option<Value>,
}

/// An agent's subscription to a topic.
#[derive(Serialize, ToSchema)]
pub(super) struct TopicSubscriptionView {
    /// The topic.
    topic: String,
    /// The subscribed agent.
    agent: String,
    /// `direct` (the agent subscribed itself) or `team` (a team of the agent is subscribed).
    via: &'static str,
    /// The subscribed team, for `via: team`.
    #[serde(skip_serializing_if = "Option::is_none")]
    team_id: Option<String>,
    /// The last acknowledged sequence: reading with `agent` resumes after it.
    cursor: u64,
    /// The topic's newest sequence, when listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seq: Option<u64>,
    /// ms since the Unix epoch.
    created_at: u64,
}

impl TopicSubscriptionView {
    fn new(s: Subscription, last_seq: Option<u64>) -> Self {
        Self {
            topic: s.topic,
            agent: s.agent,
            via: "direct",
            team_id: None,
            cursor: s.cursor,
            last_seq,
            created_at: s.created_at,
        }
    }
}

impl From<SubscriptionView> for TopicSubscriptionView {
    fn from(v: SubscriptionView) -> Self {
        let mut out = Self::new(v.sub, Some(v.last_seq));
        if let Some(team) = v.team {
            out.via = "team";
            out.team_id = Some(team);
        }
        out
    }
}

/// `?agent=` naming the agent of a subscription.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct TopicAgentQuery {
    /// The agent's name (`NAME` or `agent:NAME`).
    #[param(value_type = AgentRefString)]
    agent: String,
}

/// `?agent=&cursor=&limit=` of the subscriptions list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct TopicSubscriptionsQuery {
    /// The agent whose subscriptions to list (`NAME` or `agent:NAME`).
    #[param(value_type = AgentRefString)]
    agent: String,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page (a topic name).
    #[param(value_type = Option<NameString>)]
    cursor: Option<String>,
}

/// The answer to an unsubscribe.
#[derive(Serialize, ToSchema)]
pub(super) struct TopicUnsubscribed {
    /// The topic.
    topic: String,
    /// The agent.
    agent: String,
    /// Always true.
    deleted: bool,
}

/// Body of `PATCH /v1/topics/{name}/access`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SetTopicAccessBody {
    /// `open` or `restricted`.
    mode: TopicAccessMode,
}

/// A topic's access mode.
#[derive(Serialize, ToSchema)]
pub(super) struct TopicAccessView {
    /// The topic.
    topic: String,
    /// `open` or `restricted`.
    mode: TopicAccessMode,
    /// ms since the Unix epoch.
    updated_at: u64,
}

/// Body of `POST /v1/topics/{name}/acl`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct GrantTopicAclBody {
    /// `agent:NAME` or `key:ID` (a key of this workspace).
    #[schema(value_type = TopicPrincipalString)]
    principal: String,
    /// A non-empty subset of `read`, `publish`.
    #[schema(min_items = 1)]
    permissions: Vec<TopicPermission>,
}

/// An ACL entry of a topic.
#[derive(Serialize, ToSchema)]
pub(super) struct TopicAclEntryView {
    /// `acl_<n>`.
    id: String,
    /// The topic.
    topic: String,
    /// `agent:NAME` or `key:ID`.
    principal: String,
    /// What it allows on the topic while it is restricted.
    permissions: Vec<TopicPermission>,
    /// ms since the Unix epoch.
    created_at: u64,
}

impl TopicAclEntryView {
    fn new(topic: &str, e: TopicAclEntry) -> Self {
        Self {
            id: e.id,
            topic: topic.to_string(),
            principal: e.principal,
            permissions: e.permissions.into_iter().collect(),
            created_at: e.created_at,
        }
    }
}

/// A page of a topic's ACL.
#[derive(Serialize, ToSchema)]
pub(super) struct TopicAclPage {
    /// The topic.
    topic: String,
    /// Its access mode.
    mode: TopicAccessMode,
    /// Entries in creation order.
    items: Vec<TopicAclEntryView>,
    /// Pass as `cursor` to read the next page; absent on the last page.
    next_cursor: Option<String>,
}

/// `?cursor=&limit=` of the topic list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct TopicListQuery {
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page (a topic name).
    #[param(value_type = Option<NameString>)]
    cursor: Option<String>,
}

/// `?cursor=&limit=` of the ACL list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct TopicAclQuery {
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page (an entry id).
    #[param(value_type = Option<TopicAclCursorString>)]
    cursor: Option<String>,
}

/// A topic name from a path or body: a valid name, not a reserved one.
fn topic_name(field: &str, name: &str) -> ApiResult<()> {
    validate::name(field, name)?;
    if RESERVED_TOPIC_NAMES.contains(&name) {
        return Err(ApiError::bad_request(format!(
            "{field} {name:?} is reserved: it names another route under /v1/topics/"
        )));
    }
    Ok(())
}

/// An agent named by a client: `NAME` or `agent:NAME`.
fn agent_name(field: &str, v: &str) -> ApiResult<String> {
    validate::agent_ref(field, v).map(str::to_string)
}

/// Where a subscription starts: `"latest"`, `"earliest"` or a sequence number.
pub(super) struct SubscribeFromSchema;

impl utoipa::PartialSchema for SubscribeFromSchema {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["latest", "earliest"])),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0))
                    .maximum(Some(MAX_SEQ as f64)),
            )
            .into()
    }
}

impl ToSchema for SubscribeFromSchema {}

/// The topic's access mode as this node's meta replica knows it.
fn access_mode(state: &AppState, ws: &str, topic: &str) -> TopicAccessMode {
    let meta = state.groups().meta().read().expect("meta lock");
    meta.topic_acls
        .get(ws, topic)
        .map_or(TopicAccessMode::Open, |a| a.mode)
}

/// Refuses with 403 unless the caller may do `perm` on the topic: always on an open topic or
/// with an admin key; on a restricted one, an ACL entry for the caller's key or the acting
/// `agent` must grant it.
pub(super) fn check_access(
    state: &AppState,
    caller: &Caller,
    topic: &str,
    agent: Option<&str>,
    perm: TopicPermission,
) -> ApiResult<()> {
    if caller.scope >= Scope::Admin {
        return Ok(());
    }
    let mut principals = vec![format!("key:{}", caller.key_id)];
    if let Some(a) = agent {
        principals.push(format!("agent:{a}"));
    }
    let meta = state.groups().meta().read().expect("meta lock");
    // The teams of the acting agent and of the key's user.
    principals.extend(
        meta.teams
            .teams_of(&caller.workspace)
            .filter(|t| {
                agent.is_some_and(|a| t.agents.contains_key(a))
                    || caller
                        .user
                        .as_ref()
                        .is_some_and(|u| t.users.contains_key(u))
            })
            .map(|t| format!("team:{}", t.id)),
    );
    if meta
        .topic_acls
        .allows(&caller.workspace, topic, &principals, perm)
    {
        return Ok(());
    }
    let perm = match perm {
        TopicPermission::Read => "read",
        TopicPermission::Publish => "publish",
    };
    Err(ApiError::forbidden(format!(
        "topic {topic:?} is restricted: {perm} needs an acl entry for key:{}, the acting agent or one of its teams",
        caller.key_id
    )))
}

/// Reads one topic (404 when absent).
async fn get_topic(state: &AppState, ws: &str, name: &str) -> ApiResult<Topic> {
    let group = shard(state, ws, "topic", name)?;
    let q = ShardQuery::TopicGet {
        ws: ws.to_string(),
        name: name.to_string(),
    };
    match run(state, group, ClientRequest::Read(q)).await? {
        ClientResponse::Read(ShardReadResult::Topic(t)) => Ok(t),
        other => Err(unexpected(other)),
    }
}

/// Runs a topic-access meta command.
async fn meta_access(state: &AppState, cmd: MetaCommand) -> ApiResult<MetaResponse> {
    Ok(state.router.execute_meta(cmd).await?)
}

/// Creates a topic (201); 409 when the name is taken.
#[utoipa::path(post, path = "/v1/topics", tag = TAG, request_body = CreateTopicBody,
    responses((status = 201, description = "The new topic", body = TopicView)))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateTopicBody>,
) -> ApiResult<(StatusCode, Json<TopicView>)> {
    caller.require(Scope::Full)?;
    topic_name("name", &body.name)?;
    let description = body.description.unwrap_or_default();
    validate::text(
        "description",
        &description,
        MAX_TOPIC_DESCRIPTION_CHARS,
        false,
    )?;
    let retention_secs = match (body.retention_hours, body.retention_secs) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give retention_hours or retention_secs, not both",
            ))
        }
        (Some(h), None) if (1..=MAX_RETENTION_HOURS).contains(&h) => h * 3600,
        (Some(_), None) => {
            return Err(ApiError::bad_request(format!(
                "retention_hours must be 1 to {MAX_RETENTION_HOURS}"
            )))
        }
        (None, Some(s)) if (1..=MAX_RETENTION_SECS).contains(&s) => s,
        (None, Some(_)) => {
            return Err(ApiError::bad_request(format!(
                "retention_secs must be 1 to {MAX_RETENTION_SECS}"
            )))
        }
        (None, None) => DEFAULT_RETENTION_SECS,
    };
    let access = body.access.unwrap_or(TopicAccessMode::Open);
    if access == TopicAccessMode::Restricted {
        caller.require(Scope::Admin)?;
    }
    let ws = caller.workspace.clone();
    let group = shard(&state, &ws, "topic", &body.name)?;
    let cmd = ShardCommand::TopicCreate {
        ws: ws.clone(),
        name: body.name.clone(),
        retention_secs,
        description,
    };
    let topic = match run(&state, group, ClientRequest::Write(cmd)).await? {
        ClientResponse::Write(ShardResponse::Topic(t)) => t,
        other => return Err(unexpected(other)),
    };
    // A new topic starts with the asked mode and no entries, whatever an earlier topic of the
    // same name left behind.
    let stale = state
        .groups()
        .meta()
        .read()
        .expect("meta lock")
        .topic_acls
        .get(&ws, &body.name)
        .is_some();
    if access == TopicAccessMode::Restricted || stale {
        let set = MetaCommand::SetTopicAccess {
            ws: ws.clone(),
            topic: body.name.clone(),
            mode: access,
            reset: true,
        };
        if let Err(e) = meta_access(&state, set).await {
            // Without its access record the topic must not exist (it would be open).
            let undo = ShardCommand::TopicDelete {
                ws,
                name: body.name,
            };
            if let Err(undo_err) = run(&state, group, ClientRequest::Write(undo)).await {
                tracing::warn!(error = ?undo_err, "could not remove a topic whose access was not set");
            }
            return Err(e);
        }
    }
    Ok((StatusCode::CREATED, Json(TopicView::new(topic, access))))
}

/// Lists the workspace's topics in name order, gathered from every shard.
#[utoipa::path(get, path = "/v1/topics", tag = TAG, params(TopicListQuery),
    responses((status = 200, description = "A page of topics in name order", body = Page<TopicView>)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<TopicListQuery>,
) -> ApiResult<Json<Page<TopicView>>> {
    caller.require(Scope::Read)?;
    let limit = validate::limit(q.limit, DEFAULT_PAGE)?;
    if let Some(c) = &q.cursor {
        validate::name("cursor", c)?;
    }
    let topics = gather(
        &state,
        |_| {
            ClientRequest::Read(ShardQuery::TopicList {
                ws: caller.workspace.clone(),
                after: q.cursor.clone(),
                // One more than a page: a shard with more than a page makes the
                // merged set longer than `limit`, so `next_cursor` is set.
                limit: limit + 1,
            })
        },
        |answer| match answer {
            ClientResponse::Read(ShardReadResult::TopicPage(p)) => Ok(p),
            other => Err(unexpected(other)),
        },
        |x| x.name.clone(),
    )
    .await?;
    let ws = caller.workspace.clone();
    Ok(Json(Page::merged(
        topics,
        limit,
        |t| t.name.clone(),
        |t| {
            let access = access_mode(&state, &ws, &t.name);
            TopicView::new(t, access)
        },
    )))
}

/// Deletes a topic with its messages and subscriptions; a topic created later with the same
/// name starts at sequence 1 with no subscribers and an open access mode. A restricted topic
/// needs an admin key.
#[utoipa::path(delete, path = "/v1/topics/{name}", tag = TAG,
    params(("name" = NameString, Path, description = "The topic")),
    responses((status = 200, description = "The topic was deleted", body = Deleted)))]
async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Deleted>> {
    caller.require(Scope::Full)?;
    topic_name("name", &name)?;
    let ws = caller.workspace.clone();
    // Otherwise a full key could delete a restricted topic and re-create it open.
    if access_mode(&state, &ws, &name) == TopicAccessMode::Restricted {
        caller.require(Scope::Admin)?;
    }
    let group = shard(&state, &ws, "topic", &name)?;
    let cmd = ShardCommand::TopicDelete {
        ws: ws.clone(),
        name: name.clone(),
    };
    let outcome = run(&state, group, ClientRequest::Write(cmd)).await;
    // The access record goes with the topic (also on a retry after a failure here).
    let has_access = state
        .groups()
        .meta()
        .read()
        .expect("meta lock")
        .topic_acls
        .get(&ws, &name)
        .is_some();
    let gone = match &outcome {
        Ok(_) => true,
        Err(e) => e.status == StatusCode::NOT_FOUND,
    };
    if has_access && gone {
        meta_access(
            &state,
            MetaCommand::DropTopicAccess {
                ws,
                topic: name.clone(),
            },
        )
        .await?;
    }
    match outcome? {
        ClientResponse::Write(ShardResponse::Deleted(name)) => Ok(Json(Deleted::new(name))),
        other => Err(unexpected(other)),
    }
}

/// Lists an agent's subscriptions in topic-name order, gathered from every shard.
#[utoipa::path(get, path = "/v1/topics/subscriptions", tag = TAG, params(TopicSubscriptionsQuery),
    responses((status = 200, description = "A page of subscriptions in topic order",
        body = Page<TopicSubscriptionView>)))]
async fn subscriptions(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<TopicSubscriptionsQuery>,
) -> ApiResult<Json<Page<TopicSubscriptionView>>> {
    caller.require(Scope::Read)?;
    let agent = agent_name("agent", &q.agent)?;
    let limit = validate::limit(q.limit, DEFAULT_PAGE)?;
    if let Some(c) = &q.cursor {
        validate::name("cursor", c)?;
    }
    let teams = agent_teams(&state, &caller.workspace, &agent);
    let subs = gather(
        &state,
        |_| {
            ClientRequest::Read(ShardQuery::TopicSubscriptionListAs {
                ws: caller.workspace.clone(),
                agent: agent.clone(),
                teams: teams.clone(),
                after: q.cursor.clone(),
                limit: limit + 1,
            })
        },
        |answer| match answer {
            ClientResponse::Read(ShardReadResult::TopicSubscriptionsAs(p)) => Ok(p),
            other => Err(unexpected(other)),
        },
        |v| v.sub.topic.clone(),
    )
    .await?;
    Ok(Json(Page::merged(
        subs,
        limit,
        |v| v.sub.topic.clone(),
        TopicSubscriptionView::from,
    )))
}

/// Subscribes an agent (201); an existing subscription answers 200 with its cursor unchanged.
#[utoipa::path(post, path = "/v1/topics/{name}/subscribe", tag = TAG,
    params(("name" = NameString, Path, description = "The topic")),
    request_body = SubscribeTopicBody,
    responses((status = 201, description = "The new subscription", body = TopicSubscriptionView),
        (status = 200, description = "The agent was already subscribed", body = TopicSubscriptionView)))]
async fn subscribe(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<SubscribeTopicBody>,
) -> ApiResult<(StatusCode, Json<TopicSubscriptionView>)> {
    caller.require(Scope::Full)?;
    topic_name("topic", &name)?;
    let agent = agent_name("agent", &body.agent)?;
    let from = match &body.from {
        None => SubscribeFrom::Latest,
        Some(Value::String(s)) if s == "latest" => SubscribeFrom::Latest,
        Some(Value::String(s)) if s == "earliest" => SubscribeFrom::Earliest,
        // An integer, also when spelled `3.0`.
        Some(Value::Number(n))
            if n.as_f64()
                .is_some_and(|f| f >= 0.0 && f.fract() == 0.0 && f <= MAX_SEQ as f64) =>
        {
            SubscribeFrom::Seq(n.as_f64().unwrap_or_default() as u64)
        }
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "from must be \"latest\", \"earliest\" or a sequence number up to {MAX_SEQ}"
            )))
        }
    };
    check_access(&state, &caller, &name, Some(&agent), TopicPermission::Read)?;
    let group = shard(&state, &caller.workspace, "topic", &name)?;
    let cmd = ShardCommand::TopicSubscribe {
        ws: caller.workspace.clone(),
        topic: name,
        agent,
        from,
    };
    match run(&state, group, ClientRequest::Write(cmd)).await? {
        ClientResponse::Write(ShardResponse::TopicSubscribed { sub, created }) => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((status, Json(TopicSubscriptionView::new(sub, None))))
        }
        other => Err(unexpected(other)),
    }
}

/// Removes an agent's subscription.
#[utoipa::path(delete, path = "/v1/topics/{name}/subscribe", tag = TAG,
    params(("name" = NameString, Path, description = "The topic"), TopicAgentQuery),
    responses((status = 200, description = "The subscription was removed", body = TopicUnsubscribed)))]
async fn unsubscribe(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TopicAgentQuery>,
) -> ApiResult<Json<TopicUnsubscribed>> {
    caller.require(Scope::Full)?;
    topic_name("topic", &name)?;
    let agent = agent_name("agent", &q.agent)?;
    let group = shard(&state, &caller.workspace, "topic", &name)?;
    let cmd = ShardCommand::TopicUnsubscribe {
        ws: caller.workspace.clone(),
        topic: name.clone(),
        agent: agent.clone(),
    };
    match run(&state, group, ClientRequest::Write(cmd)).await? {
        ClientResponse::Write(ShardResponse::Deleted(_)) => Ok(Json(TopicUnsubscribed {
            topic: name,
            agent,
            deleted: true,
        })),
        other => Err(unexpected(other)),
    }
}

/// Publishes a message; it gets the topic's next sequence number.
#[utoipa::path(post, path = "/v1/topics/{name}/publish", tag = TAG,
    params(("name" = NameString, Path, description = "The topic")),
    request_body = PublishTopicBody,
    responses((status = 201, description = "The message's sequence", body = TopicPublished)))]
async fn publish(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<PublishTopicBody>,
) -> ApiResult<(StatusCode, Json<TopicPublished>)> {
    caller.require(Scope::Full)?;
    topic_name("topic", &name)?;
    let text = json_text(&body.body)?;
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(ApiError::too_large(format!(
            "body must be at most {MAX_MESSAGE_BYTES} bytes of JSON"
        )));
    }
    let from = body
        .from
        .as_deref()
        .map(|f| agent_name("from", f))
        .transpose()?;
    let metadata = match &body.metadata {
        None | Some(Value::Null) => None,
        Some(m @ Value::Object(_)) => {
            let t = json_text(m)?;
            if t.len() > MAX_METADATA_BYTES {
                return Err(ApiError::bad_request(format!(
                    "metadata must be at most {MAX_METADATA_BYTES} bytes of JSON"
                )));
            }
            Some(t)
        }
        Some(_) => return Err(ApiError::bad_request("metadata must be a JSON object")),
    };
    check_access(
        &state,
        &caller,
        &name,
        from.as_deref(),
        TopicPermission::Publish,
    )?;
    let group = shard(&state, &caller.workspace, "topic", &name)?;
    let cmd = ShardCommand::TopicPublish {
        ws: caller.workspace.clone(),
        topic: name.clone(),
        body: text,
        from,
        metadata,
    };
    match run(&state, group, ClientRequest::Write(cmd)).await? {
        ClientResponse::Write(ShardResponse::TopicPublished(m)) => Ok((
            StatusCode::CREATED,
            Json(TopicPublished {
                topic: name,
                seq: m.seq,
                published_at: m.published_at,
            }),
        )),
        other => Err(unexpected(other)),
    }
}

/// Reads a topic's retained history after `since`. With `agent` (a subscriber), no `since`
/// resumes from the subscription's cursor, and a `since` first acknowledges up to it.
#[utoipa::path(get, path = "/v1/topics/{name}/messages", tag = TAG,
    params(("name" = NameString, Path, description = "The topic"), TopicMessagesQuery),
    responses((status = 200, description = "A page of messages", body = TopicMessagePage)))]
async fn messages(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TopicMessagesQuery>,
) -> ApiResult<Json<TopicMessagePage>> {
    caller.require(Scope::Read)?;
    topic_name("topic", &name)?;
    let limit = validate::limit(q.limit, DEFAULT_PAGE)?;
    let agent = q
        .agent
        .as_deref()
        .map(|a| agent_name("agent", a))
        .transpose()?;
    check_access(
        &state,
        &caller,
        &name,
        agent.as_deref(),
        TopicPermission::Read,
    )?;
    let ws = caller.workspace.clone();
    let group = shard(&state, &ws, "topic", &name)?;
    let since = match (&agent, validate::seq("since", q.since)?) {
        (None, since) => since.unwrap_or(0),
        (Some(agent), Some(since)) => {
            // Acknowledging moves only this subscription's own cursor, so a read key may.
            let cmd = ShardCommand::TopicAckAs {
                ws: ws.clone(),
                topic: name.clone(),
                agent: agent.clone(),
                teams: agent_teams(&state, &ws, agent),
                seq: since,
            };
            match run(&state, group, ClientRequest::Write(cmd)).await? {
                ClientResponse::Write(ShardResponse::TopicAcked(_)) => since,
                other => return Err(unexpected(other)),
            }
        }
        (Some(agent), None) => {
            let q = ShardQuery::TopicCursorGet {
                ws: ws.clone(),
                topic: name.clone(),
                agent: agent.clone(),
                teams: agent_teams(&state, &ws, agent),
            };
            match run(&state, group, ClientRequest::Read(q)).await? {
                ClientResponse::Read(ShardReadResult::TopicSubscription(s)) => s.cursor,
                other => return Err(unexpected(other)),
            }
        }
    };
    let query = ShardQuery::TopicMessages {
        ws,
        topic: name,
        since,
        limit,
    };
    match run(&state, group, ClientRequest::Read(query)).await? {
        ClientResponse::Read(ShardReadResult::TopicMessages { topic, items }) => {
            let next_since = items.last().map_or(since, |m| m.seq);
            Ok(Json(TopicMessagePage {
                items: items.into_iter().map(TopicMessageView::from).collect(),
                next_since,
                first_seq: topic.first_seq,
                last_seq: topic.last_seq,
            }))
        }
        other => Err(unexpected(other)),
    }
}

/// Sets a topic's access mode (admin keys only).
#[utoipa::path(patch, path = "/v1/topics/{name}/access", tag = TAG,
    params(("name" = NameString, Path, description = "The topic")),
    request_body = SetTopicAccessBody,
    responses((status = 200, description = "The topic's access mode", body = TopicAccessView)))]
async fn set_access(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<SetTopicAccessBody>,
) -> ApiResult<Json<TopicAccessView>> {
    caller.require(Scope::Admin)?;
    topic_name("topic", &name)?;
    get_topic(&state, &caller.workspace, &name).await?;
    let cmd = MetaCommand::SetTopicAccess {
        ws: caller.workspace.clone(),
        topic: name.clone(),
        mode: body.mode,
        reset: false,
    };
    match meta_access(&state, cmd).await? {
        MetaResponse::TopicAccess(a) => Ok(Json(TopicAccessView {
            topic: name,
            mode: a.mode,
            updated_at: a.updated_at,
        })),
        other => Err(ApiError::internal(format!("unexpected response {other:?}"))),
    }
}

/// Grants permissions on a topic to an agent, a key or a team (admin keys only); granting to a
/// principal that has an entry merges the permissions into it (200).
#[utoipa::path(post, path = "/v1/topics/{name}/acl", tag = TAG,
    params(("name" = NameString, Path, description = "The topic")),
    request_body = GrantTopicAclBody,
    responses((status = 201, description = "The new entry", body = TopicAclEntryView),
        (status = 200, description = "The principal's entry, with the permissions merged",
            body = TopicAclEntryView)))]
async fn grant_acl(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<GrantTopicAclBody>,
) -> ApiResult<(StatusCode, Json<TopicAclEntryView>)> {
    caller.require(Scope::Admin)?;
    topic_name("topic", &name)?;
    if body.permissions.is_empty() {
        return Err(ApiError::bad_request(
            "permissions must name at least one of read, publish",
        ));
    }
    let principal = match body.principal.split_once(':') {
        Some(("agent", agent)) => {
            validate::agent_name("principal", agent)?;
            format!("agent:{agent}")
        }
        Some(("key", id)) => {
            validate::name("principal", id)?;
            let known = state
                .groups()
                .meta()
                .read()
                .expect("meta lock")
                .api_keys
                .get(id)
                .is_some_and(|k| k.workspace == caller.workspace);
            if !known {
                // The topic (the path's resource) exists; the key it names does not.
                return Err(ApiError::conflict(format!(
                    "principal key:{id} is no api key of this workspace"
                )));
            }
            format!("key:{id}")
        }
        Some(("team", id)) => {
            validate::name("principal", id)?;
            let known = state
                .groups()
                .meta()
                .read()
                .expect("meta lock")
                .teams
                .team(&caller.workspace, id)
                .is_some();
            if !known {
                return Err(ApiError::conflict(format!(
                    "principal team:{id} is no team of this workspace"
                )));
            }
            format!("team:{id}")
        }
        _ => {
            return Err(ApiError::bad_request(
                "principal must be agent:NAME, key:ID or team:ID",
            ))
        }
    };
    get_topic(&state, &caller.workspace, &name).await?;
    let cmd = MetaCommand::GrantTopicAcl {
        ws: caller.workspace.clone(),
        topic: name.clone(),
        principal,
        permissions: body.permissions,
    };
    match meta_access(&state, cmd).await? {
        MetaResponse::TopicAclEntry { entry, created } => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((status, Json(TopicAclEntryView::new(&name, entry))))
        }
        other => Err(ApiError::internal(format!("unexpected response {other:?}"))),
    }
}

/// Lists a topic's ACL entries in creation order, with its access mode (admin keys only).
#[utoipa::path(get, path = "/v1/topics/{name}/acl", tag = TAG,
    params(("name" = NameString, Path, description = "The topic"), TopicAclQuery),
    responses((status = 200, description = "The topic's mode and a page of its entries",
        body = TopicAclPage)))]
async fn list_acl(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<TopicAclQuery>,
) -> ApiResult<Json<TopicAclPage>> {
    caller.require(Scope::Admin)?;
    topic_name("topic", &name)?;
    let limit = validate::limit(q.limit, DEFAULT_PAGE)?;
    let after = match &q.cursor {
        None => 0,
        Some(c) => c
            .strip_prefix("acl_")
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|_| c.len() <= 23 && c[4..].bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| ApiError::bad_request("cursor must be an acl entry id"))?,
    };
    get_topic(&state, &caller.workspace, &name).await?;
    let (mode, entries) = {
        let meta = state.groups().meta().read().expect("meta lock");
        match meta.topic_acls.get(&caller.workspace, &name) {
            None => (TopicAccessMode::Open, Vec::new()),
            Some(a) => (a.mode, a.entries.clone()),
        }
    };
    let number = |e: &TopicAclEntry| {
        e.id.strip_prefix("acl_")
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let page = entries
        .into_iter()
        .filter(|e| number(e) > after)
        .take(limit + 1)
        .collect::<Vec<_>>();
    let page = Page::merged(
        page,
        limit,
        |e| e.id.clone(),
        |e| TopicAclEntryView::new(&name, e),
    );
    Ok(Json(TopicAclPage {
        topic: name,
        mode,
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}

/// Ids of the workspace's teams with `agent` as a member, from this node's meta replica.
fn agent_teams(state: &AppState, ws: &str, agent: &str) -> Vec<String> {
    let meta = state.groups().meta().read().expect("meta lock");
    meta.teams
        .teams_of(ws)
        .filter(|t| t.agents.contains_key(agent))
        .map(|t| t.id.clone())
        .collect()
}

/// A team's subscription to a topic.
#[derive(Serialize, ToSchema)]
pub(super) struct TopicTeamSubscriptionView {
    /// The topic.
    topic: String,
    /// The team.
    team_id: String,
    /// The topic's newest sequence when the team subscribed: its agents read after it until
    /// they acknowledge.
    start_seq: u64,
    /// ms since the Unix epoch.
    created_at: u64,
}

impl From<TeamSubscription> for TopicTeamSubscriptionView {
    fn from(s: TeamSubscription) -> Self {
        Self {
            topic: s.topic,
            team_id: s.team,
            start_seq: s.start_seq,
            created_at: s.created_at,
        }
    }
}

/// The answer to removing a team's subscription.
#[derive(Serialize, ToSchema)]
pub(super) struct TopicTeamUnsubscribed {
    /// The topic.
    topic: String,
    /// The team.
    team_id: String,
    /// Always true.
    deleted: bool,
}

/// The team of a path, checked to exist in the caller's workspace (after a meta read barrier).
async fn existing_team(state: &AppState, caller: &Caller, id: &str) -> ApiResult<()> {
    validate::name("team", id)?;
    state.meta_barrier().await?;
    let known = state
        .groups()
        .meta()
        .read()
        .expect("meta lock")
        .teams
        .team(&caller.workspace, id)
        .is_some();
    if known {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("team {id:?} not found")))
    }
}

/// Subscribes a team to a topic (admin keys only): every agent of the team reads it with its
/// own cursor, starting after the topic's newest message at this moment, and lists it among its
/// subscriptions with `via: team`. An existing subscription answers 200 unchanged.
#[utoipa::path(post, path = "/v1/topics/{name}/teams/{id}", tag = TAG,
    params(("name" = NameString, Path, description = "The topic"),
        ("id" = NameString, Path, description = "The team")),
    responses((status = 201, description = "The team is subscribed", body = TopicTeamSubscriptionView),
        (status = 200, description = "The team was already subscribed", body = TopicTeamSubscriptionView)))]
async fn team_subscribe(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((name, team)): ApiPath<(String, String)>,
) -> ApiResult<(StatusCode, Json<TopicTeamSubscriptionView>)> {
    caller.require(Scope::Admin)?;
    topic_name("topic", &name)?;
    existing_team(&state, &caller, &team).await?;
    let group = shard(&state, &caller.workspace, "topic", &name)?;
    let cmd = ShardCommand::TopicTeamSubscribe {
        ws: caller.workspace.clone(),
        topic: name,
        team,
    };
    match run(&state, group, ClientRequest::Write(cmd)).await? {
        ClientResponse::Write(ShardResponse::TopicTeamSubscribed { sub, created }) => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((status, Json(sub.into())))
        }
        other => Err(unexpected(other)),
    }
}

/// Removes a team's subscription to a topic (admin keys only); its agents' team-derived
/// cursors are kept for a later subscription.
#[utoipa::path(delete, path = "/v1/topics/{name}/teams/{id}", tag = TAG,
    params(("name" = NameString, Path, description = "The topic"),
        ("id" = NameString, Path, description = "The team")),
    responses((status = 200, description = "The team's subscription was removed", body = TopicTeamUnsubscribed)))]
async fn team_unsubscribe(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((name, team)): ApiPath<(String, String)>,
) -> ApiResult<Json<TopicTeamUnsubscribed>> {
    caller.require(Scope::Admin)?;
    topic_name("topic", &name)?;
    validate::name("team", &team)?;
    let group = shard(&state, &caller.workspace, "topic", &name)?;
    let cmd = ShardCommand::TopicTeamUnsubscribe {
        ws: caller.workspace.clone(),
        topic: name.clone(),
        team: team.clone(),
    };
    match run(&state, group, ClientRequest::Write(cmd)).await? {
        ClientResponse::Write(ShardResponse::Deleted(_)) => Ok(Json(TopicTeamUnsubscribed {
            topic: name,
            team_id: team,
            deleted: true,
        })),
        other => Err(unexpected(other)),
    }
}
