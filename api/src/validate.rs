//! Input rules shared by handlers: a violation is a 400 with a message naming the field.

use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

use crate::error::ApiError;

/// Declares an OpenAPI string schema stating exactly what a check here accepts; use it as
/// `value_type` on fields or as a parameter's type.
macro_rules! string_schema {
    ($(#[$doc:meta])* $name:ident, $pattern:expr, $max:expr) => {
        $(#[$doc])*
        pub struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some($pattern))
                    .min_length(Some(1))
                    .max_length(Some($max))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

string_schema!(
    /// A name checked by [`name`].
    NameString,
    r"^[A-Za-z0-9._:-]+$",
    MAX_NAME_BYTES
);
string_schema!(
    /// A key checked by [`key`]: no control characters.
    KeyString,
    r"^[^\u0000-\u001F\u007F-\u009F]+$",
    MAX_KEY_CHARS
);

/// Longest key (context key, cursor), characters.
pub const MAX_KEY_CHARS: usize = 256;
/// Longest entity name (topic, agent, queue), bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Longest task title, bytes.
pub const MAX_TITLE_BYTES: usize = 512;
/// Longest task description, bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 16 * 1024;
/// Largest page a list returns.
pub const MAX_PAGE: usize = 1000;

/// A key: 1..=256 characters, no control characters (schema: [`KeyString`]).
pub fn key(field: &str, v: &str) -> Result<(), ApiError> {
    if v.is_empty() || v.chars().count() > MAX_KEY_CHARS {
        return Err(ApiError::bad_request(format!(
            "{field} must be 1 to {MAX_KEY_CHARS} characters"
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

/// A name: 1..=128 of (schema: [`NameString`]) `A-Z a-z 0-9 . _ - :`.
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

/// Largest metadata object, bytes of JSON.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// An optional metadata object as the JSON text to store (`{}` when absent), at most
/// [`MAX_METADATA_BYTES`].
pub fn metadata(v: Option<serde_json::Map<String, serde_json::Value>>) -> Result<String, ApiError> {
    let text = serde_json::to_string(&v.unwrap_or_default())
        .map_err(|e| ApiError::bad_request(format!("metadata: {e}")))?;
    if text.len() > MAX_METADATA_BYTES {
        return Err(ApiError::bad_request(format!(
            "metadata must be at most {MAX_METADATA_BYTES} bytes of JSON"
        )));
    }
    Ok(text)
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
