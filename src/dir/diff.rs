//! Consensus diffs: what changed from a recent consensus (the base, named by the SHA-256
//! digest of its signed body) to the current one (`docs/protocol.md` §6.18). The wire
//! format is in [`crate::dir::diff_format`]; this module computes diffs on a server and
//! applies them on a client.
//!
//! A diff carries the new header fields and signatures, the base entries removed and
//! modified (by index in the base, modifications with only the fields that changed), the
//! relays added (whole), and the digest of the body it must produce. Applying it rebuilds
//! the new body from the base, re-encodes it canonically and checks the digest; the caller
//! then verifies the result exactly as a fully fetched consensus
//! ([`UncheckedConsensus::verify`]), so a diff can at worst fail, never produce a document
//! the authorities did not sign.

use std::net::SocketAddr;

use std::sync::OnceLock;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::codec::{self, CodecError};
use crate::dir::compress::{decompress, DecompressError};
use crate::dir::consensus::{
    ConsensusBody, ConsensusError, ListedRelay, SignedConsensus, MAX_CONSENSUS_LEN, MAX_RELAYS,
};
pub use crate::dir::diff_format::{
    ConsensusDiff, FormatError, Modified, DIFF_VERSION, MAX_DIFF_LEN,
};
use crate::dir::verified_consensus::UncheckedConsensus;
use crate::dir::RelayFlags;

/// The element type of the consensus's relay list, which diffs carry whole for new relays.
pub type DiffEntry = ListedRelay;

/// Bytes of the truncated digests (of the microdescriptor digest, of the address list) a
/// server keeps per relay of a past consensus to compute diffs from it. They are keyed
/// with a secret of this process ([`truncated`]): with a public truncation a relay
/// operator could precompute two microdescriptors whose 16-byte digests collide (about
/// 2^64 work, once) and alternate them, so that every server leaves the change out of
/// every diff and every client falls back to the full document. A collision the operator
/// cannot aim at is as rare as 2^-128, and would still only make a diff fail its result
/// digest, never be accepted.
pub const ENTRY_DIGEST_LEN: usize = 16;

/// SHA-256 of a consensus's signed body: how diffs name their base and their result.
pub fn body_digest(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

/// Why a diff was refused.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// The diff bytes break the format (§6.18).
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The rebuilt body could not be encoded.
    #[error("consensus rebuilt from a diff does not encode: {0}")]
    Codec(#[from] CodecError),
    /// The diff starts from another consensus than the one it is applied to.
    #[error("consensus diff is from another base consensus")]
    WrongBase,
    /// A removed or modified index is past the base's last entry.
    #[error("consensus diff names base entry {index}; the base lists {len}")]
    IndexOutOfRange {
        /// The index named.
        index: u32,
        /// Entries in the base.
        len: usize,
    },
    /// A modified field equals the base's (a diff lists only real changes).
    #[error("consensus diff changes a field of base entry {0} to its current value")]
    Unchanged(u32),
    /// An added relay is already listed in the base (it would be a modification).
    #[error("consensus diff adds a relay the base already lists")]
    AlreadyListed,
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

/// One relay of a past consensus as a server keeps it: enough to tell which fields of its
/// entry changed, not the fields themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BaseEntry {
    identity: [u8; 32],
    md_digest: [u8; ENTRY_DIGEST_LEN],
    addrs: [u8; ENTRY_DIGEST_LEN],
    bandwidth: u64,
    flags: RelayFlags,
    measured: bool,
}

/// HMAC-SHA-256 of `bytes` under this process's secret, truncated: the key is drawn once
/// per process (bases live only in memory, so it never needs to be stored).
fn truncated(bytes: &[u8]) -> [u8; ENTRY_DIGEST_LEN] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    let key = KEY.get_or_init(rand::random);
    let mut out = [0u8; ENTRY_DIGEST_LEN];
    if let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) {
        mac.update(bytes);
        let full = mac.finalize().into_bytes();
        if let Some(head) = full.get(..ENTRY_DIGEST_LEN) {
            out.copy_from_slice(head);
        }
    }
    out
}

fn addrs_digest(addrs: &[SocketAddr]) -> Result<[u8; ENTRY_DIGEST_LEN], CodecError> {
    Ok(truncated(&codec::encode(&addrs)?))
}

/// A past consensus as a server keeps it to compute diffs from: its digest and, per relay
/// in the consensus's order, its identity, truncated digests of its microdescriptor digest
/// and address list, and its small fields (about 74 bytes a relay against 92 for the entry
/// and its heap-allocated address list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffBase {
    /// [`body_digest`] of the consensus.
    pub digest: [u8; 32],
    entries: Vec<BaseEntry>,
}

impl DiffBase {
    /// The diff base of a consensus given its signed body bytes and their decoding.
    pub fn new(body_bytes: &[u8], body: &ConsensusBody) -> Result<Self, CodecError> {
        let entries = body
            .relays
            .iter()
            .map(|e| {
                Ok(BaseEntry {
                    identity: *e.identity.as_bytes(),
                    md_digest: truncated(&e.md_digest),
                    addrs: addrs_digest(&e.addrs)?,
                    bandwidth: e.bandwidth,
                    flags: e.flags,
                    measured: e.measured,
                })
            })
            .collect::<Result<Vec<_>, CodecError>>()?;
        Ok(DiffBase {
            digest: body_digest(body_bytes),
            entries,
        })
    }

    /// The diff from this base to `new` (its signed form, decoded body and its own base,
    /// computed once for all the bases it is diffed from). Both lists are in identity
    /// order (a verified consensus's, §6.8).
    pub fn diff_to(
        &self,
        new_base: &DiffBase,
        new: &SignedConsensus,
        new_body: &ConsensusBody,
    ) -> Result<ConsensusDiff, CodecError> {
        debug_assert_eq!(new_base.entries.len(), new_body.relays.len());
        let mut removed = Vec::new();
        let mut modified = Vec::new();
        let mut added = Vec::new();
        let mut old = (0u32..).zip(self.entries.iter()).peekable();
        for (e, n) in new_body.relays.iter().zip(&new_base.entries) {
            let id = &n.identity;
            while let Some((i, _)) = old.next_if(|(_, b)| b.identity < *id) {
                removed.push(i);
            }
            match old.next_if(|(_, b)| b.identity == *id) {
                Some((index, b)) => {
                    let m = Modified {
                        index,
                        md_digest: (n.md_digest != b.md_digest).then_some(e.md_digest),
                        addrs: (n.addrs != b.addrs).then(|| e.addrs.clone()),
                        flags: (e.flags != b.flags).then_some(e.flags),
                        bandwidth: (e.bandwidth != b.bandwidth).then_some(e.bandwidth),
                        toggle_measured: e.measured != b.measured,
                    };
                    if m.mask() != 0 {
                        modified.push(m);
                    }
                }
                None => added.push(e.clone()),
            }
        }
        removed.extend(old.map(|(i, _)| i));
        Ok(ConsensusDiff {
            diff_version: DIFF_VERSION,
            base: self.digest,
            result: new_base.digest,
            version: new_body.version,
            valid_after: new_body.valid_after,
            fresh_until: new_body.fresh_until,
            valid_until: new_body.valid_until,
            authorities: new_body.authorities.clone(),
            weights: new_body.weights,
            signatures: new.signatures().to_vec(),
            removed,
            modified,
            added,
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
        let new_base = DiffBase::new(new.body(), new_body)?;
        DiffBase::new(base.body(), base_body)?.diff_to(&new_base, new, new_body)
    }

    /// Applies the diff to a base consensus (its signed body bytes and their decoding,
    /// e.g. from a verified [`crate::dir::Consensus`]). Refuses a diff from another base,
    /// one naming an index past the base's entries, changing a field to its current value
    /// or adding a relay the base lists, and one whose result does not have the announced
    /// digest. The result still has to be verified.
    pub fn apply(
        &self,
        base_bytes: &[u8],
        base: &ConsensusBody,
    ) -> Result<UncheckedConsensus, DiffError> {
        if body_digest(base_bytes) != self.base {
            return Err(DiffError::WrongBase);
        }
        let relays = merge(&base.relays, &self.removed, &self.modified, &self.added)?;
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

/// The base entry `e` with the fields of `m` put in; every field `m` carries must differ.
fn modify(e: &DiffEntry, m: &Modified) -> Result<DiffEntry, DiffError> {
    let unchanged = DiffError::Unchanged(m.index);
    let mut out = e.clone();
    if let Some(d) = m.md_digest {
        if d == e.md_digest {
            return Err(unchanged);
        }
        out.md_digest = d;
    }
    if let Some(a) = &m.addrs {
        if *a == e.addrs {
            return Err(unchanged);
        }
        out.addrs = a.clone();
    }
    if let Some(f) = m.flags {
        if f == e.flags {
            return Err(unchanged);
        }
        out.flags = f;
    }
    if let Some(b) = m.bandwidth {
        if b == e.bandwidth {
            return Err(unchanged);
        }
        out.bandwidth = b;
    }
    out.measured ^= m.toggle_measured;
    Ok(out)
}

/// The base's entries without those at the `removed` indexes, those at the `modified`
/// indexes changed, and `added` put in identity order. Both index lists are strictly
/// ascending and disjoint ([`ConsensusDiff::parse`]); each index must name a base entry,
/// and no added identity may be in the base (removed or not: a relay listed in both is a
/// modification).
fn merge(
    base: &[DiffEntry],
    removed: &[u32],
    modified: &[Modified],
    added: &[DiffEntry],
) -> Result<Vec<DiffEntry>, DiffError> {
    let last = removed
        .last()
        .copied()
        .max(modified.last().map(|m| m.index));
    if let Some(index) = last.filter(|&i| i as usize >= base.len()) {
        return Err(DiffError::IndexOutOfRange {
            index,
            len: base.len(),
        });
    }
    let len = base
        .len()
        .saturating_sub(removed.len())
        .saturating_add(added.len());
    if len > MAX_RELAYS {
        return Err(DiffError::TooManyRelays);
    }
    let mut out = Vec::with_capacity(len);
    let mut removed = removed.iter().peekable();
    let mut modified = modified.iter().peekable();
    let mut added = added.iter().peekable();
    for (i, e) in (0u32..).zip(base) {
        while let Some(a) = added.next_if(|a| a.identity < e.identity) {
            out.push(a.clone());
        }
        if added.peek().is_some_and(|a| a.identity == e.identity) {
            return Err(DiffError::AlreadyListed);
        }
        if removed.next_if(|&&r| r == i).is_some() {
            continue;
        }
        match modified.next_if(|m| m.index == i) {
            Some(m) => out.push(modify(e, m)?),
            None => out.push(e.clone()),
        }
    }
    out.extend(added.cloned());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::IdentityKeypair;
    use crate::dir::diff_format::{
        FIELD_ADDRS, FIELD_BANDWIDTH, FIELD_FLAGS, FIELD_MD_DIGEST, FIELD_MEASURED,
    };

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

    fn sorted(n: u64) -> Vec<DiffEntry> {
        let mut v: Vec<DiffEntry> = (0..n).map(|n| entry(n, &[8; 32])).collect();
        v.sort_by_key(|e| e.identity);
        v
    }

    fn bandwidth(index: u32, b: u64) -> Modified {
        Modified {
            index,
            md_digest: None,
            addrs: None,
            flags: None,
            bandwidth: Some(b),
            toggle_measured: false,
        }
    }

    /// A full-size consensus with a few percent of its entries modified merges (the bound
    /// applies to the result), one relay more is refused, and one out one in is not.
    #[test]
    fn merge_bounds_the_result_not_the_changes() {
        let base = sorted(MAX_RELAYS as u64);
        let modified: Vec<Modified> = (0..MAX_RELAYS as u32)
            .step_by(20)
            .map(|i| bandwidth(i, 2000))
            .collect();
        let out = merge(&base, &[], &modified, &[]).unwrap();
        assert_eq!(out.len(), MAX_RELAYS);
        assert_eq!(out[20].bandwidth, 2000);
        assert_eq!(out[21].bandwidth, 1000);
        let extra = [entry(MAX_RELAYS as u64, &[8; 32])];
        assert!(matches!(
            merge(&base, &[], &modified, &extra),
            Err(DiffError::TooManyRelays)
        ));
        let out = merge(&base, &[1], &modified, &extra).unwrap();
        assert_eq!(out.len(), MAX_RELAYS);
        assert!(out.windows(2).all(|w| w[0].identity < w[1].identity));
        assert!(out.iter().any(|e| e.identity == extra[0].identity));
        assert!(!out.iter().any(|e| e.identity == base[1].identity));
    }

    /// What only the base can tell: an index past its entries, a field "changed" to its
    /// value, a relay added that it lists (even if also removed).
    #[test]
    fn merge_refuses_what_does_not_fit_the_base() {
        let base = sorted(5);
        assert!(matches!(
            merge(&base, &[5], &[], &[]),
            Err(DiffError::IndexOutOfRange { index: 5, len: 5 })
        ));
        assert!(matches!(
            merge(&base, &[], &[bandwidth(9, 7)], &[]),
            Err(DiffError::IndexOutOfRange { index: 9, .. })
        ));
        assert!(matches!(
            merge(&base, &[], &[bandwidth(2, 1000)], &[]),
            Err(DiffError::Unchanged(2))
        ));
        let same_flags = Modified {
            flags: Some(RelayFlags::RUNNING),
            ..bandwidth(3, 5)
        };
        assert!(matches!(
            merge(&base, &[], &[same_flags], &[]),
            Err(DiffError::Unchanged(3))
        ));
        for removed in [&[][..], &[4][..]] {
            assert!(matches!(
                merge(&base, removed, &[], &[base[4].clone()]),
                Err(DiffError::AlreadyListed)
            ));
        }
        let toggle = Modified {
            toggle_measured: true,
            ..bandwidth(0, 5)
        };
        let out = merge(&base, &[], &[toggle], &[]).unwrap();
        assert!(!out[0].measured && out[0].bandwidth == 5);
    }

    /// The server's diff names each changed field once, and nothing unchanged.
    #[test]
    fn diff_to_carries_only_changed_fields() {
        let base = sorted(6);
        let mut new = base.clone();
        new[1].bandwidth = 4096;
        new[2].md_digest = [9; 32];
        new[2].measured = false;
        new[3].addrs = vec![std::net::SocketAddr::from(([10, 0, 0, 2], 443))];
        new[4].flags = RelayFlags::RUNNING.union(RelayFlags::VALID);
        new.remove(5);
        new.remove(0);
        let body = |relays: Vec<DiffEntry>| ConsensusBody {
            version: crate::dir::consensus::CONSENSUS_VERSION,
            valid_after: 1,
            fresh_until: 2,
            valid_until: 3,
            authorities: Vec::new(),
            relays,
            weights: Default::default(),
        };
        let b = DiffBase::new(&[], &body(base.clone())).unwrap();
        let new_body = body(new.clone());
        let signed = SignedConsensus::from_parts(codec::encode(&new_body).unwrap(), Vec::new());
        let nb = DiffBase::new(signed.body(), &new_body).unwrap();
        let d = b.diff_to(&nb, &signed, &new_body).unwrap();
        assert_eq!(d.removed, vec![0, 5]);
        assert!(d.added.is_empty());
        let masks: Vec<(u32, u8)> = d.modified.iter().map(|m| (m.index, m.mask())).collect();
        assert_eq!(
            masks,
            vec![
                (1, FIELD_BANDWIDTH),
                (2, FIELD_MD_DIGEST | FIELD_MEASURED),
                (3, FIELD_ADDRS),
                (4, FIELD_FLAGS)
            ]
        );
        let merged = merge(&base, &d.removed, &d.modified, &d.added).unwrap();
        assert_eq!(merged, new);
        assert_eq!(ConsensusDiff::parse(&d.to_bytes()).unwrap(), d);
    }
}
