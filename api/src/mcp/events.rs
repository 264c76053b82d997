//! `wait_for_events`: a tool call that blocks until an agent has news, so an agent is pushed
//! work without polling.
//!
//! News is what lies after a cursor in three places: the agent's inbox (by inbox sequence),
//! the workspace's task queue (by task number: tasks created since) and any named topics (by
//! topic sequence). The cursor is opaque to clients (base64url JSON of those positions) and
//! only ever moves past what a call returned, so no event is skipped.
//!
//! Waiting: before each look the call subscribes to the applied-index watch of every shard
//! involved that this node hosts, then reads through the same REST routes as the other tools
//! (linearizable reads on the shard leaders, with the caller's key, so ACLs hold); when nothing
//! is new it sleeps until one of those shards applies an entry, and looks again. A shard not
//! hosted here is looked at every [`REMOTE_RECHECK`] instead. Looks are at least
//! [`MIN_RECHECK`] apart, so a busy shard costs a bounded number of reads per waiting call.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::{HeaderValue, Method, StatusCode};
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use super::catalog::{Route, Slot};
use super::dispatch::{self, BadArguments, RestAnswer, Via};
use crate::state::AppState;

/// Default wait, ms.
pub const DEFAULT_WAIT_MS: u64 = 20_000;
/// Longest wait, ms.
pub const MAX_WAIT_MS: u64 = 60_000;
/// Most events of each kind (inbox, tasks, each topic) one call returns.
pub const MAX_EVENTS_PER_KIND: usize = 100;
/// Most topics one call watches.
pub const MAX_TOPICS: usize = 16;
/// How often a shard not hosted on this node is looked at while waiting.
pub const REMOTE_RECHECK: Duration = Duration::from_millis(500);
/// Shortest time between two looks of one call.
pub const MIN_RECHECK: Duration = Duration::from_millis(20);

/// Where a caller stands: the last position it has seen in each place.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Last inbox sequence seen.
    #[serde(default)]
    pub inbox: u64,
    /// Number of the last task seen (`task_<shard>_<n>`).
    #[serde(default)]
    pub tasks: u64,
    /// Last sequence seen per topic.
    #[serde(default)]
    pub topics: BTreeMap<String, u64>,
}

impl Cursor {
    /// The opaque text form.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).expect("cursor serializes"))
    }

    /// Reads a cursor's text form.
    pub fn decode(text: &str) -> Result<Cursor, BadArguments> {
        let bad = || BadArguments("cursor is not one this server returned".to_string());
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
        serde_json::from_slice(&bytes).map_err(|_| bad())
    }
}

/// The arguments of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitArgs {
    /// Whose inbox.
    pub agent: String,
    /// From where.
    pub cursor: Cursor,
    /// Which topics, in the order given, without repeats.
    pub topics: Vec<String>,
    /// Whether new tasks count.
    pub include_tasks: bool,
    /// How long to wait.
    pub timeout: Duration,
}

/// Reads the arguments (the tool's input schema states the same rules).
pub fn parse_args(args: &Map<String, Value>) -> Result<WaitArgs, BadArguments> {
    let bad = |m: &str| BadArguments(m.to_string());
    for key in args.keys() {
        if !["agent", "cursor", "topics", "include_tasks", "timeout_ms"].contains(&key.as_str()) {
            return Err(BadArguments(format!("unknown argument {key:?}")));
        }
    }
    let agent = match args.get("agent") {
        Some(Value::String(a)) if !a.is_empty() && a.chars().count() <= 128 => a.clone(),
        _ => return Err(bad("agent must be a string of 1 to 128 characters")),
    };
    let cursor = match args.get("cursor") {
        None | Some(Value::Null) => Cursor::default(),
        Some(Value::String(c)) if c.len() <= 8192 => Cursor::decode(c)?,
        _ => return Err(bad("cursor must be a string returned by wait_for_events")),
    };
    let mut topics: Vec<String> = Vec::new();
    match args.get("topics") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for t in items {
                match t {
                    Value::String(s) if !s.is_empty() && s.chars().count() <= 128 => {
                        if !topics.contains(s) {
                            topics.push(s.clone());
                        }
                    }
                    _ => return Err(bad("topics must be names of 1 to 128 characters")),
                }
            }
        }
        _ => return Err(bad("topics must be an array of topic names")),
    }
    if topics.len() > MAX_TOPICS {
        return Err(BadArguments(format!(
            "at most {MAX_TOPICS} topics may be watched at once"
        )));
    }
    let include_tasks = match args.get("include_tasks") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        _ => return Err(bad("include_tasks must be a boolean")),
    };
    let timeout_ms = match args.get("timeout_ms") {
        None | Some(Value::Null) => DEFAULT_WAIT_MS,
        Some(v) => match v.as_u64() {
            Some(ms) if ms <= MAX_WAIT_MS => ms,
            _ => {
                return Err(BadArguments(format!(
                    "timeout_ms must be an integer from 0 to {MAX_WAIT_MS}"
                )))
            }
        },
    };
    Ok(WaitArgs {
        agent,
        cursor,
        topics,
        include_tasks,
        timeout: Duration::from_millis(timeout_ms),
    })
}

/// What one look found: events, the cursor past them, or a REST error to pass on.
enum Look {
    Found {
        events: Value,
        cursor: Cursor,
        any: bool,
    },
    Error(RestAnswer),
}

/// Runs one `wait_for_events` call: the REST answer to pass on as the tool's result.
pub async fn wait(
    state: &AppState,
    rest: &Router,
    ws: &str,
    authorization: Option<&HeaderValue>,
    session: Option<&str>,
    args: WaitArgs,
) -> RestAnswer {
    let deadline = Instant::now() + args.timeout;
    let mut groups = Vec::new();
    let router = &state.router;
    groups.extend(router.shard_of(ws, "agent", &args.agent));
    if args.include_tasks {
        groups.extend(router.shard_of(ws, "queue", "default"));
    }
    for t in &args.topics {
        groups.extend(router.shard_of(ws, "topic", t));
    }
    groups.sort_unstable();
    groups.dedup();
    let mut watches: Vec<watch::Receiver<u64>> = Vec::new();
    let mut all_local = true;
    for g in &groups {
        match state.groups().applied_watch(*g) {
            Some(w) => watches.push(w.subscribe()),
            None => all_local = false,
        }
    }
    loop {
        let looked_at = Instant::now();
        for w in watches.iter_mut() {
            // Marks the current index seen: only a later apply wakes the wait below.
            drop(w.borrow_and_update());
        }
        match look(rest, authorization, session, &args).await {
            Look::Error(answer) => return answer,
            Look::Found {
                events,
                cursor,
                any,
            } => {
                if any || Instant::now() >= deadline {
                    let mut body = events;
                    body["cursor"] = json!(cursor.encode());
                    body["timed_out"] = json!(!any);
                    return RestAnswer {
                        status: StatusCode::OK,
                        body,
                    };
                }
            }
        }
        // Sleep until a watched shard applies something, a remote shard is due, or the end.
        let mut wake = deadline;
        if !all_local {
            wake = wake.min(Instant::now() + REMOTE_RECHECK);
        }
        let changed =
            futures::future::select_all(watches.iter_mut().map(|w| w.changed().boxed()).chain(
                std::iter::once(
                    futures::future::pending::<Result<(), watch::error::RecvError>>().boxed(),
                ),
            ));
        let closed = tokio::select! {
            (res, i, _) = changed => res.is_err().then_some(i),
            _ = tokio::time::sleep_until(wake) => None,
        };
        if let Some(i) = closed {
            // The group left this node: look at its shard on a timer from now on.
            watches.remove(i);
            all_local = false;
        }
        tokio::time::sleep_until(looked_at + MIN_RECHECK).await;
    }
}

/// Reads every watched place once, from the cursor.
async fn look(
    rest: &Router,
    authorization: Option<&HeaderValue>,
    session: Option<&str>,
    args: &WaitArgs,
) -> Look {
    let limit = json!(MAX_EVENTS_PER_KIND);
    let mut cursor = args.cursor.clone();
    let mut any = false;
    // Inbox.
    let inbox = get(
        rest,
        authorization,
        session,
        "/v1/messages",
        &[],
        json!({"agent": args.agent, "since": args.cursor.inbox, "limit": limit}),
    )
    .await;
    if !inbox.status.is_success() {
        return Look::Error(inbox);
    }
    let messages = inbox.body["items"].as_array().cloned().unwrap_or_default();
    if let Some(next) = inbox.body["next_since"].as_u64() {
        cursor.inbox = cursor.inbox.max(next);
    }
    any |= !messages.is_empty();
    // Tasks created after the cursor.
    let mut tasks = Vec::new();
    if args.include_tasks {
        let mut q = json!({"limit": limit});
        if args.cursor.tasks > 0 {
            q["cursor"] = json!(args.cursor.tasks.to_string());
        }
        let answer = get(rest, authorization, session, "/v1/tasks", &[], q).await;
        if !answer.status.is_success() {
            return Look::Error(answer);
        }
        tasks = answer.body["items"].as_array().cloned().unwrap_or_default();
        for t in &tasks {
            if let Some(n) = t["id"].as_str().and_then(task_number) {
                cursor.tasks = cursor.tasks.max(n);
            }
        }
        any |= !tasks.is_empty();
    }
    // Topics.
    let mut topics = Map::new();
    for name in &args.topics {
        let since = args.cursor.topics.get(name).copied().unwrap_or(0);
        let answer = get(
            rest,
            authorization,
            session,
            "/v1/topics/{name}/messages",
            &[("name", name)],
            json!({"since": since, "limit": limit}),
        )
        .await;
        if !answer.status.is_success() {
            return Look::Error(answer);
        }
        let items = answer.body["items"].as_array().cloned().unwrap_or_default();
        let next = answer.body["next_since"].as_u64().unwrap_or(since);
        cursor.topics.insert(name.clone(), since.max(next));
        any |= !items.is_empty();
        topics.insert(name.clone(), Value::Array(items));
    }
    Look::Found {
        events: json!({"messages": messages, "tasks": tasks, "topics": topics}),
        cursor,
        any,
    }
}

/// `n` of a task id `task_<shard>_<n>`.
fn task_number(id: &str) -> Option<u64> {
    id.rsplit('_').next()?.parse().ok()
}

/// A GET of `path` (with `path_args` substituted) with query `query`, in-process.
async fn get(
    rest: &Router,
    authorization: Option<&HeaderValue>,
    session: Option<&str>,
    path: &'static str,
    path_args: &[(&str, &str)],
    query: Value,
) -> RestAnswer {
    let mut slots = BTreeMap::new();
    let mut args = Map::new();
    for (param, value) in path_args {
        slots.insert(param.to_string(), Slot::Path(param.to_string()));
        args.insert(param.to_string(), json!(value));
    }
    for (k, v) in query.as_object().into_iter().flatten() {
        slots.insert(k.clone(), Slot::Query);
        args.insert(k.clone(), v.clone());
    }
    let route = Route {
        method: Method::GET,
        path,
        slots,
        has_body: false,
    };
    let via = Via::Mcp {
        tool: super::catalog::WAIT_FOR_EVENTS.to_string(),
        session: session.map(str::to_string),
    };
    match dispatch::build_request(&route, &args, authorization, via) {
        Ok(req) => dispatch::send(rest, req).await,
        Err(BadArguments(message)) => RestAnswer {
            status: StatusCode::BAD_REQUEST,
            body: json!({"error": {"code": "bad_request", "status": 400, "message": message}}),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let c = Cursor {
            inbox: 3,
            tasks: 7,
            topics: BTreeMap::from([("news".to_string(), 9)]),
        };
        assert_eq!(Cursor::decode(&c.encode()), Ok(c));
        assert!(Cursor::decode("not a cursor").is_err());
        assert!(Cursor::decode(&URL_SAFE_NO_PAD.encode(b"\"x\"")).is_err());
    }

    #[test]
    fn arguments_are_checked() {
        let ok = json!({"agent": "bot", "topics": ["a", "a", "b"], "timeout_ms": 0});
        let args = parse_args(ok.as_object().unwrap()).unwrap();
        assert_eq!(args.topics, vec!["a".to_string(), "b".to_string()]);
        assert!(args.include_tasks);
        assert_eq!(args.timeout, Duration::ZERO);
        for bad in [
            json!({}),
            json!({"agent": ""}),
            json!({"agent": "bot", "timeout_ms": MAX_WAIT_MS + 1}),
            json!({"agent": "bot", "timeout_ms": -1}),
            json!({"agent": "bot", "topics": "a"}),
            json!({"agent": "bot", "include_tasks": "yes"}),
            json!({"agent": "bot", "cursor": "zzz"}),
            json!({"agent": "bot", "other": 1}),
            json!({"agent": "bot", "topics": (0..=MAX_TOPICS).map(|i| i.to_string()).collect::<Vec<_>>()}),
        ] {
            assert!(parse_args(bad.as_object().unwrap()).is_err(), "{bad}");
        }
    }

    #[test]
    fn task_numbers_come_from_ids() {
        assert_eq!(task_number("task_3_42"), Some(42));
        assert_eq!(task_number("nope"), None);
    }
}
