//! The queue of valid introductions waiting for the service's rate of answered ones,
//! highest puzzle effort first (Tor's proposal 327), and the effort the service suggests
//! from what the queue went through. Pure: every call takes `now`.
//!
//! Without load the queue holds one introduction for an instant. Under a flood, the
//! service answers its `intros_per_second` from the top: a client that spent more effort
//! than the flood is answered next, whatever the flood's size once past the per-point
//! decryption budgets (which come first and cannot see the effort). When full, the lowest
//! effort (the latest of equals) is dropped; an introduction older than the queue's
//! `max_age` is dropped unanswered (its client has likely given up).

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::onion::handshake::HsServiceIntro;
use crate::onion::intro::IntroducePlaintext;
use crate::onion::replay::ReplayCache;

use crate::onion::pow::MAX_SUGGESTED_EFFORT;

/// A valid introduction waiting to be answered.
pub(super) struct Queued {
    pub(super) plain: IntroducePlaintext,
    pub(super) hs: HsServiceIntro,
    /// The replay cache of the introduction point it came through.
    pub(super) replay: Arc<Mutex<ReplayCache>>,
    pub(super) client_x: [u8; 32],
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Nothing of the client's (its rendezvous point, its keys) in logs.
        f.write_str("Queued")
    }
}

/// One waiting introduction.
#[derive(Debug)]
struct Waiting<T> {
    arrived: Instant,
    client_x: [u8; 32],
    item: T,
}

/// What went through the queue since the last [`IntroQueue::take_stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct QueueStats {
    /// Introductions handed out.
    pub(super) served: u64,
    /// Their efforts added up.
    pub(super) served_effort: u64,
    /// Introductions dropped for want of room or for waiting too long.
    pub(super) dropped: u64,
    /// The highest effort among those dropped.
    pub(super) max_dropped_effort: u32,
}

/// Valid introductions in order of effort (highest first; equals in arrival order).
#[derive(Debug)]
pub(super) struct IntroQueue<T> {
    entries: BTreeMap<(u32, Reverse<u64>), Waiting<T>>,
    /// Client keys waiting (an introduction point repeating one INTRODUCE2 takes one place).
    keys: HashSet<[u8; 32]>,
    next_seq: u64,
    capacity: usize,
    max_age: Duration,
    stats: QueueStats,
}

/// An introduction taken from the queue, with its place in it.
#[derive(Debug)]
pub(super) struct Popped<T> {
    key: (u32, Reverse<u64>),
    waiting: Waiting<T>,
}

impl<T> Popped<T> {
    /// Its effort.
    pub(super) fn effort(&self) -> u32 {
        self.key.0
    }

    /// The introduction.
    pub(super) fn item(&self) -> &T {
        &self.waiting.item
    }

    /// Takes the introduction out.
    pub(super) fn into_item(self) -> T {
        self.waiting.item
    }
}

/// Why [`IntroQueue::push`] did not keep an introduction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NotQueued {
    /// The same client key is already waiting.
    Duplicate,
    /// Full of introductions of at least this effort.
    Full,
}

impl<T> IntroQueue<T> {
    /// An empty queue of at most `capacity` (≥ 1) introductions, each waiting `max_age` at
    /// most.
    pub(super) fn new(capacity: usize, max_age: Duration) -> Self {
        IntroQueue {
            entries: BTreeMap::new(),
            keys: HashSet::new(),
            next_seq: 0,
            capacity: capacity.max(1),
            max_age,
            stats: QueueStats::default(),
        }
    }

    /// Introductions waiting.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    fn dropped(&mut self, effort: u32) {
        self.stats.dropped = self.stats.dropped.saturating_add(1);
        self.stats.max_dropped_effort = self.stats.max_dropped_effort.max(effort);
    }

    /// Queues an introduction of `effort` by the client key `client_x`; when full, the
    /// lowest-effort one (this one, if none is lower) is dropped.
    pub(super) fn push(
        &mut self,
        effort: u32,
        client_x: [u8; 32],
        now: Instant,
        item: T,
    ) -> Result<(), NotQueued> {
        if self.keys.contains(&client_x) {
            return Err(NotQueued::Duplicate);
        }
        if self.entries.len() >= self.capacity {
            let lowest = self.entries.first_key_value().map(|(k, _)| k.0);
            match lowest {
                Some(low) if low < effort => {
                    if let Some((_, w)) = self.entries.pop_first() {
                        self.keys.remove(&w.client_x);
                    }
                    self.dropped(low);
                }
                _ => {
                    self.dropped(effort);
                    return Err(NotQueued::Full);
                }
            }
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.keys.insert(client_x);
        self.entries.insert(
            (effort, Reverse(seq)),
            Waiting {
                arrived: now,
                client_x,
                item,
            },
        );
        Ok(())
    }

    /// The highest-effort introduction that has not waited too long (older ones are
    /// dropped on the way). Give it back with [`Self::requeue`] if it cannot be answered
    /// yet, or count it with [`Self::served`].
    pub(super) fn pop(&mut self, now: Instant) -> Option<Popped<T>> {
        while let Some((key, w)) = self.entries.pop_last() {
            self.keys.remove(&w.client_x);
            if now.saturating_duration_since(w.arrived) > self.max_age {
                self.dropped(key.0);
                continue;
            }
            return Some(Popped { key, waiting: w });
        }
        None
    }

    /// Puts a popped introduction back in its place (no rendezvous slot was free).
    pub(super) fn requeue(&mut self, p: Popped<T>) {
        self.keys.insert(p.waiting.client_x);
        self.entries.insert(p.key, p.waiting);
    }

    /// Counts an answered introduction of `effort`.
    pub(super) fn served(&mut self, effort: u32) {
        self.stats.served = self.stats.served.saturating_add(1);
        self.stats.served_effort = self.stats.served_effort.saturating_add(u64::from(effort));
    }

    /// What happened since the last call.
    pub(super) fn take_stats(&mut self) -> QueueStats {
        std::mem::take(&mut self.stats)
    }
}

/// The effort to suggest next, from the one suggested over the last update period and
/// what the queue went through in it. Introductions dropped (the service was overloaded):
/// at least one more than the highest effort dropped and the average answered, never less
/// than before, so a client following the suggestion is answered ahead of everything that
/// was dropped (a flood at effort 0 alone asks for 1, not for ever more). None dropped:
/// two thirds of it (Tor's decrease).
pub(super) fn next_suggested_effort(current: u32, stats: &QueueStats) -> u32 {
    let next = if stats.dropped > 0 {
        let average = stats
            .served_effort
            .checked_div(stats.served)
            .map_or(0, |a| u32::try_from(a).unwrap_or(u32::MAX));
        current
            .max(stats.max_dropped_effort.saturating_add(1))
            .max(average)
    } else {
        current.saturating_mul(2) / 3
    };
    next.min(MAX_SUGGESTED_EFFORT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x(i: u32) -> [u8; 32] {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&i.to_be_bytes());
        k
    }

    /// A flood of effort-0 introductions fills the queue; one client of effort 50 comes
    /// last, yet is the next one served.
    #[test]
    fn higher_effort_is_served_first_whatever_the_flood() {
        let t0 = Instant::now();
        let mut q = IntroQueue::new(64, Duration::from_secs(10));
        for i in 0..1000 {
            let r = q.push(0, x(i), t0, i);
            assert!(i < 64 || r == Err(NotQueued::Full));
        }
        assert_eq!(q.push(50, x(5000), t0, 5000), Ok(()));
        assert_eq!(q.len(), 64);
        let next = |q: &mut IntroQueue<u32>| {
            let p = q.pop(t0).unwrap();
            let e = p.effort();
            q.served(e);
            (e, p.into_item())
        };
        assert_eq!(next(&mut q), (50, 5000));
        // Then the flood, oldest first; one given back keeps its place.
        let first = q.pop(t0).unwrap();
        assert_eq!(*first.item(), 0);
        q.requeue(first);
        assert_eq!(next(&mut q), (0, 0));
        assert_eq!(next(&mut q), (0, 1));
        let s = q.take_stats();
        assert_eq!((s.served, s.served_effort), (3, 50));
        assert_eq!((s.dropped, s.max_dropped_effort), (1000 - 64 + 1, 0));
    }

    #[test]
    fn repeats_take_no_room_and_stale_ones_are_dropped() {
        let t0 = Instant::now();
        let mut q = IntroQueue::new(4, Duration::from_secs(10));
        assert_eq!(q.push(3, x(1), t0, "a"), Ok(()));
        assert_eq!(q.push(9, x(1), t0, "again"), Err(NotQueued::Duplicate));
        let later = t0 + Duration::from_secs(5);
        assert_eq!(q.push(1, x(2), later, "b"), Ok(()));
        // "a" has waited 11 s: dropped; "b" 6 s: served.
        let b = q.pop(t0 + Duration::from_secs(11)).unwrap();
        assert_eq!((b.effort(), b.into_item()), (1, "b"));
        assert!(q.pop(t0).is_none());
        // Its key is free again.
        assert_eq!(q.push(3, x(1), t0, "a"), Ok(()));
        assert_eq!(q.take_stats().max_dropped_effort, 3);
    }

    #[test]
    fn suggested_effort_rises_past_what_was_dropped_and_decays_when_idle() {
        let loaded = QueueStats {
            served: 10,
            served_effort: 400,
            dropped: 90,
            max_dropped_effort: 120,
        };
        assert_eq!(next_suggested_effort(0, &loaded), 121);
        // A free flood (effort 0) asks for 1, and keeps asking for what it asked: it
        // does not ratchet the suggestion up period after period.
        let flood_at_zero = QueueStats {
            served: 10,
            served_effort: 0,
            dropped: 500,
            max_dropped_effort: 0,
        };
        assert_eq!(next_suggested_effort(0, &flood_at_zero), 1);
        let mut e = 1;
        for _ in 0..1000 {
            e = next_suggested_effort(e, &flood_at_zero);
        }
        assert_eq!(e, 1);
        assert_eq!(next_suggested_effort(7, &flood_at_zero), 7);
        let quiet = QueueStats::default();
        assert_eq!(next_suggested_effort(120, &quiet), 80);
        assert_eq!(next_suggested_effort(1, &quiet), 0);
        let extreme = QueueStats {
            dropped: 1,
            max_dropped_effort: u32::MAX,
            ..quiet
        };
        assert_eq!(
            next_suggested_effort(u32::MAX, &extreme),
            MAX_SUGGESTED_EFFORT
        );
    }
}
