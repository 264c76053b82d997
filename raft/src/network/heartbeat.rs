//! Coalesces heartbeats of all groups bound for the same peer into one `Heartbeat` RPC.
//!
//! Leaders' periodic heartbeats are fired for all groups at once by one node-wide tick (see
//! [`crate::groups`]). Each peer has a bounded queue and a sender task: it takes the first
//! heartbeat, yields to the scheduler while more keep arriving (the other groups of the same
//! tick), takes everything queued, and sends them in one call; heartbeats that arrive while a
//! call is in flight go together in the next. No timer is involved: a heartbeat that confirms
//! leadership for a linearizable read (read index) leaves at once instead of waiting out a
//! gathering window, which would add a timer tick (1 ms or more) to every such read. When the
//! queue is full the heartbeat fails at once as unreachable, and openraft retries it on its
//! next tick.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conclave_proto::peer::{GroupHeartbeat, HeartbeatBatch, RaftReply};
use tokio::sync::{mpsc, oneshot};

use crate::network::RaftTransport;
use crate::types::GroupId;

/// Heartbeats queued per peer before new ones are refused.
const QUEUE_CAPACITY: usize = 4096;
/// Scheduler yields after which a batch leaves although heartbeats are still arriving.
const MAX_GATHER_YIELDS: usize = 32;
/// How long one batch may take; a stalled peer must not block later batches.
const BATCH_TIMEOUT: Duration = Duration::from_secs(2);

struct Pending {
    group: GroupId,
    payload: Vec<u8>,
    reply: oneshot::Sender<Result<RaftReply, String>>,
}

/// Per-peer heartbeat batching.
#[derive(Clone)]
pub struct HeartbeatCoalescer {
    transport: Arc<dyn RaftTransport>,
    queues: Arc<Mutex<HashMap<String, mpsc::Sender<Pending>>>>,
    stats: Arc<HeartbeatStats>,
}

/// How well heartbeats coalesce: `items / batches` heartbeats travel per RPC.
#[derive(Debug, Default)]
pub struct HeartbeatStats {
    /// `Heartbeat` RPCs sent.
    pub batches: AtomicU64,
    /// Group heartbeats carried by them.
    pub items: AtomicU64,
}

impl HeartbeatCoalescer {
    /// Batching over `transport`.
    pub fn new(transport: Arc<dyn RaftTransport>) -> Self {
        Self {
            transport,
            queues: Arc::default(),
            stats: Arc::default(),
        }
    }

    /// Counters of batches and heartbeats sent so far.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.stats.batches.load(Ordering::Relaxed),
            self.stats.items.load(Ordering::Relaxed),
        )
    }

    /// Sends one group's encoded heartbeat to `addr` as part of a batch; returns its reply.
    pub async fn send(
        &self,
        addr: &str,
        group: GroupId,
        payload: Vec<u8>,
    ) -> Result<RaftReply, String> {
        let queue = {
            let mut queues = self.queues.lock().expect("heartbeat lock");
            queues
                .entry(addr.to_string())
                .or_insert_with(|| self.spawn_sender(addr.to_string()))
                .clone()
        };
        let (tx, rx) = oneshot::channel();
        queue
            .try_send(Pending {
                group,
                payload,
                reply: tx,
            })
            .map_err(|_| format!("heartbeat queue to {addr} is full"))?;
        rx.await
            .map_err(|_| "heartbeat sender stopped".to_string())?
    }

    fn spawn_sender(&self, addr: String) -> mpsc::Sender<Pending> {
        let (tx, mut rx) = mpsc::channel::<Pending>(QUEUE_CAPACITY);
        let transport = self.transport.clone();
        let stats = self.stats.clone();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                gather(&mut rx, &mut batch).await;
                stats.batches.fetch_add(1, Ordering::Relaxed);
                stats.items.fetch_add(batch.len() as u64, Ordering::Relaxed);
                let items = batch
                    .iter()
                    .map(|p| GroupHeartbeat {
                        group: p.group,
                        payload: p.payload.clone(),
                    })
                    .collect();
                let result = match tokio::time::timeout(
                    BATCH_TIMEOUT,
                    transport.heartbeat(&addr, HeartbeatBatch { items }),
                )
                .await
                {
                    Ok(r) => r.map(|r| r.items).map_err(|e| e.to_string()),
                    Err(_) => Err(format!("heartbeat batch to {addr} timed out")),
                };
                match result {
                    Ok(replies) if replies.len() == batch.len() => {
                        for (p, r) in batch.into_iter().zip(replies) {
                            let _ = p.reply.send(Ok(r));
                        }
                    }
                    Ok(_) => {
                        for p in batch {
                            let _ = p.reply.send(Err("heartbeat reply count mismatch".into()));
                        }
                    }
                    Err(e) => {
                        for p in batch {
                            let _ = p.reply.send(Err(e.clone()));
                        }
                    }
                }
            }
        });
        tx
    }
}

/// Takes into `batch` the heartbeats queued now, yielding to the scheduler while more keep
/// arriving: one tick fires every group's heartbeat within microseconds, from as many tasks.
async fn gather(rx: &mut mpsc::Receiver<Pending>, batch: &mut Vec<Pending>) {
    let mut quiet_yields = 0;
    for _ in 0..MAX_GATHER_YIELDS {
        let before = batch.len();
        while let Ok(p) = rx.try_recv() {
            batch.push(p);
        }
        quiet_yields = if batch.len() == before {
            quiet_yields + 1
        } else {
            0
        };
        if quiet_yields == 2 {
            return;
        }
        tokio::task::yield_now().await;
    }
}
