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
//! is uniform among the candidates.

use std::net::{IpAddr, SocketAddr};

use rand::{Rng, RngExt};

use crate::dir::consensus::{Consensus, ConsensusEntry};
use crate::dir::flags::RelayFlags;
use crate::dir::guards::GuardSet;
use crate::dir::weights::{BandwidthWeights, Position};

/// Default number of hops.
pub const DEFAULT_PATH_LEN: usize = 3;
/// Fewest hops a path may have (guard and exit).
pub const MIN_PATH_LEN: usize = 2;
/// Most hops a path may have (the RELAY_EARLY limit, see protocol.md §2.3).
pub const MAX_PATH_LEN: usize = 8;

/// Where a circuit's streams will go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathTarget {
    /// Destination port (1..=65535).
    pub port: u16,
    /// Destination address if known; `None` for a hostname the exit will resolve, in which
    /// case exits whose policy *might* allow the port qualify.
    pub addr: Option<IpAddr>,
}

/// Why no path could be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The requested length is outside `MIN_PATH_LEN..=MAX_PATH_LEN`.
    #[error("path length {0} is outside {MIN_PATH_LEN}..={MAX_PATH_LEN}")]
    BadLength(usize),
    /// Port 0 is not a destination.
    #[error("target port 0 is invalid")]
    BadPort,
    /// No Running, Valid exit allows the target.
    #[error("no running exit relay allows port {port}")]
    NoExit {
        /// The target port.
        port: u16,
    },
    /// No usable guard compatible with the chosen exit.
    #[error("no usable guard compatible with the chosen exit")]
    NoGuard,
    /// No relay can fill a middle position without a conflict.
    #[error("no relay can fill middle position {0} without a conflict")]
    NoMiddle(usize),
}

/// The two addresses are in the same IPv4 /16 or the same IPv6 /32. IPv4-mapped IPv6
/// addresses compare as IPv4.
pub fn same_subnet(a: IpAddr, b: IpAddr) -> bool {
    // Loopback relays exist only in local test networks, where every relay shares
    // 127.0.0.0/16; exempting them is what lets such networks build paths at all (Tor's
    // test networks turn the rule off for the same reason).
    if a.is_loopback() && b.is_loopback() {
        return false;
    }
    match (a.to_canonical(), b.to_canonical()) {
        (IpAddr::V4(a), IpAddr::V4(b)) => a.octets()[..2] == b.octets()[..2],
        (IpAddr::V6(a), IpAddr::V6(b)) => a.segments()[..2] == b.segments()[..2],
        _ => false,
    }
}

fn any_same_subnet(a: &[SocketAddr], b: &[SocketAddr]) -> bool {
    a.iter()
        .any(|x| b.iter().any(|y| same_subnet(x.ip(), y.ip())))
}

/// Whether two relays may not share a path: same identity, addresses in a common /16
/// (/32 for IPv6), or family declared by either.
pub fn conflicts(a: &ConsensusEntry, b: &ConsensusEntry) -> bool {
    a.identity == b.identity
        || any_same_subnet(&a.addrs, &b.addrs)
        || a.family.binary_search(&b.identity).is_ok()
        || b.family.binary_search(&a.identity).is_ok()
}

/// Flags every relay on a path needs.
pub const USABLE: RelayFlags = RelayFlags::RUNNING.union(RelayFlags::VALID);

/// Whether `relay` can exit to `target`.
pub fn exit_allows(relay: &ConsensusEntry, target: &PathTarget) -> bool {
    relay.has(USABLE.union(RelayFlags::EXIT))
        && match target.addr {
            Some(ip) => relay.exit_policy.allows_ip(ip, target.port),
            None => relay.exit_policy.might_allow_port(target.port),
        }
}

/// A relay's selection weight in `position`: `bandwidth · W` (0 if not eligible).
pub fn position_weight(
    weights: &BandwidthWeights,
    relay: &ConsensusEntry,
    position: Position,
) -> u128 {
    u128::from(relay.bandwidth) * u128::from(weights.weight(position, relay.flags))
}

/// Chooses one of `candidates` with probability proportional to its weight, or uniformly
/// if all weights are zero. `None` if there are no candidates.
pub fn weighted_choice<'a, R, I>(candidates: I, rng: &mut R) -> Option<&'a ConsensusEntry>
where
    R: Rng + ?Sized,
    I: IntoIterator<Item = (&'a ConsensusEntry, u128)>,
{
    let mut cumulative: Vec<(&'a ConsensusEntry, u128)> = Vec::new();
    let mut total: u128 = 0;
    for (relay, w) in candidates {
        total = total.saturating_add(w);
        cumulative.push((relay, total));
    }
    if cumulative.is_empty() {
        return None;
    }
    if total == 0 {
        let i = rng.random_range(0..cumulative.len());
        return cumulative.get(i).map(|(r, _)| *r);
    }
    let x = rng.random_range(0..total);
    // First entry whose running total exceeds x; zero-weight entries are never chosen.
    let i = cumulative.partition_point(|(_, c)| *c <= x);
    cumulative.get(i).map(|(r, _)| *r)
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
    weighted_choice(
        consensus
            .relays()
            .iter()
            .filter(|r| exit_allows(r, target))
            .map(|r| (r, position_weight(w, r, Position::Exit))),
        rng,
    )
    .ok_or(PathError::NoExit { port: target.port })
}

/// Chooses a middle relay not conflicting with any of `chosen`.
pub fn select_middle<'a, R: Rng + ?Sized>(
    consensus: &'a Consensus,
    chosen: &[&ConsensusEntry],
    rng: &mut R,
) -> Option<&'a ConsensusEntry> {
    let w = consensus.weights();
    weighted_choice(
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
    if !(MIN_PATH_LEN..=MAX_PATH_LEN).contains(&len) {
        return Err(PathError::BadLength(len));
    }
    let exit = select_exit(consensus, target, rng)?;
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
