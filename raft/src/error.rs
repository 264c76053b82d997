//! The closed set of error codes Conclave's core returns, mapped once to HTTP and to gRPC at
//! the edges.
//!
//! Deterministic errors (a missing topic, a task already claimed) are results of apply and
//! identical on every replica; they travel back to the client as one of these codes.

use serde::{Deserialize, Serialize};

/// What went wrong, as a client can act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The request is malformed or violates a rule.
    BadRequest,
    /// The entity does not exist (or belongs to another workspace).
    NotFound,
    /// The request conflicts with the entity's state.
    Conflict,
    /// The cluster cannot serve this now (no leader, overloaded); retry.
    Unavailable,
    /// A bug or storage failure.
    Internal,
}

/// An error with its code and a lowercase message for the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct CoreError {
    /// The code.
    pub code: ErrorCode,
    /// A human-readable message.
    pub message: String,
}

impl CoreError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    /// [`ErrorCode::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    /// [`ErrorCode::Conflict`].
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }
    /// [`ErrorCode::BadRequest`].
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
    /// [`ErrorCode::Unavailable`].
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }
    /// [`ErrorCode::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}
