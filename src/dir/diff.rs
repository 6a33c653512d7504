//! Consensus diffs: what changed from a recent consensus (the base, named by the SHA-256
//! digest of its signed body) to the current one (`docs/protocol.md` §6.18).
//!
//! A diff carries the new header fields, the identities removed, the entries added or
//! changed (whole entries), the new signatures, and the digest of the body it must produce.
//! Applying it rebuilds the new body from the base, re-encodes it canonically and checks
//! the digest; the caller then verifies the result exactly as a fully fetched consensus
//! ([`UncheckedConsensus::verify`]), so a diff can at worst fail, never produce a document
//! the authorities did not sign. Entries are touched only through their `identity` and
//! whole-entry encoding and equality, so the entry type is [`DiffEntry`] alone.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec::{self, CodecError};
use crate::crypto::{IdentityPublic, RelayId};
use crate::dir::compress::{decompress, DecompressError};
use crate::dir::consensus::{
    AuthoritySignature, ConsensusBody, ConsensusError, ListedRelay, SignedConsensus,
    MAX_AUTHORITIES, MAX_CONSENSUS_LEN, MAX_RELAYS,
};
use crate::dir::verified_consensus::UncheckedConsensus;
use crate::dir::weights::BandwidthWeights;
use crate::dir::wire;

/// The element type of the consensus's relay list, which diffs carry whole.
pub type DiffEntry = ListedRelay;

/// The diff format this code produces and accepts.
pub const DIFF_VERSION: u32 = 1;

/// Most bytes an encoded diff may have: no more than the document it rebuilds.
pub const MAX_DIFF_LEN: usize = MAX_CONSENSUS_LEN;

/// Bytes of the truncated entry digests a server keeps per past consensus to compute
/// diffs from it. A collision (two versions of one relay's entry with equal digests) would
/// only leave a change out of a diff, which the result digest then refuses.
pub const ENTRY_DIGEST_LEN: usize = 16;

/// SHA-256 of a consensus's signed body: how diffs name their base and their result.
pub fn body_digest(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

/// Why a diff was refused.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// Not a canonical encoding (or over the size bound).
    #[error("malformed consensus diff: {0}")]
    Codec(#[from] CodecError),
    /// A diff format this code does not know.
    #[error("consensus diff version {0} is not supported (expected {DIFF_VERSION})")]
    BadVersion(u32),
    /// The removed identities or the changed entries are not strictly ascending.
    #[error("consensus diff lists are not sorted strictly by identity")]
    NotSorted,
    /// The diff starts from another consensus than the one it is applied to.
    #[error("consensus diff is from another base consensus")]
    WrongBase,
    /// A removed identity is not in the base, or is also changed.
    #[error("consensus diff removes a relay the base does not list, or also changes it")]
    BadRemoval,
    /// A changed entry equals the base's (a diff lists only real changes).
    #[error("consensus diff lists an unchanged entry")]
    Unchanged,
    /// The result would list more than [`MAX_RELAYS`] relays.
    #[error("consensus diff result lists too many relays")]
    TooManyRelays,
    /// The rebuilt body does not have the announced digest.
    #[error("consensus diff does not produce the announced document")]
    WrongResult,
    /// The rebuilt consensus is refused (duplicate signers, signatures, validity).
    #[error("consensus rebuilt from a diff is refused: {0}")]
    Consensus(#[from] ConsensusError),
    /// The compressed diff does not decompress within [`MAX_DIFF_LEN`].
    #[error("compressed consensus diff refused: {0}")]
    Decompress(#[from] DecompressError),
    /// The rebuilt consensus is older than its base (a roll-back).
    #[error("consensus diff leads to an older consensus than its base")]
    Older,
}

/// Decompresses (within [`MAX_DIFF_LEN`]), parses and applies a compressed diff to a
/// verified consensus: its signed body bytes `base_bytes` and their decoding `base` (from a
/// [`crate::dir::Consensus`] or [`crate::dir::VerifiedConsensus`]). The result still has
/// to be verified.
pub fn apply_compressed(
    compressed: &[u8],
    base_bytes: &[u8],
    base: &ConsensusBody,
) -> Result<UncheckedConsensus, DiffError> {
    let bytes = decompress(compressed, MAX_DIFF_LEN)?;
    ConsensusDiff::parse(&bytes)?.apply(base_bytes, base)
}

/// A diff as transmitted (canonical codec encoding, fields in this order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsensusDiff {
    /// [`DIFF_VERSION`].
    pub diff_version: u32,
    /// [`body_digest`] of the base consensus.
    #[serde(with = "wire::fixed")]
    pub base: [u8; 32],
    /// [`body_digest`] of the consensus the diff produces.
    #[serde(with = "wire::fixed")]
    pub result: [u8; 32],
    /// The new body's `version`.
    pub version: u32,
    /// The new body's `valid_after`.
    pub valid_after: u64,
    /// The new body's `fresh_until`.
    pub fresh_until: u64,
    /// The new body's `valid_until`.
    pub valid_until: u64,
    /// The new body's authority list.
    #[serde(
        serialize_with = "wire::identity_list::serialize",
        deserialize_with = "wire::identity_list::deserialize::<_, MAX_AUTHORITIES>"
    )]
    pub authorities: Vec<IdentityPublic>,
    /// Relays of the base that the new body does not list, strictly ascending.
    #[serde(
        serialize_with = "wire::relay_id_list::serialize",
        deserialize_with = "wire::relay_id_list::deserialize::<_, MAX_RELAYS>"
    )]
    pub removed: Vec<RelayId>,
    /// Entries of the new body that are absent from the base or differ from it, strictly
    /// ascending by identity.
    #[serde(deserialize_with = "wire::bounded_vec::<_, DiffEntry, MAX_RELAYS>")]
    pub changed: Vec<DiffEntry>,
    /// The new body's weights.
    pub weights: BandwidthWeights,
    /// The new consensus's signatures.
    #[serde(deserialize_with = "wire::bounded_vec::<_, AuthoritySignature, MAX_AUTHORITIES>")]
    pub signatures: Vec<AuthoritySignature>,
}

/// A past consensus as a server keeps it to compute diffs from: its digest and, per relay
/// (ascending by identity), a truncated digest of the encoded entry. Far smaller than the
/// document, so a server can keep a day of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffBase {
    /// [`body_digest`] of the consensus.
    pub digest: [u8; 32],
    entries: Vec<(RelayId, [u8; ENTRY_DIGEST_LEN])>,
}

fn entry_digest(e: &DiffEntry) -> Result<[u8; ENTRY_DIGEST_LEN], CodecError> {
    let full: [u8; 32] = Sha256::digest(codec::encode(e)?).into();
    let mut out = [0u8; ENTRY_DIGEST_LEN];
    out.copy_from_slice(
        full.get(..ENTRY_DIGEST_LEN)
            .unwrap_or(&[0; ENTRY_DIGEST_LEN]),
    );
    Ok(out)
}

impl DiffBase {
    /// The diff base of a consensus given its signed body bytes and their decoding.
    pub fn new(body_bytes: &[u8], body: &ConsensusBody) -> Result<Self, CodecError> {
        let entries = body
            .relays
            .iter()
            .map(|e| Ok((e.identity, entry_digest(e)?)))
            .collect::<Result<Vec<_>, CodecError>>()?;
        Ok(DiffBase {
            digest: body_digest(body_bytes),
            entries,
        })
    }

    /// The diff from this base to `new` (its signed form and decoded body).
    pub fn diff_to(
        &self,
        new: &SignedConsensus,
        new_body: &ConsensusBody,
    ) -> Result<ConsensusDiff, CodecError> {
        let mut removed = Vec::new();
        let mut changed = Vec::new();
        let mut old = self.entries.iter().peekable();
        for e in &new_body.relays {
            while let Some((id, _)) = old.next_if(|(id, _)| *id < e.identity) {
                removed.push(*id);
            }
            match old.next_if(|(id, _)| *id == e.identity) {
                Some((_, d)) if *d == entry_digest(e)? => {}
                _ => changed.push(e.clone()),
            }
        }
        removed.extend(old.map(|(id, _)| *id));
        Ok(ConsensusDiff {
            diff_version: DIFF_VERSION,
            base: self.digest,
            result: body_digest(new.body()),
            version: new_body.version,
            valid_after: new_body.valid_after,
            fresh_until: new_body.fresh_until,
            valid_until: new_body.valid_until,
            authorities: new_body.authorities.clone(),
            removed,
            changed,
            weights: new_body.weights,
            signatures: new.signatures().to_vec(),
        })
    }
}

impl ConsensusDiff {
    /// The diff from `base` to `new`, each given as signed form and decoded body.
    pub fn between(
        base: &SignedConsensus,
        base_body: &ConsensusBody,
        new: &SignedConsensus,
        new_body: &ConsensusBody,
    ) -> Result<Self, CodecError> {
        DiffBase::new(base.body(), base_body)?.diff_to(new, new_body)
    }

    /// Parses a diff strictly: canonical encoding of at most [`MAX_DIFF_LEN`] bytes, known
    /// version, lists strictly ascending (so without duplicates) and bounded.
    pub fn parse(bytes: &[u8]) -> Result<Self, DiffError> {
        let diff: ConsensusDiff = codec::decode(bytes, MAX_DIFF_LEN)?;
        if diff.diff_version != DIFF_VERSION {
            return Err(DiffError::BadVersion(diff.diff_version));
        }
        if !wire::strictly_ascending(&diff.removed)
            || !diff
                .changed
                .windows(2)
                .all(|w| matches!(w, [a, b] if a.identity < b.identity))
        {
            return Err(DiffError::NotSorted);
        }
        Ok(diff)
    }

    /// The canonical encoding.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self)
    }

    /// Applies the diff to a base consensus (its signed body bytes and their decoding,
    /// e.g. from a verified [`crate::dir::Consensus`]). Refuses a diff from another base,
    /// one that removes an unlisted relay, lists an unchanged entry, or whose result does
    /// not have the announced digest. The result still has to be verified.
    pub fn apply(
        &self,
        base_bytes: &[u8],
        base: &ConsensusBody,
    ) -> Result<UncheckedConsensus, DiffError> {
        if body_digest(base_bytes) != self.base {
            return Err(DiffError::WrongBase);
        }
        let relays = merge(&base.relays, &self.removed, &self.changed)?;
        let body = ConsensusBody {
            version: self.version,
            valid_after: self.valid_after,
            fresh_until: self.fresh_until,
            valid_until: self.valid_until,
            authorities: self.authorities.clone(),
            relays,
            weights: self.weights,
        };
        let bytes = codec::encode(&body)?;
        if bytes.len() > MAX_CONSENSUS_LEN || body_digest(&bytes) != self.result {
            return Err(DiffError::WrongResult);
        }
        let signed = SignedConsensus::from_parts(bytes, self.signatures.clone());
        Ok(UncheckedConsensus::from_signed_body(signed, body)?)
    }
}

/// The base's entries without `removed`, with `changed` put in (replacing or added), in
/// identity order. Every removed identity must be in the base and not changed; a changed
/// entry must differ from the base's.
fn merge(
    base: &[DiffEntry],
    removed: &[RelayId],
    changed: &[DiffEntry],
) -> Result<Vec<DiffEntry>, DiffError> {
    // Changed entries mostly replace base ones, so the result's size is known only after
    // the merge; it holds at most base + changed (each bounded by MAX_RELAYS) entries.
    let mut out = Vec::with_capacity((base.len() + changed.len()).min(MAX_RELAYS));
    let mut removed = removed.iter().peekable();
    let mut changed = changed.iter().peekable();
    for e in base {
        while let Some(c) = changed.next_if(|c| c.identity < e.identity) {
            out.push(c.clone());
        }
        if removed.next_if(|r| **r < e.identity).is_some() {
            return Err(DiffError::BadRemoval);
        }
        let gone = removed.next_if(|r| **r == e.identity).is_some();
        match changed.next_if(|c| c.identity == e.identity) {
            Some(_) if gone => return Err(DiffError::BadRemoval),
            Some(c) if c == e => return Err(DiffError::Unchanged),
            Some(c) => out.push(c.clone()),
            None if gone => {}
            None => out.push(e.clone()),
        }
    }
    if removed.next().is_some() {
        return Err(DiffError::BadRemoval);
    }
    out.extend(changed.cloned());
    if out.len() > MAX_RELAYS {
        return Err(DiffError::TooManyRelays);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::IdentityKeypair;
    use crate::dir::RelayFlags;

    fn entry(n: u64, md_digest: &[u8; 32]) -> DiffEntry {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&n.to_be_bytes());
        DiffEntry {
            identity: IdentityKeypair::from_secret_bytes(&seed).public().into(),
            md_digest: *md_digest,
            addrs: vec![std::net::SocketAddr::from(([10, 0, 0, 1], 9001))],
            flags: RelayFlags::RUNNING,
            bandwidth: 1000,
            measured: true,
        }
    }

    /// A full-size consensus with a few percent of its entries changed merges (the bound
    /// applies to the result, not to base + changed), and one relay more is refused.
    #[test]
    fn merge_bounds_the_result_not_the_changes() {
        let cert = [8u8; 32];
        let mut base: Vec<DiffEntry> = (0..MAX_RELAYS as u64).map(|n| entry(n, &cert)).collect();
        base.sort_by_key(|e| e.identity);
        let changed: Vec<DiffEntry> = base
            .iter()
            .step_by(20)
            .map(|e| DiffEntry {
                bandwidth: 2000,
                ..e.clone()
            })
            .collect();
        let out = merge(&base, &[], &changed).unwrap();
        assert_eq!(out.len(), MAX_RELAYS);
        let extra = entry(MAX_RELAYS as u64, &cert);
        let mut more = changed.clone();
        more.push(extra);
        more.sort_by_key(|e| e.identity);
        assert!(matches!(
            merge(&base, &[], &more),
            Err(DiffError::TooManyRelays)
        ));
        let removed = [base[0].identity];
        let rest: Vec<DiffEntry> = more
            .into_iter()
            .filter(|e| e.identity != removed[0])
            .collect();
        assert_eq!(merge(&base, &removed, &rest).unwrap().len(), MAX_RELAYS);
    }
}
