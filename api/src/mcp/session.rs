//! Self-contained MCP session ids.
//!
//! A session id is `v1.<payload>.<mac>`: the payload (base64url JSON) names the workspace,
//! the API key, the negotiated protocol version, when the session began and ends, and a random
//! nonce; the mac is HMAC-SHA256 over the payload under a key derived from the cluster secret.
//! Every node holds that secret, so every node accepts a session begun on any other, and a
//! client behind a load balancer keeps its session when the node that began it dies. Nothing
//! about a session is kept in memory anywhere.
//!
//! A session ends when it expires ([`SESSION_TTL_MS`] after it began), when its API key is
//! revoked (every request is authenticated again), or when the client ends it with `DELETE`:
//! that records the nonce in the meta group's bounded list of ended sessions
//! ([`conclave_raft::meta::mcp_sessions`]), which every node reads locally.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// How long a session lasts after it began, ms (24 hours); the client then begins another.
pub const SESSION_TTL_MS: u64 = 24 * 60 * 60 * 1000;

/// Longest session id accepted, bytes: anything longer is not one of ours.
const MAX_SESSION_ID_BYTES: usize = 1024;

/// Prefix of the text the mac covers: domain separation from any other use of the secret.
const MAC_CONTEXT: &[u8] = b"conclave mcp session v1\0";

/// What a session id says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    /// The workspace of the key that began it.
    pub ws: String,
    /// The id of the key that began it: only that key may use the session.
    pub key: String,
    /// The negotiated protocol version.
    pub pv: String,
    /// When it began, ms since the epoch.
    pub iat: u64,
    /// When it ends, ms since the epoch.
    pub exp: u64,
    /// Random, unique per session: what `DELETE` records.
    pub n: String,
}

/// Why a session id is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    /// Not a session id of this cluster (malformed, or the mac does not verify).
    Invalid,
    /// It has expired.
    Expired,
    /// It was begun by another API key.
    OtherKey,
}

impl SessionError {
    /// A lowercase explanation for the client.
    pub fn message(self) -> &'static str {
        match self {
            SessionError::Invalid => "unknown mcp session",
            SessionError::Expired => "the mcp session has expired; begin a new one",
            SessionError::OtherKey => "the mcp session belongs to another api key",
        }
    }
}

/// New claims for a session of `ws`/`key` at protocol `pv`, beginning at `now_ms`.
pub fn new_claims(ws: &str, key: &str, pv: &str, now_ms: u64) -> SessionClaims {
    let mut nonce = [0u8; 16];
    rand::rng().fill_bytes(&mut nonce);
    SessionClaims {
        ws: ws.to_string(),
        key: key.to_string(),
        pv: pv.to_string(),
        iat: now_ms,
        exp: now_ms + SESSION_TTL_MS,
        n: hex::encode(nonce),
    }
}

fn mac(secret: &[u8], payload: &str) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("hmac takes keys of any length");
    m.update(MAC_CONTEXT);
    m.update(payload.as_bytes());
    m
}

/// The session id carrying `claims`, signed with `secret`.
pub fn sign(secret: &[u8], claims: &SessionClaims) -> String {
    let json = serde_json::to_vec(claims).expect("claims serialize");
    let payload = URL_SAFE_NO_PAD.encode(json);
    let tag = mac(secret, &payload).finalize().into_bytes();
    format!("v1.{payload}.{}", URL_SAFE_NO_PAD.encode(tag))
}

/// The claims of session id `id` if `secret` signed it, it has not expired at `now_ms`, and
/// `key_id` began it. Whether it was ended early is the caller's check (the meta group).
pub fn verify(
    secret: &[u8],
    id: &str,
    key_id: &str,
    now_ms: u64,
) -> Result<SessionClaims, SessionError> {
    if id.len() > MAX_SESSION_ID_BYTES {
        return Err(SessionError::Invalid);
    }
    let mut parts = id.split('.');
    let (Some("v1"), Some(payload), Some(tag), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SessionError::Invalid);
    };
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| SessionError::Invalid)?;
    // Constant-time comparison.
    mac(secret, payload)
        .verify_slice(&tag)
        .map_err(|_| SessionError::Invalid)?;
    let json = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| SessionError::Invalid)?;
    let claims: SessionClaims = serde_json::from_slice(&json).map_err(|_| SessionError::Invalid)?;
    if now_ms >= claims.exp {
        return Err(SessionError::Expired);
    }
    if claims.key != key_id {
        return Err(SessionError::OtherKey);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"cluster secret";

    #[test]
    fn a_signed_session_verifies_with_the_same_secret_and_key() {
        let claims = new_claims("default", "key_1", "2025-11-25", 1_000);
        let id = sign(SECRET, &claims);
        assert!(id.is_ascii() && !id.contains(char::is_whitespace));
        assert_eq!(verify(SECRET, &id, "key_1", 2_000), Ok(claims));
    }

    #[test]
    fn tampering_another_secret_or_key_and_expiry_are_refused() {
        let claims = new_claims("default", "key_1", "2025-11-25", 1_000);
        let id = sign(SECRET, &claims);
        assert_eq!(
            verify(b"other secret", &id, "key_1", 2_000),
            Err(SessionError::Invalid)
        );
        assert_eq!(
            verify(SECRET, &id, "key_2", 2_000),
            Err(SessionError::OtherKey)
        );
        assert_eq!(
            verify(SECRET, &id, "key_1", claims.exp),
            Err(SessionError::Expired)
        );
        // A payload naming another workspace, with the old mac, is refused.
        let mut forged = claims.clone();
        forged.ws = "other".into();
        let forged_payload = sign(SECRET, &forged).split('.').nth(1).unwrap().to_string();
        let mac = id.split('.').nth(2).unwrap();
        let spliced = format!("v1.{forged_payload}.{mac}");
        assert_eq!(
            verify(SECRET, &spliced, "key_1", 2_000),
            Err(SessionError::Invalid)
        );
        for bad in ["", "v1", "v1.a.b.c", "v2.a.b", "v1.!!.??"] {
            assert_eq!(
                verify(SECRET, bad, "key_1", 2_000),
                Err(SessionError::Invalid)
            );
        }
    }

    #[test]
    fn every_session_gets_its_own_nonce() {
        let a = new_claims("default", "key_1", "2025-11-25", 1_000);
        let b = new_claims("default", "key_1", "2025-11-25", 1_000);
        assert_ne!(a.n, b.n);
        assert_ne!(sign(SECRET, &a), sign(SECRET, &b));
    }
}
