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

use crate::crypto::RelayId;
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
/// Ring positions a storing relay accepts beyond `spread` ([`HsDirRing::accepts`]).
///
/// The service picks relays with its own consensus, the relay checks with its own; the two
/// may differ by an hour or two, and between them relays gain or lose Running, Valid or
/// Stable, or come and go. A relay's own ring position is the same in both (it depends on
/// identity and period only), but every relay added to or dropped from the ring between a
/// store index and it moves it one place. Two places of slack absorb up to two such
/// changes in that short arc (a few relays out of the whole network): with hourly churn of
/// a few per cent, more than two in one arc of five is rare, and then the service still
/// has the other relays of its set. The cost: a relay accepts `2 × (spread + 2)` (10 by
/// default) relays' worth of keys instead of `2 × spread` (6), about 5/3 as many. Only
/// acceptance widens: services upload and clients fetch exactly the §8.3 set, so no
/// descriptor reaches a relay that its uploader's ring does not select.
pub const HSDIR_RING_SLACK: usize = 2;

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
pub fn relay_index(identity: &RelayId, period: TimePeriod) -> [u8; 32] {
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
) -> Vec<RelayId> {
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
    ring: Vec<([u8; 32], RelayId)>,
}

impl HsDirRing {
    /// The ring of the relays of `relays` eligible under `params`, in `period`.
    pub fn new(relays: &[ConsensusEntry], period: TimePeriod, params: &HsDirParams) -> Self {
        let mut ring: Vec<([u8; 32], RelayId)> = relays
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
    pub fn responsible(&self, blinded: &BlindedPublic) -> Vec<RelayId> {
        Walk {
            ring: &self.ring,
            added: None,
        }
        .select(blinded, self.period, self.spread)
    }

    /// Whether `relay` is one of the relays responsible for `blinded`.
    pub fn is_responsible(&self, blinded: &BlindedPublic, relay: impl Into<RelayId>) -> bool {
        self.responsible(blinded).contains(&relay.into())
    }

    /// Whether `relay`, asked to store the descriptor of `blinded`, accepts it under this
    /// ring: it is one of the relays selected as in [`HsDirRing::responsible`] but with
    /// `spread + HSDIR_RING_SLACK` relays per replica, the ring counting `relay` at its
    /// own position even if this consensus does not list it as eligible. Every relay
    /// responsible is accepted (taking more per replica never drops one), and so is a
    /// relay that a slightly different ring (another consensus, §8.3) makes responsible;
    /// see [`HSDIR_RING_SLACK`]. Cost: three hashes, two binary searches and a walk of at
    /// most `2 × (spread + slack)` steps.
    pub fn accepts(&self, blinded: &BlindedPublic, relay: impl Into<RelayId>) -> bool {
        let relay: RelayId = relay.into();
        let entry = (relay_index(&relay, self.period), relay);
        let added = match self.ring.binary_search(&entry) {
            Ok(_) => None,
            Err(at) => Some((at, entry)),
        };
        Walk {
            ring: &self.ring,
            added,
        }
        .select(blinded, self.period, self.spread + HSDIR_RING_SLACK)
        .contains(&relay)
    }
}

/// The ring as a selection walks it: the sorted eligible relays plus, when a relay asks
/// about itself while not eligible, that relay at its own position (without copying the
/// ring).
struct Walk<'a> {
    ring: &'a [([u8; 32], RelayId)],
    /// The added relay: where it goes in `ring` (it comes before `ring[at]`), and its
    /// (position, identity).
    added: Option<(usize, ([u8; 32], RelayId))>,
}

impl Walk<'_> {
    fn len(&self) -> usize {
        self.ring.len() + usize::from(self.added.is_some())
    }

    fn get(&self, i: usize) -> Option<&RelayId> {
        match &self.added {
            None => self.ring.get(i).map(|(_, id)| id),
            Some((at, (_, id))) => match i.cmp(at) {
                std::cmp::Ordering::Less => self.ring.get(i).map(|(_, id)| id),
                std::cmp::Ordering::Equal => Some(id),
                std::cmp::Ordering::Greater => i
                    .checked_sub(1)
                    .and_then(|j| self.ring.get(j))
                    .map(|(_, id)| id),
            },
        }
    }

    /// The first slot whose position is ≥ `target` (`len()` if none: the walk wraps).
    fn first_at_or_after(&self, target: &[u8; 32]) -> usize {
        let start = self.ring.partition_point(|(index, _)| index < target);
        match &self.added {
            Some((_, (index, _))) if index < target => start + 1,
            _ => start,
        }
    }

    /// §8.3's selection with `spread` relays per replica.
    fn select(&self, blinded: &BlindedPublic, period: TimePeriod, spread: usize) -> Vec<RelayId> {
        let len = self.len();
        let mut chosen: Vec<RelayId> = Vec::new();
        if len == 0 {
            return chosen;
        }
        for replica in 1..=HSDIR_REPLICAS {
            let start = self.first_at_or_after(&store_index(blinded, replica, period));
            let mut taken = 0;
            for step in 0..len {
                if taken == spread {
                    break;
                }
                let Some(id) = self.get((start + step) % len) else {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{IdentityKeypair, OnionKeyCert, OnionKeypair};
    use crate::dir::ExitPolicy;
    use crate::onion::OnionAddress;

    const PERIOD: TimePeriod = TimePeriod {
        length: 86_400,
        number: 19_000,
    };

    fn relay(n: u8, flags: RelayFlags) -> ConsensusEntry {
        let id = IdentityKeypair::from_secret_bytes(&[n; 32]);
        let onion = OnionKeypair::from_secret_bytes(&[n; 32]);
        ConsensusEntry {
            identity: id.public().into(),
            onion_cert: OnionKeyCert::sign(&id, onion.public(), u64::MAX),
            addrs: vec![std::net::SocketAddr::from(([10, 0, 0, n], 9001))],
            flags,
            bandwidth: 1000,
            measured: true,
            exit_policy: ExitPolicy::reject_all(),
            udp_policy: ExitPolicy::reject_all(),
            family: Vec::new(),
        }
    }

    fn blinded(n: u8) -> BlindedPublic {
        let mut seed = [0x5e; 32];
        seed[0] = n;
        let a = OnionAddress::from_identity(IdentityKeypair::from_secret_bytes(&seed).public())
            .unwrap();
        BlindedPublic::derive(&a, PERIOD).unwrap()
    }

    /// `accepts` is the §8.3 selection with `spread + HSDIR_RING_SLACK` per replica over
    /// the ring with the asking relay made eligible: checked against building that ring,
    /// for relays on the ring and off it (no Stable flag). It accepts every responsible
    /// relay and, on a ring with the relay on it, exactly `2 × (spread + slack)` relays.
    #[test]
    fn accepts_is_the_selection_widened_by_the_slack() {
        let params = HsDirParams::default();
        let eligible = params.required_flags;
        let unstable = RelayFlags::RUNNING.union(RelayFlags::VALID);
        let relays: Vec<ConsensusEntry> = (1..=30)
            .map(|n| relay(n, eligible))
            .chain((31..=40).map(|n| relay(n, unstable)))
            .collect();
        let ring = HsDirRing::new(&relays, PERIOD, &params);
        assert_eq!(ring.len(), 30);
        let wide = HsDirParams {
            spread: params.spread + HSDIR_RING_SLACK,
            ..params
        };
        for n in 0..12 {
            let key = blinded(n);
            let responsible = ring.responsible(&key);
            let accepted: Vec<RelayId> = relays
                .iter()
                .map(|r| r.identity)
                .filter(|id| ring.accepts(&key, id))
                .collect();
            assert!(responsible.iter().all(|id| accepted.contains(id)));
            let on_ring = accepted.iter().filter(|id| {
                relays
                    .iter()
                    .any(|r| r.identity == **id && r.flags.contains(eligible))
            });
            assert_eq!(on_ring.count(), 2 * (params.spread + HSDIR_RING_SLACK));
            for (i, r) in relays.iter().enumerate() {
                let mut as_eligible = relays.clone();
                if let Some(e) = as_eligible.get_mut(i) {
                    e.flags = eligible;
                }
                let expected = HsDirRing::new(&as_eligible, PERIOD, &wide)
                    .responsible(&key)
                    .contains(&r.identity);
                assert_eq!(ring.accepts(&key, r.identity), expected, "relay {i}");
            }
        }
    }

    /// A relay alone, or asking about a ring without any eligible relay, is on it.
    #[test]
    fn accepts_on_tiny_rings() {
        let params = HsDirParams::default();
        let me = relay(1, RelayFlags::ALL).identity;
        let key = blinded(1);
        let empty = HsDirRing::new(&[], PERIOD, &params);
        assert!(empty.responsible(&key).is_empty());
        assert!(empty.accepts(&key, me));
        let alone = HsDirRing::new(&[relay(1, RelayFlags::ALL)], PERIOD, &params);
        assert!(alone.is_responsible(&key, me));
        assert!(alone.accepts(&key, me));
    }
}
