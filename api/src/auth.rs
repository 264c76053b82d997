//! API-key authentication: `Authorization: Bearer <secret>`; only the SHA-256 of a secret is
//! stored, in the meta group, which every node holds, so a check never leaves the node.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use conclave_raft::meta::Scope;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's id.
    pub key_id: String,
    /// The workspace the key is scoped to.
    pub workspace: String,
    /// What the key may do.
    pub scope: Scope,
    /// The user the key belongs to, if any.
    pub user: Option<String>,
}

impl Caller {
    /// Refuses with 403 unless the key's scope is at least `needed`.
    pub fn require(&self, needed: Scope) -> Result<(), ApiError> {
        if self.scope >= needed {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                format!(
                    "this key's scope is {:?}; {:?} is required",
                    self.scope, needed
                )
                .to_lowercase(),
            ))
        }
    }
}

/// Hex SHA-256 of an API key secret.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new random API key secret.
pub fn new_secret() -> String {
    random_token("ck_")
}

/// `prefix` then 48 random hex digits.
pub fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// The shown part of a secret: its first 10 characters (`ck_` and 7 hex digits), enough to
/// tell keys apart and far too little to guess the rest.
pub fn secret_prefix(secret: &str) -> String {
    secret.chars().take(10).collect()
}

/// A new random id for an entity created at the edge: `<prefix>_<16 hex digits>`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{:016x}", rand::rng().next_u64())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(state, &parts.headers)
    }
}

/// The caller named by a request's `Authorization: Bearer <api key>` header, checked against
/// the local meta replica; 401 without a valid key.
pub fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing authorization header"))?;
    let secret = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::unauthorized("authorization must be `Bearer <api key>`"))?;
    caller_for_secret(state, secret)
}

/// The caller an API key secret stands for, checked against this node's meta replica (so a
/// revoked key is refused as soon as the revocation is applied here).
pub fn caller_for_secret(state: &AppState, secret: &str) -> Result<Caller, ApiError> {
    let hash = hash_secret(secret.trim());
    let meta = state.groups().meta().read().expect("meta lock");
    let key = meta
        .key_by_hash(&hash)
        .ok_or_else(|| ApiError::unauthorized("invalid or revoked api key"))?;
    Ok(Caller {
        key_id: key.id.clone(),
        workspace: key.workspace.clone(),
        scope: key.scope,
        user: key.user.clone(),
    })
}
