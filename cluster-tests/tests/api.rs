//! The HTTP API's rules (authentication, scopes, input checks, limits), seen from a client of a
//! real `conclave` process: every refusal has the contract's one error shape and changes
//! nothing. Run `cargo build -p conclave-node` first.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use conclave_cluster_tests::{Cluster, NodeClient, ShardKind};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};

/// Largest request body the node accepts in the error test, bytes.
const MAX_BODY_BYTES: usize = 4096;
/// Size of the value sent to hit the body limit: twice the limit.
const OVERSIZED_BYTES: usize = 2 * MAX_BODY_BYTES;
/// Deadline for one request.
const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_have_one_shape_and_change_nothing() -> Result<()> {
    let cluster = Cluster::builder()
        .nodes(1)
        .env("CONCLAVE_MAX_BODY_BYTES", MAX_BODY_BYTES.to_string())
        .start()
        .await?;
    let admin = cluster.api(0);
    let anonymous = cluster.api_with_key(0, None)?;
    let bogus = cluster.api_with_key(0, Some("ck_0123456789abcdef"))?;

    // Known state: a key at version 1, a topic with 2 messages, a claimed task.
    let entry = admin.put_context("kept", json!({ "v": 1 })).await?;
    admin.create_topic("events").await?;
    for n in 1..=2 {
        admin.publish("events", json!({ "n": n })).await?;
    }
    let task = admin.create_task("claimed").await?;
    let claimed = admin.claim_task_with_lease(&task.id, "first", 3600).await?;
    let state = State::read(admin, &entry.key, "events", &task.id.0).await?;

    // 401: no key, or a key the cluster never issued; writes included.
    let put = |client: &NodeClient, key: &str| {
        client
            .request(Method::PUT, &["v1", "context", key])
            .json(&json!({ "value": "denied" }))
    };
    expect_error(
        anonymous.request(Method::GET, &["v1", "context", "kept"]),
        401,
    )
    .await
    .context("read without a key")?;
    expect_error(put(&anonymous, "absent"), 401)
        .await
        .context("write without a key")?;
    expect_error(put(&bogus, "absent"), 401)
        .await
        .context("write with a bad key")?;
    expect_error(put(&bogus, "kept"), 401)
        .await
        .context("overwrite with a bad key")?;

    // 404: an unknown route, unknown task ids, a missing context key.
    expect_error(admin.request(Method::GET, &["v1", "no-such-route"]), 404)
        .await
        .context("unknown route")?;
    let absent_task = format!("{}999", task.id);
    for id in ["no-such-task", absent_task.as_str()] {
        expect_error(admin.request(Method::GET, &["v1", "tasks", id]), 404)
            .await
            .with_context(|| format!("unknown task id {id}"))?;
    }
    expect_error(
        admin.request(Method::GET, &["v1", "context", "absent"]),
        404,
    )
    .await
    .context("missing context key")?;

    // 400: malformed JSON, invalid names and titles, page sizes out of range.
    let malformed = |request: RequestBuilder| {
        request
            .header(CONTENT_TYPE, "application/json")
            .body("{\"value\": ")
    };
    expect_error(
        malformed(admin.request(Method::PUT, &["v1", "context", "absent"])),
        400,
    )
    .await
    .context("malformed JSON on put")?;
    expect_error(
        malformed(admin.request(Method::POST, &["v1", "topics", "events", "publish"])),
        400,
    )
    .await
    .context("malformed JSON on publish")?;
    expect_error(
        admin
            .request(Method::POST, &["v1", "topics"])
            .json(&json!({ "name": "not a valid name!" })),
        400,
    )
    .await
    .context("invalid topic name")?;
    expect_error(
        admin
            .request(Method::POST, &["v1", "tasks"])
            .json(&json!({ "title": "" })),
        400,
    )
    .await
    .context("empty task title")?;
    for limit in ["0", "5000"] {
        expect_error(
            admin
                .request(Method::GET, &["v1", "topics", "events", "messages"])
                .query(&[("since", "0"), ("limit", limit)]),
            400,
        )
        .await
        .with_context(|| format!("topic read with limit={limit}"))?;
        expect_error(
            admin
                .request(Method::GET, &["v1", "context"])
                .query(&[("limit", limit)]),
            400,
        )
        .await
        .with_context(|| format!("context list with limit={limit}"))?;
    }

    // 409: creating an existing topic, claiming a claimed task.
    expect_error(
        admin
            .request(Method::POST, &["v1", "topics"])
            .json(&json!({ "name": "events" })),
        409,
    )
    .await
    .context("topic exists")?;
    expect_error(
        admin
            .request(Method::POST, &["v1", "tasks", &task.id.0, "claim"])
            .json(&json!({ "agent": "second" })),
        409,
    )
    .await
    .context("claiming a claimed task")?;

    // 413: a body twice the configured limit, on a put and on a publish.
    let oversized = json!({ "value": "x".repeat(OVERSIZED_BYTES) });
    expect_error(
        admin
            .request(Method::PUT, &["v1", "context", "absent"])
            .json(&oversized),
        413,
    )
    .await
    .context("oversized put")?;
    let oversized = json!({ "body": "x".repeat(OVERSIZED_BYTES) });
    expect_error(
        admin
            .request(Method::POST, &["v1", "topics", "events", "publish"])
            .json(&oversized),
        413,
    )
    .await
    .context("oversized publish")?;

    // Nothing changed: same key version, same messages, same claim, no new key.
    let after = State::read(admin, &entry.key, "events", &task.id.0).await?;
    ensure!(
        after == state,
        "state changed: before {state:?}, after {after:?}"
    );
    ensure!(
        after.task.get("claimed_by") == Some(&json!("first"))
            && after.task.get("fencing_token") == Some(&json!(claimed.fencing_token)),
        "claim changed: {claimed:?} became {}",
        after.task
    );
    let absent = admin.get_context("absent").await;
    ensure!(
        matches!(&absent, Err(error) if error.is_status(404)),
        "a refused put created the key: {absent:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_scope_keys_cannot_write() -> Result<()> {
    let cluster = Cluster::builder().nodes(1).start().await?;
    let admin = cluster.api(0);

    // The admin key creates a read key and a full key, and some state.
    let read_key = admin.create_api_key("reader", "read").await?;
    let full_key = admin.create_api_key("writer", "full").await?;
    ensure!(
        read_key.scope == "read" && full_key.scope == "full",
        "{read_key:?} {full_key:?}"
    );
    let reader = cluster.api_with_key(0, Some(&read_key.key))?;
    let writer = cluster.api_with_key(0, Some(&full_key.key))?;
    let entry = admin.put_context("shared", json!({ "v": 1 })).await?;
    admin.create_topic("news").await?;
    admin.publish("news", json!({ "n": 1 })).await?;
    let task = admin.create_task("open-task").await?;
    let state = State::read(admin, &entry.key, "news", &task.id.0).await?;

    // The read key reads everything.
    let read = reader.get_context("shared").await?;
    ensure!(read == entry, "read {read:?}, wrote {entry:?}");
    let page = reader.read_topic_all("news").await?;
    ensure!(page.items.len() == 1, "read {page:?}");
    let read = reader.get_task(&task.id).await?;
    ensure!(read == task, "read {read:?}, created {task:?}");
    reader.locate(ShardKind::Context, "shared").await?;

    // Every write through it is refused with 403, and so is administration.
    let writes = [
        (
            "overwrite a key",
            reader
                .request(Method::PUT, &["v1", "context", "shared"])
                .json(&json!({ "value": "denied" })),
        ),
        (
            "put a new key",
            reader
                .request(Method::PUT, &["v1", "context", "absent"])
                .json(&json!({ "value": "denied" })),
        ),
        (
            "delete a key",
            reader.request(Method::DELETE, &["v1", "context", "shared"]),
        ),
        (
            "publish",
            reader
                .request(Method::POST, &["v1", "topics", "news", "publish"])
                .json(&json!({ "body": "denied" })),
        ),
        (
            "create a topic",
            reader
                .request(Method::POST, &["v1", "topics"])
                .json(&json!({ "name": "denied" })),
        ),
        (
            "create a task",
            reader
                .request(Method::POST, &["v1", "tasks"])
                .json(&json!({ "title": "denied" })),
        ),
        (
            "claim a task",
            reader
                .request(Method::POST, &["v1", "tasks", &task.id.0, "claim"])
                .json(&json!({ "agent": "denied" })),
        ),
        (
            "create a key",
            reader
                .request(Method::POST, &["v1", "api-keys"])
                .json(&json!({ "name": "escalated", "scope": "admin" })),
        ),
        (
            "read the cluster status",
            reader.request(Method::GET, &["v1", "cluster", "status"]),
        ),
    ];
    for (what, request) in writes {
        expect_error(request, 403)
            .await
            .with_context(|| format!("read key: {what}"))?;
    }

    // Nothing changed: same key version, same messages, task still open, no new key or topic.
    let after = State::read(admin, &entry.key, "news", &task.id.0).await?;
    ensure!(
        after == state,
        "state changed: before {state:?}, after {after:?}"
    );
    expect_error(
        admin.request(Method::GET, &["v1", "context", "absent"]),
        404,
    )
    .await
    .context("a refused put created the key")?;
    admin
        .create_topic("denied")
        .await
        .context("a refused create made the topic exist")?;

    // A full key writes, but cannot create keys.
    let written = writer.put_context("shared", json!({ "v": 2 })).await?;
    ensure!(written.version == entry.version + 1, "wrote {written:?}");
    let published = writer.publish("news", json!({ "n": 2 })).await?;
    ensure!(published.seq == 2, "published {published:?}");
    writer.create_task("by-writer").await?;
    expect_error(
        writer
            .request(Method::POST, &["v1", "api-keys"])
            .json(&json!({ "name": "escalated", "scope": "admin" })),
        403,
    )
    .await
    .context("full key: create a key")?;
    Ok(())
}

/// What a refused request could have changed, read through the admin key.
#[derive(Debug, PartialEq)]
struct State {
    /// A context entry (value and version).
    entry: Value,
    /// Every message of a topic; its last seq is the topic's `last_seq`.
    messages: Vec<(u64, Value)>,
    /// A task.
    task: Value,
}

impl State {
    async fn read(admin: &NodeClient, key: &str, topic: &str, task: &str) -> Result<Self> {
        let entry = expect_ok(admin.request(Method::GET, &["v1", "context", key])).await?;
        let page = admin.read_topic_all(topic).await?;
        let messages = page.items.into_iter().map(|m| (m.seq, m.body)).collect();
        let task = expect_ok(admin.request(Method::GET, &["v1", "tasks", task])).await?;
        Ok(State {
            entry,
            messages,
            task,
        })
    }
}

/// Sends `request` and returns its JSON body, failing on a non-2xx status.
async fn expect_ok(request: RequestBuilder) -> Result<Value> {
    let response = request.timeout(TIMEOUT).send().await?;
    let status = response.status();
    let body = response.text().await?;
    ensure!(status.is_success(), "{status}: {body}");
    serde_json::from_str(&body).with_context(|| format!("body is not JSON: {body}"))
}

/// Sends `request` and checks the answer is `status` with the contract's error body
/// `{"error": {"code", "message", "status"}}`: nothing else at either level, the code the
/// contract maps to `status`, a non-empty message, and the same status in the body.
async fn expect_error(request: RequestBuilder, status: u16) -> Result<()> {
    let response = request.timeout(TIMEOUT).send().await?;
    let got = response.status().as_u16();
    let text = response.text().await?;
    ensure!(got == status, "expected {status}, got {got}: {text}");
    let body: Value =
        serde_json::from_str(&text).with_context(|| format!("error body is not JSON: {text}"))?;
    let outer = body.as_object().context("error body is not an object")?;
    let error = outer
        .get("error")
        .and_then(Value::as_object)
        .filter(|_| outer.len() == 1)
        .with_context(|| format!("error body is not {{\"error\": {{...}}}}: {text}"))?;
    let mut fields: Vec<&str> = error.keys().map(String::as_str).collect();
    fields.sort_unstable();
    ensure!(
        fields == ["code", "message", "status"],
        "error fields {fields:?}: {text}"
    );
    let code = contract_code(status);
    ensure!(
        error["code"] == json!(code),
        "code for {status} should be {code:?}: {text}"
    );
    ensure!(
        error["status"] == json!(status),
        "status field disagrees: {text}"
    );
    ensure!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "empty message: {text}"
    );
    Ok(())
}

/// The error code the contract pairs with `status`.
fn contract_code(status: u16) -> &'static str {
    match status {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        409 => "conflict",
        413 => "payload_too_large",
        503 => "unavailable",
        _ => "internal",
    }
}
