//! What the network's clocks say about ours. Relays and authorities send their clock in
//! NETINFO; the client keeps the offset each distinct peer showed and, when a consensus
//! is refused for its time, says whether our clock is the one that is wrong. The estimate
//! only words a warning: consensus validity never depends on a peer's timestamp, so a
//! lying relay can make the client accept nothing.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;

use crate::clock::human;
use crate::crypto::IdentityPublic;
use crate::dir::consensus::DEFAULT_CONSENSUS_SKEW;
use crate::sync::lock;

/// Peers whose offsets are kept (the most recent, one per identity).
const MAX_SAMPLES: usize = 32;

/// Fewest distinct peers that must agree before our clock is called wrong: one relay's
/// timestamp, true or not, never decides it.
const MIN_AGREEING: usize = 2;

/// An offset beyond this (the skew a consensus tolerates) counts as disagreeing.
const WRONG_CLOCK_SECS: u64 = DEFAULT_CONSENSUS_SKEW;

/// At most one "your clock is wrong" warning per this interval.
const WARN_EVERY: Duration = Duration::from_secs(3600);

/// The conclusion that our clock is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrongClock {
    /// How far our clock is ahead of the network (negative: behind), in seconds: the
    /// median of the agreeing peers' offsets.
    pub ours_ahead_by: i64,
    /// Distinct peers whose clocks say so.
    pub agreeing: usize,
}

impl std::fmt::Display for WrongClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let side = if self.ours_ahead_by > 0 {
            "ahead of"
        } else {
            "behind"
        };
        write!(
            f,
            "your clock is {} {side} the network ({} relays agree); fix the system clock",
            human(self.ours_ahead_by.unsigned_abs()),
            self.agreeing
        )
    }
}

/// Offsets of the peers' clocks from ours, one per peer identity.
#[derive(Debug, Default)]
pub struct SkewTracker {
    /// (peer, peer clock − our clock in seconds), oldest first.
    samples: Mutex<VecDeque<(IdentityPublic, i64)>>,
    warned: Mutex<Option<Instant>>,
}

impl SkewTracker {
    /// Records what `peer` said its clock was (`peer_timestamp`, Unix seconds) when ours
    /// read `now`. A zero timestamp (clients send 0) says nothing and is ignored.
    pub fn record(&self, peer: IdentityPublic, peer_timestamp: u64, now: u64) {
        if peer_timestamp == 0 {
            return;
        }
        let offset = i64::try_from(i128::from(peer_timestamp) - i128::from(now)).unwrap_or(0);
        let mut samples = lock(&self.samples);
        samples.retain(|(id, _)| *id != peer);
        if samples.len() >= MAX_SAMPLES {
            samples.pop_front();
        }
        samples.push_back((peer, offset));
    }

    /// Forgets every sample: after a wall-clock jump they compare the peers' clocks with
    /// ours as it read before, and would blame a clock that is now right.
    pub fn forget_all(&self) {
        lock(&self.samples).clear();
    }

    /// Whether a strict majority of the distinct peers seen, and at least
    /// [`MIN_AGREEING`] of them, put our clock more than the tolerated skew off in the
    /// same direction.
    pub fn verdict(&self) -> Option<WrongClock> {
        let samples = lock(&self.samples);
        let total = samples.len();
        let limit = i64::try_from(WRONG_CLOCK_SECS).unwrap_or(i64::MAX);
        [true, false].into_iter().find_map(|ours_ahead| {
            let mut agreeing: Vec<i64> = samples
                .iter()
                .map(|(_, off)| *off)
                .filter(|off| {
                    if ours_ahead {
                        *off < -limit
                    } else {
                        *off > limit
                    }
                })
                .collect();
            if agreeing.len() < MIN_AGREEING || agreeing.len() * 2 <= total {
                return None;
            }
            agreeing.sort_unstable();
            let median = agreeing.get(agreeing.len() / 2).copied().unwrap_or(0);
            Some(WrongClock {
                ours_ahead_by: median.saturating_neg(),
                agreeing: agreeing.len(),
            })
        })
    }

    /// After a consensus was refused for its time: warns (at most once per
    /// [`WARN_EVERY`]) if the network's clocks say ours is wrong. Returns the verdict.
    pub fn warn_if_wrong(&self) -> Option<WrongClock> {
        let verdict = self.verdict()?;
        let mut warned = lock(&self.warned);
        if warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            *warned = Some(Instant::now());
            warn!("client: the consensus is refused for its time: {verdict}");
        }
        Some(verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::IdentityKeypair;

    const NOW: u64 = 1_800_000_000;
    const HOUR: u64 = 3600;

    fn peer() -> IdentityPublic {
        IdentityKeypair::generate(&mut rand::rng()).public()
    }

    #[test]
    fn honest_peers_that_agree_with_us_say_nothing() {
        let t = SkewTracker::default();
        for _ in 0..5 {
            t.record(peer(), NOW + 3, NOW);
        }
        assert_eq!(t.verdict(), None);
    }

    #[test]
    fn a_majority_of_peers_names_our_clock_ahead_or_behind() {
        let t = SkewTracker::default();
        for i in 0..3 {
            t.record(peer(), NOW - 3 * HOUR + i, NOW);
        }
        t.record(peer(), NOW, NOW);
        let v = t.verdict().expect("3 of 4 agree");
        assert_eq!(v.agreeing, 3);
        assert!((3 * HOUR as i64 - 2..=3 * HOUR as i64).contains(&v.ours_ahead_by));
        assert!(
            v.to_string().starts_with(
                "your clock is 3 h 0 min ahead of the network (3 relays agree); fix the system clock"
            ),
            "{v}"
        );
        let t = SkewTracker::default();
        t.record(peer(), NOW + 2 * 86_400, NOW);
        t.record(peer(), NOW + 2 * 86_400, NOW);
        assert!(t
            .verdict()
            .is_some_and(|v| v.to_string().contains("behind")));
    }

    /// The attacker runs one relay and sends any timestamp it likes.
    #[test]
    fn one_lying_relay_cannot_call_our_clock_wrong() {
        let t = SkewTracker::default();
        let liar = peer();
        t.record(liar, NOW + 30 * 86_400, NOW);
        assert_eq!(t.verdict(), None, "one peer alone never decides");
        // Repeating itself (new channels, same identity) counts once.
        for _ in 0..10 {
            t.record(liar, NOW + 30 * 86_400, NOW);
        }
        assert_eq!(t.verdict(), None);
        // Against honest peers it is outvoted.
        t.record(peer(), NOW, NOW);
        t.record(peer(), NOW + 1, NOW);
        assert_eq!(t.verdict(), None);
        assert_eq!(t.warn_if_wrong(), None);
    }

    #[test]
    fn zero_timestamps_are_ignored_and_samples_bounded() {
        let t = SkewTracker::default();
        t.record(peer(), 0, NOW);
        t.record(peer(), 0, NOW);
        assert_eq!(t.verdict(), None);
        for _ in 0..(MAX_SAMPLES * 3) {
            t.record(peer(), NOW + 5 * HOUR, NOW);
        }
        assert_eq!(lock(&t.samples).len(), MAX_SAMPLES);
        assert_eq!(t.verdict().map(|v| v.agreeing), Some(MAX_SAMPLES));
    }
}
