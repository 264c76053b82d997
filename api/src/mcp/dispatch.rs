//! Runs a mirroring tool: its arguments become a REST request that is sent in-process to the
//! node's own REST router (a tower `oneshot`, no network), with the caller's `Authorization`
//! header, so a tool call is validated, authorized and answered exactly as the REST call.
//!
//! Each such request carries a [`Via::Mcp`] extension naming the tool, so middleware around the
//! REST routes (an audit layer) can tell an MCP tool call from a direct REST call.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Map, Value};
use tower::ServiceExt;

use super::catalog::{Route, Slot};

/// Largest REST answer a tool returns, bytes (an artifact's content, base64-encoded, fits).
pub const MAX_TOOL_RESPONSE_BYTES: usize = 16 << 20;

/// How a request reached the REST routes, when not directly: set as a request extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// Through the MCP endpoint, as a call of `tool`.
    Mcp {
        /// The tool's name.
        tool: String,
        /// The MCP session's nonce (session form), or `None` (stateless form).
        session: Option<String>,
    },
}

/// The REST answer to a tool call.
#[derive(Debug, Clone)]
pub struct RestAnswer {
    /// Its status.
    pub status: StatusCode,
    /// Its body: the JSON answer; for a non-JSON answer (artifact content), an object with
    /// the content type, size and the content as text (UTF-8) or base64.
    pub body: Value,
}

/// Why a tool's arguments cannot be turned into a request: a client error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadArguments(pub String);

/// Builds the REST request for `route` from `args`.
pub fn build_request(
    route: &Route,
    args: &Map<String, Value>,
    authorization: Option<&HeaderValue>,
    via: Via,
) -> Result<Request<Body>, BadArguments> {
    let mut path = route.path.to_string();
    let mut query = Vec::new();
    let mut body = Map::new();
    for (arg, value) in args {
        let Some(slot) = route.slots.get(arg) else {
            return Err(BadArguments(format!("unknown argument {arg:?}")));
        };
        match slot {
            Slot::Path(param) => {
                let text = scalar_text(arg, value)?;
                path = path.replace(&format!("{{{param}}}"), &percent_encode(&text));
            }
            Slot::Query => {
                if value.is_null() {
                    continue;
                }
                query.push(format!(
                    "{}={}",
                    percent_encode(arg),
                    percent_encode(&scalar_text(arg, value)?)
                ));
            }
            Slot::Body => {
                body.insert(arg.clone(), value.clone());
            }
        }
    }
    if let Some(missing) = route.slots.iter().find_map(|(arg, slot)| match slot {
        Slot::Path(p) if path.contains(&format!("{{{p}}}")) => Some(arg),
        _ => None,
    }) {
        return Err(BadArguments(format!("argument {missing:?} is required")));
    }
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query.join("&"));
    }
    let mut builder = Request::builder().method(route.method.clone()).uri(path);
    if let Some(auth) = authorization {
        builder = builder.header(header::AUTHORIZATION, auth.clone());
    }
    let body = if route.has_body {
        builder = builder.header(header::CONTENT_TYPE, "application/json");
        Body::from(Value::Object(body).to_string())
    } else {
        Body::empty()
    };
    let mut req = builder
        .body(body)
        .map_err(|e| BadArguments(format!("cannot build the request: {e}")))?;
    // The audit layer around the REST routes records the call as made through MCP.
    req.extensions_mut().insert(crate::audit::Via::Mcp);
    req.extensions_mut().insert(via);
    Ok(req)
}

/// Sends `req` to `rest` and reads the answer.
pub async fn send(rest: &Router, req: Request<Body>) -> RestAnswer {
    let resp = match rest.clone().oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = match axum::body::to_bytes(resp.into_body(), MAX_TOOL_RESPONSE_BYTES).await {
        Ok(b) => b,
        Err(e) => {
            return RestAnswer {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                body: json!({"error": {"code": "internal", "status": 500,
                    "message": format!("the answer could not be read: {e}")}}),
            }
        }
    };
    let body = if bytes.is_empty() {
        Value::Null
    } else if content_type.starts_with("application/json") {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    } else {
        match std::str::from_utf8(&bytes) {
            Ok(text) => json!({"content_type": content_type, "size": bytes.len(), "text": text}),
            Err(_) => json!({"content_type": content_type, "size": bytes.len(),
                "base64": STANDARD.encode(&bytes)}),
        }
    };
    RestAnswer { status, body }
}

/// The text a path or query argument stands for: strings as they are, numbers and booleans
/// in JSON form.
fn scalar_text(arg: &str, value: &Value) -> Result<String, BadArguments> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(BadArguments(format!(
            "argument {arg:?} must be a string, number or boolean"
        ))),
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The headers of an MCP request that a tool call passes on: only `Authorization`.
pub fn authorization(headers: &HeaderMap) -> Option<&HeaderValue> {
    headers.get(header::AUTHORIZATION)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use axum::http::Method;

    use super::*;

    fn route() -> Route {
        Route {
            method: Method::POST,
            path: "/v1/tasks/{id}/claim",
            slots: BTreeMap::from([
                ("task_id".to_string(), Slot::Path("id".into())),
                ("agent".to_string(), Slot::Body),
                ("dry".to_string(), Slot::Query),
            ]),
            has_body: true,
        }
    }

    fn via() -> Via {
        Via::Mcp {
            tool: "claim_task".into(),
            session: None,
        }
    }

    #[tokio::test]
    async fn arguments_become_path_query_and_body() {
        let args = json!({"task_id": "task_1 2/3", "agent": "bot", "dry": true});
        let req = build_request(&route(), args.as_object().unwrap(), None, via()).unwrap();
        assert_eq!(
            req.uri().to_string(),
            "/v1/tasks/task_1%202%2F3/claim?dry=true"
        );
        assert_eq!(req.extensions().get::<Via>(), Some(&via()));
        let body = axum::body::to_bytes(req.into_body(), 1024).await.unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap(),
            json!({"agent": "bot"})
        );
    }

    #[test]
    fn unknown_or_missing_arguments_are_refused() {
        let args = json!({"task_id": "t", "nope": 1});
        assert!(build_request(&route(), args.as_object().unwrap(), None, via()).is_err());
        let args = json!({"agent": "bot"});
        let e = build_request(&route(), args.as_object().unwrap(), None, via()).unwrap_err();
        assert!(e.0.contains("task_id"), "{e:?}");
        let args = json!({"task_id": {"x": 1}});
        assert!(build_request(&route(), args.as_object().unwrap(), None, via()).is_err());
    }
}
