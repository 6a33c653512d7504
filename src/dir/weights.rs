//! Bandwidth weights: how much of each class of relay's bandwidth each path position uses.
//!
//! A simplified version of Tor's `Wxy` weights (dir-spec §3.8.3). Relays that are Running
//! and Valid fall into four classes by flags: `g` (Guard, not Exit), `e` (Exit, not Guard),
//! `d` (Guard and Exit), `m` (neither), with total bandwidths `G, E, D, M` and
//! `T = G + E + D + M`. A weight `W_pc` (scale [`WEIGHT_SCALE`] = 10,000) is the fraction of
//! a class-`c` relay's bandwidth used in position `p` (`g`uard, `m`iddle, `e`xit); a relay
//! is chosen for a position with probability proportional to `bandwidth · W_pc`.
//!
//! The aim is that each position gets `T/3`, exits (the scarcest) first:
//!
//! 1. Exit position. If `3(E + D) ≤ T` exits are scarce: `Wee = Wed = S` (all exit
//!    bandwidth goes to exiting). Otherwise `Wee = Wed = ⌊S·T / (3(E + D))⌋`.
//!    `Wme = S − Wee` (the rest of an exit-only relay goes to the middle).
//! 2. Guard position. `d` relays have `dl = S − Wed` left. Supply `U = G·S + D·dl`. If
//!    `3U ≤ T·S` guards are scarce: `Wgg = S, Wgd = dl, Wmg = 0, Wmd = 0`. Otherwise
//!    `Wgg = ⌊T·S² / (3U)⌋`, `Wgd = ⌊dl·Wgg / S⌋`, `Wmg = S − Wgg`, `Wmd = dl − Wgd`.
//! 3. `Wmm = S`.
//!
//! So for each class the weights sum to `S`: `Wgg + Wmg = Wee + Wme = Wgd + Wmd + Wed =
//! Wmm = S`. With `T = 0`: `Wgg = Wmm = Wee = Wed = S` and the others 0.
//! All arithmetic is on integers (`u128`), so every authority computes identical weights.

use serde::{Deserialize, Serialize};

use crate::dir::flags::RelayFlags;

/// Scale of every weight: 10,000 means "all of it".
pub(crate) const WEIGHT_SCALE: u32 = 10_000;

/// A path position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Position {
    /// First hop.
    Guard,
    /// Any hop between guard and exit.
    Middle,
    /// Last hop.
    Exit,
}

/// Per-position bandwidth weights (see the module documentation). Wire form: eight `u32`
/// in field order, each at most [`WEIGHT_SCALE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BandwidthWeights {
    /// Guard-only relays in the guard position.
    pub wgg: u32,
    /// Guard+Exit relays in the guard position.
    pub wgd: u32,
    /// Guard-only relays in the middle position.
    pub wmg: u32,
    /// Unflagged relays in the middle position.
    pub wmm: u32,
    /// Exit-only relays in the middle position.
    pub wme: u32,
    /// Guard+Exit relays in the middle position.
    pub wmd: u32,
    /// Exit-only relays in the exit position.
    pub wee: u32,
    /// Guard+Exit relays in the exit position.
    pub wed: u32,
}

impl Default for BandwidthWeights {
    /// Every relay fully usable in every position it is eligible for.
    fn default() -> Self {
        let s = WEIGHT_SCALE;
        Self {
            wgg: s,
            wgd: s,
            wmg: s,
            wmm: s,
            wme: s,
            wmd: s,
            wee: s,
            wed: s,
        }
    }
}

fn clamp_u32(v: u128) -> u32 {
    u32::try_from(v.min(u128::from(WEIGHT_SCALE))).unwrap_or(WEIGHT_SCALE)
}

impl BandwidthWeights {
    /// Computes the weights from `(flags, bandwidth)` of every relay; only Running and
    /// Valid relays count.
    pub fn compute<I: IntoIterator<Item = (RelayFlags, u64)>>(relays: I) -> Self {
        let s = u128::from(WEIGHT_SCALE);
        let (mut g, mut e, mut d, mut m) = (0u128, 0u128, 0u128, 0u128);
        let usable = RelayFlags::RUNNING.union(RelayFlags::VALID);
        for (flags, bw) in relays {
            if !flags.contains(usable) {
                continue;
            }
            let bw = u128::from(bw);
            match (flags.contains(RelayFlags::GUARD), flags.usable_exit()) {
                (true, false) => g += bw,
                (false, true) => e += bw,
                (true, true) => d += bw,
                (false, false) => m += bw,
            }
        }
        let t = g + e + d + m;
        if t == 0 {
            return Self {
                wmg: 0,
                wme: 0,
                wmd: 0,
                wgd: 0,
                ..Self::default()
            };
        }
        let exits = e + d;
        let wee = if exits == 0 || 3 * exits <= t {
            s
        } else {
            (s * t) / (3 * exits)
        };
        let wee = wee.min(s);
        let dl = s - wee;
        let supply = g * s + d * dl;
        let (wgg, wgd) = if 3 * supply <= t * s {
            (s, dl)
        } else {
            let wgg = ((t * s * s) / (3 * supply)).min(s);
            (wgg, dl * wgg / s)
        };
        Self {
            wgg: clamp_u32(wgg),
            wgd: clamp_u32(wgd),
            wmg: clamp_u32(s - wgg),
            wmm: WEIGHT_SCALE,
            wme: clamp_u32(s - wee),
            wmd: clamp_u32(dl - wgd),
            wee: clamp_u32(wee),
            wed: clamp_u32(wee),
        }
    }

    /// Whether every weight is within `0..=WEIGHT_SCALE`.
    pub fn is_valid(&self) -> bool {
        [
            self.wgg, self.wgd, self.wmg, self.wmm, self.wme, self.wmd, self.wee, self.wed,
        ]
        .iter()
        .all(|&w| w <= WEIGHT_SCALE)
    }

    /// The weight for a relay with `flags` in `position`; 0 if the relay is not eligible
    /// for the position (Guard position needs Guard; Exit position needs Exit).
    pub fn weight(&self, position: Position, flags: RelayFlags) -> u32 {
        let guard = flags.contains(RelayFlags::GUARD);
        let exit = flags.usable_exit();
        match (position, guard, exit) {
            (Position::Guard, true, false) => self.wgg,
            (Position::Guard, true, true) => self.wgd,
            (Position::Guard, false, _) => 0,
            (Position::Middle, true, false) => self.wmg,
            (Position::Middle, false, false) => self.wmm,
            (Position::Middle, false, true) => self.wme,
            (Position::Middle, true, true) => self.wmd,
            (Position::Exit, _, false) => 0,
            (Position::Exit, false, true) => self.wee,
            (Position::Exit, true, true) => self.wed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RV: RelayFlags = RelayFlags::RUNNING.union(RelayFlags::VALID);

    fn cls(guard: bool, exit: bool) -> RelayFlags {
        let mut f = RV;
        f.set(RelayFlags::GUARD, guard);
        f.set(RelayFlags::EXIT, exit);
        f
    }

    fn sums_ok(w: &BandwidthWeights) {
        let s = WEIGHT_SCALE;
        assert_eq!(w.wgg + w.wmg, s, "{w:?}");
        assert_eq!(w.wee + w.wme, s, "{w:?}");
        assert_eq!(w.wgd + w.wmd + w.wed, s, "{w:?}");
        assert!(w.is_valid());
    }

    #[test]
    fn scarce_exits_go_to_exit_position_only() {
        let w = BandwidthWeights::compute([
            (cls(true, false), 300),
            (cls(false, false), 600),
            (cls(false, true), 100),
        ]);
        assert_eq!((w.wee, w.wme), (WEIGHT_SCALE, 0));
        sums_ok(&w);
    }

    #[test]
    fn plentiful_exits_and_guards_are_balanced() {
        let w = BandwidthWeights::compute([
            (cls(true, false), 500),
            (cls(false, false), 100),
            (cls(false, true), 400),
            (cls(true, true), 200),
        ]);
        sums_ok(&w);
        // Exit position gets T/3 = 400 of the 600 exit bandwidth.
        let exit_total = 400 * u64::from(w.wee) + 200 * u64::from(w.wed);
        assert!((exit_total / u64::from(WEIGHT_SCALE)).abs_diff(400) <= 1);
        let guard_total = 500 * u64::from(w.wgg) + 200 * u64::from(w.wgd);
        assert!((guard_total / u64::from(WEIGHT_SCALE)).abs_diff(400) <= 1);
    }

    #[test]
    fn empty_and_non_running() {
        let w = BandwidthWeights::compute([(RelayFlags::GUARD, 100)]);
        assert!(w.is_valid());
        assert_eq!(w.weight(Position::Guard, cls(true, false)), WEIGHT_SCALE);
        assert_eq!(w.weight(Position::Exit, cls(true, false)), 0);
    }
}
