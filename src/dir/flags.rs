//! Relay flags: an authority's judgement of a relay, and how it is reached.

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::dir::descriptor::Descriptor;

/// A set of relay flags. Wire form: one byte, bits as the constants below; unknown bits are
/// refused so each set has one encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct RelayFlags(u8);

/// A flag byte had undefined bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("relay flags byte {0:#04x} has undefined bits set")]
pub struct BadFlags(pub u8);

impl RelayFlags {
    /// The authority reached the relay recently.
    pub const RUNNING: Self = Self(0x01);
    /// The relay's descriptor verified and the authority accepts the relay.
    pub const VALID: Self = Self(0x02);
    /// Suitable as an entry guard (fast, stable, well above median bandwidth).
    pub const GUARD: Self = Self(0x04);
    /// Exits to public addresses on at least ports 80 and 443.
    pub const EXIT: Self = Self(0x08);
    /// Enough bandwidth for general use.
    pub const FAST: Self = Self(0x10);
    /// Long enough uptime for long-lived circuits.
    pub const STABLE: Self = Self(0x20);
    /// The authorities' exit checks caught this exit altering or cutting traffic: clients
    /// never use it as an exit (it may still be a guard or middle).
    pub const BAD_EXIT: Self = Self(0x40);
    /// Every defined bit.
    pub const ALL: Self = Self(0x7f);

    const NAMES: [(Self, &'static str); 7] = [
        (Self::RUNNING, "Running"),
        (Self::VALID, "Valid"),
        (Self::GUARD, "Guard"),
        (Self::EXIT, "Exit"),
        (Self::FAST, "Fast"),
        (Self::STABLE, "Stable"),
        (Self::BAD_EXIT, "BadExit"),
    ];

    /// No flags.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// The raw bits.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Builds a set from bits, refusing undefined ones.
    pub const fn from_bits(bits: u8) -> Option<Self> {
        if bits & !Self::ALL.0 == 0 {
            Some(Self(bits))
        } else {
            None
        }
    }

    /// Whether the relay may be used as an exit: Exit set and BadExit not.
    pub const fn usable_exit(self) -> bool {
        self.contains(Self::EXIT) && !self.contains(Self::BAD_EXIT)
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union.
    #[must_use]
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Sets the flags of `other` if `on`.
    pub fn set(&mut self, other: Self, on: bool) {
        if on {
            self.0 |= other.0;
        } else {
            self.0 &= !other.0;
        }
    }

    /// Each single flag, for iteration.
    pub fn each() -> impl Iterator<Item = Self> {
        Self::NAMES.iter().map(|(f, _)| *f)
    }
}

impl TryFrom<u8> for RelayFlags {
    type Error = BadFlags;
    fn try_from(v: u8) -> Result<Self, BadFlags> {
        Self::from_bits(v).ok_or(BadFlags(v))
    }
}

impl From<RelayFlags> for u8 {
    fn from(f: RelayFlags) -> u8 {
        f.0
    }
}

impl fmt::Debug for RelayFlags {
    /// Flag names separated by `|`, e.g. `Running|Valid|Fast`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (flag, name) in Self::NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("(none)")?;
        }
        Ok(())
    }
}

/// Configuration of flag assignment. Defaults follow Tor's magnitudes; test networks
/// should lower `stable_uptime` to seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagParams {
    /// A relay with at least this bandwidth (bytes/s) is always Fast.
    pub fast_bandwidth_guarantee: u64,
    /// Minimum observed uptime (seconds) for Stable.
    pub stable_uptime: u64,
    /// Ports an exit must allow to some public address for the Exit flag.
    pub exit_ports: Vec<u16>,
    /// Count special-purpose addresses (loopback, private) as destinations for the Exit
    /// flag: only for test networks whose destinations are all local.
    pub exit_allow_special: bool,
}

impl Default for FlagParams {
    fn default() -> Self {
        Self {
            fast_bandwidth_guarantee: 100 * 1024,
            stable_uptime: 5 * 24 * 60 * 60,
            exit_ports: vec![80, 443],
            exit_allow_special: false,
        }
    }
}

/// Thresholds derived from the whole population an authority observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagThresholds {
    /// Fast iff bandwidth ≥ this.
    pub fast_bandwidth: u64,
    /// Guard needs bandwidth ≥ this (the low median of running relays).
    pub guard_bandwidth: u64,
    /// Stable iff uptime ≥ this.
    pub stable_uptime: u64,
}

impl FlagThresholds {
    /// Computes thresholds from the bandwidths of the running, valid relays:
    /// Fast = bandwidth ≥ min(guarantee, the value at the 1/8 quantile), so at least the
    /// top 7/8 are Fast; Guard bandwidth = the low median.
    pub fn compute(params: &FlagParams, running_bandwidths: &[u64]) -> Self {
        let mut bw = running_bandwidths.to_vec();
        bw.sort_unstable();
        // Fallbacks are correct: no running relay means no threshold (0); for a non-empty
        // list both indexes are in range.
        let eighth = bw.get(bw.len() / 8).copied().unwrap_or(0);
        let median = low_median(&bw).unwrap_or(0);
        Self {
            fast_bandwidth: params.fast_bandwidth_guarantee.min(eighth),
            guard_bandwidth: median,
            stable_uptime: params.stable_uptime,
        }
    }
}

/// The low median of `sorted` (the lower middle value for an even count), `None` if it is
/// empty.
pub(crate) fn low_median(sorted: &[u64]) -> Option<u64> {
    sorted.get(sorted.len().checked_sub(1)? / 2).copied()
}

/// What an authority knows about one relay when voting.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// The relay's verified descriptor.
    pub descriptor: &'a Descriptor,
    /// The authority reached the relay (link handshake proving its identity) recently.
    pub reachable: bool,
    /// The descriptor verified and the relay is not refused by the authority's own policy.
    pub valid: bool,
    /// Bandwidth the authority assigns: measured if it measures, else the declared value.
    pub bandwidth: u64,
    /// Continuous uptime the authority observed, seconds.
    pub uptime: u64,
}

/// Assigns flags: Running = reachable; Valid = valid; the rest only for Running and Valid
/// relays: Fast = bandwidth ≥ fast threshold; Stable = uptime ≥ stable threshold;
/// Guard = Fast ∧ Stable ∧ bandwidth ≥ guard threshold; Exit = descriptor offers exit ∧
/// its policy allows every `exit_ports` port to some public address.
pub fn assign_flags(obs: &Observation<'_>, params: &FlagParams, t: &FlagThresholds) -> RelayFlags {
    let mut f = RelayFlags::empty();
    f.set(RelayFlags::RUNNING, obs.reachable);
    f.set(RelayFlags::VALID, obs.valid);
    if !(obs.reachable && obs.valid) {
        return f;
    }
    let fast = obs.bandwidth >= t.fast_bandwidth;
    let stable = obs.uptime >= t.stable_uptime;
    f.set(RelayFlags::FAST, fast);
    f.set(RelayFlags::STABLE, stable);
    f.set(
        RelayFlags::GUARD,
        fast && stable && obs.bandwidth >= t.guard_bandwidth,
    );
    let policy = &obs.descriptor.exit_policy;
    let exit = obs.descriptor.exit
        && params.exit_ports.iter().all(|&p| {
            if params.exit_allow_special {
                policy.might_allow_port(p)
            } else {
                policy.allows_port_to_public(p)
            }
        });
    f.set(RelayFlags::EXIT, exit);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_median_is_the_lower_middle_value() {
        assert_eq!(low_median(&[]), None);
        assert_eq!(low_median(&[5]), Some(5));
        assert_eq!(low_median(&[1, 2]), Some(1));
        assert_eq!(low_median(&[1, 2, 3]), Some(2));
        assert_eq!(low_median(&[1, 2, 3, 4]), Some(2));
    }
}
