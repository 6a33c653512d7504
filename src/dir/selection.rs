//! What path selection (`path.rs`) and guard sampling (`guards.rs`) share: which relays may
//! not share a path, the flags every hop needs, bandwidth-weighted choice, and why no path
//! could be built. Its own file so that neither of the two imports the other.

use std::net::{IpAddr, SocketAddr};

use rand::{Rng, RngExt};

use crate::dir::consensus::ConsensusEntry;
use crate::dir::flags::RelayFlags;
use crate::dir::weights::{BandwidthWeights, Position};

/// Default number of hops.
pub const DEFAULT_PATH_LEN: usize = 3;
/// Fewest hops a path may have (guard and exit).
pub const MIN_PATH_LEN: usize = 2;
/// Most hops a path may have (the RELAY_EARLY limit, see protocol.md §2.3).
pub const MAX_PATH_LEN: usize = 8;

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
    /// No Running, Valid exit's UDP policy allows the target.
    #[error("no running exit relay allows UDP to port {port}")]
    NoUdpExit {
        /// The target port.
        port: u16,
    },
    /// No usable guard compatible with the chosen exit.
    #[error("no usable guard compatible with the chosen exit")]
    NoGuard,
    /// No relay can fill a middle position without a conflict.
    #[error("no relay can fill middle position {0} without a conflict")]
    NoMiddle(usize),
    /// No vanguard (docs/protocol.md §8.10) is listed and free of conflicts with the
    /// circuit's guard and last hop.
    #[error("no vanguard can be the second hop without a conflict")]
    NoVanguard,
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

/// Unusable relays drawn (and dropped) before [`weighted_usable_choice`] validates every
/// candidate at once.
const UNUSABLE_REDRAWS: usize = 8;

/// [`weighted_choice`] among the candidates whose listed identity is a usable ed25519 key.
/// Identities in a consensus are validated only when used: the relay drawn is validated;
/// if it fails (the authorities listed bytes that are not a usable key: a bug or a lie) it
/// is dropped and the draw repeated (rejection sampling: each usable candidate still gets
/// exactly its weighted share), validating only what is drawn. After
/// [`UNUSABLE_REDRAWS`] such draws every candidate is validated at once, which bounds the
/// work a consensus listing many heavy unusable relays can cause per choice.
pub fn weighted_usable_choice<'a, R, I>(candidates: I, rng: &mut R) -> Option<&'a ConsensusEntry>
where
    R: Rng + ?Sized,
    I: IntoIterator<Item = (&'a ConsensusEntry, u128)>,
{
    let mut candidates: Vec<(&'a ConsensusEntry, u128)> = candidates.into_iter().collect();
    for _ in 0..UNUSABLE_REDRAWS {
        let drawn = weighted_choice(candidates.iter().copied(), rng)?;
        if drawn.validated_identity().is_ok() {
            return Some(drawn);
        }
        candidates.retain(|(r, _)| !std::ptr::eq(*r, drawn));
    }
    candidates.retain(|(r, _)| r.validated_identity().is_ok());
    weighted_choice(candidates, rng)
}

/// A candidate chosen uniformly at random among those whose listed identity is a usable
/// key (validated as in [`weighted_usable_choice`]).
pub fn uniform_usable_choice<'a, R, I>(candidates: I, rng: &mut R) -> Option<&'a ConsensusEntry>
where
    R: Rng + ?Sized,
    I: IntoIterator<Item = &'a ConsensusEntry>,
{
    weighted_usable_choice(candidates.into_iter().map(|r| (r, 0)), rng)
}
