//! Topics on a data shard: durable pub/sub with gap-free per-topic sequences, retention by
//! compaction, and subscriptions that keep a server-side cursor.
//!
//! Invariants kept here:
//! - a topic's sequence numbers are gap-free from 1; messages are removed only from the front
//!   (retention) so the retained ones are always `first_seq..=last_seq`;
//! - a subscription's cursor (the last acknowledged sequence) never moves backwards and never
//!   passes the topic's `last_seq`;
//! - every topic incarnation has a shard-unique `generation`, part of its message and
//!   subscription keys, so a deleted topic's rows (purged later in bounded chunks) are never seen
//!   by a re-created topic of the same name;
//! - every apply does bounded work ([`ShardCommand::TopicCompact`] carries its budget).
//!
//! Key layout (prefix letters used by this module):
//! - `t\0<ws>\0<topic>` → [`Topic`]
//! - `m\0<ws>\0<topic>\0<generation be>\0<seq be>` → [`TopicMessage`]
//! - `s\0<ws>\0<topic>\0<generation be>\0<agent>` → [`Subscription`]
//! - `S\0<ws>\0<agent>\0<topic>` → generation (u64): an agent's subscriptions, for listing
//! - `p\0<generation be>` → [`Purge`]: a deleted topic whose rows remain to be removed
//! - `n\0topic_gen` (counter of generations), `n\0topic_compact` (retention scan position)
//!
//! Team subscriptions live beside these, in [`super::topic_team`] (letters `T`, `U`, `u`); a
//! purge removes their rows too.
//!
//! [`ShardCommand::TopicCompact`]: super::ShardCommand::TopicCompact

use super::io;
use serde::{Deserialize, Serialize};

use super::{counter, get};
use crate::codec::{decode_io, encode};
use crate::error::CoreError;
use crate::kv::{KvRead, Txn};

/// A topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    /// Its name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// How long messages are kept, seconds.
    pub retention_secs: u64,
    /// Milliseconds since the epoch.
    pub created_at: u64,
    /// The sequence of the newest message (0 before any).
    pub last_seq: u64,
    /// The sequence of the oldest retained message; `last_seq + 1` when none is retained.
    pub first_seq: u64,
    /// Shard-unique number of this incarnation of the name.
    pub generation: u64,
    /// Number of subscriptions, at most `MAX_SUBSCRIPTIONS_PER_TOPIC`.
    pub subscriptions: u64,
}

/// A published topic message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMessage {
    /// Gap-free from 1 within its topic.
    pub seq: u64,
    /// JSON text.
    pub body: String,
    /// The publishing agent, if named.
    pub from: Option<String>,
    /// JSON text of an object, if given.
    pub metadata: Option<String>,
    /// Milliseconds since the epoch.
    pub published_at: u64,
}

/// An agent's subscription to a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// The topic.
    pub topic: String,
    /// The subscribing agent.
    pub agent: String,
    /// The last acknowledged sequence: reading resumes after it.
    pub cursor: u64,
    /// Milliseconds since the epoch.
    pub created_at: u64,
    /// The topic generation it belongs to.
    pub generation: u64,
}

/// Where a new subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubscribeFrom {
    /// After the newest message.
    Latest,
    /// At the oldest retained message.
    Earliest,
    /// At this sequence (the cursor becomes `seq - 1`, at most `last_seq`).
    Seq(u64),
}

/// A deleted topic whose messages and subscriptions remain to be removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purge {
    /// Workspace.
    pub ws: String,
    /// Topic name.
    pub topic: String,
    /// The deleted generation.
    pub generation: u64,
}

/// Most subscriptions one topic may have.
pub const MAX_SUBSCRIPTIONS_PER_TOPIC: u64 = 10_000;

/// Topics visited per compaction apply at most (each counts as one unit of the budget too).
const TOPICS_PER_COMPACTION: usize = 256;

pub(super) mod keys {
    pub fn topic(ws: &str, name: &str) -> Vec<u8> {
        [b"t\0", ws.as_bytes(), b"\0", name.as_bytes()].concat()
    }
    pub fn topic_prefix(ws: &str) -> Vec<u8> {
        [b"t\0", ws.as_bytes(), b"\0"].concat()
    }
    pub const ALL_TOPICS: &[u8] = b"t\0";
    pub fn message_prefix(ws: &str, topic: &str, generation: u64) -> Vec<u8> {
        [
            b"m\0",
            ws.as_bytes(),
            b"\0",
            topic.as_bytes(),
            b"\0",
            &generation.to_be_bytes(),
            b"\0",
        ]
        .concat()
    }
    pub fn message(ws: &str, topic: &str, generation: u64, seq: u64) -> Vec<u8> {
        [
            message_prefix(ws, topic, generation),
            seq.to_be_bytes().to_vec(),
        ]
        .concat()
    }
    pub fn sub_prefix(ws: &str, topic: &str, generation: u64) -> Vec<u8> {
        [
            b"s\0",
            ws.as_bytes(),
            b"\0",
            topic.as_bytes(),
            b"\0",
            &generation.to_be_bytes(),
            b"\0",
        ]
        .concat()
    }
    pub fn sub(ws: &str, topic: &str, generation: u64, agent: &str) -> Vec<u8> {
        [sub_prefix(ws, topic, generation), agent.as_bytes().to_vec()].concat()
    }
    pub fn agent_sub_prefix(ws: &str, agent: &str) -> Vec<u8> {
        [b"S\0", ws.as_bytes(), b"\0", agent.as_bytes(), b"\0"].concat()
    }
    pub fn agent_sub(ws: &str, agent: &str, topic: &str) -> Vec<u8> {
        [agent_sub_prefix(ws, agent), topic.as_bytes().to_vec()].concat()
    }
    pub const PURGE_PREFIX: &[u8] = b"p\0";
    pub fn purge(generation: u64) -> Vec<u8> {
        [PURGE_PREFIX, &generation.to_be_bytes()].concat()
    }
    pub const GENERATION_COUNTER: &[u8] = b"n\0topic_gen";
    pub const COMPACT_POSITION: &[u8] = b"n\0topic_compact";
}

fn not_found(topic: &str) -> CoreError {
    CoreError::not_found(format!("topic {topic:?} not found"))
}

fn not_subscribed(topic: &str, agent: &str) -> CoreError {
    CoreError::not_found(format!(
        "agent {agent:?} is not subscribed to topic {topic:?}"
    ))
}

/// Creates a topic; a name in use is a conflict.
pub(super) fn create<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    ws: &str,
    name: &str,
    retention_secs: u64,
    description: &str,
    at_ms: u64,
) -> std::io::Result<Result<Topic, CoreError>> {
    let k = keys::topic(ws, name);
    if txn.get(&k)?.is_some() {
        return Ok(Err(CoreError::conflict(format!(
            "topic {name:?} already exists"
        ))));
    }
    let topic = Topic {
        name: name.to_string(),
        description: description.to_string(),
        retention_secs,
        created_at: at_ms,
        last_seq: 0,
        first_seq: 1,
        generation: counter(txn, keys::GENERATION_COUNTER)?,
        subscriptions: 0,
    };
    txn.put(k, encode(&topic));
    Ok(Ok(topic))
}

/// Appends a message with the next sequence.
pub(super) fn publish<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    ws: &str,
    topic: &str,
    body: &str,
    from: &Option<String>,
    metadata: &Option<String>,
    at_ms: u64,
) -> std::io::Result<Result<TopicMessage, CoreError>> {
    let k = keys::topic(ws, topic);
    let Some(mut t) = get::<Topic, R>(txn, &k)? else {
        return Ok(Err(not_found(topic)));
    };
    t.last_seq += 1;
    let msg = TopicMessage {
        seq: t.last_seq,
        body: body.to_string(),
        from: from.clone(),
        metadata: metadata.clone(),
        published_at: at_ms,
    };
    txn.put(
        keys::message(ws, topic, t.generation, msg.seq),
        encode(&msg),
    );
    txn.put(k, encode(&t));
    Ok(Ok(msg))
}

/// Deletes a topic now and queues its messages and subscriptions for purging.
pub(super) fn delete<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    ws: &str,
    name: &str,
) -> std::io::Result<Result<(), CoreError>> {
    let k = keys::topic(ws, name);
    let Some(t) = get::<Topic, R>(txn, &k)? else {
        return Ok(Err(not_found(name)));
    };
    txn.delete(k);
    let purge = Purge {
        ws: ws.to_string(),
        topic: name.to_string(),
        generation: t.generation,
    };
    txn.put(keys::purge(t.generation), encode(&purge));
    Ok(Ok(()))
}

/// Subscribes `agent`; an existing subscription is returned unchanged (`false`).
pub(super) fn subscribe<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    ws: &str,
    topic: &str,
    agent: &str,
    from: SubscribeFrom,
    at_ms: u64,
) -> std::io::Result<Result<(Subscription, bool), CoreError>> {
    let tk = keys::topic(ws, topic);
    let Some(mut t) = get::<Topic, R>(txn, &tk)? else {
        return Ok(Err(not_found(topic)));
    };
    let k = keys::sub(ws, topic, t.generation, agent);
    if let Some(existing) = get::<Subscription, R>(txn, &k)? {
        return Ok(Ok((existing, false)));
    }
    if t.subscriptions >= MAX_SUBSCRIPTIONS_PER_TOPIC {
        return Ok(Err(CoreError::conflict(format!(
            "topic {topic:?} already has {MAX_SUBSCRIPTIONS_PER_TOPIC} subscriptions"
        ))));
    }
    let cursor = match from {
        SubscribeFrom::Latest => t.last_seq,
        SubscribeFrom::Earliest => t.first_seq - 1,
        SubscribeFrom::Seq(seq) => seq.saturating_sub(1).min(t.last_seq),
    };
    let sub = Subscription {
        topic: topic.to_string(),
        agent: agent.to_string(),
        cursor,
        created_at: at_ms,
        generation: t.generation,
    };
    txn.put(k, encode(&sub));
    txn.put(keys::agent_sub(ws, agent, topic), encode(&t.generation));
    t.subscriptions += 1;
    txn.put(tk, encode(&t));
    Ok(Ok((sub, true)))
}

/// Removes `agent`'s subscription.
pub(super) fn unsubscribe<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    ws: &str,
    topic: &str,
    agent: &str,
) -> std::io::Result<Result<(), CoreError>> {
    let tk = keys::topic(ws, topic);
    let Some(mut t) = get::<Topic, R>(txn, &tk)? else {
        return Ok(Err(not_found(topic)));
    };
    let k = keys::sub(ws, topic, t.generation, agent);
    if txn.get(&k)?.is_none() {
        return Ok(Err(not_subscribed(topic, agent)));
    }
    txn.delete(k);
    txn.delete(keys::agent_sub(ws, agent, topic));
    t.subscriptions = t.subscriptions.saturating_sub(1);
    txn.put(tk, encode(&t));
    Ok(Ok(()))
}

/// Acknowledges messages up to `seq` (capped at `last_seq`); the cursor never moves back.
pub(super) fn ack<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    ws: &str,
    topic: &str,
    agent: &str,
    seq: u64,
) -> std::io::Result<Result<Subscription, CoreError>> {
    let Some(t) = get::<Topic, R>(txn, &keys::topic(ws, topic))? else {
        return Ok(Err(not_found(topic)));
    };
    let k = keys::sub(ws, topic, t.generation, agent);
    let Some(mut sub) = get::<Subscription, R>(txn, &k)? else {
        return Ok(Err(not_subscribed(topic, agent)));
    };
    let target = seq.min(t.last_seq);
    if target > sub.cursor {
        sub.cursor = target;
        txn.put(k, encode(&sub));
    }
    Ok(Ok(sub))
}

/// The outcome of one compaction apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compaction {
    /// Rows deleted.
    pub deleted: u64,
    /// Whether the budget ran out before the work did (another round is worth proposing).
    pub more: bool,
}

/// Removes rows of deleted topics, then messages older than their topic's retention at
/// `at_ms`, doing at most `budget` units of work (a deleted row or a visited topic). Topics
/// are visited round-robin from a stored position, so every topic is reached eventually.
pub(super) fn compact<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    budget: u64,
    at_ms: u64,
) -> std::io::Result<Compaction> {
    let mut left = budget.max(1) as usize;
    let mut deleted = 0u64;

    // Deleted topics first: their rows are dead weight.
    for (pk, pv) in txn.scan(keys::PURGE_PREFIX, None, left)? {
        // Agent events share the `p\0` prefix (`p\0<ws>\0<seq>`, longer keys). Purge keys hold
        // an 8-byte generation whose first byte is 0 for any generation below 2^56, so they
        // sort before every agent event: the first longer key ends the purges.
        if pk.len() != keys::purge(0).len() {
            break;
        }
        let purge: Purge = decode_io(&pv)?;
        let mut done = true;
        let [team_subs, member_cursors] =
            super::topic_team::purge_prefixes(&purge.ws, &purge.topic, purge.generation);
        for prefix in [
            keys::message_prefix(&purge.ws, &purge.topic, purge.generation),
            keys::sub_prefix(&purge.ws, &purge.topic, purge.generation),
            team_subs,
            member_cursors,
        ] {
            let rows = txn.scan(&prefix, None, left)?;
            if rows.len() == left {
                done = false;
            }
            for (k, v) in rows {
                if k.starts_with(b"s\0") {
                    let sub: Subscription = decode_io(&v)?;
                    let back = keys::agent_sub(&purge.ws, &sub.agent, &purge.topic);
                    if get::<u64, R>(txn, &back)? == Some(purge.generation) {
                        txn.delete(back);
                    }
                }
                super::topic_team::purge_row(txn, &purge.ws, &k, &v)?;
                txn.delete(k);
                deleted += 1;
                left -= 1;
            }
            if left == 0 {
                return Ok(Compaction {
                    deleted,
                    more: true,
                });
            }
        }
        if done {
            txn.delete(pk);
            deleted += 1;
            left -= 1;
            if left == 0 {
                return Ok(Compaction {
                    deleted,
                    more: true,
                });
            }
        }
    }

    // Retention: topics after the stored position, wrapping around at the end.
    let position: Option<Vec<u8>> = get(txn, keys::COMPACT_POSITION)?;
    let want = left.min(TOPICS_PER_COMPACTION);
    let topics = txn.scan(keys::ALL_TOPICS, position.as_deref(), want)?;
    let wrapped = topics.len() < want;
    let mut resume_after = position.clone();
    for (tk, tv) in topics {
        if left == 0 {
            break;
        }
        left -= 1;
        let mut topic: Topic = decode_io(&tv)?;
        let ws = workspace_of(&tk);
        let cutoff = at_ms.saturating_sub(topic.retention_secs.saturating_mul(1000));
        let prefix = keys::message_prefix(&ws, &topic.name, topic.generation);
        let rows = txn.scan(&prefix, None, left)?;
        let asked = rows.len() == left;
        let mut reached_live = false;
        let before = topic.first_seq;
        for (mk, mv) in rows {
            let msg: TopicMessage = decode_io(&mv)?;
            if msg.published_at >= cutoff {
                reached_live = true;
                break;
            }
            txn.delete(mk);
            topic.first_seq = msg.seq + 1;
            deleted += 1;
            left -= 1;
        }
        if topic.first_seq != before {
            txn.put(tk.clone(), encode(&topic));
        }
        if asked && !reached_live && left == 0 {
            // This topic may hold more expired messages: resume at it next time.
            break;
        }
        resume_after = Some(tk);
    }
    let more = left == 0;
    match (wrapped && !more, resume_after) {
        (true, _) | (_, None) => txn.delete(keys::COMPACT_POSITION.to_vec()),
        (false, Some(k)) => txn.put(keys::COMPACT_POSITION.to_vec(), encode(&k)),
    }
    Ok(Compaction { deleted, more })
}

/// The workspace part of a topic key `t\0<ws>\0<name>`.
fn workspace_of(topic_key: &[u8]) -> String {
    let rest = &topic_key[2..];
    let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end]).into_owned()
}

/// Reads for topics, run against a shard's key space.
pub(super) mod read {
    use super::*;

    fn dec<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, CoreError> {
        decode_io(b).map_err(io)
    }

    /// One topic.
    pub fn topic<R: KvRead + ?Sized>(kv: &R, ws: &str, name: &str) -> Result<Topic, CoreError> {
        match kv.get(&keys::topic(ws, name)).map_err(io)? {
            Some(b) => dec(&b),
            None => Err(not_found(name)),
        }
    }

    /// Topics with names after `after`, in name order.
    pub fn list<R: KvRead + ?Sized>(
        kv: &R,
        ws: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Topic>, CoreError> {
        let after = after.map(|a| keys::topic(ws, a));
        kv.scan(&keys::topic_prefix(ws), after.as_deref(), limit)
            .map_err(io)?
            .iter()
            .map(|(_, v)| dec(v))
            .collect()
    }

    /// The topic and its messages with `seq > since`, ascending.
    pub fn messages<R: KvRead + ?Sized>(
        kv: &R,
        ws: &str,
        name: &str,
        since: u64,
        limit: usize,
    ) -> Result<(Topic, Vec<TopicMessage>), CoreError> {
        let t = topic(kv, ws, name)?;
        let prefix = keys::message_prefix(ws, name, t.generation);
        let after = keys::message(ws, name, t.generation, since);
        let rows = kv.scan(&prefix, Some(&after), limit).map_err(io)?;
        let msgs = rows.iter().map(|(_, v)| dec(v)).collect::<Result<_, _>>()?;
        Ok((t, msgs))
    }

    /// `agent`'s subscription to a topic.
    pub fn subscription<R: KvRead + ?Sized>(
        kv: &R,
        ws: &str,
        name: &str,
        agent: &str,
    ) -> Result<Subscription, CoreError> {
        let t = topic(kv, ws, name)?;
        match kv
            .get(&keys::sub(ws, name, t.generation, agent))
            .map_err(io)?
        {
            Some(b) => dec(&b),
            None => Err(not_subscribed(name, agent)),
        }
    }

    /// `agent`'s subscriptions on this shard to topics named after `after`, in name order,
    /// each with its topic's `last_seq`. Rows of deleted topics not yet purged are skipped.
    pub fn subscriptions<R: KvRead + ?Sized>(
        kv: &R,
        ws: &str,
        agent: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(Subscription, u64)>, CoreError> {
        let prefix = keys::agent_sub_prefix(ws, agent);
        let mut position = after.map(|a| keys::agent_sub(ws, agent, a));
        let mut out = Vec::new();
        while out.len() < limit {
            let rows = kv
                .scan(&prefix, position.as_deref(), limit - out.len())
                .map_err(io)?;
            let full = rows.len() == limit - out.len();
            for (k, v) in &rows {
                let generation: u64 = dec(v)?;
                let name = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                let Some(tb) = kv.get(&keys::topic(ws, &name)).map_err(io)? else {
                    continue;
                };
                let t: Topic = dec(&tb)?;
                if t.generation != generation {
                    continue;
                }
                if let Some(sb) = kv
                    .get(&keys::sub(ws, &name, generation, agent))
                    .map_err(io)?
                {
                    out.push((dec(&sb)?, t.last_seq));
                }
            }
            position = rows.last().map(|(k, _)| k.clone());
            if !full {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::{query, ShardCommand, ShardQuery, ShardReadResult, ShardResponse};
    use super::*;
    use crate::error::ErrorCode;

    type Store = BTreeMap<Vec<u8>, Vec<u8>>;

    fn run(store: &mut Store, cmd: ShardCommand, at: u64) -> ShardResponse {
        super::super::apply_to_map(store, 3, &cmd, at)
    }

    fn create(name: &str, retention_secs: u64) -> ShardCommand {
        ShardCommand::TopicCreate {
            ws: "w".into(),
            name: name.into(),
            retention_secs,
            description: String::new(),
        }
    }

    fn publish(topic: &str, body: &str) -> ShardCommand {
        ShardCommand::TopicPublish {
            ws: "w".into(),
            topic: topic.into(),
            body: body.into(),
            from: None,
            metadata: None,
        }
    }

    fn read(s: &Store, topic: &str, since: u64) -> Result<(Topic, Vec<u64>), CoreError> {
        let q = ShardQuery::TopicMessages {
            ws: "w".into(),
            topic: topic.into(),
            since,
            limit: 100,
        };
        match query(s, &q)? {
            ShardReadResult::TopicMessages { topic, items } => {
                Ok((topic, items.iter().map(|m| m.seq).collect()))
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    fn compact(s: &mut Store, budget: u64, at: u64) -> Compaction {
        match run(s, ShardCommand::TopicCompact { budget }, at) {
            ShardResponse::TopicCompacted(c) => c,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn sequences_are_gap_free_and_publish_needs_the_topic() {
        let mut s = Store::new();
        assert!(
            matches!(run(&mut s, publish("t", "0"), 1), ShardResponse::Refused(e) if e.code == ErrorCode::NotFound)
        );
        assert!(matches!(
            run(&mut s, create("t", 3600), 2),
            ShardResponse::Topic(_)
        ));
        for (i, at) in [3, 4, 5].iter().enumerate() {
            match run(&mut s, publish("t", "x"), *at) {
                ShardResponse::TopicPublished(m) => {
                    assert_eq!((m.seq, m.published_at), (i as u64 + 1, *at))
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(
            matches!(run(&mut s, create("t", 1), 6), ShardResponse::Refused(e) if e.code == ErrorCode::Conflict)
        );
        let (t, seqs) = read(&s, "t", 1).unwrap();
        assert_eq!(seqs, vec![2, 3]);
        assert_eq!((t.first_seq, t.last_seq), (1, 3));
    }

    #[test]
    fn compaction_skips_agent_events_sharing_the_purge_prefix() {
        let mut s = Store::new();
        let register = ShardCommand::AgentRegister {
            ws: "w".into(),
            name: "a".into(),
            description: String::new(),
            capabilities: Vec::new(),
            metadata: "{}".into(),
        };
        run(&mut s, register, 0);
        run(&mut s, create("gone", 10), 0);
        run(&mut s, publish("gone", "x"), 0);
        let del = ShardCommand::TopicDelete {
            ws: "w".into(),
            name: "gone".into(),
        };
        run(&mut s, del, 1);
        let c = compact(&mut s, 100, 2);
        assert!(!c.more, "{c:?}");
        assert_eq!(c.deleted, 2, "the message and the purge record");
        let c = compact(&mut s, 100, 3);
        assert_eq!(c.deleted, 0, "{c:?}");
    }

    #[test]
    fn compaction_deletes_only_expired_messages_and_moves_first_seq() {
        let mut s = Store::new();
        run(&mut s, create("old", 10), 0);
        run(&mut s, create("keep", 1_000), 0);
        for at in [1_000, 2_000, 3_000, 20_000] {
            run(&mut s, publish("old", "x"), at);
            run(&mut s, publish("keep", "x"), at);
        }
        // At 13.5 s, messages of `old` published before 3.5 s are expired.
        let c = compact(&mut s, 1_000, 13_500);
        assert_eq!(c.deleted, 3);
        assert!(!c.more);
        let (t, seqs) = read(&s, "old", 0).unwrap();
        assert_eq!((t.first_seq, t.last_seq, seqs), (4, 4, vec![4]));
        let (t, seqs) = read(&s, "keep", 0).unwrap();
        assert_eq!((t.first_seq, seqs), (1, vec![1, 2, 3, 4]));
        // Nothing more expired: a second round changes nothing.
        assert_eq!(compact(&mut s, 1_000, 13_500).deleted, 0);
        // Sequences continue after compaction; when everything expires first_seq = last_seq + 1.
        run(&mut s, publish("old", "x"), 21_000);
        compact(&mut s, 1_000, 100_000);
        let (t, seqs) = read(&s, "old", 0).unwrap();
        assert_eq!((t.first_seq, t.last_seq, seqs), (6, 5, vec![]));
    }

    #[test]
    fn compaction_is_bounded_and_resumes_where_it_stopped() {
        let mut s = Store::new();
        run(&mut s, create("a", 1), 0);
        run(&mut s, create("b", 1), 0);
        for _ in 0..5 {
            run(&mut s, publish("a", "x"), 0);
            run(&mut s, publish("b", "x"), 0);
        }
        let mut rounds = 0;
        let mut total = 0;
        loop {
            let c = compact(&mut s, 3, 10_000);
            total += c.deleted;
            rounds += 1;
            assert!(c.deleted <= 3);
            if !c.more && c.deleted == 0 {
                break;
            }
            assert!(rounds < 20, "compaction does not converge");
        }
        assert_eq!(total, 10);
        for name in ["a", "b"] {
            let (t, seqs) = read(&s, name, 0).unwrap();
            assert_eq!((t.first_seq, seqs), (6, vec![]));
        }
    }

    #[test]
    fn subscription_cursor_is_monotonic_and_capped() {
        let mut s = Store::new();
        run(&mut s, create("t", 3600), 0);
        for _ in 0..3 {
            run(&mut s, publish("t", "x"), 1);
        }
        let sub = |from| ShardCommand::TopicSubscribe {
            ws: "w".into(),
            topic: "t".into(),
            agent: "a".into(),
            from,
        };
        let ack = |seq| ShardCommand::TopicAck {
            ws: "w".into(),
            topic: "t".into(),
            agent: "a".into(),
            seq,
        };
        assert!(
            matches!(run(&mut s, ack(1), 2), ShardResponse::Refused(e) if e.code == ErrorCode::NotFound)
        );
        match run(&mut s, sub(SubscribeFrom::Earliest), 2) {
            ShardResponse::TopicSubscribed { sub, created } => {
                assert!(created);
                assert_eq!(sub.cursor, 0);
            }
            other => panic!("unexpected {other:?}"),
        }
        // Subscribing again keeps the cursor and counts once.
        assert!(matches!(
            run(&mut s, sub(SubscribeFrom::Latest), 3),
            ShardResponse::TopicSubscribed { sub, created: false } if sub.cursor == 0
        ));
        assert_eq!(read(&s, "t", 0).unwrap().0.subscriptions, 1);
        let cursor = |s: &mut Store, seq| match run(s, ack(seq), 4) {
            ShardResponse::TopicAcked(sub) => sub.cursor,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(cursor(&mut s, 2), 2);
        assert_eq!(
            cursor(&mut s, 1),
            2,
            "a lower ack does not move the cursor back"
        );
        assert_eq!(cursor(&mut s, 99), 3, "the cursor stops at last_seq");
        let list = query(
            &s,
            &ShardQuery::TopicSubscriptionList {
                ws: "w".into(),
                agent: "a".into(),
                after: None,
                limit: 10,
            },
        )
        .unwrap();
        assert!(
            matches!(list, ShardReadResult::TopicSubscriptions(l) if l.len() == 1 && l[0].0.cursor == 3 && l[0].1 == 3)
        );
        let unsub = ShardCommand::TopicUnsubscribe {
            ws: "w".into(),
            topic: "t".into(),
            agent: "a".into(),
        };
        assert!(matches!(
            run(&mut s, unsub.clone(), 5),
            ShardResponse::Deleted(_)
        ));
        assert!(
            matches!(run(&mut s, unsub, 6), ShardResponse::Refused(e) if e.code == ErrorCode::NotFound)
        );
        assert_eq!(read(&s, "t", 0).unwrap().0.subscriptions, 0);
    }

    #[test]
    fn deleted_topic_is_purged_and_a_recreated_one_starts_clean() {
        let mut s = Store::new();
        run(&mut s, create("t", 3600), 0);
        for _ in 0..4 {
            run(&mut s, publish("t", "x"), 1);
        }
        run(
            &mut s,
            ShardCommand::TopicSubscribe {
                ws: "w".into(),
                topic: "t".into(),
                agent: "a".into(),
                from: SubscribeFrom::Earliest,
            },
            2,
        );
        let del = ShardCommand::TopicDelete {
            ws: "w".into(),
            name: "t".into(),
        };
        assert!(matches!(
            run(&mut s, del.clone(), 3),
            ShardResponse::Deleted(_)
        ));
        assert!(
            matches!(run(&mut s, del, 4), ShardResponse::Refused(e) if e.code == ErrorCode::NotFound)
        );
        assert!(read(&s, "t", 0).is_err());
        // Re-created before the purge ran: it starts at seq 1 with no messages or subscribers.
        run(&mut s, create("t", 3600), 5);
        let (t, seqs) = read(&s, "t", 0).unwrap();
        assert_eq!((t.last_seq, t.first_seq, seqs), (0, 1, vec![]));
        let subs = ShardQuery::TopicSubscriptionList {
            ws: "w".into(),
            agent: "a".into(),
            after: None,
            limit: 10,
        };
        assert!(
            matches!(query(&s, &subs).unwrap(), ShardReadResult::TopicSubscriptions(l) if l.is_empty())
        );
        assert!(
            matches!(run(&mut s, publish("t", "y"), 6), ShardResponse::TopicPublished(m) if m.seq == 1)
        );
        // The purge removes the old generation's rows only, in bounded rounds.
        while compact(&mut s, 2, 7).more {}
        assert!(!s.keys().any(|k| k.starts_with(keys::PURGE_PREFIX)));
        assert!(!s.keys().any(|k| k.starts_with(b"S\0")));
        let (_, seqs) = read(&s, "t", 0).unwrap();
        assert_eq!(seqs, vec![1]);
        let msg_rows = s.keys().filter(|k| k.starts_with(b"m\0")).count();
        assert_eq!(msg_rows, 1);
    }
}
