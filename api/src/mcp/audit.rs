//! The one point every MCP tool call passes once it is decided: [`tool_called`].
//!
//! It receives the caller, the tool, the session (if any) and the outcome, records the call in
//! the workspace's audit log (method `CALL`, route `mcp:TOOL`, via `mcp`, targets naming the
//! agent and session) and writes one structured `tracing` event under the target
//! `conclave::audit`. The REST requests a tool call makes carry [`crate::audit::Via::Mcp`], so
//! the changes they make are recorded by the audit layer as well, marked `via: mcp`.

use conclave_raft::command::now_ms;

use crate::audit::{record, AuditEntry, Via};
use crate::auth::Caller;
use crate::state::AppState;

/// How a tool call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It ran and succeeded, with the REST status.
    Ok {
        /// The status of the REST answer (200 for `wait_for_events`).
        status: u16,
    },
    /// It ran and failed as a business error (`isError`), with the REST status.
    Failed {
        /// The status of the REST answer.
        status: u16,
    },
    /// The skill rule refused it, recorded as a policy violation.
    Refused,
    /// Its arguments could not form a request.
    BadArguments,
}

impl Outcome {
    /// Short lowercase name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Ok { .. } => "ok",
            Outcome::Failed { .. } => "failed",
            Outcome::Refused => "refused",
            Outcome::BadArguments => "bad_arguments",
        }
    }

    fn status(&self) -> u16 {
        match self {
            Outcome::Ok { status } | Outcome::Failed { status } => *status,
            Outcome::Refused => 403,
            Outcome::BadArguments => 400,
        }
    }
}

/// One decided tool call.
#[derive(Debug, Clone)]
pub struct ToolCall<'a> {
    /// Who called.
    pub caller: &'a Caller,
    /// The agent the caller named (`Conclave-Agent`), if any.
    pub agent: Option<&'a str>,
    /// The tool.
    pub tool: &'a str,
    /// The session's nonce (session form) or `None` (stateless form).
    pub session: Option<&'a str>,
    /// How it ended.
    pub outcome: Outcome,
}

/// Records one tool call. Called exactly once per `tools/call` naming a known tool. An entry
/// that cannot be committed now is retried in the background by the audit log.
pub async fn tool_called(state: &AppState, call: &ToolCall<'_>) {
    let mut targets = vec![("tool".to_string(), call.tool.to_string())];
    if let Some(agent) = call.agent {
        targets.push(("agent".to_string(), agent.to_string()));
    }
    if let Some(session) = call.session {
        targets.push(("session".to_string(), session.to_string()));
    }
    let entry = AuditEntry {
        method: "CALL".to_string(),
        route: format!("mcp:{}", call.tool),
        targets,
        status: call.outcome.status(),
        via: Via::Mcp,
        request_id: String::new(),
        received_at: now_ms(),
    };
    if let Err(e) = record(state, call.caller, entry).await {
        tracing::warn!(tool = call.tool, error = %e.message, "tool call audit entry not committed yet");
    }
    tracing::info!(
        target: "conclave::audit",
        via = "mcp",
        workspace = %call.caller.workspace,
        key = %call.caller.key_id,
        user = call.caller.user.as_deref().unwrap_or(""),
        agent = call.agent.unwrap_or(""),
        tool = call.tool,
        session = call.session.unwrap_or(""),
        outcome = call.outcome.as_str(),
        status = call.outcome.status(),
        "mcp tool call"
    );
}
