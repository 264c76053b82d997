//! Vector embeddings of a workspace and exact cosine-similarity search over them.
//!
//! An embedding lives on the shard of its id (`shard_for(ws, "embedding", id)`), at key
//! `v\0<ws>\0<id>`. Search runs on every shard and each returns its exact top `k`; the API
//! merges them, which is exact because the global top `k` is inside the union of the shards'.
//! The scan sits behind [`VectorIndex`] so an approximate index can replace it later.

use super::io;
use serde::{Deserialize, Serialize};

use crate::codec::{decode_io, encode};
use crate::error::CoreError;
use crate::kv::{KvRead, Txn};

/// Largest dimension accepted.
pub const MAX_DIMENSION: usize = 4096;

/// A change to an embedding.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum EmbeddingCommand {
    /// Store (or replace) an embedding; the API has checked the vector (finite, non-zero,
    /// the namespace's dimension).
    Put {
        ws: String,
        id: String,
        namespace: String,
        vector: Vec<f32>,
        /// Source text, possibly empty.
        text: String,
        /// JSON text.
        metadata: String,
    },
}

impl EmbeddingCommand {
    /// `(workspace, id)` of the addressed embedding.
    pub fn entity(&self) -> (&str, &str) {
        match self {
            EmbeddingCommand::Put { ws, id, .. } => (ws, id),
        }
    }
}

/// A stored embedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    /// Unique in its workspace.
    pub id: String,
    /// Group of embeddings searched together; all have one dimension.
    pub namespace: String,
    /// The vector.
    pub vector: Vec<f32>,
    /// Source text, possibly empty.
    pub text: String,
    /// JSON text.
    pub metadata: String,
    /// Milliseconds since the epoch.
    pub created_at: u64,
    /// Milliseconds since the epoch.
    pub updated_at: u64,
}

/// The answer to a put: the embedding and whether it is new.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    /// The embedding as stored.
    pub embedding: Embedding,
    /// False when an existing id was replaced.
    pub created: bool,
}

/// A read of embeddings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum EmbeddingQuery {
    /// Embeddings with ids after `after`, in id order, optionally of one namespace.
    List {
        ws: String,
        namespace: Option<String>,
        after: Option<String>,
        limit: usize,
    },
    /// This shard's `k` most similar embeddings of `namespace` to `vector`.
    Search {
        ws: String,
        namespace: String,
        vector: Vec<f32>,
        k: usize,
        min_score: Option<f64>,
    },
}

/// An embedding with its similarity to a query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    /// Cosine similarity, -1 to 1.
    pub score: f64,
    /// The embedding.
    pub embedding: Embedding,
}

/// The result of an [`EmbeddingQuery`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EmbeddingResult {
    /// A page of embeddings.
    Page(Vec<Embedding>),
    /// Search hits, best first.
    Hits(Vec<Scored>),
}

fn key(ws: &str, id: &str) -> Vec<u8> {
    [b"v\0", ws.as_bytes(), b"\0", id.as_bytes()].concat()
}

fn prefix(ws: &str) -> Vec<u8> {
    [b"v\0", ws.as_bytes(), b"\0"].concat()
}

/// Applies an embedding command.
pub fn apply<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    cmd: &EmbeddingCommand,
    at_ms: u64,
) -> std::io::Result<Stored> {
    let EmbeddingCommand::Put {
        ws,
        id,
        namespace,
        vector,
        text,
        metadata,
    } = cmd;
    let k = key(ws, id);
    let previous = txn
        .get(&k)?
        .map(|b| decode_io::<Embedding>(&b))
        .transpose()?;
    let embedding = Embedding {
        id: id.clone(),
        namespace: namespace.clone(),
        vector: vector.clone(),
        text: text.clone(),
        metadata: metadata.clone(),
        created_at: previous.as_ref().map_or(at_ms, |p| p.created_at),
        updated_at: at_ms,
    };
    txn.put(k, encode(&embedding));
    Ok(Stored {
        embedding,
        created: previous.is_none(),
    })
}

/// Runs an embedding query with `index`.
pub fn query(
    kv: &dyn KvRead,
    q: &EmbeddingQuery,
    index: &dyn VectorIndex,
) -> Result<EmbeddingResult, CoreError> {
    match q {
        EmbeddingQuery::List {
            ws,
            namespace,
            after,
            limit,
        } => {
            let mut page = Vec::new();
            let after = after.as_ref().map(|a| key(ws, a));
            // Namespace filtering may skip rows, so the scan goes on until the page is full.
            each_embedding(kv, ws, after, |e| {
                if namespace.as_ref().is_none_or(|n| *n == e.namespace) {
                    page.push(e);
                }
                page.len() < *limit
            })
            .map_err(io)?;
            Ok(EmbeddingResult::Page(page))
        }
        EmbeddingQuery::Search {
            ws,
            namespace,
            vector,
            k,
            min_score,
        } => index
            .search(kv, ws, namespace, vector, *k, *min_score)
            .map(EmbeddingResult::Hits)
            .map_err(io),
    }
}

/// Rows read per storage scan.
const SCAN_BATCH: usize = 512;

/// Hands the workspace's embeddings with keys after `after` to `visit`, in id order, reading
/// storage in batches, until `visit` answers false or none remain.
fn each_embedding(
    kv: &dyn KvRead,
    ws: &str,
    mut after: Option<Vec<u8>>,
    mut visit: impl FnMut(Embedding) -> bool,
) -> std::io::Result<()> {
    loop {
        let rows = kv.scan(&prefix(ws), after.as_deref(), SCAN_BATCH)?;
        let done = rows.len() < SCAN_BATCH;
        for (k, v) in rows {
            after = Some(k);
            if !visit(decode_io(&v)?) {
                return Ok(());
            }
        }
        if done {
            return Ok(());
        }
    }
}

/// Finds the embeddings most similar to a query vector.
pub trait VectorIndex: Send + Sync {
    /// The `k` embeddings of `namespace` in workspace `ws` most similar to `query` (cosine),
    /// best first, ties by id, none below `min_score`.
    fn search(
        &self,
        kv: &dyn KvRead,
        ws: &str,
        namespace: &str,
        query: &[f32],
        k: usize,
        min_score: Option<f64>,
    ) -> std::io::Result<Vec<Scored>>;
}

/// Exact search: scores every embedding of the namespace.
pub struct ExactScan;

impl VectorIndex for ExactScan {
    fn search(
        &self,
        kv: &dyn KvRead,
        ws: &str,
        namespace: &str,
        query: &[f32],
        k: usize,
        min_score: Option<f64>,
    ) -> std::io::Result<Vec<Scored>> {
        let query_norm = norm(query);
        let mut best: Vec<Scored> = Vec::with_capacity(k + 1);
        each_embedding(kv, ws, None, |e| {
            if e.namespace == namespace && e.vector.len() == query.len() {
                let score = cosine(query, query_norm, &e.vector);
                if min_score.is_none_or(|m| score >= m) {
                    keep_best(
                        &mut best,
                        Scored {
                            score,
                            embedding: e,
                        },
                        k,
                    );
                }
            }
            true
        })?;
        Ok(best)
    }
}

/// Inserts `hit` into `best` (sorted best first, at most `k`), ties broken by id.
pub fn keep_best(best: &mut Vec<Scored>, hit: Scored, k: usize) {
    let pos = best.partition_point(|b| rank(b, &hit).is_lt());
    if pos < k {
        best.insert(pos, hit);
        best.truncate(k);
    }
}

/// Order of search hits: higher score first, then smaller id.
pub fn rank(a: &Scored, b: &Scored) -> std::cmp::Ordering {
    b.score
        .total_cmp(&a.score)
        .then_with(|| a.embedding.id.cmp(&b.embedding.id))
}

fn norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt()
}

fn cosine(q: &[f32], q_norm: f64, v: &[f32]) -> f64 {
    let dot: f64 = q
        .iter()
        .zip(v)
        .map(|(a, b)| f64::from(*a) * f64::from(*b))
        .sum();
    let denom = q_norm * norm(v);
    if denom == 0.0 {
        0.0
    } else {
        dot / denom
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn put(store: &mut BTreeMap<Vec<u8>, Vec<u8>>, id: &str, ns: &str, v: &[f32], at: u64) {
        let cmd = EmbeddingCommand::Put {
            ws: "ws".into(),
            id: id.into(),
            namespace: ns.into(),
            vector: v.to_vec(),
            text: String::new(),
            metadata: "{}".into(),
        };
        let mut txn = Txn::new(&*store);
        apply(&mut txn, &cmd, at).unwrap();
        for (k, v) in txn.into_writes() {
            store.insert(k, v.unwrap());
        }
    }

    fn search(store: &BTreeMap<Vec<u8>, Vec<u8>>, ns: &str, q: &[f32], k: usize) -> Vec<String> {
        ExactScan
            .search(store, "ws", ns, q, k, None)
            .unwrap()
            .into_iter()
            .map(|s| s.embedding.id)
            .collect()
    }

    #[test]
    fn search_is_exact_top_k_by_cosine() {
        let mut store = BTreeMap::new();
        // 600 vectors (more than one scan batch) at angles around the circle.
        for i in 0..600u32 {
            let a = f64::from(i) * std::f64::consts::TAU / 600.0;
            put(
                &mut store,
                &format!("e{i:03}"),
                "n",
                &[a.cos() as f32, a.sin() as f32],
                1,
            );
        }
        put(&mut store, "other", "m", &[1.0, 0.0], 1);
        // Nearest to angle 0: e000, then e001 and e599 (tie broken by id), then e002, e598.
        assert_eq!(
            search(&store, "n", &[1.0, 0.0], 5),
            ["e000", "e001", "e599", "e002", "e598"]
        );
        // Brute force agrees for an arbitrary query.
        let q = [0.3f32, -0.8];
        let mut all: Vec<Scored> = Vec::new();
        for (_, v) in store.iter() {
            let e: Embedding = decode_io(v).unwrap();
            if e.namespace == "n" {
                let score = cosine(&q, norm(&q), &e.vector);
                all.push(Scored {
                    score,
                    embedding: e,
                });
            }
        }
        all.sort_by(rank);
        let expected: Vec<String> = all.iter().take(7).map(|s| s.embedding.id.clone()).collect();
        assert_eq!(search(&store, "n", &q, 7), expected);
        assert_eq!(search(&store, "m", &[0.0, 1.0], 3), ["other"]);
    }

    #[test]
    fn put_replaces_and_keeps_creation_time() {
        let mut store = BTreeMap::new();
        put(&mut store, "a", "n", &[1.0, 2.0], 10);
        put(&mut store, "a", "n", &[2.0, 1.0], 20);
        let page = query(
            &store,
            &EmbeddingQuery::List {
                ws: "ws".into(),
                namespace: None,
                after: None,
                limit: 10,
            },
            &ExactScan,
        )
        .unwrap();
        let EmbeddingResult::Page(page) = page else {
            panic!("not a page")
        };
        assert_eq!(page.len(), 1);
        assert_eq!((page[0].created_at, page[0].updated_at), (10, 20));
        assert_eq!(page[0].vector, vec![2.0, 1.0]);
    }
}
