//! Connections to peer nodes: one lazily connected HTTP/2 channel per peer address, shared by
//! every group and by request forwarding; every call carries the cluster secret.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conclave_proto::peer::peer_client;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// Metadata header carrying the cluster secret on every peer call.
pub const SECRET_HEADER: &str = "x-conclave-secret";

/// The message of the `Unavailable` status a node answers every peer call with while it starts
/// (before it can route): the call ran nothing, so a caller may send it again.
pub const NODE_STARTING: &str = "node is starting";

/// Adds the cluster secret to outgoing calls.
#[derive(Clone)]
pub struct SecretInterceptor {
    secret: MetadataValue<tonic::metadata::Ascii>,
}

impl tonic::service::Interceptor for SecretInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut()
            .insert(SECRET_HEADER, self.secret.clone());
        Ok(req)
    }
}

/// A client of one peer's `Peer` service.
pub type PeerClient = peer_client::PeerClient<InterceptedService<Channel, SecretInterceptor>>;

/// The node's connections to its peers, by address.
#[derive(Clone)]
pub struct Peers {
    interceptor: SecretInterceptor,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// The local IP outgoing connections are made from; `None` lets the OS choose.
    local_address: Option<IpAddr>,
}

impl Peers {
    /// Connections that authenticate with `secret`.
    pub fn new(secret: &str) -> Self {
        let secret = secret.parse().expect("cluster secret is printable ascii");
        Self {
            interceptor: SecretInterceptor { secret },
            channels: Arc::default(),
            local_address: None,
        }
    }

    /// Makes every outgoing connection from `ip` (a multi-homed host picks the interface its
    /// peer traffic leaves by); `None` lets the OS choose. Set before the first [`Peers::client`].
    pub fn with_local_address(mut self, ip: Option<IpAddr>) -> Self {
        self.local_address = ip;
        self
    }

    /// A client for the peer at `addr` (`host:port`), sharing that peer's one connection.
    pub fn client(&self, addr: &str) -> Result<PeerClient, tonic::transport::Error> {
        let channel = {
            let mut channels = self.channels.lock().expect("peers lock");
            match channels.get(addr) {
                Some(c) => c.clone(),
                None => {
                    let c = Endpoint::from_shared(format!("http://{addr}"))?
                        .connect_timeout(Duration::from_secs(1))
                        .tcp_nodelay(true)
                        .local_address(self.local_address)
                        .http2_keep_alive_interval(Duration::from_secs(5))
                        .keep_alive_timeout(Duration::from_secs(5))
                        .connect_lazy();
                    channels.insert(addr.to_string(), c.clone());
                    c
                }
            }
        };
        Ok(
            peer_client::PeerClient::with_interceptor(channel, self.interceptor.clone())
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
        )
    }
}
