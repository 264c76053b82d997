//! Ended MCP sessions: the replicated revocation list that makes `DELETE /mcp` end a session
//! on every node.
//!
//! An MCP session id is self-contained (signed with the cluster secret, carrying its own
//! creation time), so any node accepts it without asking the node that created it. What a
//! signature cannot express is that the client ended the session early; that fact lives here,
//! in the meta group every node holds, until the session would have expired anyway.
//!
//! Invariant: the list is bounded. Each entry carries the time its session expires and is
//! dropped by the first apply at or after that time (leader time, so every replica drops the
//! same entries); when [`MAX_ENDED_SESSIONS`] live entries are held, a further end is refused
//! (the session then simply runs to its expiry).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::CoreError;

/// Most ended, not yet expired sessions remembered at once.
pub const MAX_ENDED_SESSIONS: usize = 100_000;

/// Ended sessions: session nonce → when the session expires, ms since the epoch, and the same
/// pairs ordered by expiry, so expired entries are dropped from the front.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct McpSessions {
    ended: BTreeMap<String, u64>,
    by_expiry: BTreeSet<(u64, String)>,
}

impl McpSessions {
    /// Whether the session with `nonce` was ended.
    pub fn is_ended(&self, nonce: &str) -> bool {
        self.ended.contains_key(nonce)
    }

    /// How many ended sessions are remembered.
    pub fn len(&self) -> usize {
        self.ended.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.ended.is_empty()
    }

    /// Records that the session `nonce`, valid until `expires_at`, has ended, after dropping
    /// every entry expired at `at_ms`. Ending an ended or expired session changes nothing.
    pub fn end(&mut self, nonce: &str, expires_at: u64, at_ms: u64) -> Result<(), CoreError> {
        while let Some((exp, n)) = self.by_expiry.first().cloned() {
            if exp > at_ms {
                break;
            }
            self.by_expiry.pop_first();
            self.ended.remove(&n);
        }
        if expires_at <= at_ms || self.ended.contains_key(nonce) {
            return Ok(());
        }
        if self.ended.len() >= MAX_ENDED_SESSIONS {
            return Err(CoreError::unavailable(
                "too many ended mcp sessions are remembered; the session expires on its own",
            ));
        }
        self.ended.insert(nonce.to_string(), expires_at);
        self.by_expiry.insert((expires_at, nonce.to_string()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ended_session_is_remembered_until_it_expires() {
        let mut s = McpSessions::default();
        s.end("a", 1_000, 10).unwrap();
        assert!(s.is_ended("a"));
        // Ending it again changes nothing.
        s.end("a", 1_000, 20).unwrap();
        assert_eq!(s.len(), 1);
        // The first apply at or after its expiry drops it.
        s.end("b", 2_000, 1_000).unwrap();
        assert!(!s.is_ended("a"));
        assert!(s.is_ended("b"));
        // An already expired session is not recorded.
        s.end("c", 500, 1_000).unwrap();
        assert!(!s.is_ended("c"));
    }

    #[test]
    fn the_list_is_bounded() {
        let mut s = McpSessions::default();
        for i in 0..MAX_ENDED_SESSIONS {
            s.end(&i.to_string(), 10_000, 0).unwrap();
        }
        assert!(s.end("one more", 10_000, 0).is_err());
        // Once entries expire there is room again.
        s.end("one more", 20_000, 10_000).unwrap();
        assert_eq!(s.len(), 1);
    }
}
