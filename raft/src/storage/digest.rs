//! A digest of one group's replicated state on this node, for checking that replicas agree.
//!
//! The digest covers exactly what apply writes for the group: the applied log id, the last
//! applied membership, the meta state (meta group) and every state-machine row (shards), read
//! from one RocksDB snapshot, so the applied index and the contents belong together. Two
//! replicas of a group at the same applied index must have the same digest; anything else means
//! their state machines diverged. Node-local records (the stored snapshot, the log, the vote)
//! are left out.

use rocksdb::{Direction, IteratorMode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec::{decode_io, encode};
use crate::storage::db::{gkey, group_range, io_err, CF_SM, CF_SMMETA};
use crate::storage::state_machine::{APPLIED, MEMBERSHIP, META_STATE};
use crate::storage::Db;
use crate::types::typ::{LogId, StoredMembership};
use crate::types::GroupId;

/// One group's applied index and state digest on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDigest {
    /// The group.
    pub group: GroupId,
    /// Index of the last applied entry (0 before any).
    pub applied: u64,
    /// Hex SHA-256 of the applied log id, membership and state-machine contents.
    pub digest: String,
    /// State-machine rows hashed (shards; the meta state counts as one row).
    pub rows: u64,
}

/// The digest of `group`'s state on `db`, from one consistent snapshot. Blocking: call it
/// off the async runtime.
pub fn group_digest(db: &Db, group: GroupId) -> std::io::Result<GroupDigest> {
    let snap = db.inner.snapshot();
    let mut hash = Sha256::new();
    let mut field = |tag: &[u8], value: &[u8]| {
        hash.update((tag.len() as u64).to_be_bytes());
        hash.update(tag);
        hash.update((value.len() as u64).to_be_bytes());
        hash.update(value);
    };
    let read = |tag: &[u8]| {
        snap.get_cf(db.cf(CF_SMMETA), gkey(group, tag))
            .map_err(io_err)
    };
    // Decoded and encoded again, so a record never written and one written with its default
    // (as installing a snapshot does) hash alike.
    let applied: Option<LogId> = read(APPLIED)?
        .as_deref()
        .map(decode_io::<Option<LogId>>)
        .transpose()?
        .flatten();
    let membership: StoredMembership = read(MEMBERSHIP)?
        .as_deref()
        .map(decode_io::<StoredMembership>)
        .transpose()?
        .unwrap_or_default();
    field(APPLIED, &encode(&applied));
    field(MEMBERSHIP, &encode(&membership));
    let mut rows = 0;
    if let Some(meta) = read(META_STATE)? {
        field(META_STATE, &meta);
        rows += 1;
    }
    let (from, to) = group_range(group);
    for item in snap.iterator_cf(db.cf(CF_SM), IteratorMode::From(&from, Direction::Forward)) {
        let (k, v) = item.map_err(io_err)?;
        if k.as_ref() >= to.as_slice() {
            break;
        }
        field(&k[8..], &v);
        rows += 1;
    }
    Ok(GroupDigest {
        group,
        applied: applied.map_or(0, |l| l.index()),
        digest: hex_string(&hash.finalize()),
        rows,
    })
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
