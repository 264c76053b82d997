//! The one encoding for everything Conclave persists or sends between nodes.
//!
//! Every encoded value starts with a one-byte format version, so a later release can read what
//! an earlier one wrote and migrate it. The body is postcard (compact, serde-native).

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The format version written by this release.
pub const FORMAT_V1: u8 = 1;

/// Why a value could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The value was empty, so it carries no format version.
    #[error("empty value")]
    Empty,
    /// The value was written by a format this release does not know.
    #[error("unknown format version {0}")]
    UnknownVersion(u8),
    /// The body did not decode.
    #[error("malformed value: {0}")]
    Malformed(#[from] postcard::Error),
}

/// Encodes `value` with the current format version.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // One buffer, sized for a typical row so most values need no regrowth.
    let mut out = Vec::with_capacity(ENCODE_CAPACITY);
    out.push(FORMAT_V1);
    // Serializing into a Vec cannot fail for the plain data types Conclave encodes.
    postcard::to_extend(value, out).expect("postcard encoding of plain data")
}

/// Bytes reserved up front by [`encode`].
const ENCODE_CAPACITY: usize = 128;

/// Decodes a value written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    match version {
        FORMAT_V1 => Ok(postcard::from_bytes(body)?),
        other => Err(CodecError::UnknownVersion(other)),
    }
}

/// Decodes, mapping failure to an `io::Error` (what openraft's storage traits return).
pub fn decode_io<T: DeserializeOwned>(bytes: &[u8]) -> std::io::Result<T> {
    decode(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_unknown_versions() {
        let bytes = encode(&("a".to_string(), 7u64));
        assert_eq!(bytes[0], FORMAT_V1);
        let back: (String, u64) = decode(&bytes).unwrap();
        assert_eq!(back, ("a".to_string(), 7));

        let mut future = bytes.clone();
        future[0] = 9;
        assert!(matches!(
            decode::<(String, u64)>(&future),
            Err(CodecError::UnknownVersion(9))
        ));
        assert!(matches!(decode::<u64>(&[]), Err(CodecError::Empty)));
    }

    #[test]
    fn the_version_byte_is_followed_by_exactly_postcards_bytes_at_any_size() {
        // Values shorter and longer than the reserved buffer: stored bytes must not change.
        for len in [
            0,
            1,
            ENCODE_CAPACITY - 3,
            ENCODE_CAPACITY,
            10 * ENCODE_CAPACITY,
        ] {
            let value = ("x".repeat(len), len as u64, vec![7u8; len / 2]);
            let mut expected = vec![FORMAT_V1];
            expected.extend(postcard::to_allocvec(&value).unwrap());
            assert_eq!(encode(&value), expected, "length {len}");
        }
    }
}
