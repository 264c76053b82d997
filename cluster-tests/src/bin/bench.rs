//! Throughput and latency of Conclave writes, on sandbox clusters of real processes.
//!
//! For each cluster size (1 and 3 nodes, 16 shards), each workload (topic publishes of 256-byte
//! bodies over 16 topics; context puts over 1000 keys) and each concurrency (1, 16, 256), runs
//! closed-loop clients for a bounded time, spread across the nodes, and records every
//! operation's latency. Prints a table and writes every figure, with machine details, as JSON.
//!
//! Usage: `bench [--seconds N] [--out FILE] [--nodes 1,3] [--concurrency 1,16,256]`.
//! It runs the `conclave` binary next to it (or `CONCLAVE_BIN`).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use conclave_cluster_tests::{Cluster, NodeClient};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value};

/// Shards of every benchmark cluster.
const SHARDS: u32 = 16;
/// Topics the publish workload spreads over.
const TOPICS: usize = 16;
/// Size of a published body, in bytes.
const BODY_BYTES: usize = 256;
/// Keys the context workload spreads over.
const KEYS: usize = 1000;

/// Command-line flags.
#[derive(Debug)]
struct Args {
    /// Duration of one run, in seconds.
    seconds: u64,
    /// Where the JSON results go.
    out: PathBuf,
    /// Cluster sizes to measure.
    nodes: Vec<usize>,
    /// Client concurrencies to measure.
    concurrency: Vec<usize>,
}

impl Args {
    fn parse() -> Result<Self> {
        let mut args = Args {
            seconds: 5,
            out: PathBuf::from("bench-results.json"),
            nodes: vec![1, 3],
            concurrency: vec![1, 16, 256],
        };
        let mut flags = std::env::args().skip(1);
        while let Some(flag) = flags.next() {
            if flag == "--help" || flag == "-h" {
                println!("bench [--seconds N] [--out FILE] [--nodes 1,3] [--concurrency 1,16,256]");
                std::process::exit(0);
            }
            let value = flags
                .next()
                .with_context(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--seconds" => args.seconds = value.parse().context("--seconds")?,
                "--out" => args.out = PathBuf::from(value),
                "--nodes" => args.nodes = parse_list(&value).context("--nodes")?,
                "--concurrency" => {
                    args.concurrency = parse_list(&value).context("--concurrency")?
                }
                _ => bail!("unknown flag {flag}; try --help"),
            }
        }
        Ok(args)
    }
}

fn parse_list(text: &str) -> Result<Vec<usize>> {
    let list = text
        .split(',')
        .map(|item| item.trim().parse::<usize>())
        .collect::<Result<Vec<_>, _>>()?;
    if list.is_empty() || list.contains(&0) {
        bail!("expected a comma-separated list of positive numbers, got {text:?}");
    }
    Ok(list)
}

/// What the clients do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Workload {
    /// `POST /v1/topics/{name}/publish` of a 256-byte body to one of 16 topics.
    TopicPublish,
    /// `PUT /v1/context/{key}` of a small value to one of 1000 keys.
    ContextPut,
}

/// The figures of one run.
#[derive(Debug, Serialize)]
struct RunResult {
    nodes: usize,
    workload: Workload,
    concurrency: usize,
    elapsed_secs: f64,
    ops: usize,
    errors: usize,
    throughput_ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    mean_ms: f64,
    /// One error message, if any operation failed.
    sample_error: Option<String>,
}

/// What one client recorded.
#[derive(Default)]
struct ClientRecord {
    latencies_us: Vec<u64>,
    errors: usize,
    sample_error: Option<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse()?;
    let duration = Duration::from_secs(args.seconds);
    let mut results = Vec::new();
    for &nodes in &args.nodes {
        let cluster = Cluster::builder()
            .nodes(nodes)
            .shards(SHARDS)
            .start()
            .await
            .with_context(|| format!("starting a {nodes}-node cluster"))?;
        prepare_topics(cluster.api(0)).await?;
        for workload in [Workload::TopicPublish, Workload::ContextPut] {
            for &concurrency in &args.concurrency {
                let result = run(&cluster, workload, concurrency, duration).await?;
                eprintln!(
                    "{nodes} node(s) {workload:?} x{concurrency}: {:.0} ops/s",
                    result.throughput_ops_per_sec
                );
                results.push(result);
            }
        }
    }
    print_table(&results);
    let report = json!({
        "machine": machine_info(),
        "config": {
            "seconds_per_run": args.seconds,
            "shards": SHARDS,
            "topics": TOPICS,
            "body_bytes": BODY_BYTES,
            "keys": KEYS,
            "binary": conclave_cluster_tests::binary::conclave_binary(),
        },
        "results": results,
    });
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("results written to {}", args.out.display());
    Ok(())
}

/// Creates the publish workload's topics (an existing topic is fine).
async fn prepare_topics(api: &NodeClient) -> Result<()> {
    for t in 0..TOPICS {
        match api.create_topic(&topic_name(t)).await {
            Ok(_) => {}
            Err(error) if error.is_status(409) => {}
            Err(error) => return Err(error).context("creating the benchmark topics"),
        }
    }
    Ok(())
}

fn topic_name(t: usize) -> String {
    format!("bench-{t}")
}

/// One client's own HTTP/1.1 keep-alive connection to a node. The load generator shares the
/// machine's two cores with the nodes, so it sends prepared requests on a bare connection rather
/// than through a pooled general-purpose client.
struct Connection {
    address: String,
    authorization: HeaderValue,
    send: Option<http1::SendRequest<Full<Bytes>>>,
}

impl Connection {
    /// Opens a connection to `api`'s node, so connecting is not timed as a request.
    async fn open(api: &NodeClient, api_key: &str) -> Result<Self> {
        let base = api.base_url();
        let address = format!(
            "{}:{}",
            base.host_str().context("node URL has no host")?,
            base.port_or_known_default()
                .context("node URL has no port")?
        );
        let send = Self::connect(&address).await?;
        Ok(Self {
            address,
            authorization: HeaderValue::from_str(&format!("Bearer {api_key}"))?,
            send: Some(send),
        })
    }

    /// Sends one JSON request and reads the whole answer; a non-2xx answer is an error.
    async fn call(&mut self, method: Method, path: &str, body: Bytes) -> Result<()> {
        let send = match &mut self.send {
            Some(send) if !send.is_closed() => send,
            _ => self.send.insert(Self::connect(&self.address).await?),
        };
        send.ready().await?;
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.address.as_str())
            .header(AUTHORIZATION, self.authorization.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(body))?;
        let response = match send.send_request(request).await {
            Ok(response) => response,
            Err(error) => {
                self.send = None;
                return Err(error.into());
            }
        };
        let status = response.status();
        let answer = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("{status}: {}", String::from_utf8_lossy(&answer));
        }
        Ok(())
    }

    async fn connect(address: &str) -> Result<http1::SendRequest<Full<Bytes>>> {
        let stream = tokio::net::TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        let (send, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(send)
    }
}

/// Runs `concurrency` closed-loop clients for `duration`, client `c` talking to node
/// `c % nodes` over a connection of its own.
async fn run(
    cluster: &Cluster,
    workload: Workload,
    concurrency: usize,
    duration: Duration,
) -> Result<RunResult> {
    let publish_body = Bytes::from(json!({ "body": "x".repeat(BODY_BYTES) }).to_string());
    let mut connections = Vec::with_capacity(concurrency);
    for c in 0..concurrency {
        connections
            .push(Connection::open(cluster.api(c % cluster.len()), cluster.api_key()).await?);
    }
    let started = Instant::now();
    let deadline = started + duration;
    let mut clients = Vec::with_capacity(concurrency);
    for (c, mut connection) in connections.into_iter().enumerate() {
        let publish_body = publish_body.clone();
        clients.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(c as u64);
            let mut record = ClientRecord::default();
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let begun = Instant::now();
                let outcome = match workload {
                    Workload::TopicPublish => {
                        let topic = topic_name(rng.random_range(0..TOPICS));
                        let path = format!("/v1/topics/{topic}/publish");
                        connection
                            .call(Method::POST, &path, publish_body.clone())
                            .await
                    }
                    Workload::ContextPut => {
                        let key = format!("bench-key-{}", rng.random_range(0..KEYS));
                        let path = format!("/v1/context/{key}");
                        let body = json!({ "value": { "client": c, "n": n } }).to_string();
                        connection.call(Method::PUT, &path, Bytes::from(body)).await
                    }
                };
                match outcome {
                    Ok(()) => record.latencies_us.push(begun.elapsed().as_micros() as u64),
                    Err(error) => {
                        record.errors += 1;
                        record.sample_error.get_or_insert_with(|| error.to_string());
                    }
                }
            }
            record
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut sample_error = None;
    for client in clients {
        let record = client.await?;
        latencies.extend(record.latencies_us);
        errors += record.errors;
        sample_error = sample_error.or(record.sample_error);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let mean_us = latencies.iter().sum::<u64>() as f64 / latencies.len().max(1) as f64;
    Ok(RunResult {
        nodes: cluster.len(),
        workload,
        concurrency,
        elapsed_secs: elapsed,
        ops: latencies.len(),
        errors,
        throughput_ops_per_sec: latencies.len() as f64 / elapsed,
        p50_ms: percentile_ms(&latencies, 0.50),
        p99_ms: percentile_ms(&latencies, 0.99),
        p999_ms: percentile_ms(&latencies, 0.999),
        max_ms: latencies.last().copied().unwrap_or(0) as f64 / 1000.0,
        mean_ms: mean_us / 1000.0,
        sample_error,
    })
}

/// The nearest-rank percentile `p` (0..=1) of ascending microsecond latencies, in ms.
fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted_us.len() as f64).ceil() as usize;
    sorted_us[rank.clamp(1, sorted_us.len()) - 1] as f64 / 1000.0
}

fn print_table(results: &[RunResult]) {
    println!(
        "{:>5}  {:<14} {:>5} {:>10} {:>9} {:>9} {:>9} {:>7}",
        "nodes", "workload", "conc", "ops/s", "p50 ms", "p99 ms", "p999 ms", "errors"
    );
    for r in results {
        let workload = match r.workload {
            Workload::TopicPublish => "topic_publish",
            Workload::ContextPut => "context_put",
        };
        println!(
            "{:>5}  {:<14} {:>5} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>7}",
            r.nodes,
            workload,
            r.concurrency,
            r.throughput_ops_per_sec,
            r.p50_ms,
            r.p99_ms,
            r.p999_ms,
            r.errors
        );
    }
}

/// CPU count, kernel release and the current date, for the report.
fn machine_info() -> Value {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    json!({
        "nproc": nproc,
        "kernel": command_output("uname", &["-r"]),
        "date": command_output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        "bench_profile": if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let us: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&us, 0.50), 500.0);
        assert_eq!(percentile_ms(&us, 0.99), 990.0);
        assert_eq!(percentile_ms(&us, 0.999), 999.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
    }

    #[test]
    fn lists_parse() {
        assert_eq!(parse_list("1, 16,256").unwrap(), vec![1, 16, 256]);
        assert!(parse_list("0").is_err());
    }
}
