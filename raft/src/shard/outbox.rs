//! The audit outbox: a mutating call's audit record, written in the same apply as the change it
//! made, on the change's own shard.
//!
//! A call's audit entry lives on its workspace's audit shard, usually another Raft group than
//! the one its change goes to. Committing the change and then the entry would cost a call two
//! replicated commits in sequence. Instead the serving node wraps the call's first shard write
//! in [`super::ShardCommand::Audited`]: apply makes the change and, atomically with it, keeps the
//! call's record here. The node answers the client once that one entry is committed, then
//! appends the audit entry (batched with others) and clears the record with
//! [`super::ShardCommand::OutboxClear`]. If the node dies first, the shard's leader finds the
//! record still here after a while ([`stale`]) and appends the entry itself, so an acknowledged
//! call is never left out of the audit log.
//!
//! Both append with [`super::ShardCommand::AuditAppendOnce`], which names each entry's record:
//! the audit shard remembers the records whose entries it appended for a window the proposer
//! sets, and skips an entry whose record it has seen. So an append that reaches the audit shard
//! late (its node was frozen), a relay after it, or two relays (a deposed leader's and its
//! successor's) record the call once.
//!
//! Key layout (letters used here: `O`, `Q`):
//! - `O\0<id>` → [`OutboxRow`], on the changed shard; ids start with the serving node's
//!   receive time, so a scan from the start reads roughly oldest first;
//! - `Q\0<ws>\0<id>` → leader time of the append, on the audit shard: records whose entries
//!   are appended, trimmed once older than the window, oldest (by id) first.

use serde::{Deserialize, Serialize};

use super::audit::{AuditRetention, NewAuditEntry};
use super::{get, ShardResponse};
use crate::codec::{decode_io, encode};
use crate::error::ErrorCode;
use crate::kv::{KvRead, Txn};

/// Ids one [`super::ShardCommand::OutboxClear`] may name at most.
pub const MAX_CLEAR: usize = 4096;

/// Longest outbox id kept.
pub const MAX_ID_LEN: usize = 64;

/// A call's audit record as the serving node hands it over with the call's first write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxRecord {
    /// Unique per call; chosen by the serving node (see [`record_id`]).
    pub id: String,
    /// The caller's workspace.
    pub ws: String,
    /// The entry as known before the call finished: its `status` is filled in from the
    /// write's outcome if the entry has to be appended from here.
    pub entry: NewAuditEntry,
}

/// A stored record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxRow {
    /// The caller's workspace.
    pub ws: String,
    /// The entry as handed over.
    pub entry: NewAuditEntry,
    /// `None` if the wrapped write was applied, else the code it was refused with.
    pub refused: Option<ErrorCode>,
    /// Leader time of the write, ms since the epoch.
    pub at_ms: u64,
}

/// An outbox id: the receive time first (hex, fixed width) so ids sort by it, then the serving
/// node and a random part.
pub fn record_id(received_at_ms: u64, node_id: u64, random: u64) -> String {
    format!("{received_at_ms:012x}-{node_id:x}-{random:016x}")
}

fn key(id: &str) -> Vec<u8> {
    [b"O\0", id.as_bytes()].concat()
}

/// Keeps `record` with the outcome `response` of the write it came with.
pub(super) fn keep<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    record: &OutboxRecord,
    response: &ShardResponse,
    at_ms: u64,
) {
    if record.id.is_empty() || record.id.len() > MAX_ID_LEN {
        return;
    }
    let refused = match response {
        ShardResponse::Refused(e) => Some(e.code),
        _ => None,
    };
    let row = OutboxRow {
        ws: record.ws.clone(),
        entry: record.entry.clone(),
        refused,
        at_ms,
    };
    txn.put(key(&record.id), encode(&row));
}

/// Removes the records `ids`; answers how many ids it took (at most [`MAX_CLEAR`]). Unknown ids
/// are not looked up first: a delete of a missing row changes nothing, and reading every row
/// before deleting it cost more than the delete.
pub(super) fn clear<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    ids: &[String],
) -> std::io::Result<ShardResponse> {
    let ids = &ids[..ids.len().min(MAX_CLEAR)];
    for id in ids {
        txn.delete(key(id));
    }
    Ok(ShardResponse::OutboxCleared {
        count: ids.len() as u64,
    })
}

/// Remembered records are forgotten by the append whose entries' sequence numbers pass a
/// multiple of this: an iterator seek per append would cost more than the append itself.
const SEEN_TRIM_EVERY: u64 = 256;

/// Remembered records one trim may forget beyond twice [`SEEN_TRIM_EVERY`] and twice the
/// number of entries appended, so forgetting outpaces remembering.
const SEEN_TRIM_BUDGET: usize = 64;

fn seen_prefix(ws: &str) -> Vec<u8> {
    [b"Q\0", ws.as_bytes(), b"\0"].concat()
}

/// Appends to `ws`'s audit log the entries whose record (when named) it has not appended
/// within `window_ms`, remembers their records, and forgets records older than the window
/// (a record remembered longer, not yet trimmed, no longer counts).
pub(super) fn append_once<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    ws: &str,
    entries: &[(Option<String>, NewAuditEntry)],
    retention: AuditRetention,
    window_ms: u64,
    at_ms: u64,
) -> std::io::Result<ShardResponse> {
    let prefix = seen_prefix(ws);
    let cutoff = at_ms.saturating_sub(window_ms);
    let mut fresh = Vec::with_capacity(entries.len());
    for (id, entry) in entries {
        if let Some(id) = id
            .as_deref()
            .filter(|id| !id.is_empty() && id.len() <= MAX_ID_LEN)
        {
            let k = [prefix.as_slice(), id.as_bytes()].concat();
            if get::<u64, R>(txn, &k)?.is_some_and(|seen| seen >= cutoff) {
                continue;
            }
            txn.put(k, encode(&at_ms));
        }
        fresh.push(entry.clone());
    }
    let appended = super::audit::append(txn, ws, &fresh, retention, at_ms)?;
    if let ShardResponse::AuditAppended { first_seq, count } = appended {
        let last_seq = first_seq + count.saturating_sub(1);
        if count > 0 && first_seq.div_ceil(SEEN_TRIM_EVERY) <= last_seq / SEEN_TRIM_EVERY {
            let budget = SEEN_TRIM_BUDGET + 2 * (SEEN_TRIM_EVERY as usize + entries.len());
            forget_expired(txn, &prefix, cutoff, budget)?;
        }
    }
    Ok(appended)
}

/// Deletes, oldest first, up to `budget` remembered records under `prefix` seen before `cutoff`.
fn forget_expired<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    prefix: &[u8],
    cutoff: u64,
    budget: usize,
) -> std::io::Result<()> {
    for (k, v) in txn.scan(prefix, None, budget)? {
        let at: u64 = decode_io(&v)?;
        if at >= cutoff {
            // Ids follow receive time, not append time: stop at the first one still kept.
            break;
        }
        txn.delete(k);
    }
    Ok(())
}

/// Up to `limit` records written before `before_ms` (leader time), among the first `scan`
/// records of the outbox: the ones whose serving node did not clear them in time.
pub fn stale<R: KvRead + ?Sized>(
    kv: &R,
    before_ms: u64,
    scan: usize,
    limit: usize,
) -> std::io::Result<Vec<(String, OutboxRow)>> {
    let mut out = Vec::new();
    for (k, v) in kv.scan(b"O\0", None, scan)? {
        let row: OutboxRow = decode_io(&v)?;
        if row.at_ms < before_ms {
            let id = String::from_utf8_lossy(&k[2..]).into_owned();
            out.push((id, row));
            if out.len() >= limit {
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::error::CoreError;
    use crate::shard::{apply_to_map, ShardCommand};

    type Store = BTreeMap<Vec<u8>, Vec<u8>>;

    fn record(id: &str) -> OutboxRecord {
        OutboxRecord {
            id: id.into(),
            ws: "w".into(),
            entry: NewAuditEntry {
                key_id: "key_1".into(),
                user_id: None,
                via: "rest".into(),
                method: "PUT".into(),
                route: "/v1/context/{key}".into(),
                targets: vec![("key".into(), "plan".into())],
                status: 0,
                request_id: "req_1".into(),
                received_at: 5,
                node_id: 2,
            },
        }
    }

    fn put(key: &str) -> ShardCommand {
        ShardCommand::ContextPut {
            ws: "w".into(),
            key: key.into(),
            value: "1".into(),
        }
    }

    fn audited(cmd: ShardCommand, id: &str) -> ShardCommand {
        ShardCommand::Audited {
            cmd: Box::new(cmd),
            record: record(id),
        }
    }

    #[test]
    fn a_wrapped_write_answers_as_itself_and_keeps_the_record_with_it() {
        let mut plain = Store::new();
        let mut wrapped = Store::new();
        let a = apply_to_map(&mut plain, 3, &put("plan"), 10);
        let b = apply_to_map(&mut wrapped, 3, &audited(put("plan"), "r1"), 10);
        assert_eq!(a, b);
        let rows = stale(&wrapped, 11, 100, 100).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].0, "r1");
        assert_eq!(
            rows[0].1,
            OutboxRow {
                ws: "w".into(),
                entry: record("r1").entry,
                refused: None,
                at_ms: 10,
            }
        );
        // Everything else the write did is the same as without the wrapper.
        wrapped.retain(|k, _| !k.starts_with(b"O\0"));
        assert_eq!(plain, wrapped);
    }

    #[test]
    fn a_refused_write_keeps_its_record_with_the_refusal() {
        let mut s = Store::new();
        let del = ShardCommand::ContextDelete {
            ws: "w".into(),
            key: "missing".into(),
        };
        let out = apply_to_map(&mut s, 3, &audited(del, "r1"), 10);
        assert!(matches!(
            out,
            ShardResponse::Refused(CoreError {
                code: ErrorCode::NotFound,
                ..
            })
        ));
        let rows = stale(&s, 11, 100, 100).unwrap();
        assert_eq!(rows[0].1.refused, Some(ErrorCode::NotFound));
    }

    #[test]
    fn only_records_older_than_the_cutoff_are_stale_and_clear_removes_them() {
        let mut s = Store::new();
        apply_to_map(&mut s, 3, &audited(put("a"), "r1"), 10);
        apply_to_map(&mut s, 3, &audited(put("b"), "r2"), 20);
        apply_to_map(&mut s, 3, &audited(put("c"), "r3"), 30);
        let ids = |rows: Vec<(String, OutboxRow)>| -> Vec<String> {
            rows.into_iter().map(|(id, _)| id).collect()
        };
        assert_eq!(ids(stale(&s, 25, 100, 100).unwrap()), ["r1", "r2"]);
        assert_eq!(ids(stale(&s, 25, 100, 1).unwrap()), ["r1"]);
        assert_eq!(ids(stale(&s, 100, 1, 100).unwrap()), ["r1"]);
        let out = apply_to_map(
            &mut s,
            3,
            &ShardCommand::OutboxClear {
                ids: vec!["r1".into(), "r3".into(), "unknown".into()],
            },
            40,
        );
        assert_eq!(out, ShardResponse::OutboxCleared { count: 3 });
        assert_eq!(ids(stale(&s, 100, 100, 100).unwrap()), ["r2"]);
    }

    fn append_once(ids: &[Option<&str>]) -> ShardCommand {
        ShardCommand::AuditAppendOnce {
            ws: "w".into(),
            entries: ids
                .iter()
                .map(|id| (id.map(String::from), record("r").entry))
                .collect(),
            retention: AuditRetention {
                max_age_ms: u64::MAX,
                max_entries: u64::MAX,
            },
            window_ms: 100,
        }
    }

    fn appended(out: ShardResponse) -> u64 {
        match out {
            ShardResponse::AuditAppended { count, .. } => count,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_entry_whose_record_was_appended_within_the_window_is_skipped() {
        let mut s = Store::new();
        let first = apply_to_map(&mut s, 3, &append_once(&[Some("a"), Some("b")]), 1_000);
        assert_eq!(appended(first), 2);
        // A late retry of one, a relay of both, one repeated in the same append, and entries
        // that name no record: only the new ones count.
        let again = apply_to_map(
            &mut s,
            3,
            &append_once(&[Some("a"), Some("c"), Some("c"), None, None]),
            1_050,
        );
        assert_eq!(appended(again), 3);
        let relay = apply_to_map(&mut s, 3, &append_once(&[Some("a"), Some("b")]), 1_090);
        assert_eq!(appended(relay), 0);
        // Past the window a record is forgotten: its entry is appended again.
        let late = apply_to_map(&mut s, 3, &append_once(&[Some("c"), None]), 1_200);
        assert_eq!(appended(late), 2);
        let seen = |s: &Store| {
            s.keys()
                .filter(|k| k.starts_with(b"Q\0"))
                .map(|k| String::from_utf8_lossy(&k[4..]).into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(seen(&s), ["a", "b", "c"]);
        // The rows of forgotten records go once the sequence passes a trim point (the 7 entries
        // so far, then 256 more): those older than the window, oldest first.
        let many = vec![None; SEEN_TRIM_EVERY as usize];
        let trim = apply_to_map(&mut s, 3, &append_once(&many), 1_300);
        assert_eq!(appended(trim), SEEN_TRIM_EVERY);
        assert_eq!(seen(&s), ["c"]);
    }

    #[test]
    fn ids_sort_by_receive_time() {
        let early = record_id(999, 7, u64::MAX);
        let late = record_id(1_000, 1, 0);
        assert!(early < late, "{early} !< {late}");
    }
}
