//! Agents and their inboxes on a data shard: registration, replicated presence transitions,
//! direct and broadcast messages, idempotent sends.
//!
//! An agent lives on `shard_for(ws, "agent", name)` and its inbox lives with it, so a direct
//! message's existence check, inbox sequence and de-duplication are one apply. Invariants kept
//! here:
//! - an agent's inbox sequence is gap-free from 1 and a message id appears at most once in an
//!   inbox (appends are idempotent by message id), so a `since` cursor never skips or repeats;
//! - a message with an idempotency key is created once: a retry with the same payload replays
//!   the original, a different payload under the same key is refused (409);
//! - only presence *transitions* are written (heartbeats stay in the leader's memory), and each
//!   transition is recorded as an agent event.
//!
//! Key prefixes used here (one letter, distinct from `c t m k n`):
//! - `a\0<ws>\0<name>`            → [`Agent`]
//! - `i\0<ws>\0<agent>\0<seq be>` → [`InboxItem`]
//! - `I\0<ws>\0<agent>\0<msg id>` → inbox seq of that message (append de-duplication)
//! - `M\0<msg id>`                → [`StoredMessage`] (message by id, for `reply_to`)
//! - `x\0<ws>\0<key>`             → [`IdemRecord`] (idempotency keys of sends created here)
//! - `g\0<ws>\0<seq be>`          → [`AgentEvent`] (registrations, presence changes, deletes;
//!   not `p`, which topic purges own, nor `e`, the workspace task events')
//! - counters `n\0msg` (message ids) and `n\0agentevt` (event seqs)

use super::io;
use serde::{Deserialize, Serialize};

use super::{counter, get, ShardCommand, ShardQuery, ShardReadResult, ShardResponse};
use crate::codec::{decode_io, encode};
use crate::error::CoreError;
use crate::kv::{KvRead, Txn};
use crate::types::GroupId;

/// How long an idempotency key is remembered, ms; an older record no longer dedupes.
pub const IDEMPOTENCY_WINDOW_MS: u64 = 24 * 3600 * 1000;

/// Whether an agent is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    /// Heartbeats arrive within the presence timeout.
    Online,
    /// Never seen, disconnected, or silent past the presence timeout.
    Offline,
}

/// How urgent a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Can wait.
    Low,
    /// The default.
    Normal,
    /// Read soon.
    High,
    /// Read now.
    Urgent,
}

/// A registered agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    /// Its name, which is also its id (unique in the workspace).
    pub name: String,
    /// Free text.
    pub description: String,
    /// What it can do.
    pub capabilities: Vec<String>,
    /// JSON object text.
    pub metadata: String,
    /// Online or offline, as last replicated.
    pub status: AgentStatus,
    /// Last heartbeat known to the replicated state (the leader may know a later one), ms.
    pub last_seen_at: Option<u64>,
    /// When `status` last changed (or the registration), ms.
    pub status_changed_at: u64,
    /// First registration, ms.
    pub registered_at: u64,
    /// Last registration or re-registration, ms.
    pub updated_at: u64,
    /// Sequence of the newest message in its inbox (0 before any).
    pub inbox_seq: u64,
}

/// A message, as sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `msg_<shard>_<n>`: the shard that created it, so it routes without a lookup.
    pub id: String,
    /// `agent:NAME` or `broadcast`.
    pub to: String,
    /// The sending agent's name, if given.
    pub from: Option<String>,
    /// JSON text.
    pub body: String,
    /// JSON object text.
    pub metadata: String,
    /// Urgency.
    pub priority: Priority,
    /// The message this one answers.
    pub reply_to: Option<String>,
    /// The first message of the thread (the id of the root of the `reply_to` chain).
    pub thread_id: Option<String>,
    /// ms since the epoch.
    pub created_at: u64,
    /// How many inboxes it was addressed to.
    pub recipients: u32,
}

/// A message in one agent's inbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxItem {
    /// Gap-free from 1 in this inbox.
    pub seq: u64,
    /// The message.
    pub message: Message,
}

/// A message stored by id, with its workspace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredMessage {
    ws: String,
    message: Message,
}

/// What an idempotency key was used for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdemRecord {
    /// Hash of the request the key first came with.
    payload_hash: [u8; 32],
    /// The message created then.
    message_id: String,
    /// Every agent it was addressed to (a replay redoes any delivery left undone).
    recipients: Vec<String>,
    /// When the key was first used, ms.
    at: u64,
}

/// What happened to an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentEventKind {
    /// First registration.
    Registered,
    /// Offline → online.
    Online,
    /// Online → offline.
    Offline,
    /// Removed.
    Deleted,
}

/// A durable record of an agent change, for activity feeds and live events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentEvent {
    /// Grows by one per event on the shard.
    pub seq: u64,
    /// ms since the epoch.
    pub at: u64,
    /// The agent.
    pub agent: String,
    /// What happened.
    pub kind: AgentEventKind,
}

/// A message to create: everything but what apply assigns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewMessage {
    /// `agent:NAME` or `broadcast`.
    pub to: String,
    /// Sender name.
    pub from: Option<String>,
    /// JSON text.
    pub body: String,
    /// JSON object text.
    pub metadata: String,
    /// Urgency.
    pub priority: Priority,
    /// Answered message.
    pub reply_to: Option<String>,
    /// Thread root.
    pub thread_id: Option<String>,
}

/// An idempotency key with the hash of the request it came with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Idempotency {
    /// The client's key.
    pub key: String,
    /// SHA-256 of the request's canonical payload.
    pub payload_hash: [u8; 32],
}

mod keys {
    pub fn agent_prefix(ws: &str) -> Vec<u8> {
        [b"a\0", ws.as_bytes(), b"\0"].concat()
    }
    pub fn agent(ws: &str, name: &str) -> Vec<u8> {
        [agent_prefix(ws), name.as_bytes().to_vec()].concat()
    }
    pub const ALL_AGENTS: &[u8] = b"a\0";
    pub fn inbox_prefix(ws: &str, agent: &str) -> Vec<u8> {
        [b"i\0", ws.as_bytes(), b"\0", agent.as_bytes(), b"\0"].concat()
    }
    pub fn inbox(ws: &str, agent: &str, seq: u64) -> Vec<u8> {
        [inbox_prefix(ws, agent), seq.to_be_bytes().to_vec()].concat()
    }
    pub fn inbox_index_prefix(ws: &str, agent: &str) -> Vec<u8> {
        [b"I\0", ws.as_bytes(), b"\0", agent.as_bytes(), b"\0"].concat()
    }
    pub fn inbox_index(ws: &str, agent: &str, id: &str) -> Vec<u8> {
        [inbox_index_prefix(ws, agent), id.as_bytes().to_vec()].concat()
    }
    pub fn message(id: &str) -> Vec<u8> {
        [b"M\0", id.as_bytes()].concat()
    }
    pub fn idem(ws: &str, key: &str) -> Vec<u8> {
        [b"x\0", ws.as_bytes(), b"\0", key.as_bytes()].concat()
    }
    pub fn event_prefix(ws: &str) -> Vec<u8> {
        [b"g\0", ws.as_bytes(), b"\0"].concat()
    }
    pub fn event(ws: &str, seq: u64) -> Vec<u8> {
        [event_prefix(ws), seq.to_be_bytes().to_vec()].concat()
    }
    pub const MESSAGE_COUNTER: &[u8] = b"n\0msg";
    pub const EVENT_COUNTER: &[u8] = b"n\0agentevt";
}

/// The id of the `n`th message created on `shard`.
pub fn message_id(shard: GroupId, n: u64) -> String {
    format!("msg_{shard}_{n}")
}

/// The shard a message id names, if the id is well formed.
pub fn shard_of_message_id(id: &str) -> Option<GroupId> {
    let (shard, n) = id.strip_prefix("msg_")?.split_once('_')?;
    n.parse::<u64>().ok()?;
    shard.parse().ok()
}

fn record_event<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    ws: &str,
    agent: &str,
    kind: AgentEventKind,
    at: u64,
) -> std::io::Result<()> {
    let seq = counter(txn, keys::EVENT_COUNTER)?;
    let event = AgentEvent {
        seq,
        at,
        agent: agent.to_string(),
        kind,
    };
    txn.put(keys::event(ws, seq), encode(&event));
    Ok(())
}

/// Appends `message` to `agent`'s inbox unless it is already there; the inbox seq of the
/// message, or `None` when the agent does not exist.
fn deliver<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    ws: &str,
    agent: &str,
    message: &Message,
) -> std::io::Result<Option<u64>> {
    let ak = keys::agent(ws, agent);
    let Some(mut record) = get::<Agent, R>(txn, &ak)? else {
        return Ok(None);
    };
    let index = keys::inbox_index(ws, agent, &message.id);
    if let Some(seq) = get::<u64, R>(txn, &index)? {
        return Ok(Some(seq));
    }
    record.inbox_seq += 1;
    let seq = record.inbox_seq;
    let item = InboxItem {
        seq,
        message: message.clone(),
    };
    txn.put(keys::inbox(ws, agent, seq), encode(&item));
    txn.put(index, encode(&seq));
    txn.put(ak, encode(&record));
    Ok(Some(seq))
}

/// Deletes every row under `prefix` (read from the base store; rows written in this apply are
/// not under an agent that is being deleted).
fn delete_prefix<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    base: &R,
    prefix: &[u8],
) -> std::io::Result<()> {
    let mut after: Option<Vec<u8>> = None;
    loop {
        let rows = base.scan(prefix, after.as_deref(), 1024)?;
        let Some((last, _)) = rows.last() else {
            return Ok(());
        };
        after = Some(last.clone());
        for (k, _) in rows {
            txn.delete(k);
        }
    }
}

/// Applies an agent or message command (the caller dispatches only those here).
pub(super) fn apply<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    base: &R,
    shard: GroupId,
    cmd: &ShardCommand,
    at_ms: u64,
) -> std::io::Result<ShardResponse> {
    Ok(match cmd {
        ShardCommand::AgentRegister {
            ws,
            name,
            description,
            capabilities,
            metadata,
        } => {
            let k = keys::agent(ws, name);
            let existing = get::<Agent, R>(txn, &k)?;
            let created = existing.is_none();
            let agent = match existing {
                Some(mut a) => {
                    a.description = description.clone();
                    a.capabilities = capabilities.clone();
                    a.metadata = metadata.clone();
                    a.updated_at = at_ms;
                    a
                }
                None => {
                    record_event(txn, ws, name, AgentEventKind::Registered, at_ms)?;
                    Agent {
                        name: name.clone(),
                        description: description.clone(),
                        capabilities: capabilities.clone(),
                        metadata: metadata.clone(),
                        status: AgentStatus::Offline,
                        last_seen_at: None,
                        status_changed_at: at_ms,
                        registered_at: at_ms,
                        updated_at: at_ms,
                        inbox_seq: 0,
                    }
                }
            };
            txn.put(k, encode(&agent));
            ShardResponse::Agent {
                agent: Box::new(agent),
                created,
            }
        }
        ShardCommand::AgentPresence {
            ws,
            name,
            online,
            last_seen_at,
        } => {
            let k = keys::agent(ws, name);
            match get::<Agent, R>(txn, &k)? {
                None => ShardResponse::Refused(not_found_agent(name)),
                Some(mut agent) => {
                    let status = if *online {
                        AgentStatus::Online
                    } else {
                        AgentStatus::Offline
                    };
                    if agent.status != status {
                        agent.status = status;
                        agent.status_changed_at = at_ms;
                        if *online {
                            agent.last_seen_at = Some(at_ms);
                        } else if let Some(seen) = last_seen_at {
                            agent.last_seen_at =
                                Some(agent.last_seen_at.map_or(*seen, |s| s.max(*seen)));
                        }
                        let kind = if *online {
                            AgentEventKind::Online
                        } else {
                            AgentEventKind::Offline
                        };
                        record_event(txn, ws, name, kind, at_ms)?;
                        txn.put(k, encode(&agent));
                    }
                    ShardResponse::Agent {
                        agent: Box::new(agent),
                        created: false,
                    }
                }
            }
        }
        ShardCommand::AgentDelete { ws, name } => {
            let k = keys::agent(ws, name);
            if txn.get(&k)?.is_none() {
                ShardResponse::Refused(not_found_agent(name))
            } else {
                txn.delete(k);
                txn.delete(super::agent_card::key(ws, name));
                delete_prefix(txn, base, &keys::inbox_prefix(ws, name))?;
                delete_prefix(txn, base, &keys::inbox_index_prefix(ws, name))?;
                record_event(txn, ws, name, AgentEventKind::Deleted, at_ms)?;
                ShardResponse::Deleted(name.clone())
            }
        }
        ShardCommand::MessageCreate {
            ws,
            message,
            idempotency,
            recipients,
            deliver_here,
        } => create_message(
            txn,
            shard,
            ws,
            message,
            idempotency.as_ref(),
            recipients,
            deliver_here,
            at_ms,
        )?,
        ShardCommand::InboxDeliver {
            ws,
            message,
            agents,
        } => {
            let mut delivered = Vec::new();
            for agent in agents {
                if let Some(seq) = deliver(txn, ws, agent, message)? {
                    delivered.push((agent.clone(), seq));
                }
            }
            ShardResponse::Delivered(delivered)
        }
        _ => ShardResponse::Refused(CoreError::internal(
            "agent apply got a command of another group",
        )),
    })
}

#[allow(clippy::too_many_arguments)]
fn create_message<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    shard: GroupId,
    ws: &str,
    new: &NewMessage,
    idempotency: Option<&Idempotency>,
    recipients: &[String],
    deliver_here: &[String],
    at_ms: u64,
) -> std::io::Result<ShardResponse> {
    let direct = new.to != "broadcast";
    // A retry of a send already made: replay it.
    if let Some(idem) = idempotency {
        if let Some(rec) = get::<IdemRecord, R>(txn, &keys::idem(ws, &idem.key))? {
            if rec.at + IDEMPOTENCY_WINDOW_MS > at_ms {
                if rec.payload_hash != idem.payload_hash {
                    return Ok(ShardResponse::Refused(CoreError::conflict(format!(
                        "idempotency key {:?} was already used with a different request",
                        idem.key
                    ))));
                }
                let Some(stored) = get::<StoredMessage, R>(txn, &keys::message(&rec.message_id))?
                else {
                    return Ok(ShardResponse::Refused(CoreError::internal(
                        "idempotency record names a missing message",
                    )));
                };
                // The caller redoes the deliveries to the recorded recipients (not to
                // `deliver_here`, which reflects the agents of the retry's time).
                return Ok(ShardResponse::Message {
                    message: Box::new(stored.message),
                    recipients: rec.recipients,
                    delivered: Vec::new(),
                    replay: true,
                });
            }
        }
    }
    // A direct message to an agent of this shard needs the agent now, before anything is written.
    if direct {
        for agent in deliver_here {
            if txn.get(&keys::agent(ws, agent))?.is_none() {
                return Ok(ShardResponse::Refused(not_found_agent(agent)));
            }
        }
    }
    let n = counter(txn, keys::MESSAGE_COUNTER)?;
    let message = Message {
        id: message_id(shard, n),
        to: new.to.clone(),
        from: new.from.clone(),
        body: new.body.clone(),
        metadata: new.metadata.clone(),
        priority: new.priority,
        reply_to: new.reply_to.clone(),
        thread_id: new.thread_id.clone(),
        created_at: at_ms,
        recipients: recipients.len() as u32,
    };
    txn.put(
        keys::message(&message.id),
        encode(&StoredMessage {
            ws: ws.to_string(),
            message: message.clone(),
        }),
    );
    if let Some(idem) = idempotency {
        let rec = IdemRecord {
            payload_hash: idem.payload_hash,
            message_id: message.id.clone(),
            recipients: recipients.to_vec(),
            at: at_ms,
        };
        txn.put(keys::idem(ws, &idem.key), encode(&rec));
    }
    let mut delivered = Vec::new();
    for agent in deliver_here {
        if let Some(seq) = deliver(txn, ws, agent, &message)? {
            delivered.push((agent.clone(), seq));
        }
    }
    Ok(ShardResponse::Message {
        message: Box::new(message),
        recipients: recipients.to_vec(),
        delivered,
        replay: false,
    })
}

fn not_found_agent(name: &str) -> CoreError {
    CoreError::not_found(format!("agent {name:?} not found"))
}

/// Agents scanned per step while filtering a list by status.
const SCAN_CHUNK: usize = 256;

/// The newest agent event sequence of this shard (shared by its workspaces; 0 before any).
pub(super) fn event_head<R: KvRead + ?Sized>(kv: &R) -> std::io::Result<u64> {
    kv.get(keys::EVENT_COUNTER)?
        .map(|b| decode_io::<u64>(&b))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// Runs an agent or message query (the caller dispatches only those here).
pub(super) fn query<R: KvRead + ?Sized>(
    kv: &R,
    q: &ShardQuery,
) -> Result<ShardReadResult, CoreError> {
    fn dec<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, CoreError> {
        decode_io(b).map_err(io)
    }
    let agent = |ws: &str, name: &str| -> Result<Agent, CoreError> {
        match kv.get(&keys::agent(ws, name)).map_err(io)? {
            Some(b) => dec(&b),
            None => Err(not_found_agent(name)),
        }
    };
    match q {
        ShardQuery::AgentGet { ws, name } => Ok(ShardReadResult::Agent(agent(ws, name)?)),
        ShardQuery::AgentList {
            ws,
            status,
            after,
            limit,
        } => {
            let prefix = keys::agent_prefix(ws);
            let mut cursor = after.as_ref().map(|a| keys::agent(ws, a));
            let mut out = Vec::new();
            while out.len() < *limit {
                let chunk = if status.is_some() {
                    SCAN_CHUNK
                } else {
                    *limit - out.len()
                };
                let rows = kv.scan(&prefix, cursor.as_deref(), chunk).map_err(io)?;
                let Some((last, _)) = rows.last() else { break };
                cursor = Some(last.clone());
                let done = rows.len() < chunk;
                for (_, v) in &rows {
                    let a: Agent = dec(v)?;
                    if status.is_none_or(|s| s == a.status) && out.len() < *limit {
                        out.push(a);
                    }
                }
                if done {
                    break;
                }
            }
            Ok(ShardReadResult::AgentPage(out))
        }
        ShardQuery::AgentsOnline { after, limit } => {
            let after_key = after.as_ref().map(|(ws, name)| keys::agent(ws, name));
            let mut cursor = after_key;
            let mut out = Vec::new();
            loop {
                let rows = kv
                    .scan(keys::ALL_AGENTS, cursor.as_deref(), SCAN_CHUNK)
                    .map_err(io)?;
                let Some((last, _)) = rows.last() else { break };
                cursor = Some(last.clone());
                let done = rows.len() < SCAN_CHUNK;
                for (k, v) in &rows {
                    let a: Agent = dec(v)?;
                    if a.status == AgentStatus::Online && out.len() < *limit {
                        let ws = k[2..k.len() - a.name.len() - 1].to_vec();
                        out.push((String::from_utf8_lossy(&ws).into_owned(), a.name));
                    }
                }
                if done || out.len() >= *limit {
                    break;
                }
            }
            Ok(ShardReadResult::OnlineAgents(out))
        }
        ShardQuery::MessageGet { ws, id } => match kv.get(&keys::message(id)).map_err(io)? {
            Some(b) => {
                let stored: StoredMessage = dec(&b)?;
                if &stored.ws == ws {
                    Ok(ShardReadResult::Message(stored.message))
                } else {
                    Err(CoreError::not_found(format!("message {id} not found")))
                }
            }
            None => Err(CoreError::not_found(format!("message {id} not found"))),
        },
        ShardQuery::InboxRead {
            ws,
            agent: name,
            since,
            limit,
        } => {
            let a = agent(ws, name)?;
            let prefix = keys::inbox_prefix(ws, name);
            let after = keys::inbox(ws, name, *since);
            let rows = kv.scan(&prefix, Some(&after), *limit).map_err(io)?;
            let items = rows.iter().map(|(_, v)| dec(v)).collect::<Result<_, _>>()?;
            Ok(ShardReadResult::Inbox {
                items,
                last_seq: a.inbox_seq,
            })
        }
        ShardQuery::AgentEvents { ws, since, limit } => {
            let prefix = keys::event_prefix(ws);
            let after = keys::event(ws, *since);
            let rows = kv.scan(&prefix, Some(&after), *limit).map_err(io)?;
            let events = rows.iter().map(|(_, v)| dec(v)).collect::<Result<_, _>>()?;
            Ok(ShardReadResult::AgentEvents(events))
        }
        _ => Err(CoreError::internal(
            "agent query got a query of another group",
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::query as shard_query;
    use super::*;
    use crate::error::ErrorCode;

    type Store = BTreeMap<Vec<u8>, Vec<u8>>;

    fn run(store: &mut Store, cmd: ShardCommand, at: u64) -> ShardResponse {
        super::super::apply_to_map(store, 5, &cmd, at)
    }

    fn register(ws: &str, name: &str) -> ShardCommand {
        ShardCommand::AgentRegister {
            ws: ws.into(),
            name: name.into(),
            description: String::new(),
            capabilities: vec![],
            metadata: "{}".into(),
        }
    }

    fn presence(name: &str, online: bool) -> ShardCommand {
        ShardCommand::AgentPresence {
            ws: "w".into(),
            name: name.into(),
            online,
            last_seen_at: Some(25),
        }
    }

    fn dm(to: &str, body: &str, key: Option<(&str, u8)>) -> ShardCommand {
        ShardCommand::MessageCreate {
            ws: "w".into(),
            message: NewMessage {
                to: format!("agent:{to}"),
                from: None,
                body: body.into(),
                metadata: "{}".into(),
                priority: Priority::Normal,
                reply_to: None,
                thread_id: None,
            },
            idempotency: key.map(|(k, h)| Idempotency {
                key: k.into(),
                payload_hash: [h; 32],
            }),
            recipients: vec![to.into()],
            deliver_here: vec![to.into()],
        }
    }

    fn inbox(store: &Store, agent: &str, since: u64) -> Vec<(u64, String)> {
        let q = ShardQuery::InboxRead {
            ws: "w".into(),
            agent: agent.into(),
            since,
            limit: 100,
        };
        match shard_query(store, &q).unwrap() {
            ShardReadResult::Inbox { items, .. } => {
                items.into_iter().map(|i| (i.seq, i.message.body)).collect()
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    fn events(store: &Store) -> Vec<(String, AgentEventKind)> {
        let q = ShardQuery::AgentEvents {
            ws: "w".into(),
            since: 0,
            limit: 100,
        };
        match shard_query(store, &q).unwrap() {
            ShardReadResult::AgentEvents(e) => e.into_iter().map(|e| (e.agent, e.kind)).collect(),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn register_is_an_upsert_that_keeps_presence_and_inbox() {
        let mut s = Store::new();
        let ShardResponse::Agent { agent, created } = run(&mut s, register("w", "a"), 1) else {
            panic!()
        };
        assert!(created);
        assert_eq!(agent.status, AgentStatus::Offline);
        run(&mut s, presence("a", true), 2);
        run(&mut s, dm("a", "1", None), 3);
        let again = ShardCommand::AgentRegister {
            ws: "w".into(),
            name: "a".into(),
            description: "new".into(),
            capabilities: vec!["x".into()],
            metadata: "{}".into(),
        };
        let ShardResponse::Agent { agent, created } = run(&mut s, again, 4) else {
            panic!()
        };
        assert!(!created);
        assert_eq!(
            (
                agent.status,
                agent.inbox_seq,
                agent.registered_at,
                agent.description.as_str()
            ),
            (AgentStatus::Online, 1, 1, "new")
        );
    }

    #[test]
    fn presence_writes_only_transitions_and_records_each_as_an_event() {
        let mut s = Store::new();
        run(&mut s, register("w", "a"), 1);
        let mut statuses = Vec::new();
        for (online, at) in [(true, 10), (true, 20), (false, 30), (false, 40), (true, 50)] {
            let ShardResponse::Agent { agent, .. } = run(&mut s, presence("a", online), at) else {
                panic!()
            };
            statuses.push((agent.status, agent.status_changed_at, agent.last_seen_at));
        }
        let (on, off) = (AgentStatus::Online, AgentStatus::Offline);
        assert_eq!(
            statuses,
            vec![
                (on, 10, Some(10)),
                (on, 10, Some(10)),
                (off, 30, Some(25)),
                (off, 30, Some(25)),
                (on, 50, Some(50))
            ]
        );
        let kinds: Vec<_> = events(&s).into_iter().map(|(_, k)| k).collect();
        assert_eq!(
            kinds,
            vec![
                AgentEventKind::Registered,
                AgentEventKind::Online,
                AgentEventKind::Offline,
                AgentEventKind::Online
            ]
        );
        assert!(matches!(
            run(&mut s, presence("ghost", true), 60),
            ShardResponse::Refused(e) if e.code == ErrorCode::NotFound
        ));
    }

    #[test]
    fn inbox_seqs_are_gap_free_and_appends_are_idempotent_by_message_id() {
        let mut s = Store::new();
        run(&mut s, register("w", "a"), 1);
        run(&mut s, register("w", "b"), 1);
        let mut ids = Vec::new();
        for (i, to) in ["a", "b", "a", "a"].iter().enumerate() {
            let ShardResponse::Message {
                message, delivered, ..
            } = run(&mut s, dm(to, &i.to_string(), None), 10 + i as u64)
            else {
                panic!()
            };
            assert_eq!(shard_of_message_id(&message.id), Some(5));
            ids.push((message, delivered));
        }
        assert_eq!(ids[3].1, vec![("a".to_string(), 3)]);
        // A broadcast fan-out delivered twice (a retry) lands once.
        let deliver = ShardCommand::InboxDeliver {
            ws: "w".into(),
            message: (*ids[1].0).clone(),
            agents: vec!["a".into(), "b".into(), "gone".into()],
        };
        for _ in 0..2 {
            let ShardResponse::Delivered(d) = run(&mut s, deliver.clone(), 20) else {
                panic!()
            };
            assert_eq!(d, vec![("a".to_string(), 4), ("b".to_string(), 1)]);
        }
        assert_eq!(
            inbox(&s, "a", 0),
            vec![
                (1, "0".into()),
                (2, "2".into()),
                (3, "3".into()),
                (4, "1".into())
            ]
        );
        assert_eq!(inbox(&s, "a", 2), vec![(3, "3".into()), (4, "1".into())]);
        assert_eq!(inbox(&s, "a", 4), vec![]);
        // A DM to an unknown agent is refused and writes nothing.
        let before = s.clone();
        assert!(matches!(
            run(&mut s, dm("ghost", "x", Some(("k", 1))), 30),
            ShardResponse::Refused(e) if e.code == ErrorCode::NotFound
        ));
        assert_eq!(s, before);
    }

    #[test]
    fn a_retried_send_replays_and_a_changed_payload_conflicts() {
        let mut s = Store::new();
        run(&mut s, register("w", "a"), 1);
        let ShardResponse::Message {
            message: first,
            replay: false,
            ..
        } = run(&mut s, dm("a", "hi", Some(("k1", 7))), 10)
        else {
            panic!()
        };
        let ShardResponse::Message {
            message: again,
            replay: true,
            delivered,
            ..
        } = run(&mut s, dm("a", "hi", Some(("k1", 7))), 20)
        else {
            panic!()
        };
        assert_eq!(again, first);
        assert_eq!(
            delivered,
            vec![],
            "a replay leaves deliveries to the caller"
        );
        // The caller's redelivery of the replayed message is a no-op.
        let redo = ShardCommand::InboxDeliver {
            ws: "w".into(),
            message: *again,
            agents: vec!["a".into()],
        };
        assert_eq!(
            run(&mut s, redo, 21),
            ShardResponse::Delivered(vec![("a".to_string(), 1)])
        );
        assert_eq!(inbox(&s, "a", 0).len(), 1);
        assert!(matches!(
            run(&mut s, dm("a", "other", Some(("k1", 8))), 30),
            ShardResponse::Refused(e) if e.code == ErrorCode::Conflict
        ));
        // Past the window the key is forgotten.
        let later = 10 + IDEMPOTENCY_WINDOW_MS;
        let ShardResponse::Message {
            message, replay, ..
        } = run(&mut s, dm("a", "other", Some(("k1", 8))), later)
        else {
            panic!()
        };
        assert!(!replay);
        assert_ne!(message.id, first.id);
        assert_eq!(inbox(&s, "a", 0).len(), 2);
    }

    #[test]
    fn delete_removes_the_inbox_and_workspaces_are_isolated() {
        let mut s = Store::new();
        run(&mut s, register("w", "a"), 1);
        run(&mut s, register("v", "a"), 1);
        run(&mut s, dm("a", "1", None), 2);
        run(&mut s, presence("a", true), 3);
        let get = |s: &Store, ws: &str| {
            shard_query(
                s,
                &ShardQuery::AgentGet {
                    ws: ws.into(),
                    name: "a".into(),
                },
            )
        };
        assert!(
            matches!(get(&s, "v").unwrap(), ShardReadResult::Agent(a) if a.status == AgentStatus::Offline)
        );
        let online = shard_query(
            &s,
            &ShardQuery::AgentsOnline {
                after: None,
                limit: 10,
            },
        )
        .unwrap();
        assert_eq!(
            online,
            ShardReadResult::OnlineAgents(vec![("w".into(), "a".into())])
        );
        let del = ShardCommand::AgentDelete {
            ws: "w".into(),
            name: "a".into(),
        };
        assert!(matches!(
            run(&mut s, del.clone(), 4),
            ShardResponse::Deleted(_)
        ));
        assert!(matches!(get(&s, "w"), Err(e) if e.code == ErrorCode::NotFound));
        assert!(get(&s, "v").is_ok());
        assert!(!s
            .keys()
            .any(|k| k.starts_with(b"i\0w\0") || k.starts_with(b"I\0w\0")));
        assert!(
            matches!(run(&mut s, del, 5), ShardResponse::Refused(e) if e.code == ErrorCode::NotFound)
        );
        // Re-registering starts a fresh inbox.
        run(&mut s, register("w", "a"), 6);
        run(&mut s, dm("a", "2", None), 7);
        assert_eq!(inbox(&s, "a", 0), vec![(1, "2".into())]);
    }

    #[test]
    fn list_filters_by_status_and_pages_by_name() {
        let mut s = Store::new();
        for n in ["a", "b", "c", "d", "e"] {
            run(&mut s, register("w", n), 1);
        }
        run(&mut s, presence("b", true), 2);
        run(&mut s, presence("d", true), 2);
        let list = |status, after: Option<&str>, limit| match shard_query(
            &s,
            &ShardQuery::AgentList {
                ws: "w".into(),
                status,
                after: after.map(String::from),
                limit,
            },
        )
        .unwrap()
        {
            ShardReadResult::AgentPage(p) => p.into_iter().map(|a| a.name).collect::<Vec<_>>(),
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(list(None, None, 2), vec!["a", "b"]);
        assert_eq!(list(None, Some("b"), 10), vec!["c", "d", "e"]);
        assert_eq!(list(Some(AgentStatus::Online), None, 10), vec!["b", "d"]);
        assert_eq!(
            list(Some(AgentStatus::Offline), Some("a"), 2),
            vec!["c", "e"]
        );
        assert_eq!(
            list(Some(AgentStatus::Online), Some("d"), 10),
            Vec::<String>::new()
        );
    }
}
