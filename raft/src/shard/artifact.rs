//! Artifacts: named blobs uploaded by agents (bytes replicated like every other write) or
//! references to an external URL.
//!
//! An artifact lives on the shard of its id (`shard_for(ws, "artifact", id)`): its description
//! at `f\0<ws>\0<id>` and its bytes apart at `F\0<ws>\0<id>`, so lists never load content.

use super::io;
use serde::{Deserialize, Serialize};

use crate::codec::{decode_io, encode};
use crate::error::CoreError;
use crate::kv::{KvRead, Txn};

/// A change to an artifact.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ArtifactCommand {
    /// Create an artifact with bytes (`content`) or a reference (`url`); exactly one is set
    /// (checked by the API, and again here).
    Create {
        ws: String,
        id: String,
        name: String,
        content_type: String,
        content: Option<Vec<u8>>,
        url: Option<String>,
        /// Hex SHA-256 of `content`, computed by the API.
        sha256: Option<String>,
        /// JSON text.
        metadata: String,
    },
}

impl ArtifactCommand {
    /// `(workspace, id)` of the addressed artifact.
    pub fn entity(&self) -> (&str, &str) {
        match self {
            ArtifactCommand::Create { ws, id, .. } => (ws, id),
        }
    }
}

/// An artifact's description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// Unique in the cluster.
    pub id: String,
    /// Its name.
    pub name: String,
    /// MIME type of the content.
    pub content_type: String,
    /// Bytes of content (0 for a reference).
    pub size: u64,
    /// Hex SHA-256 of the content, for uploads.
    pub sha256: Option<String>,
    /// The external URL, for references.
    pub url: Option<String>,
    /// JSON text.
    pub metadata: String,
    /// Milliseconds since the epoch.
    pub created_at: u64,
}

/// A read of artifacts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ArtifactQuery {
    /// One artifact's description.
    Get { ws: String, id: String },
    /// One artifact's description and bytes.
    Content { ws: String, id: String },
    /// Descriptions with ids after `after`, in id order.
    List {
        ws: String,
        after: Option<String>,
        limit: usize,
    },
}

/// The result of an [`ArtifactQuery`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ArtifactResult {
    /// One artifact.
    One(Artifact),
    /// An artifact and its bytes.
    Content(Artifact, Vec<u8>),
    /// A page of artifacts.
    Page(Vec<Artifact>),
}

fn key(ws: &str, id: &str) -> Vec<u8> {
    [b"f\0", ws.as_bytes(), b"\0", id.as_bytes()].concat()
}

fn content_key(ws: &str, id: &str) -> Vec<u8> {
    [b"F\0", ws.as_bytes(), b"\0", id.as_bytes()].concat()
}

/// Applies an artifact command; `Err(Ok(refusal))`-style outcomes are returned as `Err`.
pub fn apply<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    cmd: &ArtifactCommand,
    at_ms: u64,
) -> std::io::Result<Result<Artifact, CoreError>> {
    let ArtifactCommand::Create {
        ws,
        id,
        name,
        content_type,
        content,
        url,
        sha256,
        metadata,
    } = cmd;
    if content.is_some() == url.is_some() {
        return Ok(Err(CoreError::bad_request(
            "an artifact has either content or a url",
        )));
    }
    let k = key(ws, id);
    if txn.get(&k)?.is_some() {
        return Ok(Err(CoreError::conflict(format!(
            "artifact {id} already exists"
        ))));
    }
    let artifact = Artifact {
        id: id.clone(),
        name: name.clone(),
        content_type: content_type.clone(),
        size: content.as_ref().map_or(0, |c| c.len() as u64),
        sha256: sha256.clone(),
        url: url.clone(),
        metadata: metadata.clone(),
        created_at: at_ms,
    };
    txn.put(k, encode(&artifact));
    if let Some(bytes) = content {
        txn.put(content_key(ws, id), encode(bytes));
    }
    Ok(Ok(artifact))
}

/// Runs an artifact query.
pub fn query(kv: &dyn KvRead, q: &ArtifactQuery) -> Result<ArtifactResult, CoreError> {
    let not_found = |id: &str| CoreError::not_found(format!("artifact {id} not found"));
    match q {
        ArtifactQuery::Get { ws, id } => {
            let bytes = kv
                .get(&key(ws, id))
                .map_err(io)?
                .ok_or_else(|| not_found(id))?;
            Ok(ArtifactResult::One(decode_io(&bytes).map_err(io)?))
        }
        ArtifactQuery::Content { ws, id } => {
            let bytes = kv
                .get(&key(ws, id))
                .map_err(io)?
                .ok_or_else(|| not_found(id))?;
            let artifact: Artifact = decode_io(&bytes).map_err(io)?;
            let content = match kv.get(&content_key(ws, id)).map_err(io)? {
                Some(c) => decode_io(&c).map_err(io)?,
                None => Vec::new(),
            };
            Ok(ArtifactResult::Content(artifact, content))
        }
        ArtifactQuery::List { ws, after, limit } => {
            let prefix = [b"f\0", ws.as_bytes(), b"\0"].concat();
            let after = after.as_ref().map(|a| key(ws, a));
            let rows = kv.scan(&prefix, after.as_deref(), *limit).map_err(io)?;
            let page = rows
                .iter()
                .map(|(_, v)| decode_io(v).map_err(io))
                .collect::<Result<_, _>>()?;
            Ok(ArtifactResult::Page(page))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn create(id: &str, content: Option<&[u8]>, url: Option<&str>) -> ArtifactCommand {
        ArtifactCommand::Create {
            ws: "ws".into(),
            id: id.into(),
            name: "report.txt".into(),
            content_type: "text/plain".into(),
            content: content.map(<[u8]>::to_vec),
            url: url.map(str::to_string),
            sha256: None,
            metadata: "{}".into(),
        }
    }

    fn run(
        store: &mut BTreeMap<Vec<u8>, Vec<u8>>,
        cmd: &ArtifactCommand,
    ) -> Result<Artifact, CoreError> {
        let mut txn = Txn::new(&*store);
        let out = apply(&mut txn, cmd, 7).unwrap();
        for (k, v) in txn.into_writes() {
            store.insert(k, v.unwrap());
        }
        out
    }

    #[test]
    fn content_is_stored_apart_and_ids_are_unique() {
        let mut store = BTreeMap::new();
        let a = run(&mut store, &create("a", Some(b"hello"), None)).unwrap();
        assert_eq!((a.size, a.created_at), (5, 7));
        assert!(run(&mut store, &create("a", Some(b"again"), None)).is_err());
        assert!(run(&mut store, &create("b", None, None)).is_err());
        run(
            &mut store,
            &create("c", None, Some("https://example.org/x")),
        )
        .unwrap();
        let content = query(
            &store,
            &ArtifactQuery::Content {
                ws: "ws".into(),
                id: "a".into(),
            },
        );
        assert_eq!(
            content.unwrap(),
            ArtifactResult::Content(a, b"hello".to_vec())
        );
        let page = query(
            &store,
            &ArtifactQuery::List {
                ws: "ws".into(),
                after: None,
                limit: 10,
            },
        );
        let ArtifactResult::Page(page) = page.unwrap() else {
            panic!("not a page")
        };
        assert_eq!(
            page.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
            ["a", "c"]
        );
        let other = query(
            &store,
            &ArtifactQuery::Get {
                ws: "other".into(),
                id: "a".into(),
            },
        );
        assert!(other.is_err());
    }
}
