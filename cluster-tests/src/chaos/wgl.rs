//! A Wing–Gong–Lowe linearizability checker for the context store, one key at a time.
//!
//! The model is a versioned register: a key starts absent at version 0; a put of `v` makes it
//! `(version + 1, v)` and answers the new version; a get answers the current version and value,
//! or not-found at version 0. Every value a client puts is unique in the run, so a read names
//! the put it observed.
//!
//! The search (Wing & Gong, with Lowe's memoisation) looks for an order of the operations that
//! respects real time (an operation that completed before another was invoked comes first) and
//! the model. An operation that completed `ok` must appear; one that failed is left out; one
//! whose outcome is unknown may appear anywhere after its invocation, or not at all. Each search
//! state is remembered as (operations placed, state of the register) and never explored twice.
//!
//! Unknown puts whose value no read ever returned can only show as a version bump. Which of
//! several such puts took effect cannot change anything later, so they are counted rather than
//! named: a search state holds how many of them were placed (all of them invoked before the
//! current point, so any unplaced one is as good as another), and their value is the
//! anonymous `Anon`, which no read can match. This keeps histories with many unknown writes
//! (a partition produces them in bursts) from multiplying the search.

use std::collections::{BTreeMap, HashSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::history::{Answer, Call, History, Outcome};

/// Most search states explored for one key before the verdict is "inconclusive".
pub const SEARCH_BUDGET: usize = 4_000_000;

/// One operation on one key, as the checker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterOp {
    /// Invocation time.
    pub call: u64,
    /// Completion time; `None` when the outcome is unknown (it may take effect any time after
    /// `call`, or never).
    pub ret: Option<u64>,
    /// What it did and saw.
    pub kind: RegisterKind,
    /// Index in the recorded history, for reports.
    pub index: usize,
}

/// A put or a get and what it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterKind {
    /// A put of `value`; `version` is the answered version (`None` when unknown).
    Put { value: u64, version: Option<u64> },
    /// A get that answered `Some((version, value))` (`value` `None` for a value that is not
    /// one of the run's), or `None` for not-found.
    Get { seen: Option<(u64, Option<u64>)> },
}

/// The register's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Value {
    Absent,
    /// Written by a put nobody observed.
    Anon,
    Put(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct State {
    version: u64,
    value: Value,
}

/// The verdict for one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum KeyVerdict {
    /// An order exists.
    Linearizable,
    /// No order exists; `stuck_at` is the history index of the earliest-completing operation
    /// the deepest attempt could not place, `placed` how many completed operations it placed.
    NotLinearizable { stuck_at: usize, placed: usize },
    /// The search gave up after [`SEARCH_BUDGET`] states.
    Inconclusive,
}

/// What the search explores: the operations that may appear, wildcards apart.
struct Search<'a> {
    /// Completed and observed-unknown operations, by invocation time.
    ops: Vec<&'a RegisterOp>,
    /// Indices into `ops` of completed operations, by completion time.
    required: Vec<usize>,
    /// Invocation times of unobserved unknown puts, ascending.
    wildcards: Vec<u64>,
    /// Random 128-bit keys per operation: a set of placed operations hashes to their XOR.
    zobrist: Vec<u128>,
}

/// One node of the depth-first search.
struct Frame {
    /// Next position in `ops` to try.
    next: usize,
    /// Whether a wildcard was tried here.
    wildcard_tried: bool,
    /// The earliest completion among unplaced required operations.
    frontier: u64,
    /// Position in `required` of the first unplaced one.
    first_required: usize,
    /// The move taken to the child, to undo: `Some(op)` or `None` for a wildcard.
    taken: Option<Option<usize>>,
    /// The state before the move.
    before: State,
}

impl<'a> Search<'a> {
    fn new(history: &'a [RegisterOp]) -> Self {
        let observed: HashSet<u64> = history
            .iter()
            .filter_map(|op| match op.kind {
                RegisterKind::Get {
                    seen: Some((_, Some(value))),
                } => Some(value),
                _ => None,
            })
            .collect();
        let mut ops = Vec::new();
        let mut wildcards = Vec::new();
        for op in history {
            match (&op.kind, op.ret) {
                (RegisterKind::Put { value, .. }, None) if !observed.contains(value) => {
                    wildcards.push(op.call)
                }
                // A get whose answer never came constrains nothing.
                (RegisterKind::Get { .. }, None) => {}
                _ => ops.push(op),
            }
        }
        ops.sort_by_key(|op| (op.call, op.index));
        wildcards.sort_unstable();
        let mut required: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].ret.is_some()).collect();
        required.sort_by_key(|&i| (ops[i].ret, i));
        // Seeded: a verdict is reproducible.
        let mut rng = StdRng::seed_from_u64(0x5eed_c0de);
        let zobrist = (0..ops.len()).map(|_| rng.random::<u128>()).collect();
        Search {
            ops,
            required,
            wildcards,
            zobrist,
        }
    }

    fn step(&self, state: State, op: &RegisterOp) -> Option<State> {
        match op.kind {
            RegisterKind::Put { value, version } => {
                let next = state.version + 1;
                if version.is_some_and(|v| v != next) {
                    return None;
                }
                Some(State {
                    version: next,
                    value: Value::Put(value),
                })
            }
            RegisterKind::Get { seen: None } => (state.version == 0).then_some(state),
            RegisterKind::Get {
                seen: Some((version, value)),
            } => {
                let matches =
                    state.version == version && value.is_some_and(|v| state.value == Value::Put(v));
                matches.then_some(state)
            }
        }
    }

    fn run(&self) -> KeyVerdict {
        let mut placed = vec![false; self.ops.len()];
        let mut hash: u128 = 0;
        let mut wild_used: usize = 0;
        let mut required_placed = 0;
        let mut state = State {
            version: 0,
            value: Value::Absent,
        };
        let mut seen: HashSet<(u128, usize, State)> = HashSet::new();
        seen.insert((hash, wild_used, state));
        let mut deepest = (0, self.required.first().copied());
        let mut stack: Vec<Frame> = Vec::new();
        let mut first_required = 0;
        loop {
            // A new node: done when every completed operation is placed.
            if required_placed == self.required.len() {
                return KeyVerdict::Linearizable;
            }
            while placed[self.required[first_required]] {
                first_required += 1;
            }
            let frontier_op = self.required[first_required];
            if required_placed > deepest.0 {
                deepest = (required_placed, Some(frontier_op));
            }
            stack.push(Frame {
                next: 0,
                wildcard_tried: false,
                frontier: self.ops[frontier_op].ret.unwrap_or(u64::MAX),
                first_required,
                taken: None,
                before: state,
            });
            // Expand the top frame until a child is entered or the stack empties.
            'expand: loop {
                if seen.len() > SEARCH_BUDGET {
                    return KeyVerdict::Inconclusive;
                }
                let Some(frame) = stack.last_mut() else {
                    return KeyVerdict::NotLinearizable {
                        stuck_at: deepest.1.map_or(0, |i| self.ops[i].index),
                        placed: deepest.0,
                    };
                };
                while frame.next < self.ops.len() && self.ops[frame.next].call < frame.frontier {
                    let i = frame.next;
                    frame.next += 1;
                    if placed[i] {
                        continue;
                    }
                    let Some(after) = self.step(state, self.ops[i]) else {
                        continue;
                    };
                    let child_hash = hash ^ self.zobrist[i];
                    if !seen.insert((child_hash, wild_used, after)) {
                        continue;
                    }
                    frame.taken = Some(Some(i));
                    frame.before = state;
                    placed[i] = true;
                    hash = child_hash;
                    state = after;
                    if self.ops[i].ret.is_some() {
                        required_placed += 1;
                    }
                    break 'expand;
                }
                if !frame.wildcard_tried {
                    frame.wildcard_tried = true;
                    let available = self.wildcards.partition_point(|&c| c < frame.frontier);
                    if wild_used < available {
                        let after = State {
                            version: state.version + 1,
                            value: Value::Anon,
                        };
                        if seen.insert((hash, wild_used + 1, after)) {
                            frame.taken = Some(None);
                            frame.before = state;
                            wild_used += 1;
                            state = after;
                            break 'expand;
                        }
                    }
                }
                // Exhausted: back to the parent, undoing the move that led here.
                stack.pop();
                let Some(parent) = stack.last_mut() else {
                    continue 'expand;
                };
                match parent.taken.take() {
                    Some(Some(i)) => {
                        placed[i] = false;
                        hash ^= self.zobrist[i];
                        if self.ops[i].ret.is_some() {
                            required_placed -= 1;
                        }
                    }
                    Some(None) => wild_used -= 1,
                    None => {}
                }
                state = parent.before;
            }
            first_required = stack.last().map_or(0, |f| f.first_required);
        }
    }
}

/// Checks one key's operations.
pub fn check_key(ops: &[RegisterOp]) -> KeyVerdict {
    Search::new(ops).run()
}

/// Every key's context operations of `history`, as the checker reads them.
pub fn register_ops(history: &History) -> BTreeMap<String, Vec<RegisterOp>> {
    let mut keys: BTreeMap<String, Vec<RegisterOp>> = BTreeMap::new();
    for (index, op) in history.ops.iter().enumerate() {
        let ret = match op.outcome {
            Outcome::Ok(_) => Some(op.complete_us),
            Outcome::Unknown(_) => None,
            Outcome::Fail(_) => continue,
        };
        let (key, kind) = match (&op.call, &op.outcome) {
            (Call::Put { key, value }, Outcome::Ok(Answer::Entry { version, .. })) => (
                key,
                RegisterKind::Put {
                    value: *value,
                    version: Some(*version),
                },
            ),
            (Call::Put { key, value }, _) => (
                key,
                RegisterKind::Put {
                    value: *value,
                    version: None,
                },
            ),
            (Call::Get { key }, Outcome::Ok(Answer::Entry { version, value })) => (
                key,
                RegisterKind::Get {
                    seen: Some((*version, *value)),
                },
            ),
            (Call::Get { key }, Outcome::Ok(Answer::NotFound)) => {
                (key, RegisterKind::Get { seen: None })
            }
            (Call::Get { key }, _) => (key, RegisterKind::Get { seen: None }),
            _ => continue,
        };
        keys.entry(key.clone()).or_default().push(RegisterOp {
            call: op.invoke_us,
            ret,
            kind,
            index,
        });
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(call: u64, ret: Option<u64>, value: u64, version: Option<u64>) -> RegisterOp {
        RegisterOp {
            call,
            ret,
            kind: RegisterKind::Put { value, version },
            index: 0,
        }
    }

    fn get(call: u64, ret: u64, seen: Option<(u64, u64)>) -> RegisterOp {
        RegisterOp {
            call,
            ret: Some(ret),
            kind: RegisterKind::Get {
                seen: seen.map(|(version, value)| (version, Some(value))),
            },
            index: 0,
        }
    }

    fn indexed(mut ops: Vec<RegisterOp>) -> Vec<RegisterOp> {
        for (i, op) in ops.iter_mut().enumerate() {
            op.index = i;
        }
        ops
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let ops = indexed(vec![
            get(0, 1, None),
            put(2, Some(3), 10, Some(1)),
            get(4, 5, Some((1, 10))),
            put(6, Some(7), 11, Some(2)),
            get(8, 9, Some((2, 11))),
        ]);
        assert_eq!(check_key(&ops), KeyVerdict::Linearizable);
    }

    #[test]
    fn concurrent_operations_may_take_either_order() {
        // Two overlapping puts; the gets see the second-invoked put first.
        let ops = indexed(vec![
            put(0, Some(10), 1, Some(2)),
            put(1, Some(9), 2, Some(1)),
            get(2, 8, Some((1, 2))),
            get(11, 12, Some((2, 1))),
        ]);
        assert_eq!(check_key(&ops), KeyVerdict::Linearizable);
    }

    #[test]
    fn a_stale_read_is_not_linearizable() {
        let ops = indexed(vec![
            put(0, Some(1), 10, Some(1)),
            put(2, Some(3), 11, Some(2)),
            // Invoked after the second put completed, yet sees the first.
            get(4, 5, Some((1, 10))),
        ]);
        assert_eq!(
            check_key(&ops),
            KeyVerdict::NotLinearizable {
                stuck_at: 2,
                placed: 2
            }
        );
    }

    #[test]
    fn reading_a_failed_or_unwritten_value_is_not_linearizable() {
        // Value 99 was never put (a failed put is left out of the history altogether).
        let ops = indexed(vec![put(0, Some(1), 10, Some(1)), get(2, 3, Some((2, 99)))]);
        assert!(matches!(
            check_key(&ops),
            KeyVerdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn a_lost_acknowledged_write_is_not_linearizable() {
        let ops = indexed(vec![put(0, Some(1), 10, Some(1)), get(2, 3, None)]);
        assert!(matches!(
            check_key(&ops),
            KeyVerdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn a_version_jump_needs_as_many_unknown_writes() {
        // Versions jump from 1 to 5: three puts must have happened in between.
        let two = indexed(vec![
            put(0, Some(1), 10, Some(1)),
            put(2, None, 20, None),
            put(3, None, 21, None),
            put(10, Some(11), 30, Some(5)),
        ]);
        assert!(matches!(
            check_key(&two),
            KeyVerdict::NotLinearizable { .. }
        ));
        let three = indexed(vec![
            put(0, Some(1), 10, Some(1)),
            put(2, None, 20, None),
            put(3, None, 21, None),
            put(4, None, 22, None),
            put(10, Some(11), 30, Some(5)),
        ]);
        assert_eq!(check_key(&three), KeyVerdict::Linearizable);
    }

    #[test]
    fn an_unknown_write_takes_effect_after_its_invocation_or_never() {
        // Observed long after it was invoked: fine.
        let late = indexed(vec![
            put(0, None, 5, None),
            get(1, 2, None),
            get(50, 51, Some((1, 5))),
        ]);
        assert_eq!(check_key(&late), KeyVerdict::Linearizable);
        // Never observed: it may not have happened.
        let never = indexed(vec![
            put(0, None, 5, None),
            get(1, 2, None),
            get(3, 4, None),
        ]);
        assert_eq!(check_key(&never), KeyVerdict::Linearizable);
        // Observed before it was invoked: impossible.
        let early = indexed(vec![get(0, 1, Some((1, 5))), put(2, None, 5, None)]);
        assert!(matches!(
            check_key(&early),
            KeyVerdict::NotLinearizable { .. }
        ));
        // Unobserved, but its version bump is visible before its invocation: impossible.
        let bump = indexed(vec![
            put(0, Some(1), 1, Some(1)),
            put(5, None, 2, None),
            put(2, Some(3), 3, Some(3)),
        ]);
        assert!(matches!(
            check_key(&bump),
            KeyVerdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn an_observed_value_cannot_come_back_after_an_overwrite() {
        let ops = indexed(vec![
            put(0, Some(1), 1, Some(1)),
            put(2, Some(3), 2, Some(2)),
            get(4, 5, Some((2, 2))),
            get(6, 7, Some((1, 1))),
        ]);
        assert!(matches!(
            check_key(&ops),
            KeyVerdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn many_unknown_writes_stay_cheap() {
        // 300 rounds: an acknowledged put, then two unknown puts nobody reads, whose bumps
        // the next acknowledged version shows one of.
        let mut ops = Vec::new();
        let mut version = 0;
        for round in 0..300u64 {
            let t = round * 100;
            version += 1;
            ops.push(put(t, Some(t + 10), round * 10, Some(version)));
            ops.push(get(t + 11, t + 12, Some((version, round * 10))));
            ops.push(put(t + 20, None, round * 10 + 1, None));
            ops.push(put(t + 21, None, round * 10 + 2, None));
            version += 1;
        }
        assert_eq!(check_key(&indexed(ops)), KeyVerdict::Linearizable);
    }
}
