//! Path selection: choosing the relays of a circuit from a verified consensus.
//!
//! The exit is chosen first (it is the most constrained position), then the guard from the
//! client's [`GuardSet`], then the middles. Every relay must be Running and Valid, and no
//! two relays of a path may
//! * be the same relay,
//! * have addresses in the same IPv4 /16 or IPv6 /32 (any pair of their addresses), or
//! * be in the same family. Family counts if **either** relay declares the other. Tor
//!   requires both to declare each other; the one-sided rule is stricter: a relay can only
//!   use it to exclude *itself* from paths with the relays it names, which gains an
//!   attacker nothing, while an honest operator's declaration takes effect even before the
//!   other relay is updated.
//!
//! Each position is chosen with probability proportional to `bandwidth · W` for the
//! position (see [`crate::dir::weights`]); if every candidate's weight is zero the choice
//! is uniform among the candidates. A relay whose listed identity is not a usable ed25519
//! key is never chosen: identities are validated when drawn
//! ([`weighted_usable_choice`]), not when the consensus is loaded.

use std::net::IpAddr;

use rand::Rng;

use crate::crypto::IdentityPublic;
use crate::dir::consensus::ConsensusEntry;
use crate::dir::guards::GuardSet;
use crate::dir::policy::ExitPolicy;
pub use crate::dir::selection::{
    conflicts, position_weight, same_subnet, uniform_usable_choice, weighted_choice,
    weighted_usable_choice, PathError, DEFAULT_PATH_LEN, MAX_PATH_LEN, MIN_PATH_LEN, USABLE,
};
use crate::dir::verified_consensus::Consensus;
use crate::dir::weights::Position;

/// Where a circuit's streams will go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathTarget {
    /// Destination port (1..=65535).
    pub port: u16,
    /// Destination address if known; `None` for a hostname the exit will resolve, in which
    /// case exits whose policy *might* allow the port qualify.
    pub addr: Option<IpAddr>,
    /// Which of the exit's policies must allow the destination.
    pub proto: Transport,
}

/// What a circuit carries to its destination: TCP streams or UDP flows. Exits publish a
/// separate policy for each ([`ConsensusEntry::exit_policy`],
/// [`ConsensusEntry::udp_policy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Transport {
    /// TCP streams (BEGIN).
    #[default]
    Tcp,
    /// UDP flows.
    Udp,
}

impl PathTarget {
    /// A TCP destination.
    pub const fn tcp(port: u16, addr: Option<IpAddr>) -> Self {
        PathTarget {
            port,
            addr,
            proto: Transport::Tcp,
        }
    }

    /// A UDP destination.
    pub const fn udp(port: u16, addr: Option<IpAddr>) -> Self {
        PathTarget {
            port,
            addr,
            proto: Transport::Udp,
        }
    }
}

/// Whether `policy`, an exit's policy for the target's transport, allows `target`: for a
/// known address exactly, for a name if it *might* allow the port.
pub fn policy_allows(policy: &ExitPolicy, target: &PathTarget) -> bool {
    match target.addr {
        Some(ip) => policy.allows_ip(ip, target.port),
        None => policy.might_allow_port(target.port),
    }
}

/// The policy of `relay` that governs `proto`.
pub fn policy_for(relay: &ConsensusEntry, proto: Transport) -> &ExitPolicy {
    match proto {
        Transport::Tcp => &relay.exit_policy,
        Transport::Udp => &relay.udp_policy,
    }
}

/// Whether `relay` can exit to `target` (by the policy of the target's transport).
pub fn exit_allows(relay: &ConsensusEntry, target: &PathTarget) -> bool {
    relay.has(USABLE)
        && relay.flags.usable_exit()
        && policy_allows(policy_for(relay, target.proto), target)
}

/// Chooses an exit for `target`, bandwidth-weighted for the exit position.
pub fn select_exit<'a, R: Rng + ?Sized>(
    consensus: &'a Consensus,
    target: &PathTarget,
    rng: &mut R,
) -> Result<&'a ConsensusEntry, PathError> {
    if target.port == 0 {
        return Err(PathError::BadPort);
    }
    let w = consensus.weights();
    weighted_usable_choice(
        consensus
            .relays()
            .iter()
            .filter(|r| exit_allows(r, target))
            .map(|r| (r, position_weight(w, r, Position::Exit))),
        rng,
    )
    .ok_or(match target.proto {
        Transport::Tcp => PathError::NoExit { port: target.port },
        Transport::Udp => PathError::NoUdpExit { port: target.port },
    })
}

/// Chooses an exit for `target` as [`select_exit`] does, but none of `avoid` (the exits a
/// client used before NEWNYM, newest first) while another exit allows the target. When
/// every fitting exit is avoided, the oldest entries are let go first: the exit of the
/// latest identity stays avoided as long as any other fits. Only when none does is it
/// chosen, so a network with a single fitting exit still works.
pub fn select_exit_avoiding<'a, R: Rng + ?Sized>(
    consensus: &'a Consensus,
    target: &PathTarget,
    avoid: &[IdentityPublic],
    rng: &mut R,
) -> Result<&'a ConsensusEntry, PathError> {
    if avoid.is_empty() || target.port == 0 {
        return select_exit(consensus, target, rng);
    }
    let w = consensus.weights();
    for keep in (1..=avoid.len()).rev() {
        let avoided = avoid.get(..keep).unwrap_or(avoid);
        let other = weighted_usable_choice(
            consensus
                .relays()
                .iter()
                .filter(|r| exit_allows(r, target) && !avoided.iter().any(|a| *a == r.identity))
                .map(|r| (r, position_weight(w, r, Position::Exit))),
            rng,
        );
        if let Some(e) = other {
            return Ok(e);
        }
    }
    // Debug only: the port says something of the destination.
    tracing::debug!(
        "path: only exits avoided since NEWNYM allow port {}; using one",
        target.port
    );
    select_exit(consensus, target, rng)
}

/// Chooses a middle relay not conflicting with any of `chosen`.
pub fn select_middle<'a, R: Rng + ?Sized>(
    consensus: &'a Consensus,
    chosen: &[&ConsensusEntry],
    rng: &mut R,
) -> Option<&'a ConsensusEntry> {
    let w = consensus.weights();
    weighted_usable_choice(
        consensus
            .relays()
            .iter()
            .filter(|r| r.has(USABLE) && !chosen.iter().any(|c| conflicts(r, c)))
            .map(|r| (r, position_weight(w, r, Position::Middle))),
        rng,
    )
}

/// Selects a circuit path of `len` hops (2..=8) towards `target`, returned in circuit
/// order: guard, middles, exit. The exit is chosen first, then a guard from `guards`
/// (which may update its sample), then the middles; see the module documentation for the
/// rules.
pub fn select_path<'a, R: Rng + ?Sized>(
    consensus: &'a Consensus,
    target: &PathTarget,
    guards: &mut GuardSet,
    len: usize,
    now: u64,
    rng: &mut R,
) -> Result<Vec<&'a ConsensusEntry>, PathError> {
    select_path_avoiding(consensus, target, &[], guards, len, now, rng)
}

/// [`select_path`] with an exit chosen by [`select_exit_avoiding`]: none of `avoid_exits`
/// unless no other exit allows the target.
pub fn select_path_avoiding<'a, R: Rng + ?Sized>(
    consensus: &'a Consensus,
    target: &PathTarget,
    avoid_exits: &[IdentityPublic],
    guards: &mut GuardSet,
    len: usize,
    now: u64,
    rng: &mut R,
) -> Result<Vec<&'a ConsensusEntry>, PathError> {
    if !(MIN_PATH_LEN..=MAX_PATH_LEN).contains(&len) {
        return Err(PathError::BadLength(len));
    }
    let exit = select_exit_avoiding(consensus, target, avoid_exits, rng)?;
    let guard = guards.pick(consensus, &[exit], now, rng)?;
    let mut chosen: Vec<&'a ConsensusEntry> = vec![exit, guard];
    for position in 1..len - 1 {
        let m = select_middle(consensus, &chosen, rng).ok_or(PathError::NoMiddle(position))?;
        chosen.push(m);
    }
    // chosen = [exit, guard, m1, m2, ...]; circuit order is guard, m1, m2, ..., exit.
    let mut path = Vec::with_capacity(len);
    path.push(guard);
    path.extend(chosen.iter().skip(2).copied());
    path.push(exit);
    Ok(path)
}

/// Selects the first `len − 1` hops (guard, then middles) of a `len`-hop path (2..=8)
/// whose last hop the caller already has: an onion service's introduction point,
/// rendezvous point or descriptor directory. `last` is that relay's consensus entry when
/// it is listed; the hops chosen never conflict with it (same relay, subnet or family).
/// The rules are those of [`select_path`].
pub fn select_path_prefix<'a, R: Rng + ?Sized>(
    consensus: &'a Consensus,
    last: Option<&ConsensusEntry>,
    guards: &mut GuardSet,
    len: usize,
    now: u64,
    rng: &mut R,
) -> Result<Vec<&'a ConsensusEntry>, PathError> {
    if !(MIN_PATH_LEN..=MAX_PATH_LEN).contains(&len) {
        return Err(PathError::BadLength(len));
    }
    let avoid: Vec<&ConsensusEntry> = last.into_iter().collect();
    let guard = guards.pick(consensus, &avoid, now, rng)?;
    let mut chosen: Vec<&ConsensusEntry> = avoid;
    chosen.push(guard);
    let mut path = vec![guard];
    for position in 1..len - 1 {
        let m = select_middle(consensus, &chosen, rng).ok_or(PathError::NoMiddle(position))?;
        chosen.push(m);
        path.push(m);
    }
    Ok(path)
}
