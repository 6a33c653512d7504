//! The record of when the current onion key was made, kept beside it in the data directory
//! (`onion_key.created`) so a restarted relay keeps its rotation schedule.
//!
//! Format (exactly 48 bytes): `"ALLIUMT1"(8) | onion_public(32) | created_unix(8, big-endian)`.
//! The public key names the key the time belongs to: a record left over from a key that
//! was deleted or replaced does not apply to the key now in `onion_key`.

use crate::bytes::Reader;
use crate::crypto::keys::{OnionPublic, ONION_PUBLIC_LEN};

/// Magic bytes at the start of the record (format version 1).
pub const ONION_KEY_META_MAGIC: &[u8; 8] = b"ALLIUMT1";
/// Exact length of the record.
pub const ONION_KEY_META_LEN: usize = ONION_KEY_META_MAGIC.len() + ONION_PUBLIC_LEN + 8;

/// When the onion key `onion` was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnionKeyMeta {
    /// The onion key this record is about.
    pub onion: OnionPublic,
    /// When it was made (Unix seconds on the relay's clock).
    pub created_unix: u64,
}

/// The bytes are not an onion-key record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OnionKeyMetaError {
    /// Not exactly [`ONION_KEY_META_LEN`] bytes.
    #[error("wrong length: expected {ONION_KEY_META_LEN} bytes, found {0}")]
    BadLength(usize),
    /// Does not start with [`ONION_KEY_META_MAGIC`].
    #[error("not an allium onion-key record (bad magic)")]
    BadMagic,
}

impl OnionKeyMeta {
    /// Parses exactly one record; anything else is an error.
    pub fn parse(bytes: &[u8]) -> Result<Self, OnionKeyMetaError> {
        let bad_length = OnionKeyMetaError::BadLength(bytes.len());
        if bytes.len() != ONION_KEY_META_LEN {
            return Err(bad_length);
        }
        let mut r = Reader::new(bytes);
        if r.array_ref::<8>("magic").map_err(|_| bad_length)? != ONION_KEY_META_MAGIC {
            return Err(OnionKeyMetaError::BadMagic);
        }
        let onion = OnionPublic::from_bytes(
            r.array::<ONION_PUBLIC_LEN>("onion key")
                .map_err(|_| bad_length)?,
        );
        let created_unix = r.u64("created").map_err(|_| bad_length)?;
        r.finish().map_err(|_| bad_length)?;
        Ok(OnionKeyMeta {
            onion,
            created_unix,
        })
    }

    /// The record's bytes.
    pub fn encode(&self) -> [u8; ONION_KEY_META_LEN] {
        let mut out = [0u8; ONION_KEY_META_LEN];
        let created = self.created_unix.to_be_bytes();
        let fields = ONION_KEY_META_MAGIC
            .iter()
            .chain(self.onion.as_bytes())
            .chain(&created);
        for (o, b) in out.iter_mut().zip(fields) {
            *o = *b;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_strictness() {
        let meta = OnionKeyMeta {
            onion: OnionPublic::from_bytes([7u8; 32]),
            created_unix: 1_800_000_000,
        };
        let bytes = meta.encode();
        assert_eq!(OnionKeyMeta::parse(&bytes), Ok(meta));
        assert_eq!(
            OnionKeyMeta::parse(&bytes[..47]),
            Err(OnionKeyMetaError::BadLength(47))
        );
        let mut long = bytes.to_vec();
        long.push(0);
        assert_eq!(
            OnionKeyMeta::parse(&long),
            Err(OnionKeyMetaError::BadLength(49))
        );
        let mut bad = bytes;
        bad[0] ^= 1;
        assert_eq!(OnionKeyMeta::parse(&bad), Err(OnionKeyMetaError::BadMagic));
    }
}
