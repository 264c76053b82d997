//! Live event streams: serving a shard's sequenced stream from this node's replica, and
//! following one from any node across leader changes.
//!
//! [`serve_local`] reads a stream ([`StreamKey`]) from this node's replica by sequence, then
//! waits on the shard's applied index and reads again: what it sends is always a prefix of the
//! replicated stream, in order, with no gap. [`follow`] is what the node holding a client's
//! WebSocket or SSE connection runs: it attaches to the shard's leader (locally, or over the
//! peer `Watch` rpc; while no leader is known, to any replica, moving to the leader once one
//! is known), and when that source fails (the node died, lost the shard, or the
//! connection broke) it re-resolves the leader and attaches again from the last delivered
//! sequence + 1, skipping anything at or below it. The client therefore sees every item once,
//! in order, across any number of failovers. Only a deterministic answer (the stream's entity
//! does not exist) ends a follow; everything else is retried with a capped backoff for as long
//! as the consumer listens.
//!
//! Memory is bounded: both sides send into bounded channels and wait when they are full, so a
//! slow consumer slows its own follow and nothing else (the connection layer decides when a
//! consumer is too slow and drops it).

use std::sync::Arc;
use std::time::Duration;

use conclave_proto::peer::{StreamKind, WatchEvent, WatchRequest};
use conclave_raft::error::{CoreError, ErrorCode};
use conclave_raft::shard::{stream, StreamItem, StreamKey};
use conclave_raft::storage::GroupKv;
use conclave_raft::{GroupId, Groups, NodeId};
use tokio::sync::mpsc;

use crate::router::Router;

/// Items read from the store per page while catching up.
pub const WATCH_PAGE: usize = 256;
/// How often a served stream checks that this node still hosts its shard while idle.
const HOSTED_CHECK: Duration = Duration::from_secs(1);
/// How often a followed stream checks that its source is still the shard's leader (it moves
/// to the leader when not: live events follow the owning actor).
const LEADER_CHECK: Duration = Duration::from_secs(1);
/// Longest pause between two attempts to re-attach a followed stream.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What a followed or served stream yields: items in order, or the error that ended it.
pub type StreamRx = mpsc::Receiver<Result<StreamItem, CoreError>>;

/// The watch request for `key`'s stream on `shard` from `from`.
pub fn to_request(shard: GroupId, key: &StreamKey, from: u64) -> WatchRequest {
    let (kind, ws, name) = match key {
        StreamKey::Topic { ws, topic } => (StreamKind::Topic, ws, topic.as_str()),
        StreamKey::Inbox { ws, agent } => (StreamKind::Inbox, ws, agent.as_str()),
        StreamKey::Task { ws, id } => (StreamKind::Task, ws, id.as_str()),
        StreamKey::Tasks { ws } => (StreamKind::Tasks, ws, ""),
        StreamKey::Agents { ws } => (StreamKind::Agents, ws, ""),
    };
    WatchRequest {
        shard,
        workspace: ws.clone(),
        name: name.to_string(),
        from_seq: from,
        kind: kind as i32,
    }
}

/// The stream a watch request names.
pub fn from_request(r: &WatchRequest) -> Result<StreamKey, CoreError> {
    let ws = r.workspace.clone();
    let name = r.name.clone();
    Ok(
        match StreamKind::try_from(r.kind)
            .map_err(|_| CoreError::bad_request(format!("unknown stream kind {}", r.kind)))?
        {
            StreamKind::Topic => StreamKey::Topic { ws, topic: name },
            StreamKind::Inbox => StreamKey::Inbox { ws, agent: name },
            StreamKind::Task => StreamKey::Task { ws, id: name },
            StreamKind::Tasks => StreamKey::Tasks { ws },
            StreamKind::Agents => StreamKey::Agents { ws },
        },
    )
}

/// The gRPC status of a core error that ends a served stream.
pub fn status_of(e: &CoreError) -> tonic::Status {
    match e.code {
        ErrorCode::NotFound => tonic::Status::not_found(e.message.clone()),
        ErrorCode::BadRequest => tonic::Status::invalid_argument(e.message.clone()),
        _ => tonic::Status::unavailable(e.message.clone()),
    }
}

/// Serves `key`'s stream on `shard` from this node's replica, from sequence `from` on, into a
/// channel of `buffer` items (a full channel makes the reader wait). Ends with an error when
/// the stream's entity does not exist or this node stops hosting the shard, and silently when
/// the receiver is dropped.
pub fn serve_local(
    groups: Groups,
    shard: GroupId,
    key: StreamKey,
    from: u64,
    buffer: usize,
) -> Result<StreamRx, CoreError> {
    let applied = groups
        .applied_watch(shard)
        .ok_or_else(|| CoreError::unavailable(format!("shard {shard} is not hosted here")))?;
    let (tx, rx) = mpsc::channel(buffer.max(1));
    tokio::spawn(async move {
        let mut changes = applied.subscribe();
        drop(applied);
        let mut next = from.max(1);
        loop {
            let page = match stream::read(
                &GroupKv::new(groups.db(), shard),
                &key,
                next - 1,
                WATCH_PAGE,
            ) {
                Ok(page) => page,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let full = page.len() == WATCH_PAGE;
            for item in page {
                next = item.seq() + 1;
                if tx.send(Ok(item)).await.is_err() {
                    return;
                }
            }
            if full {
                continue;
            }
            // Wait for the next apply, checking now and then that the shard is still here (a
            // replica that lost the shard would otherwise stall its watchers forever).
            loop {
                tokio::select! {
                    changed = tokio::time::timeout(HOSTED_CHECK, changes.changed()) => match changed {
                        Ok(Ok(())) => break,
                        Ok(Err(_)) => {
                            let _ = tx.send(Err(gone(shard))).await;
                            return;
                        }
                        Err(_) => {
                            if groups.applied_watch(shard).is_none() {
                                let _ = tx.send(Err(gone(shard))).await;
                                return;
                            }
                        }
                    },
                    _ = tx.closed() => return,
                }
            }
        }
    });
    Ok(rx)
}

fn gone(shard: GroupId) -> CoreError {
    CoreError::unavailable(format!("shard {shard} is no longer hosted here"))
}

/// Follows `key`'s stream on `shard` from sequence `from` on, wherever the shard is led, into a
/// channel of `buffer` items. Survives leader changes and node failures with no gap and no
/// repeat (see the module doc); ends with an error only for a deterministic refusal, and
/// silently when the receiver is dropped.
pub fn follow(
    router: Arc<Router>,
    shard: GroupId,
    key: StreamKey,
    from: u64,
    buffer: usize,
) -> StreamRx {
    let (tx, rx) = mpsc::channel(buffer.max(1));
    tokio::spawn(async move {
        let mut next = from.max(1);
        let mut failed: Option<NodeId> = None;
        let mut backoff = Duration::from_millis(50);
        let mut attempt = 0usize;
        loop {
            if tx.is_closed() {
                return;
            }
            let target = pick_source(&router, shard, failed, attempt);
            attempt += 1;
            let outcome = match target {
                Some(node) => attach(&router, node, shard, &key, &mut next, &tx).await,
                None => Err(CoreError::unavailable(format!(
                    "no replica of shard {shard} known"
                ))),
            };
            match outcome {
                Ok(Attached::ConsumerGone) => return,
                Ok(Attached::LeaderElsewhere) => {
                    // Move to the shard's leader, from where this source left off.
                    failed = None;
                    backoff = Duration::from_millis(50);
                    continue;
                }
                Ok(Attached::Delivered) => {
                    // The source delivered before it failed: try the leader again at once.
                    failed = target;
                    backoff = Duration::from_millis(50);
                    continue;
                }
                // A refusal is final when the leader gave it (a lagging follower may not have
                // applied the entity's creation yet).
                Err(e)
                    if e.code == ErrorCode::BadRequest
                        || (e.code == ErrorCode::NotFound
                            && target.is_some()
                            && router.leader_of(shard) == target) =>
                {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                Err(e) => {
                    tracing::debug!(shard, ?target, next, error = %e, "watch source failed; re-attaching");
                    failed = target;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = tx.closed() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    });
    rx
}

/// How an attachment to one source ended without a deterministic error.
enum Attached {
    /// The consumer went away.
    ConsumerGone,
    /// The source ended or failed after delivering at least one item.
    Delivered,
    /// The source is a replica other than the shard's leader, now known elsewhere.
    LeaderElsewhere,
}

/// The node to watch from: the shard's leader as this node knows it, unless that is the node
/// that just failed; otherwise its replicas in turn (any replica serves a watch).
fn pick_source(
    router: &Router,
    shard: GroupId,
    failed: Option<NodeId>,
    attempt: usize,
) -> Option<NodeId> {
    if let Some(l) = router.leader_of(shard).filter(|l| Some(*l) != failed) {
        return Some(l);
    }
    let replicas: Vec<NodeId> = {
        let meta = router.groups().meta().read().expect("meta lock");
        meta.shards
            .get(&shard)
            .map(|s| s.replicas.iter().copied().collect())
            .unwrap_or_default()
    };
    let others: Vec<NodeId> = replicas
        .iter()
        .copied()
        .filter(|r| Some(*r) != failed)
        .collect();
    let pool = if others.is_empty() { replicas } else { others };
    (!pool.is_empty()).then(|| pool[attempt % pool.len()])
}

/// Streams from `node` into `tx` from `*next` on, advancing `*next` past each item handed
/// over; items at or below what was already delivered are skipped.
async fn attach(
    router: &Router,
    node: NodeId,
    shard: GroupId,
    key: &StreamKey,
    next: &mut u64,
    tx: &mpsc::Sender<Result<StreamItem, CoreError>>,
) -> Result<Attached, CoreError> {
    let start = *next;
    let mut check = tokio::time::interval(LEADER_CHECK);
    check.reset();
    let leader_elsewhere = || router.leader_of(shard).is_some_and(|l| l != node);
    if node == router.groups().node_id() {
        let mut rx = serve_local(
            router.groups().clone(),
            shard,
            key.clone(),
            start,
            WATCH_PAGE,
        )?;
        loop {
            let item = tokio::select! {
                item = rx.recv() => item,
                _ = tx.closed() => return Ok(Attached::ConsumerGone),
                _ = check.tick() => if leader_elsewhere() {
                    return Ok(Attached::LeaderElsewhere)
                } else {
                    continue
                },
            };
            match item {
                Some(Ok(item)) => {
                    if let Some(item) = fresh(item, next) {
                        if tx.send(Ok(item)).await.is_err() {
                            return Ok(Attached::ConsumerGone);
                        }
                    }
                }
                Some(Err(e)) => return ended(e, start, *next),
                None => return ended(gone(shard), start, *next),
            }
        }
    }
    let addr = {
        let meta = router.groups().meta().read().expect("meta lock");
        meta.nodes.get(&node).map(|n| n.info.peer_addr.clone())
    }
    .ok_or_else(|| CoreError::unavailable(format!("node {node} has no known address")))?;
    let mut client = router
        .groups()
        .peers()
        .client(&addr)
        .map_err(|e| CoreError::unavailable(e.to_string()))?;
    let mut events = tokio::select! {
        opened = client.watch(to_request(shard, key, start)) => opened.map_err(core_of)?.into_inner(),
        _ = tx.closed() => return Ok(Attached::ConsumerGone),
    };
    loop {
        let event = tokio::select! {
            event = events.message() => event,
            _ = tx.closed() => return Ok(Attached::ConsumerGone),
            _ = check.tick() => if leader_elsewhere() {
                return Ok(Attached::LeaderElsewhere)
            } else {
                continue
            },
        };
        match event {
            Ok(Some(WatchEvent { event, .. })) => {
                let item = StreamItem::decode_payload(key, &event).map_err(|e| {
                    CoreError::unavailable(format!("malformed watch event from node {node}: {e}"))
                })?;
                if let Some(item) = fresh(item, next) {
                    if tx.send(Ok(item)).await.is_err() {
                        return Ok(Attached::ConsumerGone);
                    }
                }
            }
            Ok(None) => return ended(CoreError::unavailable("watch ended"), start, *next),
            Err(status) => return ended(core_of(status), start, *next),
        }
    }
}

/// `item` unless it was delivered already; advances `*next` past it.
fn fresh(item: StreamItem, next: &mut u64) -> Option<StreamItem> {
    (item.seq() >= *next).then(|| {
        *next = item.seq() + 1;
        item
    })
}

/// The outcome of a source that ended with `e` after delivering from `start` up to `next`.
fn ended(e: CoreError, start: u64, next: u64) -> Result<Attached, CoreError> {
    if next > start && !matches!(e.code, ErrorCode::NotFound | ErrorCode::BadRequest) {
        Ok(Attached::Delivered)
    } else {
        Err(e)
    }
}

/// The core error a watch's gRPC status stands for.
fn core_of(status: tonic::Status) -> CoreError {
    match status.code() {
        tonic::Code::NotFound => CoreError::not_found(status.message()),
        tonic::Code::InvalidArgument => CoreError::bad_request(status.message()),
        _ => CoreError::unavailable(status.to_string()),
    }
}
