//! JSON-RPC 2.0 as MCP uses it: the parts of a request, error codes (the standard ones and
//! MCP's), and the shapes of answers.

use axum::http::StatusCode;
use serde_json::{json, Map, Value};

/// Invalid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// Not a valid request object.
pub const INVALID_REQUEST: i64 = -32600;
/// No such method.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Invalid method parameters.
pub const INVALID_PARAMS: i64 = -32602;
/// An internal error.
pub const INTERNAL_ERROR: i64 = -32603;
/// MCP 2026-07-28: the HTTP routing headers disagree with the body.
pub const HEADER_MISMATCH: i64 = -32020;
/// MCP 2026-07-28: the requested protocol version is not supported.
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;

/// A JSON-RPC error answer.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// The error code.
    pub code: i64,
    /// A lowercase explanation.
    pub message: String,
    /// Extra data, if any.
    pub data: Option<Value>,
}

impl RpcError {
    /// An error with `code` and `message`.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// [`INVALID_PARAMS`].
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(INVALID_PARAMS, message)
    }

    /// [`INVALID_REQUEST`].
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(INVALID_REQUEST, message)
    }

    /// With `data`.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// The HTTP status of a stateless (2026-07-28) answer carrying this error, as that
    /// revision's transport prescribes; other errors travel with 200.
    pub fn modern_status(&self) -> StatusCode {
        match self.code {
            PARSE_ERROR
            | INVALID_REQUEST
            | INVALID_PARAMS
            | HEADER_MISMATCH
            | UNSUPPORTED_PROTOCOL_VERSION => StatusCode::BAD_REQUEST,
            METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
            _ => StatusCode::OK,
        }
    }
}

/// A request's id: a string or a number (`null` when a request could not be read).
pub type Id = Value;

/// One JSON-RPC message from the client, as read.
#[derive(Debug, Clone)]
pub enum Incoming {
    /// A request, to be answered.
    Request {
        /// Its id.
        id: Id,
        /// Its method.
        method: String,
        /// Its params (an empty object when absent).
        params: Map<String, Value>,
    },
    /// A notification: never answered.
    Notification {
        /// Its method.
        method: String,
    },
    /// An answer to a request of the server's (this server sends none): ignored.
    Response,
}

/// Reads one message; an error carries the id to answer with (`null` if unknown).
pub fn parse(value: Value) -> Result<Incoming, (Id, RpcError)> {
    let Value::Object(mut obj) = value else {
        return Err((
            Value::Null,
            RpcError::invalid_request("a message must be a json object"),
        ));
    };
    let id = obj.remove("id");
    if let Some(id) = &id {
        if !(id.is_string() || id.is_i64() || id.is_u64()) {
            return Err((
                Value::Null,
                RpcError::invalid_request("id must be a string or an integer"),
            ));
        }
    }
    let answer_id = id.clone().unwrap_or(Value::Null);
    if obj.get("jsonrpc") != Some(&json!("2.0")) {
        return Err((
            answer_id,
            RpcError::invalid_request("jsonrpc must be \"2.0\""),
        ));
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) => m,
        Some(_) => {
            return Err((
                answer_id,
                RpcError::invalid_request("method must be a string"),
            ));
        }
        None if obj.contains_key("result") || obj.contains_key("error") => {
            return Ok(Incoming::Response)
        }
        None => return Err((answer_id, RpcError::invalid_request("method is missing"))),
    };
    let params = match obj.remove("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p,
        Some(_) => {
            return Err((
                answer_id,
                RpcError::invalid_params("params must be an object"),
            ));
        }
    };
    Ok(match id {
        Some(id) => Incoming::Request { id, method, params },
        None => Incoming::Notification { method },
    })
}

/// A success answer.
pub fn result(id: &Id, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// An error answer.
pub fn error(id: &Id, e: &RpcError) -> Value {
    let mut err = json!({"code": e.code, "message": e.message});
    if let Some(data) = &e.data {
        err["data"] = data.clone();
    }
    json!({"jsonrpc": "2.0", "id": id, "error": err})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_notifications_and_responses_are_told_apart() {
        match parse(json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})).unwrap() {
            Incoming::Request { id, method, params } => {
                assert_eq!((id, method.as_str(), params.len()), (json!(1), "ping", 0));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).unwrap(),
            Incoming::Notification { .. }
        ));
        assert!(matches!(
            parse(json!({"jsonrpc": "2.0", "id": "a", "result": {}})).unwrap(),
            Incoming::Response
        ));
    }

    #[test]
    fn malformed_messages_are_invalid_requests() {
        for bad in [
            json!([]),
            json!({"id": 1, "method": "ping"}),
            json!({"jsonrpc": "2.0", "id": 1.5, "method": "ping"}),
            json!({"jsonrpc": "2.0", "id": 1, "method": 7}),
            json!({"jsonrpc": "2.0", "id": 1}),
        ] {
            let (_, e) = parse(bad.clone()).unwrap_err();
            assert_eq!(e.code, INVALID_REQUEST, "{bad}");
        }
        let (id, e) =
            parse(json!({"jsonrpc": "2.0", "id": 3, "method": "x", "params": [1]})).unwrap_err();
        assert_eq!((id, e.code), (json!(3), INVALID_PARAMS));
    }
}
