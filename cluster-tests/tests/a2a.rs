//! A2A on a three-node cluster, requests spread over the nodes: card discovery in both protocol
//! versions, `SendMessage` landing in the agent's inbox as a task, the A2A states following the
//! Conclave task through `GetTask`/`ListTasks`/`CancelTask`, JSON-RPC errors that change
//! nothing, the 0.3 method names without an `A2A-Version` header, server-sent event streams
//! that follow a task to its end, and the pinned `a2a-sdk` Python client (installed by
//! `scripts/test.sh`, found through `CONCLAVE_A2A_PYTHON`). Run `cargo build -p conclave-node`
//! first.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use conclave_cluster_tests::http::{self, send};
use conclave_cluster_tests::{wait_until, Cluster, NodeClient};
use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};
use tracing::info;

/// Deadline of waits and of each stream frame in these tests (generous: loaded machines elect
/// leaders slowly).
const TIMEOUT: Duration = Duration::from_secs(120);

/// Sends `req`, again while the answer is a 503 from a request that reached no shard leader
/// (nothing was executed, so a retry cannot apply a write twice); the status and body.
async fn send_settled(req: RequestBuilder) -> Result<(u16, Value)> {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let (status, body) = send(req.try_clone().context("a JSON request clones")?).await?;
        let leaderless = status == 503
            && body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("no reachable leader"));
        if !leaderless || tokio::time::Instant::now() > deadline {
            return Ok((status, body));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// [`send_settled`], checking the status and the error shape as `expect` does.
async fn expect(req: RequestBuilder, status: u16, what: &str) -> Result<Value> {
    let (got, body) = send_settled(req).await.with_context(|| what.to_string())?;
    http::check_answer(got, body, status, what)
}

/// The card registered for the agents of these tests.
fn card() -> Value {
    json!({
        "version": "2.1.0",
        "provider": {"organization": "Conclave tests", "url": "https://example.invalid"},
        "skills": [{"id": "summarise", "name": "Summarise", "description": "Summarises text",
                    "tags": ["text"], "examples": ["summarise this"]}],
    })
}

/// Registers `name` through node `i`, with a card when `card` is given.
async fn register(cluster: &Cluster, i: usize, name: &str, card: Option<Value>) -> Result<()> {
    let mut body = json!({"name": name, "description": format!("{name} answers questions")});
    if let Some(c) = card {
        body["card"] = c;
    }
    let req = cluster
        .api(i)
        .request(Method::POST, &["v1", "agents"])
        .json(&body);
    expect(req, 201, "register").await?;
    Ok(())
}

/// The JSON-RPC endpoint of `agent` on node `i`.
fn endpoint(cluster: &Cluster, i: usize, agent: &str) -> String {
    format!(
        "{}/a2a/{}/agents/{agent}",
        cluster.node(i).url(),
        cluster.workspace_id()
    )
}

/// A JSON-RPC call through node `i` with the cluster's admin key; `version` is the
/// `A2A-Version` header (none for 0.3).
fn rpc(
    cluster: &Cluster,
    i: usize,
    agent: &str,
    version: Option<&str>,
    method: &str,
    params: Value,
) -> RequestBuilder {
    rpc_with(cluster.api(i), cluster, i, agent, version, method, params)
}

fn rpc_with(
    client: &NodeClient,
    cluster: &Cluster,
    i: usize,
    agent: &str,
    version: Option<&str>,
    method: &str,
    params: Value,
) -> RequestBuilder {
    let url = endpoint(cluster, i, agent);
    let mut req = client_request(client, &url).expect("the endpoint is on the client's node");
    if let Some(v) = version {
        req = req.header("A2A-Version", v);
    }
    req.json(&json!({"jsonrpc": "2.0", "id": "r1", "method": method, "params": params}))
}

/// A POST to an absolute URL with `client`'s key.
fn client_request(client: &NodeClient, url: &str) -> Option<RequestBuilder> {
    let base = client.base_url().as_str().trim_end_matches('/');
    let rest = url.strip_prefix(base)?.trim_start_matches('/');
    let segments: Vec<&str> = rest.split('/').collect();
    Some(client.request(Method::POST, &segments))
}

/// The `result` of a successful JSON-RPC answer.
async fn ok(req: RequestBuilder, what: &str) -> Result<Value> {
    let body = expect(req, 200, what).await?;
    ensure!(
        body["jsonrpc"] == "2.0" && body["id"] == "r1",
        "{what}: envelope {body}"
    );
    ensure!(body.get("error").is_none(), "{what}: error {body}");
    Ok(body["result"].clone())
}

/// The JSON-RPC error code of a failed answer (still HTTP 200).
async fn rpc_error(req: RequestBuilder, what: &str) -> Result<i64> {
    let body = expect(req, 200, what).await?;
    ensure!(
        body.get("result").is_none(),
        "{what}: expected an error, got {body}"
    );
    body["error"]["code"]
        .as_i64()
        .with_context(|| format!("{what}: no error code in {body}"))
}

fn user_message(id: &str, text: &str) -> Value {
    json!({"messageId": id, "role": "ROLE_USER", "parts": [{"text": text}]})
}

fn inbox(cluster: &Cluster, i: usize, agent: &str) -> RequestBuilder {
    cluster
        .api(i)
        .request(Method::GET, &["v1", "messages"])
        .query(&[("agent", agent)])
}

fn str_of<'a>(v: &'a Value, what: &str) -> Result<&'a str> {
    v.as_str()
        .with_context(|| format!("{what} is not a string: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cards_are_discovered_and_messages_land_in_the_inbox_as_tasks() -> Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let ws = cluster.workspace_id().to_string();
    register(&cluster, 0, "helper", Some(card())).await?;
    register(&cluster, 0, "plain", None).await?;

    info!("the card is served by every node, naming that node's endpoint");
    for i in 0..cluster.len() {
        let path = [
            "a2a",
            &ws,
            "agents",
            "helper",
            ".well-known",
            "agent-card.json",
        ];
        let anon = cluster.api_with_key(i, None)?;
        let v1 = expect(
            anon.request(Method::GET, &path)
                .header("A2A-Version", "1.0"),
            200,
            "v1 card",
        )
        .await?;
        ensure!(v1["name"] == "helper", "{v1}");
        ensure!(v1["description"] == "helper answers questions", "{v1}");
        ensure!(
            v1["version"] == "2.1.0" && v1["skills"][0]["id"] == "summarise",
            "{v1}"
        );
        let iface = &v1["supportedInterfaces"][0];
        ensure!(
            iface["url"] == endpoint(&cluster, i, "helper"),
            "node {i}: {v1}"
        );
        ensure!(iface["protocolVersion"] == "1.0" && iface["protocolBinding"] == "JSONRPC");
        ensure!(v1["capabilities"]["streaming"] == true, "{v1}");
        ensure!(
            v1["securitySchemes"]["bearer"]["httpAuthSecurityScheme"]["scheme"] == "Bearer",
            "{v1}"
        );
        let v03 = expect(anon.request(Method::GET, &path), 200, "0.3 card").await?;
        ensure!(v03["protocolVersion"] == "0.3.0", "{v03}");
        ensure!(v03["url"] == endpoint(&cluster, i, "helper"), "{v03}");
        ensure!(v03["securitySchemes"]["bearer"]["type"] == "http", "{v03}");
    }

    info!("no card, no agent, no workspace: 404; a bad version: 400");
    let anon = cluster.api_with_key(1, None)?;
    for (w, a) in [
        (ws.as_str(), "plain"),
        (ws.as_str(), "ghost"),
        ("ws_nope", "helper"),
    ] {
        let path = ["a2a", w, "agents", a, ".well-known", "agent-card.json"];
        expect(anon.request(Method::GET, &path), 404, "card of nothing").await?;
    }
    let path = [
        "a2a",
        &ws,
        "agents",
        "helper",
        ".well-known",
        "agent-card.json",
    ];
    expect(
        anon.request(Method::GET, &path)
            .header("A2A-Version", "9.9"),
        400,
        "unknown version",
    )
    .await?;

    info!("a bad card is refused and changes nothing");
    let bad = cluster
        .api(0)
        .request(Method::POST, &["v1", "agents"])
        .json(&json!({"name": "helper", "card": {"skills": [{"id": "", "name": "x"}]}}));
    expect(bad, 400, "bad card").await?;
    let still = expect(anon.request(Method::GET, &path), 200, "card kept").await?;
    ensure!(still["skills"][0]["id"] == "summarise", "{still}");

    info!("the JSON-RPC endpoint needs this workspace's key and an agent with a card");
    let no_key = cluster.api_with_key(2, None)?;
    let send_params = json!({"message": user_message("m-1", "summarise: the sky is blue")});
    let req = rpc_with(
        &no_key,
        &cluster,
        2,
        "helper",
        Some("1.0"),
        "SendMessage",
        send_params.clone(),
    );
    expect(req, 401, "no key").await?;
    let req = rpc(
        &cluster,
        2,
        "plain",
        Some("1.0"),
        "SendMessage",
        send_params.clone(),
    );
    expect(req, 404, "agent without a card").await?;

    info!("SendMessage makes a submitted task and puts the message in the inbox");
    let req = rpc(
        &cluster,
        2,
        "helper",
        Some("1.0"),
        "SendMessage",
        send_params,
    );
    let result = ok(req, "SendMessage").await?;
    let task = &result["task"];
    let task_id = str_of(&task["id"], "task id")?.to_string();
    ensure!(
        task["status"]["state"] == "TASK_STATE_SUBMITTED",
        "{result}"
    );
    let context = str_of(&task["contextId"], "contextId")?.to_string();
    ensure!(
        task["history"][0]["parts"][0]["text"] == "summarise: the sky is blue",
        "{result}"
    );

    let items = expect(inbox(&cluster, 1, "helper"), 200, "inbox").await?;
    let items = items["items"].as_array().context("inbox items")?;
    ensure!(items.len() == 1, "one message: {items:?}");
    let m = &items[0];
    ensure!(m["metadata"]["a2a"]["taskId"] == task_id.as_str(), "{m}");
    ensure!(m["metadata"]["a2a"]["contextId"] == context.as_str(), "{m}");
    ensure!(
        m["body"]["parts"][0]["text"] == "summarise: the sky is blue",
        "{m}"
    );
    ensure!(m["body"]["taskId"] == task_id.as_str(), "{m}");

    let t = expect(
        cluster
            .api(0)
            .request(Method::GET, &["v1", "tasks", &task_id]),
        200,
        "the Conclave task",
    )
    .await?;
    ensure!(
        t["status"] == "open" && t["metadata"]["a2a"]["agent"] == "helper",
        "{t}"
    );

    info!("a follow-up in the same task goes to the inbox without a new task");
    let mut follow = user_message("m-2", "and the grass?");
    follow["taskId"] = json!(task_id);
    let req = rpc(
        &cluster,
        0,
        "helper",
        Some("1.0"),
        "SendMessage",
        json!({"message": follow}),
    );
    let again = ok(req, "follow-up").await?;
    ensure!(again["task"]["id"] == task_id.as_str(), "{again}");
    let items = expect(inbox(&cluster, 2, "helper"), 200, "inbox").await?;
    ensure!(
        items["items"].as_array().map(Vec::len) == Some(2),
        "{items}"
    );
    let all = expect(
        cluster.api(0).request(Method::GET, &["v1", "tasks"]),
        200,
        "tasks",
    )
    .await?;
    ensure!(all["items"].as_array().map(Vec::len) == Some(1), "{all}");
    Ok(())
}

/// Claims `id` for `agent` through REST; the fencing token.
async fn claim(cluster: &Cluster, i: usize, id: &str, agent: &str) -> Result<u64> {
    let req = cluster
        .api(i)
        .request(Method::POST, &["v1", "tasks", id, "claim"])
        .json(&json!({"agent": agent, "lease_secs": 600}));
    let t = expect(req, 200, "claim").await?;
    t["fencing_token"].as_u64().context("fencing token")
}

/// Moves a held task on through REST.
async fn holder_patch(cluster: &Cluster, i: usize, id: &str, body: Value) -> Result<()> {
    let req = cluster
        .api(i)
        .request(Method::PATCH, &["v1", "tasks", id])
        .json(&body);
    expect(req, 200, "holder update").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a2a_states_follow_the_conclave_task_in_both_versions() -> Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    register(&cluster, 0, "worker", Some(json!({}))).await?;
    register(&cluster, 0, "other", Some(json!({}))).await?;

    info!("v1.0: submitted, then working once claimed, then completed with the holder's note");
    let send_msg = |i: usize, mid: &str| {
        rpc(
            &cluster,
            i,
            "worker",
            Some("1.0"),
            "SendMessage",
            json!({"message": user_message(mid, "do the thing")}),
        )
    };
    let first = ok(send_msg(0, "a"), "send a").await?;
    let a = str_of(&first["task"]["id"], "id")?.to_string();
    let get = |i: usize, id: &str| {
        rpc(
            &cluster,
            i,
            "worker",
            Some("1.0"),
            "GetTask",
            json!({"id": id}),
        )
    };
    let t = ok(get(1, &a), "get").await?;
    ensure!(t["status"]["state"] == "TASK_STATE_SUBMITTED", "{t}");
    let token = claim(&cluster, 2, &a, "worker").await?;
    let t = ok(get(0, &a), "get").await?;
    ensure!(t["status"]["state"] == "TASK_STATE_WORKING", "{t}");
    holder_patch(
        &cluster,
        1,
        &a,
        json!({"status": "done", "agent": "worker",
        "fencing_token": token, "note": "the thing is done"}),
    )
    .await?;
    let t = ok(get(2, &a), "get").await?;
    ensure!(t["status"]["state"] == "TASK_STATE_COMPLETED", "{t}");
    ensure!(t["status"]["message"]["role"] == "ROLE_AGENT", "{t}");
    ensure!(
        t["status"]["message"]["parts"][0]["text"] == "the thing is done",
        "{t}"
    );

    info!("CancelTask cancels an open task once; a finished one is not cancelable");
    let b = ok(send_msg(1, "b"), "send b").await?["task"]["id"]
        .as_str()
        .context("id")?
        .to_string();
    let cancel = |id: &str| {
        rpc(
            &cluster,
            2,
            "worker",
            Some("1.0"),
            "CancelTask",
            json!({"id": id}),
        )
    };
    let t = ok(cancel(&b), "cancel").await?;
    ensure!(t["status"]["state"] == "TASK_STATE_CANCELED", "{t}");
    ensure!(rpc_error(cancel(&b), "cancel again").await? == -32002);
    ensure!(rpc_error(cancel(&a), "cancel done").await? == -32002);

    info!("ListTasks filters this agent's tasks by state");
    let c = ok(send_msg(2, "c"), "send c").await?["task"]["id"]
        .as_str()
        .context("id")?
        .to_string();
    let list = |params: Value| rpc(&cluster, 0, "worker", Some("1.0"), "ListTasks", params);
    let all = ok(list(json!({})), "list").await?;
    let ids: Vec<&str> = all["tasks"]
        .as_array()
        .context("tasks")?
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    ensure!(ids == [a.as_str(), b.as_str(), c.as_str()], "{all}");
    ensure!(all["nextPageToken"] == "", "{all}");
    let done = ok(list(json!({"status": "TASK_STATE_COMPLETED"})), "list done").await?;
    ensure!(
        done["tasks"].as_array().map(Vec::len) == Some(1) && done["tasks"][0]["id"] == a.as_str(),
        "{done}"
    );
    let page = ok(list(json!({"pageSize": 2})), "page").await?;
    let token = str_of(&page["nextPageToken"], "token")?.to_string();
    ensure!(
        page["tasks"].as_array().map(Vec::len) == Some(2) && !token.is_empty(),
        "{page}"
    );
    let rest = ok(list(json!({"pageSize": 2, "pageToken": token})), "page 2").await?;
    ensure!(
        rest["tasks"].as_array().map(Vec::len) == Some(1) && rest["tasks"][0]["id"] == c.as_str(),
        "{rest}"
    );
    let others = ok(
        rpc(&cluster, 1, "other", Some("1.0"), "ListTasks", json!({})),
        "other's",
    )
    .await?;
    ensure!(
        others["tasks"].as_array().map(Vec::len) == Some(0),
        "{others}"
    );

    info!("errors: unknown or foreign tasks, bad params, unknown methods and versions");
    ensure!(rpc_error(get(0, "task_1_999999"), "unknown").await? == -32001);
    ensure!(rpc_error(get(0, "nonsense"), "malformed").await? == -32001);
    let foreign = rpc(
        &cluster,
        0,
        "other",
        Some("1.0"),
        "GetTask",
        json!({"id": a}),
    );
    ensure!(rpc_error(foreign, "another agent's task").await? == -32001);
    let before = expect(
        cluster.api(0).request(Method::GET, &["v1", "tasks"]),
        200,
        "tasks",
    )
    .await?;
    for params in [
        json!({}),
        json!({"message": {"messageId": "x", "role": "ROLE_USER", "parts": []}}),
        json!({"message": {"messageId": "x", "role": "ROLE_USER", "parts": [{"text": 1}]}}),
        json!({"message": {"role": "ROLE_USER", "parts": [{"text": "x"}]}}),
        json!({"message": {"messageId": "x", "role": "user", "parts": [{"text": "x"}]}}),
    ] {
        let req = rpc(
            &cluster,
            1,
            "worker",
            Some("1.0"),
            "SendMessage",
            params.clone(),
        );
        ensure!(rpc_error(req, "bad send").await? == -32602, "{params}");
    }
    let after = expect(
        cluster.api(0).request(Method::GET, &["v1", "tasks"]),
        200,
        "tasks",
    )
    .await?;
    ensure!(before == after, "a refused send changed the tasks");
    let items = expect(inbox(&cluster, 0, "worker"), 200, "inbox").await?;
    ensure!(
        items["items"].as_array().map(Vec::len) == Some(3),
        "{items}"
    );
    ensure!(
        rpc_error(
            rpc(
                &cluster,
                0,
                "worker",
                Some("1.0"),
                "tasks/get",
                json!({"id": a})
            ),
            "0.3 name on 1.0"
        )
        .await?
            == -32601
    );
    ensure!(
        rpc_error(
            rpc(&cluster, 0, "worker", None, "GetTask", json!({"id": a})),
            "1.0 name on 0.3"
        )
        .await?
            == -32601
    );
    ensure!(
        rpc_error(
            rpc(
                &cluster,
                0,
                "worker",
                Some("7.0"),
                "GetTask",
                json!({"id": a})
            ),
            "version"
        )
        .await?
            == -32009
    );
    ensure!(
        rpc_error(
            rpc(
                &cluster,
                0,
                "worker",
                Some("1.0"),
                "CreateTaskPushNotificationConfig",
                json!({})
            ),
            "push"
        )
        .await?
            == -32003
    );
    let raw = client_request(cluster.api(0), &endpoint(&cluster, 0, "worker")).context("url")?;
    ensure!(
        rpc_error(
            raw.header("content-type", "application/json").body("{nope"),
            "parse"
        )
        .await?
            == -32700
    );

    info!("a read key may read but not send");
    let key = cluster.api(0).create_api_key("reader", "read").await?;
    let reader = cluster.api_with_key(1, Some(&key.key))?;
    wait_until("the read key is known", TIMEOUT, async || {
        Ok(send_settled(rpc_with(
            &reader,
            &cluster,
            1,
            "worker",
            Some("1.0"),
            "GetTask",
            json!({"id": a}),
        ))
        .await?
        .0 == 200)
    })
    .await?;
    let req = rpc_with(
        &reader,
        &cluster,
        1,
        "worker",
        Some("1.0"),
        "SendMessage",
        json!({"message": user_message("r", "hi")}),
    );
    expect(req, 403, "read key sends").await?;

    info!("0.3 without a header: message/send, tasks/get, tasks/cancel in the 0.3 shapes");
    let msg03 = json!({"kind": "message", "messageId": "old-1", "role": "user",
        "parts": [{"kind": "text", "text": "hello from 0.3"}]});
    let t = ok(
        rpc(
            &cluster,
            1,
            "worker",
            None,
            "message/send",
            json!({"message": msg03}),
        ),
        "message/send",
    )
    .await?;
    ensure!(
        t["kind"] == "task" && t["status"]["state"] == "submitted",
        "{t}"
    );
    ensure!(t["history"][0]["parts"][0]["kind"] == "text", "{t}");
    let old = str_of(&t["id"], "id")?.to_string();
    let t = ok(
        rpc(&cluster, 2, "worker", None, "tasks/get", json!({"id": old})),
        "tasks/get",
    )
    .await?;
    ensure!(
        t["status"]["state"] == "submitted" && t["kind"] == "task",
        "{t}"
    );
    let t = ok(
        rpc(
            &cluster,
            0,
            "worker",
            Some("0.3"),
            "tasks/cancel",
            json!({"id": old}),
        ),
        "tasks/cancel",
    )
    .await?;
    ensure!(t["status"]["state"] == "canceled", "{t}");
    ensure!(
        rpc_error(
            rpc(
                &cluster,
                0,
                "worker",
                None,
                "tasks/get",
                json!({"id": "task_1_424242"})
            ),
            "0.3 unknown"
        )
        .await?
            == -32001
    );
    Ok(())
}

/// Reads server-sent events from a streaming answer.
struct Events {
    resp: reqwest::Response,
    buf: String,
}

impl Events {
    async fn open(req: RequestBuilder) -> Result<Events> {
        let resp = req.header("accept", "text/event-stream").send().await?;
        ensure!(resp.status() == 200, "stream status {}", resp.status());
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        ensure!(ct.starts_with("text/event-stream"), "content type {ct}");
        Ok(Events {
            resp,
            buf: String::new(),
        })
    }

    /// The next event's JSON-RPC result; `None` when the stream ended.
    async fn next(&mut self) -> Result<Option<Value>> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                let data: Vec<&str> = frame
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                let v: Value = serde_json::from_str(&data.join("\n"))?;
                ensure!(v["jsonrpc"] == "2.0" && v["id"] == "r1", "frame {v}");
                ensure!(v.get("error").is_none(), "error frame {v}");
                return Ok(Some(v["result"].clone()));
            }
            match tokio::time::timeout(TIMEOUT, self.resp.chunk())
                .await
                .context("no frame in time")??
            {
                Some(bytes) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                None => return Ok(None),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_follow_a_task_to_its_end() -> Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    register(&cluster, 0, "streamer", Some(json!({}))).await?;

    info!("v1.0 SendStreamingMessage: the task, then each state until completed");
    let req = rpc(
        &cluster,
        1,
        "streamer",
        Some("1.0"),
        "SendStreamingMessage",
        json!({"message": user_message("s-1", "stream me")}),
    );
    let mut events = Events::open(req).await?;
    let first = events.next().await?.context("first frame")?;
    let id = str_of(&first["task"]["id"], "task id")?.to_string();
    ensure!(
        first["task"]["status"]["state"] == "TASK_STATE_SUBMITTED",
        "{first}"
    );
    let token = claim(&cluster, 2, &id, "streamer").await?;
    let update = events.next().await?.context("working frame")?;
    ensure!(update["statusUpdate"]["taskId"] == id.as_str(), "{update}");
    ensure!(
        update["statusUpdate"]["status"]["state"] == "TASK_STATE_WORKING",
        "{update}"
    );
    holder_patch(
        &cluster,
        0,
        &id,
        json!({"status": "done", "agent": "streamer",
        "fencing_token": token, "note": "streamed"}),
    )
    .await?;
    // Frames come per change: skip any for changes that keep the state (none are expected).
    let last = loop {
        let u = events.next().await?.context("completed frame")?;
        if u["statusUpdate"]["status"]["state"] != "TASK_STATE_WORKING" {
            break u;
        }
    };
    ensure!(
        last["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED",
        "{last}"
    );
    ensure!(
        last["statusUpdate"]["status"]["message"]["parts"][0]["text"] == "streamed",
        "{last}"
    );
    ensure!(
        events.next().await?.is_none(),
        "the stream ends with the task"
    );

    info!("0.3 tasks/resubscribe: the task, then a final status-update");
    let t = ok(
        rpc(
            &cluster,
            0,
            "streamer",
            None,
            "message/send",
            json!({"message": {"kind": "message", "messageId": "s-2", "role": "user",
               "parts": [{"kind": "text", "text": "again"}]}}),
        ),
        "message/send",
    )
    .await?;
    let id = str_of(&t["id"], "id")?.to_string();
    let req = rpc(
        &cluster,
        2,
        "streamer",
        None,
        "tasks/resubscribe",
        json!({"id": id}),
    );
    let mut events = Events::open(req).await?;
    let first = events.next().await?.context("first frame")?;
    ensure!(
        first["kind"] == "task" && first["status"]["state"] == "submitted",
        "{first}"
    );
    ok(
        rpc(
            &cluster,
            1,
            "streamer",
            None,
            "tasks/cancel",
            json!({"id": id}),
        ),
        "cancel",
    )
    .await?;
    let u = events.next().await?.context("final frame")?;
    ensure!(
        u["kind"] == "status-update" && u["status"]["state"] == "canceled",
        "{u}"
    );
    ensure!(u["final"] == true, "{u}");
    ensure!(
        events.next().await?.is_none(),
        "the stream ends with the task"
    );

    info!("a finished task cannot be subscribed to");
    let req = rpc(
        &cluster,
        0,
        "streamer",
        Some("1.0"),
        "SubscribeToTask",
        json!({"id": id}),
    );
    ensure!(rpc_error(req, "subscribe to a finished task").await? == -32004);
    Ok(())
}

/// The Python of the venv holding the pinned `a2a-sdk`: `CONCLAVE_A2A_PYTHON` (set by
/// `scripts/test.sh`), required under CI; elsewhere the venv `scripts/test.sh` makes.
fn a2a_python() -> Result<PathBuf> {
    let path = match std::env::var_os("CONCLAVE_A2A_PYTHON") {
        Some(p) => PathBuf::from(p),
        None if std::env::var("CI").is_ok_and(|v| v == "true") => {
            bail!("CONCLAVE_A2A_PYTHON is not set: run the suite through scripts/test.sh")
        }
        None => {
            let home = std::env::var_os("HOME").context("HOME is not set")?;
            PathBuf::from(home).join(".cache/conclave/venv-a2a/bin/python")
        }
    };
    ensure!(
        path.exists(),
        "the a2a-sdk python was not found at {}: run `bash scripts/test.sh` once",
        path.display()
    );
    Ok(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_a2a_sdk_resolves_the_card_sends_and_gets_the_task() -> Result<()> {
    let python = a2a_python()?;
    let cluster = Cluster::builder().nodes(3).start().await?;
    register(&cluster, 0, "sdk-agent", Some(card())).await?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/a2a_client.py");
    let url = endpoint(&cluster, 1, "sdk-agent");
    let output = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(&url)
        .env("CONCLAVE_API_KEY", cluster.api_key())
        .stdin(Stdio::null())
        .output()
        .await
        .context("running the a2a-sdk client")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.success(),
        "a2a-sdk client failed:\n{stdout}\n{stderr}"
    );
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .with_context(|| format!("no report from the client:\n{stdout}\n{stderr}"))?;
    ensure!(report["card_name"] == "sdk-agent", "{report}");
    let task_id = str_of(&report["task_id"], "task_id")?;

    info!("what the SDK sent is in the agent's inbox, linked to the task it got back");
    let items = expect(inbox(&cluster, 2, "sdk-agent"), 200, "inbox").await?;
    let m = &items["items"][0];
    ensure!(m["metadata"]["a2a"]["taskId"] == task_id, "{items}");
    ensure!(
        m["body"]["parts"][0]["text"] == "hello from the a2a-sdk",
        "{items}"
    );
    ensure!(report["get_state"] == "TASK_STATE_SUBMITTED", "{report}");
    Ok(())
}
