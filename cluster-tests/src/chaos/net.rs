//! Fault-injecting TCP proxies on every node's peer traffic, so a chaos run can partition the
//! network both ways and one way.
//!
//! Each node advertises (`--advertise`) the address of a proxy this harness owns, in front of
//! its real peer port, and makes its own outgoing peer connections from a loopback address of
//! its own (`--peer-source-addr 127.0.0.<2 + index>`). A proxy therefore knows, from the source
//! address of every connection it accepts, which node is calling, and forwards or drops each
//! direction of the traffic per directed link `(from, to)`:
//!
//! - bytes travelling `from → to` on a blocked link are read and discarded, like packets lost in
//!   the network (the sender's TCP does not notice; its RPCs time out), and the connection is
//!   marked as having lost bytes;
//! - when a block is lifted, every connection that lost bytes is closed, as a long partition
//!   ends TCP connections, so the nodes reconnect on clean streams.
//!
//! Blocking `a → b` affects both the connections `a` opens to `b` (its requests vanish) and those
//! `b` opens to `a` (the replies vanish), which is what a one-way packet loss does to RPCs.
//! Connections from addresses that are no node's (the harness, the CLI) are never blocked.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::debug;

/// How long a proxy waits to reach a node's real peer port before dropping the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes read at once from either side of a proxied connection.
const BUFFER_BYTES: usize = 64 * 1024;

/// What a node is started with so its peer traffic goes through the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLink {
    /// The proxy address the node advertises to its peers.
    pub advertise: SocketAddr,
    /// The loopback address the node's outgoing peer connections come from.
    pub source_ip: IpAddr,
}

#[derive(Default)]
struct State {
    /// Per node index: its link and, once known, its real peer address.
    nodes: BTreeMap<usize, (NodeLink, Option<SocketAddr>)>,
    /// Directed links `(from, to)` whose bytes are dropped.
    blocked: BTreeSet<(usize, usize)>,
}

struct Inner {
    state: Mutex<State>,
    /// Bumped on every change of the blocked set; connections re-check themselves.
    generation: watch::Sender<u64>,
}

/// The proxies of one cluster; cheap to clone. Proxies live as long as the runtime that
/// started them (they are tasks of it) and stop when it stops.
#[derive(Clone)]
pub struct Network {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.state.lock().expect("network lock");
        f.debug_struct("Network")
            .field("nodes", &state.nodes.len())
            .field("blocked", &state.blocked)
            .finish()
    }
}

impl Default for Network {
    fn default() -> Self {
        Self::new()
    }
}

impl Network {
    /// A network with no nodes and every link open.
    pub fn new() -> Self {
        Network {
            inner: Arc::new(Inner {
                state: Mutex::default(),
                generation: watch::channel(0).0,
            }),
        }
    }

    /// The loopback source address of node `index`.
    pub fn source_ip(index: usize) -> IpAddr {
        let last = u8::try_from(index + 2).expect("at most 253 nodes");
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    /// Binds the proxy of node `index` and starts serving it; connections wait until
    /// [`Network::set_target`] names the node's real peer address. Calling it again for the
    /// same index returns the existing link.
    pub async fn add_node(&self, index: usize) -> anyhow::Result<NodeLink> {
        if let Some((link, _)) = self
            .inner
            .state
            .lock()
            .expect("network lock")
            .nodes
            .get(&index)
        {
            return Ok(link.clone());
        }
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind a peer proxy")?;
        let link = NodeLink {
            advertise: listener.local_addr()?,
            source_ip: Self::source_ip(index),
        };
        self.inner
            .state
            .lock()
            .expect("network lock")
            .nodes
            .insert(index, (link.clone(), None));
        tokio::spawn(self.clone().serve(index, listener));
        Ok(link)
    }

    /// Points node `index`'s proxy at its real peer address.
    pub fn set_target(&self, index: usize, addr: SocketAddr) {
        if let Some(node) = self
            .inner
            .state
            .lock()
            .expect("network lock")
            .nodes
            .get_mut(&index)
        {
            node.1 = Some(addr);
        }
        self.bump();
    }

    /// Drops every byte travelling from node `from` to node `to` until healed.
    pub fn block(&self, from: usize, to: usize) {
        if from != to {
            self.inner
                .state
                .lock()
                .expect("network lock")
                .blocked
                .insert((from, to));
            self.bump();
        }
    }

    /// Cuts every link between the `side` nodes and the others, both ways.
    pub fn partition(&self, side: &[usize], all: &[usize]) {
        for &a in side {
            for &b in all.iter().filter(|b| !side.contains(b)) {
                self.block(a, b);
                self.block(b, a);
            }
        }
    }

    /// Opens every link; connections that lost bytes are closed.
    pub fn heal(&self) {
        self.inner
            .state
            .lock()
            .expect("network lock")
            .blocked
            .clear();
        self.bump();
    }

    /// The directed links currently blocked.
    pub fn blocked(&self) -> Vec<(usize, usize)> {
        let state = self.inner.state.lock().expect("network lock");
        state.blocked.iter().copied().collect()
    }

    fn bump(&self) {
        self.inner.generation.send_modify(|g| *g += 1);
    }

    fn is_blocked(&self, from: Option<usize>, to: Option<usize>) -> bool {
        match (from, to) {
            (Some(from), Some(to)) => self
                .inner
                .state
                .lock()
                .expect("network lock")
                .blocked
                .contains(&(from, to)),
            _ => false,
        }
    }

    fn node_of(&self, ip: IpAddr) -> Option<usize> {
        let state = self.inner.state.lock().expect("network lock");
        state
            .nodes
            .iter()
            .find(|(_, (link, _))| link.source_ip == ip)
            .map(|(&index, _)| index)
    }

    fn target(&self, index: usize) -> Option<SocketAddr> {
        let state = self.inner.state.lock().expect("network lock");
        state.nodes.get(&index).and_then(|(_, addr)| *addr)
    }

    /// Accepts connections for node `index` forever.
    async fn serve(self, index: usize, listener: TcpListener) {
        loop {
            let Ok((client, peer)) = listener.accept().await else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let network = self.clone();
            tokio::spawn(async move {
                let from = network.node_of(peer.ip());
                if let Err(error) = network.proxy(client, from, index).await {
                    debug!(?from, to = index, error = %error, "proxied connection ended");
                }
            });
        }
    }

    /// Carries one connection from `from` (a node, or `None`) to node `to`.
    async fn proxy(&self, client: TcpStream, from: Option<usize>, to: usize) -> anyhow::Result<()> {
        let mut generation = self.inner.generation.subscribe();
        let target = loop {
            if let Some(target) = self.target(to) {
                break target;
            }
            generation.changed().await?;
        };
        let upstream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target))
            .await
            .context("connect timed out")??;
        upstream.set_nodelay(true)?;
        let (mut client_read, mut client_write) = client.into_split();
        let (mut upstream_read, mut upstream_write) = upstream.into_split();
        let mut up = vec![0u8; BUFFER_BYTES];
        let mut down = vec![0u8; BUFFER_BYTES];
        let (mut up_open, mut down_open) = (true, true);
        let mut lost_bytes = false;
        let to = Some(to);
        while up_open || down_open {
            tokio::select! {
                read = client_read.read(&mut up), if up_open => {
                    let n = read?;
                    if n == 0 {
                        up_open = false;
                        let _ = upstream_write.shutdown().await;
                    } else if self.is_blocked(from, to) {
                        lost_bytes = true;
                    } else {
                        upstream_write.write_all(&up[..n]).await?;
                    }
                }
                read = upstream_read.read(&mut down), if down_open => {
                    let n = read?;
                    if n == 0 {
                        down_open = false;
                        let _ = client_write.shutdown().await;
                    } else if self.is_blocked(to, from) {
                        lost_bytes = true;
                    } else {
                        client_write.write_all(&down[..n]).await?;
                    }
                }
                changed = generation.changed() => {
                    changed?;
                    let cut = self.is_blocked(from, to) || self.is_blocked(to, from);
                    if lost_bytes && !cut {
                        // The stream lost bytes: end it so both sides start over cleanly.
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on a fresh port.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    loop {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if socket.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    /// Connects to `to`'s proxy as node `from` would.
    async fn connect_as(link: &NodeLink, from: usize) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::new(Network::source_ip(from), 0))
            .unwrap();
        socket.connect(link.advertise).await.unwrap()
    }

    async fn round_trip(stream: &mut TcpStream, text: &[u8]) -> Option<Vec<u8>> {
        stream.write_all(text).await.ok()?;
        let mut buf = vec![0u8; text.len()];
        match tokio::time::timeout(Duration::from_millis(300), stream.read_exact(&mut buf)).await {
            Ok(Ok(_)) => Some(buf),
            _ => None,
        }
    }

    #[tokio::test]
    async fn blocked_links_drop_bytes_and_healing_closes_damaged_connections() {
        let network = Network::new();
        let target = echo_server().await;
        network.add_node(0).await.unwrap();
        let link = network.add_node(1).await.unwrap();
        network.set_target(1, target);

        // Open: node 0 reaches node 1 and hears the echo.
        let mut stream = connect_as(&link, 0).await;
        assert_eq!(
            round_trip(&mut stream, b"ping").await.as_deref(),
            Some(&b"ping"[..])
        );

        // One way, 1 → 0 cut: the request arrives, the echo is lost.
        network.block(1, 0);
        assert_eq!(round_trip(&mut stream, b"lost").await, None);

        // Healing closes the connection that lost bytes; a new one works.
        network.heal();
        let mut buf = [0u8; 8];
        let closed = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        let mut fresh = connect_as(&link, 0).await;
        assert_eq!(
            round_trip(&mut fresh, b"again").await.as_deref(),
            Some(&b"again"[..])
        );

        // The other way, 0 → 1 cut: nothing arrives.
        network.block(0, 1);
        assert_eq!(round_trip(&mut fresh, b"gone").await, None);
        assert_eq!(network.blocked(), vec![(0, 1)]);
    }

    #[tokio::test]
    async fn strangers_and_uncut_links_pass() {
        let network = Network::new();
        let target = echo_server().await;
        let link = network.add_node(0).await.unwrap();
        network.add_node(1).await.unwrap();
        network.add_node(2).await.unwrap();
        network.set_target(0, target);
        network.partition(&[1], &[0, 1, 2]);
        // Node 2 is on node 0's side; a connection from 127.0.0.1 is no node's.
        let mut from_two = connect_as(&link, 2).await;
        assert!(round_trip(&mut from_two, b"x").await.is_some());
        let mut stranger = TcpStream::connect(link.advertise).await.unwrap();
        assert!(round_trip(&mut stranger, b"y").await.is_some());
        let mut from_one = connect_as(&link, 1).await;
        assert!(round_trip(&mut from_one, b"z").await.is_none());
    }
}
