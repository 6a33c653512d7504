//! The consensus computation: every authority turns the same set of verified votes into
//! byte-identical consensus bodies, whatever order the votes arrived in.

use std::collections::BTreeMap;

use crate::crypto::{IdentityPublic, RelayId};
use crate::dir::consensus::{
    split_entries, ConsensusBody, ConsensusEntry, ConsensusError, CONSENSUS_VERSION,
};
use crate::dir::flags::{low_median, RelayFlags};
use crate::dir::microdesc::MicrodescIndex;
use crate::dir::vote::{VerifiedVoteEntry, Vote};
use crate::dir::weights::BandwidthWeights;

/// Parameters of the computation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsensusParams {
    /// The consensus version (computation method) to produce; only
    /// [`CONSENSUS_VERSION`] exists.
    pub version: u32,
}

impl Default for ConsensusParams {
    fn default() -> Self {
        Self {
            version: CONSENSUS_VERSION,
        }
    }
}

/// Selection weight of a relay not measured by a majority of the votes listing it,
/// bytes/s (its declaration, if lower): small, so neither a new relay nor a relay lying in
/// its descriptor carries much traffic before the authorities have measured it.
pub(crate) const UNMEASURED_BANDWIDTH: u64 = 20_000;

/// A relay's `(weight, measured)` from the `k` votes listing it: it is measured iff at
/// least `maj(k)` of them carry a measurement; its weight is then the low median over **all
/// `k` votes**, a vote without a measurement counting as [`UNMEASURED_BANDWIDTH`], capped by
/// the relay's `declared` bandwidth; otherwise `min(UNMEASURED_BANDWIDTH, declared)`.
/// Taking the median over every listing vote (not only those that measured) means a
/// minority of authorities cannot set the figure, even for a relay that refuses the
/// honest authorities' probes: the low median lies within the honest votes' range.
fn weight(votes: &[Option<u64>], declared: u64) -> (u64, bool) {
    let measured = votes.iter().filter(|m| m.is_some()).count();
    if measured < majority(votes.len()) {
        return (UNMEASURED_BANDWIDTH.min(declared), false);
    }
    let mut all: Vec<u64> = votes
        .iter()
        .map(|m| m.unwrap_or(UNMEASURED_BANDWIDTH))
        .collect();
    all.sort_unstable();
    let median = low_median(&all).unwrap_or(UNMEASURED_BANDWIDTH);
    (median.min(declared), true)
}

/// Significant bits a measured weight keeps in the consensus.
pub(crate) const WEIGHT_SIGNIFICANT_BITS: u32 = 4;

/// Rounds a measured weight to its [`WEIGHT_SIGNIFICANT_BITS`] most significant bits
/// (to nearest, halves up): steps of 1/16 to 1/8 of the value, finer than the ±10 % a
/// re-measurement moves by, yet coarse enough that such noise rarely changes a relay's
/// entry, and every changed entry costs each client its bytes in the hourly diff.
pub fn round_weight(x: u64) -> u64 {
    let bits = u64::BITS - x.leading_zeros();
    if bits <= WEIGHT_SIGNIFICANT_BITS {
        return x;
    }
    let shift = bits - WEIGHT_SIGNIFICANT_BITS;
    let half = 1u64 << (shift - 1);
    let up = u64::from(x & ((1u64 << shift) - 1) >= half);
    ((x >> shift) + up) << shift
}

/// Strict majority of `n`.
fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// Computes the consensus body from verified votes.
///
/// 1. Every vote must come from a distinct member of `authority_set`, and at least a strict
///    majority of the set must have voted.
/// 2. The validity times are the `(valid_after, fresh_until, valid_until)` triple proposed
///    by a strict majority of the *configured* authorities.
/// 3. A relay is listed iff a strict majority of the configured authorities listed it.
/// 4. Its descriptor is the one with the newest `published` among the votes listing it;
///    ties go to the lexicographically smallest signed-descriptor bytes.
/// 5. Each flag is set iff a strict majority of the votes listing the relay set it; Exit is
///    cleared if the chosen descriptor does not offer exit.
/// 6. Bandwidth: see [`weight`] (measured median capped by the declaration, or the
///    unmeasured default); a measured one is then rounded ([`round_weight`]) and capped
///    by the declaration again.
/// 7. Relays are sorted by identity; weights are computed by [`BandwidthWeights::compute`].
pub fn compute_consensus(
    votes: &[Vote],
    authority_set: &[IdentityPublic],
    params: &ConsensusParams,
) -> Result<ConsensusBody, ConsensusError> {
    compute_consensus_full(votes, authority_set, params).map(|c| c.body)
}

/// A computed consensus: the body to sign and the microdescriptors it lists by digest.
#[derive(Debug, Clone)]
pub struct ComputedConsensus {
    /// The compact body every authority signs.
    pub body: ConsensusBody,
    /// The listed relays' microdescriptors (served by digest).
    pub microdescs: MicrodescIndex,
}

/// [`compute_consensus`], also returning the microdescriptors: each relay's comes from the
/// descriptor the computation chose for it (the one the relay signed), so nobody else can
/// get a different one listed for it.
pub fn compute_consensus_full(
    votes: &[Vote],
    authority_set: &[IdentityPublic],
    params: &ConsensusParams,
) -> Result<ComputedConsensus, ConsensusError> {
    let mut authorities = authority_set.to_vec();
    authorities.sort();
    authorities.dedup();
    if authorities.is_empty() || authorities.len() > crate::dir::consensus::MAX_AUTHORITIES {
        return Err(ConsensusError::BadAuthorities);
    }
    if params.version != CONSENSUS_VERSION {
        return Err(ConsensusError::BadVersion(params.version));
    }
    let need = majority(authorities.len());
    let mut seen: Vec<IdentityPublic> = Vec::with_capacity(votes.len());
    for v in votes {
        if !authorities.contains(&v.authority) {
            return Err(ConsensusError::UnknownAuthority(v.authority));
        }
        if seen.contains(&v.authority) {
            return Err(ConsensusError::DuplicateVote(v.authority));
        }
        seen.push(v.authority);
    }
    if votes.len() < need {
        return Err(ConsensusError::NotEnoughVotes {
            got: votes.len(),
            needed: need,
            configured: authorities.len(),
        });
    }

    // Times: count each proposed triple; a BTreeMap keeps the iteration order fixed.
    let mut times: BTreeMap<(u64, u64, u64), usize> = BTreeMap::new();
    for v in votes {
        *times
            .entry((v.valid_after, v.fresh_until, v.valid_until))
            .or_default() += 1;
    }
    let (valid_after, fresh_until, valid_until) = times
        .into_iter()
        .find(|(_, n)| *n >= need)
        .map(|(t, _)| t)
        .ok_or(ConsensusError::NoTimeMajority)?;

    // Group the entries by relay identity (BTreeMap: sorted, order-independent).
    let mut by_relay: BTreeMap<IdentityPublic, Vec<&VerifiedVoteEntry>> = BTreeMap::new();
    for v in votes {
        for e in &v.entries {
            by_relay.entry(e.descriptor.identity).or_default().push(e);
        }
    }

    let mut relays = Vec::new();
    for (identity, entries) in by_relay {
        if entries.len() < need {
            continue;
        }
        let Some(chosen) = entries.iter().copied().max_by(|a, b| {
            a.descriptor
                .published
                .cmp(&b.descriptor.published)
                // Reverse: among equal times the smallest bytes is the "max".
                .then_with(|| b.signed.cmp(&a.signed))
        }) else {
            continue;
        };
        let listing = entries.len();
        let mut flags = RelayFlags::empty();
        for flag in RelayFlags::each() {
            let set = entries.iter().filter(|e| e.flags.contains(flag)).count();
            flags.set(flag, set >= majority(listing));
        }
        if !chosen.descriptor.exit {
            flags.set(RelayFlags::EXIT, false);
        }
        let d = &chosen.descriptor;
        let votes: Vec<Option<u64>> = entries.iter().map(|e| e.measured).collect();
        let (bandwidth, measured) = weight(&votes, d.bandwidth);
        // Measured weights are rounded (then capped by the declaration again).
        let bandwidth = if measured {
            round_weight(bandwidth).min(d.bandwidth)
        } else {
            bandwidth
        };
        // The descriptor's identity and family were validated as keys when its vote was
        // verified: an honest consensus lists only valid identities.
        relays.push(ConsensusEntry {
            identity: identity.into(),
            onion_cert: d.onion_cert.clone(),
            addrs: d.addrs.clone(),
            flags,
            bandwidth,
            measured,
            exit_policy: d.exit_policy.clone(),
            udp_policy: d.udp_policy.clone(),
            family: d.family.iter().map(RelayId::from).collect(),
        });
    }
    let weights = BandwidthWeights::compute(relays.iter().map(|r| (r.flags, r.bandwidth)));
    for (index, r) in relays.iter().enumerate() {
        r.check()
            .map_err(|source| ConsensusError::Entry { index, source })?;
    }
    let (relays, microdescs) = split_entries(&relays)?;
    let body = ConsensusBody {
        version: params.version,
        valid_after,
        fresh_until,
        valid_until,
        authorities,
        relays,
        weights,
    };
    body.check()?;
    Ok(ComputedConsensus { body, microdescs })
}

#[cfg(test)]
mod tests {
    use super::{round_weight, weight, UNMEASURED_BANDWIDTH};

    const TB: u64 = 1_000_000_000_000;

    #[test]
    fn a_minority_of_authorities_cannot_set_a_weight() {
        // Five authorities; the relay refuses the probes of two honest ones, and two
        // colluding ones vote 1 TB/s for it.
        // The median lands on the one honest measurement.
        let votes = [Some(1_000_000), Some(TB), Some(TB), None, None];
        assert_eq!(weight(&votes, TB), (1_000_000, true));
        // Three honest measurements outvote two lies either way.
        let votes = [
            Some(1_000_000),
            Some(1_100_000),
            Some(900_000),
            Some(TB),
            Some(TB),
        ];
        assert_eq!(weight(&votes, TB), (1_100_000, true));
        let votes = [
            Some(1_000_000),
            Some(1_100_000),
            Some(900_000),
            Some(1),
            Some(1),
        ];
        assert_eq!(weight(&votes, TB), (900_000, true));
    }

    #[test]
    fn weights_keep_four_significant_bits() {
        assert_eq!(round_weight(0), 0);
        assert_eq!(round_weight(15), 15);
        assert_eq!(round_weight(16), 16);
        assert_eq!(round_weight(17), 18);
        assert_eq!(round_weight(1_000_000), 983_040);
        assert_eq!(round_weight(1_040_000), 1_048_576);
        assert_eq!(round_weight(1 << 40), 1 << 40);
        for x in [33u64, 1_000, 123_456, 99_999_999, (1 << 40) - 1] {
            let r = round_weight(x);
            assert!(r.abs_diff(x) * 16 <= x, "{x} -> {r}");
            assert_eq!(round_weight(r), r);
        }
    }

    #[test]
    fn the_declaration_only_caps_and_unmeasured_relays_weigh_little() {
        assert_eq!(weight(&[Some(5_000_000)], 1_000_000), (1_000_000, true));
        assert_eq!(
            weight(&[None, None, Some(TB)], TB),
            (UNMEASURED_BANDWIDTH, false)
        );
        assert_eq!(weight(&[None], 5_000), (5_000, false));
    }
}
