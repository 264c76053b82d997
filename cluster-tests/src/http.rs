//! Raw JSON requests with their status: what the end-to-end tests of each endpoint group use
//! to assert bodies and error answers, not only success.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use reqwest::{Method, RequestBuilder};

use crate::{retry_until_ok, NodeClient};
use serde_json::{json, Value};

/// How long a new key may take to reach a node's meta replica.
const KEY_SPREAD: Duration = Duration::from_secs(20);

/// Deadline for one request.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Sends `req`; its status and JSON body (`Null` when it has none).
pub async fn send(req: RequestBuilder) -> Result<(u16, Value)> {
    let resp = req
        .timeout(TIMEOUT)
        .send()
        .await
        .context("request failed")?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).with_context(|| format!("not json: {text}"))?
    };
    Ok((status, body))
}

/// Sends `req` and checks its status (and, for errors, the one error shape); its body.
pub async fn expect(req: RequestBuilder, status: u16, what: &str) -> Result<Value> {
    let (got, body) = send(req).await.with_context(|| what.to_string())?;
    check_answer(got, body, status, what)
}

/// Checks an answer `(got, body)` against the `status` expected (and, for errors, the one
/// error shape); the body.
pub fn check_answer(got: u16, body: Value, status: u16, what: &str) -> Result<Value> {
    ensure!(
        got == status,
        "{what}: expected {status}, got {got}: {body}"
    );
    if status >= 400 {
        ensure!(
            body["error"]["status"] == json!(status) && body["error"]["message"].is_string(),
            "{what}: error body {body}"
        );
    }
    Ok(body)
}

/// [`expect`] without a description: the request's method and path are in the error anyway.
pub async fn expect_status(req: RequestBuilder, status: u16) -> Result<Value> {
    expect(req, status, "request").await
}

/// Waits until `client`'s API key is accepted by its node: a key made through another node
/// works on this one once this node's meta replica has applied it.
pub async fn wait_key_usable(client: &NodeClient) -> Result<()> {
    retry_until_ok(KEY_SPREAD, async || {
        let (status, body) = send(client.request(Method::GET, &["v1", "session", "me"])).await?;
        ensure!(status == 200, "key not usable yet: {status} {body}");
        anyhow::Ok(())
    })
    .await
}
