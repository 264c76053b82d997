//! The placement planner: a pure function from the cluster's state to the next replica moves
//! and leadership transfers. The [controller](crate::controller) runs it on the meta leader.
//!
//! Rules, in order, per shard with no move in progress: replace a replica on a node that is not
//! eligible (draining, removed or dead); add replicas up to `min(3, eligible nodes)`; remove
//! surplus ones; then move a replica from the most to the least loaded node while they differ
//! by more than one. A shard that has lost its quorum is left alone: no move can commit there.
//! Leaderships move from nodes leading more than their share to replicas leading fewer.

use std::collections::{BTreeMap, BTreeSet};

use conclave_raft::meta::{NodeState, ShardRecord};
use conclave_raft::{GroupId, NodeId};

/// Most replicas a shard gets.
pub const MAX_REPLICAS: usize = 3;

/// What the planner knows of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeHealth {
    /// Lifecycle state in the meta group.
    pub state: NodeState,
    /// Whether it answered recently.
    pub alive: bool,
}

/// The planner's input.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Every node.
    pub nodes: BTreeMap<NodeId, NodeHealth>,
    /// Every shard's placement.
    pub shards: BTreeMap<GroupId, ShardRecord>,
    /// Each shard's current leader, where known.
    pub leaders: BTreeMap<GroupId, NodeId>,
}

/// One action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Start moving a replica of `shard` (compare-and-set on `epoch`).
    Move {
        shard: GroupId,
        epoch: u64,
        add: Option<NodeId>,
        remove: Option<NodeId>,
    },
    /// Move `shard`'s leadership to `to`.
    TransferLeader { shard: GroupId, to: NodeId },
}

impl View {
    /// Nodes that may hold replicas: active and alive.
    pub fn eligible(&self) -> BTreeSet<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, h)| h.state == NodeState::Active && h.alive)
            .map(|(id, _)| *id)
            .collect()
    }
}

/// Plans up to `max_moves` concurrent moves (counting those in progress) and up to
/// `max_transfers` leadership transfers.
pub fn plan(view: &View, max_moves: usize, max_transfers: usize) -> Vec<Step> {
    let eligible = view.eligible();
    let desired = eligible.len().min(MAX_REPLICAS);
    if desired == 0 {
        return Vec::new();
    }
    let mut load: BTreeMap<NodeId, usize> = eligible.iter().map(|n| (*n, 0)).collect();
    for s in view.shards.values() {
        for n in s
            .replicas
            .iter()
            .chain(s.moving.iter().filter_map(|m| m.add.as_ref()))
        {
            if let Some(l) = load.get_mut(n) {
                *l += 1;
            }
        }
    }
    let mut steps = Vec::new();
    let mut budget =
        max_moves.saturating_sub(view.shards.values().filter(|s| s.moving.is_some()).count());
    for (shard, s) in &view.shards {
        if budget == 0 {
            break;
        }
        if s.moving.is_some() {
            continue;
        }
        let bad: Vec<NodeId> = s
            .replicas
            .iter()
            .filter(|n| !eligible.contains(n))
            .copied()
            .collect();
        let good = s.replicas.len() - bad.len();
        // Draining nodes still vote: quorum counts every live replica.
        let live = s
            .replicas
            .iter()
            .filter(|n| view.nodes.get(*n).is_some_and(|h| h.alive))
            .count();
        if live * 2 <= s.replicas.len() {
            continue;
        }
        let candidate = load
            .iter()
            .filter(|(n, _)| !s.replicas.contains(n))
            .min_by_key(|(n, l)| (**l, **n))
            .map(|(n, _)| *n);
        let most_loaded = s
            .replicas
            .iter()
            .filter(|n| load.contains_key(n))
            .max_by_key(|n| (load[n], **n))
            .copied();
        let (add, remove) = if let Some(b) = bad.first() {
            (candidate.filter(|_| good < desired), Some(*b))
        } else if s.replicas.len() < desired && candidate.is_some() {
            (candidate, None)
        } else if s.replicas.len() > desired {
            (None, most_loaded)
        } else {
            match (candidate, most_loaded) {
                (Some(c), Some(m)) if load[&m] > load[&c] + 1 => (Some(c), Some(m)),
                _ => continue,
            }
        };
        if let Some(a) = add {
            *load.get_mut(&a).expect("candidate is eligible") += 1;
        }
        if let Some(r) = remove {
            if let Some(l) = load.get_mut(&r) {
                *l -= 1;
            }
        }
        steps.push(Step::Move {
            shard: *shard,
            epoch: s.epoch,
            add,
            remove,
        });
        budget -= 1;
    }

    // Leadership balance over eligible nodes.
    let mut leads: BTreeMap<NodeId, usize> = eligible.iter().map(|n| (*n, 0)).collect();
    for l in view.leaders.values() {
        if let Some(c) = leads.get_mut(l) {
            *c += 1;
        }
    }
    let mut transfers = 0;
    for (shard, leader) in &view.leaders {
        if transfers >= max_transfers {
            break;
        }
        let Some(s) = view.shards.get(shard) else {
            continue;
        };
        if s.moving.is_some() || !leads.contains_key(leader) {
            continue;
        }
        let to = s
            .replicas
            .iter()
            .filter(|n| *n != leader && leads.contains_key(n))
            .min_by_key(|n| (leads[n], **n))
            .copied();
        if let Some(to) = to {
            if leads[leader] > leads[&to] + 1 {
                *leads.get_mut(leader).expect("present") -= 1;
                *leads.get_mut(&to).expect("present") += 1;
                steps.push(Step::TransferLeader { shard: *shard, to });
                transfers += 1;
            }
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use conclave_raft::meta::ShardMove;

    use super::*;

    fn view(nodes: &[(NodeId, NodeState, bool)], shards: &[&[NodeId]]) -> View {
        View {
            nodes: nodes
                .iter()
                .map(|(id, state, alive)| {
                    (
                        *id,
                        NodeHealth {
                            state: *state,
                            alive: *alive,
                        },
                    )
                })
                .collect(),
            shards: shards
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    (
                        i as GroupId + 1,
                        ShardRecord {
                            replicas: r.iter().copied().collect(),
                            epoch: 1,
                            moving: None,
                        },
                    )
                })
                .collect(),
            leaders: BTreeMap::new(),
        }
    }

    /// Applies moves as if they completed, like the controller eventually does.
    fn settle(v: &mut View, max_rounds: usize) -> usize {
        for round in 0..max_rounds {
            let steps: Vec<_> = plan(v, 4, 0)
                .into_iter()
                .filter(|s| matches!(s, Step::Move { .. }))
                .collect();
            if steps.is_empty() {
                return round;
            }
            for step in steps {
                if let Step::Move {
                    shard, add, remove, ..
                } = step
                {
                    let s = v.shards.get_mut(&shard).unwrap();
                    s.moving = Some(ShardMove { add, remove });
                    let m = s.moving.take().unwrap();
                    s.replicas.extend(m.add);
                    if let Some(r) = m.remove {
                        s.replicas.remove(&r);
                    }
                    s.epoch += 1;
                }
            }
        }
        panic!("placement did not settle");
    }

    const A: NodeState = NodeState::Active;

    #[test]
    fn grows_to_three_replicas_as_nodes_join() {
        let mut v = view(
            &[(1, A, true), (2, A, true), (3, A, true)],
            &[&[1], &[1], &[1], &[1]],
        );
        settle(&mut v, 20);
        assert!(v
            .shards
            .values()
            .all(|s| s.replicas == BTreeSet::from([1, 2, 3])));
    }

    #[test]
    fn a_fourth_node_takes_an_even_share() {
        let mut v = view(
            &[(1, A, true), (2, A, true), (3, A, true), (4, A, true)],
            &[&[1u64, 2, 3][..]; 8],
        );
        settle(&mut v, 30);
        let on4 = v
            .shards
            .values()
            .filter(|s| s.replicas.contains(&4))
            .count();
        assert_eq!(on4, 6, "24 replicas over 4 nodes is 6 each");
        assert!(v.shards.values().all(|s| s.replicas.len() == 3));
    }

    #[test]
    fn draining_or_dead_nodes_lose_their_replicas_without_dropping_quorum() {
        let mut v = view(
            &[
                (1, A, true),
                (2, A, true),
                (3, NodeState::Draining, true),
                (4, A, false),
                (5, A, true),
            ],
            &[&[1, 2, 3], &[2, 3, 4], &[1, 4, 5]],
        );
        settle(&mut v, 30);
        for s in v.shards.values() {
            assert_eq!(s.replicas.len(), 3);
            assert!(!s.replicas.contains(&3) && !s.replicas.contains(&4));
        }
        // A shard with a majority of dead replicas cannot move.
        let v = view(
            &[(1, A, true), (2, A, false), (3, A, false), (4, A, true)],
            &[&[1, 2, 3]],
        );
        assert!(plan(&v, 4, 0).is_empty());
    }

    #[test]
    fn leadership_spreads_over_replicas() {
        let mut v = view(
            &[(1, A, true), (2, A, true), (3, A, true)],
            &[&[1u64, 2, 3][..]; 6],
        );
        v.leaders = (1..=6).map(|s| (s, 1)).collect();
        let transfers = plan(&v, 0, 10);
        assert_eq!(transfers.len(), 4, "{transfers:?}");
    }
}
