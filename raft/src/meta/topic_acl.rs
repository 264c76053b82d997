//! Topic access modes and ACL entries, kept in the meta group so every node enforces them
//! locally on publish, read and subscribe without a shard round trip.
//!
//! Invariants kept here: a topic with no record is `open`; a principal has at most one entry per
//! topic (granting again merges permissions); entry ids `acl_<n>` are never reused; a topic has
//! at most [`MAX_ACL_ENTRIES`] entries.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::CoreError;

/// Most ACL entries one topic may hold.
pub const MAX_ACL_ENTRIES: usize = 1000;

/// Who may use a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TopicAccessMode {
    /// Any key of the workspace, within its scope.
    Open,
    /// Non-admin callers need an ACL entry granting the permission.
    Restricted,
}

/// What an ACL entry allows on a restricted topic.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TopicPermission {
    /// Read history and subscribe.
    Read,
    /// Publish.
    Publish,
}

/// One ACL entry of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicAclEntry {
    /// `acl_<n>`.
    pub id: String,
    /// `agent:NAME` or `key:ID`.
    pub principal: String,
    /// What it allows.
    pub permissions: BTreeSet<TopicPermission>,
    /// ms since the epoch.
    pub created_at: u64,
}

/// A topic's access mode and ACL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicAccess {
    /// Open or restricted.
    pub mode: TopicAccessMode,
    /// Entries in the order they were created.
    pub entries: Vec<TopicAclEntry>,
    /// When the mode or an entry last changed, ms since the epoch.
    pub updated_at: u64,
}

/// Every topic's access record, by workspace and topic name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicAcls {
    /// The number of the last entry id handed out.
    pub last_entry: u64,
    /// Records by workspace, then topic.
    pub topics: BTreeMap<String, BTreeMap<String, TopicAccess>>,
}

impl TopicAcls {
    /// The record of a topic, if any (none means open).
    pub fn get(&self, ws: &str, topic: &str) -> Option<&TopicAccess> {
        self.topics.get(ws).and_then(|t| t.get(topic))
    }

    /// Whether any of `principals` may do `perm` on the topic (always true when open).
    pub fn allows(
        &self,
        ws: &str,
        topic: &str,
        principals: &[String],
        perm: TopicPermission,
    ) -> bool {
        match self.get(ws, topic) {
            None => true,
            Some(a) if a.mode == TopicAccessMode::Open => true,
            Some(a) => a
                .entries
                .iter()
                .any(|e| e.permissions.contains(&perm) && principals.contains(&e.principal)),
        }
    }

    fn record(&mut self, ws: &str, topic: &str, at_ms: u64) -> &mut TopicAccess {
        self.topics
            .entry(ws.to_string())
            .or_default()
            .entry(topic.to_string())
            .or_insert_with(|| TopicAccess {
                mode: TopicAccessMode::Open,
                entries: Vec::new(),
                updated_at: at_ms,
            })
    }

    /// Sets a topic's mode; `reset` also drops its entries (a topic created anew).
    pub(super) fn set_mode(
        &mut self,
        ws: &str,
        topic: &str,
        mode: TopicAccessMode,
        reset: bool,
        at_ms: u64,
    ) -> TopicAccess {
        let rec = self.record(ws, topic, at_ms);
        rec.mode = mode;
        rec.updated_at = at_ms;
        if reset {
            rec.entries.clear();
        }
        rec.clone()
    }

    /// Grants `permissions` to `principal`, merging with its entry if it has one; returns the
    /// entry and whether it is new.
    pub(super) fn grant(
        &mut self,
        ws: &str,
        topic: &str,
        principal: &str,
        permissions: &[TopicPermission],
        at_ms: u64,
    ) -> Result<(TopicAclEntry, bool), CoreError> {
        if permissions.is_empty() {
            return Err(CoreError::bad_request("permissions must not be empty"));
        }
        let next = self.last_entry + 1;
        let rec = self.record(ws, topic, at_ms);
        if let Some(e) = rec.entries.iter_mut().find(|e| e.principal == principal) {
            e.permissions.extend(permissions.iter().copied());
            let e = e.clone();
            rec.updated_at = at_ms;
            return Ok((e, false));
        }
        if rec.entries.len() >= MAX_ACL_ENTRIES {
            return Err(CoreError::bad_request(format!(
                "topic {topic:?} already has {MAX_ACL_ENTRIES} acl entries"
            )));
        }
        let entry = TopicAclEntry {
            id: format!("acl_{next}"),
            principal: principal.to_string(),
            permissions: permissions.iter().copied().collect(),
            created_at: at_ms,
        };
        rec.entries.push(entry.clone());
        rec.updated_at = at_ms;
        self.last_entry = next;
        Ok((entry, true))
    }

    /// Forgets a topic's record (the topic was deleted).
    pub(super) fn drop_topic(&mut self, ws: &str, topic: &str) {
        if let Some(topics) = self.topics.get_mut(ws) {
            topics.remove(topic);
            if topics.is_empty() {
                self.topics.remove(ws);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TopicPermission::{Publish, Read};

    #[test]
    fn restricted_topics_need_a_matching_entry_and_grants_merge() {
        let mut acls = TopicAcls::default();
        let who = |p: &str| vec![p.to_string()];
        assert!(acls.allows("w", "t", &who("key:key_2"), Publish));
        acls.set_mode("w", "t", TopicAccessMode::Restricted, false, 1);
        assert!(!acls.allows("w", "t", &who("key:key_2"), Publish));
        assert!(acls.allows("w", "other", &who("key:key_2"), Publish));
        let (e, created) = acls.grant("w", "t", "key:key_2", &[Read], 2).unwrap();
        assert!(created);
        assert_eq!(e.id, "acl_1");
        assert!(acls.allows("w", "t", &who("key:key_2"), Read));
        assert!(!acls.allows("w", "t", &who("key:key_2"), Publish));
        let (e, created) = acls.grant("w", "t", "key:key_2", &[Publish], 3).unwrap();
        assert!(!created);
        assert_eq!(
            (e.id.as_str(), e.permissions.len()),
            ("acl_1", 2),
            "same entry, merged permissions"
        );
        assert!(acls.allows("w", "t", &who("key:key_2"), Publish));
        assert!(acls.get("v", "t").is_none(), "records are per workspace");
        assert!(acls.grant("w", "t", "agent:a", &[], 4).is_err());
        // A re-created topic starts open with no entries.
        acls.drop_topic("w", "t");
        assert!(acls.get("w", "t").is_none());
        acls.set_mode("w", "t", TopicAccessMode::Restricted, true, 5);
        assert!(!acls.allows("w", "t", &who("key:key_2"), Read));
        let (e, _) = acls.grant("w", "t", "agent:a", &[Read], 6).unwrap();
        assert_eq!(e.id, "acl_2", "entry ids are never reused");
    }
}
