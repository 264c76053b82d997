//! Starting a node: bind, learn or assign its id (bootstrap or join), start its Raft groups,
//! the router, the reconciler and the placement controller, then serve clients until SIGTERM.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use axum::serve::ListenerExt;
use conclave_actors::controller::{Controller, ControllerSettings};
use conclave_actors::router::RouterSettings;
use conclave_actors::{reconciler, GrpcForwarder, Router};
use conclave_api::auth::{hash_secret, new_secret};
use conclave_api::{AppState, Shared};
use conclave_proto::peer::peer_server::PeerServer;
use conclave_proto::peer::JoinRequest;
use conclave_raft::command::{Command, Proposal};
use conclave_raft::network::Peers;
use conclave_raft::storage::Db;
use conclave_raft::{GroupSettings, Groups, MetaCommand, NodeId, NodeInfo, META_GROUP};
use openraft::ServerState;
use rand::RngCore;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::identity::{self, AdminCredentials, Identity, NodeFile};
use crate::peer_service::{check_secret, NodeCtx, PeerService};

/// The workspace the first node creates.
const DEFAULT_WORKSPACE: &str = "default";

/// Runs a node until it is told to stop.
pub async fn run(config: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let dir = config.data_dir.canonicalize()?;
    let known = identity::read_identity(&dir)?;

    let api_listener = TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let peer_listener = TcpListener::bind(&config.peer_listen)
        .await
        .with_context(|| format!("binding {}", config.peer_listen))?;
    let api_addr = api_listener.local_addr()?.to_string();
    let peer_addr = peer_listener.local_addr()?.to_string();
    let info = NodeInfo {
        peer_addr: config
            .advertise
            .clone()
            .unwrap_or_else(|| peer_addr.clone()),
        api_addr: api_addr.clone(),
    };

    let secret = match (&known, &config.cluster_secret, &config.join) {
        (Some(id), _, _) => id.cluster_secret.clone(),
        (None, Some(s), _) => s.clone(),
        (None, None, Some(_)) => bail!("joining a cluster needs its --cluster-secret"),
        (None, None, None) => {
            let mut b = [0u8; 24];
            rand::rng().fill_bytes(&mut b);
            hex::encode(b)
        }
    };

    // The peer server comes up first (answering "starting") so a joining node is reachable as
    // soon as the cluster learns of it.
    let service = PeerService::default();
    let peer_server = tonic::transport::Server::builder()
        .add_service(tonic::service::interceptor::InterceptedService::new(
            PeerServer::new(service.clone())
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
            check_secret(secret.clone()),
        ))
        .serve_with_incoming(nodelay(peer_listener));
    let peer_task = tokio::spawn(peer_server);

    let peers = Peers::new(&secret).with_local_address(config.peer_source_ip());
    let node_id = match (&known, &config.join) {
        (Some(id), _) => id.node_id,
        (None, Some(join)) => join_cluster(&peers, join, &info).await?,
        (None, None) => 1,
    };
    if known.is_none() {
        identity::write_identity(
            &dir,
            &Identity {
                format: 1,
                node_id,
                cluster_secret: secret.clone(),
            },
        )?;
    }
    tracing::info!(node = node_id, peer = %info.peer_addr, api = %info.api_addr, "starting node");

    let db = Db::open(&dir.join("db")).context("opening database")?;
    let settings = GroupSettings {
        heartbeat_ms: config.heartbeat_ms,
        election_min_ms: config.election_min_ms,
        election_max_ms: config.election_max_ms,
        snapshot_after_logs: config.snapshot_after_logs,
        sync_wal: true,
    };
    let groups = Groups::new(node_id, db.clone(), peers.clone(), &settings)?;
    let meta_raft = groups.ensure(META_GROUP).await?;
    // Shards this node held before a restart come back before it serves.
    for shard in groups
        .meta_snapshot()
        .shards_hosted_by(node_id)
        .collect::<Vec<_>>()
    {
        groups.ensure(shard).await?;
    }
    let router = Router::new(
        groups.clone(),
        Arc::new(GrpcForwarder::new(peers)),
        RouterSettings {
            presence_timeout: Duration::from_secs(config.presence_timeout_secs),
            ..RouterSettings::default()
        },
    );
    service.set(NodeCtx {
        groups: groups.clone(),
        router: router.clone(),
    });

    // The first node of a new cluster bootstraps it; so does a first node that stopped before its
    // bootstrap was applied (every step of it is idempotent).
    let first_node = node_id == 1 && config.join.is_none();
    if first_node && !groups.meta_snapshot().bootstrapped {
        let admin_key = bootstrap(&groups, &meta_raft, node_id, &info, config.shards).await?;
        let creds = AdminCredentials {
            api_key: admin_key,
            workspace_id: DEFAULT_WORKSPACE.into(),
            cluster_secret: secret.clone(),
        };
        identity::write_credentials(&dir, &creds)?;
        println!("{}", serde_json::to_string_pretty(&creds)?);
        println!(
            "admin credentials written to {} (shown only this once)",
            dir.join(identity::CREDENTIALS).display()
        );
    }

    tokio::spawn(reconciler::run(groups.clone()));
    let controller_settings = ControllerSettings {
        dead_after: Duration::from_secs(config.dead_node_timeout_secs),
        ..ControllerSettings::default()
    };
    tokio::spawn(Controller::new(router.clone(), controller_settings).run());
    tokio::spawn(conclave_actors::maintenance::run(
        router.clone(),
        Duration::from_secs(config.compaction_interval_secs),
    ));

    identity::write_node_file(
        &dir,
        &NodeFile {
            node_id,
            listen: api_addr.clone(),
            peer_listen: peer_addr.clone(),
        },
    )?;
    conclave_api::webhooks::start(router.clone());
    let state = AppState::new(Shared {
        router: router.clone(),
        max_body_bytes: config.max_body_bytes,
        max_artifact_bytes: config.max_artifact_bytes,
        cluster_secret: secret.clone().into(),
        audit: conclave_api::audit::AuditLog::start(
            router.clone(),
            conclave_api::audit::AuditSettings {
                retention_days: config.audit_retention_days,
                max_entries: config.audit_max_entries,
                relay_after: std::time::Duration::from_secs(config.audit_relay_after_secs),
            },
        ),
        streams: conclave_api::live::Streams::new(config.stream_settings()),
    });
    tracing::info!(node = node_id, listen = %api_addr, peer = %peer_addr, "serving");
    let api_listener = api_listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    axum::serve(api_listener, conclave_api::app(state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;

    tracing::info!(node = node_id, "shutting down");
    groups.shutdown().await;
    peer_task.abort();
    db.sync_and_quiesce()
        .context("syncing the database at shutdown")?;
    tracing::info!(node = node_id, "stopped");
    // End here, without unwinding the runtime or running exit handlers: tasks and the fsync
    // thread still hold the database, and C++ static destructors tearing RocksDB's thread pools
    // down under an open database abort or crash the process (seen on graceful restarts under
    // load). Everything acknowledged is in the synced WAL, as after `kill -9`, which Conclave
    // is built to survive; stderr, where logs go, is unbuffered.
    // SAFETY: `_exit` ends the process at once; nothing after it runs.
    unsafe { libc::_exit(0) }
}

/// Asks the cluster at `join` for an id, retrying while it is unreachable or electing.
async fn join_cluster(peers: &Peers, join: &str, info: &NodeInfo) -> anyhow::Result<NodeId> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let attempt = async {
            let mut client = peers.client(join)?;
            let req = JoinRequest {
                peer_addr: info.peer_addr.clone(),
                api_addr: info.api_addr.clone(),
                node_id: 0,
            };
            anyhow::Ok(client.join(req).await?.into_inner().node_id)
        };
        match attempt.await {
            Ok(id) => return Ok(id),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(join, error = %e, "join failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.context(format!("joining the cluster at {join}"))),
        }
    }
}

/// Creates a one-node cluster: meta group, every shard, the default workspace and an admin key.
/// Returns the admin key's secret.
async fn bootstrap(
    groups: &Groups,
    meta_raft: &conclave_raft::Raft,
    node_id: NodeId,
    info: &NodeInfo,
    shards: u64,
) -> anyhow::Result<String> {
    let members = BTreeMap::from([(node_id, info.clone())]);
    if let Err(e) = meta_raft.initialize(members.clone()).await {
        tracing::info!(error = %e, "meta group already initialized");
    }
    meta_raft
        .wait(Some(Duration::from_secs(30)))
        .state(ServerState::Leader, "bootstrap: meta leader")
        .await
        .context("waiting for meta leadership")?;
    let admin_key = new_secret();
    let cmd = MetaCommand::Bootstrap {
        node: info.clone(),
        shard_count: shards,
        workspace: DEFAULT_WORKSPACE.into(),
        admin_key_hash: hash_secret(&admin_key),
    };
    meta_raft
        .client_write(Proposal::now(Command::Meta(cmd)))
        .await
        .context("bootstrapping meta state")?;
    for shard in 1..=shards {
        let raft = groups.ensure(shard).await?;
        if let Err(e) = raft.initialize(members.clone()).await {
            tracing::info!(shard, error = %e, "shard already initialized");
        }
    }
    tracing::info!(shards, "bootstrapped a new cluster");
    Ok(admin_key)
}

/// Accepted peer connections with Nagle's algorithm off: Raft and forwarding send small
/// messages that must not wait for delayed acknowledgements.
fn nodelay(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok(conn)
    })
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("signal handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
