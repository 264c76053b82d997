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

string_schema!(
    /// An agent name checked by [`agent_name`]: a name without `:`.
    AgentNameString,
    r"^[A-Za-z0-9._-]+$",
    MAX_NAME_BYTES
);
string_schema!(
    /// An agent named by a client: `NAME` or `agent:NAME` (see [`agent_ref`]).
    AgentRefString,
    r"^(agent:)?[A-Za-z0-9._-]{1,128}$",
    MAX_NAME_BYTES + AGENT_PREFIX.len()
);
string_schema!(
    /// An agent capability: 1 to 128 characters, no control characters.
    CapabilityString,
    r"^[^\u0000-\u001F\u007F-\u009F]+$",
    128
);
string_schema!(
    /// An idempotency key: 1 to 128 visible ASCII characters, no spaces (it may travel as a
    /// header).
    IdempotencyKeyString,
    r"^[\x21-\x7E]+$",
    128
);
string_schema!(
    /// Where a message goes: `agent:NAME` or `broadcast`.
    MessageToString,
    r"^(agent:[A-Za-z0-9._-]{1,128}|broadcast)$",
    MAX_NAME_BYTES + AGENT_PREFIX.len()
);
string_schema!(
    /// A message id, `msg_<shard>_<n>`.
    MessageIdString,
    r"^msg_[0-9]+_[0-9]+$",
    64
);
string_schema!(
    /// An ACL principal: `agent:NAME`, `key:ID` or `team:ID`.
    TopicPrincipalString,
    r"^(agent:[A-Za-z0-9._-]{1,128}|key:[A-Za-z0-9._:-]{1,128}|team:[A-Za-z0-9._:-]{1,128})$",
    132
);
string_schema!(
    /// A topic ACL cursor: an entry id, `acl_<n>`.
    TopicAclCursorString,
    r"^acl_[0-9]{1,19}$",
    23
);

string_schema!(
    /// An email address: something before an `@` and something after, no whitespace or
    /// control characters (checked by the invitations routes).
    EmailString,
    r"^[^@\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]+@[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]+$",
    254
);
string_schema!(
    /// A display name: no control characters, not only whitespace.
    UserNameString,
    r"^[^\u0000-\u001F\u007F-\u009F]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\u0000-\u001F\u007F-\u009F]*$",
    128
);
string_schema!(
    /// A page cursor made of digits (a sequence number).
    DigitsCursorString,
    r"^[0-9]{1,19}$",
    19
);

string_schema!(
    /// A usage page cursor: `<day number>:<key id>`.
    UsageCursorString,
    r"^[0-9]{1,10}:[A-Za-z0-9._:-]{1,128}$",
    139
);

/// A UTC calendar day, `YYYY-MM-DD` (see [`crate::calendar::parse_date`]).
pub struct DateString;

impl utoipa::PartialSchema for DateString {
    fn schema() -> RefOr<Schema> {
        use utoipa::openapi::schema::{KnownFormat, SchemaFormat};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Date)))
            .pattern(Some(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"))
            .into()
    }
}

impl utoipa::ToSchema for DateString {}

/// The prefix of an agent address.
pub const AGENT_PREFIX: &str = "agent:";

/// Pattern of a required text: at least one character that is not whitespace.
pub const NON_BLANK: &str =
    r"[^\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]";

/// Longest key (context key, cursor), characters.
pub const MAX_KEY_CHARS: usize = 256;
/// Longest entity name (topic, agent, queue), bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Longest task title, characters.
pub const MAX_TITLE_CHARS: usize = 512;
/// Longest task description, characters.
pub const MAX_DESCRIPTION_CHARS: usize = 16 * 1024;
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

/// Free text up to `max` characters (what the document's `maxLength` counts); `required`
/// refuses a blank one (schema pattern: [`NON_BLANK`]).
pub fn text(field: &str, v: &str, max: usize, required: bool) -> Result<(), ApiError> {
    if required && v.trim().is_empty() {
        return Err(ApiError::bad_request(format!(
            "{field} is required: give at least one character that is not whitespace"
        )));
    }
    if v.chars().count() > max {
        return Err(ApiError::bad_request(format!(
            "{field} must be at most {max} characters"
        )));
    }
    Ok(())
}

/// An agent name: as [`name`] but without `:` (it would be ambiguous in `agent:NAME`
/// addresses); schema: [`AgentNameString`].
pub fn agent_name(field: &str, v: &str) -> Result<(), ApiError> {
    let ok = !v.is_empty()
        && v.len() <= MAX_NAME_BYTES
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{field} must be 1 to {MAX_NAME_BYTES} characters of letters, digits, '.', '_' or '-'"
        )))
    }
}

/// An agent named by a client, `NAME` or `agent:NAME` (schema: [`AgentRefString`]): the name.
pub fn agent_ref<'a>(field: &str, v: &'a str) -> Result<&'a str, ApiError> {
    let name = v.strip_prefix(AGENT_PREFIX).unwrap_or(v);
    agent_name(field, name).map_err(|_| {
        ApiError::bad_request(format!(
            "{field} must be NAME or agent:NAME, NAME being 1 to {MAX_NAME_BYTES} characters of letters, digits, '.', '_' or '-'"
        ))
    })?;
    Ok(name)
}

/// A digits cursor (schema: [`DigitsCursorString`]) as its number.
pub fn digits_cursor(field: &str, v: &str) -> Result<u64, ApiError> {
    let digits = !v.is_empty() && v.len() <= 19 && v.bytes().all(|b| b.is_ascii_digit());
    v.parse::<u64>().ok().filter(|_| digits).ok_or_else(|| {
        ApiError::bad_request(format!(
            "{field} must be the next_cursor of a previous page (1 to 19 digits)"
        ))
    })
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

/// Deserializes an optional integer field that JSON may spell `156` or `156.0` (the same
/// integer for JSON Schema); a fraction or a value out of the field's range is refused.
pub fn lenient_int<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i128>,
{
    use serde::de::Error;
    use serde::Deserialize;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    let int = if let Some(u) = n.as_u64() {
        Some(i128::from(u))
    } else if let Some(i) = n.as_i64() {
        Some(i128::from(i))
    } else {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 2f64.powi(64))
            .map(|f| f as i128)
    };
    // The document calls these `int64`: larger values are out of range everywhere.
    int.filter(|&i| i <= i128::from(i64::MAX))
        .and_then(|i| T::try_from(i).ok())
        .map(Some)
        .ok_or_else(|| D::Error::custom(format!("{n} is not an integer in range")))
}

/// Deserializes an optional nested object into `T`, refusing any other JSON (serde would fill
/// a struct from an array too).
pub fn object_only<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    use serde::de::Error;
    use serde::Deserialize;
    Option::<serde_json::Map<String, serde_json::Value>>::deserialize(d)?
        .map(|m| serde_json::from_value(serde_json::Value::Object(m)).map_err(D::Error::custom))
        .transpose()
}

/// Deserializes a JSON array of numbers as 64-bit floats parsed exactly from their text (the
/// default JSON number parsing may be off by one unit in the last place, which matters at
/// the edge of a range).
pub fn exact_numbers<'de, D>(d: D) -> Result<Vec<f64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    use serde::Deserialize;
    let raw = Box::<serde_json::value::RawValue>::deserialize(d)?;
    let items: Vec<&serde_json::value::RawValue> =
        serde_json::from_str(raw.get()).map_err(D::Error::custom)?;
    items
        .iter()
        .map(|item| {
            let text = item.get();
            let number = text.starts_with(|c: char| c == '-' || c.is_ascii_digit());
            text.parse::<f64>()
                .ok()
                .filter(|_| number)
                .ok_or_else(|| D::Error::custom(format!("{text} is not a number")))
        })
        .collect()
}

/// A sequence number from a query (`int64` in the document): at least 0.
pub fn seq(field: &str, v: Option<i64>) -> Result<Option<u64>, ApiError> {
    v.map(|n| {
        u64::try_from(n).map_err(|_| ApiError::bad_request(format!("{field} must be at least 0")))
    })
    .transpose()
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

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize)]
    struct Ints {
        #[serde(default, deserialize_with = "lenient_int")]
        n: Option<u64>,
        #[serde(default, deserialize_with = "lenient_int")]
        p: Option<i32>,
    }

    #[derive(Deserialize)]
    struct Vector {
        #[serde(deserialize_with = "exact_numbers")]
        v: Vec<f64>,
    }

    fn ints(json: &str) -> Result<(Option<u64>, Option<i32>), serde_json::Error> {
        serde_json::from_str::<Ints>(json).map(|i| (i.n, i.p))
    }

    #[test]
    fn integers_may_be_written_with_a_zero_fraction_but_stay_in_range() {
        assert_eq!(
            ints(r#"{"n": 156.0, "p": -3}"#).unwrap(),
            (Some(156), Some(-3))
        );
        assert_eq!(ints(r#"{"n": null}"#).unwrap(), (None, None));
        assert_eq!(ints("{}").unwrap(), (None, None));
        assert!(ints(r#"{"n": 1.5}"#).is_err());
        assert!(ints(r#"{"n": -1}"#).is_err());
        assert!(ints(r#"{"n": "1"}"#).is_err());
        assert!(ints(r#"{"p": 2147483648}"#).is_err());
        // int64 in the document: nothing above i64::MAX, even for an unsigned field.
        assert!(ints(r#"{"n": 9223372036854775808}"#).is_err());
        assert_eq!(
            ints(r#"{"n": 9223372036854775807}"#).unwrap().0,
            Some(i64::MAX as u64)
        );
    }

    #[test]
    fn vector_numbers_are_parsed_exactly() {
        let max = f64::from(f32::MAX);
        let v: Vector = serde_json::from_str(&format!(r#"{{"v": [{max:e}, -1.5, 0]}}"#)).unwrap();
        assert_eq!(v.v, vec![max, -1.5, 0.0]);
        // Python's shortest spelling of the next float above f32::MAX stays above it.
        let v: Vector = serde_json::from_str(r#"{"v": [-3.402823466385289e+38]}"#).unwrap();
        assert!(v.v[0].abs() > max);
        assert!(serde_json::from_str::<Vector>(r#"{"v": ["1"]}"#).is_err());
        assert!(serde_json::from_str::<Vector>(r#"{"v": [null]}"#).is_err());
        assert!(serde_json::from_str::<Vector>(r#"{"v": 1}"#).is_err());
    }

    #[test]
    fn agent_refs_and_cursors_follow_their_schemas() {
        assert_eq!(agent_ref("a", "agent:bot-1").unwrap(), "bot-1");
        assert_eq!(agent_ref("a", "bot-1").unwrap(), "bot-1");
        for bad in [
            "",
            "agent:",
            "a:b",
            "agent:a:b",
            "bad name",
            &"x".repeat(129),
        ] {
            assert!(agent_ref("a", bad).is_err(), "{bad:?}");
        }
        assert_eq!(digits_cursor("c", "42").unwrap(), 42);
        for bad in ["", "+1", "-1", "1.0", "12345678901234567890"] {
            assert!(digits_cursor("c", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn text_limits_count_characters_and_blank_is_not_given() {
        assert!(text("t", &"é".repeat(512), 512, true).is_ok());
        assert!(text("t", &"é".repeat(513), 512, true).is_err());
        assert!(text("t", " \u{3000}\t", 512, true).is_err());
        assert!(text("t", "", 512, false).is_ok());
    }
}
