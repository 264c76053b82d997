//! Live events end to end on three-node clusters: the WebSocket at `/ws` followed by a client
//! nobody here wrote (the pinned Python `websockets`) while the topic shard's leader is killed,
//! the WebSocket's auth, subscription, ack and limit rules, the slow-consumer disconnect, and
//! SSE resumption with `Last-Event-ID`. Run `cargo build -p conclave-node` first; the Python
//! client comes from `CONCLAVE_WS_PYTHON` (set by `scripts/test.sh`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use conclave_cluster_tests::http::expect_status as expect;
use conclave_cluster_tests::{retry_transient, Cluster, ShardKind};
use futures::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::info;

/// Deadline for one frame, event or request.
const TIMEOUT: Duration = Duration::from_secs(60);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The Python with `websockets` installed: `CONCLAVE_WS_PYTHON`, else the virtualenv
/// `scripts/test.sh` installs it into. Missing, the test fails: it is never skipped.
fn ws_python() -> Result<PathBuf> {
    let path = match std::env::var_os("CONCLAVE_WS_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => {
            ensure!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CONCLAVE_WS_PYTHON is not set: CI runs the tests through scripts/test.sh"
            );
            let home = std::env::var_os("HOME").context("HOME is not set")?;
            PathBuf::from(home).join(".cache/conclave/venv-websockets/bin/python")
        }
    };
    ensure!(
        path.exists(),
        "python with websockets not found at {}: run `bash scripts/test.sh` once",
        path.display()
    );
    Ok(path)
}

/// `ws://` URL of node `index`'s WebSocket.
fn ws_url(cluster: &Cluster, index: usize) -> String {
    format!("ws://{}/ws", cluster.node(index).listen_addr())
}

/// Opens a WebSocket on node `index` and authenticates with `key`.
async fn ws_open(cluster: &Cluster, index: usize, key: &str) -> Result<Ws> {
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url(cluster, index))
        .await
        .context("websocket handshake")?;
    send(&mut ws, json!({ "type": "auth", "token": key })).await?;
    let ready = frame(&mut ws).await?;
    ensure!(ready["type"] == "ready", "expected ready, got {ready}");
    Ok(ws)
}

async fn send(ws: &mut Ws, frame: Value) -> Result<()> {
    ws.send(Message::text(frame.to_string()))
        .await
        .context("sending a frame")
}

/// The next JSON frame (pings and pongs are skipped).
async fn frame(ws: &mut Ws) -> Result<Value> {
    loop {
        let msg = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .context("no frame in time")?
            .context("the connection ended")?
            .context("the connection failed")?;
        match msg {
            Message::Text(t) => {
                return serde_json::from_str(t.as_str()).context("frame is not json")
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => bail!("unexpected message {other:?}"),
        }
    }
}

/// Reads until the server closes; the close code and the number of text frames before it.
async fn close_code(ws: &mut Ws) -> Result<(u16, String, usize)> {
    let mut frames = 0;
    loop {
        let msg = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .context("no close in time")?;
        match msg {
            Some(Ok(Message::Close(Some(f)))) => {
                return Ok((u16::from(f.code), f.reason.to_string(), frames))
            }
            Some(Ok(Message::Close(None))) | None => bail!("closed without a close code"),
            Some(Ok(Message::Text(_))) => frames += 1,
            Some(Ok(_)) => {}
            Some(Err(e)) => bail!("connection failed before a close frame: {e}"),
        }
    }
}

/// Subscribes to `stream` (with `extra` fields) and checks the `subscribed` answer.
async fn subscribe(ws: &mut Ws, stream: &str, extra: Value) -> Result<Value> {
    let mut f = json!({ "type": "subscribe", "stream": stream });
    if let (Some(f), Some(extra)) = (f.as_object_mut(), extra.as_object()) {
        f.extend(extra.clone());
    }
    send(ws, f).await?;
    let answer = frame(ws).await?;
    ensure!(
        answer["type"] == "subscribed" && answer["stream"] == stream,
        "subscribe {stream}: {answer}"
    );
    Ok(answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websocket_client_sees_every_message_across_a_leader_kill() -> Result<()> {
    const TOPIC: &str = "failover";
    let python = ws_python()?;
    let mut cluster = Cluster::builder().nodes(3).start().await?;
    cluster.create_topic(0, TOPIC).await?;

    // Phase: 20 messages exist before anyone subscribes; the client starts from seq 5.
    for n in 1..=20u64 {
        let p = cluster.publish(0, TOPIC, json!({ "n": n })).await?;
        ensure!(p.seq == n, "publish {n} got seq {}", p.seq);
    }
    let leader_id = cluster.leader_of(ShardKind::Topic, TOPIC).await?;
    let leader = cluster
        .node_index_by_id(leader_id)
        .context("leader is not a sandbox node")?;
    let others: Vec<usize> = (0..cluster.len()).filter(|&i| i != leader).collect();
    let holder = others[0];
    info!(
        leader_id,
        holder, "the python client holds its websocket on a non-leader"
    );

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/ws_no_gap.py");
    let mut child = tokio::process::Command::new(&python)
        .arg(&script)
        .args(["--url", &ws_url(&cluster, holder)])
        .args(["--key", cluster.api_key()])
        .args(["--topic", TOPIC, "--from-seq", "5", "--timeout", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", python.display()))?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let first = tokio::time::timeout(TIMEOUT, lines.next_line())
        .await
        .context("the client did not subscribe in time")??
        .context("the client ended before subscribing")?;
    let first: Value = serde_json::from_str(&first)?;
    ensure!(first["type"] == "subscribed", "client said {first}");

    // Phase: publish through the surviving nodes (with retries through the failover) while the
    // topic shard's leader is killed with SIGKILL part-way.
    let mut acknowledged: Vec<(u64, u64)> = Vec::new();
    for n in 21..=120u64 {
        if n == 50 {
            info!(
                leader_id,
                "killing the topic shard's leader during the publish stream"
            );
            cluster.kill(leader)?;
        }
        let via = others[(n as usize) % others.len()];
        let api = cluster.api(via);
        let p = retry_transient(TIMEOUT, async || {
            api.publish(TOPIC, json!({ "n": n })).await
        })
        .await
        .with_context(|| format!("publishing {n}"))?;
        acknowledged.push((n, p.seq));
    }
    let api = cluster.api(others[1]);
    let last = retry_transient(TIMEOUT, async || {
        api.publish(TOPIC, json!({ "final": true })).await
    })
    .await?;

    // Phase: the client saw seq 5 to the final message, each once, in order, and every
    // acknowledged message among them with its body.
    let done = tokio::time::timeout(TIMEOUT * 2, lines.next_line()).await;
    let status = tokio::time::timeout(TIMEOUT, child.wait()).await??;
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use tokio::io::AsyncReadExt;
        e.read_to_string(&mut stderr).await?;
    }
    ensure!(status.success(), "the python client failed: {stderr}");
    let done: Value = serde_json::from_str(
        &done
            .context("no result from the client in time")??
            .context("the client printed no result")?,
    )?;
    let received = done["received"].as_array().context("no received list")?;
    let seqs: Vec<u64> = received.iter().filter_map(|r| r["seq"].as_u64()).collect();
    let expected: Vec<u64> = (5..=last.seq).collect();
    ensure!(
        seqs == expected,
        "received seqs {seqs:?}, expected 5..={}",
        last.seq
    );
    for (n, seq) in &acknowledged {
        let body = &received[(*seq - 5) as usize]["body"];
        ensure!(
            *body == json!({ "n": n }),
            "seq {seq}: acknowledged n={n}, received {body}"
        );
    }
    info!(
        received = seqs.len(),
        acknowledged = acknowledged.len(),
        "every acknowledged message arrived once, in order"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_refuses_missing_or_wrong_auth_with_a_close_code() -> Result<()> {
    let cluster = Cluster::builder()
        .nodes(3)
        .env("CONCLAVE_STREAM_PING_INTERVAL_SECS", "1")
        .env("CONCLAVE_STREAM_IDLE_TIMEOUT_SECS", "30")
        .start()
        .await?;

    // Phase: a wrong key closes with 4401.
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url(&cluster, 1)).await?;
    send(&mut ws, json!({ "type": "auth", "token": "ck_not_a_key" })).await?;
    let (code, reason, frames) = close_code(&mut ws).await?;
    ensure!(
        code == 4401 && frames == 0,
        "wrong key: {code} {reason:?} after {frames} frames"
    );

    // Phase: a first frame that is not auth closes with 4400, before anything is served.
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url(&cluster, 2)).await?;
    send(
        &mut ws,
        json!({ "type": "subscribe", "stream": "presence" }),
    )
    .await?;
    let (code, reason, frames) = close_code(&mut ws).await?;
    ensure!(code == 4400 && frames == 0, "no auth: {code} {reason:?}");

    // Phase: a revoked key is disconnected with 4401 at the next keepalive check.
    let key = cluster.api(0).create_api_key("short-lived", "read").await?;
    let secret = key.key.clone();
    let key_id = key.id.as_str().context("key id")?.to_string();
    let client = cluster.api_with_key(1, Some(&secret))?;
    conclave_cluster_tests::http::wait_key_usable(&client).await?;
    let mut ws = ws_open(&cluster, 1, &secret).await?;
    subscribe(&mut ws, "presence", json!({})).await?;
    expect(
        cluster
            .api(0)
            .request(Method::POST, &["v1", "api-keys", &key_id, "revoke"]),
        200,
    )
    .await?;
    let (code, reason, _) = close_code(&mut ws).await?;
    ensure!(code == 4401, "revoked key: {code} {reason:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_websocket_consumer_is_disconnected_with_4429() -> Result<()> {
    const TOPIC: &str = "firehose";
    let cluster = Cluster::builder()
        .nodes(3)
        .env("CONCLAVE_STREAM_SEND_QUEUE", "8")
        // The close frame waits this long for the client to read again.
        .env("CONCLAVE_STREAM_IDLE_TIMEOUT_SECS", "600")
        .start()
        .await?;
    cluster.create_topic(0, TOPIC).await?;

    // A client with a tiny receive buffer subscribes and then reads nothing.
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let tcp = socket
        .connect(cluster.node(1).listen_addr().parse()?)
        .await?;
    let (mut ws, _) =
        tokio_tungstenite::client_async(ws_url(&cluster, 1), MaybeTlsStream::Plain(tcp))
            .await
            .context("websocket handshake")?;
    send(
        &mut ws,
        json!({ "type": "auth", "token": cluster.api_key() }),
    )
    .await?;
    ensure!(frame(&mut ws).await?["type"] == "ready");
    subscribe(&mut ws, &format!("topic:{TOPIC}"), json!({})).await?;

    // Phase: far more than the socket buffers (small: the receiver's window is tiny), the
    // send queue and the writer hold together is published while the client does not read.
    const MESSAGES: usize = 40;
    let filler = "x".repeat(200 * 1024);
    for batch in (0..MESSAGES).collect::<Vec<_>>().chunks(4) {
        let publishes = batch
            .iter()
            .map(|&n| cluster.publish(n % 3, TOPIC, json!({ "n": n, "filler": filler })));
        for p in futures::future::join_all(publishes).await {
            p?;
        }
    }

    // Phase: reading again, the client finds the stream cut short by close code 4429.
    let (code, reason, frames) = close_code(&mut ws).await?;
    ensure!(code == 4429, "expected 4429, got {code} {reason:?}");
    ensure!(
        frames < MESSAGES,
        "all {frames} events arrived: nothing was dropped"
    );
    info!(frames, %reason, "slow consumer disconnected");

    // The node still serves other clients.
    let mut ws = ws_open(&cluster, 1, cluster.api_key()).await?;
    send(&mut ws, json!({ "type": "ping", "data": 7 })).await?;
    let pong = frame(&mut ws).await?;
    ensure!(pong == json!({ "type": "pong", "data": 7 }), "{pong}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_streams_resume_ack_durable_cursors_and_enforce_limits() -> Result<()> {
    const TOPIC: &str = "durable";
    let cluster = Cluster::builder()
        .nodes(3)
        .env("CONCLAVE_STREAM_MAX_SUBSCRIPTIONS", "3")
        .start()
        .await?;
    let api = cluster.api(0);
    cluster.create_topic(0, TOPIC).await?;
    expect(
        api.request(Method::POST, &["v1", "agents"])
            .json(&json!({ "name": "worker" })),
        201,
    )
    .await?;
    expect(
        api.request(Method::POST, &["v1", "topics", TOPIC, "subscribe"])
            .json(&json!({ "agent": "worker", "from": "earliest" })),
        201,
    )
    .await?;
    for n in 1..=3u64 {
        cluster.publish(1, TOPIC, json!({ "n": n })).await?;
    }

    // Phase: a durable subscription starts after the agent's cursor (0), and acks move it.
    let mut ws = ws_open(&cluster, 2, cluster.api_key()).await?;
    let stream = format!("topic:{TOPIC}");
    let sub = subscribe(&mut ws, &stream, json!({ "agent": "worker" })).await?;
    ensure!(sub["from"] == json!(1), "{sub}");
    for n in 1..=3u64 {
        let e = frame(&mut ws).await?;
        ensure!(
            e["type"] == "event" && e["seq"] == json!(n) && e["data"]["body"]["n"] == json!(n),
            "event {n}: {e}"
        );
    }
    send(
        &mut ws,
        json!({ "type": "ack", "stream": stream, "seq": 2 }),
    )
    .await?;
    let acked = frame(&mut ws).await?;
    ensure!(
        acked["type"] == "acked" && acked["cursor"] == json!(2),
        "{acked}"
    );
    let subs = expect(
        api.request(Method::GET, &["v1", "topics", "subscriptions"])
            .query(&[("agent", "worker")]),
        200,
    )
    .await?;
    ensure!(
        subs["items"][0]["cursor"] == json!(2),
        "durable cursor: {subs}"
    );

    // Phase: a live item arrives on the open subscription; a new connection with the same
    // agent resumes after the acked cursor (seq 3 first).
    cluster.publish(0, TOPIC, json!({ "n": 4 })).await?;
    let e = frame(&mut ws).await?;
    ensure!(e["seq"] == json!(4), "{e}");
    let mut again = ws_open(&cluster, 1, cluster.api_key()).await?;
    subscribe(&mut again, &stream, json!({ "agent": "worker" })).await?;
    let e = frame(&mut again).await?;
    ensure!(e["seq"] == json!(3), "resumed at {e}");

    // Phase: inbox, presence and task streams deliver their items.
    subscribe(&mut ws, "inbox:worker", json!({ "from": "earliest" })).await?;
    expect(
        api.request(Method::POST, &["v1", "messages"])
            .json(&json!({ "to": "agent:worker", "body": { "hello": 1 } })),
        201,
    )
    .await?;
    let e = frame(&mut ws).await?;
    ensure!(
        e["stream"] == "inbox:worker"
            && e["seq"] == json!(1)
            && e["data"]["body"]["hello"] == json!(1),
        "{e}"
    );
    subscribe(&mut ws, "tasks", json!({})).await?;
    let task = cluster.create_task(2, "watched").await?;
    let e = frame(&mut ws).await?;
    ensure!(
        e["stream"] == "tasks"
            && e["kind"] == "task"
            && e["data"]["task_id"] == json!(task.id.0)
            && e["data"]["kind"] == "created"
            && e["cursor"]
                .as_str()
                .is_some_and(|c| c.split('.').count() == cluster.shard_count() as usize),
        "{e}"
    );

    // Phase: limits and errors answer with error frames and keep the connection.
    send(
        &mut ws,
        json!({ "type": "subscribe", "stream": "presence" }),
    )
    .await?;
    let e = frame(&mut ws).await?;
    ensure!(
        e["type"] == "error" && e["code"] == "too_many_subscriptions",
        "{e}"
    );
    send(&mut ws, json!({ "type": "unsubscribe", "stream": "tasks" })).await?;
    ensure!(frame(&mut ws).await?["type"] == "unsubscribed");
    send(
        &mut ws,
        json!({ "type": "subscribe", "stream": "topic:missing" }),
    )
    .await?;
    let e = frame(&mut ws).await?;
    ensure!(e["type"] == "error" && e["code"] == "not_found", "{e}");
    send(
        &mut ws,
        json!({ "type": "subscribe", "stream": "nonsense:x" }),
    )
    .await?;
    let e = frame(&mut ws).await?;
    ensure!(e["type"] == "error" && e["code"] == "bad_request", "{e}");
    send(
        &mut ws,
        json!({ "type": "ack", "stream": "inbox:worker", "seq": 1 }),
    )
    .await?;
    let e = frame(&mut ws).await?;
    ensure!(e["type"] == "error" && e["code"] == "bad_request", "{e}");
    ws.send(Message::text("{not json")).await?;
    let e = frame(&mut ws).await?;
    ensure!(e["type"] == "error" && e["code"] == "bad_request", "{e}");
    send(&mut ws, json!({ "type": "ping" })).await?;
    ensure!(frame(&mut ws).await?["type"] == "pong");
    Ok(())
}

/// One server-sent event.
#[derive(Debug, Default)]
struct SseEvent {
    event: String,
    id: String,
    data: Value,
}

/// Reads server-sent events from a streaming response.
struct SseReader {
    resp: reqwest::Response,
    buf: String,
}

impl SseReader {
    async fn open(
        cluster: &Cluster,
        index: usize,
        path: &[&str],
        last_id: Option<&str>,
    ) -> Result<Self> {
        let mut req = cluster.api(index).request(Method::GET, path);
        if let Some(id) = last_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = req.send().await?;
        ensure!(resp.status() == 200, "GET {path:?}: {}", resp.status());
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        ensure!(ct.starts_with("text/event-stream"), "content type {ct}");
        Ok(Self {
            resp,
            buf: String::new(),
        })
    }

    /// The next event (keepalive comments are skipped).
    async fn next(&mut self) -> Result<SseEvent> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut e = SseEvent::default();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        e.event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        e.id = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                e.data = serde_json::from_str(&data).with_context(|| format!("data {data}"))?;
                return Ok(e);
            }
            let chunk = tokio::time::timeout(TIMEOUT, self.resp.chunk())
                .await
                .context("no event in time")??
                .context("the stream ended")?;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streams_resume_from_last_event_id() -> Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let api = cluster.api(0);

    // Phase: a task's stream starts at its creation and follows its claim.
    let task = cluster.create_task(0, "streamed").await?;
    let id = task.id.0.clone();
    let mut sse = SseReader::open(&cluster, 1, &["v1", "tasks", &id, "events"], None).await?;
    let created = sse.next().await?;
    ensure!(
        created.event == "task" && created.id == "1" && created.data["data"]["kind"] == "created",
        "{created:?}"
    );
    cluster.claim_task(2, &task.id, "worker").await?;
    let claimed = sse.next().await?;
    ensure!(
        claimed.id == "2" && claimed.data["data"]["status"] == "claimed",
        "{claimed:?}"
    );
    drop(sse);

    // Phase: changes made while disconnected arrive on reconnect after Last-Event-ID, in
    // order, and nothing before it.
    let claimed_task = cluster.get_task(0, &task.id).await?;
    let token = claimed_task.fencing_token;
    for status in ["in_progress", "done"] {
        expect(
            api.request(Method::PATCH, &["v1", "tasks", &id])
                .json(&json!({
                    "status": status, "agent": "worker", "fencing_token": token
                })),
            200,
        )
        .await?;
    }
    let mut sse = SseReader::open(&cluster, 2, &["v1", "tasks", &id, "events"], Some("2")).await?;
    for (seq, status) in [("3", "in_progress"), ("4", "done")] {
        let e = sse.next().await?;
        ensure!(e.id == seq && e.data["data"]["status"] == status, "{e:?}");
    }
    drop(sse);

    // Phase: the workspace stream's ids are cursors over every shard; resuming from one
    // delivers exactly what happened after it.
    let mut sse = SseReader::open(&cluster, 0, &["v1", "events"], None).await?;
    let first = cluster.create_task(1, "first").await?;
    let e = sse.next().await?;
    ensure!(
        e.event == "task" && e.data["data"]["task_id"] == json!(first.id.0),
        "{e:?}"
    );
    let cursor = e.id.clone();
    drop(sse);
    let second = cluster.create_task(2, "second").await?;
    expect(
        api.request(Method::POST, &["v1", "agents"])
            .json(&json!({ "name": "newcomer" })),
        201,
    )
    .await?;
    let mut sse = SseReader::open(&cluster, 1, &["v1", "events"], Some(&cursor)).await?;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let e = sse.next().await?;
        seen.push((e.event.clone(), e.data["data"].clone()));
    }
    ensure!(
        seen.iter()
            .any(|(k, d)| k == "task" && d["task_id"] == json!(second.id.0)),
        "second task missing from {seen:?}"
    );
    ensure!(
        seen.iter()
            .any(|(k, d)| k == "presence" && d["agent"] == "newcomer" && d["kind"] == "registered"),
        "registration missing from {seen:?}"
    );
    ensure!(
        !seen.iter().any(|(_, d)| d["task_id"] == json!(first.id.0)),
        "an event before the cursor came again: {seen:?}"
    );

    // Phase: a malformed Last-Event-ID is a 400 with the standard error body.
    expect(
        api.request(Method::GET, &["v1", "events"])
            .header("Last-Event-ID", "not-a-cursor"),
        400,
    )
    .await?;
    expect(
        api.request(Method::GET, &["v1", "tasks", "task_999_1", "events"]),
        404,
    )
    .await?;
    Ok(())
}
