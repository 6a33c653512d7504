//! Relay descriptors: what a relay says about itself, signed by its identity key.
//!
//! A relay publishes a [`SignedDescriptor`]: the canonical encoding of a [`Descriptor`]
//! plus an ed25519 signature by the descriptor's own identity key over
//! `"allium-descriptor-v1" | body`. Receivers parse the bytes into an
//! [`UncheckedDescriptor`] and only get at the [`Descriptor`] through
//! [`UncheckedDescriptor::verify`], which checks the signature, the onion-key certificate,
//! the publication time and every field bound.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::crypto::keys::SIGNATURE_LEN;
use crate::crypto::{CertError, IdentityKeypair, IdentityPublic, OnionKeyCert, RelayId};
use crate::dir::policy::ExitPolicy;
use crate::dir::wire;

/// Domain-separation label of descriptor signatures.
pub const DESCRIPTOR_LABEL: &[u8] = b"allium-descriptor-v1";
/// Largest encoded [`SignedDescriptor`] accepted or produced.
pub const MAX_DESCRIPTOR_LEN: usize = 8 * 1024;
/// Most addresses a relay may advertise.
pub const MAX_ADDRS: usize = 16;
/// Most family members a relay may declare.
pub const MAX_FAMILY: usize = 32;
/// Longest software version string, in bytes.
pub const MAX_VERSION_LEN: usize = 64;
/// Largest bandwidth (bytes/s) any directory document may state: 1 TiB/s. Bounding it keeps
/// sums over 10,000 relays and weight products far from overflow.
pub const MAX_BANDWIDTH: u64 = 1 << 40;
/// Default oldest acceptable descriptor: relays republish well within a day.
pub const DEFAULT_DESCRIPTOR_MAX_AGE: u64 = 24 * 60 * 60;

/// Why a descriptor was refused.
#[derive(Debug, thiserror::Error)]
pub enum DescriptorError {
    /// The bytes are not a canonical encoding (or exceed the size bound).
    #[error("malformed descriptor: {0}")]
    Codec(#[from] CodecError),
    /// The encoded signed descriptor would exceed [`MAX_DESCRIPTOR_LEN`].
    #[error("descriptor is {len} bytes encoded; at most {MAX_DESCRIPTOR_LEN} are allowed")]
    TooLarge {
        /// Encoded length.
        len: usize,
    },
    /// The signing key is not the descriptor's identity.
    #[error("descriptor identity {descriptor} does not match the signing key {key}")]
    KeyMismatch {
        /// Identity in the descriptor.
        descriptor: IdentityPublic,
        /// Identity of the key used.
        key: IdentityPublic,
    },
    /// No address, or more than [`MAX_ADDRS`].
    #[error("descriptor has {0} addresses; need 1 to {MAX_ADDRS}")]
    AddressCount(usize),
    /// An address is not usable as a relay address.
    #[error("descriptor address {addr} is invalid: {reason}")]
    BadAddress {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: &'static str,
    },
    /// More family members than [`MAX_FAMILY`].
    #[error("descriptor declares {0} family members; at most {MAX_FAMILY} are allowed")]
    FamilyTooLarge(usize),
    /// Family members must be sorted ascending without duplicates (one encoding per set).
    #[error("descriptor family is not sorted ascending without duplicates")]
    FamilyNotCanonical,
    /// A relay listed itself as family.
    #[error("descriptor lists its own identity as family")]
    FamilyContainsSelf,
    /// Version string too long or not printable ASCII.
    #[error("descriptor software version is invalid: {0}")]
    BadVersion(&'static str),
    /// Bandwidth above [`MAX_BANDWIDTH`].
    #[error("descriptor bandwidth {0} exceeds the maximum {MAX_BANDWIDTH}")]
    BandwidthTooHigh(u64),
    /// The descriptor signature does not verify under its identity key.
    #[error("descriptor signature does not verify under identity {0}")]
    BadSignature(IdentityPublic),
    /// The onion-key certificate is invalid or expired.
    #[error("descriptor onion-key certificate: {0}")]
    Cert(#[from] CertError),
    /// The onion-key certificate certifies a different identity.
    #[error("onion-key certificate is for identity {cert}, not the descriptor's {descriptor}")]
    CertIdentityMismatch {
        /// Identity in the descriptor.
        descriptor: RelayId,
        /// Identity in the certificate.
        cert: RelayId,
    },
    /// Published further in the future than the allowed clock skew.
    #[error("descriptor published at {published}, more than {max_skew}s after now ({now})")]
    FutureDated {
        /// Publication time.
        published: u64,
        /// Time checked against.
        now: u64,
        /// Allowed skew.
        max_skew: u64,
    },
    /// Published too long ago.
    #[error("descriptor published at {published} is older than {max_age}s (now {now})")]
    TooOld {
        /// Publication time.
        published: u64,
        /// Time checked against.
        now: u64,
        /// Maximum age.
        max_age: u64,
    },
}

/// What a relay states about itself. Fields are public so a relay can build its own; a
/// received descriptor is only obtainable through [`UncheckedDescriptor::verify`].
///
/// Wire order is the field order below (see `docs/protocol.md` §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// The relay's ed25519 identity key; it signs the descriptor.
    #[serde(with = "wire::identity")]
    pub identity: IdentityPublic,
    /// Certificate binding the relay's current onion key to `identity`.
    #[serde(with = "wire::cert")]
    pub onion_cert: OnionKeyCert,
    /// Where the relay accepts link connections, preferred first (1 to [`MAX_ADDRS`]).
    #[serde(deserialize_with = "wire::bounded_vec::<_, SocketAddr, MAX_ADDRS>")]
    pub addrs: Vec<SocketAddr>,
    /// Whether the relay offers to exit at all; if false its policy is ignored.
    pub exit: bool,
    /// Destinations the relay will connect to as an exit (TCP streams).
    pub exit_policy: ExitPolicy,
    /// Destinations the relay will send UDP to as an exit; [`ExitPolicy::reject_all`]
    /// unless its operator opted in. Like `exit_policy`, ignored unless `exit`.
    pub udp_policy: ExitPolicy,
    /// Bandwidth the relay is willing to carry, bytes per second (≤ [`MAX_BANDWIDTH`]).
    pub bandwidth: u64,
    /// Identities the relay declares as run by the same operator, sorted ascending.
    #[serde(
        serialize_with = "wire::identity_list::serialize",
        deserialize_with = "wire::identity_list::deserialize::<_, MAX_FAMILY>"
    )]
    pub family: Vec<IdentityPublic>,
    /// Software name and version, printable ASCII, at most [`MAX_VERSION_LEN`] bytes.
    pub version: String,
    /// Publication time, Unix seconds.
    pub published: u64,
}

/// Checks a relay address: non-zero port, a unicast address, no IPv6 flow label or scope
/// (the wire form cannot carry them).
pub(crate) fn check_addrs(addrs: &[SocketAddr]) -> Result<(), DescriptorError> {
    if addrs.is_empty() || addrs.len() > MAX_ADDRS {
        return Err(DescriptorError::AddressCount(addrs.len()));
    }
    let mut seen = BTreeSet::new();
    for addr in addrs {
        let bad = |reason| DescriptorError::BadAddress {
            addr: *addr,
            reason,
        };
        if addr.port() == 0 {
            return Err(bad("port 0"));
        }
        let ip = addr.ip();
        if ip.is_unspecified() {
            return Err(bad("unspecified address"));
        }
        if ip.is_multicast() || ip == IpAddr::V4(std::net::Ipv4Addr::BROADCAST) {
            return Err(bad("multicast or broadcast address"));
        }
        if let SocketAddr::V6(v6) = addr {
            if v6.ip().to_ipv4_mapped().is_some() {
                return Err(bad("IPv4-mapped IPv6 address; use the IPv4 form"));
            }
            if v6.flowinfo() != 0 || v6.scope_id() != 0 {
                return Err(bad("IPv6 flow label or scope id set"));
            }
        }
        if !seen.insert(*addr) {
            return Err(bad("listed twice"));
        }
    }
    Ok(())
}

/// Checks a family list: bounded, strictly ascending, not containing `me`.
pub(crate) fn check_family<T: Ord + PartialEq<T>>(
    me: &T,
    family: &[T],
) -> Result<(), DescriptorError> {
    if family.len() > MAX_FAMILY {
        return Err(DescriptorError::FamilyTooLarge(family.len()));
    }
    if !wire::strictly_ascending(family) {
        return Err(DescriptorError::FamilyNotCanonical);
    }
    if family.contains(me) {
        return Err(DescriptorError::FamilyContainsSelf);
    }
    Ok(())
}

impl Descriptor {
    /// Checks every field bound that does not need a clock or a signature.
    pub fn check_fields(&self) -> Result<(), DescriptorError> {
        check_addrs(&self.addrs)?;
        check_family(&self.identity, &self.family)?;
        if self.version.len() > MAX_VERSION_LEN {
            return Err(DescriptorError::BadVersion("longer than 64 bytes"));
        }
        if !self.version.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            return Err(DescriptorError::BadVersion("not printable ASCII"));
        }
        if self.bandwidth > MAX_BANDWIDTH {
            return Err(DescriptorError::BandwidthTooHigh(self.bandwidth));
        }
        if *self.onion_cert.identity() != self.identity {
            return Err(DescriptorError::CertIdentityMismatch {
                descriptor: self.identity.into(),
                cert: *self.onion_cert.identity(),
            });
        }
        Ok(())
    }

    /// Checks the fields, encodes the descriptor and signs it with `key`, which must be the
    /// descriptor's identity.
    pub fn sign(&self, key: &IdentityKeypair) -> Result<SignedDescriptor, DescriptorError> {
        if key.public() != self.identity {
            return Err(DescriptorError::KeyMismatch {
                descriptor: self.identity,
                key: key.public(),
            });
        }
        self.check_fields()?;
        let body = codec::encode(self)?;
        let signature = key.sign(&wire::signed_message(DESCRIPTOR_LABEL, &body));
        let signed = SignedDescriptor { body, signature };
        let len = signed.to_bytes()?.len();
        if len > MAX_DESCRIPTOR_LEN {
            return Err(DescriptorError::TooLarge { len });
        }
        Ok(signed)
    }
}

/// A descriptor as transmitted: the canonical body bytes and the identity's signature.
///
/// Wire form: `body_len u64 | body | signature[64]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SignedDescriptor {
    #[serde(deserialize_with = "wire::bounded_vec::<_, u8, MAX_DESCRIPTOR_LEN>")]
    body: Vec<u8>,
    #[serde(with = "wire::fixed")]
    signature: [u8; SIGNATURE_LEN],
}

impl SignedDescriptor {
    /// The canonical encoding, as published.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self)
    }

    /// The signed body bytes (the canonical encoding of a [`Descriptor`]).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The identity key's signature over `DESCRIPTOR_LABEL | body`.
    pub fn signature(&self) -> &[u8; SIGNATURE_LEN] {
        &self.signature
    }

    /// Parses the body (without verifying anything).
    pub fn parse_body(&self) -> Result<UncheckedDescriptor, DescriptorError> {
        let descriptor = codec::decode::<Descriptor>(&self.body, MAX_DESCRIPTOR_LEN)?;
        Ok(UncheckedDescriptor {
            signed: self.clone(),
            descriptor,
        })
    }
}

/// A parsed but unverified descriptor. Nothing in it may be trusted until
/// [`Self::verify`] succeeds.
#[derive(Debug, Clone)]
pub struct UncheckedDescriptor {
    signed: SignedDescriptor,
    descriptor: Descriptor,
}

impl UncheckedDescriptor {
    /// Parses a published descriptor (at most [`MAX_DESCRIPTOR_LEN`] bytes, canonical).
    pub fn parse(bytes: &[u8]) -> Result<Self, DescriptorError> {
        codec::decode::<SignedDescriptor>(bytes, MAX_DESCRIPTOR_LEN)?.parse_body()
    }

    /// The identity the descriptor *claims*; only for indexing and error messages.
    pub fn claimed_identity(&self) -> &IdentityPublic {
        &self.descriptor.identity
    }

    /// The claimed publication time (unverified).
    pub fn claimed_published(&self) -> u64 {
        self.descriptor.published
    }

    /// The signed form, e.g. for an authority to include in its vote after verifying.
    pub fn signed(&self) -> &SignedDescriptor {
        &self.signed
    }

    /// Verifies with the default maximum age ([`DEFAULT_DESCRIPTOR_MAX_AGE`]).
    pub fn verify(self, now: u64, max_skew: u64) -> Result<Descriptor, DescriptorError> {
        self.verify_with_max_age(now, max_skew, DEFAULT_DESCRIPTOR_MAX_AGE)
    }

    /// Checks, in order: field bounds; the signature by the embedded identity; the onion
    /// certificate's signature, expiry (at `now`) and identity; `published ≤ now + max_skew`;
    /// `now ≤ published + max_age`.
    pub fn verify_with_max_age(
        self,
        now: u64,
        max_skew: u64,
        max_age: u64,
    ) -> Result<Descriptor, DescriptorError> {
        let d = self.descriptor;
        d.check_fields()?;
        d.identity
            .verify(
                &wire::signed_message(DESCRIPTOR_LABEL, &self.signed.body),
                &self.signed.signature,
            )
            .map_err(|_| DescriptorError::BadSignature(d.identity))?;
        let key = d.onion_cert.verify(now)?;
        if key.identity() != &d.identity {
            return Err(DescriptorError::CertIdentityMismatch {
                descriptor: d.identity.into(),
                cert: key.identity().into(),
            });
        }
        if d.published > now.saturating_add(max_skew) {
            return Err(DescriptorError::FutureDated {
                published: d.published,
                now,
                max_skew,
            });
        }
        if now > d.published.saturating_add(max_age) {
            return Err(DescriptorError::TooOld {
                published: d.published,
                now,
                max_age,
            });
        }
        Ok(d)
    }
}
