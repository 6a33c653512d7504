//! The service-wide introduction budgets and the order an INTRODUCE2 meets them in
//! ([`screen_introduction`]). Pure: every decision takes `now`, so the tests below run
//! hours of floods in microseconds.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sync::lock;

use super::intro_gate::IntroGate;
use super::intro_queue::IntroQueue;
use super::INTRO_POINTS;

/// Which joint decryption budget an introduction point is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PointGroup {
    /// One of the (at most [`INTRO_POINTS`]) points the latest descriptors list.
    Current,
    /// A point whose keys were replaced, kept for clients with older descriptors.
    Retired,
}

/// The service-wide introduction budgets, in the order an INTRODUCE2 meets them (after
/// its own introduction point's [`IntroGate`]; see [`screen_introduction`]).
#[derive(Debug)]
pub(super) struct IntroBudget {
    /// Decryptions by the current introduction points together: [`INTRO_POINTS`] times
    /// one point's rate and burst. It never refuses a current point that its own gate
    /// admitted: at most [`INTRO_POINTS`] points are current at once, the first ones
    /// start full like this bucket and any later one (replacing a point that was
    /// retired or dropped, whose tokens leave with it) starts empty, and each point
    /// refills at a third of this rate; so this bucket always holds at least the
    /// current points' tokens together. Garbage through some points therefore cannot
    /// crowd out honest introductions through another current point: each gets its own
    /// rate and burst. (It still bounds the total if that reasoning ever stops holding;
    /// an introduction being screened at the very moment its point is retired may be
    /// charged here once more.)
    current: IntroGate,
    /// Decryptions by the retired points together (at most
    /// [`MAX_RETIRED`](super::intro_slot::MAX_RETIRED)): one point's rate and burst, so
    /// flooding them adds at most one point's worth of work, and takes nothing from the
    /// current points. Retired points can crowd out each other's
    /// honest introductions (clients holding a descriptor older than the last rotation).
    retired: IntroGate,
    /// The current one-second window and the introductions answered in it.
    window: (Instant, u32),
    /// Introductions answered per second.
    per_second: u32,
}

impl IntroBudget {
    /// `per_second` answered introductions (at least 1); decryptions: [`INTRO_POINTS`]
    /// times `point` (one introduction point's rate and burst) for the current points,
    /// once `point` for the retired ones.
    pub(super) fn new(per_second: u32, point: (u32, u32), now: Instant) -> Self {
        let points = INTRO_POINTS as u32;
        IntroBudget {
            current: IntroGate::new(
                point.0.max(1).saturating_mul(points),
                point.1.max(1).saturating_mul(points),
                now,
            ),
            retired: IntroGate::new(point.0, point.1, now),
            window: (now, 0),
            per_second: per_second.max(1),
        }
    }

    /// The joint decryption budget of `group`.
    pub(super) fn decrypt(&mut self, group: PointGroup) -> &mut IntroGate {
        match group {
            PointGroup::Current => &mut self.current,
            PointGroup::Retired => &mut self.retired,
        }
    }

    /// Takes one answered introduction of the current second's budget.
    pub(super) fn admit_meeting(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.window.0) >= Duration::from_secs(1) {
            self.window = (now, 0);
        }
        if self.window.1 >= self.per_second {
            return false;
        }
        self.window.1 += 1;
        true
    }

    /// Gives back what [`Self::admit_meeting`] took at `now` (the introduction was not
    /// acted on after all). Nothing if that window has since been replaced: a later
    /// window starts after `now`, and its count is not ours to lower.
    pub(super) fn refund_meeting(&mut self, now: Instant) {
        if self.window.0 <= now {
            self.window.1 = self.window.1.saturating_sub(1);
        }
    }
}

/// Why an introduction was dropped by [`screen_introduction`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dropped {
    /// Its introduction point is over its decryption budget.
    PointBudget,
    /// The introduction point's group (current or retired points) is over its joint
    /// decryption budget.
    DecryptBudget,
    /// It did not decrypt, was a replay, was malformed or lacked a valid puzzle solution
    /// (`open` said so).
    Invalid,
    /// The service already answered its introductions of this second (the introduction
    /// waits in the queue).
    MeetRate,
    /// Within the rate, but no rendezvous slot was free (`act` said so); the rate was
    /// given back.
    NoSlot,
}

/// Runs an INTRODUCE2 through its introduction point's gate and its group's joint
/// decryption gate before `open` (which does the public-key work, the puzzle and replay
/// checks and returns `None` for anything not worth a rendezvous). What `open` accepted
/// then waits in the service's [`IntroQueue`] for [`answer_next`]: only introductions
/// `open` accepted are charged to the rate of answered ones, so introductions that fail
/// cannot crowd out honest ones arriving through another point; the decryption gates
/// bound what the failing ones cost.
pub(super) fn screen_introduction<T>(
    point: &Mutex<IntroGate>,
    group: PointGroup,
    budget: &Mutex<IntroBudget>,
    now: Instant,
    open: impl FnOnce() -> Option<T>,
) -> Result<T, Dropped> {
    // The point's own gate first: a point over its budget (a flooding one) never
    // touches the joint one. A joint refusal gives the point its token back, so a point
    // whose group is flooded through another point keeps its own budget.
    if !lock(point).admit_at(now) {
        return Err(Dropped::PointBudget);
    }
    if !lock(budget).decrypt(group).admit_at(now) {
        lock(point).refund();
        return Err(Dropped::DecryptBudget);
    }
    open().ok_or(Dropped::Invalid)
}

/// Answers the queue's next introduction (the highest effort) within the service-wide
/// rate: `None` if none waits; `MeetRate` if this second's answers are spent (the
/// introduction keeps waiting); `NoSlot` if `act` (which takes a rendezvous slot and
/// records the introduction in its replay cache) found no slot: the introduction goes
/// back to its place (it waits for a slot, or until it is too old) and the rate is given
/// back; any other refusal by `act` (a replay) drops it, the rate given back too. Only one within the rate takes a slot (taking the last one, or finding none,
/// makes an idle rendezvous circuit give its slot up, see
/// [`RendezvousSlots`](super::rendezvous::RendezvousSlots)), so introductions the
/// service will not answer anyway cannot close other clients' sessions.
pub(super) fn answer_next<T, U>(
    queue: &Mutex<IntroQueue<T>>,
    budget: &Mutex<IntroBudget>,
    now: Instant,
    act: impl FnOnce(&T) -> Result<U, Dropped>,
) -> Option<Result<(T, U), Dropped>> {
    if lock(queue).len() == 0 {
        return None;
    }
    if !lock(budget).admit_meeting(now) {
        return Some(Err(Dropped::MeetRate));
    }
    let Some(popped) = lock(queue).pop(now) else {
        // Everything waiting had waited too long.
        lock(budget).refund_meeting(now);
        return None;
    };
    match act(popped.item()) {
        Ok(acted) => {
            lock(queue).served(popped.effort());
            Some(Ok((popped.into_item(), acted)))
        }
        Err(Dropped::NoSlot) => {
            lock(queue).requeue(popped);
            lock(budget).refund_meeting(now);
            Some(Err(Dropped::NoSlot))
        }
        Err(other) => {
            lock(budget).refund_meeting(now);
            Some(Err(other))
        }
    }
}

/// When the current window of answered introductions ends (the next answer may come then).
impl IntroBudget {
    pub(super) fn window_ends(&self) -> Instant {
        self.window.0 + Duration::from_secs(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::onion_service::intro_slot::MAX_RETIRED;

    /// [`screen_introduction`], then answered at once if within the rate.
    fn screen<T>(
        point: &Mutex<IntroGate>,
        group: PointGroup,
        budget: &Mutex<IntroBudget>,
        now: Instant,
        open: impl FnOnce() -> Option<T>,
    ) -> Result<T, Dropped> {
        let v = screen_introduction(point, group, budget, now, open)?;
        if lock(budget).admit_meeting(now) {
            Ok(v)
        } else {
            Err(Dropped::MeetRate)
        }
    }

    /// The rate of answered introductions is checked before `act` (which takes a
    /// rendezvous slot and records the introduction as seen): an introduction over the
    /// rate takes no slot, is not recorded and keeps waiting; one that finds no slot gives
    /// its place in the rate back.
    #[test]
    fn rate_is_checked_before_a_slot_is_taken_and_refunded_without_one() {
        let t0 = Instant::now();
        let budget = Mutex::new(IntroBudget::new(2, (100, 100), t0));
        let queue = Mutex::new(IntroQueue::new(64, Duration::from_secs(10)));
        let mut acted = 0;
        // No slot free, many times over: the introduction keeps its place, every try is
        // refunded, the rate stays unused.
        lock(&queue).push(0, [9; 32], t0, 9u8).unwrap();
        for _ in 0..10 {
            let r = answer_next(&queue, &budget, t0, |_| {
                acted += 1;
                Err::<(), _>(Dropped::NoSlot)
            });
            assert_eq!(r, Some(Err(Dropped::NoSlot)));
        }
        assert_eq!(acted, 10);
        assert_eq!(lock(&budget).window.1, 0);
        assert_eq!(lock(&queue).len(), 1);
        // Slots free: the rate (2 per second) admits two, the third waits for the next
        // window without reaching `act`.
        for i in 0..2u8 {
            lock(&queue).push(0, [i; 32], t0, i).unwrap();
        }
        for expect in [
            Some(Ok((9, ()))),
            Some(Ok((0, ()))),
            Some(Err(Dropped::MeetRate)),
        ] {
            let r = answer_next(&queue, &budget, t0, |_| {
                acted += 1;
                Ok(())
            });
            assert_eq!(r, expect);
        }
        assert_eq!(acted, 12);
        assert_eq!(lock(&queue).len(), 1);
        let t1 = lock(&budget).window_ends();
        // A refusal other than NoSlot (a replay) drops it, the rate given back.
        assert_eq!(
            answer_next(&queue, &budget, t1, |_| Err::<(), _>(Dropped::Invalid)),
            Some(Err(Dropped::Invalid))
        );
        assert_eq!(lock(&queue).len(), 0);
        assert!(lock(&budget).admit_meeting(t1));
        // A refund for a window that has since been replaced lowers nothing.
        let mut b = lock(&budget);
        b.refund_meeting(t0);
        assert_eq!(b.window, (t1, 1));
    }

    /// Introduction points A and B deliver garbage far beyond their budget, C honest
    /// introductions at its rate: every honest one is answered (the garbage is never
    /// charged to the service-wide rate), and the decryptions stay within the points'
    /// budgets.
    #[test]
    fn garbage_from_two_points_does_not_crowd_out_the_third() {
        let t0 = Instant::now();
        let gates: Vec<Mutex<IntroGate>> = (0..3)
            .map(|_| Mutex::new(IntroGate::new(10, 50, t0)))
            .collect();
        let budget = Mutex::new(IntroBudget::new(20, (10, 50), t0));
        let mut decrypted = 0u32;
        let mut answered = 0u32;
        let seconds = 10u64;
        // Every 5 ms: A and B one garbage INTRODUCE2 each (200/s), C one honest
        // introduction every 100 ms (10/s).
        for step in 0..(seconds * 200) {
            let now = t0 + Duration::from_millis(5 * step);
            for gate in &gates[..2] {
                let r = screen(gate, PointGroup::Current, &budget, now, || {
                    decrypted += 1;
                    None::<()>
                });
                assert_ne!(r, Err(Dropped::MeetRate));
            }
            if step % 20 == 0 {
                let r = screen(&gates[2], PointGroup::Current, &budget, now, || {
                    decrypted += 1;
                    Some(())
                });
                assert_eq!(r, Ok(()), "honest introduction dropped at step {step}");
                answered += 1;
            }
        }
        assert_eq!(answered, 10 * seconds as u32);
        // Decryptions: each garbage point its burst plus its rate, C its 100.
        assert!(
            decrypted <= 2 * (50 + 10 * seconds as u32) + 100,
            "{decrypted}"
        );
    }

    /// The service-wide rate still caps answered introductions, and all points together
    /// (retired ones included) never decrypt more than INTRO_POINTS + 1 times one
    /// point's budget.
    #[test]
    fn service_wide_budgets_still_bound_the_work() {
        let t0 = Instant::now();
        // Twelve points (three current, nine retired), all flooding valid introductions.
        let gates: Vec<(Mutex<IntroGate>, PointGroup)> = (0..INTRO_POINTS + MAX_RETIRED)
            .map(|i| {
                let group = if i < INTRO_POINTS {
                    PointGroup::Current
                } else {
                    PointGroup::Retired
                };
                (Mutex::new(IntroGate::new(10, 50, t0)), group)
            })
            .collect();
        let budget = Mutex::new(IntroBudget::new(20, (10, 50), t0));
        let (mut decrypted, mut answered, mut over_rate) = (0u64, 0u64, 0u64);
        let seconds = 20u64;
        for step in 0..(seconds * 100) {
            let now = t0 + Duration::from_millis(10 * step);
            for (gate, group) in &gates {
                match screen(gate, *group, &budget, now, || {
                    decrypted += 1;
                    Some(())
                }) {
                    Ok(()) => answered += 1,
                    Err(Dropped::MeetRate) => over_rate += 1,
                    Err(_) => {}
                }
            }
        }
        let points = INTRO_POINTS as u64 + 1;
        assert!(decrypted <= points * (50 + 10 * seconds), "{decrypted}");
        assert!(answered <= 20 * (seconds + 1), "{answered}");
        assert!(over_rate > 0);
    }

    /// Nine retired points and two current ones flood garbage; halfway through, one
    /// flooding current point is retired (it keeps flooding, now as a retired point) and
    /// replaced by a new current point, which floods too. The honest current point's
    /// introductions at its rate are all answered throughout, and the retired points
    /// together decrypt no more than one point's budget.
    #[test]
    fn garbage_through_retired_points_does_not_crowd_out_current_ones() {
        let t0 = Instant::now();
        let budget = Mutex::new(IntroBudget::new(20, (10, 50), t0));
        let mut points: Vec<(Mutex<IntroGate>, PointGroup)> = (0..MAX_RETIRED)
            .map(|_| (Mutex::new(IntroGate::new(10, 50, t0)), PointGroup::Retired))
            .chain((0..2).map(|_| (Mutex::new(IntroGate::new(10, 50, t0)), PointGroup::Current)))
            .collect();
        let honest = Mutex::new(IntroGate::new(10, 50, t0));
        let (mut retired_decrypted, mut answered) = (0u64, 0u64);
        let seconds = 20u64;
        for step in 0..(seconds * 200) {
            let now = t0 + Duration::from_millis(5 * step);
            if step == seconds * 100 {
                // Rotation: the last flooding current point joins the retired group, a
                // new (empty) one takes its place.
                if let Some(last) = points.last_mut() {
                    last.1 = PointGroup::Retired;
                }
                points.push((
                    Mutex::new(IntroGate::empty(10, 50, now)),
                    PointGroup::Current,
                ));
            }
            for (gate, group) in &points {
                let r = screen(gate, *group, &budget, now, || {
                    if *group == PointGroup::Retired {
                        retired_decrypted += 1;
                    }
                    None::<()>
                });
                assert!(
                    r == Err(Dropped::Invalid)
                        || r == Err(Dropped::PointBudget)
                        || (r == Err(Dropped::DecryptBudget) && *group == PointGroup::Retired),
                    "{r:?} for a {group:?} point at step {step}"
                );
            }
            if step % 20 == 0 {
                let r = screen(&honest, PointGroup::Current, &budget, now, || Some(()));
                assert_eq!(r, Ok(()), "honest introduction dropped at step {step}");
                answered += 1;
            }
        }
        assert_eq!(answered, 10 * seconds);
        // The retired points together: one point's burst and rate (the rotated point's
        // garbage while it was current counted against the current points).
        assert!(
            retired_decrypted <= 50 + 10 * seconds,
            "{retired_decrypted}"
        );
    }

    /// A refusal by the joint budget gives the point its token back: a retired point
    /// whose group is flooded through another keeps its own budget.
    #[test]
    fn joint_refusal_does_not_spend_the_points_own_token() {
        let t0 = Instant::now();
        let budget = Mutex::new(IntroBudget::new(20, (10, 50), t0));
        let flooding = Mutex::new(IntroGate::new(100, 100, t0));
        let quiet = Mutex::new(IntroGate::new(10, 50, t0));
        // The flooding point uses up the retired points' joint burst.
        for _ in 0..50 {
            let r = screen(&flooding, PointGroup::Retired, &budget, t0, || None::<()>);
            assert_eq!(r, Err(Dropped::Invalid));
        }
        for _ in 0..20 {
            let r = screen(&quiet, PointGroup::Retired, &budget, t0, || Some(()));
            assert_eq!(r, Err(Dropped::DecryptBudget));
        }
        let mut gate = lock(&quiet);
        assert_eq!(gate.refused(), 0);
        // The quiet point's own bucket is still full: its whole burst, then no more.
        assert_eq!((0..51).filter(|_| gate.admit_at(t0)).count(), 50);
    }

    /// Days after a flood used up every budget, all of them are whole again: the
    /// answered-introduction window restarts, and the point and joint buckets hold their
    /// bursts (no more).
    #[test]
    fn budgets_are_whole_again_after_a_jump_of_days() {
        let t0 = Instant::now();
        let budget = Mutex::new(IntroBudget::new(5, (10, 50), t0));
        let gate = Mutex::new(IntroGate::new(10, 50, t0));
        let outcomes = |now| {
            (0..60)
                .map(|_| screen(&gate, PointGroup::Current, &budget, now, || Some(())))
                .collect::<Vec<_>>()
        };
        let count = |v: &[Result<(), Dropped>], r| v.iter().filter(|x| **x == r).count();
        let flood = outcomes(t0);
        assert_eq!(count(&flood, Ok(())), 5);
        assert_eq!(count(&flood, Err(Dropped::MeetRate)), 45);
        assert_eq!(count(&flood, Err(Dropped::PointBudget)), 10);
        let days = t0 + Duration::from_secs(3 * 24 * 60 * 60);
        let again = outcomes(days);
        assert_eq!(again, flood, "the same as on a fresh start");
        // A refund stamped before the jump lowers nothing in the new window.
        let mut b = lock(&budget);
        b.refund_meeting(t0);
        assert_eq!(b.window, (days, 5));
    }
}
