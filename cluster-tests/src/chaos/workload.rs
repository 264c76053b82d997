//! The clients of a chaos run: sequential processes, each with its own seeded random choices,
//! that send operations to random nodes until a deadline and record every one.
//!
//! - context clients put and get a handful of keys (values unique in the run);
//! - publishers publish bodies carrying unique ids to the run's topics;
//! - subscribers follow one topic each: [`SubscriberKind::Paging`] ones with `since` alone,
//!   [`SubscriberKind::Cursor`] ones through a subscription's server-side cursor, acknowledging
//!   what they received and now and then resuming from the cursor. Both record their reads
//!   as [`Delivery`] calls;
//! - WebSocket subscribers follow one topic each over `/ws` of a random node, acknowledging
//!   as they go; whenever the connection ends (the node died, froze or was cut off, the server
//!   closed it, or the subscriber chose to move on) they reconnect to another node and
//!   resubscribe right after the last message they hold with everything before it. Each
//!   connection is one [`Call::Stream`] recording every frame delivered on it;
//! - task workers create tasks, claim them with short leases, and complete, release, renew or
//!   abandon what they claimed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::history::{Answer, Call, Clock, Delivery, Frame, Op, Outcome, TaskState};
use super::ws::{self, Connection, Incoming, OpenError};
use crate::client::{ApiError, NodeClient};

/// Largest page a subscriber asks for.
pub const PAGE: u32 = 100;
/// Task ids the workers pick from: the most recently created.
const TASK_POOL: usize = 12;
/// A WebSocket subscriber's heartbeat: it pings, and acks what it holds, this often.
const WS_TICK: Duration = Duration::from_millis(500);
/// Silence (no frame, not even a `pong`) after which a WebSocket subscriber gives up on its
/// node: frozen, or gone without closing the connection.
const WS_SILENCE: Duration = Duration::from_secs(5);
/// How long an `ack` may go unanswered before the subscriber moves to another node (an ack
/// goes through the topic's leader, which a node cut off from the others cannot reach).
const WS_ACK_TIMEOUT: Duration = Duration::from_secs(6);
/// Shortest and longest a WebSocket subscriber stays on one node when nothing goes wrong, ms.
const WS_STAY_MS: (u64, u64) = (2_000, 12_000);

/// How many clients of each kind run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkloadConfig {
    /// Context clients.
    pub context_clients: usize,
    /// Context keys they share.
    pub keys: usize,
    /// Publishers.
    pub publishers: usize,
    /// Topics.
    pub topics: usize,
    /// Subscribers reading with `since`.
    pub paging_subscribers: usize,
    /// Subscribers reading through server-side cursors.
    pub cursor_subscribers: usize,
    /// Subscribers following a topic over the WebSocket.
    pub ws_subscribers: usize,
    /// Task workers.
    pub task_workers: usize,
    /// Pause between two operations of one client, ms (a random value up to this).
    pub think_ms: u64,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            context_clients: 6,
            keys: 6,
            publishers: 3,
            topics: 2,
            paging_subscribers: 2,
            cursor_subscribers: 2,
            ws_subscribers: 2,
            task_workers: 4,
            think_ms: 40,
        }
    }
}

impl WorkloadConfig {
    /// The run's context keys.
    pub fn key_names(&self) -> Vec<String> {
        (0..self.keys).map(|k| format!("chaos-key-{k}")).collect()
    }

    /// The run's topics.
    pub fn topic_names(&self) -> Vec<String> {
        (0..self.topics)
            .map(|t| format!("chaos-topic-{t}"))
            .collect()
    }

    /// The agent name of cursor subscriber `i`.
    pub fn subscriber_agent(i: usize) -> String {
        format!("chaos-sub-{i}")
    }

    /// The agent name of WebSocket subscriber `i` (its acks move this agent's cursor).
    pub fn ws_agent(i: usize) -> String {
        format!("chaos-ws-{i}")
    }
}

/// How a subscriber reads its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriberKind {
    /// `GET messages?since=` from its own position.
    Paging,
    /// `GET messages?agent=` with acknowledgements, resuming from the server-side cursor.
    Cursor,
}

/// What every client shares.
#[derive(Clone)]
pub struct Shared {
    /// One client per node index.
    pub nodes: Vec<NodeClient>,
    /// The API key WebSocket subscribers authenticate with.
    pub token: String,
    /// The run's clock.
    pub clock: Clock,
    /// Source of run-unique values and ids.
    pub ids: Arc<AtomicU64>,
    /// Recently created tasks.
    pub tasks: Arc<Mutex<Vec<String>>>,
    /// When clients stop starting operations.
    pub deadline: Instant,
    /// Longest pause between two operations of a client, ms.
    pub think_ms: u64,
}

/// A WebSocket `ack` sent and not answered yet.
struct PendingAck {
    /// The sequence acknowledged.
    seq: u64,
    /// When it was sent.
    sent: Instant,
    /// When it was sent, µs on the run's clock.
    invoke_us: u64,
    /// When it was sent, wall-clock ms.
    invoke_wall_ms: u64,
}

/// One sequential client.
pub struct Client {
    id: usize,
    rng: StdRng,
    shared: Shared,
    ops: Vec<Op>,
}

impl Client {
    /// Client `id`, its choices seeded from `seed`.
    pub fn new(id: usize, seed: u64, shared: Shared) -> Self {
        Client {
            id,
            rng: StdRng::seed_from_u64(seed ^ (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            shared,
            ops: Vec::new(),
        }
    }

    fn running(&self) -> bool {
        Instant::now() < self.shared.deadline
    }

    async fn think(&mut self) {
        let ms = self.rng.random_range(0..=self.shared.think_ms);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    fn next_id(&self) -> u64 {
        self.shared.ids.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Runs `request` against a random node and records it as `call`, its answer decoded by
    /// `answer`; returns the outcome.
    async fn record<T, F>(
        &mut self,
        call: Call,
        method: Method,
        segments: &[&str],
        body: Option<Value>,
        answer: F,
    ) -> Outcome
    where
        T: serde::de::DeserializeOwned,
        F: FnOnce(T) -> Answer,
    {
        let node = self.rng.random_range(0..self.shared.nodes.len());
        let client = self.shared.nodes[node].clone();
        let mut request = client.request(method, segments);
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(call, node, &client, request, answer).await
    }

    async fn send<T, F>(
        &mut self,
        call: Call,
        node: usize,
        client: &NodeClient,
        request: reqwest::RequestBuilder,
        answer: F,
    ) -> Outcome
    where
        T: serde::de::DeserializeOwned,
        F: FnOnce(T) -> Answer,
    {
        let invoke_wall_ms = Clock::wall_ms();
        let invoke_us = self.shared.clock.now_us();
        let result: Result<T, ApiError> = client.call(request).await;
        let complete_us = self.shared.clock.now_us();
        let outcome = match result {
            Ok(body) => Outcome::Ok(answer(body)),
            Err(error) => Outcome::of_error(&error),
        };
        self.ops.push(Op {
            client: self.id,
            node,
            call,
            invoke_us,
            complete_us,
            invoke_wall_ms,
            outcome: outcome.clone(),
        });
        outcome
    }

    /// Puts and gets random keys of `keys` until the deadline.
    pub async fn context(mut self, keys: Vec<String>) -> Vec<Op> {
        while self.running() {
            let key = keys[self.rng.random_range(0..keys.len())].clone();
            if self.rng.random_bool(0.5) {
                let value = self.next_id();
                let call = Call::Put {
                    key: key.clone(),
                    value,
                };
                let body = json!({ "value": { "w": value } });
                self.record(
                    call,
                    Method::PUT,
                    &["v1", "context", &key],
                    Some(body),
                    entry,
                )
                .await;
            } else {
                let call = Call::Get { key: key.clone() };
                let outcome = self
                    .record(call, Method::GET, &["v1", "context", &key], None, entry)
                    .await;
                // Not-found is an answer, not a failure.
                if let (Some(op), Outcome::Fail(error)) = (self.ops.last_mut(), &outcome) {
                    if error.starts_with("404") {
                        op.outcome = Outcome::Ok(Answer::NotFound);
                    }
                }
            }
            self.think().await;
        }
        self.ops
    }

    /// Publishes to random topics of `topics` until the deadline.
    pub async fn publisher(mut self, topics: Vec<String>) -> Vec<Op> {
        while self.running() {
            let topic = topics[self.rng.random_range(0..topics.len())].clone();
            let id = self.next_id();
            let call = Call::Publish {
                topic: topic.clone(),
                id,
            };
            let body = json!({ "body": { "id": id } });
            self.record(
                call,
                Method::POST,
                &["v1", "topics", &topic, "publish"],
                Some(body),
                |v: Value| Answer::Published {
                    seq: v["seq"].as_u64().unwrap_or(0),
                },
            )
            .await;
            self.think().await;
        }
        self.ops
    }

    /// Follows `topic` until the deadline; `index` names the subscriber (and, for cursor
    /// subscribers, its agent, already subscribed from the earliest message).
    pub async fn subscriber(
        mut self,
        index: usize,
        kind: SubscriberKind,
        topic: String,
    ) -> Vec<Op> {
        let agent = WorkloadConfig::subscriber_agent(index);
        // The highest sequence received with everything before it.
        let mut position = 0u64;
        while self.running() {
            let from = match kind {
                SubscriberKind::Paging => Delivery::Since(position),
                SubscriberKind::Cursor if self.rng.random_bool(0.25) => Delivery::Cursor,
                SubscriberKind::Cursor => Delivery::AckThenSince(position),
            };
            let node = self.rng.random_range(0..self.shared.nodes.len());
            let client = self.shared.nodes[node].clone();
            let mut request = client
                .request(Method::GET, &["v1", "topics", &topic, "messages"])
                .query(&[("limit", PAGE.to_string())]);
            match from {
                Delivery::Since(since) => request = request.query(&[("since", since)]),
                Delivery::Cursor => request = request.query(&[("agent", agent.as_str())]),
                Delivery::AckThenSince(since) => {
                    request = request.query(&[("agent", agent.as_str())]);
                    request = request.query(&[("since", since)]);
                }
            }
            let call = Call::Read {
                topic: topic.clone(),
                subscriber: index,
                from,
                limit: PAGE,
            };
            let outcome = self.send(call, node, &client, request, page).await;
            if let Outcome::Ok(Answer::Page { items, .. }) = outcome {
                for (seq, _) in items {
                    if seq == position + 1 {
                        position = seq;
                    }
                }
            }
            self.think().await;
        }
        self.ops
    }

    /// Follows `topic` over the WebSocket until the deadline as WebSocket subscriber `index`
    /// (its agent already subscribed from the earliest message): one connection after another,
    /// each to a node other than the last, each resuming right after the last message held
    /// with everything before it.
    pub async fn ws_subscriber(mut self, index: usize, topic: String) -> Vec<Op> {
        let agent = WorkloadConfig::ws_agent(index);
        // The highest sequence received with everything before it.
        let mut position = 0u64;
        let mut node = self.rng.random_range(0..self.shared.nodes.len());
        while self.running() {
            let from = position + 1;
            let url = ws::url(self.shared.nodes[node].base_url());
            let invoke_wall_ms = Clock::wall_ms();
            let invoke_us = self.shared.clock.now_us();
            let opened = Connection::open(&url, &self.shared.token, &topic, from, &agent).await;
            let outcome = match opened {
                Ok(conn) => {
                    let subscribed_us = self.shared.clock.now_us();
                    let stay =
                        Duration::from_millis(self.rng.random_range(WS_STAY_MS.0..=WS_STAY_MS.1));
                    let (frames, ended, by_client) = self
                        .ws_session(conn, index, node, &topic, stay, &mut position)
                        .await;
                    Outcome::Ok(Answer::Frames {
                        subscribed_us,
                        frames,
                        ended,
                        by_client,
                    })
                }
                Err(OpenError::Refused(why)) => Outcome::Fail(why),
                Err(OpenError::NoAnswer(why)) => Outcome::Unknown(why),
            };
            let failed = !matches!(outcome, Outcome::Ok(_));
            self.ops.push(Op {
                client: self.id,
                node,
                call: Call::Stream {
                    topic: topic.clone(),
                    subscriber: index,
                    from,
                },
                invoke_us,
                complete_us: self.shared.clock.now_us(),
                invoke_wall_ms,
                outcome,
            });
            // Another node next time.
            let n = self.shared.nodes.len();
            node = (node + self.rng.random_range(1..n)) % n;
            if failed {
                self.think().await;
            }
        }
        self.ops
    }

    /// Reads one subscribed connection until it ends, the subscriber has stayed `stay`, or
    /// the run is over; acks what it holds every [`WS_TICK`]. Returns the frames delivered,
    /// why the connection ended and whether the subscriber ended it by choice; `position`
    /// follows the messages held with everything before them.
    async fn ws_session(
        &mut self,
        mut conn: Connection,
        index: usize,
        node: usize,
        topic: &str,
        stay: Duration,
        position: &mut u64,
    ) -> (Vec<Frame>, String, bool) {
        let leave_at = Instant::now() + stay;
        let mut frames = Vec::new();
        let mut heard = Instant::now();
        // The ack waiting for its answer.
        let mut pending: Option<PendingAck> = None;
        let mut acked_to = 0u64;
        let mut tick = tokio::time::interval(WS_TICK);
        let (ended, by_client) = loop {
            let incoming = tokio::select! {
                incoming = conn.next() => incoming,
                _ = tick.tick() => {
                    if !self.running() {
                        break ("run over".to_string(), true);
                    }
                    if Instant::now() >= leave_at {
                        break (format!("moved on after {} ms", stay.as_millis()), true);
                    }
                    if heard.elapsed() > WS_SILENCE {
                        break (format!("nothing heard for {} s", WS_SILENCE.as_secs()), false);
                    }
                    if pending.as_ref().is_some_and(|a| a.sent.elapsed() > WS_ACK_TIMEOUT) {
                        break (format!("ack unanswered for {} s", WS_ACK_TIMEOUT.as_secs()), false);
                    }
                    let sent = if pending.is_none() && *position > acked_to {
                        pending = Some(PendingAck {
                            seq: *position,
                            sent: Instant::now(),
                            invoke_us: self.shared.clock.now_us(),
                            invoke_wall_ms: Clock::wall_ms(),
                        });
                        conn.ack(*position).await
                    } else {
                        conn.ping().await
                    };
                    if let Err(e) = sent {
                        break (e, false);
                    }
                    continue;
                }
            };
            heard = Instant::now();
            match incoming {
                Incoming::Event { seq, id } => {
                    frames.push(Frame {
                        seq,
                        id,
                        at_us: self.shared.clock.now_us(),
                    });
                    if seq == *position + 1 {
                        *position = seq;
                    }
                }
                Incoming::Alive => {}
                Incoming::Acked { cursor } => {
                    if let Some(ack) = pending.take() {
                        acked_to = ack.seq;
                        let outcome = Outcome::Ok(Answer::Acked { cursor });
                        self.ws_ack(index, node, topic, ack, outcome);
                    }
                }
                Incoming::Refused(why) => {
                    if let Some(ack) = pending.take() {
                        self.ws_ack(index, node, topic, ack, Outcome::Fail(why.clone()));
                    }
                    // A refused ack: this node cannot reach the topic's leader; try another.
                    break (format!("refused: {why}"), false);
                }
                Incoming::Ended(why) => break (why, false),
            }
        };
        if let Some(ack) = pending.take() {
            self.ws_ack(index, node, topic, ack, Outcome::Unknown(ended.clone()));
        }
        conn.close().await;
        (frames, ended, by_client)
    }

    /// Records `ack` of WebSocket subscriber `index`, answered (or given up) now.
    fn ws_ack(
        &mut self,
        index: usize,
        node: usize,
        topic: &str,
        ack: PendingAck,
        outcome: Outcome,
    ) {
        self.ops.push(Op {
            client: self.id,
            node,
            call: Call::StreamAck {
                topic: topic.to_string(),
                subscriber: index,
                seq: ack.seq,
            },
            invoke_us: ack.invoke_us,
            complete_us: self.shared.clock.now_us(),
            invoke_wall_ms: ack.invoke_wall_ms,
            outcome,
        });
    }

    /// Creates, claims and finishes tasks until the deadline, as agent `chaos-worker-<id>`.
    pub async fn task_worker(mut self) -> Vec<Op> {
        let agent = format!("chaos-worker-{}", self.id);
        while self.running() {
            let pool: Vec<String> = self.shared.tasks.lock().expect("task pool").clone();
            if pool.is_empty() || self.rng.random_bool(0.2) {
                let title = format!("chaos task {}", self.next_id());
                let call = Call::TaskCreate {
                    title: title.clone(),
                };
                let outcome = self
                    .record(
                        call,
                        Method::POST,
                        &["v1", "tasks"],
                        Some(json!({ "title": title })),
                        task,
                    )
                    .await;
                if let Outcome::Ok(Answer::Task(state)) = outcome {
                    let mut tasks = self.shared.tasks.lock().expect("task pool");
                    tasks.push(state.id);
                    let excess = tasks.len().saturating_sub(TASK_POOL);
                    tasks.drain(..excess);
                }
                self.think().await;
                continue;
            }
            let id = pool[self.rng.random_range(0..pool.len())].clone();
            let lease_secs = self.rng.random_range(1..=3);
            let call = Call::TaskClaim {
                task: id.clone(),
                agent: agent.clone(),
                lease_secs,
            };
            let body = json!({ "agent": agent, "lease_secs": lease_secs });
            let outcome = self
                .record(
                    call,
                    Method::POST,
                    &["v1", "tasks", &id, "claim"],
                    Some(body),
                    task,
                )
                .await;
            let Outcome::Ok(Answer::Task(state)) = outcome else {
                self.think().await;
                continue;
            };
            let Some(token) = state.fencing_token else {
                continue;
            };
            self.think().await;
            let choice = self.rng.random_range(0..100);
            if (60..75).contains(&choice) {
                self.update(&id, &agent, token, None, Some(2)).await;
            }
            match choice {
                0..45 | 60..75 => {
                    self.update(&id, &agent, token, Some("done"), None).await;
                }
                45..60 => {
                    self.update(&id, &agent, token, Some("open"), None).await;
                }
                // Abandoned: the lease runs out.
                _ => {}
            }
            self.think().await;
        }
        self.ops
    }

    async fn update(
        &mut self,
        id: &str,
        agent: &str,
        token: u64,
        status: Option<&str>,
        lease_secs: Option<u64>,
    ) -> Outcome {
        let call = Call::TaskUpdate {
            task: id.to_string(),
            agent: agent.to_string(),
            token,
            status: status.map(str::to_string),
            lease_secs,
        };
        let mut body = json!({ "agent": agent, "fencing_token": token });
        if let Some(status) = status {
            body["status"] = json!(status);
        }
        if let Some(secs) = lease_secs {
            body["lease_secs"] = json!(secs);
        }
        self.record(call, Method::PATCH, &["v1", "tasks", id], Some(body), task)
            .await
    }
}

/// A context entry's version and run-unique value.
fn entry(v: Value) -> Answer {
    Answer::Entry {
        version: v["version"].as_u64().unwrap_or(0),
        value: v["value"]["w"].as_u64(),
    }
}

/// A page of messages as `(seq, id)`.
fn page(v: Value) -> Answer {
    let items = v["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|m| {
                    (
                        m["seq"].as_u64().unwrap_or(0),
                        m["body"]["id"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Answer::Page {
        items,
        last_seq: v["last_seq"].as_u64().unwrap_or(0),
    }
}

/// A task's fields the checkers use.
fn task(v: Value) -> Answer {
    Answer::Task(TaskState {
        id: v["id"].as_str().unwrap_or_default().to_string(),
        status: v["status"].as_str().unwrap_or_default().to_string(),
        claimed_by: v["claimed_by"].as_str().map(str::to_string),
        fencing_token: v["fencing_token"].as_u64(),
        lease_expires_at: v["lease_expires_at"].as_u64(),
        updated_at: v["updated_at"].as_u64().unwrap_or(0),
    })
}
