//! The consensus: the network view the authorities agree on, signed by each of them.
//!
//! Authorities compute the same [`ConsensusBody`] from the votes
//! ([`crate::dir::compute::compute_consensus`]), encode it canonically and each sign the
//! bytes over `"allium-consensus-v1" | body`. Clients parse a [`SignedConsensus`] into an
//! [`UncheckedConsensus`] and accept it ([`UncheckedConsensus::verify`]) only with valid
//! signatures from a strict majority of the authorities they trust, and only while it is
//! valid.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::crypto::keys::{IDENTITY_PUBLIC_LEN, SIGNATURE_LEN};
use crate::crypto::{IdentityKeypair, IdentityPublic, OnionKeyCert, RelayId, VerifiedOnionKey};
use crate::dir::descriptor::{
    check_addrs, check_family, DescriptorError, MAX_ADDRS, MAX_BANDWIDTH, MAX_FAMILY,
};
use crate::dir::flags::RelayFlags;
use crate::dir::microdesc::{Microdesc, MicrodescDigest, MicrodescError, MicrodescIndex};
use crate::dir::policy::ExitPolicy;
use crate::dir::weights::BandwidthWeights;
use crate::dir::wire;

/// Domain-separation label of consensus signatures.
pub const CONSENSUS_LABEL: &[u8] = b"allium-consensus-v1";
/// The consensus format and computation method this code produces and accepts.
/// Version 3: relays are listed compactly, with their microdescriptor's digest.
pub const CONSENSUS_VERSION: u32 = 3;
/// Most relays in a consensus or vote: room for a network of 20,000 relays (Tor has
/// ~7,000), every count still a hard bound.
pub const MAX_RELAYS: usize = 20_000;
/// Largest encoded consensus (the signed form, so also its body): 12 MiB. A compact
/// entry is ~95 bytes (identity 32, microdescriptor digest 32, one address, flags,
/// bandwidth), at most ~250 with every address slot used; votes carry full descriptors
/// (~225 bytes for a non-exit, ~460 for an exit with a default-style policy) and share
/// this bound: 12 MiB is 629 bytes per relay at [`MAX_RELAYS`], so 20,000 relays fit with
/// room for longer policies, families and IPv6 addresses, and nothing a peer sends can
/// make a client hold more.
pub const MAX_CONSENSUS_LEN: usize = 12 * 1024 * 1024;
/// Most authorities (and so signatures) a consensus may name.
pub const MAX_AUTHORITIES: usize = 9;
/// Clock skew tolerated before a consensus's `valid_after` (seconds): a client whose clock
/// is up to 10 minutes behind the network's accepts it. Larger skews, either way, are
/// reported as a wrong local clock (`client/skew.rs`).
pub const DEFAULT_CONSENSUS_SKEW: u64 = 10 * 60;

/// Most time a consensus is still accepted after its `valid_until` (a client clock ahead
/// of the network's): 5 minutes, and at most a twelfth of the consensus's lifetime
/// ([`ConsensusBody::late_grace`]) so a fast test network's consensus expires on time.
/// The price: a replayed consensus stays usable this much longer.
pub const CONSENSUS_LATE_GRACE: u64 = 5 * 60;

/// Why a consensus was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    /// Not a canonical encoding (or over the size bound).
    #[error("malformed consensus: {0}")]
    Codec(#[from] CodecError),
    /// Two signature entries name the same signer.
    #[error("consensus carries two signatures from {0}")]
    DuplicateSigner(String),
    /// More signatures than [`MAX_AUTHORITIES`].
    #[error("consensus carries {0} signatures; at most {MAX_AUTHORITIES} are allowed")]
    TooManySignatures(usize),
    /// No trusted authorities were configured.
    #[error("no trusted authorities configured")]
    NoTrustedAuthorities,
    /// Too few valid signatures from trusted authorities.
    #[error(
        "consensus has valid signatures from {valid} of {trusted} trusted authorities; need {needed}"
    )]
    NotEnoughSignatures {
        /// Distinct trusted authorities with a valid signature.
        valid: usize,
        /// Number of trusted authorities.
        trusted: usize,
        /// Strict majority of `trusted`.
        needed: usize,
    },
    /// The consensus's validity period (plus the allowed skew) is over.
    #[error("consensus expired: valid until {valid_until}, now {now}")]
    Expired {
        /// End of validity.
        valid_until: u64,
        /// Time checked against.
        now: u64,
    },
    /// The consensus is not valid yet (beyond the allowed clock skew).
    #[error("consensus not valid until {valid_after} (now {now}, skew allowance {skew}s)")]
    NotYetValid {
        /// Start of validity.
        valid_after: u64,
        /// Time checked against.
        now: u64,
        /// Allowed skew.
        skew: u64,
    },
    /// Unsupported version.
    #[error("consensus version {0} is not supported (expected {CONSENSUS_VERSION})")]
    BadVersion(u32),
    /// Times not ordered `valid_after < fresh_until < valid_until`.
    #[error("consensus times are not ordered: valid_after {0} < fresh_until {1} < valid_until {2} fails")]
    BadTimes(u64, u64, u64),
    /// Authority list empty, too long or not strictly ascending.
    #[error("consensus authority list is empty, too long or not sorted ascending")]
    BadAuthorities,
    /// Relays not strictly ascending by identity.
    #[error("consensus relays are not sorted strictly by identity")]
    NotSorted,
    /// A relay entry is invalid.
    #[error("consensus relay {index}: {source}")]
    Entry {
        /// Position in the consensus.
        index: usize,
        /// What is wrong.
        #[source]
        source: DescriptorError,
    },
    /// A weight is above the scale.
    #[error("consensus bandwidth weights out of range")]
    BadWeights,
    /// A microdescriptor could not be encoded (computation only).
    #[error("microdescriptor: {0}")]
    Microdesc(#[from] MicrodescError),
    /// Consensus computation needs more votes.
    #[error("{got} votes from configured authorities; need {needed} of {configured}")]
    NotEnoughVotes {
        /// Votes received from configured authorities.
        got: usize,
        /// Strict majority.
        needed: usize,
        /// Configured authorities.
        configured: usize,
    },
    /// Two votes from the same authority were passed to the computation.
    #[error("two votes from authority {0}")]
    DuplicateVote(IdentityPublic),
    /// A vote from an authority outside the configured set.
    #[error("vote from {0}, which is not a configured authority")]
    UnknownAuthority(IdentityPublic),
    /// No validity period is proposed by a strict majority of authorities.
    #[error("no (valid_after, fresh_until, valid_until) is proposed by a majority of authorities")]
    NoTimeMajority,
}

impl ConsensusError {
    /// Whether the consensus was refused only for its time (expired or not yet valid at
    /// our clock): the refusals a wrong local clock causes.
    pub fn is_time(&self) -> bool {
        matches!(self, Self::Expired { .. } | Self::NotYetValid { .. })
    }
}

/// One relay in the consensus. Wire form in field order (see `docs/protocol.md` §6).
/// Identities (the relay's and its family's) are as listed, not validated as keys
/// ([`RelayId`]): [`Self::verified_onion_key`] validates the relay's before use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsensusEntry {
    /// The relay's identity key, as listed.
    #[serde(with = "wire::relay_id")]
    pub identity: RelayId,
    /// The relay's onion-key certificate (verify before each handshake).
    #[serde(with = "wire::cert")]
    pub onion_cert: OnionKeyCert,
    /// Link addresses, preferred first.
    #[serde(deserialize_with = "wire::bounded_vec::<_, SocketAddr, MAX_ADDRS>")]
    pub addrs: Vec<SocketAddr>,
    /// Flags by majority of the votes listing the relay.
    pub flags: RelayFlags,
    /// Selection weight, bytes/s: the low median of the authorities' measurements capped
    /// by the relay's declaration, or a low fixed value while it is unmeasured
    /// ([`crate::dir::compute`]).
    pub bandwidth: u64,
    /// Whether `bandwidth` comes from measurements (false: the unmeasured default).
    pub measured: bool,
    /// The relay's exit policy (TCP).
    pub exit_policy: ExitPolicy,
    /// The relay's UDP exit policy (from its microdescriptor).
    pub udp_policy: ExitPolicy,
    /// Declared family, sorted ascending.
    #[serde(
        serialize_with = "wire::relay_id_list::serialize",
        deserialize_with = "wire::relay_id_list::deserialize::<_, MAX_FAMILY>"
    )]
    pub family: Vec<RelayId>,
}

impl ConsensusEntry {
    /// Checks the entry's bounds and that the certificate names this identity.
    pub fn check(&self) -> Result<(), DescriptorError> {
        check_addrs(&self.addrs)?;
        check_family(&self.identity, &self.family)?;
        if self.bandwidth > MAX_BANDWIDTH {
            return Err(DescriptorError::BandwidthTooHigh(self.bandwidth));
        }
        if self.onion_cert.identity() != &self.identity {
            return Err(DescriptorError::CertIdentityMismatch {
                descriptor: self.identity,
                cert: *self.onion_cert.identity(),
            });
        }
        Ok(())
    }

    /// Verifies the onion-key certificate at `now` for a circuit handshake with this relay:
    /// that the listed identity is a usable ed25519 key (the first time a client looks at
    /// it as a key), the signature, expiry, and that it certifies this entry's identity.
    /// The verified key carries the validated identity.
    pub fn verified_onion_key(&self, now: u64) -> Result<VerifiedOnionKey, DescriptorError> {
        let key = self.onion_cert.verify(now)?;
        if *key.identity() != self.identity {
            return Err(DescriptorError::CertIdentityMismatch {
                descriptor: self.identity,
                cert: key.identity().into(),
            });
        }
        Ok(key)
    }

    /// The listed identity validated as an ed25519 key (what a client checks before it
    /// uses the relay: a consensus may list bytes that are not a usable key only if the
    /// authorities that signed it erred or lied).
    pub fn validated_identity(&self) -> Result<IdentityPublic, crate::crypto::KeyError> {
        self.identity.validate()
    }

    /// Whether every flag of `flags` is set.
    pub fn has(&self, flags: RelayFlags) -> bool {
        self.flags.contains(flags)
    }
}

impl ConsensusEntry {
    /// The relay's microdescriptor: what the compact consensus leaves out.
    pub fn microdesc(&self) -> Microdesc {
        Microdesc {
            onion_cert: self.onion_cert.clone(),
            exit_policy: self.exit_policy.clone(),
            udp_policy: self.udp_policy.clone(),
            family: self.family.clone(),
        }
    }

    /// Splits the entry into its compact listing and its microdescriptor.
    pub fn split(&self) -> Result<(ListedRelay, Microdesc), MicrodescError> {
        let md = self.microdesc();
        let listed = ListedRelay {
            identity: self.identity,
            md_digest: md.digest()?,
            addrs: self.addrs.clone(),
            flags: self.flags,
            bandwidth: self.bandwidth,
            measured: self.measured,
        };
        Ok((listed, md))
    }

    /// Joins a listing and a microdescriptor. `None` unless the microdescriptor hashes to
    /// the listed digest and names the listed identity, and the joined entry is valid.
    pub fn assemble(listed: &ListedRelay, md: &Microdesc) -> Option<ConsensusEntry> {
        if md.digest().ok()? != listed.md_digest {
            return None;
        }
        Self::join(listed, md)
    }

    /// [`Self::assemble`] for a microdescriptor already known to hash to
    /// `listed.md_digest` (found by that digest in a [`MicrodescIndex`], which keys each
    /// microdescriptor by the digest of its canonical encoding): not hashed again.
    pub(crate) fn join(listed: &ListedRelay, md: &Microdesc) -> Option<ConsensusEntry> {
        if md.identity() != &listed.identity {
            return None;
        }
        let entry = ConsensusEntry {
            identity: listed.identity,
            onion_cert: md.onion_cert.clone(),
            addrs: listed.addrs.clone(),
            flags: listed.flags,
            bandwidth: listed.bandwidth,
            measured: listed.measured,
            exit_policy: md.exit_policy.clone(),
            udp_policy: md.udp_policy.clone(),
            family: md.family.clone(),
        };
        entry.check().ok()?;
        Some(entry)
    }
}

/// Splits full entries into the compact listings of a [`ConsensusBody`] and the index of
/// their microdescriptors (what authorities and tests build a consensus from).
pub fn split_entries(
    entries: &[ConsensusEntry],
) -> Result<(Vec<ListedRelay>, MicrodescIndex), MicrodescError> {
    let mut listed = Vec::with_capacity(entries.len());
    let mut index = MicrodescIndex::new();
    for e in entries {
        let (l, md) = e.split()?;
        index.insert(md)?;
        listed.push(l);
    }
    Ok((listed, index))
}

/// One relay as the signed consensus lists it: what path selection needs beyond the
/// microdescriptor, and the digest of that microdescriptor. Wire form in field order
/// (see `docs/protocol.md` §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedRelay {
    /// The relay's identity key as listed: not validated when a client decodes the
    /// consensus (authorities validated it when they accepted the relay's descriptor; a
    /// client validates it when it uses the relay).
    #[serde(with = "wire::relay_id")]
    pub identity: RelayId,
    /// SHA-256 of the relay's microdescriptor's canonical encoding
    /// ([`crate::dir::microdesc`]).
    #[serde(with = "wire::fixed")]
    pub md_digest: MicrodescDigest,
    /// Link addresses, preferred first.
    #[serde(deserialize_with = "wire::bounded_vec::<_, SocketAddr, MAX_ADDRS>")]
    pub addrs: Vec<SocketAddr>,
    /// Flags by majority of the votes listing the relay.
    pub flags: RelayFlags,
    /// Selection weight, bytes/s (see [`ConsensusEntry::bandwidth`]).
    pub bandwidth: u64,
    /// Whether `bandwidth` comes from measurements.
    pub measured: bool,
}

impl ListedRelay {
    /// Checks the listing's bounds.
    pub fn check(&self) -> Result<(), DescriptorError> {
        check_addrs(&self.addrs)?;
        if self.bandwidth > MAX_BANDWIDTH {
            return Err(DescriptorError::BandwidthTooHigh(self.bandwidth));
        }
        Ok(())
    }

    /// Whether every flag of `flags` is set.
    pub fn has(&self, flags: RelayFlags) -> bool {
        self.flags.contains(flags)
    }
}

/// The agreed network view. Wire form in field order (see `docs/protocol.md` §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsensusBody {
    /// [`CONSENSUS_VERSION`].
    pub version: u32,
    /// Start of validity (Unix seconds).
    pub valid_after: u64,
    /// Clients should fetch a newer consensus after this.
    pub fresh_until: u64,
    /// End of validity.
    pub valid_until: u64,
    /// The configured authority set the consensus was computed for, sorted ascending.
    #[serde(
        serialize_with = "wire::identity_list::serialize",
        deserialize_with = "wire::identity_list::deserialize::<_, MAX_AUTHORITIES>"
    )]
    pub authorities: Vec<IdentityPublic>,
    /// Relays, sorted strictly ascending by identity.
    #[serde(deserialize_with = "wire::bounded_vec::<_, ListedRelay, MAX_RELAYS>")]
    pub relays: Vec<ListedRelay>,
    /// Per-position bandwidth weights.
    pub weights: BandwidthWeights,
}

impl ConsensusBody {
    /// Checks every structural rule: version, time order, authority list, relay order and
    /// bounds, weights.
    pub fn check(&self) -> Result<(), ConsensusError> {
        if self.version != CONSENSUS_VERSION {
            return Err(ConsensusError::BadVersion(self.version));
        }
        if !(self.valid_after < self.fresh_until && self.fresh_until < self.valid_until) {
            return Err(ConsensusError::BadTimes(
                self.valid_after,
                self.fresh_until,
                self.valid_until,
            ));
        }
        if self.authorities.is_empty()
            || self.authorities.len() > MAX_AUTHORITIES
            || !wire::strictly_ascending(&self.authorities)
        {
            return Err(ConsensusError::BadAuthorities);
        }
        if self.relays.len() > MAX_RELAYS
            || !self
                .relays
                .windows(2)
                .all(|w| matches!(w, [a, b] if a.identity < b.identity))
        {
            return Err(ConsensusError::NotSorted);
        }
        for (index, r) in self.relays.iter().enumerate() {
            r.check()
                .map_err(|source| ConsensusError::Entry { index, source })?;
        }
        if !self.weights.is_valid() {
            return Err(ConsensusError::BadWeights);
        }
        Ok(())
    }

    /// How long after `valid_until` this consensus is still accepted:
    /// [`CONSENSUS_LATE_GRACE`], at most a twelfth of its lifetime.
    pub fn late_grace(&self) -> u64 {
        CONSENSUS_LATE_GRACE.min(self.valid_until.saturating_sub(self.valid_after) / 12)
    }

    /// Checks the body and encodes it, ready for signing.
    pub fn to_signed(&self) -> Result<SignedConsensus, ConsensusError> {
        self.check()?;
        Ok(SignedConsensus {
            body: codec::encode(self)?,
            signatures: Vec::new(),
        })
    }
}

/// One authority's signature on a consensus body. Wire form: identity `[32]` (raw bytes,
/// so a signature by an unknown or malformed key can be skipped rather than failing the
/// parse), signature `[64]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthoritySignature {
    /// The signer's identity key bytes.
    #[serde(with = "wire::fixed")]
    pub identity: [u8; IDENTITY_PUBLIC_LEN],
    /// Signature over `CONSENSUS_LABEL | body`.
    #[serde(with = "wire::fixed")]
    pub signature: [u8; SIGNATURE_LEN],
}

/// A consensus as transmitted: the body bytes and up to [`MAX_AUTHORITIES`] signatures
/// (no two by the same signer). Wire form: `body_len u64 | body | sig_count u64 |
/// signatures`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedConsensus {
    #[serde(
        serialize_with = "wire::byte_vec::serialize",
        deserialize_with = "wire::byte_vec::deserialize::<_, MAX_CONSENSUS_LEN>"
    )]
    pub(crate) body: Vec<u8>,
    #[serde(deserialize_with = "wire::bounded_vec::<_, AuthoritySignature, MAX_AUTHORITIES>")]
    pub(crate) signatures: Vec<AuthoritySignature>,
}

impl SignedConsensus {
    /// Body bytes and signatures put together (a consensus rebuilt from a diff).
    pub(crate) fn from_parts(body: Vec<u8>, signatures: Vec<AuthoritySignature>) -> Self {
        SignedConsensus { body, signatures }
    }

    /// The body bytes every signature covers.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The signatures carried.
    pub fn signatures(&self) -> &[AuthoritySignature] {
        &self.signatures
    }

    /// The message authorities sign.
    pub(crate) fn message(&self) -> Vec<u8> {
        wire::signed_message(CONSENSUS_LABEL, &self.body)
    }

    /// Signs the body with an authority key and adds (or replaces) that authority's
    /// signature. Returns the detached signature, for sending to the other authorities.
    pub fn sign(&mut self, key: &IdentityKeypair) -> AuthoritySignature {
        let sig = AuthoritySignature {
            identity: *key.public().as_bytes(),
            signature: key.sign(&self.message()),
        };
        self.put(sig);
        sig
    }

    fn put(&mut self, sig: AuthoritySignature) {
        self.signatures.retain(|s| s.identity != sig.identity);
        self.signatures.push(sig);
        self.signatures.sort_by_key(|a| a.identity);
    }

    /// Adds another authority's detached signature if it verifies over this body (a bad
    /// one is refused so it cannot displace a good one). Returns whether it was added.
    pub fn add_signature(&mut self, sig: AuthoritySignature) -> bool {
        let ok = IdentityPublic::from_bytes(&sig.identity)
            .and_then(|id| id.verify(&self.message(), &sig.signature))
            .is_ok();
        if ok
            && (self.signatures.len() < MAX_AUTHORITIES
                || self.signatures.iter().any(|s| s.identity == sig.identity))
        {
            self.put(sig);
            return true;
        }
        false
    }

    /// The canonical encoding.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_microdescriptor_cache_holds_one_per_listable_relay() {
        assert_eq!(
            crate::dir::microdesc::MAX_CACHED_MICRODESCS,
            super::MAX_RELAYS
        );
    }
}
