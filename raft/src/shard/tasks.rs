//! Tasks of a workspace's queue: creation, approval, claims under a lease with a fencing token,
//! holder updates, notes, lease expiry, and the workspace's list in creation order.
//!
//! Invariants kept here: a task has at most one holder at a time; every claim gets a fencing
//! token greater than any before it on the shard (the counter never goes back, and a task that
//! returns to the queue keeps its old token, so its next claim's token is larger); status moves
//! only along the table of [`legal`] (anything else is a 409); a task holds at most
//! [`MAX_NOTES`] notes; apply reads only the command, the stored state and the leader's `at_ms`.
//!
//! Key prefixes (inside the shard's range; `\0` separates parts, names never contain it):
//! - `k\0<id>` → `StoredTask` (shared with the existing task layout in `mod.rs`)
//! - `n\0task`, `n\0fence` → counters of task ids and fencing tokens (in `mod.rs`)
//! - `K\0<ws>\0<n be>` → task id: the workspace's tasks in creation order
//! - `L\0<expires_at be>\0<id>` → empty: leases by expiry, so the shard leader finds the due ones
//! - `E\0…`, `e\0…` → the task event logs every stored change appends to (see [`super::task_events`])

use super::io;
use serde::{Deserialize, Serialize};

use super::{counter, get, keys, task_id, ShardReadResult, ShardResponse};
use crate::codec::{decode_io, encode};
use crate::error::CoreError;
use crate::kv::{KvRead, Txn};
use crate::types::GroupId;

/// Most notes one task keeps.
pub const MAX_NOTES: usize = 100;
/// Longest note, characters.
pub const MAX_NOTE_CHARS: usize = 4 * 1024;
/// Longest lease a claim or renewal may ask for: one day.
pub const MAX_LEASE_SECS: u64 = 24 * 3600;
/// Most tasks a list looks at for one page (a status filter may skip many); a page may then be
/// short, and its cursor continues from the last task looked at.
pub const MAX_LIST_SCAN: usize = 5_000;

/// How a task may be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskMode {
    /// Claimable as soon as created.
    Auto,
    /// Claimable only after an approval.
    Approval,
    /// Agents may claim but not create (creation needs an admin key).
    ClaimOnly,
}

/// A task's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Waiting for approval (mode `approval`).
    PendingApproval,
    /// Claimable.
    Open,
    /// Held by an agent under a lease.
    Claimed,
    /// Held by an agent under a lease, and being worked on.
    InProgress,
    /// Finished (terminal).
    Done,
    /// Given up (terminal).
    Failed,
    /// Withdrawn by an admin (terminal).
    Cancelled,
}

impl TaskStatus {
    /// Every status, in table order.
    pub const ALL: [TaskStatus; 7] = [
        TaskStatus::PendingApproval,
        TaskStatus::Open,
        TaskStatus::Claimed,
        TaskStatus::InProgress,
        TaskStatus::Done,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ];

    /// Whether an agent holds the task under a lease in this status.
    pub fn holds_lease(self) -> bool {
        matches!(self, TaskStatus::Claimed | TaskStatus::InProgress)
    }

    /// Whether nothing can move the task out of this status.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Done | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }

    /// The status as clients write it.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::PendingApproval => "pending_approval",
            TaskStatus::Open => "open",
            TaskStatus::Claimed => "claimed",
            TaskStatus::InProgress => "in_progress",
            TaskStatus::Done => "done",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }
}

/// Whether `PATCH` may move a task from `from` to `to`: the holder moves a claimed task to
/// in_progress, done, failed or back to open, and an in_progress one to done, failed or open;
/// an admin cancels any task that is not terminal. (Approval, claim and lease expiry are their
/// own commands: pending_approval→open, open→claimed, claimed|in_progress→open.)
pub fn legal(from: TaskStatus, to: TaskStatus) -> bool {
    use TaskStatus::*;
    matches!(
        (from, to),
        (Claimed, InProgress | Done | Failed | Open)
            | (InProgress, Done | Failed | Open)
            | (PendingApproval | Open | Claimed | InProgress, Cancelled)
    )
}

/// A note on a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskNote {
    /// When it was added, ms since the epoch.
    pub at: u64,
    /// The agent that wrote it, else the API key id.
    pub by: String,
    /// Its text.
    pub text: String,
}

/// A task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// `task_<shard>_<n>`: the shard is part of the id so lookups route without an index.
    pub id: String,
    /// Queue it belongs to.
    pub queue: String,
    /// Short title.
    pub title: String,
    /// Longer text.
    pub description: String,
    /// How it may be taken.
    pub mode: TaskMode,
    /// Its state.
    pub status: TaskStatus,
    /// Larger is more urgent; informational.
    pub priority: i32,
    /// JSON text of the client's metadata object.
    pub metadata: String,
    /// Milliseconds since the epoch.
    pub created_at: u64,
    /// Id of the API key that created it.
    pub created_by: String,
    /// Id of the API key that approved it.
    pub approved_by: Option<String>,
    /// When it was approved, ms since the epoch.
    pub approved_at: Option<u64>,
    /// The agent holding it (kept after done/failed as the one who finished it).
    pub claimed_by: Option<String>,
    /// When the current lease ends, ms since the epoch.
    pub lease_expires_at: Option<u64>,
    /// The token of the latest claim; grows with every claim on the shard.
    pub fencing_token: Option<u64>,
    /// Notes, oldest first, at most [`MAX_NOTES`].
    pub notes: Vec<TaskNote>,
    /// When it last changed, ms since the epoch.
    pub updated_at: u64,
}

impl Task {
    /// Whether an agent held it under a lease that ended at or before `now`.
    pub fn lease_expired(&self, now: u64) -> bool {
        self.status.holds_lease() && self.lease_expires_at.is_some_and(|end| end <= now)
    }

    /// The task as it stands at `now`: a lease that has ended returns it to the queue (open,
    /// no holder, the old fencing token kept). Stored state catches up through
    /// [`expire`](super::ShardCommand::TaskExpireLeases); readers see it at once.
    pub fn at(mut self, now: u64) -> Task {
        if self.lease_expired(now) {
            self.status = TaskStatus::Open;
            self.claimed_by = None;
            self.lease_expires_at = None;
        }
        self
    }

    /// The per-shard number in its id.
    pub fn number(&self) -> Option<u64> {
        number_of(&self.id)
    }
}

/// A page of a workspace's tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskPage {
    /// Tasks in creation order.
    pub tasks: Vec<Task>,
    /// Number of the last task looked at, when more may follow.
    pub next_after: Option<u64>,
}

/// A task with the workspace that owns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct StoredTask {
    pub(super) ws: String,
    pub(super) task: Task,
}

/// The number `n` of `task_<shard>_<n>`.
fn number_of(id: &str) -> Option<u64> {
    id.strip_prefix("task_")?.split_once('_')?.1.parse().ok()
}

fn index_prefix(ws: &str) -> Vec<u8> {
    [b"K\0", ws.as_bytes(), b"\0"].concat()
}

fn index_key(ws: &str, n: u64) -> Vec<u8> {
    [index_prefix(ws), n.to_be_bytes().to_vec()].concat()
}

const LEASE_PREFIX: &[u8] = b"L\0";

fn lease_key(expires_at: u64, id: &str) -> Vec<u8> {
    [
        LEASE_PREFIX,
        &expires_at.to_be_bytes()[..],
        b"\0",
        id.as_bytes(),
    ]
    .concat()
}

fn not_found(id: &str) -> ShardResponse {
    ShardResponse::Refused(CoreError::not_found(format!("task {id} not found")))
}

fn conflict(message: String) -> ShardResponse {
    ShardResponse::Refused(CoreError::conflict(message))
}

/// The workspace's task `id`, if it exists there.
fn load<R: KvRead + ?Sized>(txn: &Txn<'_, R>, ws: &str, id: &str) -> std::io::Result<Option<Task>> {
    Ok(get::<StoredTask, R>(txn, &keys::task(id))?
        .filter(|s| s.ws == ws)
        .map(|s| s.task))
}

/// Stores `task` (previously `before`), keeping the lease index in step, and appends the
/// change to the task event logs.
fn save<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    ws: &str,
    before: Option<&Task>,
    task: &Task,
) -> std::io::Result<()> {
    let old = before.and_then(|b| b.lease_expires_at);
    if old != task.lease_expires_at {
        if let Some(end) = old {
            txn.delete(lease_key(end, &task.id));
        }
        if let Some(end) = task.lease_expires_at {
            txn.put(lease_key(end, &task.id), Vec::new());
        }
    }
    txn.put(
        keys::task(&task.id),
        encode(&StoredTask {
            ws: ws.to_string(),
            task: task.clone(),
        }),
    );
    super::task_events::record(txn, ws, before, task)
}

fn add_note(task: &mut Task, at: u64, by: &str, text: &str) -> Result<(), CoreError> {
    if task.notes.len() >= MAX_NOTES {
        return Err(CoreError::conflict(format!(
            "task {} already has {MAX_NOTES} notes, the most it keeps",
            task.id
        )));
    }
    task.notes.push(TaskNote {
        at,
        by: by.to_string(),
        text: text.to_string(),
    });
    Ok(())
}

/// What a new task is made of.
pub struct NewTask<'a> {
    pub ws: &'a str,
    pub queue: &'a str,
    pub title: &'a str,
    pub description: &'a str,
    pub mode: TaskMode,
    pub priority: i32,
    pub metadata: &'a str,
    pub created_by: &'a str,
}

/// Creates a task: `pending_approval` in mode `approval`, else `open`.
pub(super) fn create<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    shard: GroupId,
    new: NewTask<'_>,
    at_ms: u64,
) -> std::io::Result<ShardResponse> {
    let n = counter(txn, keys::TASK_COUNTER)?;
    let task = Task {
        id: task_id(shard, n),
        queue: new.queue.to_string(),
        title: new.title.to_string(),
        description: new.description.to_string(),
        mode: new.mode,
        status: if new.mode == TaskMode::Approval {
            TaskStatus::PendingApproval
        } else {
            TaskStatus::Open
        },
        priority: new.priority,
        metadata: new.metadata.to_string(),
        created_at: at_ms,
        created_by: new.created_by.to_string(),
        approved_by: None,
        approved_at: None,
        claimed_by: None,
        lease_expires_at: None,
        fencing_token: None,
        notes: Vec::new(),
        updated_at: at_ms,
    };
    save(txn, new.ws, None, &task)?;
    txn.put(index_key(new.ws, n), task.id.clone().into_bytes());
    Ok(ShardResponse::Task(Box::new(task)))
}

/// Claims an open task (or one whose lease ended) for `agent` with a new fencing token.
pub(super) fn claim<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    ws: &str,
    id: &str,
    agent: &str,
    lease_secs: u64,
    at_ms: u64,
) -> std::io::Result<ShardResponse> {
    let Some(before) = load(txn, ws, id)? else {
        return Ok(not_found(id));
    };
    let mut task = before.clone().at(at_ms);
    match task.status {
        TaskStatus::Open => {}
        TaskStatus::PendingApproval => {
            return Ok(conflict(format!("task {id} awaits approval")));
        }
        TaskStatus::Claimed | TaskStatus::InProgress => {
            return Ok(conflict(format!(
                "task {id} is already claimed by {}",
                task.claimed_by.as_deref().unwrap_or("another agent")
            )));
        }
        s => return Ok(conflict(format!("task {id} is {}", s.as_str()))),
    }
    let token = counter(txn, keys::FENCE_COUNTER)?;
    task.status = TaskStatus::Claimed;
    task.claimed_by = Some(agent.to_string());
    task.lease_expires_at = Some(at_ms + lease_secs.min(MAX_LEASE_SECS) * 1000);
    task.fencing_token = Some(token);
    task.updated_at = at_ms;
    save(txn, ws, Some(&before), &task)?;
    Ok(ShardResponse::Task(Box::new(task)))
}

/// Approves a task waiting for approval: it becomes open.
pub(super) fn approve<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    ws: &str,
    id: &str,
    by: &str,
    note: Option<&str>,
    at_ms: u64,
) -> std::io::Result<ShardResponse> {
    let Some(before) = load(txn, ws, id)? else {
        return Ok(not_found(id));
    };
    let mut task = before.clone();
    if task.status != TaskStatus::PendingApproval {
        return Ok(conflict(format!(
            "task {id} is {}, not pending_approval",
            task.clone().at(at_ms).status.as_str()
        )));
    }
    if let Some(text) = note {
        if let Err(refused) = add_note(&mut task, at_ms, by, text) {
            return Ok(ShardResponse::Refused(refused));
        }
    }
    task.status = TaskStatus::Open;
    task.approved_by = Some(by.to_string());
    task.approved_at = Some(at_ms);
    task.updated_at = at_ms;
    save(txn, ws, Some(&before), &task)?;
    Ok(ShardResponse::Task(Box::new(task)))
}

/// A change to a task through `PATCH`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskPatch {
    /// The holder, required with `fencing_token` for holder changes.
    pub agent: Option<String>,
    /// The holder's token, required with `agent` for holder changes.
    pub fencing_token: Option<u64>,
    /// The new status.
    pub status: Option<TaskStatus>,
    /// A note to append.
    pub note: Option<String>,
    /// Renew the lease to end this many seconds from now.
    pub lease_secs: Option<u64>,
    /// Id of the API key making the change.
    pub by: String,
}

impl TaskPatch {
    /// Whether only the holder may make this change: a holder status or a renewal.
    pub fn needs_holder(&self) -> bool {
        self.lease_secs.is_some()
            || matches!(
                self.status,
                Some(TaskStatus::InProgress | TaskStatus::Done | TaskStatus::Failed)
                    | Some(TaskStatus::Open)
            )
    }
}

/// Applies a `PATCH`: the holder's status change and renewal (checked against its agent,
/// fencing token and lease at `at_ms`), an admin's cancel, and a note.
pub(super) fn update<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    ws: &str,
    id: &str,
    patch: &TaskPatch,
    at_ms: u64,
) -> std::io::Result<ShardResponse> {
    let Some(before) = load(txn, ws, id)? else {
        return Ok(not_found(id));
    };
    let expired = before.lease_expired(at_ms);
    let mut task = before.clone().at(at_ms);
    if patch.status.is_none() && patch.note.is_none() && patch.lease_secs.is_none() {
        return Ok(ShardResponse::Refused(CoreError::bad_request(
            "give at least one of status, note, lease_secs",
        )));
    }
    if patch.needs_holder() {
        let (Some(agent), Some(token)) = (&patch.agent, patch.fencing_token) else {
            // Without them the caller does not show it holds the lease: the same refusal as
            // a wrong holder.
            return Ok(conflict(format!(
                "only the holder of task {id} may change its status or renew its lease: give \
                 its agent and fencing_token"
            )));
        };
        // The last holder, whether the stored state has caught up with the end of its lease
        // or not (an ended lease keeps the task's token until the next claim).
        let was_holder = (expired && before.claimed_by.as_deref() == Some(agent.as_str()))
            || (task.status == TaskStatus::Open && task.fencing_token == Some(token));
        if was_holder {
            return Ok(conflict(format!(
                "the lease with fencing token {token} on task {id} has expired or was released; \
                 claim it again"
            )));
        }
        if !task.status.holds_lease() {
            return Ok(conflict(format!(
                "task {id} is {}; only a claimed task can be changed by its holder",
                task.status.as_str()
            )));
        }
        if task.claimed_by.as_deref() != Some(agent.as_str()) {
            return Ok(conflict(format!(
                "task {id} is held by {}, not {agent}",
                task.claimed_by.as_deref().unwrap_or("nobody")
            )));
        }
        if task.fencing_token != Some(token) {
            return Ok(conflict(format!(
                "fencing token {token} is stale for task {id}"
            )));
        }
    }
    if let Some(to) = patch.status {
        if !legal(task.status, to) {
            return Ok(conflict(format!(
                "task {id} cannot go from {} to {}",
                task.status.as_str(),
                to.as_str()
            )));
        }
        task.status = to;
        if !to.holds_lease() {
            task.lease_expires_at = None;
        }
        if to == TaskStatus::Open {
            task.claimed_by = None;
        }
    }
    if let Some(secs) = patch.lease_secs {
        if !task.status.holds_lease() {
            return Ok(conflict(format!(
                "lease_secs renews a held lease; task {id} would be {}",
                task.status.as_str()
            )));
        }
        task.lease_expires_at = Some(at_ms + secs.min(MAX_LEASE_SECS) * 1000);
    }
    if let Some(text) = &patch.note {
        let by = patch.agent.as_deref().unwrap_or(&patch.by);
        if let Err(refused) = add_note(&mut task, at_ms, by, text) {
            return Ok(ShardResponse::Refused(refused));
        }
    }
    task.updated_at = at_ms;
    save(txn, ws, Some(&before), &task)?;
    Ok(ShardResponse::Task(Box::new(task)))
}

/// Returns to the queue each of `ids` whose lease ended at or before `at_ms`; the others are
/// left alone (they may have been renewed or finished since the leader looked).
pub(super) fn expire<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    ids: &[String],
    at_ms: u64,
) -> std::io::Result<ShardResponse> {
    let mut expired = Vec::new();
    for id in ids {
        let Some(stored) = get::<StoredTask, R>(txn, &keys::task(id))? else {
            continue;
        };
        if stored.task.lease_expired(at_ms) {
            let before = stored.task;
            let mut task = before.clone().at(at_ms);
            task.updated_at = at_ms;
            save(txn, &stored.ws, Some(&before), &task)?;
            expired.push(task.id);
        }
    }
    Ok(ShardResponse::TasksExpired(expired))
}

/// Up to `limit` ids of tasks whose lease ended at or before `now`, soonest first, from the
/// lease index; the shard leader proposes their expiry.
pub fn due_leases<R: KvRead + ?Sized>(
    kv: &R,
    now: u64,
    limit: usize,
) -> std::io::Result<Vec<String>> {
    let rows = kv.scan(LEASE_PREFIX, None, limit)?;
    Ok(rows
        .into_iter()
        .filter_map(|(k, _)| {
            let rest = k.strip_prefix(LEASE_PREFIX)?;
            let end = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
            let id = std::str::from_utf8(rest.get(9..)?).ok()?;
            (end <= now).then(|| id.to_string())
        })
        .collect())
}

/// The workspace's tasks after number `after`, in creation order, as they stand at `now_ms`,
/// keeping those with `status` (when given).
pub(super) fn list<R: KvRead + ?Sized>(
    kv: &R,
    ws: &str,
    status: Option<TaskStatus>,
    after: Option<u64>,
    limit: usize,
    now_ms: u64,
) -> Result<ShardReadResult, CoreError> {
    let prefix = index_prefix(ws);
    let mut cursor = after.map(|n| index_key(ws, n));
    let mut tasks = Vec::new();
    let mut scanned = 0;
    let mut last = after;
    loop {
        let chunk = (MAX_LIST_SCAN - scanned).min(limit.max(64));
        let rows = kv.scan(&prefix, cursor.as_deref(), chunk).map_err(io)?;
        let exhausted = rows.len() < chunk;
        for (k, v) in rows {
            scanned += 1;
            let n = k
                .get(prefix.len()..)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes);
            last = n.or(last);
            cursor = Some(k);
            let id = String::from_utf8_lossy(&v).into_owned();
            let Some(b) = kv.get(&keys::task(&id)).map_err(io)? else {
                continue;
            };
            let stored: StoredTask = decode_io(&b).map_err(io)?;
            let task = stored.task.at(now_ms);
            if status.is_none_or(|s| s == task.status) {
                tasks.push(task);
                if tasks.len() == limit {
                    return Ok(ShardReadResult::TaskPage(TaskPage {
                        tasks,
                        next_after: last,
                    }));
                }
            }
        }
        if exhausted {
            return Ok(ShardReadResult::TaskPage(TaskPage {
                tasks,
                next_after: None,
            }));
        }
        if scanned >= MAX_LIST_SCAN {
            return Ok(ShardReadResult::TaskPage(TaskPage {
                tasks,
                next_after: last,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::{query, ShardCommand, ShardQuery};
    use super::*;
    use crate::error::ErrorCode;

    type Store = BTreeMap<Vec<u8>, Vec<u8>>;

    /// Applies one command at `at` to an in-memory store, as a replica would.
    fn run(store: &mut Store, cmd: ShardCommand, at: u64) -> ShardResponse {
        super::super::apply_to_map(store, 3, &cmd, at)
    }

    fn task(resp: ShardResponse) -> Task {
        match resp {
            ShardResponse::Task(t) => *t,
            other => panic!("expected a task, got {other:?}"),
        }
    }

    fn refused(resp: &ShardResponse, code: ErrorCode) -> bool {
        matches!(resp, ShardResponse::Refused(e) if e.code == code)
    }

    fn create(ws: &str, mode: TaskMode) -> ShardCommand {
        ShardCommand::TaskCreate {
            ws: ws.into(),
            queue: "default".into(),
            title: "t".into(),
            description: String::new(),
            mode,
            priority: 0,
            metadata: "{}".into(),
            created_by: "key_1".into(),
        }
    }

    fn claim(id: &str, agent: &str, lease_secs: u64) -> ShardCommand {
        ShardCommand::TaskClaim {
            ws: "w".into(),
            id: id.into(),
            agent: agent.into(),
            lease_secs,
        }
    }

    fn patch(id: &str, p: TaskPatch) -> ShardCommand {
        ShardCommand::TaskUpdate {
            ws: "w".into(),
            id: id.into(),
            patch: p,
        }
    }

    fn holder(agent: &str, token: Option<u64>, status: Option<TaskStatus>) -> TaskPatch {
        TaskPatch {
            agent: Some(agent.into()),
            fencing_token: token,
            status,
            by: "key_1".into(),
            ..TaskPatch::default()
        }
    }

    fn stored(store: &Store, id: &str) -> Task {
        match query(
            store,
            &ShardQuery::TaskGet {
                ws: "w".into(),
                id: id.into(),
            },
        )
        .unwrap()
        {
            ShardReadResult::Task(t) => *t,
            other => panic!("{other:?}"),
        }
    }

    /// A new task brought to `status` through the commands a client would use.
    fn task_in(store: &mut Store, status: TaskStatus) -> Task {
        use TaskStatus::*;
        let mode = if status == PendingApproval {
            TaskMode::Approval
        } else {
            TaskMode::Auto
        };
        let t = task(run(store, create("w", mode), 0));
        if matches!(status, PendingApproval | Open) {
            return t;
        }
        if status == Cancelled {
            let mut p = TaskPatch {
                status: Some(Cancelled),
                ..TaskPatch::default()
            };
            p.by = "admin".into();
            return task(run(store, patch(&t.id, p), 1));
        }
        let c = task(run(store, claim(&t.id, "a", 60), 1));
        if status == Claimed {
            return c;
        }
        task(run(
            store,
            patch(&t.id, holder("a", c.fencing_token, Some(status))),
            2,
        ))
    }

    #[test]
    fn every_transition_follows_the_table() {
        use TaskStatus::*;
        let mut legal_pairs = 0;
        for from in TaskStatus::ALL {
            for to in TaskStatus::ALL {
                let mut s = Store::new();
                let t = task_in(&mut s, from);
                assert_eq!(t.status, from);
                let token = t.fencing_token;
                let before = s.clone();
                // Untaken tasks get a made-up token: the refusal is about the status.
                let sent = token.or(Some(1));
                let out = run(&mut s, patch(&t.id, holder("a", sent, Some(to))), 3);
                if legal(from, to) {
                    legal_pairs += 1;
                    let after = task(out);
                    assert_eq!(after.status, to, "{from:?} -> {to:?}");
                    assert_eq!(stored(&s, &t.id), after);
                    if !to.holds_lease() {
                        assert_eq!(after.lease_expires_at, None);
                        assert!(due_leases(&s, u64::MAX, 10).unwrap().is_empty());
                    }
                    assert_eq!(after.fencing_token, token, "a token is never taken back");
                } else {
                    assert!(
                        refused(&out, ErrorCode::Conflict),
                        "{from:?} -> {to:?} gave {out:?}"
                    );
                    assert_eq!(s, before, "a refused change writes nothing");
                }
            }
        }
        // claimed→4, in_progress→3, and cancel from the four non-terminal statuses.
        assert_eq!(legal_pairs, 11);
        assert!(legal(Claimed, Open) && legal(InProgress, Done) && legal(Open, Cancelled));
        assert!(!legal(Done, Open) && !legal(Open, InProgress) && !legal(Cancelled, Open));
        assert!(!legal(PendingApproval, Open), "approval is its own command");
    }

    #[test]
    fn holder_changes_need_the_current_token_and_agent() {
        let mut s = Store::new();
        let t = task_in(&mut s, TaskStatus::Claimed);
        let token = t.fencing_token;
        let stale = Some(token.unwrap() - 1);
        let before = s.clone();
        for p in [
            holder("a", stale, Some(TaskStatus::InProgress)),
            holder("b", token, Some(TaskStatus::InProgress)),
            holder("a", Some(token.unwrap() + 1), None),
        ] {
            let p = TaskPatch {
                lease_secs: Some(10),
                ..p
            };
            let out = run(&mut s, patch(&t.id, p), 5);
            assert!(refused(&out, ErrorCode::Conflict), "{out:?}");
        }
        let no_token = run(
            &mut s,
            patch(&t.id, holder("a", None, Some(TaskStatus::Done))),
            5,
        );
        // Without a token the caller does not show it holds the lease.
        assert!(refused(&no_token, ErrorCode::Conflict), "{no_token:?}");
        assert_eq!(s, before);
    }

    #[test]
    fn fencing_tokens_strictly_grow_across_tasks_releases_and_expiry() {
        let mut s = Store::new();
        let a = task(run(&mut s, create("w", TaskMode::Auto), 0));
        let b = task(run(&mut s, create("w", TaskMode::Auto), 0));
        let mut tokens = Vec::new();
        let c1 = task(run(&mut s, claim(&a.id, "x", 10), 1_000));
        tokens.push(c1.fencing_token.unwrap());
        let c2 = task(run(&mut s, claim(&b.id, "y", 10), 1_000));
        tokens.push(c2.fencing_token.unwrap());
        // Released by its holder, then claimed again.
        let rel = task(run(
            &mut s,
            patch(&a.id, holder("x", c1.fencing_token, Some(TaskStatus::Open))),
            2_000,
        ));
        assert_eq!((rel.status, rel.claimed_by), (TaskStatus::Open, None));
        let c3 = task(run(&mut s, claim(&a.id, "z", 10), 3_000));
        tokens.push(c3.fencing_token.unwrap());
        // b's lease ends: claimed again by another agent.
        let c4 = task(run(&mut s, claim(&b.id, "w", 10), 11_000));
        tokens.push(c4.fencing_token.unwrap());
        assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
    }

    #[test]
    fn an_ended_lease_returns_the_task_to_the_queue() {
        let mut s = Store::new();
        let t = task(run(&mut s, create("w", TaskMode::Auto), 0));
        let c = task(run(&mut s, claim(&t.id, "a", 10), 1_000));
        assert_eq!(c.lease_expires_at, Some(11_000));
        // Renewal by the holder moves the end (and the index entry).
        let p = TaskPatch {
            lease_secs: Some(20),
            ..holder("a", c.fencing_token, Some(TaskStatus::InProgress))
        };
        let r = task(run(&mut s, patch(&t.id, p), 5_000));
        assert_eq!(
            (r.status, r.lease_expires_at),
            (TaskStatus::InProgress, Some(25_000))
        );
        assert!(due_leases(&s, 24_999, 10).unwrap().is_empty());
        assert_eq!(due_leases(&s, 25_000, 10).unwrap(), vec![t.id.clone()]);
        // Readers see it open as soon as the lease ends, before the stored state changes.
        assert_eq!(stored(&s, &t.id).at(25_000).status, TaskStatus::Open);
        // The leader's expiry proposal returns it to the queue; a second one changes nothing.
        let ids = due_leases(&s, 25_000, 10).unwrap();
        let out = run(
            &mut s,
            ShardCommand::TaskExpireLeases { ids: ids.clone() },
            25_100,
        );
        assert_eq!(out, ShardResponse::TasksExpired(vec![t.id.clone()]));
        let open = stored(&s, &t.id);
        assert_eq!(
            (
                open.status,
                open.claimed_by.as_deref(),
                open.lease_expires_at
            ),
            (TaskStatus::Open, None, None)
        );
        assert_eq!(open.fencing_token, c.fencing_token);
        assert!(due_leases(&s, u64::MAX, 10).unwrap().is_empty());
        let again = run(&mut s, ShardCommand::TaskExpireLeases { ids }, 25_200);
        assert_eq!(again, ShardResponse::TasksExpired(vec![]));
        // The old holder is fenced off; the next claim gets a larger token.
        let late = run(
            &mut s,
            patch(&t.id, holder("a", c.fencing_token, Some(TaskStatus::Done))),
            26_000,
        );
        assert!(matches!(&late, ShardResponse::Refused(e)
            if e.code == ErrorCode::Conflict && e.message.contains("expired")));
        let next = task(run(&mut s, claim(&t.id, "b", 10), 27_000));
        assert!(next.fencing_token > c.fencing_token);
        // An expiry proposed for a lease renewed meanwhile leaves it alone.
        let out = run(
            &mut s,
            ShardCommand::TaskExpireLeases {
                ids: vec![t.id.clone()],
            },
            28_000,
        );
        assert_eq!(out, ShardResponse::TasksExpired(vec![]));
        assert_eq!(stored(&s, &t.id).claimed_by.as_deref(), Some("b"));
    }

    #[test]
    fn a_holder_patch_after_expiry_is_a_conflict_even_before_the_expiry_applies() {
        let mut s = Store::new();
        let t = task(run(&mut s, create("w", TaskMode::Auto), 0));
        let c = task(run(&mut s, claim(&t.id, "a", 10), 0));
        let p = TaskPatch {
            lease_secs: Some(60),
            ..holder("a", c.fencing_token, None)
        };
        let out = run(&mut s, patch(&t.id, p), 10_000);
        assert!(matches!(&out, ShardResponse::Refused(e)
            if e.code == ErrorCode::Conflict && e.message.contains("expired")));
    }

    #[test]
    fn approval_gates_the_claim() {
        let mut s = Store::new();
        let t = task(run(&mut s, create("w", TaskMode::Approval), 0));
        assert_eq!(t.status, TaskStatus::PendingApproval);
        assert!(refused(
            &run(&mut s, claim(&t.id, "a", 10), 1),
            ErrorCode::Conflict
        ));
        let approve = ShardCommand::TaskApprove {
            ws: "w".into(),
            id: t.id.clone(),
            by: "key_admin".into(),
            note: Some("go".into()),
        };
        let a = task(run(&mut s, approve.clone(), 2));
        assert_eq!(
            (a.status, a.approved_by.as_deref(), a.approved_at),
            (TaskStatus::Open, Some("key_admin"), Some(2))
        );
        assert_eq!(a.notes[0].text, "go");
        assert!(refused(&run(&mut s, approve, 3), ErrorCode::Conflict));
        assert_eq!(
            task(run(&mut s, claim(&t.id, "a", 10), 4)).status,
            TaskStatus::Claimed
        );
    }

    #[test]
    fn notes_are_kept_in_order_and_bounded() {
        let mut s = Store::new();
        let t = task_in(&mut s, TaskStatus::Done);
        for i in 0..MAX_NOTES {
            let p = TaskPatch {
                note: Some(format!("n{i}")),
                by: "key_1".into(),
                ..TaskPatch::default()
            };
            task(run(&mut s, patch(&t.id, p), 10 + i as u64));
        }
        let before = s.clone();
        let p = TaskPatch {
            note: Some("one too many".into()),
            by: "key_1".into(),
            ..TaskPatch::default()
        };
        assert!(refused(
            &run(&mut s, patch(&t.id, p), 999),
            ErrorCode::Conflict
        ));
        assert_eq!(s, before);
        let notes = stored(&s, &t.id).notes;
        assert_eq!(notes.len(), MAX_NOTES);
        assert_eq!(
            (notes[0].text.as_str(), notes[0].by.as_str()),
            ("n0", "key_1")
        );
        assert_eq!(notes[99].text, "n99");
        let empty = run(&mut s, patch(&t.id, TaskPatch::default()), 1_000);
        assert!(refused(&empty, ErrorCode::BadRequest));
    }

    #[test]
    fn lists_keep_creation_order_filter_by_status_and_isolate_workspaces() {
        let mut s = Store::new();
        let mut ids = Vec::new();
        for i in 0..7 {
            ids.push(task(run(&mut s, create("w", TaskMode::Auto), i)).id);
            run(&mut s, create("other", TaskMode::Auto), i);
        }
        task(run(&mut s, claim(&ids[1], "a", 10), 100));
        task(run(&mut s, claim(&ids[4], "a", 1000), 100));
        let list = |s: &Store, status, after, limit, now| {
            let q = ShardQuery::TaskList {
                ws: "w".into(),
                status,
                after,
                limit,
                now_ms: now,
            };
            match query(s, &q).unwrap() {
                ShardReadResult::TaskPage(p) => p,
                other => panic!("{other:?}"),
            }
        };
        // Paging visits each task once, in creation order.
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = list(&s, None, after, 3, 200);
            seen.extend(page.tasks.into_iter().map(|t| t.id));
            match page.next_after {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, ids);
        let claimed = list(&s, Some(TaskStatus::Claimed), None, 10, 200);
        let got: Vec<_> = claimed.tasks.iter().map(|t| t.id.clone()).collect();
        assert_eq!(got, vec![ids[1].clone(), ids[4].clone()]);
        // After ids[1]'s lease ends it lists as open.
        let claimed = list(&s, Some(TaskStatus::Claimed), None, 10, 10_100);
        assert_eq!(claimed.tasks.len(), 1);
        assert_eq!(
            list(&s, Some(TaskStatus::Open), None, 10, 10_100)
                .tasks
                .len(),
            6
        );
        // Another workspace's ids are not found.
        let get = query(
            &s,
            &ShardQuery::TaskGet {
                ws: "nope".into(),
                id: ids[0].clone(),
            },
        );
        assert!(matches!(get, Err(e) if e.code == ErrorCode::NotFound));
        let foreign = ShardCommand::TaskUpdate {
            ws: "other".into(),
            id: ids[1].clone(),
            patch: TaskPatch {
                note: Some("x".into()),
                ..TaskPatch::default()
            },
        };
        assert!(refused(&run(&mut s, foreign, 300), ErrorCode::NotFound));
    }
}
