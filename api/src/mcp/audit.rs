//! The one point every MCP tool call passes once it is decided: [`tool_called`].
//!
//! It receives the caller, the tool, the session (if any) and the outcome, and writes one
//! structured `tracing` event under the target `conclave::audit` (fields `workspace`, `key`,
//! `user`, `agent`, `tool`, `session`, `outcome`, `status`). The REST requests a tool call makes
//! carry [`super::dispatch::Via::Mcp`], so an audit layer around the REST routes sees them too.
//! A durable audit log records tool calls by being called from here.

use crate::auth::Caller;

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

/// Records one tool call. Called exactly once per `tools/call` naming a known tool.
pub fn tool_called(call: &ToolCall<'_>) {
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
