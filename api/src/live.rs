//! Limits of live event connections (the WebSocket at `/ws` and the SSE endpoints) and the
//! node's connection slots, shared by both transports.
//!
//! Every quantity a client can grow on a live connection is bounded here: connections per
//! node, subscriptions per connection, frames waiting to be sent per connection (a client that
//! falls that far behind is disconnected) and the size of a frame it may send.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Limits and timings of live connections.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Live connections (WebSocket and SSE together) one node holds at once; more are refused
    /// with 503.
    pub max_connections: usize,
    /// Subscriptions one WebSocket connection may hold at once.
    pub max_subscriptions: usize,
    /// Frames queued for sending on one connection; a client that lets more pile up is
    /// disconnected (WebSocket close code 4429, or a final `error` event on SSE).
    pub send_queue: usize,
    /// How long a new WebSocket may take to send its `auth` frame.
    pub auth_timeout: Duration,
    /// How often the server pings an idle connection (and re-checks its key).
    pub ping_interval: Duration,
    /// A WebSocket from which nothing (not even a pong) arrives for this long is closed.
    pub idle_timeout: Duration,
    /// Largest frame a WebSocket client may send, bytes.
    pub max_frame_bytes: usize,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_subscriptions: 64,
            send_queue: 1024,
            auth_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            max_frame_bytes: 64 * 1024,
        }
    }
}

/// The node's live connections: its settings and the slots they take.
#[derive(Clone)]
pub struct Streams {
    /// The limits.
    pub settings: StreamSettings,
    slots: Arc<Semaphore>,
}

impl Streams {
    /// Live connections limited by `settings`.
    pub fn new(settings: StreamSettings) -> Self {
        let slots = Arc::new(Semaphore::new(settings.max_connections));
        Self { settings, slots }
    }

    /// A slot for one more connection, held for its lifetime; `None` when every slot is taken.
    pub fn try_connect(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }
}

impl Default for Streams {
    fn default() -> Self {
        Self::new(StreamSettings::default())
    }
}
