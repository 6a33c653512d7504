//! Introduction slots (one introduction point and the service's keys there) and their key
//! rotation: when a slot's keys are due and how long a replaced slot keeps answering. The
//! policy here takes `now`; the tasks that own the circuits are in
//! [`super::intro_points`] and [`super::intro_task`].

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::RngExt;
use tokio::sync::watch;
use tracing::debug;

use crate::client::onion_connect::DESCRIPTOR_SKEW;
use crate::crypto::{IdentityKeypair, OnionKeypair};
use crate::dir::ConsensusEntry;
use crate::onion::descriptor::MAX_DESCRIPTOR_LIFETIME;
use crate::onion::replay::{ReplayCache, DEFAULT_REPLAY_CAPACITY};
use crate::sync::lock;

use super::intro_gate::IntroGate;
use super::INTRO_POINTS;

/// Failed establishments at one relay before the service moves to another one.
pub(super) const MAX_INTRO_FAILURES: u32 = 2;
/// An introduction point's keys (`AUTH`, `B`) are replaced after about this long (±
/// [`INTRO_KEY_JITTER`], drawn per point) even when its replay cache is far from full, so
/// a long-running service's caches do not grow forever and a key does not stay linkable
/// across days.
pub const INTRO_KEY_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// Each introduction point's key lifetime is [`INTRO_KEY_LIFETIME`] plus or minus up to
/// this much, drawn when its keys are made: points set up together (at launch) then
/// rotate at different times rather than all in the same tick, so the service is never
/// left with only freshly built points and an observer cannot tie the three rotations
/// together.
pub const INTRO_KEY_JITTER: Duration = Duration::from_secs(2 * 60 * 60);
/// A replaced introduction point keeps answering under its old key for this long: every
/// descriptor listing the old key was built before the replacement, so it expires within
/// a descriptor lifetime (plus the client's clock skew allowance). Then its circuit is
/// closed and its replay cache dropped.
pub(super) const RETIRED_KEY_KEPT: Duration =
    Duration::from_secs(MAX_DESCRIPTOR_LIFETIME as u64 + DESCRIPTOR_SKEW);
/// Replaced introduction points kept at once (each holds a replay cache of up to
/// [`DEFAULT_REPLAY_CAPACITY`] keys); beyond, the oldest is closed early.
pub(super) const MAX_RETIRED: usize = 3 * INTRO_POINTS;

/// One introduction point and the service's keys there.
pub(super) struct IntroSlot {
    pub(super) relay: ConsensusEntry,
    pub(super) auth: Arc<IdentityKeypair>,
    pub(super) enc: Arc<OnionKeypair>,
    pub(super) replay: Arc<Mutex<ReplayCache>>,
    /// The decryption budget of this introduction point (kept across circuit rebuilds).
    pub(super) gate: Arc<Mutex<IntroGate>>,
    /// Set when the slot is retired ([`rotate_slots`]): its decryptions are then charged
    /// to the retired points' joint budget, no longer to the current points'.
    pub(super) retired: Arc<AtomicBool>,
    /// When the keys were generated.
    created: Instant,
    /// How long they are used: [`INTRO_KEY_LIFETIME`] ± [`INTRO_KEY_JITTER`].
    lifetime: Duration,
    /// Dropping this (with the slot) or sending `true` closes the slot's circuit.
    pub(super) close: watch::Sender<bool>,
    /// Set by the introduction circuit's task when the circuit is established; cleared
    /// when it closes.
    pub(super) up: Arc<AtomicBool>,
    /// Set with `up` and never cleared: the point was established at least once, so a
    /// descriptor may list it.
    pub(super) ever_up: Arc<AtomicBool>,
    /// Whether a task currently owns a circuit (or is building one) for this slot.
    pub(super) running: Arc<AtomicBool>,
    pub(super) failures: u32,
}

impl IntroSlot {
    /// A slot at `relay` with fresh keys and an empty replay cache.
    pub(super) fn new(relay: ConsensusEntry, created: Instant, gate: IntroGate) -> Self {
        IntroSlot {
            relay,
            auth: Arc::new(IdentityKeypair::generate(&mut rand::rng())),
            enc: Arc::new(OnionKeypair::generate(&mut rand::rng())),
            replay: Arc::new(Mutex::new(ReplayCache::new(DEFAULT_REPLAY_CAPACITY))),
            gate: Arc::new(Mutex::new(gate)),
            retired: Arc::new(AtomicBool::new(false)),
            created,
            lifetime: jittered_key_lifetime(),
            close: watch::channel(false).0,
            up: Arc::new(AtomicBool::new(false)),
            ever_up: Arc::new(AtomicBool::new(false)),
            running: Arc::new(AtomicBool::new(false)),
            failures: 0,
        }
    }

    /// Whether the slot's keys must be replaced at `now`: see [`key_rotation_due`].
    pub(super) fn rotation_due(&self, now: Instant) -> bool {
        let replay = lock(&self.replay);
        key_rotation_due(
            &replay,
            now.saturating_duration_since(self.created),
            self.lifetime,
        )
    }

    /// Whether a slot whose circuit is down is still worth rebuilding: its relay is in
    /// the consensus and did not fail [`MAX_INTRO_FAILURES`] times in a row.
    pub(super) fn worth_rebuilding(&self, consensus: &crate::dir::Consensus) -> bool {
        self.failures < MAX_INTRO_FAILURES && consensus.relay(self.relay.identity).is_some()
    }
}

/// [`INTRO_KEY_LIFETIME`] ± a uniformly random [`INTRO_KEY_JITTER`] (whole seconds).
fn jittered_key_lifetime() -> Duration {
    let jitter = INTRO_KEY_JITTER.as_secs();
    let offset = rand::rng().random_range(0..=2 * jitter);
    (INTRO_KEY_LIFETIME + Duration::from_secs(offset)).saturating_sub(INTRO_KEY_JITTER)
}

/// Whether an introduction point's keys must be replaced: its replay cache is
/// [`crate::onion::replay::ROTATE_AT_PERCENT`] full (a flood of valid introductions then
/// leads to a new key instead of a full cache refusing everyone) or the keys are
/// `lifetime` old (the slot's jittered [`INTRO_KEY_LIFETIME`]), whichever comes first.
fn key_rotation_due(replay: &ReplayCache, age: Duration, lifetime: Duration) -> bool {
    replay.rotation_due() || age >= lifetime
}

/// An introduction point whose keys were replaced: its circuit keeps answering clients
/// that hold a descriptor listing the old key until `until`.
pub(super) struct Retired {
    pub(super) slot: IntroSlot,
    pub(super) until: Instant,
}

/// Moves the slots whose keys are due for rotation out of `slots` (the main loop then
/// picks new introduction points with fresh keys, and the changed key set makes it upload
/// a new descriptor revision). A rotated slot that was ever established (so descriptors
/// may list it) is kept in `retired` for [`RETIRED_KEY_KEPT`], its circuit rebuilt if it
/// closes ([`refresh_retired`](super::intro_points::refresh_retired)), whether or not the
/// circuit is up at rotation time; retired slots past that time, whose circuit is down
/// after [`MAX_INTRO_FAILURES`] failed rebuilds, or beyond [`MAX_RETIRED`] (oldest first)
/// are dropped, which closes their circuits and frees their replay caches.
pub(super) fn rotate_slots(slots: &mut Vec<IntroSlot>, retired: &mut Vec<Retired>, now: Instant) {
    let (due, keep): (Vec<IntroSlot>, Vec<IntroSlot>) = std::mem::take(slots)
        .into_iter()
        .partition(|s| s.rotation_due(now));
    *slots = keep;
    for slot in due {
        let len = lock(&slot.replay).len();
        debug!(
            "onion service: introduction point keys rotated ({len} introductions remembered, \
             {} s old)",
            now.saturating_duration_since(slot.created).as_secs()
        );
        if slot.ever_up.load(std::sync::atomic::Ordering::Acquire) {
            // From now on its decryptions count against the retired points' budget: the
            // current points' budget covers the points that replace it.
            slot.retired
                .store(true, std::sync::atomic::Ordering::Release);
            retired.push(Retired {
                slot,
                until: now + RETIRED_KEY_KEPT,
            });
        }
    }
    retired.retain(|r| {
        now < r.until
            && (r.slot.running.load(std::sync::atomic::Ordering::Acquire)
                || r.slot.failures < MAX_INTRO_FAILURES)
    });
    while retired.len() > MAX_RETIRED {
        let oldest = retired
            .iter()
            .enumerate()
            .min_by_key(|(_, r)| r.until)
            .map(|(i, _)| i);
        match oldest {
            Some(i) => drop(retired.remove(i)),
            None => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::onion_service::test_support::relay_entry;

    fn test_slot(created: Instant, running: bool) -> IntroSlot {
        let slot = IntroSlot::new(relay_entry(), created, IntroGate::new(10, 50, created));
        slot.running
            .store(running, std::sync::atomic::Ordering::Release);
        slot.ever_up
            .store(running, std::sync::atomic::Ordering::Release);
        slot
    }

    fn fill(slot: &IntroSlot, n: u32) {
        let mut cache = lock(&slot.replay);
        for i in 0..n {
            let mut x = [0u8; 32];
            x[..4].copy_from_slice(&i.to_be_bytes());
            cache.check_and_insert(&x).unwrap();
        }
    }

    #[test]
    fn intro_key_rotation_trigger() {
        let mut cache = ReplayCache::new(DEFAULT_REPLAY_CAPACITY);
        let life = INTRO_KEY_LIFETIME;
        assert!(!key_rotation_due(&cache, Duration::ZERO, life));
        assert!(!key_rotation_due(
            &cache,
            life - Duration::from_secs(1),
            life
        ));
        assert!(key_rotation_due(&cache, life, life), "24 h old");
        for i in 0..80_000u32 {
            let mut x = [0u8; 32];
            x[..4].copy_from_slice(&i.to_be_bytes());
            cache.check_and_insert(&x).unwrap();
        }
        assert!(key_rotation_due(&cache, Duration::ZERO, life), "80% full");
    }

    #[test]
    fn intro_key_lifetimes_are_jittered_per_slot() {
        let t0 = Instant::now();
        let lifetimes: Vec<Duration> = (0..50).map(|_| test_slot(t0, true).lifetime).collect();
        for l in &lifetimes {
            assert!(*l >= INTRO_KEY_LIFETIME - INTRO_KEY_JITTER, "{l:?}");
            assert!(*l <= INTRO_KEY_LIFETIME + INTRO_KEY_JITTER, "{l:?}");
        }
        // 4 h of whole seconds: fifty draws are not all equal (chance 14,401^-49).
        assert!(lifetimes.iter().any(|l| *l != lifetimes[0]));
        // A slot rotates at its own lifetime, not at the common one.
        let slot = test_slot(t0, true);
        assert!(!slot.rotation_due(t0 + slot.lifetime - Duration::from_secs(1)));
        assert!(slot.rotation_due(t0 + slot.lifetime));
    }

    #[test]
    fn rotated_slots_are_retired_until_the_old_descriptor_expires() {
        let t0 = Instant::now();
        let fresh = test_slot(t0, true);
        let old = test_slot(t0, true);
        // Established once, its circuit down when the rotation comes.
        let down = test_slot(t0, false);
        down.ever_up
            .store(true, std::sync::atomic::Ordering::Release);
        // Never established: no descriptor lists it.
        let never = test_slot(t0, false);
        let auths: Vec<_> = [&fresh, &old, &down]
            .iter()
            .map(|s| s.auth.public())
            .collect();
        let mut slots = vec![fresh, old, down, never];
        let mut retired = Vec::new();
        // Nothing due yet.
        rotate_slots(&mut slots, &mut retired, t0);
        assert_eq!((slots.len(), retired.len()), (4, 0));
        // Past the longest jittered lifetime all are due: the ones ever established are
        // retired (still answering under their old keys, the one whose circuit is down
        // to be rebuilt), the one never established is simply dropped.
        let day = t0 + INTRO_KEY_LIFETIME + INTRO_KEY_JITTER;
        rotate_slots(&mut slots, &mut retired, day);
        assert!(slots.is_empty());
        let kept: Vec<_> = retired.iter().map(|r| r.slot.auth.public()).collect();
        assert_eq!(kept, auths);
        assert!(retired.iter().all(|r| r.until == day + RETIRED_KEY_KEPT));
        // Their decryptions now count against the retired points' joint budget.
        assert!(retired
            .iter()
            .all(|r| r.slot.retired.load(std::sync::atomic::Ordering::Acquire)));
        // A slot whose replay cache is 80% full rotates at once (tiny cache for speed).
        let full = test_slot(day, true);
        *lock(&full.replay) = ReplayCache::new(10);
        fill(&full, 8);
        let mut slots = vec![full];
        rotate_slots(&mut slots, &mut retired, day);
        assert!(slots.is_empty());
        assert_eq!(retired.len(), 4);
        // A retired slot whose circuit closed stays to be rebuilt (refresh_retired), until
        // its rebuilds failed MAX_INTRO_FAILURES times in a row; the others stay until the
        // last descriptor naming their key has expired, then are dropped (closing them).
        retired[3]
            .slot
            .running
            .store(false, std::sync::atomic::Ordering::Release);
        rotate_slots(&mut slots, &mut retired, day);
        assert_eq!(retired.len(), 4);
        retired[3].slot.failures = MAX_INTRO_FAILURES;
        let closed = retired[0].slot.close.subscribe();
        rotate_slots(&mut slots, &mut retired, day);
        assert_eq!(retired.len(), 3);
        rotate_slots(&mut slots, &mut retired, day + RETIRED_KEY_KEPT);
        assert!(retired.is_empty());
        assert!(
            closed.has_changed().is_err(),
            "the retired slot's task is told to close"
        );
    }

    #[test]
    fn retired_slots_are_bounded() {
        let t0 = Instant::now();
        let mut retired = Vec::new();
        for i in 0..(MAX_RETIRED as u64 + 2) {
            let mut slots = vec![test_slot(t0, true)];
            rotate_slots(
                &mut slots,
                &mut retired,
                t0 + INTRO_KEY_LIFETIME + INTRO_KEY_JITTER + Duration::from_secs(i),
            );
        }
        assert_eq!(retired.len(), MAX_RETIRED);
        // The oldest went first.
        let first = t0 + INTRO_KEY_LIFETIME + INTRO_KEY_JITTER + RETIRED_KEY_KEPT;
        assert!(retired
            .iter()
            .all(|r| r.until >= first + Duration::from_secs(2)));
    }

    /// Days pass in one step (a suspended machine): at the next tick every current slot is
    /// due, the ones ever established are retired from that moment, and the slots retired
    /// before the jump have outlived their descriptors and are dropped.
    #[test]
    fn a_jump_of_days_rotates_every_slot_and_drops_the_old_retired_ones() {
        let t0 = Instant::now();
        let mut retired = Vec::new();
        // One slot retired at its natural rotation time.
        let first = t0 + INTRO_KEY_LIFETIME + INTRO_KEY_JITTER;
        rotate_slots(&mut vec![test_slot(t0, true)], &mut retired, first);
        assert_eq!(retired.len(), 1);
        let mut slots = vec![
            test_slot(first, true),
            test_slot(first, true),
            test_slot(first, false),
        ];
        // Well within their lifetime: nothing moves.
        rotate_slots(&mut slots, &mut retired, first + Duration::from_secs(60));
        assert_eq!((slots.len(), retired.len()), (3, 1));
        let days = first + 4 * Duration::from_secs(24 * 60 * 60);
        rotate_slots(&mut slots, &mut retired, days);
        assert!(slots.is_empty());
        assert_eq!(
            retired.len(),
            2,
            "the two established slots, not the old one"
        );
        assert!(retired.iter().all(|r| r.until == days + RETIRED_KEY_KEPT));
        // Kept exactly until their descriptors have expired.
        rotate_slots(
            &mut slots,
            &mut retired,
            days + RETIRED_KEY_KEPT - Duration::from_secs(1),
        );
        assert_eq!(retired.len(), 2);
        rotate_slots(&mut slots, &mut retired, days + RETIRED_KEY_KEPT);
        assert!(retired.is_empty());
    }
}
