//! The audit log: one entry per mutating API call of a workspace, replicated like any entity.
//!
//! A workspace's audit entries live on one shard (`shard_for(ws, "audit", "")`), so they form
//! one sequence: apply numbers them gap-free from 1 and a list pages newest first with the last
//! seen number as its cursor, never skipping or repeating a row. The edge gathers the entries
//! of concurrent calls into one [`super::ShardCommand::AuditAppend`] per workspace, so one Raft
//! entry carries many of them.
//!
//! Retention is bounded twice, by the limits the proposing node passes in the command (so apply
//! stays deterministic): entries older than `max_age_ms` and entries beyond the newest
//! `max_entries` are removed from the oldest end, at most [`TRIM_BUDGET`] plus twice the
//! appended count per apply, so trimming outpaces appends without making one apply unbounded.
//! Trimming runs only when entries are appended; a workspace that stops writing keeps its last
//! entries until its next mutating call.
//!
//! The same apply counts the appended calls per API key and UTC day
//! ([`super::key_usage`]), in rows of their own that this trimming leaves alone.
//!
//! Key layout (letters used here: `A`; counters live with the shard's other counters under `n`):
//! - `A\0<ws>\0<u64::MAX - seq, big endian>` → [`AuditEntry`] (inverted, so a forward scan
//!   reads newest first);
//! - `n\0audit\0<ws>` → the last number handed out;
//! - `n\0audit_first\0<ws>` → the oldest number still kept.

use super::io;
use serde::{Deserialize, Serialize};

use super::{counter, get, ShardReadResult, ShardResponse};
use crate::codec::{decode_io, encode};
use crate::error::CoreError;
use crate::kv::{KvRead, Txn};

/// Old rows an append may remove beyond twice the number it appends.
pub const TRIM_BUDGET: u64 = 64;

/// Rows one list query examines at most; a filtered list that finds too few matches within
/// them answers a cursor to continue from.
pub const SCAN_BUDGET: usize = 10_000;

/// How far a leader's clock may lag behind an earlier leader's: a `since` filter stops the scan
/// only at entries older than `since` by more than this.
pub const CLOCK_SKEW_MS: u64 = 60_000;

/// Rows read per scan.
const SCAN_CHUNK: usize = 256;

/// One mutating call, as the node that served it saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAuditEntry {
    /// The API key the call carried.
    pub key_id: String,
    /// The user the key belongs to, if any.
    pub user_id: Option<String>,
    /// The transport the call came in by: `rest` or `mcp`.
    pub via: String,
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// The route template, e.g. `/v1/tasks/{id}/claim`.
    pub route: String,
    /// `(name, value)` of the ids the call addressed: path parameters, and the `id` of what a
    /// successful call created or changed.
    pub targets: Vec<(String, String)>,
    /// The HTTP status answered.
    pub status: u16,
    /// Correlates the entry with the request (the `x-request-id` answered to the client).
    pub request_id: String,
    /// When the serving node received the call, ms since the epoch (its own clock).
    pub received_at: u64,
    /// The node that served the call.
    pub node_id: u64,
}

/// A recorded audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// `aud_<seq>`.
    pub id: String,
    /// Gap-free from 1 within the workspace.
    pub seq: u64,
    /// When it was recorded (the audit shard leader's time), ms since the epoch.
    pub at: u64,
    /// The call.
    pub entry: NewAuditEntry,
}

/// Retention limits, chosen by node configuration and carried in each append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRetention {
    /// Entries older than this (by their recorded time) are removed.
    pub max_age_ms: u64,
    /// At most this many of the newest entries are kept per workspace.
    pub max_entries: u64,
}

/// What a list keeps; every given field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFilter {
    /// Only calls made with this key.
    pub key_id: Option<String>,
    /// Only calls that came in by this transport.
    pub via: Option<String>,
    /// Only calls whose action (`METHOD route`) starts with this.
    pub action: Option<String>,
    /// Only entries recorded at or after this time.
    pub since: Option<u64>,
    /// Only entries recorded at or before this time.
    pub until: Option<u64>,
    /// Only calls that succeeded (a 2xx status).
    pub succeeded: bool,
}

impl AuditFilter {
    fn matches(&self, e: &AuditEntry) -> bool {
        let n = &e.entry;
        self.key_id.as_ref().is_none_or(|k| *k == n.key_id)
            && self.via.as_ref().is_none_or(|v| *v == n.via)
            && self.action.as_ref().is_none_or(|a| {
                let action = format!("{} {}", n.method, n.route);
                action.starts_with(a.as_str())
            })
            && self.since.is_none_or(|s| e.at >= s)
            && self.until.is_none_or(|u| e.at <= u)
            && (!self.succeeded || (200..300).contains(&n.status))
    }
}

/// A page of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPage {
    /// Matching entries, newest first.
    pub items: Vec<AuditEntry>,
    /// Continue below this number; `None` when nothing older can match.
    pub next_before: Option<u64>,
}

/// The event type of a change: the resource (singular), then what was done to it.
///
/// `POST` on a collection is `created`, `PUT` `set`, `PATCH` `updated`, `DELETE` on an item
/// `deleted`; an action route names the action (`POST /v1/tasks/{id}/claim` → `task.claim`),
/// with `.added` / `.removed` when a parameter follows it
/// (`DELETE /v1/topics/{name}/teams/{id}` → `topic.teams.removed`).
pub fn event_type(method: &str, route: &str) -> String {
    let parts: Vec<&str> = route
        .trim_start_matches("/v1/")
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    let (resource, rest) = match parts.as_slice() {
        ["context", "embeddings", rest @ ..] => ("embedding".to_string(), rest),
        [first, rest @ ..] => (singular(first), rest),
        [] => ("workspace".to_string(), &[][..]),
    };
    let is_param = |p: &&str| p.starts_with('{');
    let action = rest.iter().rposition(|p| !is_param(p));
    let verb = match action {
        Some(i) => {
            let name = rest[i].replace('-', "_");
            let then_param = i + 1 < rest.len();
            match (method, then_param) {
                ("DELETE", _) => format!("{name}.removed"),
                ("POST", true) => format!("{name}.added"),
                ("PATCH", _) | ("PUT", _) => format!("{name}.updated"),
                _ => name,
            }
        }
        None => match (method, rest.is_empty()) {
            ("POST", true) => "created".to_string(),
            ("PUT", _) => "set".to_string(),
            ("PATCH", _) => "updated".to_string(),
            ("DELETE", _) => "deleted".to_string(),
            (m, _) => m.to_lowercase(),
        },
    };
    format!("{resource}.{verb}")
}

fn singular(segment: &str) -> String {
    let s = segment.replace('-', "_");
    match s.strip_suffix('s') {
        Some(stem) if !stem.ends_with('s') => stem.to_string(),
        _ => s,
    }
}

mod keys {
    pub fn prefix(ws: &str) -> Vec<u8> {
        [b"A\0", ws.as_bytes(), b"\0"].concat()
    }
    pub fn row(ws: &str, seq: u64) -> Vec<u8> {
        [prefix(ws), (u64::MAX - seq).to_be_bytes().to_vec()].concat()
    }
    pub fn counter(ws: &str) -> Vec<u8> {
        [b"n\0audit\0", ws.as_bytes()].concat()
    }
    pub fn first(ws: &str) -> Vec<u8> {
        [b"n\0audit_first\0", ws.as_bytes()].concat()
    }
}

/// Appends `entries` to `ws`'s log at leader time `at_ms`, counts them per key and day
/// ([`super::key_usage`]), then trims past `retention`.
pub(super) fn append<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    ws: &str,
    entries: &[NewAuditEntry],
    retention: AuditRetention,
    at_ms: u64,
) -> std::io::Result<ShardResponse> {
    let mut first_seq = 0;
    let mut last = 0;
    let mut rows = Vec::with_capacity(entries.len());
    for e in entries {
        let seq = counter(txn, &keys::counter(ws))?;
        if first_seq == 0 {
            first_seq = seq;
        }
        last = seq;
        let row = AuditEntry {
            id: format!("aud_{seq}"),
            seq,
            at: at_ms,
            entry: e.clone(),
        };
        txn.put(keys::row(ws, seq), encode(&row));
        rows.push(row);
    }
    super::webhook::enqueue(txn, ws, &rows, at_ms)?;
    if last > 0 {
        trim(txn, ws, last, retention, at_ms, entries.len() as u64)?;
    }
    super::key_usage::count(txn, ws, entries, at_ms)?;
    Ok(ShardResponse::AuditAppended {
        first_seq,
        count: entries.len() as u64,
    })
}

/// Removes rows from the oldest end while they are too many or too old.
fn trim<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    ws: &str,
    last: u64,
    retention: AuditRetention,
    at_ms: u64,
    appended: u64,
) -> std::io::Result<()> {
    let first_key = keys::first(ws);
    let mut first = get::<u64, R>(txn, &first_key)?.unwrap_or(1);
    let oldest_allowed = at_ms.saturating_sub(retention.max_age_ms);
    let max_entries = retention.max_entries.max(1);
    let mut budget = TRIM_BUDGET + 2 * appended;
    let start = first;
    while first <= last && budget > 0 {
        let too_many = last - first + 1 > max_entries;
        let too_old = !too_many
            && match get::<AuditEntry, R>(txn, &keys::row(ws, first))? {
                Some(row) => row.at < oldest_allowed,
                // Already gone (never written): move past it.
                None => true,
            };
        if !(too_many || too_old) {
            break;
        }
        txn.delete(keys::row(ws, first));
        first += 1;
        budget -= 1;
    }
    if first != start || txn.get(&first_key)?.is_none() {
        txn.put(first_key, encode(&first));
    }
    Ok(())
}

/// Up to `limit` entries of `ws` numbered below `before` (all when `None`) that match
/// `filter`, newest first, examining at most [`SCAN_BUDGET`] rows.
pub(super) fn list<R: KvRead + ?Sized>(
    kv: &R,
    ws: &str,
    before: Option<u64>,
    filter: &AuditFilter,
    limit: usize,
) -> Result<ShardReadResult, CoreError> {
    let prefix = keys::prefix(ws);
    let mut after = before.map(|b| keys::row(ws, b));
    let mut items: Vec<AuditEntry> = Vec::new();
    let mut scanned = 0usize;
    let stop_below = filter.since.map(|s| s.saturating_sub(CLOCK_SKEW_MS));
    loop {
        let rows = kv.scan(&prefix, after.as_deref(), SCAN_CHUNK).map_err(io)?;
        let exhausted = rows.len() < SCAN_CHUNK;
        for (k, v) in rows {
            let row: AuditEntry = decode_io(&v).map_err(io)?;
            after = Some(k);
            scanned += 1;
            if stop_below.is_some_and(|s| row.at < s) {
                return Ok(page(items, None));
            }
            let seq = row.seq;
            if filter.matches(&row) {
                items.push(row);
                if items.len() == limit {
                    return Ok(page(items, Some(seq)));
                }
            }
            if scanned >= SCAN_BUDGET {
                return Ok(page(items, Some(seq)));
            }
        }
        if exhausted {
            return Ok(page(items, None));
        }
    }
}

/// How many entries `ws`'s log has recorded since it began (its last number).
pub(super) fn recorded<R: KvRead + ?Sized>(kv: &R, ws: &str) -> std::io::Result<u64> {
    Ok(kv
        .get(&keys::counter(ws))?
        .map(|b| decode_io::<u64>(&b))
        .transpose()?
        .unwrap_or(0))
}

fn page(items: Vec<AuditEntry>, next_before: Option<u64>) -> ShardReadResult {
    ShardReadResult::AuditPage(AuditPage { items, next_before })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::shard::{apply_to_map, query, ShardCommand, ShardQuery};

    type Store = BTreeMap<Vec<u8>, Vec<u8>>;

    const KEEP_ALL: AuditRetention = AuditRetention {
        max_age_ms: u64::MAX,
        max_entries: u64::MAX,
    };

    fn entry(key: &str, method: &str, route: &str, via: &str) -> NewAuditEntry {
        NewAuditEntry {
            key_id: key.into(),
            user_id: None,
            via: via.into(),
            method: method.into(),
            route: route.into(),
            targets: vec![],
            status: 201,
            request_id: "req_1".into(),
            received_at: 0,
            node_id: 1,
        }
    }

    fn append_at(
        store: &mut Store,
        ws: &str,
        entries: Vec<NewAuditEntry>,
        r: AuditRetention,
        at: u64,
    ) {
        let cmd = ShardCommand::AuditAppend {
            ws: ws.into(),
            entries,
            retention: r,
        };
        apply_to_map(store, 1, &cmd, at);
    }

    fn page_of(
        store: &Store,
        ws: &str,
        before: Option<u64>,
        f: AuditFilter,
        limit: usize,
    ) -> (Vec<u64>, Option<u64>) {
        let q = ShardQuery::AuditList {
            ws: ws.into(),
            before,
            filter: f,
            limit,
        };
        match query(store, &q).unwrap() {
            ShardReadResult::AuditPage(p) => {
                (p.items.iter().map(|e| e.seq).collect(), p.next_before)
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn event_types_name_the_resource_and_the_change() {
        for (method, route, want) in [
            ("POST", "/v1/tasks", "task.created"),
            ("POST", "/v1/tasks/{id}/claim", "task.claim"),
            ("PATCH", "/v1/tasks/{id}", "task.updated"),
            ("PUT", "/v1/context/{key}", "context.set"),
            ("DELETE", "/v1/context/{key}", "context.deleted"),
            ("POST", "/v1/context/embeddings", "embedding.created"),
            ("POST", "/v1/topics/{name}/teams/{id}", "topic.teams.added"),
            (
                "DELETE",
                "/v1/topics/{name}/teams/{id}",
                "topic.teams.removed",
            ),
            (
                "DELETE",
                "/v1/topics/{name}/subscribe",
                "topic.subscribe.removed",
            ),
            ("POST", "/v1/api-keys/{id}/rotate", "api_key.rotate"),
            (
                "PATCH",
                "/v1/workspaces/{id}/settings",
                "workspace.settings.updated",
            ),
            ("POST", "/v1/messages", "message.created"),
        ] {
            assert_eq!(event_type(method, route), want, "{method} {route}");
        }
    }

    #[test]
    fn entries_are_numbered_per_workspace_and_page_newest_first() {
        let mut s = Store::new();
        let batch = vec![
            entry("k1", "POST", "/v1/tasks", "rest"),
            entry("k2", "DELETE", "/v1/context/{key}", "mcp"),
            entry("k1", "POST", "/v1/tasks/{id}/claim", "rest"),
        ];
        append_at(&mut s, "a", batch, KEEP_ALL, 10);
        append_at(
            &mut s,
            "a",
            vec![entry("k1", "PUT", "/v1/context/{key}", "rest")],
            KEEP_ALL,
            20,
        );
        append_at(
            &mut s,
            "b",
            vec![entry("k9", "POST", "/v1/topics", "rest")],
            KEEP_ALL,
            30,
        );
        let all = AuditFilter::default();
        assert_eq!(
            page_of(&s, "a", None, all.clone(), 2),
            (vec![4, 3], Some(3))
        );
        assert_eq!(
            page_of(&s, "a", Some(3), all.clone(), 2),
            (vec![2, 1], Some(1))
        );
        assert_eq!(page_of(&s, "a", Some(1), all.clone(), 2), (vec![], None));
        assert_eq!(page_of(&s, "b", None, all, 10), (vec![1], None));
        let by_key = AuditFilter {
            key_id: Some("k1".into()),
            ..Default::default()
        };
        assert_eq!(page_of(&s, "a", None, by_key, 10).0, vec![4, 3, 1]);
        let by_action = AuditFilter {
            action: Some("POST /v1/tasks".into()),
            ..Default::default()
        };
        assert_eq!(page_of(&s, "a", None, by_action, 10).0, vec![3, 1]);
        let by_via = AuditFilter {
            via: Some("mcp".into()),
            ..Default::default()
        };
        assert_eq!(page_of(&s, "a", None, by_via, 10).0, vec![2]);
        let window = AuditFilter {
            since: Some(15),
            until: Some(25),
            ..Default::default()
        };
        assert_eq!(page_of(&s, "a", None, window, 10).0, vec![4]);
    }

    #[test]
    fn retention_keeps_only_the_newest_and_the_recent() {
        let mut s = Store::new();
        let by_count = AuditRetention {
            max_age_ms: u64::MAX,
            max_entries: 3,
        };
        for i in 0..5 {
            append_at(
                &mut s,
                "a",
                vec![entry("k", "POST", "/v1/x", "rest")],
                by_count,
                i,
            );
        }
        assert_eq!(
            page_of(&s, "a", None, AuditFilter::default(), 10).0,
            vec![5, 4, 3]
        );
        // By age: an append at 1 000 drops everything recorded before 1 000 - 100.
        let by_age = AuditRetention {
            max_age_ms: 100,
            max_entries: 1_000,
        };
        append_at(
            &mut s,
            "a",
            vec![entry("k", "POST", "/v1/x", "rest")],
            by_age,
            1_000,
        );
        assert_eq!(
            page_of(&s, "a", None, AuditFilter::default(), 10).0,
            vec![6]
        );
    }

    #[test]
    fn a_filtered_scan_is_bounded_and_resumable() {
        let mut s = Store::new();
        let n = SCAN_BUDGET + 10;
        let mut batch = vec![entry("rare", "POST", "/v1/x", "rest")];
        batch.extend((1..n).map(|_| entry("common", "POST", "/v1/x", "rest")));
        append_at(&mut s, "a", batch, KEEP_ALL, 5);
        let rare = AuditFilter {
            key_id: Some("rare".into()),
            ..Default::default()
        };
        let (items, next) = page_of(&s, "a", None, rare.clone(), 10);
        assert!(items.is_empty());
        let next = next.expect("a budget-limited scan answers where to continue");
        assert_eq!(page_of(&s, "a", Some(next), rare, 10), (vec![1], None));
    }
}
