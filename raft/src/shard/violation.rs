//! Policy violations: the durable record of every refused skill invocation of a workspace.
//!
//! A workspace's violations live on one shard (`shard_for(ws, "violations", "")`), so they
//! form one sequence: apply numbers them gap-free from 1, and a list pages newest first with
//! the last seen number as its cursor, never skipping or repeating a row. The record is a
//! bounded ring: recording number `n` deletes number `n - MAX_VIOLATIONS_PER_WORKSPACE`, so at
//! most that many of the newest are kept and an agent retrying a refused call cannot grow the
//! store without bound.
//!
//! Key layout (letters used here: `V`; the counter lives with the shard's other counters
//! under `n`):
//! - `V\0<ws>\0<u64::MAX - seq, big endian>` → [`Violation`] (inverted, so a forward scan
//!   reads newest first);
//! - `n\0violation\0<ws>` → the last number handed out.

use super::io;
use serde::{Deserialize, Serialize};

use super::{counter, ShardReadResult, ShardResponse};
use crate::codec::{decode_io, encode};
use crate::error::CoreError;
use crate::kv::{KvRead, Txn};

/// Newest violations kept per workspace.
pub const MAX_VIOLATIONS_PER_WORKSPACE: u64 = 10_000;

/// Rows read per scan while filtering by agent.
const SCAN_CHUNK: usize = 256;

/// A refused skill invocation, as reported by the node that refused it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewViolation {
    /// The workspace.
    pub ws: String,
    /// The agent that tried to invoke the skill.
    pub agent: String,
    /// The API key the request carried.
    pub key_id: String,
    /// The skill's id, when the skill exists.
    pub skill_id: Option<String>,
    /// The skill as the agent named it (its name, or an id).
    pub skill: String,
    /// How the call came in: `rest` (later `mcp`, `ws`).
    pub via: String,
    /// Machine-readable reason, e.g. `not_granted`, `unknown_skill`.
    pub reason: String,
    /// Human-readable explanation.
    pub detail: String,
}

/// A recorded violation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// `vio_<seq>`.
    pub id: String,
    /// Gap-free from 1 within the workspace.
    pub seq: u64,
    /// When it was recorded (the leader's time), ms since the epoch.
    pub at: u64,
    /// What was refused.
    pub violation: NewViolation,
}

mod keys {
    pub fn prefix(ws: &str) -> Vec<u8> {
        [b"V\0", ws.as_bytes(), b"\0"].concat()
    }
    pub fn row(ws: &str, seq: u64) -> Vec<u8> {
        [prefix(ws), (u64::MAX - seq).to_be_bytes().to_vec()].concat()
    }
    pub fn counter(ws: &str) -> Vec<u8> {
        [b"n\0violation\0", ws.as_bytes()].concat()
    }
}

/// Records `v` at leader time `at_ms`, dropping the oldest row past the ring's size.
pub(super) fn record<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    v: &NewViolation,
    at_ms: u64,
) -> std::io::Result<ShardResponse> {
    let seq = counter(txn, &keys::counter(&v.ws))?;
    if seq > MAX_VIOLATIONS_PER_WORKSPACE {
        txn.delete(keys::row(&v.ws, seq - MAX_VIOLATIONS_PER_WORKSPACE));
    }
    let row = Violation {
        id: format!("vio_{seq}"),
        seq,
        at: at_ms,
        violation: v.clone(),
    };
    txn.put(keys::row(&v.ws, seq), encode(&row));
    Ok(ShardResponse::Violation(Box::new(row)))
}

/// Up to `limit` violations of `ws` numbered below `before` (all when `None`), newest first,
/// only those of `agent` when given.
pub(super) fn list<R: KvRead + ?Sized>(
    kv: &R,
    ws: &str,
    before: Option<u64>,
    agent: Option<&str>,
    limit: usize,
) -> Result<ShardReadResult, CoreError> {
    let prefix = keys::prefix(ws);
    let mut after = before.map(|b| keys::row(ws, b));
    let mut out = Vec::new();
    loop {
        let chunk = if agent.is_some() {
            SCAN_CHUNK
        } else {
            limit - out.len()
        };
        let rows = kv.scan(&prefix, after.as_deref(), chunk).map_err(io)?;
        let exhausted = rows.len() < chunk;
        for (k, v) in rows {
            let row: Violation = decode_io(&v).map_err(io)?;
            after = Some(k);
            if agent.is_none_or(|a| a == row.violation.agent) {
                out.push(row);
                if out.len() == limit {
                    return Ok(ShardReadResult::Violations(out));
                }
            }
        }
        if exhausted {
            return Ok(ShardReadResult::Violations(out));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::shard::{apply, query, ShardCommand, ShardQuery};

    type Store = BTreeMap<Vec<u8>, Vec<u8>>;

    fn record_n(store: &mut Store, ws: &str, agents: &[&str], from_at: u64) {
        for (i, agent) in agents.iter().enumerate() {
            let cmd = ShardCommand::RecordViolation(NewViolation {
                ws: ws.into(),
                agent: (*agent).into(),
                key_id: "key_1".into(),
                skill_id: Some("skill_1".into()),
                skill: "deploy".into(),
                via: "rest".into(),
                reason: "not_granted".into(),
                detail: "no team of the agent has the skill".into(),
            });
            let mut txn = Txn::new(&*store);
            apply(&mut txn, 1, &cmd, from_at + i as u64).unwrap();
            for (k, v) in txn.into_writes() {
                match v {
                    Some(v) => store.insert(k, v),
                    None => store.remove(&k),
                };
            }
        }
    }

    fn page(
        store: &Store,
        ws: &str,
        before: Option<u64>,
        agent: Option<&str>,
        limit: usize,
    ) -> Vec<u64> {
        let q = ShardQuery::ViolationList {
            ws: ws.into(),
            before,
            agent: agent.map(String::from),
            limit,
        };
        match query(store, &q).unwrap() {
            ShardReadResult::Violations(v) => v.iter().map(|v| v.seq).collect(),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn violations_page_newest_first_per_workspace() {
        let mut s = Store::new();
        record_n(&mut s, "a", &["x", "y", "x", "y", "x"], 100);
        record_n(&mut s, "b", &["x"], 200);
        assert_eq!(page(&s, "a", None, None, 2), vec![5, 4]);
        assert_eq!(page(&s, "a", Some(4), None, 2), vec![3, 2]);
        assert_eq!(page(&s, "a", Some(2), None, 2), vec![1]);
        assert_eq!(page(&s, "a", None, Some("x"), 10), vec![5, 3, 1]);
        assert_eq!(page(&s, "a", Some(5), Some("y"), 1), vec![4]);
        assert_eq!(page(&s, "b", None, None, 10), vec![1]);
        assert_eq!(page(&s, "c", None, None, 10), Vec::<u64>::new());
    }

    #[test]
    fn the_ring_keeps_only_the_newest() {
        let mut s = Store::new();
        let n = MAX_VIOLATIONS_PER_WORKSPACE as usize + 3;
        record_n(&mut s, "a", &vec!["x"; n], 0);
        let all = page(&s, "a", None, None, n);
        assert_eq!(all.len(), MAX_VIOLATIONS_PER_WORKSPACE as usize);
        assert_eq!(all.first(), Some(&(n as u64)));
        assert_eq!(all.last(), Some(&4));
        // A filter over the whole ring stops at the ring's end.
        assert!(page(&s, "a", None, Some("nobody"), 10).is_empty());
    }
}
