//! Typed calls against one node's HTTP API.
//!
//! Every call returns either the typed body or an [`ApiError`] that keeps the HTTP status (or
//! says there was none), so tests can assert `409`/`404` and tell a refused connection from an
//! answer. Nothing here retries: retries are the caller's decision (see [`crate::wait`]).

use std::fmt;

use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::model::{
    ApiKey, ClusterStatus, ContextEntry, Locate, MessagePage, Published, ShardKind, Task, TaskId,
    Topic,
};

/// Largest page the contract allows for a topic read.
const MAX_PAGE: u32 = 1000;

/// A failed call: either the node answered with a non-2xx status, or there was no usable
/// answer (connection refused or reset, timeout).
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status, `None` when the request never got an answer.
    status: Option<StatusCode>,
    /// The contract's error code (`conflict`, `not_found`, ...), when the body carried one.
    code: Option<String>,
    /// Human-readable detail.
    message: String,
}

/// The contract's error body: `{"error": {"code", "message", "status"}}`.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl ApiError {
    fn transport(error: reqwest::Error) -> Self {
        ApiError {
            status: None,
            code: None,
            message: format!("transport error: {error}"),
        }
    }

    fn from_body(status: StatusCode, body: &[u8]) -> Self {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(parsed) => ApiError {
                status: Some(status),
                code: parsed.error.code,
                message: parsed.error.message.unwrap_or_default(),
            },
            Err(_) => ApiError {
                status: Some(status),
                code: None,
                message: String::from_utf8_lossy(body).into_owned(),
            },
        }
    }

    fn decode(status: StatusCode, error: serde_json::Error, body: &[u8]) -> Self {
        ApiError {
            status: Some(status),
            code: Some("decode".to_string()),
            message: format!(
                "cannot decode response body ({error}): {}",
                String::from_utf8_lossy(body)
            ),
        }
    }

    /// The HTTP status, `None` for transport errors.
    pub fn status(&self) -> Option<u16> {
        self.status.map(|status| status.as_u16())
    }

    /// The contract's error code, when the body carried one.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// Whether the node answered with exactly this status.
    pub fn is_status(&self, status: u16) -> bool {
        self.status() == Some(status)
    }

    /// Whether the request got no answer at all (refused, reset, timed out).
    pub fn is_transport(&self) -> bool {
        self.status.is_none()
    }

    /// Whether retrying could help: no answer, or 502/503/504. The outcome of such a request is
    /// unknown: a write may or may not have been applied.
    pub fn is_transient(&self) -> bool {
        matches!(self.status(), None | Some(502..=504))
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.status, &self.code) {
            (Some(status), Some(code)) => write!(f, "{status} {code}: {}", self.message),
            (Some(status), None) => write!(f, "{status}: {}", self.message),
            (None, _) => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ApiError {}

/// A handle on one node's HTTP API; cheap to clone (the connection pool is shared).
#[derive(Debug, Clone)]
pub struct NodeClient {
    http: reqwest::Client,
    base: Url,
}

impl NodeClient {
    /// A client for the node serving at `base` (e.g. `http://127.0.0.1:43121`), sending every
    /// request through `http` (which carries the bearer header).
    pub fn new(http: reqwest::Client, base: &str) -> anyhow::Result<Self> {
        Ok(NodeClient {
            http,
            base: Url::parse(base)?,
        })
    }

    /// The node's base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// A request of `method` to the base URL with `segments` appended (each percent-encoded as
    /// one path segment), sent with this client's headers; for tests that need the raw status
    /// and body rather than a typed answer.
    pub fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        self.http.request(method, self.url(segments))
    }

    /// `GET /readyz`: `Ok` once the node can route.
    pub async fn readyz(&self) -> Result<(), ApiError> {
        let _: Value = self.call(self.http.get(self.url(&["readyz"]))).await?;
        Ok(())
    }

    /// `PUT /v1/context/{key}`.
    pub async fn put_context(&self, key: &str, value: Value) -> Result<ContextEntry, ApiError> {
        let url = self.url(&["v1", "context", key]);
        self.call(self.http.put(url).json(&json!({ "value": value })))
            .await
    }

    /// `GET /v1/context/{key}`; 404 when absent.
    pub async fn get_context(&self, key: &str) -> Result<ContextEntry, ApiError> {
        self.call(self.http.get(self.url(&["v1", "context", key])))
            .await
    }

    /// `POST /v1/topics`; 409 when it exists.
    pub async fn create_topic(&self, name: &str) -> Result<Topic, ApiError> {
        let url = self.url(&["v1", "topics"]);
        self.call(self.http.post(url).json(&json!({ "name": name })))
            .await
    }

    /// `POST /v1/topics/{name}/publish`; 404 when the topic does not exist.
    pub async fn publish(&self, topic: &str, body: Value) -> Result<Published, ApiError> {
        let url = self.url(&["v1", "topics", topic, "publish"]);
        self.call(self.http.post(url).json(&json!({ "body": body })))
            .await
    }

    /// `GET /v1/topics/{name}/messages?since=&limit=`: one page of messages with `seq > since`.
    pub async fn read_topic(
        &self,
        topic: &str,
        since: u64,
        limit: u32,
    ) -> Result<MessagePage, ApiError> {
        let mut url = self.url(&["v1", "topics", topic, "messages"]);
        url.query_pairs_mut()
            .append_pair("since", &since.to_string())
            .append_pair("limit", &limit.to_string());
        self.call(self.http.get(url)).await
    }

    /// Every message of `topic`, following pages until one comes back empty.
    pub async fn read_topic_all(&self, topic: &str) -> Result<MessagePage, ApiError> {
        let mut all = MessagePage {
            items: Vec::new(),
            next_since: 0,
        };
        loop {
            let page = self.read_topic(topic, all.next_since, MAX_PAGE).await?;
            let Some(last) = page.items.last() else {
                return Ok(all);
            };
            all.next_since = last.seq;
            all.items.extend(page.items);
        }
    }

    /// `POST /v1/tasks` with a title only (mode defaults on the server).
    pub async fn create_task(&self, title: &str) -> Result<Task, ApiError> {
        let url = self.url(&["v1", "tasks"]);
        self.call(self.http.post(url).json(&json!({ "title": title })))
            .await
    }

    /// `POST /v1/tasks/{id}/claim` for `agent`; 409 when already claimed.
    pub async fn claim_task(&self, id: &TaskId, agent: &str) -> Result<Task, ApiError> {
        let url = self.url(&["v1", "tasks", &id.0, "claim"]);
        self.call(self.http.post(url).json(&json!({ "agent": agent })))
            .await
    }

    /// `POST /v1/tasks/{id}/claim` for `agent` with a lease of `lease_secs`.
    pub async fn claim_task_with_lease(
        &self,
        id: &TaskId,
        agent: &str,
        lease_secs: u64,
    ) -> Result<Task, ApiError> {
        let url = self.url(&["v1", "tasks", &id.0, "claim"]);
        let body = json!({ "agent": agent, "lease_secs": lease_secs });
        self.call(self.http.post(url).json(&body)).await
    }

    /// `GET /v1/tasks/{id}`; 404 for an unknown id.
    pub async fn get_task(&self, id: &TaskId) -> Result<Task, ApiError> {
        self.call(self.http.get(self.url(&["v1", "tasks", &id.0])))
            .await
    }

    /// `POST /v1/api-keys` (admin): a new key of `scope` (`read`, `full` or `admin`).
    pub async fn create_api_key(&self, name: &str, scope: &str) -> Result<ApiKey, ApiError> {
        let url = self.url(&["v1", "api-keys"]);
        self.call(
            self.http
                .post(url)
                .json(&json!({ "name": name, "scope": scope })),
        )
        .await
    }

    /// `GET /v1/cluster/locate?kind=&name=`.
    pub async fn locate(&self, kind: ShardKind, name: &str) -> Result<Locate, ApiError> {
        let mut url = self.url(&["v1", "cluster", "locate"]);
        url.query_pairs_mut()
            .append_pair("kind", kind.as_str())
            .append_pair("name", name);
        self.call(self.http.get(url)).await
    }

    /// `GET /v1/cluster/locate?kind=task&name=`.
    pub async fn locate_task(&self, id: &TaskId) -> Result<Locate, ApiError> {
        let mut url = self.url(&["v1", "cluster", "locate"]);
        url.query_pairs_mut()
            .append_pair("kind", "task")
            .append_pair("name", &id.0);
        self.call(self.http.get(url)).await
    }

    /// `GET /v1/cluster/status` (admin).
    pub async fn status(&self) -> Result<ClusterStatus, ApiError> {
        self.call(self.http.get(self.url(&["v1", "cluster", "status"])))
            .await
    }

    /// The base URL with `segments` appended, each percent-encoded as one path segment.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("http base url has a path")
            .pop_if_empty()
            .extend(segments);
        url
    }

    /// Sends `request` (made with [`NodeClient::request`]) and decodes a 2xx JSON body; any
    /// other answer, or none, is an [`ApiError`].
    pub async fn call<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, ApiError> {
        let response = request.send().await.map_err(ApiError::transport)?;
        let status = response.status();
        let body = response.bytes().await.map_err(ApiError::transport)?;
        if !status.is_success() {
            return Err(ApiError::from_body(status, &body));
        }
        serde_json::from_slice(&body).map_err(|error| ApiError::decode(status, error, &body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encodes_each_segment() {
        let client = NodeClient::new(reqwest::Client::new(), "http://127.0.0.1:1").unwrap();
        let url = client.url(&["v1", "context", "a/b c"]);
        assert_eq!(url.as_str(), "http://127.0.0.1:1/v1/context/a%2Fb%20c");
    }

    #[test]
    fn error_body_keeps_status_and_code() {
        let body = br#"{"error": {"code": "conflict", "message": "taken", "status": 409}}"#;
        let error = ApiError::from_body(StatusCode::CONFLICT, body);
        assert!(error.is_status(409) && !error.is_transient());
        assert_eq!(error.code(), Some("conflict"));
    }
}
