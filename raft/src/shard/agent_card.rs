//! Agent cards: the A2A card object an agent registers along with its fields, kept beside the
//! agent on the agent's shard so the card is served without another lookup.
//!
//! The card is JSON text validated at the edge (the API checks its shape and size); apply only
//! stores it. A registration and its card are one command, so an agent never shows a card from
//! an earlier registration: registering without a card removes the old one, and deleting the
//! agent deletes its card (in the agents module).
//!
//! Key prefix (inside the shard's range; `\0` separates parts, names never contain it):
//! - `C\0<ws>\0<name>` → [`StoredCard`] (`A` is the audit log's)

use super::io;
use serde::{Deserialize, Serialize};

use super::{agents, get, Agent, ShardCommand, ShardQuery, ShardReadResult, ShardResponse};
use crate::codec::{decode_io, encode};
use crate::error::CoreError;
use crate::kv::{KvRead, Txn};
use crate::types::GroupId;

/// A registration that also sets (or, with no card, removes) the agent's A2A card.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CardRegister {
    /// Workspace.
    pub ws: String,
    /// Agent name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// What it can do.
    pub capabilities: Vec<String>,
    /// JSON object text.
    pub metadata: String,
    /// JSON object text of the card fields the agent gave; `None` removes its card.
    pub card: Option<String>,
}

/// A stored card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCard {
    /// JSON object text of the card fields the agent gave.
    pub card: String,
    /// When it was last set, ms since the epoch.
    pub updated_at: u64,
}

/// The key of an agent's card.
pub(super) fn key(ws: &str, name: &str) -> Vec<u8> {
    [b"C\0", ws.as_bytes(), b"\0", name.as_bytes()].concat()
}

/// Registers the agent as [`ShardCommand::AgentRegister`] does, then sets or removes its card in
/// the same apply.
pub(super) fn register<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    base: &R,
    shard: GroupId,
    c: &CardRegister,
    at_ms: u64,
) -> std::io::Result<ShardResponse> {
    let plain = ShardCommand::AgentRegister {
        ws: c.ws.clone(),
        name: c.name.clone(),
        description: c.description.clone(),
        capabilities: c.capabilities.clone(),
        metadata: c.metadata.clone(),
    };
    let resp = agents::apply(txn, base, shard, &plain, at_ms)?;
    if matches!(resp, ShardResponse::Agent { .. }) {
        let k = key(&c.ws, &c.name);
        match &c.card {
            Some(card) => txn.put(
                k,
                encode(&StoredCard {
                    card: card.clone(),
                    updated_at: at_ms,
                }),
            ),
            None => {
                if get::<StoredCard, R>(txn, &k)?.is_some() {
                    txn.delete(k);
                }
            }
        }
    }
    Ok(resp)
}

/// The agent and its card (404 when there is no such agent).
pub(super) fn query<R: KvRead>(kv: &R, ws: &str, name: &str) -> Result<ShardReadResult, CoreError> {
    let agent: Agent = match agents::query(
        kv,
        &ShardQuery::AgentGet {
            ws: ws.to_string(),
            name: name.to_string(),
        },
    )? {
        ShardReadResult::Agent(a) => a,
        other => {
            return Err(CoreError::internal(format!(
                "unexpected agent read {other:?}"
            )))
        }
    };
    let card = kv
        .get(&key(ws, name))
        .map_err(io)?
        .map(|b| decode_io::<StoredCard>(&b))
        .transpose()
        .map_err(io)?;
    Ok(ShardReadResult::AgentCard {
        agent: Box::new(agent),
        card,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::shard::{apply_to_map, query as shard_query};

    fn register(card: Option<&str>) -> ShardCommand {
        ShardCommand::AgentRegisterCard(CardRegister {
            ws: "w".into(),
            name: "bot".into(),
            description: "d".into(),
            capabilities: vec![],
            metadata: "{}".into(),
            card: card.map(str::to_string),
        })
    }

    fn card_of(store: &BTreeMap<Vec<u8>, Vec<u8>>) -> Result<Option<String>, CoreError> {
        let q = ShardQuery::AgentCard {
            ws: "w".into(),
            name: "bot".into(),
        };
        match shard_query(store, &q)? {
            ShardReadResult::AgentCard { card, .. } => Ok(card.map(|c| c.card)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_card_follows_its_registration_and_goes_with_the_agent() {
        let mut store = BTreeMap::new();
        assert!(card_of(&store).is_err(), "no agent, no card");
        let resp = apply_to_map(&mut store, 1, &register(Some(r#"{"version":"1"}"#)), 10);
        assert!(matches!(resp, ShardResponse::Agent { created: true, .. }));
        assert_eq!(
            card_of(&store).unwrap().as_deref(),
            Some(r#"{"version":"1"}"#)
        );
        // Registering again without a card removes it; the agent stays.
        apply_to_map(&mut store, 1, &register(None), 20);
        assert_eq!(card_of(&store).unwrap(), None);
        apply_to_map(&mut store, 1, &register(Some("{}")), 30);
        let delete = ShardCommand::AgentDelete {
            ws: "w".into(),
            name: "bot".into(),
        };
        apply_to_map(&mut store, 1, &delete, 40);
        assert!(card_of(&store).is_err());
        assert!(
            store.keys().all(|k| !k.starts_with(b"C\0")),
            "the card row is gone"
        );
    }
}
