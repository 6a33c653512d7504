//! serde adapters for the directory documents' wire form.
//!
//! Every directory document is encoded by [`crate::codec`] (bincode 2, fixed-width
//! big-endian integers). serde has no impls for byte arrays longer than 32, nor for the
//! validated key types of [`crate::crypto`], so the adapters here give each of them one
//! fixed encoding:
//!
//! * `[u8; N]` is a serde tuple of `N` bytes, which the codec writes as exactly `N` raw
//!   bytes with no length prefix;
//! * an [`IdentityPublic`] is its 32 bytes, validated (non-weak ed25519 point) on decode;
//! * a [`RelayId`] (a listed identity) is its 32 bytes, *not* validated on decode: a
//!   client validates a listed identity only when it uses that relay;
//! * an [`OnionKeyCert`] is its 136-byte encoding, parsed (not yet verified) on decode;
//! * lists are `u64` count then elements, and the count is checked against the list's
//!   bound *before* any element is decoded, so an attacker-chosen count never drives an
//!   allocation beyond the bound.

use core::fmt;
use core::marker::PhantomData;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};

use crate::crypto::cert::ONION_CERT_LEN;
use crate::crypto::{IdentityPublic, OnionKeyCert, RelayId};

/// `[u8; N]` as `N` raw bytes (a serde tuple).
pub(crate) mod fixed {
    use super::*;

    /// Writes the `N` bytes as a tuple.
    pub(crate) fn serialize<S: Serializer, const N: usize>(
        bytes: &[u8; N],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(N)?;
        for b in bytes {
            tuple.serialize_element(b)?;
        }
        tuple.end()
    }

    struct FixedVisitor<const N: usize>;

    impl<'de, const N: usize> Visitor<'de> for FixedVisitor<N> {
        type Value = [u8; N];

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{N} bytes")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; N], A::Error> {
            let mut out = [0u8; N];
            for (i, slot) in out.iter_mut().enumerate() {
                *slot = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(i, &self))?;
            }
            Ok(out)
        }
    }

    /// Reads exactly `N` bytes.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        deserializer: D,
    ) -> Result<[u8; N], D::Error> {
        deserializer.deserialize_tuple(N, FixedVisitor::<N>)
    }
}

/// An [`IdentityPublic`] as its 32 bytes; decoding validates the key.
pub(crate) mod identity {
    use super::*;

    /// Writes the 32 key bytes.
    pub(crate) fn serialize<S: Serializer>(
        id: &IdentityPublic,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        fixed::serialize(id.as_bytes(), serializer)
    }

    /// Reads 32 bytes and refuses anything that is not a usable ed25519 key.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<IdentityPublic, D::Error> {
        let bytes: [u8; 32] = fixed::deserialize(deserializer)?;
        IdentityPublic::from_bytes(&bytes).map_err(de::Error::custom)
    }
}

/// A [`RelayId`] as its 32 bytes; decoding does not validate the key.
pub(crate) mod relay_id {
    use super::*;

    /// Writes the 32 key bytes.
    pub(crate) fn serialize<S: Serializer>(id: &RelayId, serializer: S) -> Result<S::Ok, S::Error> {
        fixed::serialize(id.as_bytes(), serializer)
    }

    /// Reads 32 bytes.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<RelayId, D::Error> {
        fixed::deserialize(deserializer).map(RelayId::from_bytes)
    }
}

/// An [`OnionKeyCert`] as its 136-byte encoding; decoding parses but does not verify it.
pub(crate) mod cert {
    use super::*;

    /// Writes the 136-byte certificate.
    pub(crate) fn serialize<S: Serializer>(
        cert: &OnionKeyCert,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let bytes = cert.to_bytes().map_err(serde::ser::Error::custom)?;
        fixed::serialize(&bytes, serializer)
    }

    /// Reads 136 bytes and parses them as a certificate.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<OnionKeyCert, D::Error> {
        let bytes: [u8; ONION_CERT_LEN] = fixed::deserialize(deserializer)?;
        OnionKeyCert::from_bytes(&bytes).map_err(de::Error::custom)
    }
}

/// A validated identity key that serde can encode: the element type of identity lists.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct WireId(#[serde(with = "identity")] pub(crate) IdentityPublic);

/// A byte list of at most `MAX` bytes, encoded as any `list<u8>` is (`count u64` then the
/// bytes) but handed to the codec as one slice: a consensus body (~1 MB at 10,000 relays)
/// is not decoded, nor re-encoded for the canonical check, one byte at a time.
pub(crate) mod byte_vec {
    use super::*;

    /// Writes the count and the bytes.
    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    struct BytesVisitor<const MAX: usize>;

    impl<const MAX: usize> BytesVisitor<MAX> {
        fn bounded<E: de::Error>(&self, len: usize) -> Result<(), E> {
            if len > MAX {
                return Err(E::invalid_length(len, self));
            }
            Ok(())
        }
    }

    impl<'de, const MAX: usize> Visitor<'de> for BytesVisitor<MAX> {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "at most {MAX} bytes")
        }

        fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Vec<u8>, E> {
            self.bounded(v.len())?;
            Ok(v.to_vec())
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            self.bounded(v.len())?;
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            self.bounded(v.len())?;
            Ok(v)
        }
    }

    /// Reads at most `MAX` bytes. The codec decodes by borrowing from the slice it holds
    /// whole (`codec::decode`), so the bytes are taken from the input only if it holds
    /// the declared count, then checked against `MAX`, then copied: a count that lies
    /// allocates nothing.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>, const MAX: usize>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_bytes(BytesVisitor::<MAX>)
    }
}

/// A listed identity that serde can encode: the element type of listed-identity lists.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct WireRelayId(#[serde(with = "relay_id")] pub(crate) RelayId);

/// Visitor for a list whose element count must not exceed `MAX`.
struct BoundedVisitor<T, const MAX: usize>(PhantomData<T>);

/// Most elements reserved up front for a list, whatever count it declares.
const PREALLOCATE_MAX: usize = 1024;

impl<'de, T: Deserialize<'de>, const MAX: usize> Visitor<'de> for BoundedVisitor<T, MAX> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a list of at most {MAX} elements")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        // The codec reports the declared count up front; refuse it before allocating.
        let declared = seq.size_hint().unwrap_or(0);
        if declared > MAX {
            return Err(de::Error::invalid_length(declared, &self));
        }
        // The declared count is only a claim: a few bytes may declare MAX elements and
        // then end. Reserve a bounded amount; the vector grows as elements really decode.
        let mut out = Vec::with_capacity(declared.min(PREALLOCATE_MAX));
        while let Some(item) = seq.next_element()? {
            if out.len() == MAX {
                return Err(de::Error::invalid_length(MAX + 1, &self));
            }
            out.push(item);
        }
        Ok(out)
    }
}

/// Decodes a list of at most `MAX` elements (use with `deserialize_with`).
pub(crate) fn bounded_vec<'de, D, T, const MAX: usize>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    deserializer.deserialize_seq(BoundedVisitor::<T, MAX>(PhantomData))
}

/// A list of identity keys: encoded as a list of 32-byte keys, each validated on decode.
pub(crate) mod identity_list {
    use super::*;
    use serde::ser::SerializeSeq;

    /// Writes the count and then each key's 32 bytes.
    pub(crate) fn serialize<S: Serializer>(
        ids: &[IdentityPublic],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(ids.len()))?;
        for id in ids {
            seq.serialize_element(&WireId(*id))?;
        }
        seq.end()
    }

    /// Reads at most `MAX` keys.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>, const MAX: usize>(
        deserializer: D,
    ) -> Result<Vec<IdentityPublic>, D::Error> {
        let ids: Vec<WireId> = bounded_vec::<D, WireId, MAX>(deserializer)?;
        Ok(ids.into_iter().map(|w| w.0).collect())
    }
}

/// A list of listed identities: a list of 32-byte keys, not validated on decode.
pub(crate) mod relay_id_list {
    use super::*;
    use serde::ser::SerializeSeq;

    /// Writes the count and then each key's 32 bytes.
    pub(crate) fn serialize<S: Serializer>(
        ids: &[RelayId],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(ids.len()))?;
        for id in ids {
            seq.serialize_element(&WireRelayId(*id))?;
        }
        seq.end()
    }

    /// Reads at most `MAX` keys.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>, const MAX: usize>(
        deserializer: D,
    ) -> Result<Vec<RelayId>, D::Error> {
        let ids: Vec<WireRelayId> = bounded_vec::<D, WireRelayId, MAX>(deserializer)?;
        Ok(ids.into_iter().map(|w| w.0).collect())
    }
}

/// Whether `items` is sorted strictly ascending (hence also free of duplicates).
pub(crate) fn strictly_ascending<T: Ord>(items: &[T]) -> bool {
    items.windows(2).all(|w| matches!(w, [a, b] if a < b))
}

/// The message an identity key signs for a document: `label | body`. Labels are distinct
/// and none is a prefix of another, so a signature for one document type can never verify
/// as another.
pub(crate) fn signed_message(label: &[u8], body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(label.len() + body.len());
    msg.extend_from_slice(label);
    msg.extend_from_slice(body);
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct AsList {
        #[serde(deserialize_with = "bounded_vec::<_, u8, 64>")]
        bytes: Vec<u8>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct AsSlice {
        #[serde(
            serialize_with = "byte_vec::serialize",
            deserialize_with = "byte_vec::deserialize::<_, 64>"
        )]
        bytes: Vec<u8>,
    }

    #[test]
    fn byte_vec_is_the_list_encoding_and_bounded() {
        for len in [0usize, 1, 7, 64] {
            let bytes: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let list = codec::encode(&AsList {
                bytes: bytes.clone(),
            })
            .unwrap();
            let slice = codec::encode(&AsSlice {
                bytes: bytes.clone(),
            })
            .unwrap();
            assert_eq!(list, slice);
            assert_eq!(codec::decode::<AsSlice>(&list, 1024).unwrap().bytes, bytes);
        }
        let long = codec::encode(&AsList { bytes: vec![1; 65] }).unwrap();
        assert!(codec::decode::<AsSlice>(&long, 1024).is_err());
        // A count beyond the input fails without allocating it.
        let mut lying = codec::encode(&AsList { bytes: vec![1; 8] }).unwrap();
        lying[..8].copy_from_slice(&(1u64 << 60).to_be_bytes());
        assert!(codec::decode::<AsSlice>(&lying, 1024).is_err());
        lying[..8].copy_from_slice(&60u64.to_be_bytes());
        assert!(codec::decode::<AsSlice>(&lying, 1024).is_err());
    }
}
