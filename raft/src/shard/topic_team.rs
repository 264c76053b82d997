//! Team subscriptions of topics: a team subscribed to a topic makes every agent of the team a
//! reader of it with its own server-side cursor, created on the agent's first acknowledgement.
//!
//! Team membership lives in the meta group, which apply here cannot read: the node handling a
//! request passes the acting agent's teams (from its meta replica) in the command or query, and
//! apply uses the first of them subscribed to the topic. A deleted team is never passed, so its
//! rows are ignored from then on and removed with the topic.
//!
//! Invariants: a topic has at most [`MAX_TEAM_SUBSCRIPTIONS_PER_TOPIC`] team subscriptions; an
//! agent has one team-derived cursor per topic (whichever team grants it), distinct from its
//! direct subscription, which wins when both exist; a cursor never moves back.
//!
//! Key layout (letters used here: `T`, `U`, `u`; rows carry the topic generation like the
//! topic's own rows, so a deleted topic's rows are purged by compaction):
//! - `T\0<ws>\0<topic>\0<generation be>\0<team>` → [`TeamSubscription`]
//! - `U\0<ws>\0<team>\0<topic>` → generation (u64): a team's topics, for listing
//! - `u\0<ws>\0<topic>\0<generation be>\0<agent>` → [`Subscription`]: a member's cursor

use super::io;
use serde::{Deserialize, Serialize};

use super::get;
use super::topic::{keys as topic_keys, Subscription, Topic};
use crate::codec::{decode_io, encode};
use crate::error::CoreError;
use crate::kv::{KvRead, Txn};

/// Most team subscriptions one topic may have.
pub const MAX_TEAM_SUBSCRIPTIONS_PER_TOPIC: usize = 100;

/// A team's subscription to a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamSubscription {
    /// The topic.
    pub topic: String,
    /// The team's id.
    pub team: String,
    /// ms since the epoch.
    pub created_at: u64,
    /// The topic generation it belongs to.
    pub generation: u64,
    /// The topic's newest sequence when the team subscribed: a member without a cursor of its
    /// own reads after it.
    pub start_seq: u64,
}

/// An agent's subscription as listed: direct, or derived from a team (`team` set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionView {
    /// The subscription (for a team-derived one without a cursor yet, its starting point).
    pub sub: Subscription,
    /// The topic's newest sequence.
    pub last_seq: u64,
    /// The team it comes from, for a team-derived subscription.
    pub team: Option<String>,
}

pub(super) mod keys {
    fn part(tag: &[u8], ws: &str, topic: &str, generation: u64) -> Vec<u8> {
        [
            tag,
            ws.as_bytes(),
            b"\0",
            topic.as_bytes(),
            b"\0",
            &generation.to_be_bytes(),
            b"\0",
        ]
        .concat()
    }
    pub fn team_sub_prefix(ws: &str, topic: &str, generation: u64) -> Vec<u8> {
        part(b"T\0", ws, topic, generation)
    }
    pub fn team_sub(ws: &str, topic: &str, generation: u64, team: &str) -> Vec<u8> {
        [
            team_sub_prefix(ws, topic, generation),
            team.as_bytes().to_vec(),
        ]
        .concat()
    }
    pub fn team_topics_prefix(ws: &str, team: &str) -> Vec<u8> {
        [b"U\0", ws.as_bytes(), b"\0", team.as_bytes(), b"\0"].concat()
    }
    pub fn team_topic(ws: &str, team: &str, topic: &str) -> Vec<u8> {
        [team_topics_prefix(ws, team), topic.as_bytes().to_vec()].concat()
    }
    pub fn member_prefix(ws: &str, topic: &str, generation: u64) -> Vec<u8> {
        part(b"u\0", ws, topic, generation)
    }
    pub fn member(ws: &str, topic: &str, generation: u64, agent: &str) -> Vec<u8> {
        [
            member_prefix(ws, topic, generation),
            agent.as_bytes().to_vec(),
        ]
        .concat()
    }
}

fn topic_not_found(topic: &str) -> CoreError {
    CoreError::not_found(format!("topic {topic:?} not found"))
}

fn not_subscribed(topic: &str, agent: &str) -> CoreError {
    CoreError::not_found(format!(
        "agent {agent:?} is not subscribed to topic {topic:?}, directly or through a team"
    ))
}

/// Subscribes `team`; an existing subscription is returned unchanged (`false`).
pub(super) fn subscribe<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    ws: &str,
    topic: &str,
    team: &str,
    at_ms: u64,
) -> std::io::Result<Result<(TeamSubscription, bool), CoreError>> {
    let Some(t) = get::<Topic, R>(txn, &topic_keys::topic(ws, topic))? else {
        return Ok(Err(topic_not_found(topic)));
    };
    let k = keys::team_sub(ws, topic, t.generation, team);
    if let Some(existing) = get::<TeamSubscription, R>(txn, &k)? {
        return Ok(Ok((existing, false)));
    }
    let prefix = keys::team_sub_prefix(ws, topic, t.generation);
    if txn
        .scan(&prefix, None, MAX_TEAM_SUBSCRIPTIONS_PER_TOPIC)?
        .len()
        >= MAX_TEAM_SUBSCRIPTIONS_PER_TOPIC
    {
        return Ok(Err(CoreError::conflict(format!(
            "topic {topic:?} already has {MAX_TEAM_SUBSCRIPTIONS_PER_TOPIC} team subscriptions"
        ))));
    }
    let sub = TeamSubscription {
        topic: topic.to_string(),
        team: team.to_string(),
        created_at: at_ms,
        generation: t.generation,
        start_seq: t.last_seq,
    };
    txn.put(k, encode(&sub));
    txn.put(keys::team_topic(ws, team, topic), encode(&t.generation));
    Ok(Ok((sub, true)))
}

/// Removes `team`'s subscription (members' cursors stay, for a later subscription).
pub(super) fn unsubscribe<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    ws: &str,
    topic: &str,
    team: &str,
) -> std::io::Result<Result<(), CoreError>> {
    let Some(t) = get::<Topic, R>(txn, &topic_keys::topic(ws, topic))? else {
        return Ok(Err(topic_not_found(topic)));
    };
    let k = keys::team_sub(ws, topic, t.generation, team);
    if txn.get(&k)?.is_none() {
        return Ok(Err(CoreError::not_found(format!(
            "team {team} is not subscribed to topic {topic:?}"
        ))));
    }
    txn.delete(k);
    txn.delete(keys::team_topic(ws, team, topic));
    Ok(Ok(()))
}

/// The first of `teams` subscribed to the topic (generation `generation`).
fn granting_team<R: KvRead + ?Sized>(
    kv: &R,
    ws: &str,
    topic: &str,
    generation: u64,
    teams: &[String],
) -> std::io::Result<Option<TeamSubscription>> {
    for team in teams {
        if let Some(b) = kv.get(&keys::team_sub(ws, topic, generation, team))? {
            return Ok(Some(decode_io(&b)?));
        }
    }
    Ok(None)
}

/// Acknowledges up to `seq` (capped at `last_seq`) for `agent`: on its direct subscription if
/// it has one, else on its team-derived cursor (created at the team's starting point), if one of
/// `teams` is subscribed. The cursor never moves back.
pub(super) fn ack<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    ws: &str,
    topic: &str,
    agent: &str,
    teams: &[String],
    seq: u64,
) -> std::io::Result<Result<Subscription, CoreError>> {
    let Some(t) = get::<Topic, R>(txn, &topic_keys::topic(ws, topic))? else {
        return Ok(Err(topic_not_found(topic)));
    };
    let direct = topic_keys::sub(ws, topic, t.generation, agent);
    let member = keys::member(ws, topic, t.generation, agent);
    let (k, mut sub) = if let Some(s) = get::<Subscription, R>(txn, &direct)? {
        (direct, s)
    } else {
        let Some(team) = granting_team(&*txn, ws, topic, t.generation, teams)? else {
            return Ok(Err(not_subscribed(topic, agent)));
        };
        match get::<Subscription, R>(txn, &member)? {
            Some(s) => (member, s),
            None => {
                let s = Subscription {
                    topic: topic.to_string(),
                    agent: agent.to_string(),
                    cursor: team.start_seq.min(t.last_seq),
                    created_at: team.created_at,
                    generation: t.generation,
                };
                txn.put(member.clone(), encode(&s));
                (member, s)
            }
        }
    };
    let target = seq.min(t.last_seq);
    if target > sub.cursor {
        sub.cursor = target;
        txn.put(k, encode(&sub));
    }
    Ok(Ok(sub))
}

/// Rows of a deleted topic generation that a purge removes, besides messages and direct
/// subscriptions: team subscriptions (and their back index) and member cursors.
pub(super) fn purge_prefixes(ws: &str, topic: &str, generation: u64) -> [Vec<u8>; 2] {
    [
        keys::team_sub_prefix(ws, topic, generation),
        keys::member_prefix(ws, topic, generation),
    ]
}

/// Removes the back index of a purged team subscription row `(key, value)`, if it is one.
pub(super) fn purge_row<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    ws: &str,
    key: &[u8],
    value: &[u8],
) -> std::io::Result<()> {
    if key.starts_with(b"T\0") {
        let sub: TeamSubscription = decode_io(value)?;
        let back = keys::team_topic(ws, &sub.team, &sub.topic);
        if get::<u64, R>(txn, &back)? == Some(sub.generation) {
            txn.delete(back);
        }
    }
    Ok(())
}

/// Reads, run against a shard's key space.
pub(super) mod read {
    use std::collections::BTreeMap;

    use super::*;

    fn topic_of<R: KvRead + ?Sized>(
        kv: &R,
        ws: &str,
        name: &str,
    ) -> Result<Option<Topic>, CoreError> {
        kv.get(&topic_keys::topic(ws, name))
            .map_err(io)?
            .map(|b| decode_io(&b).map_err(io))
            .transpose()
    }

    /// `agent`'s reading position on a topic: its direct subscription, else its team-derived
    /// cursor (or, before its first acknowledgement, the granting team's starting point).
    pub fn cursor<R: KvRead + ?Sized>(
        kv: &R,
        ws: &str,
        topic: &str,
        agent: &str,
        teams: &[String],
    ) -> Result<Subscription, CoreError> {
        let t = topic_of(kv, ws, topic)?.ok_or_else(|| topic_not_found(topic))?;
        for k in [
            topic_keys::sub(ws, topic, t.generation, agent),
            keys::member(ws, topic, t.generation, agent),
        ] {
            if let Some(b) = kv.get(&k).map_err(io)? {
                let s: Subscription = decode_io(&b).map_err(io)?;
                // A member cursor counts only while a team of the agent is subscribed.
                if k.starts_with(b"s\0")
                    || granting_team(kv, ws, topic, t.generation, teams)
                        .map_err(io)?
                        .is_some()
                {
                    return Ok(s);
                }
            }
        }
        match granting_team(kv, ws, topic, t.generation, teams).map_err(io)? {
            Some(team) => Ok(Subscription {
                topic: topic.to_string(),
                agent: agent.to_string(),
                cursor: team.start_seq.min(t.last_seq),
                created_at: team.created_at,
                generation: t.generation,
            }),
            None => Err(not_subscribed(topic, agent)),
        }
    }

    /// `agent`'s subscriptions on this shard, direct and through `teams`, to topics named after
    /// `after`, in name order, one per topic (a direct one wins), at most `limit`.
    pub fn subscriptions<R: KvRead + ?Sized>(
        kv: &R,
        ws: &str,
        agent: &str,
        teams: &[String],
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SubscriptionView>, CoreError> {
        let mut by_topic: BTreeMap<String, SubscriptionView> = BTreeMap::new();
        for (sub, last_seq) in
            super::super::topic::read::subscriptions(kv, ws, agent, after, limit)?
        {
            by_topic.insert(
                sub.topic.clone(),
                SubscriptionView {
                    sub,
                    last_seq,
                    team: None,
                },
            );
        }
        for team in teams {
            let prefix = keys::team_topics_prefix(ws, team);
            let mut position = after.map(|a| keys::team_topic(ws, team, a));
            let mut found = 0;
            'scan: loop {
                let rows = kv.scan(&prefix, position.as_deref(), limit).map_err(io)?;
                let full = rows.len() == limit;
                for (k, v) in &rows {
                    position = Some(k.clone());
                    let generation: u64 = decode_io(v).map_err(io)?;
                    let name = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                    let Some(t) = topic_of(kv, ws, &name)? else {
                        continue;
                    };
                    if t.generation != generation || by_topic.contains_key(&name) {
                        continue;
                    }
                    let Some(b) = kv
                        .get(&keys::team_sub(ws, &name, generation, team))
                        .map_err(io)?
                    else {
                        continue;
                    };
                    let ts: TeamSubscription = decode_io(&b).map_err(io)?;
                    let sub = match kv
                        .get(&keys::member(ws, &name, generation, agent))
                        .map_err(io)?
                    {
                        Some(b) => decode_io(&b).map_err(io)?,
                        None => Subscription {
                            topic: name.clone(),
                            agent: agent.to_string(),
                            cursor: ts.start_seq.min(t.last_seq),
                            created_at: ts.created_at,
                            generation,
                        },
                    };
                    by_topic.insert(
                        name,
                        SubscriptionView {
                            sub,
                            last_seq: t.last_seq,
                            team: Some(team.clone()),
                        },
                    );
                    found += 1;
                    if found == limit {
                        break 'scan;
                    }
                }
                if !full {
                    break;
                }
            }
        }
        Ok(by_topic.into_values().take(limit).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::{
        apply_to_map, query, ShardCommand, ShardQuery, ShardReadResult, ShardResponse,
    };
    use super::*;
    use crate::error::ErrorCode;
    use crate::shard::SubscribeFrom;

    type Store = BTreeMap<Vec<u8>, Vec<u8>>;

    fn run(s: &mut Store, cmd: ShardCommand, at: u64) -> ShardResponse {
        apply_to_map(s, 3, &cmd, at)
    }

    fn setup() -> Store {
        let mut s = Store::new();
        for name in ["alpha", "beta"] {
            run(
                &mut s,
                ShardCommand::TopicCreate {
                    ws: "w".into(),
                    name: name.into(),
                    retention_secs: 3600,
                    description: String::new(),
                },
                1,
            );
        }
        for i in 0..3 {
            publish(&mut s, "alpha", i);
        }
        s
    }

    fn publish(s: &mut Store, topic: &str, at: u64) {
        run(
            s,
            ShardCommand::TopicPublish {
                ws: "w".into(),
                topic: topic.into(),
                body: "1".into(),
                from: None,
                metadata: None,
            },
            at,
        );
    }

    fn team_sub(s: &mut Store, topic: &str, team: &str) -> ShardResponse {
        run(
            s,
            ShardCommand::TopicTeamSubscribe {
                ws: "w".into(),
                topic: topic.into(),
                team: team.into(),
            },
            5,
        )
    }

    fn ack(s: &mut Store, topic: &str, agent: &str, teams: &[&str], seq: u64) -> ShardResponse {
        run(
            s,
            ShardCommand::TopicAckAs {
                ws: "w".into(),
                topic: topic.into(),
                agent: agent.into(),
                teams: teams.iter().map(|t| t.to_string()).collect(),
                seq,
            },
            6,
        )
    }

    fn cursor(s: &Store, topic: &str, agent: &str, teams: &[&str]) -> Result<u64, CoreError> {
        let q = ShardQuery::TopicCursorGet {
            ws: "w".into(),
            topic: topic.into(),
            agent: agent.into(),
            teams: teams.iter().map(|t| t.to_string()).collect(),
        };
        match query(s, &q)? {
            ShardReadResult::TopicSubscription(sub) => Ok(sub.cursor),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn listed(s: &Store, agent: &str, teams: &[&str]) -> Vec<(String, u64, Option<String>)> {
        let q = ShardQuery::TopicSubscriptionListAs {
            ws: "w".into(),
            agent: agent.into(),
            teams: teams.iter().map(|t| t.to_string()).collect(),
            after: None,
            limit: 10,
        };
        match query(s, &q).unwrap() {
            ShardReadResult::TopicSubscriptionsAs(v) => v
                .into_iter()
                .map(|v| (v.sub.topic, v.sub.cursor, v.team))
                .collect(),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn team_members_read_from_the_team_start_with_their_own_cursor() {
        let mut s = setup();
        assert!(matches!(team_sub(&mut s, "alpha", "team_1"),
            ShardResponse::TopicTeamSubscribed { created: true, ref sub } if sub.start_seq == 3));
        assert!(matches!(
            team_sub(&mut s, "alpha", "team_1"),
            ShardResponse::TopicTeamSubscribed { created: false, .. }
        ));
        publish(&mut s, "alpha", 7);
        publish(&mut s, "alpha", 8);
        // Not a member of a subscribed team: not subscribed.
        assert!(
            matches!(cursor(&s, "alpha", "x", &["team_2"]), Err(e) if e.code == ErrorCode::NotFound)
        );
        assert!(matches!(
            ack(&mut s, "alpha", "x", &[], 4),
            ShardResponse::Refused(_)
        ));
        // Members start at the team's starting point and move their own cursors.
        assert_eq!(cursor(&s, "alpha", "a", &["team_2", "team_1"]).unwrap(), 3);
        assert!(
            matches!(ack(&mut s, "alpha", "a", &["team_1"], 4), ShardResponse::TopicAcked(ref sub) if sub.cursor == 4)
        );
        assert_eq!(cursor(&s, "alpha", "a", &["team_1"]).unwrap(), 4);
        assert_eq!(cursor(&s, "alpha", "b", &["team_1"]).unwrap(), 3);
        // Never back, never past the newest.
        ack(&mut s, "alpha", "a", &["team_1"], 2);
        assert_eq!(cursor(&s, "alpha", "a", &["team_1"]).unwrap(), 4);
        ack(&mut s, "alpha", "a", &["team_1"], 99);
        assert_eq!(cursor(&s, "alpha", "a", &["team_1"]).unwrap(), 5);
        // Listed as team-derived; a direct subscription wins.
        assert_eq!(
            listed(&s, "a", &["team_1"]),
            vec![("alpha".into(), 5, Some("team_1".into()))]
        );
        run(
            &mut s,
            ShardCommand::TopicSubscribe {
                ws: "w".into(),
                topic: "alpha".into(),
                agent: "a".into(),
                from: SubscribeFrom::Earliest,
            },
            9,
        );
        assert_eq!(
            listed(&s, "a", &["team_1"]),
            vec![("alpha".into(), 0, None)]
        );
        // Unsubscribing the team ends team-derived reading.
        assert!(matches!(
            run(
                &mut s,
                ShardCommand::TopicTeamUnsubscribe {
                    ws: "w".into(),
                    topic: "alpha".into(),
                    team: "team_1".into()
                },
                10
            ),
            ShardResponse::Deleted(_)
        ));
        assert!(cursor(&s, "alpha", "b", &["team_1"]).is_err());
        assert!(listed(&s, "b", &["team_1"]).is_empty());
        assert!(matches!(
            run(&mut s, ShardCommand::TopicTeamUnsubscribe { ws: "w".into(), topic: "alpha".into(), team: "team_1".into() }, 11),
            ShardResponse::Refused(e) if e.code == ErrorCode::NotFound
        ));
        assert!(
            matches!(team_sub(&mut s, "nope", "team_1"), ShardResponse::Refused(e) if e.code == ErrorCode::NotFound)
        );
    }

    #[test]
    fn compaction_leaves_agent_events_alone() {
        // Agent events once shared the `p` prefix of topic purges: a compaction read them as
        // purges. Apply must succeed and the events stay.
        let mut s = setup();
        run(
            &mut s,
            ShardCommand::AgentRegister {
                ws: "w".into(),
                name: "ana".into(),
                description: String::new(),
                capabilities: vec![],
                metadata: "{}".into(),
            },
            10,
        );
        run(&mut s, ShardCommand::TopicCompact { budget: 1000 }, 20);
        let q = ShardQuery::AgentEvents {
            ws: "w".into(),
            since: 0,
            limit: 10,
        };
        assert!(matches!(query(&s, &q).unwrap(), ShardReadResult::AgentEvents(e) if e.len() == 1));
    }

    #[test]
    fn a_deleted_topic_purges_its_team_rows() {
        let mut s = setup();
        team_sub(&mut s, "alpha", "team_1");
        ack(&mut s, "alpha", "a", &["team_1"], 3);
        run(
            &mut s,
            ShardCommand::TopicDelete {
                ws: "w".into(),
                name: "alpha".into(),
            },
            20,
        );
        run(&mut s, ShardCommand::TopicCompact { budget: 1000 }, 30);
        assert!(
            s.keys().all(|k| !(k.starts_with(b"T\0")
                || k.starts_with(b"U\0")
                || k.starts_with(b"u\0"))),
            "left: {:?}",
            s.keys().collect::<Vec<_>>()
        );
    }
}
