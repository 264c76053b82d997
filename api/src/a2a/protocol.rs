//! The A2A wire forms: protocol versions, JSON-RPC envelopes and errors, messages and parts
//! (checked and normalised), and Conclave tasks rendered as A2A tasks.
//!
//! Messages are normalised to the v1.0 form (parts `{"text"}`, `{"data"}`, `{"url"}`, `{"raw"}`)
//! before they are stored, and rendered back in the form of the version the client speaks:
//! v1.0 is ProtoJSON (`TASK_STATE_WORKING`, `ROLE_USER`, results wrapped as `{"task": ...}`),
//! 0.3 the older JSON (`working`, `user`, `kind` on every object).

use axum::http::HeaderMap;
use conclave_raft::shard::{Task, TaskStatus};
use serde_json::{json, Map, Value};

/// Most parts of one message.
pub const MAX_PARTS: usize = 64;
/// Longest message id, context id or task id a client may give, characters.
pub const MAX_ID_CHARS: usize = 128;

/// The protocol version of a request, from its `A2A-Version` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// A2A v1.0 (any `1.x`).
    V1,
    /// A2A 0.3: no header, or `0.3`.
    V03,
}

/// The header naming the protocol version.
pub const VERSION_HEADER: &str = "a2a-version";

impl Version {
    /// The version asked for by `headers`; `Err` carries the unsupported value.
    pub fn of(headers: &HeaderMap) -> Result<Version, String> {
        let Some(v) = headers.get(VERSION_HEADER) else {
            return Ok(Version::V03);
        };
        let v = v
            .to_str()
            .map_err(|_| "(not visible ascii)".to_string())?
            .trim();
        let mut parts = v.split('.');
        match (parts.next(), parts.next()) {
            (Some(""), None) => Ok(Version::V03),
            (Some("1"), _) => Ok(Version::V1),
            (Some("0"), Some("3")) => Ok(Version::V03),
            _ => Err(v.to_string()),
        }
    }
}

/// A JSON-RPC error with its A2A meaning.
#[derive(Debug, Clone)]
pub struct RpcError {
    /// JSON-RPC error code.
    pub code: i64,
    /// The A2A reason (`TASK_NOT_FOUND`, ...), sent in v1.0 error details.
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
}

impl RpcError {
    fn new(code: i64, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
        }
    }
    /// -32700: the body is not JSON.
    pub fn parse(m: impl Into<String>) -> Self {
        Self::new(-32700, "PARSE_ERROR", m)
    }
    /// -32600: not a JSON-RPC 2.0 request.
    pub fn invalid_request(m: impl Into<String>) -> Self {
        Self::new(-32600, "INVALID_REQUEST", m)
    }
    /// -32601: no such method in the request's protocol version.
    pub fn method_not_found(m: impl Into<String>) -> Self {
        Self::new(-32601, "METHOD_NOT_FOUND", m)
    }
    /// -32602: bad parameters; nothing was changed.
    pub fn invalid_params(m: impl Into<String>) -> Self {
        Self::new(-32602, "INVALID_PARAMS", m)
    }
    /// -32603: the cluster failed the request.
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(-32603, "INTERNAL_ERROR", m)
    }
    /// -32001: no such task of this agent.
    pub fn task_not_found(id: &str) -> Self {
        Self::new(-32001, "TASK_NOT_FOUND", format!("task {id:?} not found"))
    }
    /// -32002: the task cannot be canceled.
    pub fn not_cancelable(m: impl Into<String>) -> Self {
        Self::new(-32002, "TASK_NOT_CANCELABLE", m)
    }
    /// -32003: Conclave sends no push notifications.
    pub fn push_not_supported() -> Self {
        Self::new(
            -32003,
            "PUSH_NOTIFICATION_NOT_SUPPORTED",
            "push notifications are not supported; use SendStreamingMessage or SubscribeToTask",
        )
    }
    /// -32004: an operation Conclave does not offer.
    pub fn unsupported(m: impl Into<String>) -> Self {
        Self::new(-32004, "UNSUPPORTED_OPERATION", m)
    }
    /// -32007: there is no extended card.
    pub fn no_extended_card() -> Self {
        Self::new(
            -32007,
            "EXTENDED_AGENT_CARD_NOT_CONFIGURED",
            "this agent has no extended card",
        )
    }
    /// -32009: an `A2A-Version` this server does not speak.
    pub fn version_not_supported(v: &str) -> Self {
        Self::new(
            -32009,
            "VERSION_NOT_SUPPORTED",
            format!("A2A-Version {v:?} is not supported; use 1.0, or 0.3 (no header)"),
        )
    }

    /// The JSON-RPC error response to request `id`.
    pub fn response(&self, version: Version, id: &Value) -> Value {
        let mut error = json!({"code": self.code, "message": self.message});
        if version == Version::V1 {
            error["data"] = json!([{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": self.reason,
                "domain": "a2a-protocol.org",
            }]);
        }
        json!({"jsonrpc": "2.0", "id": id, "error": error})
    }
}

impl From<crate::error::ApiError> for RpcError {
    fn from(e: crate::error::ApiError) -> Self {
        if e.status.is_client_error() {
            RpcError::invalid_params(e.message)
        } else {
            RpcError::internal(e.message)
        }
    }
}

/// A JSON-RPC success response to request `id`.
pub fn result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// The A2A state of a Conclave task status (see `docs/a2a.md`).
pub fn state(status: TaskStatus, version: Version) -> &'static str {
    let (v1, v03) = match status {
        TaskStatus::PendingApproval | TaskStatus::Open => ("TASK_STATE_SUBMITTED", "submitted"),
        TaskStatus::Claimed | TaskStatus::InProgress => ("TASK_STATE_WORKING", "working"),
        TaskStatus::Done => ("TASK_STATE_COMPLETED", "completed"),
        TaskStatus::Failed => ("TASK_STATE_FAILED", "failed"),
        TaskStatus::Cancelled => ("TASK_STATE_CANCELED", "canceled"),
    };
    match version {
        Version::V1 => v1,
        Version::V03 => v03,
    }
}

/// The Conclave statuses an A2A state filter stands for; `None` for a state no Conclave task
/// is ever in (input-required, rejected, auth-required).
pub fn statuses_of(state: &str) -> Result<Option<&'static [TaskStatus]>, RpcError> {
    use TaskStatus::*;
    Ok(Some(match state {
        "TASK_STATE_SUBMITTED" | "submitted" => &[PendingApproval, Open],
        "TASK_STATE_WORKING" | "working" => &[Claimed, InProgress],
        "TASK_STATE_COMPLETED" | "completed" => &[Done],
        "TASK_STATE_FAILED" | "failed" => &[Failed],
        "TASK_STATE_CANCELED" | "canceled" => &[Cancelled],
        "TASK_STATE_INPUT_REQUIRED"
        | "input-required"
        | "TASK_STATE_REJECTED"
        | "rejected"
        | "TASK_STATE_AUTH_REQUIRED"
        | "auth-required" => return Ok(None),
        other => {
            return Err(RpcError::invalid_params(format!(
                "status {other:?} is not an A2A task state"
            )))
        }
    }))
}

/// `ms` since the Unix epoch as RFC 3339 UTC with milliseconds.
pub fn timestamp(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

fn text_field(field: &str, v: Option<&Value>, required: bool) -> Result<Option<String>, RpcError> {
    match v {
        None | Some(Value::Null) if !required => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= MAX_ID_CHARS => {
            if s.chars().any(char::is_control) {
                return Err(RpcError::invalid_params(format!(
                    "{field} must not contain control characters"
                )));
            }
            Ok(Some(s.clone()))
        }
        _ => Err(RpcError::invalid_params(format!(
            "{field} must be a string of 1 to {MAX_ID_CHARS} characters"
        ))),
    }
}

/// An optional string field of `obj`, at most `max` characters.
pub fn opt_id(obj: &Map<String, Value>, field: &str) -> Result<Option<String>, RpcError> {
    text_field(field, obj.get(field), false)
}

/// A required id field of `obj`.
pub fn req_id(obj: &Map<String, Value>, field: &str) -> Result<String, RpcError> {
    Ok(text_field(field, obj.get(field), true)?.expect("required"))
}

/// An optional non-negative integer field.
pub fn opt_uint(obj: &Map<String, Value>, field: &str) -> Result<Option<u64>, RpcError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            RpcError::invalid_params(format!("{field} must be a non-negative integer"))
        }),
    }
}

/// Checks one part and returns it in the v1.0 form.
fn part(i: usize, p: &Value, version: Version) -> Result<Value, RpcError> {
    let bad = |m: &str| RpcError::invalid_params(format!("message.parts[{i}]: {m}"));
    let obj = p.as_object().ok_or_else(|| bad("must be an object"))?;
    let mut out = Map::new();
    if let Some(m) = obj.get("metadata") {
        if !m.is_object() {
            return Err(bad("metadata must be an object"));
        }
        out.insert("metadata".into(), m.clone());
    }
    let kind = obj.get("kind").and_then(Value::as_str);
    if version == Version::V03 || kind.is_some() {
        // 0.3: {"kind": "text"|"data"|"file", ...}.
        match kind {
            Some("text") => match obj.get("text") {
                Some(Value::String(t)) => {
                    out.insert("text".into(), json!(t));
                }
                _ => return Err(bad("a text part needs a string `text`")),
            },
            Some("data") => match obj.get("data") {
                Some(d @ Value::Object(_)) => {
                    out.insert("data".into(), d.clone());
                }
                _ => return Err(bad("a data part needs an object `data`")),
            },
            Some("file") => {
                let f = obj
                    .get("file")
                    .and_then(Value::as_object)
                    .ok_or_else(|| bad("a file part needs an object `file`"))?;
                match (f.get("uri"), f.get("bytes")) {
                    (Some(Value::String(u)), None) => out.insert("url".into(), json!(u)),
                    (None, Some(Value::String(b))) => out.insert("raw".into(), json!(b)),
                    _ => return Err(bad("a file needs exactly one of a string `uri` or `bytes`")),
                };
                for (from, to) in [("name", "filename"), ("mimeType", "mediaType")] {
                    match f.get(from) {
                        None | Some(Value::Null) => {}
                        Some(Value::String(s)) => {
                            out.insert(to.into(), json!(s));
                        }
                        Some(_) => return Err(bad(&format!("file.{from} must be a string"))),
                    }
                }
            }
            _ => return Err(bad("kind must be text, data or file")),
        }
        return Ok(Value::Object(out));
    }
    let content: Vec<&str> = ["text", "raw", "url", "data"]
        .into_iter()
        .filter(|k| obj.get(*k).is_some_and(|v| !v.is_null()))
        .collect();
    let [which] = content.as_slice() else {
        return Err(bad("give exactly one of text, raw, url or data"));
    };
    let v = &obj[*which];
    if *which != "data" && !v.is_string() {
        return Err(bad(&format!("{which} must be a string")));
    }
    out.insert((*which).into(), v.clone());
    for k in ["filename", "mediaType"] {
        match obj.get(k) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => {
                out.insert(k.into(), json!(s));
            }
            Some(_) => return Err(bad(&format!("{k} must be a string"))),
        }
    }
    Ok(Value::Object(out))
}

/// A client's message, checked: its id, the context and task it names, and the message in the
/// v1.0 form (role `ROLE_USER`).
#[derive(Debug, Clone)]
pub struct InMessage {
    /// The client's `messageId`.
    pub message_id: String,
    /// `contextId`, if given.
    pub context_id: Option<String>,
    /// `taskId`, if given (a follow-up to that task).
    pub task_id: Option<String>,
    /// The message, v1.0 form, without `contextId`/`taskId` (set once known).
    pub message: Map<String, Value>,
}

impl InMessage {
    /// The text of its text parts, joined by blank lines.
    pub fn text(&self) -> String {
        self.message["parts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n\n")
    }
}

/// Checks `params.message` of a send.
pub fn in_message(params: &Map<String, Value>, version: Version) -> Result<InMessage, RpcError> {
    let m = params
        .get("message")
        .and_then(Value::as_object)
        .ok_or_else(|| RpcError::invalid_params("params.message must be an object"))?;
    let message_id = req_id(m, "messageId")?;
    let context_id = opt_id(m, "contextId")?;
    let task_id = opt_id(m, "taskId")?;
    match (version, m.get("role").and_then(Value::as_str)) {
        (Version::V1, Some("ROLE_USER")) | (Version::V03, Some("user")) => {}
        (Version::V1, _) => return Err(RpcError::invalid_params("message.role must be ROLE_USER")),
        (Version::V03, _) => return Err(RpcError::invalid_params("message.role must be user")),
    }
    if version == Version::V03 && m.get("kind").is_some_and(|k| k != "message") {
        return Err(RpcError::invalid_params("message.kind must be message"));
    }
    let parts = m
        .get("parts")
        .and_then(Value::as_array)
        .filter(|p| !p.is_empty() && p.len() <= MAX_PARTS)
        .ok_or_else(|| {
            RpcError::invalid_params(format!(
                "message.parts must be an array of 1 to {MAX_PARTS} parts"
            ))
        })?;
    let parts = parts
        .iter()
        .enumerate()
        .map(|(i, p)| part(i, p, version))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Map::new();
    out.insert("messageId".into(), json!(message_id));
    out.insert("role".into(), json!("ROLE_USER"));
    out.insert("parts".into(), Value::Array(parts));
    if let Some(md) = m.get("metadata").filter(|v| !v.is_null()) {
        if !md.is_object() {
            return Err(RpcError::invalid_params(
                "message.metadata must be an object",
            ));
        }
        out.insert("metadata".into(), md.clone());
    }
    if let Some(refs) = m.get("referenceTaskIds").filter(|v| !v.is_null()) {
        let ok = refs.as_array().is_some_and(|a| {
            a.len() <= MAX_PARTS
                && a.iter()
                    .all(|r| r.as_str().is_some_and(|s| s.len() <= MAX_ID_CHARS))
        });
        if !ok {
            return Err(RpcError::invalid_params(
                "message.referenceTaskIds must be an array of task ids",
            ));
        }
        out.insert("referenceTaskIds".into(), refs.clone());
    }
    Ok(InMessage {
        message_id,
        context_id,
        task_id,
        message: out,
    })
}

/// A stored (v1.0 form) message in the form of `version`.
pub fn render_message(m: &Value, version: Version) -> Value {
    if version == Version::V1 {
        return m.clone();
    }
    let mut out = m.as_object().cloned().unwrap_or_default();
    out.insert("kind".into(), json!("message"));
    let role = match out.get("role").and_then(Value::as_str) {
        Some("ROLE_AGENT") => "agent",
        _ => "user",
    };
    out.insert("role".into(), json!(role));
    let parts: Vec<Value> = out
        .get("parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            let mut q = Map::new();
            if let Some(md) = p.get("metadata") {
                q.insert("metadata".into(), md.clone());
            }
            if let Some(t) = p.get("text") {
                q.insert("kind".into(), json!("text"));
                q.insert("text".into(), t.clone());
            } else if let Some(d) = p.get("data") {
                q.insert("kind".into(), json!("data"));
                q.insert("data".into(), d.clone());
            } else {
                let mut f = Map::new();
                if let Some(u) = p.get("url") {
                    f.insert("uri".into(), u.clone());
                }
                if let Some(b) = p.get("raw") {
                    f.insert("bytes".into(), b.clone());
                }
                if let Some(n) = p.get("filename") {
                    f.insert("name".into(), n.clone());
                }
                if let Some(t) = p.get("mediaType") {
                    f.insert("mimeType".into(), t.clone());
                }
                q.insert("kind".into(), json!("file"));
                q.insert("file".into(), Value::Object(f));
            }
            Value::Object(q)
        })
        .collect();
    out.insert("parts".into(), Value::Array(parts));
    Value::Object(out)
}

/// What a Conclave task records about its A2A origin (`metadata.a2a`).
#[derive(Debug, Clone)]
pub struct Origin {
    /// The agent the task was sent to.
    pub agent: String,
    /// Its A2A context.
    pub context_id: String,
    /// The first message (v1.0 form), when it was small enough to keep on the task.
    pub message: Option<Value>,
}

impl Origin {
    /// The origin of `task`, if it was created through A2A.
    pub fn of(task: &Task) -> Option<Origin> {
        let meta: Value = serde_json::from_str(&task.metadata).ok()?;
        let a2a = meta.get("a2a")?;
        Some(Origin {
            agent: a2a.get("agent")?.as_str()?.to_string(),
            context_id: a2a.get("contextId")?.as_str()?.to_string(),
            message: a2a.get("message").cloned(),
        })
    }
}

/// The task's status object: its A2A state, when it last changed, and the latest note as the
/// agent's status message.
pub fn status(task: &Task, origin: &Origin, version: Version) -> Value {
    let mut s = json!({
        "state": state(task.status, version),
        "timestamp": timestamp(task.updated_at),
    });
    if let Some(note) = task.notes.last() {
        let m = json!({
            "messageId": format!("{}-note-{}", task.id, task.notes.len()),
            "contextId": origin.context_id,
            "taskId": task.id,
            "role": "ROLE_AGENT",
            "parts": [{"text": note.text}],
            "metadata": {"conclave": {"by": note.by, "at": note.at}},
        });
        s["message"] = render_message(&m, version);
    }
    s
}

/// A Conclave task as an A2A task, with up to `history` messages of its history (all when
/// `None`).
pub fn render_task(task: &Task, origin: &Origin, version: Version, history: Option<u64>) -> Value {
    let mut t = json!({
        "id": task.id,
        "contextId": origin.context_id,
        "status": status(task, origin, version),
        "metadata": {"conclave": {
            "status": task.status.as_str(),
            "queue": task.queue,
            "claimedBy": task.claimed_by,
            "createdAt": task.created_at,
        }},
    });
    if version == Version::V03 {
        t["kind"] = json!("task");
    }
    if history != Some(0) {
        if let Some(m) = &origin.message {
            let mut m = m.clone();
            m["contextId"] = json!(origin.context_id);
            m["taskId"] = json!(task.id);
            t["history"] = json!([render_message(&m, version)]);
        }
    }
    t
}

/// A task update event for a stream.
pub fn status_update(task: &Task, origin: &Origin, version: Version) -> Value {
    match version {
        Version::V1 => json!({"statusUpdate": {
            "taskId": task.id,
            "contextId": origin.context_id,
            "status": status(task, origin, version),
        }}),
        Version::V03 => json!({
            "kind": "status-update",
            "taskId": task.id,
            "contextId": origin.context_id,
            "status": status(task, origin, version),
            "final": task.status.is_terminal(),
        }),
    }
}

/// A task as the first event of a stream, or as a send's result.
pub fn task_result(task: &Task, origin: &Origin, version: Version, history: Option<u64>) -> Value {
    let t = render_task(task, origin, version, history);
    match version {
        Version::V1 => json!({"task": t}),
        Version::V03 => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(timestamp(1_795_305_600_000), "2026-11-22T00:00:00.000Z");
        assert_eq!(timestamp(1_795_391_999_999), "2026-11-22T23:59:59.999Z");
    }

    #[test]
    fn versions_come_from_the_header() {
        let mut h = HeaderMap::new();
        assert_eq!(Version::of(&h), Ok(Version::V03));
        h.insert(VERSION_HEADER, "1.0".parse().unwrap());
        assert_eq!(Version::of(&h), Ok(Version::V1));
        h.insert(VERSION_HEADER, "0.3".parse().unwrap());
        assert_eq!(Version::of(&h), Ok(Version::V03));
        h.insert(VERSION_HEADER, "2.0".parse().unwrap());
        assert!(Version::of(&h).is_err());
    }

    #[test]
    fn parts_of_both_versions_normalise_to_one_form() {
        let v1 = json!({"message": {"messageId": "m", "role": "ROLE_USER",
            "parts": [{"text": "hi"}, {"data": {"a": 1}}, {"url": "http://x", "mediaType": "text/plain"}]}});
        let m = in_message(v1.as_object().unwrap(), Version::V1).unwrap();
        let v03 = json!({"message": {"kind": "message", "messageId": "m", "role": "user",
            "parts": [{"kind": "text", "text": "hi"}, {"kind": "data", "data": {"a": 1}},
                      {"kind": "file", "file": {"uri": "http://x", "mimeType": "text/plain"}}]}});
        let n = in_message(v03.as_object().unwrap(), Version::V03).unwrap();
        assert_eq!(m.message, n.message);
        assert_eq!(m.text(), "hi");
        let back = render_message(&Value::Object(m.message), Version::V03);
        assert_eq!(back["parts"][2]["file"]["uri"], "http://x");
        for bad in [
            json!({"message": {"messageId": "m", "role": "ROLE_USER", "parts": []}}),
            json!({"message": {"messageId": "m", "role": "user", "parts": [{"text": "x"}]}}),
            json!({"message": {"role": "ROLE_USER", "parts": [{"text": "x"}]}}),
            json!({"message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "x", "url": "y"}]}}),
            json!({"message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"text": 1}]}}),
        ] {
            let e = in_message(bad.as_object().unwrap(), Version::V1).unwrap_err();
            assert_eq!(e.code, -32602, "{bad}");
        }
    }

    #[test]
    fn every_status_has_a_state_and_back() {
        for s in TaskStatus::ALL {
            for v in [Version::V1, Version::V03] {
                let st = state(s, v);
                let back = statuses_of(st).unwrap().unwrap();
                assert!(back.contains(&s), "{s:?} -> {st}");
            }
        }
        assert!(statuses_of("TASK_STATE_INPUT_REQUIRED").unwrap().is_none());
        assert!(statuses_of("bogus").is_err());
    }
}
