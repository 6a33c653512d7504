//! A consensus after parsing ([`UncheckedConsensus`]), after its signatures and times are
//! checked ([`VerifiedConsensus`]: the compact listing), and assembled with the listed
//! relays' microdescriptors ([`Consensus`]: the view paths are chosen from). The documents
//! themselves are in [`crate::dir::consensus`].

use rand::{Rng, RngExt};

use crate::codec;
use crate::crypto::{IdentityPublic, RelayId};
use crate::dir::consensus::{
    ConsensusBody, ConsensusEntry, ConsensusError, ListedRelay, SignedConsensus,
    DEFAULT_CONSENSUS_SKEW, MAX_AUTHORITIES, MAX_CONSENSUS_LEN,
};
use crate::dir::microdesc::{Microdesc, MicrodescDigest, MicrodescIndex};
use crate::dir::weights::BandwidthWeights;

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

    /// Joins each listed relay with its microdescriptor, looked up by digest in `indexes`
    /// (the first that holds it). An index keys each microdescriptor by the digest of its
    /// canonical encoding, so a microdescriptor found matches the listed digest without
    /// hashing it again. A relay whose microdescriptor is missing or names another identity
    /// is left out of the assembled view.
    pub fn assemble(self, indexes: &[&MicrodescIndex]) -> Consensus {
        let lookup = |d: &MicrodescDigest| -> Option<&Microdesc> {
            indexes.iter().find_map(|index| index.get(d))
        };
        let relays: Vec<ConsensusEntry> = self
            .body
            .relays
            .iter()
            .filter_map(|l| ConsensusEntry::join(l, lookup(&l.md_digest)?))
            .collect();
        Consensus {
            verified: self,
            relays,
        }
    }

    /// [`Self::assemble`] from one index.
    pub fn assemble_from(self, index: &MicrodescIndex) -> Consensus {
        self.assemble(&[index])
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

    /// The verified, unassembled consensus, without copying it.
    pub fn into_verified(self) -> VerifiedConsensus {
        self.verified
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

    /// Looks a relay of the assembled view up by identity (listed or validated).
    pub fn relay(&self, id: impl Into<RelayId>) -> Option<&ConsensusEntry> {
        let id: RelayId = id.into();
        self.relays
            .binary_search_by(|r| r.identity.cmp(&id))
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
