//! The checkers of a chaos run: each reads the recorded history (and what was read back after
//! healing) and gives a [`Verdict`] with its figures and the first problems found.
//!
//! - [`topics`]: acknowledged publishes present at their sequence, no gaps or duplicates in a
//!   topic, no phantom messages, every read contiguous and consistent with the final topic,
//!   no read missing a publish acknowledged before it began, and no subscriber handed messages
//!   its server-side cursor had already acknowledged.
//! - [`websocket`]: every WebSocket connection delivered its topic from the sequence it asked
//!   for, each message once and in order, what the topic holds; a subscriber missed no
//!   acknowledged publish in the range it followed; acks never moved a cursor back.
//! - [`tasks`]: no two claims with different fencing tokens holding one task at once, no fencing
//!   token handed out twice, at most one completion per task.
//! - [`linearizability`]: the context store's reads and writes, key by key ([`super::wgl`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::history::{Answer, Call, Delivery, Frame, History, Op, Outcome};
use super::wgl::{self, KeyVerdict};

/// Problems quoted per verdict; the counts cover all of them.
const MAX_DETAILS: usize = 20;

/// One checker's result.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// The checker.
    pub name: String,
    /// Whether every property held.
    pub passed: bool,
    /// Figures: what was checked and how many violations of each kind.
    pub counts: BTreeMap<String, u64>,
    /// The first problems found.
    pub problems: Vec<String>,
}

impl Verdict {
    pub(crate) fn new(name: &str) -> Self {
        Verdict {
            name: name.to_string(),
            passed: true,
            counts: BTreeMap::new(),
            problems: Vec::new(),
        }
    }

    /// Adds `n` to figure `what`.
    pub fn count(&mut self, what: &str, n: u64) {
        *self.counts.entry(what.to_string()).or_default() += n;
    }

    /// Records a violation of kind `what`.
    pub fn violation(&mut self, what: &str, detail: String) {
        self.passed = false;
        self.count(what, 1);
        if self.problems.len() < MAX_DETAILS {
            self.problems.push(detail);
        }
    }

    /// Makes sure figure `what` is present (as 0 when nothing was counted).
    fn zero(&mut self, what: &str) {
        self.count(what, 0);
    }
}

/// Checks topics against `finals`, each topic's messages `(seq, id)` as read after healing.
pub fn topics(history: &History, finals: &BTreeMap<String, Vec<(u64, u64)>>) -> Verdict {
    let mut v = Verdict::new("topics");
    for what in [
        "acknowledged publishes missing",
        "acknowledged publishes at another sequence",
        "sequence gaps",
        "duplicate messages in a topic",
        "messages nobody published",
        "failed publishes that took effect",
        "reads inconsistent with the topic",
        "reads with a gap",
        "reads missing an acknowledged publish",
        "duplicates beyond a subscriber's cursor",
        "messages skipped past a subscriber's cursor",
    ] {
        v.zero(what);
    }

    // The final topics: gap-free from 1, each message once.
    let mut at: BTreeMap<(&str, u64), u64> = BTreeMap::new();
    let mut where_id: BTreeMap<u64, (&str, u64)> = BTreeMap::new();
    for (topic, messages) in finals {
        v.count("messages in the topics", messages.len() as u64);
        for (i, &(seq, id)) in messages.iter().enumerate() {
            if seq != i as u64 + 1 {
                v.violation(
                    "sequence gaps",
                    format!("{topic}: message {} has seq {seq}", i + 1),
                );
            }
            at.insert((topic.as_str(), seq), id);
            if where_id.insert(id, (topic.as_str(), seq)).is_some() {
                v.violation(
                    "duplicate messages in a topic",
                    format!("{topic}: body {id} appears twice (again at seq {seq})"),
                );
            }
        }
    }

    // Publishes: acknowledged ones present where acknowledged; failed ones absent.
    let mut invoked: BTreeSet<u64> = BTreeSet::new();
    for op in &history.ops {
        let Call::Publish { topic, id } = &op.call else {
            continue;
        };
        invoked.insert(*id);
        match (&op.outcome, where_id.get(id)) {
            (Outcome::Ok(Answer::Published { seq }), Some(&(t, s))) => {
                v.count("acknowledged publishes", 1);
                if t != topic || s != *seq {
                    v.violation(
                        "acknowledged publishes at another sequence",
                        format!("{topic}: body {id} acknowledged at seq {seq}, found at {t}/{s}"),
                    );
                }
            }
            (Outcome::Ok(Answer::Published { seq }), None) => {
                v.count("acknowledged publishes", 1);
                v.violation(
                    "acknowledged publishes missing",
                    format!("{topic}: body {id} acknowledged at seq {seq} is not in the topic"),
                );
            }
            (Outcome::Fail(error), Some(&(t, s))) => v.violation(
                "failed publishes that took effect",
                format!("{t}: body {id} refused ({error}) but present at seq {s}"),
            ),
            (Outcome::Unknown(_), found) => {
                v.count("publishes with unknown outcome", 1);
                if found.is_some() {
                    v.count("unknown publishes that took effect", 1);
                }
            }
            _ => {}
        }
    }
    for (id, (topic, seq)) in &where_id {
        if !invoked.contains(id) {
            v.violation(
                "messages nobody published",
                format!("{topic}: seq {seq} holds body {id}, never published"),
            );
        }
    }

    // Reads, per subscriber in the order it made them.
    let mut by_subscriber: BTreeMap<(usize, &str), Vec<&Op>> = BTreeMap::new();
    let mut acked: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
    for op in &history.ops {
        match (&op.call, &op.outcome) {
            (
                Call::Read {
                    topic, subscriber, ..
                },
                _,
            ) => by_subscriber
                .entry((*subscriber, topic.as_str()))
                .or_default()
                .push(op),
            (Call::Publish { topic, .. }, Outcome::Ok(Answer::Published { seq })) => acked
                .entry(topic.as_str())
                .or_default()
                .push((op.complete_us, *seq)),
            _ => {}
        }
    }
    for list in acked.values_mut() {
        list.sort_unstable();
    }
    // The highest sequence acknowledged to a publisher before `t`.
    let acked_before = |topic: &str, t: u64| -> u64 {
        acked.get(topic).map_or(0, |list| {
            list[..list.partition_point(|&(done, _)| done < t)]
                .iter()
                .map(|&(_, seq)| seq)
                .max()
                .unwrap_or(0)
        })
    };
    for ((subscriber, topic), mut ops) in by_subscriber {
        ops.sort_by_key(|op| op.invoke_us);
        // The subscription's cursor: at least `lower` (acknowledgements that succeeded), at
        // most `upper` (those whose outcome is unknown may have moved it further).
        let (mut lower, mut upper) = (0u64, 0u64);
        for op in ops {
            let Call::Read { from, limit, .. } = &op.call else {
                continue;
            };
            if let Delivery::AckThenSince(since) = from {
                // The acknowledgement may have applied even if the read after it failed.
                upper = upper.max(*since);
            }
            let Outcome::Ok(Answer::Page { items, .. }) = &op.outcome else {
                continue;
            };
            v.count("reads", 1);
            v.count("messages delivered", items.len() as u64);
            if let Delivery::AckThenSince(since) = from {
                lower = lower.max(*since);
            }
            for pair in items.windows(2) {
                if pair[1].0 != pair[0].0 + 1 {
                    v.violation(
                        "reads with a gap",
                        format!(
                            "subscriber {subscriber} on {topic}: seq {} then {}",
                            pair[0].0, pair[1].0
                        ),
                    );
                }
            }
            for &(seq, id) in items {
                if at.get(&(topic, seq)) != Some(&id) {
                    v.violation(
                        "reads inconsistent with the topic",
                        format!(
                            "subscriber {subscriber} read body {id} at {topic}/{seq}, the topic \
                             holds {:?}",
                            at.get(&(topic, seq))
                        ),
                    );
                }
            }
            let first = items.first().map(|&(seq, _)| seq);
            let start = match from {
                Delivery::Since(since) | Delivery::AckThenSince(since) => {
                    if first.is_some_and(|f| f != since + 1) {
                        v.violation(
                            "reads with a gap",
                            format!(
                                "subscriber {subscriber} on {topic}: since {since} answered \
                                 from seq {first:?}"
                            ),
                        );
                    }
                    *since
                }
                Delivery::Cursor => {
                    if let Some(f) = first {
                        if f <= lower {
                            v.violation(
                                "duplicates beyond a subscriber's cursor",
                                format!(
                                    "subscriber {subscriber} on {topic}: cursor acknowledged up \
                                     to {lower}, redelivered from {f}"
                                ),
                            );
                        } else if f > upper + 1 {
                            v.violation(
                                "messages skipped past a subscriber's cursor",
                                format!(
                                    "subscriber {subscriber} on {topic}: cursor at most {upper}, \
                                     delivered from {f}"
                                ),
                            );
                        }
                    }
                    lower
                }
            };
            // A short page ends the topic as the read saw it: nothing acknowledged before the
            // read began may lie beyond it.
            if items.len() < *limit as usize {
                let seen_to = items.last().map_or(start, |&(seq, _)| seq);
                let must = acked_before(topic, op.invoke_us);
                let checkable = !matches!(from, Delivery::Cursor) || lower == upper;
                if checkable && must > seen_to {
                    v.violation(
                        "reads missing an acknowledged publish",
                        format!(
                            "subscriber {subscriber} on {topic}: read up to {seen_to}, but seq \
                             {must} was acknowledged before the read began"
                        ),
                    );
                }
            }
        }
    }
    v
}

/// One subscribed WebSocket connection as the websocket checker sees it.
struct Connection<'a> {
    op: &'a Op,
    /// The sequence it asked to start at.
    from: u64,
    /// What it delivered.
    frames: &'a [Frame],
}

/// Checks what every WebSocket subscriber was delivered against `finals` (each topic's
/// messages `(seq, id)` read after healing) and the acknowledged publishes.
///
/// Per connection ([`Call::Stream`]), subscribed from sequence `from`: the first frame is
/// `from` and each next one the previous + 1. A frame at or below one already delivered on the
/// connection, or below `from`, is a duplicate beyond the subscriber's resume point; a frame
/// past the next sequence is a gap. Messages of a resumed connection at or after its `from` are
/// allowed again (counted, not violations): the resume point is the subscriber's to choose. The
/// server skips messages only where retention removed them (a resume from before the oldest
/// kept message starts at the oldest kept); the run's topics keep everything, so any skip
/// here is a gap. Across a subscriber's connections, every publish acknowledged with a
/// sequence from its first connection's `from` up to the highest sequence it was delivered
/// must have reached it. An `acked` answer never reports a cursor below the sequence acked.
pub fn websocket(history: &History, finals: &BTreeMap<String, Vec<(u64, u64)>>) -> Verdict {
    let mut v = Verdict::new("websocket subscribers");
    for what in [
        "sequence gaps on a connection",
        "duplicates beyond a subscriber's resume point",
        "frames inconsistent with the topic",
        "acknowledged publishes a subscriber missed",
        "acks answered with a cursor below the ack",
    ] {
        v.zero(what);
    }
    let at: BTreeMap<(&str, u64), u64> = finals
        .iter()
        .flat_map(|(topic, messages)| {
            messages
                .iter()
                .map(move |&(seq, id)| ((topic.as_str(), seq), id))
        })
        .collect();
    let mut acked: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
    let mut connections: BTreeMap<(usize, &str), Vec<Connection>> = BTreeMap::new();
    for op in &history.ops {
        match (&op.call, &op.outcome) {
            (Call::Publish { topic, id }, Outcome::Ok(Answer::Published { seq })) => {
                acked.entry(topic.as_str()).or_default().push((*seq, *id));
            }
            (
                Call::Stream {
                    topic,
                    subscriber,
                    from,
                },
                outcome,
            ) => {
                v.count("connections", 1);
                if let Outcome::Ok(Answer::Frames {
                    frames, by_client, ..
                }) = outcome
                {
                    if !by_client {
                        v.count("connections ended by the node, the network or a refusal", 1);
                    }
                    connections
                        .entry((*subscriber, topic.as_str()))
                        .or_default()
                        .push(Connection {
                            op,
                            from: *from,
                            frames,
                        });
                } else {
                    v.count("connections refused or unanswered", 1);
                }
            }
            (Call::StreamAck { seq, .. }, Outcome::Ok(Answer::Acked { cursor })) => {
                v.count("acks answered", 1);
                if cursor < seq {
                    v.violation(
                        "acks answered with a cursor below the ack",
                        format!(
                            "ack of {seq} answered with cursor {cursor} (op at {} µs)",
                            op.invoke_us
                        ),
                    );
                }
            }
            _ => {}
        }
    }
    for ((subscriber, topic), mut list) in connections {
        v.count("subscribers", 1);
        list.sort_by_key(|c| c.op.invoke_us);
        let first_from = list.first().map_or(1, |c| c.from);
        let mut delivered: BTreeSet<u64> = BTreeSet::new();
        for Connection { op, from, frames } in list {
            v.count("frames delivered", frames.len() as u64);
            let mut expect = from;
            for frame in frames {
                let seq = frame.seq;
                let in_order = seq >= expect;
                if !in_order {
                    v.violation(
                        "duplicates beyond a subscriber's resume point",
                        format!(
                            "subscriber {subscriber} on {topic}, connection from {from} (at {} \
                             µs): seq {seq} delivered when {expect} was next",
                            op.invoke_us
                        ),
                    );
                } else if seq > expect {
                    v.violation(
                        "sequence gaps on a connection",
                        format!(
                            "subscriber {subscriber} on {topic}, connection from {from} (at {} \
                             µs): seq {seq} delivered when {expect} was next",
                            op.invoke_us
                        ),
                    );
                }
                expect = expect.max(seq + 1);
                if at.get(&(topic, seq)) != Some(&frame.id) {
                    v.violation(
                        "frames inconsistent with the topic",
                        format!(
                            "subscriber {subscriber} was delivered body {} at {topic}/{seq}, the \
                             topic holds {:?}",
                            frame.id,
                            at.get(&(topic, seq))
                        ),
                    );
                }
                if !delivered.insert(seq) && in_order {
                    v.count("messages delivered again after a resume (allowed)", 1);
                }
            }
        }
        let highest = delivered.last().copied().unwrap_or(0);
        for &(seq, id) in acked.get(topic).map_or(&[][..], Vec::as_slice) {
            if (first_from..=highest).contains(&seq) && !delivered.contains(&seq) {
                v.violation(
                    "acknowledged publishes a subscriber missed",
                    format!(
                        "subscriber {subscriber} on {topic} followed {first_from}..={highest} \
                         but was never delivered seq {seq} (body {id})"
                    ),
                );
            }
        }
    }
    v
}

/// A claim as the task checker sees it.
#[derive(Debug, Clone)]
struct Hold {
    token: u64,
    agent: String,
    /// The claim's leader timestamp, server ms.
    start: u64,
    /// The earliest the hold may have ended, server ms.
    end: u64,
    op: usize,
}

/// Checks that no task was held by two claims at once.
pub fn tasks(history: &History) -> Verdict {
    let mut v = Verdict::new("tasks");
    for what in [
        "overlapping holds with different tokens",
        "fencing tokens handed out twice",
        "tasks completed twice",
    ] {
        v.zero(what);
    }
    let mut holds: BTreeMap<&str, Vec<Hold>> = BTreeMap::new();
    let mut tokens: BTreeMap<u64, usize> = BTreeMap::new();
    for (index, op) in history.ops.iter().enumerate() {
        let (Call::TaskClaim { task, agent, .. }, Outcome::Ok(Answer::Task(state))) =
            (&op.call, &op.outcome)
        else {
            continue;
        };
        v.count("acknowledged claims", 1);
        let (Some(token), Some(end)) = (state.fencing_token, state.lease_expires_at) else {
            v.violation(
                "claims without a lease",
                format!("claim of {task} (op {index}) answered {state:?}"),
            );
            continue;
        };
        if let Some(other) = tokens.insert(token, index) {
            v.violation(
                "fencing tokens handed out twice",
                format!("token {token} answered to claims (ops {other} and {index})"),
            );
        }
        holds.entry(task.as_str()).or_default().push(Hold {
            token,
            agent: agent.clone(),
            start: state.updated_at,
            end,
            op: index,
        });
    }
    // Holds end early on the holder's completion or release (when it took effect: the answer's
    // timestamp, or for an unknown outcome as early as its invocation). A renewal sets the lease
    // to its own time plus the seconds asked, which may shorten it: an acknowledged renewal's
    // expiry replaces the hold's end (one holder renews in order), and a renewal whose outcome
    // is unknown may have ended the hold as early as its invocation plus its seconds.
    let mut completions: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, op) in history.ops.iter().enumerate() {
        let Call::TaskUpdate {
            task,
            agent,
            token,
            status,
            lease_secs,
        } = &op.call
        else {
            continue;
        };
        let Some(list) = holds.get_mut(task.as_str()) else {
            continue;
        };
        let Some(hold) = list
            .iter_mut()
            .find(|h| h.token == *token && h.agent == *agent)
        else {
            continue;
        };
        match (&op.outcome, status) {
            (Outcome::Ok(Answer::Task(state)), Some(s)) => {
                hold.end = hold.end.min(state.updated_at);
                if s == "done" {
                    completions.entry(task.as_str()).or_default().push(index);
                }
            }
            (Outcome::Ok(Answer::Task(state)), None) => {
                if let Some(end) = state.lease_expires_at {
                    hold.end = end;
                }
            }
            (Outcome::Unknown(_), Some(_)) => hold.end = hold.end.min(op.invoke_wall_ms),
            (Outcome::Unknown(_), None) => {
                if let Some(secs) = lease_secs {
                    hold.end = hold.end.min(op.invoke_wall_ms + secs * 1000);
                }
            }
            _ => {}
        }
    }
    for (task, list) in &holds {
        for (i, a) in list.iter().enumerate() {
            for b in &list[i + 1..] {
                if a.token != b.token && a.start < b.end && b.start < a.end {
                    v.violation(
                        "overlapping holds with different tokens",
                        format!(
                            "{task}: {} held [{}, {}) with token {} (op {}) and {} held [{}, {}) \
                             with token {} (op {})",
                            a.agent,
                            a.start,
                            a.end,
                            a.token,
                            a.op,
                            b.agent,
                            b.start,
                            b.end,
                            b.token,
                            b.op
                        ),
                    );
                }
            }
        }
    }
    for (task, done) in completions {
        v.count("acknowledged completions", done.len() as u64);
        if done.len() > 1 {
            v.violation(
                "tasks completed twice",
                format!("{task}: completed by ops {done:?}"),
            );
        }
    }
    v
}

/// Checks every context key's history for linearizability.
pub fn linearizability(history: &History) -> Verdict {
    let mut v = Verdict::new("context linearizability");
    v.zero("keys not linearizable");
    v.zero("keys inconclusive");
    for (key, ops) in wgl::register_ops(history) {
        v.count("keys", 1);
        v.count("operations checked", ops.len() as u64);
        v.count(
            "operations with unknown outcome",
            ops.iter().filter(|op| op.ret.is_none()).count() as u64,
        );
        match wgl::check_key(&ops) {
            KeyVerdict::Linearizable => {}
            KeyVerdict::NotLinearizable { stuck_at, placed } => {
                let op = &history.ops[stuck_at];
                v.violation(
                    "keys not linearizable",
                    format!(
                        "{key}: no order places op {stuck_at} ({:?} → {:?}, invoked at {} µs \
                         on node {}) after {placed} completed operations",
                        op.call, op.outcome, op.invoke_us, op.node
                    ),
                );
            }
            KeyVerdict::Inconclusive => v.violation(
                "keys inconclusive",
                format!("{key}: search gave up after {} states", wgl::SEARCH_BUDGET),
            ),
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::history::TaskState;

    fn op(call: Call, outcome: Outcome, invoke_us: u64, complete_us: u64) -> Op {
        Op {
            client: 0,
            node: 0,
            call,
            invoke_us,
            complete_us,
            invoke_wall_ms: invoke_us,
            outcome,
        }
    }

    fn publish(id: u64, seq: Option<u64>, t: u64) -> Op {
        let outcome = match seq {
            Some(seq) => Outcome::Ok(Answer::Published { seq }),
            None => Outcome::Unknown("timeout".into()),
        };
        op(
            Call::Publish {
                topic: "t".into(),
                id,
            },
            outcome,
            t,
            t + 1,
        )
    }

    fn read(sub: usize, from: Delivery, items: Vec<(u64, u64)>, t: u64) -> Op {
        op(
            Call::Read {
                topic: "t".into(),
                subscriber: sub,
                from,
                limit: 10,
            },
            Outcome::Ok(Answer::Page { items, last_seq: 0 }),
            t,
            t + 1,
        )
    }

    fn finals(items: Vec<(u64, u64)>) -> BTreeMap<String, Vec<(u64, u64)>> {
        BTreeMap::from([("t".to_string(), items)])
    }

    #[test]
    fn a_clean_topic_history_passes() {
        let history = History {
            ops: vec![
                publish(1, Some(1), 0),
                publish(2, None, 2),
                publish(3, Some(3), 4),
                read(0, Delivery::Since(0), vec![(1, 1), (2, 2), (3, 3)], 10),
                read(1, Delivery::AckThenSince(1), vec![(2, 2), (3, 3)], 10),
                read(1, Delivery::Cursor, vec![(2, 2), (3, 3)], 20),
            ],
        };
        let v = topics(&history, &finals(vec![(1, 1), (2, 2), (3, 3)]));
        assert!(v.passed, "{v:?}");
    }

    #[test]
    fn topic_violations_are_counted() {
        let history = History {
            ops: vec![
                publish(1, Some(1), 0),
                publish(2, Some(2), 2),
                // Begins after seq 2 was acknowledged, sees only seq 1.
                read(0, Delivery::Since(0), vec![(1, 1)], 10),
                read(1, Delivery::AckThenSince(2), vec![], 10),
                // The cursor was acknowledged to 2, yet 2 comes again.
                read(1, Delivery::Cursor, vec![(2, 2)], 20),
            ],
        };
        // Body 2 is lost and seq 3 holds a body nobody published.
        let v = topics(&history, &finals(vec![(1, 1), (3, 9)]));
        assert!(!v.passed);
        for what in [
            "acknowledged publishes missing",
            "sequence gaps",
            "messages nobody published",
            "reads missing an acknowledged publish",
            "duplicates beyond a subscriber's cursor",
            "reads inconsistent with the topic",
        ] {
            assert!(v.counts[what] >= 1, "{what}: {v:?}");
        }
    }

    /// A WebSocket connection of subscriber `sub` to topic `t` from `from`, delivering `seqs`
    /// (bodies `10 * seq`, as [`ws_finals`] holds them).
    fn connection(sub: usize, from: u64, seqs: &[u64], t: u64) -> Op {
        let frames = seqs
            .iter()
            .map(|&seq| Frame {
                seq,
                id: 10 * seq,
                at_us: t,
            })
            .collect();
        op(
            Call::Stream {
                topic: "t".into(),
                subscriber: sub,
                from,
            },
            Outcome::Ok(Answer::Frames {
                subscribed_us: t,
                frames,
                ended: "closed 1006".into(),
                by_client: false,
            }),
            t,
            t + 100,
        )
    }

    fn ws_ack(seq: u64, cursor: Option<u64>, t: u64) -> Op {
        let outcome = match cursor {
            Some(cursor) => Outcome::Ok(Answer::Acked { cursor }),
            None => Outcome::Unknown("connection ended".into()),
        };
        op(
            Call::StreamAck {
                topic: "t".into(),
                subscriber: 0,
                seq,
            },
            outcome,
            t,
            t + 1,
        )
    }

    /// Topic `t` holding seqs 1..=6, body `10 * seq` each, every one acknowledged.
    fn ws_publishes() -> Vec<Op> {
        (1..=6)
            .map(|seq| publish(10 * seq, Some(seq), seq))
            .collect()
    }

    fn ws_finals() -> BTreeMap<String, Vec<(u64, u64)>> {
        finals((1..=6).map(|seq| (seq, 10 * seq)).collect())
    }

    fn ws_check(connections: Vec<Op>) -> Verdict {
        let mut ops = ws_publishes();
        ops.extend(connections);
        websocket(&History { ops }, &ws_finals())
    }

    #[test]
    fn a_clean_websocket_history_passes() {
        let v = ws_check(vec![
            connection(0, 1, &[1, 2, 3], 100),
            ws_ack(3, Some(3), 150),
            // Resumed right after what it held, on another node.
            connection(0, 4, &[4, 5], 300),
            // An ack whose connection ended before the answer proves nothing.
            ws_ack(5, None, 350),
            // Resumed at a message it already had: allowed, since it asked for it.
            connection(0, 5, &[5, 6], 500),
            // A second subscriber that joined later and only saw part of the topic.
            connection(1, 3, &[3, 4], 600),
        ]);
        assert!(v.passed, "{v:?}");
        assert_eq!(v.counts["frames delivered"], 9);
        assert_eq!(v.counts["subscribers"], 2);
        assert_eq!(
            v.counts["messages delivered again after a resume (allowed)"],
            1
        );
    }

    #[test]
    fn websocket_violations_are_counted() {
        let cases: [(&str, Vec<Op>); 5] = [
            (
                "sequence gaps on a connection",
                vec![connection(0, 1, &[1, 2, 4, 5, 6], 100)],
            ),
            (
                "sequence gaps on a connection",
                // The first frame must be the one asked for.
                vec![
                    connection(0, 1, &[1, 2], 100),
                    connection(0, 3, &[4, 5], 200),
                ],
            ),
            (
                "duplicates beyond a subscriber's resume point",
                // Twice on one connection.
                vec![connection(0, 1, &[1, 2, 3, 3, 4], 100)],
            ),
            (
                "duplicates beyond a subscriber's resume point",
                // Before the resume point of a reconnect.
                vec![
                    connection(0, 1, &[1, 2, 3], 100),
                    connection(0, 4, &[3, 4], 200),
                ],
            ),
            (
                "acks answered with a cursor below the ack",
                vec![connection(0, 1, &[1, 2], 100), ws_ack(2, Some(1), 150)],
            ),
        ];
        for (what, ops) in cases {
            let v = ws_check(ops);
            assert!(!v.passed, "{what} went unnoticed");
            assert_eq!(v.counts[what], 1, "{what}: {v:?}");
        }

        // A body the topic does not hold at that sequence.
        let mut bad = connection(0, 1, &[1, 2], 100);
        if let Outcome::Ok(Answer::Frames { frames, .. }) = &mut bad.outcome {
            frames[1].id = 99;
        }
        let v = ws_check(vec![bad]);
        assert_eq!(v.counts["frames inconsistent with the topic"], 1, "{v:?}");

        // Seq 3 acknowledged and within 1..=5, yet never delivered on any connection: the
        // second connection resumed past it.
        let v = ws_check(vec![
            connection(0, 1, &[1, 2], 100),
            connection(0, 4, &[4, 5], 200),
        ]);
        assert_eq!(
            v.counts["acknowledged publishes a subscriber missed"], 1,
            "{v:?}"
        );
        assert!(!v.passed);
    }

    fn claim(task: &str, agent: &str, token: u64, start: u64, end: u64) -> Op {
        op(
            Call::TaskClaim {
                task: task.into(),
                agent: agent.into(),
                lease_secs: 1,
            },
            Outcome::Ok(Answer::Task(TaskState {
                id: task.into(),
                status: "claimed".into(),
                claimed_by: Some(agent.into()),
                fencing_token: Some(token),
                lease_expires_at: Some(end),
                updated_at: start,
            })),
            start,
            start + 1,
        )
    }

    fn release(task: &str, agent: &str, token: u64, at: u64, outcome_ok: bool) -> Op {
        let outcome = if outcome_ok {
            Outcome::Ok(Answer::Task(TaskState {
                id: task.into(),
                status: "open".into(),
                claimed_by: None,
                fencing_token: Some(token),
                lease_expires_at: None,
                updated_at: at,
            }))
        } else {
            Outcome::Unknown("timeout".into())
        };
        op(
            Call::TaskUpdate {
                task: task.into(),
                agent: agent.into(),
                token,
                status: Some("open".into()),
                lease_secs: None,
            },
            outcome,
            at,
            at + 1,
        )
    }

    fn renew(task: &str, agent: &str, token: u64, at: u64, secs: u64, end: Option<u64>) -> Op {
        let outcome = match end {
            Some(end) => Outcome::Ok(Answer::Task(TaskState {
                id: task.into(),
                status: "claimed".into(),
                claimed_by: Some(agent.into()),
                fencing_token: Some(token),
                lease_expires_at: Some(end),
                updated_at: at,
            })),
            None => Outcome::Unknown("timeout".into()),
        };
        op(
            Call::TaskUpdate {
                task: task.into(),
                agent: agent.into(),
                token,
                status: None,
                lease_secs: Some(secs),
            },
            outcome,
            at,
            at + 1,
        )
    }

    /// Seed 2026's ten-minute run: a renewal for 2 s shortened a 3 s lease, and the next claim
    /// came after the shortened lease ended; taking the longer of the two leases reported an
    /// overlap that never was.
    #[test]
    fn a_renewal_may_shorten_a_hold() {
        let history = History {
            ops: vec![
                claim(
                    "task_1_1724",
                    "w14",
                    2023,
                    1_795_378_861_542,
                    1_795_378_864_542,
                ),
                renew(
                    "task_1_1724",
                    "w14",
                    2023,
                    1_795_378_861_609,
                    2,
                    Some(1_795_378_863_609),
                ),
                claim(
                    "task_1_1724",
                    "w16",
                    2026,
                    1_795_378_864_483,
                    1_795_378_867_483,
                ),
            ],
        };
        let v = tasks(&history);
        assert!(v.passed, "{v:?}");
        // A renewal that lengthens the lease still counts.
        let extended = History {
            ops: vec![
                claim("a", "w1", 1, 1000, 2000),
                renew("a", "w1", 1, 1500, 2, Some(3500)),
                claim("a", "w2", 2, 2500, 3500),
            ],
        };
        assert_eq!(
            tasks(&extended).counts["overlapping holds with different tokens"],
            1
        );
        // An unknown renewal may have ended the hold at its invocation plus its seconds.
        let unknown = History {
            ops: vec![
                claim("a", "w1", 1, 1000, 5000),
                renew("a", "w1", 1, 1500, 1, None),
                claim("a", "w2", 2, 3000, 4000),
            ],
        };
        assert!(tasks(&unknown).passed);
    }

    #[test]
    fn holds_may_follow_expiry_or_release_but_not_overlap() {
        let ok = History {
            ops: vec![
                claim("a", "w1", 1, 1000, 2000),
                claim("a", "w2", 2, 2000, 3000),
                release("a", "w2", 2, 2500, true),
                claim("a", "w3", 3, 2600, 3600),
                // An unknown release may have ended w3's hold at its invocation.
                release("a", "w3", 3, 2700, false),
                claim("a", "w1", 4, 2800, 3800),
            ],
        };
        let v = tasks(&ok);
        assert!(v.passed, "{v:?}");
        let bad = History {
            ops: vec![
                claim("a", "w1", 1, 1000, 2000),
                claim("a", "w2", 2, 1500, 2500),
                claim("b", "w2", 2, 1500, 2500),
            ],
        };
        let v = tasks(&bad);
        assert_eq!(v.counts["overlapping holds with different tokens"], 1);
        assert_eq!(v.counts["fencing tokens handed out twice"], 1);
    }
}
