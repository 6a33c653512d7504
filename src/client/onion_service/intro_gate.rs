//! The token bucket that bounds the INTRODUCE2 cells one introduction point (or a group of
//! them) can make the service decrypt. Pure: every call takes `now`.

use std::time::Instant;

/// A token bucket bounding the INTRODUCE2 cells one introduction point can make the
/// service decrypt: every INTRODUCE2 costs an X25519 operation and up to three
/// decryptions (one per neighbouring period) before the replay cache can tell anything,
/// and the introduction point can send as many as it likes.
#[derive(Debug)]
pub(super) struct IntroGate {
    /// Tokens per second.
    rate: u64,
    /// Most tokens held, in thousandths.
    burst_milli: u64,
    /// Tokens held, in thousandths (integer arithmetic: no float rounding surprises).
    tokens_milli: u64,
    /// The fraction of a thousandth earned but not yet credited, in millionths of a
    /// thousandth (always below 10^6).
    carry: u64,
    last: Instant,
    /// Introductions refused so far.
    refused: u64,
}

impl IntroGate {
    /// A full bucket of `burst` tokens refilled at `rate` per second (each at least 1).
    pub(super) fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let burst_milli = u64::from(burst.max(1)) * 1000;
        IntroGate {
            rate: u64::from(rate.max(1)),
            burst_milli,
            tokens_milli: burst_milli,
            carry: 0,
            last: now,
            refused: 0,
        }
    }

    /// An empty bucket (it fills at `rate` per second up to `burst`): the gate of an
    /// introduction point that replaces another. See `current`
    /// in [`IntroBudget`](super::intro_budget::IntroBudget) for why.
    pub(super) fn empty(rate: u32, burst: u32, now: Instant) -> Self {
        IntroGate {
            tokens_milli: 0,
            ..IntroGate::new(rate, burst, now)
        }
    }

    /// Gives back the token the last [`Self::admit_at`] took (at the same instant): the
    /// introduction was refused by a later budget, so it did not use this one.
    pub(super) fn refund(&mut self) {
        self.tokens_milli = self.tokens_milli.saturating_add(1000).min(self.burst_milli);
    }

    /// Takes a token at `now`: whether one more introduction may be decrypted. A refusal
    /// is counted.
    pub(super) fn admit_at(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = self.last.max(now);
        // rate tokens/s = rate thousandths per ms = rate * nanos / 10^6 thousandths. The
        // remainder of that division is carried to the next call: dropping it would make
        // calls closer together than one thousandth's worth of time refill nothing.
        let total = elapsed
            .as_nanos()
            .saturating_mul(u128::from(self.rate))
            .saturating_add(u128::from(self.carry));
        let refill = u64::try_from(total / 1_000_000).unwrap_or(u64::MAX);
        self.carry = u64::try_from(total % 1_000_000).unwrap_or(0);
        self.tokens_milli = self.tokens_milli.saturating_add(refill);
        if self.tokens_milli >= self.burst_milli {
            // Full: time spent full earns nothing, not even a fraction.
            self.tokens_milli = self.burst_milli;
            self.carry = 0;
        }
        if self.tokens_milli >= 1000 {
            self.tokens_milli -= 1000;
            true
        } else {
            self.refused = self.refused.saturating_add(1);
            false
        }
    }

    /// Introductions refused so far.
    pub(super) fn refused(&self) -> u64 {
        self.refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn intro_gate_admits_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut gate = IntroGate::new(25, 200, t0);
        for i in 0..200 {
            assert!(gate.admit_at(t0), "burst token {i}");
        }
        assert!(!gate.admit_at(t0), "the burst is spent");
        assert!(!gate.admit_at(t0 + Duration::from_millis(39)));
        assert_eq!(gate.refused(), 2);
        // 25 per second: one token every 40 ms.
        assert!(gate.admit_at(t0 + Duration::from_millis(40)));
        assert!(!gate.admit_at(t0 + Duration::from_millis(40)));
        // One second later: 25 more, not more.
        let t1 = t0 + Duration::from_millis(1040);
        let admitted = (0..100).filter(|_| gate.admit_at(t1)).count();
        assert_eq!(admitted, 25);
        // A long pause refills to the burst only.
        let t2 = t1 + Duration::from_secs(3600);
        let admitted = (0..1000).filter(|_| gate.admit_at(t2)).count();
        assert_eq!(admitted, 200);
        assert_eq!(gate.refused(), 2 + 1 + 75 + 800);
        // A clock that seems to go back refills nothing and does not panic.
        assert!(!gate.admit_at(t0));
    }

    #[test]
    fn intro_gate_refills_when_called_faster_than_its_quantum() {
        // 1 token per second = one thousandth per ms; calls every 0.5 ms each earn half a
        // thousandth, which must carry over (rounded away, 2 s of calls refilled nothing).
        let t0 = Instant::now();
        let mut gate = IntroGate::new(1, 1, t0);
        assert!(gate.admit_at(t0));
        let admitted = (1..=4000u64)
            .filter(|i| gate.admit_at(t0 + Duration::from_micros(500 * i)))
            .count();
        assert_eq!(admitted, 2, "one token per second over 2 s");
        // An odd rate whose thousandths do not divide a nanosecond count evenly.
        // (A burst the test never reaches: at the burst, fractions above it are dropped.)
        let mut gate = IntroGate::new(7, 100, t0);
        assert_eq!((0..100).filter(|_| gate.admit_at(t0)).count(), 100);
        let admitted = (1..=30_000u64)
            .filter(|i| gate.admit_at(t0 + Duration::from_micros(100 * i)))
            .count();
        assert_eq!(admitted, 21, "7 per second over 3 s");
    }

    #[test]
    fn intro_gate_zero_settings_still_admit_one() {
        let t0 = Instant::now();
        let mut gate = IntroGate::new(0, 0, t0);
        assert!(gate.admit_at(t0));
        assert!(!gate.admit_at(t0));
        assert!(gate.admit_at(t0 + Duration::from_secs(1)));
    }

    /// A machine suspended for days (or a monotonic clock that jumps): the bucket refills
    /// to its burst, not beyond, and the arithmetic does not overflow even after decades.
    #[test]
    fn intro_gate_after_days_holds_its_burst_only() {
        let t0 = Instant::now();
        let day = Duration::from_secs(24 * 60 * 60);
        let mut gate = IntroGate::new(10, 50, t0);
        assert_eq!((0..100).filter(|_| gate.admit_at(t0)).count(), 50);
        let later = t0 + 3 * day;
        assert_eq!((0..100).filter(|_| gate.admit_at(later)).count(), 50);
        let decades = later + 365 * 40 * day;
        assert_eq!((0..100).filter(|_| gate.admit_at(decades)).count(), 50);
        // And the rate resumes from there.
        assert!(!gate.admit_at(decades + Duration::from_millis(99)));
        assert!(gate.admit_at(decades + Duration::from_millis(100)));
    }
}
