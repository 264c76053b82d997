//! The node-to-node gRPC protocol, called directly against real `conclave` processes.
//!
//! These tests speak the peer service the way another node would (`conclave-proto` client, the
//! cluster secret in metadata), so unlike the rest of the crate they link against the server's
//! protocol and codec crates. Run `cargo build -p conclave-node` first.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use conclave_cluster_tests::{Cluster, ShardKind};
use conclave_proto::peer::peer_client::PeerClient;
use conclave_proto::peer::{LocalStatusRequest, StreamKind, WatchEvent, WatchRequest};
use conclave_raft::codec::decode;
use conclave_raft::network::SECRET_HEADER;
use conclave_raft::shard::TopicMessage;
use serde_json::{json, Value};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Streaming};
use tracing::info;

/// Deadline of waits and of each awaited stream event.
const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_calls_without_the_cluster_secret_are_refused() -> Result<()> {
    let cluster = Cluster::builder().nodes(1).start().await?;
    let mut client = peer_client(&cluster, 0).await?;

    // No secret at all: refused before the service runs.
    let refused = client
        .local_status(LocalStatusRequest {})
        .await
        .err()
        .context("LocalStatus without the secret succeeded")?;
    ensure!(
        refused.code() == Code::Unauthenticated,
        "without the secret: {refused:?}"
    );

    // A wrong secret (the right one with one character changed): refused too.
    let mut wrong = cluster.cluster_secret().to_string();
    let last = if wrong.ends_with('0') { "1" } else { "0" };
    wrong.replace_range(wrong.len() - 1.., last);
    let refused = client
        .local_status(with_secret(LocalStatusRequest {}, &wrong)?)
        .await
        .err()
        .context("LocalStatus with a wrong secret succeeded")?;
    ensure!(
        refused.code() == Code::Unauthenticated,
        "with a wrong secret: {refused:?}"
    );

    // The cluster's secret: answered, with a non-empty report.
    let reply = client
        .local_status(with_secret(
            LocalStatusRequest {},
            cluster.cluster_secret(),
        )?)
        .await
        .context("LocalStatus with the cluster secret")?
        .into_inner();
    ensure!(!reply.status.is_empty(), "empty local status");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_a_topic_from_a_sequence_then_follows_live() -> Result<()> {
    const TOPIC: &str = "watched";
    let cluster = Cluster::builder().nodes(3).start().await?;

    // Create the topic and publish 5 messages through node 0.
    cluster.create_topic(0, TOPIC).await?;
    let mut bodies: Vec<Value> = Vec::new();
    for n in 1..=5u64 {
        let body = json!({ "n": n, "phase": "before" });
        let published = cluster.publish(0, TOPIC, body.clone()).await?;
        ensure!(published.seq == n, "publish {n} got seq {}", published.seq);
        bodies.push(body);
    }

    // Open the watch from seq 3 on a replica of the topic's shard that does not lead it, to
    // show followers serve watches from their own applied state.
    let leader = cluster.leader_of(ShardKind::Topic, TOPIC).await?;
    let located = cluster.locate(ShardKind::Topic, TOPIC).await?;
    let follower_id = located
        .replicas
        .iter()
        .copied()
        .find(|&id| id != leader)
        .with_context(|| format!("no follower among {located:?}"))?;
    let follower = cluster
        .node_index_by_id(follower_id)
        .context("the follower is not a sandbox node")?;
    info!(
        shard = located.shard,
        leader, follower_id, "watching on a follower"
    );
    let mut client = peer_client(&cluster, follower).await?;
    let request = WatchRequest {
        shard: located.shard,
        workspace: cluster.workspace_id().to_string(),
        name: TOPIC.to_string(),
        from_seq: 3,
        kind: StreamKind::Topic as i32,
    };
    let mut stream = client
        .watch(with_secret(request, cluster.cluster_secret())?)
        .await
        .context("opening the watch")?
        .into_inner();

    // The stored messages 3, 4 and 5 arrive first, in order.
    for seq in 3..=5 {
        expect_event(&mut stream, seq, &bodies[seq as usize - 1]).await?;
    }

    // 5 more are published through another node; the open stream follows them live.
    let publisher = (0..cluster.len())
        .find(|&i| i != 0 && i != follower)
        .expect("three nodes");
    for n in 6..=10u64 {
        let body = json!({ "n": n, "phase": "live" });
        let published = cluster.publish(publisher, TOPIC, body.clone()).await?;
        ensure!(published.seq == n, "publish {n} got seq {}", published.seq);
        expect_event(&mut stream, n, &body).await?;
    }

    // Nothing was sent twice or skipped: the next event after 10 is a fresh message 11.
    let body = json!({ "n": 11, "phase": "marker" });
    cluster.publish(publisher, TOPIC, body.clone()).await?;
    expect_event(&mut stream, 11, &body).await
}

/// A peer client on node `index`'s peer address.
async fn peer_client(cluster: &Cluster, index: usize) -> Result<PeerClient<Channel>> {
    let addr = format!("http://{}", cluster.node(index).peer_addr());
    PeerClient::connect(addr.clone())
        .await
        .with_context(|| format!("cannot connect to {addr}"))
}

/// `message` carrying `secret` in the cluster-secret metadata.
fn with_secret<T>(message: T, secret: &str) -> Result<Request<T>> {
    let mut request = Request::new(message);
    let value: MetadataValue<_> = secret.parse().context("secret is not valid metadata")?;
    request.metadata_mut().insert(SECRET_HEADER, value);
    Ok(request)
}

/// Waits for the next event of `stream` and checks it is message `seq` with body `body`.
async fn expect_event(stream: &mut Streaming<WatchEvent>, seq: u64, body: &Value) -> Result<()> {
    let event = tokio::time::timeout(TIMEOUT, stream.message())
        .await
        .with_context(|| format!("no watch event within {TIMEOUT:?}, expected seq {seq}"))?
        .with_context(|| format!("watch stream failed, expected seq {seq}"))?
        .with_context(|| format!("watch stream ended, expected seq {seq}"))?;
    let message: TopicMessage = decode(&event.event).context("cannot decode the watch event")?;
    let read: Value = serde_json::from_str(&message.body)
        .with_context(|| format!("message body is not JSON: {}", message.body))?;
    ensure!(
        event.seq == seq && message.seq == seq,
        "expected seq {seq}, got event seq {} carrying message seq {}",
        event.seq,
        message.seq
    );
    ensure!(&read == body, "seq {seq}: published {body}, watched {read}");
    Ok(())
}
