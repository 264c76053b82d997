//! Input rules shared by handlers: a violation is a 400 with a message naming the field.

use crate::error::ApiError;

/// Longest context key, bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Longest entity name (topic, agent, queue), bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Longest task title, bytes.
pub const MAX_TITLE_BYTES: usize = 512;
/// Longest task description, bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 16 * 1024;
/// Largest page a list returns.
pub const MAX_PAGE: usize = 1000;

/// A context key: 1..=256 bytes, no control characters.
pub fn key(field: &str, v: &str) -> Result<(), ApiError> {
    if v.is_empty() || v.len() > MAX_KEY_BYTES {
        return Err(ApiError::bad_request(format!(
            "{field} must be 1 to {MAX_KEY_BYTES} bytes"
        )));
    }
    if v.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}

/// Context keys that name other routes under `/v1/context/`.
pub const RESERVED_CONTEXT_KEYS: &[&str] = &["embeddings", "search"];

/// A context key: as [`key`], and not one of [`RESERVED_CONTEXT_KEYS`].
pub fn context_key(field: &str, v: &str) -> Result<(), ApiError> {
    key(field, v)?;
    if RESERVED_CONTEXT_KEYS.contains(&v) {
        return Err(ApiError::bad_request(format!(
            "{field} {v:?} is reserved: it names another route under /v1/context/"
        )));
    }
    Ok(())
}

/// A name: 1..=128 of `A-Z a-z 0-9 . _ - :`.
pub fn name(field: &str, v: &str) -> Result<(), ApiError> {
    let ok = !v.is_empty()
        && v.len() <= MAX_NAME_BYTES
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{field} must be 1 to {MAX_NAME_BYTES} characters of letters, digits, '.', '_', '-' or ':'"
        )))
    }
}

/// Free text up to `max` bytes; `required` refuses an empty one.
pub fn text(field: &str, v: &str, max: usize, required: bool) -> Result<(), ApiError> {
    if required && v.trim().is_empty() {
        return Err(ApiError::bad_request(format!("{field} is required")));
    }
    if v.len() > max {
        return Err(ApiError::bad_request(format!(
            "{field} must be at most {max} bytes"
        )));
    }
    Ok(())
}

/// A page size: default `default`, at most [`MAX_PAGE`].
pub fn limit(v: Option<usize>, default: usize) -> Result<usize, ApiError> {
    match v {
        None => Ok(default),
        Some(0) => Err(ApiError::bad_request("limit must be at least 1")),
        Some(n) if n > MAX_PAGE => Err(ApiError::bad_request(format!(
            "limit must be at most {MAX_PAGE}"
        ))),
        Some(n) => Ok(n),
    }
}
