//! A token bucket: the handshake rate limit.
//!
//! Circuit handshakes cost ~150 µs of CPU each (two X25519 operations and a key
//! generation), so an unthrottled stream of CREATE cells is a cheap way to burn a relay's
//! cores. The bucket refuses the excess cleanly instead.

use std::sync::Mutex;
use tokio::time::Instant;

use crate::sync::lock;

/// A thread-safe token bucket refilled continuously at `rate` tokens per second, holding
/// at most `burst` tokens.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_second: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: f64::from(rate_per_second),
            burst,
            state: Mutex::new(BucketState {
                tokens: burst,
                last: Instant::now(),
            }),
        }
    }

    /// Takes one token if available.
    pub fn try_take(&self) -> bool {
        self.try_take_at(Instant::now())
    }

    /// Gives back one token taken by [`TokenBucket::try_take`] for work that then did not
    /// happen (never above the burst).
    pub fn refund(&self) {
        let mut s = lock(&self.state);
        s.tokens = (s.tokens + 1.0).min(self.burst);
    }

    /// Takes one token if available, as of `now` (lets tests control time).
    pub fn try_take_at(&self, now: Instant) -> bool {
        self.try_take_n_at(1, now)
    }

    fn try_take_n_at(&self, n: u32, now: Instant) -> bool {
        let n = f64::from(n);
        // A poisoned lock only means another thread panicked mid-update of two floats;
        // the state is still usable.
        let mut s = lock(&self.state);
        let elapsed = now.saturating_duration_since(s.last).as_secs_f64();
        s.tokens = (s.tokens + elapsed * self.rate).min(self.burst);
        // Never move `last` backwards: a stale `now` would credit the same gap twice.
        s.last = s.last.max(now);
        if s.tokens >= n {
            s.tokens -= n;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_stale_time_does_not_credit_a_gap_twice() {
        let b = TokenBucket::new(1, 1);
        let t0 = Instant::now();
        let t10 = t0 + Duration::from_secs(10);
        assert!(b.try_take_at(t10));
        // An earlier time than the last one seen refills nothing, and does not move the
        // clock back: taking again at t10 must find the bucket still empty.
        assert!(!b.try_take_at(t0));
        assert!(!b.try_take_at(t10));
        assert!(b.try_take_at(t10 + Duration::from_secs(1)));
    }

    #[test]
    fn burst_then_refill() {
        let b = TokenBucket::new(10, 5);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(b.try_take_at(t0));
        }
        assert!(!b.try_take_at(t0));
        // 100 ms at 10/s refills one token.
        assert!(b.try_take_at(t0 + Duration::from_millis(100)));
        assert!(!b.try_take_at(t0 + Duration::from_millis(100)));
        // Never more than the burst, however long we wait.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..5 {
            assert!(b.try_take_at(later));
        }
        assert!(!b.try_take_at(later));
    }
}
