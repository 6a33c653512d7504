//! The consensus: the network view the authorities agree on, signed by each of them.
//!
//! Authorities compute the same [`ConsensusBody`] from the votes
//! ([`crate::dir::compute::compute_consensus`]), encode it canonically and each sign the
//! bytes over `"allium-consensus-v1" | body`. Clients parse a [`SignedConsensus`] into an
//! [`UncheckedConsensus`] and accept it ([`UncheckedConsensus::verify`]) only with valid
//! signatures from a strict majority of the authorities they trust, and only while it is
//! valid.

use std::net::SocketAddr;

use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::crypto::keys::{IDENTITY_PUBLIC_LEN, SIGNATURE_LEN};
use crate::crypto::{IdentityKeypair, IdentityPublic, OnionKeyCert, VerifiedOnionKey};
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
/// (~215 bytes for a non-exit, ~450 for an exit with a default-style policy) and share
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsensusEntry {
    /// The relay's identity key.
    #[serde(with = "wire::identity")]
    pub identity: IdentityPublic,
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
    /// The relay's exit policy.
    pub exit_policy: ExitPolicy,
    /// Declared family, sorted ascending.
    #[serde(
        serialize_with = "wire::identity_list::serialize",
        deserialize_with = "wire::identity_list::deserialize::<_, MAX_FAMILY>"
    )]
    pub family: Vec<IdentityPublic>,
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
    /// signature, expiry, and that it certifies this entry's identity.
    pub fn verified_onion_key(&self, now: u64) -> Result<VerifiedOnionKey, DescriptorError> {
        let key = self.onion_cert.verify(now)?;
        if key.identity() != &self.identity {
            return Err(DescriptorError::CertIdentityMismatch {
                descriptor: self.identity,
                cert: *key.identity(),
            });
        }
        Ok(key)
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
        if md.digest().ok()? != listed.md_digest || md.identity() != &listed.identity {
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
    /// The relay's identity key.
    #[serde(with = "wire::identity")]
    pub identity: IdentityPublic,
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
    #[serde(deserialize_with = "wire::bounded_vec::<_, u8, MAX_CONSENSUS_LEN>")]
    body: Vec<u8>,
    #[serde(deserialize_with = "wire::bounded_vec::<_, AuthoritySignature, MAX_AUTHORITIES>")]
    signatures: Vec<AuthoritySignature>,
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
    fn message(&self) -> Vec<u8> {
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

/// A parsed, unverified consensus.
#[derive(Debug, Clone)]
pub struct UncheckedConsensus {
    signed: SignedConsensus,
    body: ConsensusBody,
}

impl UncheckedConsensus {
    /// Parses a consensus: canonical encoding, at most [`MAX_CONSENSUS_LEN`] bytes, at most
    /// [`MAX_AUTHORITIES`] signatures, no duplicate signer.
    pub fn parse(bytes: &[u8]) -> Result<Self, ConsensusError> {
        let signed: SignedConsensus = codec::decode(bytes, MAX_CONSENSUS_LEN)?;
        Self::from_signed(signed)
    }

    /// As [`Self::parse`], from an already decoded [`SignedConsensus`].
    pub fn from_signed(signed: SignedConsensus) -> Result<Self, ConsensusError> {
        let body: ConsensusBody = codec::decode(&signed.body, MAX_CONSENSUS_LEN)?;
        Self::from_signed_body(signed, body)
    }

    /// As [`Self::from_signed`], with the body already decoded: `signed.body` must be the
    /// canonical encoding of `body` (a diff's result is, by construction).
    pub(crate) fn from_signed_body(
        signed: SignedConsensus,
        body: ConsensusBody,
    ) -> Result<Self, ConsensusError> {
        if signed.signatures.len() > MAX_AUTHORITIES {
            return Err(ConsensusError::TooManySignatures(signed.signatures.len()));
        }
        for (i, s) in signed.signatures.iter().enumerate() {
            if signed
                .signatures
                .iter()
                .take(i)
                .any(|p| p.identity == s.identity)
            {
                return Err(ConsensusError::DuplicateSigner(crate::bytes::hex::encode(
                    &s.identity,
                )));
            }
        }
        Ok(Self { signed, body })
    }

    /// The claimed validity period, unverified (e.g. to decide whether fetching is needed).
    pub fn claimed_valid_until(&self) -> u64 {
        self.body.valid_until
    }

    /// The claimed start of validity, unverified.
    pub fn claimed_valid_after(&self) -> u64 {
        self.body.valid_after
    }

    /// Verifies with the default skew ([`DEFAULT_CONSENSUS_SKEW`]).
    pub fn verify(
        self,
        trusted: &[IdentityPublic],
        now: u64,
    ) -> Result<VerifiedConsensus, ConsensusError> {
        self.verify_with_skew(trusted, now, DEFAULT_CONSENSUS_SKEW)
    }

    /// Checks, in order: signatures (valid ones from distinct trusted keys must be a strict
    /// majority of the distinct trusted keys; unknown signers are ignored); the body's
    /// structure; `now < valid_until + late_grace`; `now + skew ≥ valid_after`.
    pub fn verify_with_skew(
        self,
        trusted: &[IdentityPublic],
        now: u64,
        skew: u64,
    ) -> Result<VerifiedConsensus, ConsensusError> {
        let mut trusted: Vec<IdentityPublic> = trusted.to_vec();
        trusted.sort();
        trusted.dedup();
        if trusted.is_empty() {
            return Err(ConsensusError::NoTrustedAuthorities);
        }
        let needed = trusted.len() / 2 + 1;
        let message = self.signed.message();
        // Signers are distinct (checked at parse), so counting entries counts authorities.
        let signers: Vec<IdentityPublic> = trusted
            .iter()
            .filter(|t| {
                self.signed
                    .signatures
                    .iter()
                    .find(|s| &s.identity == t.as_bytes())
                    .is_some_and(|s| t.verify(&message, &s.signature).is_ok())
            })
            .copied()
            .collect();
        if signers.len() < needed {
            return Err(ConsensusError::NotEnoughSignatures {
                valid: signers.len(),
                trusted: trusted.len(),
                needed,
            });
        }
        let b = &self.body;
        b.check()?;
        if now >= b.valid_until.saturating_add(b.late_grace()) {
            return Err(ConsensusError::Expired {
                valid_until: b.valid_until,
                now,
            });
        }
        if now.saturating_add(skew) < b.valid_after {
            return Err(ConsensusError::NotYetValid {
                valid_after: b.valid_after,
                now,
                skew,
            });
        }
        Ok(VerifiedConsensus {
            body: self.body,
            signed: self.signed,
            signers,
        })
    }
}

/// A verified consensus whose relays are not yet joined with their microdescriptors:
/// enough to know who is listed; [`Self::assemble`] gives the view paths are built from.
#[derive(Debug, Clone)]
pub struct VerifiedConsensus {
    body: ConsensusBody,
    signed: SignedConsensus,
    signers: Vec<IdentityPublic>,
}

impl VerifiedConsensus {
    /// The compact relay listings, sorted by identity.
    pub fn listed(&self) -> &[ListedRelay] {
        &self.body.relays
    }

    /// The digests of the listed microdescriptors for which `have` is false, in listing
    /// order (what to fetch).
    pub fn missing(&self, have: impl Fn(&MicrodescDigest) -> bool) -> Vec<MicrodescDigest> {
        let mut missing: Vec<MicrodescDigest> = self
            .body
            .relays
            .iter()
            .map(|r| r.md_digest)
            .filter(|d| !have(d))
            .collect();
        // Two listings may name one digest; a request naming a digest twice is refused.
        missing.sort_unstable();
        missing.dedup();
        missing
    }

    /// Joins each listed relay with its microdescriptor from `lookup` (by digest). A relay
    /// whose microdescriptor is missing, does not match, or names another identity is
    /// left out of the assembled view.
    pub fn assemble<'a>(
        self,
        lookup: impl Fn(&MicrodescDigest) -> Option<&'a Microdesc>,
    ) -> Consensus {
        let relays: Vec<ConsensusEntry> = self
            .body
            .relays
            .iter()
            .filter_map(|l| ConsensusEntry::assemble(l, lookup(&l.md_digest)?))
            .collect();
        Consensus {
            verified: self,
            relays,
        }
    }

    /// [`Self::assemble`] from an index.
    pub fn assemble_from(self, index: &MicrodescIndex) -> Consensus {
        self.assemble(|d| index.get(d))
    }

    /// The verified contents.
    pub fn body(&self) -> &ConsensusBody {
        &self.body
    }

    /// The signed form, for caching and serving to others.
    pub fn signed(&self) -> &SignedConsensus {
        &self.signed
    }

    /// The trusted authorities whose signatures verified.
    pub fn signers(&self) -> &[IdentityPublic] {
        &self.signers
    }

    /// Start of validity.
    pub fn valid_after(&self) -> u64 {
        self.body.valid_after
    }

    /// End of freshness.
    pub fn fresh_until(&self) -> u64 {
        self.body.fresh_until
    }

    /// End of validity.
    pub fn valid_until(&self) -> u64 {
        self.body.valid_until
    }

    /// Whether `now` is in `[valid_after, fresh_until)`: no newer consensus is expected yet.
    pub fn is_fresh(&self, now: u64) -> bool {
        (self.body.valid_after..self.body.fresh_until).contains(&now)
    }

    /// Whether the consensus is still valid at `now` (`now < valid_until`).
    pub fn is_live(&self, now: u64) -> bool {
        now < self.body.valid_until
    }

    /// Whether a client may still use the consensus at `now`: before `valid_until` plus its
    /// late grace ([`ConsensusBody::late_grace`]), as [`UncheckedConsensus::verify`]
    /// accepts it.
    pub fn is_usable(&self, now: u64) -> bool {
        now < self.body.valid_until.saturating_add(self.body.late_grace())
    }

    /// A client's refetch time: uniform in `[fresh_until, fresh_until + 7/8·(valid_until −
    /// fresh_until))`, so clients spread their fetches over the period yet leave time to
    /// retry before the consensus expires (Tor uses a similar window).
    pub fn refetch_time<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        let span = (self.body.valid_until - self.body.fresh_until) / 8 * 7;
        self.body.fresh_until + rng.random_range(0..span.max(1))
    }

    /// A cache's (relay's) refetch time: uniform in the first half of the same window, so
    /// caches have the next consensus before clients ask.
    pub fn cache_refetch_time<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        let span = (self.body.valid_until - self.body.fresh_until) / 2;
        self.body.fresh_until + rng.random_range(0..span.max(1))
    }
}

/// A verified consensus assembled with its microdescriptors: the view of the network that
/// path selection, guards and the onion-service ring use. Relays whose microdescriptor was
/// not available are not in it.
#[derive(Debug, Clone)]
pub struct Consensus {
    verified: VerifiedConsensus,
    /// Full entries, sorted by identity (a subsequence of the listing).
    relays: Vec<ConsensusEntry>,
}

impl Consensus {
    /// The verified, unassembled consensus.
    pub fn verified(&self) -> &VerifiedConsensus {
        &self.verified
    }

    /// Relays listed but left out of the assembled view (no matching microdescriptor).
    pub fn missing_microdescs(&self) -> usize {
        self.verified
            .body
            .relays
            .len()
            .saturating_sub(self.relays.len())
    }

    /// The microdescriptors of the assembled view, indexed by digest.
    pub fn microdescs(&self) -> MicrodescIndex {
        self.relays.iter().map(ConsensusEntry::microdesc).collect()
    }
}

impl Consensus {
    /// The verified contents.
    pub fn body(&self) -> &ConsensusBody {
        &self.verified.body
    }

    /// The signed form, for caching and serving to others.
    pub fn signed(&self) -> &SignedConsensus {
        &self.verified.signed
    }

    /// The trusted authorities whose signatures verified.
    pub fn signers(&self) -> &[IdentityPublic] {
        &self.verified.signers
    }

    /// Relays of the assembled view, sorted by identity.
    pub fn relays(&self) -> &[ConsensusEntry] {
        &self.relays
    }

    /// Looks a relay of the assembled view up by identity.
    pub fn relay(&self, id: &IdentityPublic) -> Option<&ConsensusEntry> {
        self.relays
            .binary_search_by(|r| r.identity.cmp(id))
            .ok()
            .and_then(|i| self.relays.get(i))
    }

    /// The bandwidth weights.
    pub fn weights(&self) -> &BandwidthWeights {
        &self.verified.body.weights
    }

    /// Start of validity.
    pub fn valid_after(&self) -> u64 {
        self.verified.body.valid_after
    }

    /// End of freshness.
    pub fn fresh_until(&self) -> u64 {
        self.verified.body.fresh_until
    }

    /// End of validity.
    pub fn valid_until(&self) -> u64 {
        self.verified.body.valid_until
    }

    /// Whether `now` is in `[valid_after, fresh_until)`: no newer consensus is expected yet.
    pub fn is_fresh(&self, now: u64) -> bool {
        (self.verified.body.valid_after..self.verified.body.fresh_until).contains(&now)
    }

    /// Whether the consensus is still valid at `now` (`now < valid_until`).
    pub fn is_live(&self, now: u64) -> bool {
        self.verified.is_live(now)
    }

    /// See [`VerifiedConsensus::is_usable`].
    pub fn is_usable(&self, now: u64) -> bool {
        self.verified.is_usable(now)
    }

    /// See [`VerifiedConsensus::refetch_time`].
    pub fn refetch_time<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        self.verified.refetch_time(rng)
    }

    /// See [`VerifiedConsensus::cache_refetch_time`].
    pub fn cache_refetch_time<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        self.verified.cache_refetch_time(rng)
    }
}
