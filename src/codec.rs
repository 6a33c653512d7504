//! The one place that knows about bincode: canonical binary encoding of signed documents.
//!
//! Directory documents (descriptors, consensus) are signed over their encoded bytes, so an
//! encoding must be unique. `decode` therefore accepts input only if it decodes completely
//! *and* re-encodes to exactly the same bytes; any slack in the format (trailing bytes,
//! alternative encodings) is refused. bincode is unmaintained (2.0.x is pinned; 3.0.0 is a
//! deliberate compile error), so nothing outside this module names it: swapping the codec
//! means rewriting this file only.

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

/// Largest document the codec will encode or decode. Bounds every allocation bincode can
/// make on behalf of an attacker-chosen length prefix. 16 MiB: an authority's vote for
/// 20,000 relays (each entry a signed descriptor of ~350–600 bytes plus its observations,
/// under 10 MB) fits; each document type passes its own tighter bound where it has one
/// (a consensus: `MAX_CONSENSUS_LEN`, 12 MiB).
pub const MAX_DOCUMENT_LEN: usize = 16 << 20;

/// Fixed-width big-endian integers: one encoding per value, independent of magnitude.
fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_big_endian()
        .with_fixed_int_encoding()
        .with_limit::<MAX_DOCUMENT_LEN>()
}

/// Why a document could not be encoded or decoded.
#[derive(Debug, Error)]
pub enum CodecError {
    /// The input exceeds the caller's bound (or [`MAX_DOCUMENT_LEN`]).
    #[error("document is {len} bytes, more than the {max}-byte limit")]
    TooLarge {
        /// Input length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The bytes are not a valid encoding.
    #[error("malformed document: {0}")]
    Malformed(String),
    /// The bytes decode but have trailing data.
    #[error("{0} trailing byte(s) after the document")]
    TrailingBytes(usize),
    /// The bytes decode, but are not the canonical encoding of what they decode to.
    #[error("non-canonical encoding")]
    NonCanonical,
    /// The value could not be encoded (too large, or unsupported by the format).
    #[error("cannot encode document: {0}")]
    Encode(String),
}

/// Encodes `value` canonically.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes a canonical encoding of at most `max_len` bytes.
pub fn decode<T: Serialize + DeserializeOwned>(
    bytes: &[u8],
    max_len: usize,
) -> Result<T, CodecError> {
    let max = max_len.min(MAX_DOCUMENT_LEN);
    if bytes.len() > max {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    // Borrowing decode: a byte string (a consensus body) is taken from the input only if
    // the input holds that many bytes, so a count that lies allocates nothing; the owned
    // decoder would allocate the declared count (up to the limit) before reading it.
    let (value, used): (T, usize) = bincode::serde::borrow_decode_from_slice(bytes, config())
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::TrailingBytes(bytes.len().saturating_sub(used)));
    }
    if encode(&value)? != bytes {
        return Err(CodecError::NonCanonical);
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Doc {
        n: u32,
        name: String,
        flag: bool,
        items: Vec<u16>,
    }

    fn doc() -> Doc {
        Doc {
            n: 7,
            name: "relay".into(),
            flag: true,
            items: vec![1, 2, 3],
        }
    }

    #[test]
    fn round_trip() {
        let bytes = encode(&doc()).unwrap();
        assert_eq!(decode::<Doc>(&bytes, 1024).unwrap(), doc());
    }

    #[test]
    fn refuses_trailing_bytes() {
        let mut bytes = encode(&doc()).unwrap();
        bytes.push(0);
        assert!(matches!(
            decode::<Doc>(&bytes, 1024),
            Err(CodecError::TrailingBytes(1))
        ));
    }

    #[test]
    fn refuses_non_canonical_bool() {
        let mut bytes = encode(&doc()).unwrap();
        // The bool sits after n (4 bytes) and the string (8-byte length + 5 bytes).
        assert_eq!(bytes[17], 1);
        bytes[17] = 2;
        assert!(decode::<Doc>(&bytes, 1024).is_err());
    }

    #[test]
    fn refuses_oversized_input_and_huge_length_prefix() {
        let bytes = encode(&doc()).unwrap();
        assert!(matches!(
            decode::<Doc>(&bytes, 4),
            Err(CodecError::TooLarge { .. })
        ));
        // A string length of 2^60 must fail without allocating.
        let mut evil = bytes.clone();
        evil[4..12].copy_from_slice(&(1u64 << 60).to_be_bytes());
        assert!(decode::<Doc>(&evil, 1024).is_err());
    }

    #[test]
    fn truncations_never_decode() {
        let bytes = encode(&doc()).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode::<Doc>(&bytes[..cut], 1024).is_err(), "cut at {cut}");
        }
    }
}
