//! Counters of mutating API calls per workspace, API key and UTC day: what `GET /v1/usage`
//! breaks its call count down by.
//!
//! Every mutating call is an audit entry, so the counters are kept by the audit append
//! ([`super::ShardCommand::AuditAppend`]) in the same apply, on the workspace's audit shard:
//! exact, durable and without a Raft write of their own. The day is the UTC day of the entry's
//! recorded time (the leader's timestamp of the Raft entry), so every replica counts the same
//! call on the same day. Counter rows are separate from the audit entries, so audit retention
//! does not shrink them.
//!
//! Bounded: a workspace keeps the counters of its last [`DAYS_KEPT`] days (at most one row per
//! key that made calls that day). Older rows are removed by the append, from the oldest day, at
//! most [`TRIM_BUDGET`] plus twice the rows it touched per apply, so removal outpaces creation;
//! a workspace that stops writing keeps its rows until its next mutating call.
//!
//! Reads are not counted: they leave no trace in the replicated state.
//!
//! Key layout (letters used here: `D`):
//! - `D\0<ws>\0<day, u64 big endian><key id>` → [`KeyDayCount`] (day-major, so a range of days
//!   is one forward scan and trimming starts at the oldest row).

use super::io;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::audit::NewAuditEntry;
use super::get;
use crate::codec::{decode_io, encode};
use crate::error::CoreError;
use crate::kv::{KvRead, Txn};

/// Days of counters a workspace keeps, today included.
pub const DAYS_KEPT: u64 = 400;

/// Old rows an append may remove beyond twice the rows it touched.
pub const TRIM_BUDGET: u64 = 64;

/// Milliseconds in a UTC day.
pub const DAY_MS: u64 = 86_400_000;

/// Rows read per scan.
const SCAN_CHUNK: usize = 256;

/// The stored counts of one key on one day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyDayCount {
    /// Mutating calls made.
    pub calls: u64,
    /// Of those, calls answered with a 4xx or 5xx status.
    pub errors: u64,
    /// Of those, calls answered with a 5xx status.
    pub server_errors: u64,
}

/// The counts of one key on one day, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyDayUsage {
    /// UTC day, days since the Unix epoch.
    pub day: u64,
    /// The API key.
    pub key_id: String,
    /// Its counts.
    pub count: KeyDayCount,
}

/// A page of counters, by day then key id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyUsagePage {
    /// Counters in `(day, key_id)` order.
    pub items: Vec<KeyDayUsage>,
    /// Continue after this `(day, key_id)`; `None` when the range is exhausted.
    pub next_after: Option<(u64, String)>,
}

/// The UTC day of a time, ms since the epoch.
pub fn day_of(ms: u64) -> u64 {
    ms / DAY_MS
}

mod keys {
    pub fn prefix(ws: &str) -> Vec<u8> {
        [b"D\0", ws.as_bytes(), b"\0"].concat()
    }
    pub fn day(ws: &str, d: u64) -> Vec<u8> {
        [prefix(ws), d.to_be_bytes().to_vec()].concat()
    }
    pub fn row(ws: &str, d: u64, key_id: &str) -> Vec<u8> {
        [day(ws, d), key_id.as_bytes().to_vec()].concat()
    }
    /// `(day, key id)` of a row key under `prefix`.
    pub fn parse(prefix_len: usize, key: &[u8]) -> Option<(u64, String)> {
        let rest = key.get(prefix_len..)?;
        let (day, id) = rest.split_at_checked(8)?;
        let day = u64::from_be_bytes(day.try_into().ok()?);
        Some((day, String::from_utf8(id.to_vec()).ok()?))
    }
}

/// Counts `entries`, recorded at leader time `at_ms`, then removes rows older than
/// [`DAYS_KEPT`] days.
pub(super) fn count<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    ws: &str,
    entries: &[NewAuditEntry],
    at_ms: u64,
) -> std::io::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let today = day_of(at_ms);
    let mut added: BTreeMap<&str, KeyDayCount> = BTreeMap::new();
    for e in entries {
        let c = added.entry(e.key_id.as_str()).or_default();
        c.calls += 1;
        c.errors += u64::from(e.status >= 400);
        c.server_errors += u64::from(e.status >= 500);
    }
    let touched = added.len() as u64;
    for (key_id, add) in added {
        let k = keys::row(ws, today, key_id);
        let mut c = get::<KeyDayCount, R>(txn, &k)?.unwrap_or_default();
        c.calls += add.calls;
        c.errors += add.errors;
        c.server_errors += add.server_errors;
        txn.put(k, encode(&c));
    }
    trim(txn, ws, today, TRIM_BUDGET + 2 * touched)
}

/// Removes up to `budget` rows of days before the kept window, oldest first.
fn trim<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    ws: &str,
    today: u64,
    budget: u64,
) -> std::io::Result<()> {
    let oldest_kept = today.saturating_sub(DAYS_KEPT - 1);
    let prefix = keys::prefix(ws);
    let too_old = |k: &[u8]| keys::parse(prefix.len(), k).is_none_or(|(d, _)| d < oldest_kept);
    // Usually the oldest row is recent enough: one row read.
    let first = txn.scan(&prefix, None, 1)?;
    if !first.first().is_some_and(|(k, _)| too_old(k)) {
        return Ok(());
    }
    let limit = usize::try_from(budget).unwrap_or(usize::MAX);
    for (k, _) in txn.scan(&prefix, None, limit)? {
        if !too_old(&k) {
            break;
        }
        txn.delete(k);
    }
    Ok(())
}

/// Up to `limit` counters of `ws` for days `from_day..=to_day`, after `after` (a previous
/// page's `next_after`), only `key_id`'s when given.
pub(super) fn list<R: KvRead + ?Sized>(
    kv: &R,
    ws: &str,
    from_day: u64,
    to_day: u64,
    key_id: Option<&str>,
    after: Option<&(u64, String)>,
    limit: usize,
) -> Result<KeyUsagePage, CoreError> {
    let limit = limit.max(1);
    let mut items = Vec::new();
    if let Some(key_id) = key_id {
        // One row per day at most: read them directly.
        let start = match after {
            Some((day, _)) => day.saturating_add(1).max(from_day),
            None => from_day,
        };
        let mut day = start;
        while day <= to_day {
            if let Some(b) = kv.get(&keys::row(ws, day, key_id)).map_err(io)? {
                items.push(KeyDayUsage {
                    day,
                    key_id: key_id.to_string(),
                    count: decode_io(&b).map_err(io)?,
                });
                if items.len() == limit {
                    let next = (day < to_day).then(|| (day, key_id.to_string()));
                    return Ok(KeyUsagePage {
                        items,
                        next_after: next,
                    });
                }
            }
            day += 1;
        }
        return Ok(KeyUsagePage {
            items,
            next_after: None,
        });
    }
    let prefix = keys::prefix(ws);
    // Rows of `from_day` all sort after the bare day key (key ids are never empty).
    let mut cursor = match after {
        Some((day, id)) if *day >= from_day => keys::row(ws, *day, id),
        _ => keys::day(ws, from_day),
    };
    loop {
        let rows = kv.scan(&prefix, Some(&cursor), SCAN_CHUNK).map_err(io)?;
        let exhausted = rows.len() < SCAN_CHUNK;
        for (k, v) in rows {
            let Some((day, id)) = keys::parse(prefix.len(), &k) else {
                continue;
            };
            if day > to_day {
                return Ok(KeyUsagePage {
                    items,
                    next_after: None,
                });
            }
            cursor = k;
            items.push(KeyDayUsage {
                day,
                key_id: id.clone(),
                count: decode_io(&v).map_err(io)?,
            });
            if items.len() == limit {
                return Ok(KeyUsagePage {
                    items,
                    next_after: Some((day, id)),
                });
            }
        }
        if exhausted {
            return Ok(KeyUsagePage {
                items,
                next_after: None,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::shard::audit::AuditRetention;
    use crate::shard::{apply_to_map, query, ShardCommand, ShardQuery, ShardReadResult};

    type Store = BTreeMap<Vec<u8>, Vec<u8>>;

    const KEEP_ALL: AuditRetention = AuditRetention {
        max_age_ms: u64::MAX,
        max_entries: u64::MAX,
    };

    fn call(key: &str, status: u16) -> NewAuditEntry {
        NewAuditEntry {
            key_id: key.into(),
            user_id: None,
            via: "rest".into(),
            method: "POST".into(),
            route: "/v1/tasks".into(),
            targets: vec![],
            status,
            request_id: "req".into(),
            received_at: 0,
            node_id: 1,
        }
    }

    fn append(s: &mut Store, ws: &str, calls: Vec<NewAuditEntry>, r: AuditRetention, at: u64) {
        let cmd = ShardCommand::AuditAppend {
            ws: ws.into(),
            entries: calls,
            retention: r,
        };
        apply_to_map(s, 1, &cmd, at);
    }

    fn list_page(
        s: &Store,
        ws: &str,
        days: (u64, u64),
        key_id: Option<&str>,
        after: Option<(u64, String)>,
        limit: usize,
    ) -> KeyUsagePage {
        let q = ShardQuery::KeyUsage {
            ws: ws.into(),
            from_day: days.0,
            to_day: days.1,
            key_id: key_id.map(str::to_string),
            after,
            limit,
        };
        match query(s, &q).unwrap() {
            ShardReadResult::KeyUsage(p) => p,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// `(day, key, calls, errors, server errors)` of every row, following pages of `limit`.
    fn all(
        s: &Store,
        ws: &str,
        days: (u64, u64),
        key_id: Option<&str>,
        limit: usize,
    ) -> Vec<(u64, String, u64, u64, u64)> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = list_page(s, ws, days, key_id, after, limit);
            assert!(page.items.len() <= limit);
            out.extend(page.items.into_iter().map(|r| {
                (
                    r.day,
                    r.key_id,
                    r.count.calls,
                    r.count.errors,
                    r.count.server_errors,
                )
            }));
            match page.next_after {
                Some(a) => after = Some(a),
                None => return out,
            }
        }
    }

    fn row(day: u64, key: &str, c: u64, e: u64, se: u64) -> (u64, String, u64, u64, u64) {
        (day, key.to_string(), c, e, se)
    }

    #[test]
    fn calls_are_counted_per_key_and_day_with_their_failures() {
        let mut s = Store::new();
        append(
            &mut s,
            "w",
            vec![call("key_1", 201), call("key_2", 404), call("key_1", 200)],
            KEEP_ALL,
            3 * DAY_MS + 5,
        );
        append(
            &mut s,
            "w",
            vec![call("key_1", 503)],
            KEEP_ALL,
            4 * DAY_MS - 1,
        );
        append(&mut s, "w", vec![call("key_2", 201)], KEEP_ALL, 4 * DAY_MS);
        append(
            &mut s,
            "other",
            vec![call("key_9", 201)],
            KEEP_ALL,
            4 * DAY_MS,
        );

        let want = vec![
            row(3, "key_1", 3, 1, 1),
            row(3, "key_2", 1, 1, 0),
            row(4, "key_2", 1, 0, 0),
        ];
        assert_eq!(all(&s, "w", (0, 10), None, 100), want);
        // Paged one row at a time: the same rows, none skipped or repeated.
        assert_eq!(all(&s, "w", (0, 10), None, 1), want);
        // A range, a key.
        assert_eq!(all(&s, "w", (4, 4), None, 100), want[2..]);
        assert_eq!(all(&s, "w", (0, 3), None, 100), want[..2]);
        assert_eq!(
            all(&s, "w", (0, 10), Some("key_2"), 1),
            vec![want[1].clone(), want[2].clone()]
        );
        assert_eq!(all(&s, "w", (0, 10), Some("key_3"), 10), vec![]);
        assert_eq!(
            all(&s, "other", (0, 10), None, 10),
            vec![row(4, "key_9", 1, 0, 0)]
        );
    }

    #[test]
    fn counters_outlive_audit_retention() {
        let mut s = Store::new();
        let keep_one = AuditRetention {
            max_age_ms: 1,
            max_entries: 1,
        };
        for i in 0..10 {
            append(&mut s, "w", vec![call("key_1", 201)], keep_one, DAY_MS + i);
        }
        let audit = ShardQuery::AuditList {
            ws: "w".into(),
            before: None,
            filter: Default::default(),
            limit: 100,
        };
        let ShardReadResult::AuditPage(p) = query(&s, &audit).unwrap() else {
            panic!()
        };
        assert_eq!(p.items.len(), 1, "the audit log is trimmed");
        assert_eq!(
            all(&s, "w", (0, 5), None, 10),
            vec![row(1, "key_1", 10, 0, 0)]
        );
    }

    #[test]
    fn days_past_the_window_are_removed_by_later_appends() {
        let mut s = Store::new();
        // Day 0: more keys than one append may remove.
        let many: Vec<_> = (0..200).map(|i| call(&format!("key_{i}"), 201)).collect();
        append(&mut s, "w", many, KEEP_ALL, 0);
        append(&mut s, "w", vec![call("key_1", 201)], KEEP_ALL, DAY_MS);
        // The last day of the window still keeps day 0.
        append(
            &mut s,
            "w",
            vec![call("key_1", 201)],
            KEEP_ALL,
            (DAYS_KEPT - 1) * DAY_MS,
        );
        assert_eq!(all(&s, "w", (0, 0), None, 1000).len(), 200);
        // One day later day 0 falls out, a bounded number of rows per append.
        let later = DAYS_KEPT * DAY_MS;
        append(&mut s, "w", vec![call("key_1", 201)], KEEP_ALL, later);
        let left = all(&s, "w", (0, 0), None, 1000).len() as u64;
        assert_eq!(left, 200 - (TRIM_BUDGET + 2));
        for i in 1..10 {
            append(&mut s, "w", vec![call("key_1", 201)], KEEP_ALL, later + i);
        }
        assert_eq!(all(&s, "w", (0, 0), None, 1000), vec![]);
        assert_eq!(
            all(&s, "w", (1, DAYS_KEPT), None, 1000),
            vec![
                row(1, "key_1", 1, 0, 0),
                row(DAYS_KEPT - 1, "key_1", 1, 0, 0),
                row(DAYS_KEPT, "key_1", 10, 0, 0),
            ]
        );
    }
}
