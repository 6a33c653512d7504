//! The hash ring that decides which relays store a service's descriptor in a period.
//!
//! Every eligible relay sits on a ring at `SHA-256("allium-hsdir-relay-v1" | identity |
//! u64be(N) | u64be(length))`; replica `r ∈ {1, 2}` of a descriptor sits at
//! `SHA-256("allium-hsdir-store-v1" | A' | u64be(r) | u64be(length) | u64be(N))`. For each
//! replica in turn, the descriptor goes to the first `spread` relays at or after its
//! position (clockwise, wrapping), skipping relays already chosen for an earlier replica.
//! Relay positions change every period too, so no relay stays responsible for one service.
//!
//! Client and service compute the same set from the same consensus: the result depends
//! only on the set of eligible relays, never on their order in the consensus.

use sha2::{Digest, Sha256};

use crate::crypto::IdentityPublic;
use crate::dir::{ConsensusEntry, RelayFlags};
use crate::onion::blinding::{BlindedPublic, TimePeriod};

/// Domain-separation prefix of a relay's ring position.
pub const HSDIR_RELAY_LABEL: &[u8] = b"allium-hsdir-relay-v1";
/// Domain-separation prefix of a descriptor replica's ring position.
pub const HSDIR_STORE_LABEL: &[u8] = b"allium-hsdir-store-v1";
/// Number of replicas (independent ring positions) per descriptor.
pub const HSDIR_REPLICAS: u64 = 2;
/// Default number of relays per replica.
pub const DEFAULT_HSDIR_SPREAD: usize = 3;
/// Largest spread accepted (bounds the work and the upload fan-out).
pub const MAX_HSDIR_SPREAD: usize = 8;

/// Which relays may store descriptors, and how many store each replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HsDirParams {
    /// Relays per replica, 1 to [`MAX_HSDIR_SPREAD`].
    pub spread: usize,
    /// Flags a relay needs to be eligible. The default, Running + Valid + Stable, keeps
    /// descriptors off relays that just appeared (which an attacker could place on the ring
    /// cheaply); test networks with a short stable-uptime threshold get Stable quickly.
    pub required_flags: RelayFlags,
}

impl Default for HsDirParams {
    fn default() -> Self {
        Self {
            spread: DEFAULT_HSDIR_SPREAD,
            required_flags: RelayFlags::RUNNING
                .union(RelayFlags::VALID)
                .union(RelayFlags::STABLE),
        }
    }
}

/// A relay's position on the ring in `period`.
pub fn relay_index(identity: &IdentityPublic, period: TimePeriod) -> [u8; 32] {
    Sha256::new()
        .chain_update(HSDIR_RELAY_LABEL)
        .chain_update(identity.as_bytes())
        .chain_update(period.number.to_be_bytes())
        .chain_update(period.length.to_be_bytes())
        .finalize()
        .into()
}

/// Replica `replica`'s position on the ring for blinded key `blinded` in `period`.
pub fn store_index(blinded: &BlindedPublic, replica: u64, period: TimePeriod) -> [u8; 32] {
    Sha256::new()
        .chain_update(HSDIR_STORE_LABEL)
        .chain_update(blinded.as_bytes())
        .chain_update(replica.to_be_bytes())
        .chain_update(period.length.to_be_bytes())
        .chain_update(period.number.to_be_bytes())
        .finalize()
        .into()
}

/// The relays (identities) responsible for the descriptor of `blinded` in `period`, replica
/// 1's first: up to `HSDIR_REPLICAS × spread` distinct relays, fewer if fewer are eligible.
/// A spread outside `1..=MAX_HSDIR_SPREAD` is clamped into it.
pub fn responsible_hsdirs(
    relays: &[ConsensusEntry],
    blinded: &BlindedPublic,
    period: TimePeriod,
    params: &HsDirParams,
) -> Vec<IdentityPublic> {
    HsDirRing::new(relays, period, params).responsible(blinded)
}

/// The ring of one period over one set of relays, sorted once: a relay answering many
/// uploads asks it which relays are responsible without rebuilding it (building costs one
/// hash per eligible relay and a sort; a lookup, two hashes and two binary searches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HsDirRing {
    period: TimePeriod,
    spread: usize,
    /// (position, identity) of every eligible relay, ascending.
    ring: Vec<([u8; 32], IdentityPublic)>,
}

impl HsDirRing {
    /// The ring of the relays of `relays` eligible under `params`, in `period`.
    pub fn new(relays: &[ConsensusEntry], period: TimePeriod, params: &HsDirParams) -> Self {
        let mut ring: Vec<([u8; 32], IdentityPublic)> = relays
            .iter()
            .filter(|r| r.flags.contains(params.required_flags))
            .map(|r| (relay_index(&r.identity, period), r.identity))
            .collect();
        // Sorting by (index, identity) makes the ring independent of the input order (and
        // well defined even for a duplicate identity or an index collision).
        ring.sort_unstable();
        ring.dedup_by(|a, b| a.1 == b.1);
        HsDirRing {
            period,
            spread: params.spread.clamp(1, MAX_HSDIR_SPREAD),
            ring,
        }
    }

    /// The period this ring is for.
    pub fn period(&self) -> TimePeriod {
        self.period
    }

    /// Relays on the ring.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether no relay is eligible.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// The relays responsible for `blinded`, as [`responsible_hsdirs`] (replica 1's first).
    pub fn responsible(&self, blinded: &BlindedPublic) -> Vec<IdentityPublic> {
        let ring = &self.ring;
        let mut chosen: Vec<IdentityPublic> = Vec::new();
        if ring.is_empty() {
            return chosen;
        }
        for replica in 1..=HSDIR_REPLICAS {
            let target = store_index(blinded, replica, self.period);
            let start = ring.partition_point(|(index, _)| *index < target);
            let mut taken = 0;
            for step in 0..ring.len() {
                if taken == self.spread {
                    break;
                }
                let Some((_, id)) = ring.get((start + step) % ring.len()) else {
                    break;
                };
                if !chosen.contains(id) {
                    chosen.push(*id);
                    taken += 1;
                }
            }
        }
        chosen
    }

    /// Whether `relay` is one of the relays responsible for `blinded`.
    pub fn is_responsible(&self, blinded: &BlindedPublic, relay: &IdentityPublic) -> bool {
        self.responsible(blinded).contains(relay)
    }
}
