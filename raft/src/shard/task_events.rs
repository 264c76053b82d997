//! The replicated, sequenced log of task changes: what live task streams (WebSocket, SSE) read
//! and resume from, so a watcher that re-attaches to a new shard leader after a failover picks
//! up exactly where it left off.
//!
//! Every stored change of a task appends one [`TaskEvent`] to two logs in the same apply:
//! the task's own log (gap-free per task from 1) and its workspace's log on this shard
//! (gap-free per workspace and shard from 1). Both are bounded: appending event `s` removes
//! event `s - kept`, so a log holds at most [`TASK_EVENTS_KEPT`] (per task) or
//! [`WORKSPACE_TASK_EVENTS_KEPT`] (per workspace and shard) of the newest events. The bounds
//! are constants, not settings: apply must be identical on every replica.
//!
//! Key layout (inside the shard's range):
//! - `E\0<task id>\0<seq be>` → [`TaskEvent`] of one task
//! - `e\0<ws>\0<seq be>` → [`TaskEvent`] of the workspace's tasks on this shard
//! - `n\0tevt\0<task id>`, `n\0wtevt\0<ws>` → the logs' newest sequences

use super::io;
use serde::{Deserialize, Serialize};

use super::counter;
use super::tasks::{Task, TaskNote, TaskStatus};
use crate::codec::{decode_io, encode};
use crate::error::CoreError;
use crate::kv::{KvRead, Txn};

/// Most events one task's log keeps (the oldest go first).
pub const TASK_EVENTS_KEPT: u64 = 1_000;
/// Most events a workspace's task log keeps on one shard (the oldest go first).
pub const WORKSPACE_TASK_EVENTS_KEPT: u64 = 10_000;

/// What kind of change an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskEventKind {
    /// The task was created.
    Created,
    /// Its status changed (claim, approval, progress, completion, cancel, lease expiry).
    Status,
    /// A holder renewed its lease.
    Lease,
    /// A note was added.
    Note,
    /// Another field changed.
    Changed,
}

/// One change of a task, as the logs keep it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEvent {
    /// Position in the log it was read from (the task's own, or its workspace's).
    pub seq: u64,
    /// When the change was applied (the leader's time), ms since the epoch.
    pub at: u64,
    /// The task.
    pub task_id: String,
    /// Its queue.
    pub queue: String,
    /// What changed.
    pub kind: TaskEventKind,
    /// The status after the change.
    pub status: TaskStatus,
    /// The status before, when it changed.
    pub previous_status: Option<TaskStatus>,
    /// The holder after the change.
    pub claimed_by: Option<String>,
    /// The fencing token after the change.
    pub fencing_token: Option<u64>,
    /// When the lease ends, after the change.
    pub lease_expires_at: Option<u64>,
    /// The note added, for [`TaskEventKind::Note`].
    pub note: Option<TaskNote>,
}

mod keys {
    pub fn task_prefix(id: &str) -> Vec<u8> {
        [b"E\0", id.as_bytes(), b"\0"].concat()
    }
    pub fn task(id: &str, seq: u64) -> Vec<u8> {
        [task_prefix(id), seq.to_be_bytes().to_vec()].concat()
    }
    pub fn ws_prefix(ws: &str) -> Vec<u8> {
        [b"e\0", ws.as_bytes(), b"\0"].concat()
    }
    pub fn ws(ws: &str, seq: u64) -> Vec<u8> {
        [ws_prefix(ws), seq.to_be_bytes().to_vec()].concat()
    }
    pub fn task_head(id: &str) -> Vec<u8> {
        [b"n\0tevt\0", id.as_bytes()].concat()
    }
    pub fn ws_head(ws: &str) -> Vec<u8> {
        [b"n\0wtevt\0", ws.as_bytes()].concat()
    }
}

/// The event describing the change from `before` to `after`.
fn describe(
    before: Option<&Task>,
    after: &Task,
) -> (TaskEventKind, Option<TaskStatus>, Option<TaskNote>) {
    let Some(b) = before else {
        return (TaskEventKind::Created, None, None);
    };
    if b.status != after.status {
        (TaskEventKind::Status, Some(b.status), None)
    } else if after.notes.len() > b.notes.len() {
        (TaskEventKind::Note, None, after.notes.last().cloned())
    } else if b.lease_expires_at != after.lease_expires_at {
        (TaskEventKind::Lease, None, None)
    } else {
        (TaskEventKind::Changed, None, None)
    }
}

/// Appends the change from `before` to `after` of a task of `ws` to both logs, dropping each
/// log's event that falls out of its bound.
pub(super) fn record<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    ws: &str,
    before: Option<&Task>,
    after: &Task,
) -> std::io::Result<()> {
    let (kind, previous_status, note) = describe(before, after);
    let mut event = TaskEvent {
        seq: 0,
        at: after.updated_at,
        task_id: after.id.clone(),
        queue: after.queue.clone(),
        kind,
        status: after.status,
        previous_status,
        claimed_by: after.claimed_by.clone(),
        fencing_token: after.fencing_token,
        lease_expires_at: after.lease_expires_at,
        note,
    };
    event.seq = counter(txn, &keys::task_head(&after.id))?;
    if event.seq > TASK_EVENTS_KEPT {
        txn.delete(keys::task(&after.id, event.seq - TASK_EVENTS_KEPT));
    }
    txn.put(keys::task(&after.id, event.seq), encode(&event));
    event.seq = counter(txn, &keys::ws_head(ws))?;
    if event.seq > WORKSPACE_TASK_EVENTS_KEPT {
        txn.delete(keys::ws(ws, event.seq - WORKSPACE_TASK_EVENTS_KEPT));
    }
    txn.put(keys::ws(ws, event.seq), encode(&event));
    Ok(())
}

fn scan<R: KvRead + ?Sized>(
    kv: &R,
    prefix: &[u8],
    after: &[u8],
    limit: usize,
) -> Result<Vec<TaskEvent>, CoreError> {
    kv.scan(prefix, Some(after), limit)
        .map_err(io)?
        .iter()
        .map(|(_, v)| decode_io(v).map_err(io))
        .collect()
}

/// Events of task `id` with `seq > since`, ascending (the caller checked the task's workspace).
pub(super) fn of_task<R: KvRead + ?Sized>(
    kv: &R,
    id: &str,
    since: u64,
    limit: usize,
) -> Result<Vec<TaskEvent>, CoreError> {
    scan(kv, &keys::task_prefix(id), &keys::task(id, since), limit)
}

/// Events of `ws`'s tasks on this shard with `seq > since`, ascending.
pub(super) fn of_workspace<R: KvRead + ?Sized>(
    kv: &R,
    ws: &str,
    since: u64,
    limit: usize,
) -> Result<Vec<TaskEvent>, CoreError> {
    scan(kv, &keys::ws_prefix(ws), &keys::ws(ws, since), limit)
}

/// The newest sequence of task `id`'s log (0 before any).
pub(super) fn task_head<R: KvRead + ?Sized>(kv: &R, id: &str) -> Result<u64, CoreError> {
    read_counter(kv, &keys::task_head(id))
}

/// The newest sequence of `ws`'s task log on this shard (0 before any).
pub(super) fn workspace_head<R: KvRead + ?Sized>(kv: &R, ws: &str) -> Result<u64, CoreError> {
    read_counter(kv, &keys::ws_head(ws))
}

fn read_counter<R: KvRead + ?Sized>(kv: &R, key: &[u8]) -> Result<u64, CoreError> {
    Ok(kv
        .get(key)
        .map_err(io)?
        .map(|b| decode_io::<u64>(&b))
        .transpose()
        .map_err(io)?
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::error::ErrorCode;
    use crate::shard::stream::{self, StreamItem, StreamKey};
    use crate::shard::{apply_to_map, ShardCommand, TaskMode, TaskPatch};

    type Store = BTreeMap<Vec<u8>, Vec<u8>>;

    fn create(ws: &str) -> ShardCommand {
        ShardCommand::TaskCreate {
            ws: ws.into(),
            queue: "default".into(),
            title: "t".into(),
            description: String::new(),
            mode: TaskMode::Auto,
            priority: 0,
            metadata: "{}".into(),
            created_by: "key_1".into(),
        }
    }

    fn renew(id: &str, token: u64) -> ShardCommand {
        ShardCommand::TaskUpdate {
            ws: "w".into(),
            id: id.into(),
            patch: TaskPatch {
                agent: Some("a".into()),
                fencing_token: Some(token),
                lease_secs: Some(60),
                by: "key_1".into(),
                ..TaskPatch::default()
            },
        }
    }

    fn events(store: &Store, key: &StreamKey, since: u64) -> Vec<TaskEvent> {
        stream::read(store, key, since, 10_000)
            .unwrap()
            .into_iter()
            .map(|i| match i {
                StreamItem::Task(e) => e,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn every_change_is_logged_per_task_and_per_workspace_in_order() {
        let mut s = Store::new();
        apply_to_map(&mut s, 3, &create("w"), 1);
        apply_to_map(&mut s, 3, &create("other"), 2);
        let claim = ShardCommand::TaskClaim {
            ws: "w".into(),
            id: "task_3_1".into(),
            agent: "a".into(),
            lease_secs: 10,
        };
        apply_to_map(&mut s, 3, &claim, 3);
        apply_to_map(&mut s, 3, &renew("task_3_1", 1), 4);
        // A refused change (wrong token) logs nothing.
        apply_to_map(&mut s, 3, &renew("task_3_1", 9), 5);
        let note = ShardCommand::TaskUpdate {
            ws: "w".into(),
            id: "task_3_1".into(),
            patch: TaskPatch {
                note: Some("half way".into()),
                by: "key_1".into(),
                ..TaskPatch::default()
            },
        };
        apply_to_map(&mut s, 3, &note, 6);
        let expire = ShardCommand::TaskExpireLeases {
            ids: vec!["task_3_1".into()],
        };
        apply_to_map(&mut s, 3, &expire, 100_000);

        let task = StreamKey::Task {
            ws: "w".into(),
            id: "task_3_1".into(),
        };
        let log = events(&s, &task, 0);
        let kinds: Vec<_> = log.iter().map(|e| (e.seq, e.kind, e.status)).collect();
        use TaskStatus::*;
        assert_eq!(
            kinds,
            vec![
                (1, TaskEventKind::Created, Open),
                (2, TaskEventKind::Status, Claimed),
                (3, TaskEventKind::Lease, Claimed),
                (4, TaskEventKind::Note, Claimed),
                (5, TaskEventKind::Status, Open),
            ]
        );
        assert_eq!(log[1].previous_status, Some(Open));
        assert_eq!(log[1].fencing_token, Some(1));
        assert_eq!(
            log[3].note.as_ref().map(|n| n.text.as_str()),
            Some("half way")
        );
        assert_eq!(stream::head(&s, &task).unwrap(), 5);
        assert_eq!(events(&s, &task, 3).first().map(|e| e.seq), Some(4));

        // The workspace log numbers its own events; another workspace's are not in it.
        let ws = StreamKey::Tasks { ws: "w".into() };
        let seqs: Vec<u64> = events(&s, &ws, 0).iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
        let other = StreamKey::Tasks { ws: "other".into() };
        assert_eq!(events(&s, &other, 0).len(), 1);

        // Another workspace's task is not found through its id.
        let foreign = StreamKey::Task {
            ws: "other".into(),
            id: "task_3_1".into(),
        };
        assert!(
            matches!(stream::read(&s, &foreign, 0, 10), Err(e) if e.code == ErrorCode::NotFound)
        );
    }

    #[test]
    fn logs_keep_only_their_newest_events() {
        let mut s = Store::new();
        apply_to_map(&mut s, 3, &create("w"), 1);
        let claim = ShardCommand::TaskClaim {
            ws: "w".into(),
            id: "task_3_1".into(),
            agent: "a".into(),
            lease_secs: 10,
        };
        apply_to_map(&mut s, 3, &claim, 2);
        let total = TASK_EVENTS_KEPT + 10;
        for at in 3..=total {
            apply_to_map(&mut s, 3, &renew("task_3_1", 1), at);
        }
        let task = StreamKey::Task {
            ws: "w".into(),
            id: "task_3_1".into(),
        };
        let log = events(&s, &task, 0);
        assert_eq!(log.len() as u64, TASK_EVENTS_KEPT);
        assert_eq!(
            log.first().map(|e| e.seq),
            Some(total - TASK_EVENTS_KEPT + 1)
        );
        assert_eq!(log.last().map(|e| e.seq), Some(total));
        assert_eq!(stream::head(&s, &task).unwrap(), total);
    }
}
