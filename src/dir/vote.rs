//! Votes: one authority's signed view of the relays for one consensus period.
//!
//! An authority verifies the descriptors relays upload, observes the relays, assigns flags
//! ([`crate::dir::flags::assign_flags`]) and publishes a [`SignedVote`]. Other authorities
//! parse it into an [`UncheckedVote`] and verify it into a [`Vote`], the input of
//! [`crate::dir::compute::compute_consensus`].

use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError, MAX_DOCUMENT_LEN};
use crate::crypto::keys::SIGNATURE_LEN;
use crate::crypto::{IdentityKeypair, IdentityPublic};
use crate::dir::consensus::MAX_RELAYS;
use crate::dir::descriptor::{
    Descriptor, DescriptorError, SignedDescriptor, DEFAULT_DESCRIPTOR_MAX_AGE, MAX_BANDWIDTH,
};
use crate::dir::flags::RelayFlags;
use crate::dir::wire;

/// Domain-separation label of vote signatures.
pub(crate) const VOTE_LABEL: &[u8] = b"allium-vote-v1";
/// Clock skew tolerated when checking the descriptors inside a vote (seconds).
pub(crate) const VOTE_DESCRIPTOR_SKEW: u64 = 10 * 60;

/// Why a vote was refused.
#[derive(Debug, thiserror::Error)]
pub enum VoteError {
    /// Not a canonical encoding.
    #[error("malformed vote: {0}")]
    Codec(#[from] CodecError),
    /// The signer is not one of the configured authorities.
    #[error("vote is signed by {0}, which is not a configured authority")]
    UnknownAuthority(IdentityPublic),
    /// The signature does not verify.
    #[error("vote signature by {0} does not verify")]
    BadSignature(IdentityPublic),
    /// The times are not `valid_after < fresh_until < valid_until`.
    #[error(
        "vote times are not ordered: valid_after {0} < fresh_until {1} < valid_until {2} fails"
    )]
    BadTimes(u64, u64, u64),
    /// The vote's period is over.
    #[error("vote expired at {valid_until} (now {now})")]
    Expired {
        /// End of validity.
        valid_until: u64,
        /// Time checked against.
        now: u64,
    },
    /// An entry's descriptor is invalid at the vote's `valid_after`.
    #[error("vote entry {index}: {source}")]
    Entry {
        /// Position in the vote.
        index: usize,
        /// The problem.
        #[source]
        source: DescriptorError,
    },
    /// An entry's measured bandwidth exceeds the maximum.
    #[error("vote entry {0}: measured bandwidth above the maximum")]
    EntryBandwidth(usize),
    /// Entries are not sorted by identity, or an identity appears twice.
    #[error("vote entries are not sorted strictly by relay identity")]
    NotSorted,
    /// More entries than [`MAX_RELAYS`].
    #[error("vote has {0} entries; at most {MAX_RELAYS} are allowed")]
    TooManyEntries(usize),
}

/// One relay as seen by one authority. Wire form: signed descriptor, flags `u8`,
/// measured bandwidth (`u8` 0 = none, or 1 then `u64`), uptime `u64`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteEntry {
    /// The relay's signed descriptor, exactly as the relay published it.
    pub descriptor: SignedDescriptor,
    /// Flags the authority assigns.
    pub flags: RelayFlags,
    /// The bandwidth this authority measured through the relay, bytes/s; `None` if it has
    /// not measured it (yet). Never the relay's own declaration.
    pub measured: Option<u64>,
    /// Continuous uptime observed by the authority, seconds.
    pub uptime: u64,
}

/// A vote's contents. Wire form: authority `[32]`, valid_after `u64`, fresh_until `u64`,
/// valid_until `u64`, entries (`u64` count ≤ [`MAX_RELAYS`], sorted by relay identity).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteBody {
    /// The voting authority.
    #[serde(with = "wire::identity")]
    pub authority: IdentityPublic,
    /// Start of the period voted for (Unix seconds).
    pub valid_after: u64,
    /// When clients should look for the next consensus.
    pub fresh_until: u64,
    /// End of the period.
    pub valid_until: u64,
    /// The relays, sorted strictly ascending by identity.
    #[serde(deserialize_with = "wire::bounded_vec::<_, VoteEntry, MAX_RELAYS>")]
    pub entries: Vec<VoteEntry>,
}

impl VoteBody {
    /// Sorts the entries by relay identity (parsing each descriptor to learn it), then
    /// encodes and signs the vote with the authority's key.
    pub fn sign(&self, key: &IdentityKeypair) -> Result<SignedVote, VoteError> {
        if key.public() != self.authority {
            return Err(VoteError::UnknownAuthority(key.public()));
        }
        let mut keyed = Vec::with_capacity(self.entries.len());
        for (index, e) in self.entries.iter().enumerate() {
            let id = *e
                .descriptor
                .parse_body()
                .map_err(|source| VoteError::Entry { index, source })?
                .claimed_identity();
            keyed.push((id, e.clone()));
        }
        keyed.sort_by_key(|a| a.0);
        if keyed.windows(2).any(|w| matches!(w, [a, b] if a.0 == b.0)) {
            return Err(VoteError::NotSorted);
        }
        let sorted = VoteBody {
            entries: keyed.into_iter().map(|(_, e)| e).collect(),
            ..self.clone()
        };
        let body = codec::encode(&sorted)?;
        let signature = key.sign(&wire::signed_message(VOTE_LABEL, &body));
        Ok(SignedVote { body, signature })
    }
}

/// A vote as transmitted. Wire form: `body_len u64 | body | signature[64]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedVote {
    #[serde(deserialize_with = "wire::bounded_vec::<_, u8, MAX_DOCUMENT_LEN>")]
    body: Vec<u8>,
    #[serde(with = "wire::fixed")]
    signature: [u8; SIGNATURE_LEN],
}

impl SignedVote {
    /// The canonical encoding.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self)
    }
}

/// A parsed, unverified vote.
#[derive(Debug, Clone)]
pub struct UncheckedVote {
    signed: SignedVote,
    body: VoteBody,
}

/// One verified entry of a [`Vote`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedVoteEntry {
    /// The relay's verified descriptor.
    pub descriptor: Descriptor,
    /// The descriptor as signed (what the consensus computation compares).
    pub signed: SignedDescriptor,
    /// Flags the authority assigned.
    pub flags: RelayFlags,
    /// Bandwidth the authority measured, if it did.
    pub measured: Option<u64>,
    /// Uptime the authority observed.
    pub uptime: u64,
}

/// A verified vote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vote {
    /// The authority that signed it.
    pub authority: IdentityPublic,
    /// Start of the period.
    pub valid_after: u64,
    /// Fresh until.
    pub fresh_until: u64,
    /// End of the period.
    pub valid_until: u64,
    /// Entries, sorted by identity.
    pub entries: Vec<VerifiedVoteEntry>,
}

impl UncheckedVote {
    /// Parses a vote (at most [`MAX_DOCUMENT_LEN`] bytes, canonical).
    pub fn parse(bytes: &[u8]) -> Result<Self, VoteError> {
        let signed: SignedVote = codec::decode(bytes, MAX_DOCUMENT_LEN)?;
        let body: VoteBody = codec::decode(&signed.body, MAX_DOCUMENT_LEN)?;
        Ok(Self { signed, body })
    }

    /// The authority the vote claims to be from (unverified).
    pub fn claimed_authority(&self) -> &IdentityPublic {
        &self.body.authority
    }

    /// Verifies: the signer is in `authorities`; its signature; time order; `now <
    /// valid_until`; entries sorted strictly by identity; and every descriptor verifies at
    /// the vote's `valid_after` (skew [`VOTE_DESCRIPTOR_SKEW`], default max age). Checking
    /// descriptors at the vote's own time rather than `now` makes the result the same on
    /// every authority, which the deterministic consensus computation relies on.
    pub fn verify(self, authorities: &[IdentityPublic], now: u64) -> Result<Vote, VoteError> {
        let b = self.body;
        if !authorities.contains(&b.authority) {
            return Err(VoteError::UnknownAuthority(b.authority));
        }
        b.authority
            .verify(
                &wire::signed_message(VOTE_LABEL, &self.signed.body),
                &self.signed.signature,
            )
            .map_err(|_| VoteError::BadSignature(b.authority))?;
        if !(b.valid_after < b.fresh_until && b.fresh_until < b.valid_until) {
            return Err(VoteError::BadTimes(
                b.valid_after,
                b.fresh_until,
                b.valid_until,
            ));
        }
        if now >= b.valid_until {
            return Err(VoteError::Expired {
                valid_until: b.valid_until,
                now,
            });
        }
        if b.entries.len() > MAX_RELAYS {
            return Err(VoteError::TooManyEntries(b.entries.len()));
        }
        let mut entries: Vec<VerifiedVoteEntry> = Vec::with_capacity(b.entries.len());
        for (index, e) in b.entries.into_iter().enumerate() {
            let descriptor = e
                .descriptor
                .parse_body()
                .and_then(|u| {
                    u.verify_with_max_age(
                        b.valid_after,
                        VOTE_DESCRIPTOR_SKEW,
                        DEFAULT_DESCRIPTOR_MAX_AGE,
                    )
                })
                .map_err(|source| VoteError::Entry { index, source })?;
            if e.measured.is_some_and(|m| m > MAX_BANDWIDTH) {
                return Err(VoteError::EntryBandwidth(index));
            }
            if let Some(prev) = entries.last() {
                if prev.descriptor.identity >= descriptor.identity {
                    return Err(VoteError::NotSorted);
                }
            }
            entries.push(VerifiedVoteEntry {
                descriptor,
                signed: e.descriptor,
                flags: e.flags,
                measured: e.measured,
                uptime: e.uptime,
            });
        }
        Ok(Vote {
            authority: b.authority,
            valid_after: b.valid_after,
            fresh_until: b.fresh_until,
            valid_until: b.valid_until,
            entries,
        })
    }
}
