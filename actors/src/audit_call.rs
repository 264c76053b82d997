//! The audit record of the call a task is serving, handed to the call's first shard write.
//!
//! The API's audit middleware runs each audited call inside [`AuditCall::scope`]. The first
//! shard write [`crate::Router::execute`] runs inside that scope is wrapped in
//! [`ShardCommand::Audited`], so the call's audit record is committed atomically with its change
//! (see `conclave_raft::shard::outbox`). Afterwards the middleware asks [`AuditCall::carried`]
//! whether that happened, and so whether it may answer before the audit entry itself commits.
//!
//! A task-local and not an argument: every handler reaches the router through many helpers,
//! and none of them needs to know about the audit. Writes made from tasks the handler spawns run
//! outside the scope and carry nothing; the middleware then waits for the audit entry as before.

use std::future::Future;
use std::sync::{Arc, Mutex};

use conclave_raft::error::CoreError;
use conclave_raft::shard::outbox::OutboxRecord;
use conclave_raft::{GroupId, ShardCommand};

use crate::request::ClientResponse;

tokio::task_local! {
    static CALL: AuditCall;
}

/// Where a call's audit record went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carried {
    /// No shard write took it: the call made no shard write in its scope.
    No,
    /// The write to this shard committed (applied or refused), and the record with it.
    Yes(GroupId),
    /// The write to this shard failed with an unknown outcome: the record may be there.
    Unknown(GroupId),
}

#[derive(Debug)]
struct State {
    record: Option<OutboxRecord>,
    carried: Carried,
}

/// One call's audit record and what became of it.
#[derive(Debug, Clone)]
pub struct AuditCall {
    state: Arc<Mutex<State>>,
}

impl AuditCall {
    /// A call whose audit record is `record`.
    pub fn new(record: OutboxRecord) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                record: Some(record),
                carried: Carried::No,
            })),
        }
    }

    /// Runs `f` with this call as the current one.
    pub async fn scope<F: Future>(&self, f: F) -> F::Output {
        CALL.scope(self.clone(), f).await
    }

    /// Where the record went.
    pub fn carried(&self) -> Carried {
        self.state.lock().expect("audit call lock").carried
    }
}

/// `cmd` wrapped with the current call's record if there is a current call and this is its
/// first write that can carry the record, and whether it was.
pub(crate) fn wrap(cmd: ShardCommand) -> (ShardCommand, bool) {
    if matches!(
        cmd,
        ShardCommand::Audited { .. }
            | ShardCommand::OutboxClear { .. }
            | ShardCommand::AuditAppend { .. }
            | ShardCommand::AuditAppendOnce { .. }
    ) {
        return (cmd, false);
    }
    let record = CALL
        .try_with(|call| call.state.lock().expect("audit call lock").record.take())
        .ok()
        .flatten();
    match record {
        Some(record) => (
            ShardCommand::Audited {
                cmd: Box::new(cmd),
                record,
            },
            true,
        ),
        None => (cmd, false),
    }
}

/// Notes the outcome of the write [`wrap`] wrapped.
pub(crate) fn settle(group: GroupId, outcome: &Result<ClientResponse, CoreError>) {
    let _ = CALL.try_with(|call| {
        call.state.lock().expect("audit call lock").carried = match outcome {
            Ok(_) => Carried::Yes(group),
            Err(_) => Carried::Unknown(group),
        };
    });
}
