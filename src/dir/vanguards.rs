//! Vanguards-lite (Tor's proposal 333): the few second-hop relays ("layer-2 guards") every
//! onion-service circuit of a client or service goes through, each kept for 1 to 12 days.
//!
//! Without them, an attacker who can make a service build circuits at will (rendezvous
//! circuits to a rendezvous point of its choosing) and runs some middle relays is soon
//! the second hop of one of them and learns the service's guard (guard discovery). With
//! them, the second hop is always one of [`VanguardParams::count`] relays: the attacker
//! must run or compromise one of those, which change only every few days.
//! Pure: every call takes `now` (unix seconds) and an RNG.

use rand::{Rng, RngExt};

use crate::crypto::RelayId;
use crate::dir::consensus::ConsensusEntry;
use crate::dir::path::PathError;
use crate::dir::selection::{conflicts, position_weight, weighted_usable_choice, USABLE};
use crate::dir::verified_consensus::Consensus;
use crate::dir::weights::Position;

/// How many vanguards, and how long each is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VanguardParams {
    /// Relays in the set (Tor: 4, `guard-hs-l2-number`).
    pub count: usize,
    /// Shortest lifetime, seconds (Tor: 1 day, `guard-hs-l2-lifetime-min`).
    pub min_lifetime: u64,
    /// Longest lifetime, seconds (Tor: 12 days, `guard-hs-l2-lifetime-max`).
    pub max_lifetime: u64,
}

impl Default for VanguardParams {
    fn default() -> Self {
        VanguardParams {
            count: 4,
            min_lifetime: 24 * 3600,
            max_lifetime: 12 * 24 * 3600,
        }
    }
}

/// One vanguard and when it is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vanguard {
    /// The relay.
    pub identity: RelayId,
    /// Replaced at this time (unix seconds).
    pub expires: u64,
}

/// The vanguard set. Kept in memory only, as Tor keeps its vanguards-lite: a restart
/// draws a new set.
#[derive(Debug, Clone)]
pub struct VanguardSet {
    params: VanguardParams,
    members: Vec<Vanguard>,
    /// Vanguards replaced so far (expired, or gone from the consensus).
    replaced: u64,
}

impl VanguardSet {
    /// An empty set (filled by the first [`Self::maintain`]).
    pub fn new(params: VanguardParams) -> Self {
        VanguardSet {
            params,
            members: Vec::new(),
            replaced: 0,
        }
    }

    /// The current members.
    pub fn members(&self) -> &[Vanguard] {
        &self.members
    }

    /// Vanguards replaced so far.
    pub fn replaced(&self) -> u64 {
        self.replaced
    }

    /// A lifetime: the larger of two uniform draws in [min, max], which favours long
    /// lifetimes (mean about 8 days with Tor's bounds) as Tor's `max(x, x)` does.
    fn lifetime<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        let (lo, hi) = (
            self.params.min_lifetime,
            self.params.max_lifetime.max(self.params.min_lifetime),
        );
        rng.random_range(lo..=hi).max(rng.random_range(lo..=hi))
    }

    /// Drops members that expired at `now`, that are no longer listed as Running and
    /// Valid, or whose expiry lies further ahead than the longest lifetime (the clock was
    /// set back: a member must not live on for as long as the clock jumped); then draws
    /// new members, weighted as middle relays, up to the wanted count.
    pub fn maintain<R: Rng + ?Sized>(&mut self, consensus: &Consensus, now: u64, rng: &mut R) {
        let horizon = now.saturating_add(self.params.max_lifetime);
        let before = self.members.len();
        self.members.retain(|v| {
            v.expires > now
                && v.expires <= horizon
                && consensus.relay(v.identity).is_some_and(|r| r.has(USABLE))
        });
        self.replaced = self
            .replaced
            .saturating_add((before - self.members.len()) as u64);
        let w = consensus.weights();
        while self.members.len() < self.params.count {
            let members = &self.members;
            let candidates = consensus
                .relays()
                .iter()
                .filter(|r| r.has(USABLE) && !members.iter().any(|v| v.identity == r.identity))
                .map(|r| (r, position_weight(w, r, Position::Middle)));
            let Some(chosen) = weighted_usable_choice(candidates, rng) else {
                break;
            };
            let expires = now.saturating_add(self.lifetime(rng));
            self.members.push(Vanguard {
                identity: chosen.identity,
                expires,
            });
        }
    }

    /// A member to use as the second hop of a circuit whose other hops are `others`
    /// (guard, last hop): uniformly among the listed, usable members that conflict with
    /// none of them (same relay, subnet or family). `None` if none can be used.
    pub fn pick<'a, R: Rng + ?Sized>(
        &self,
        consensus: &'a Consensus,
        others: &[&ConsensusEntry],
        rng: &mut R,
    ) -> Option<&'a ConsensusEntry> {
        let usable: Vec<&ConsensusEntry> = self
            .members
            .iter()
            .filter_map(|v| consensus.relay(v.identity))
            .filter(|r| r.has(USABLE) && !others.iter().any(|o| conflicts(r, o)))
            .collect();
        let n = usable.len();
        (n > 0)
            .then(|| rng.random_range(0..n))
            .and_then(|i| usable.get(i).copied())
    }
}

/// The first `len − 1` hops (guard, vanguard, then middles) of a `len`-hop onion-service
/// circuit (3..=8) whose last hop the caller has (`last`, its consensus entry when
/// listed): as [`select_path_prefix`](crate::dir::path::select_path_prefix) with the
/// second hop drawn from `vanguards` (maintained first).
pub fn select_vanguard_prefix<'a, R: Rng + ?Sized>(
    consensus: &'a Consensus,
    last: Option<&ConsensusEntry>,
    guards: &mut crate::dir::GuardSet,
    vanguards: &mut VanguardSet,
    len: usize,
    now: u64,
    rng: &mut R,
) -> Result<Vec<&'a ConsensusEntry>, PathError> {
    if !(3..=crate::dir::path::MAX_PATH_LEN).contains(&len) {
        return Err(PathError::BadLength(len));
    }
    vanguards.maintain(consensus, now, rng);
    let mut chosen: Vec<&ConsensusEntry> = last.into_iter().collect();
    let guard = guards.pick(consensus, &chosen, now, rng)?;
    chosen.push(guard);
    let second = vanguards
        .pick(consensus, &chosen, rng)
        .ok_or(PathError::NoVanguard)?;
    chosen.push(second);
    let mut path = vec![guard, second];
    for position in 2..len - 1 {
        let m = crate::dir::path::select_middle(consensus, &chosen, rng)
            .ok_or(PathError::NoMiddle(position))?;
        chosen.push(m);
        path.push(m);
    }
    Ok(path)
}
