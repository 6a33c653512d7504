//! A node-wide byte-rate shaper for channels (an operator's `bandwidth_rate`, like Tor's
//! RelayBandwidthRate/Burst).
//!
//! One [`BandwidthShaper`] is shared by every channel of a relay: its read bucket is charged
//! for the bytes read from peers' connections, its write bucket for the bytes written to
//! them (each direction is limited to the rate on its own, as in Tor). A channel that finds
//! its bucket empty waits for the refill; nothing is dropped, and the socket left unread
//! pushes back on the peer through TCP. Time is tokio's, so paused-time tests can drive it.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::record::RECORD_LEN;
use crate::sync::lock;

/// Tokens are kept in nano-bytes (bytes × 10⁹), so refilling at `rate` bytes per second
/// for a whole number of nanoseconds is exact: no rounding drift however often it runs.
const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Largest accepted rate and burst (1 TiB/s, 1 TiB): far beyond any link, and small
/// enough that every computation below stays exact.
pub(crate) const MAX_BANDWIDTH: u64 = 1 << 40;

/// A validated rate limit: `rate` bytes per second sustained, at most `burst` bytes at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BandwidthLimit {
    rate: u64,
    burst: u64,
}

/// Why a [`BandwidthLimit`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BandwidthLimitError {
    /// A rate of 0 would stop the relay altogether.
    #[error("bandwidth_rate must be at least 1 byte per second (leave it unset for no limit)")]
    ZeroRate,
    /// A burst below one record could never let a whole record through at once.
    #[error("bandwidth_burst must be at least one record ({RECORD_LEN} bytes), got {0}")]
    BurstBelowRecord(u64),
    /// Absurdly large values are refused rather than silently clamped.
    #[error("bandwidth_rate and bandwidth_burst must be at most {MAX_BANDWIDTH}")]
    TooLarge,
}

impl BandwidthLimit {
    /// `rate` bytes per second with a burst of `burst` bytes (`None`: the burst equals the
    /// rate, or one record if the rate is lower than that).
    pub fn new(rate: u64, burst: Option<u64>) -> Result<Self, BandwidthLimitError> {
        if rate == 0 {
            return Err(BandwidthLimitError::ZeroRate);
        }
        let record = RECORD_LEN as u64;
        let burst = burst.unwrap_or(rate.max(record));
        if burst < record {
            return Err(BandwidthLimitError::BurstBelowRecord(burst));
        }
        if rate > MAX_BANDWIDTH || burst > MAX_BANDWIDTH {
            return Err(BandwidthLimitError::TooLarge);
        }
        Ok(BandwidthLimit { rate, burst })
    }

    /// Sustained bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Most bytes passed at once after an idle period.
    pub fn burst(&self) -> u64 {
        self.burst
    }
}

/// The read and write buckets shared by every channel of a node.
#[derive(Debug)]
pub struct BandwidthShaper {
    pub(crate) read: ByteBucket,
    pub(crate) write: ByteBucket,
}

impl BandwidthShaper {
    /// Two full buckets, one per direction, each refilled at `limit.rate()`.
    pub fn new(limit: BandwidthLimit) -> Self {
        BandwidthShaper {
            read: ByteBucket::new(limit),
            write: ByteBucket::new(limit),
        }
    }

    /// The limit both directions follow.
    pub fn limit(&self) -> BandwidthLimit {
        self.read.limit
    }
}

/// An async token bucket of bytes, refilled continuously.
#[derive(Debug)]
pub(crate) struct ByteBucket {
    limit: BandwidthLimit,
    state: Mutex<BucketState>,
    /// Waiters queue here (tokio's mutex is first come, first served), so channels are
    /// served in turn and only the head of the queue sleeps on a timer.
    queue: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct BucketState {
    /// Nano-bytes available, at most `burst × 10⁹`.
    tokens: u128,
    last: Instant,
}

impl BucketState {
    fn refill(&mut self, limit: &BandwidthLimit, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_nanos();
        let cap = u128::from(limit.burst) * NANOS_PER_SEC;
        let added = elapsed.saturating_mul(u128::from(limit.rate));
        self.tokens = self.tokens.saturating_add(added).min(cap);
        self.last = now;
    }
}

impl ByteBucket {
    /// A full bucket.
    pub(crate) fn new(limit: BandwidthLimit) -> Self {
        ByteBucket {
            limit,
            state: Mutex::new(BucketState {
                tokens: u128::from(limit.burst) * NANOS_PER_SEC,
                last: Instant::now(),
            }),
            queue: tokio::sync::Mutex::new(()),
        }
    }

    /// Waits until at least `min(want, one record)` bytes are available, then takes as many
    /// as are available up to `want` and returns how many (0 only if `want` is 0). A
    /// request larger than the burst is thus served in pieces, never deadlocked; the caller
    /// moves at most the returned number of bytes and gives back what it did not use
    /// ([`Self::refund`]).
    pub(crate) async fn take(&self, want: usize) -> usize {
        let want = u64::try_from(want).unwrap_or(u64::MAX);
        if want == 0 {
            return 0;
        }
        // The burst is at least one record, so the least we wait for always fits.
        let least = want.min(RECORD_LEN as u64).min(self.limit.burst);
        let _turn = self.queue.lock().await;
        loop {
            let missing = {
                let mut s = lock(&self.state);
                s.refill(&self.limit, Instant::now());
                let have = s.tokens / NANOS_PER_SEC;
                if have >= u128::from(least) {
                    let got = have.min(u128::from(want));
                    s.tokens -= got * NANOS_PER_SEC;
                    return usize::try_from(got).unwrap_or(usize::MAX);
                }
                u128::from(least) * NANOS_PER_SEC - s.tokens
            };
            // Sleep exactly until the refill covers the missing tokens (rounded up), so
            // the next pass succeeds unless tokens were spent meanwhile: no busy loop.
            let rate = u128::from(self.limit.rate);
            let nanos = missing.div_ceil(rate);
            let wait = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
            tokio::time::sleep(wait).await;
        }
    }

    /// Gives back `bytes` taken by [`Self::take`] but not moved (never above the burst).
    pub(crate) fn refund(&self, bytes: usize) {
        let bytes = u128::try_from(bytes).unwrap_or(u128::MAX);
        let cap = u128::from(self.limit.burst) * NANOS_PER_SEC;
        let mut s = lock(&self.state);
        s.tokens = s
            .tokens
            .saturating_add(bytes.saturating_mul(NANOS_PER_SEC))
            .min(cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(rate: u64, burst: u64) -> ByteBucket {
        ByteBucket::new(BandwidthLimit::new(rate, Some(burst)).unwrap())
    }

    #[test]
    fn limits_are_validated() {
        assert_eq!(
            BandwidthLimit::new(0, None),
            Err(BandwidthLimitError::ZeroRate)
        );
        assert_eq!(
            BandwidthLimit::new(10_000, Some(100)),
            Err(BandwidthLimitError::BurstBelowRecord(100))
        );
        assert_eq!(
            BandwidthLimit::new(MAX_BANDWIDTH + 1, None),
            Err(BandwidthLimitError::TooLarge)
        );
        let l = BandwidthLimit::new(100_000, None).unwrap();
        assert_eq!((l.rate(), l.burst()), (100_000, 100_000));
        // A rate below one record gets a one-record burst by default, so it can move.
        let l = BandwidthLimit::new(10, None).unwrap();
        assert_eq!(l.burst(), RECORD_LEN as u64);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_bucket_serves_its_burst_at_once() {
        let b = bucket(1000, 5000);
        let start = Instant::now();
        assert_eq!(b.take(3000).await, 3000);
        assert_eq!(b.take(3000).await, 2000);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn refill_is_continuous_and_capped_at_the_burst() {
        let b = bucket(1000, 5000);
        assert_eq!(b.take(5000).await, 5000);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // 1.5 s at 1000 B/s: 1500 bytes.
        assert_eq!(b.take(100_000).await, 1500);
        tokio::time::sleep(Duration::from_secs(60)).await;
        // A long idle period refills to the burst, no more.
        assert_eq!(b.take(100_000).await, 5000);
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_bucket_waits_for_one_record() {
        let b = bucket(1000, 5000);
        assert_eq!(b.take(5000).await, 5000);
        let start = Instant::now();
        let got = b.take(10_000).await;
        assert_eq!(got, RECORD_LEN);
        // Exactly the time one record takes to refill, rounded up to the nanosecond.
        let expected = Duration::from_nanos((RECORD_LEN as u64 * 1_000_000_000).div_ceil(1000));
        assert_eq!(start.elapsed(), expected);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_larger_than_the_burst_is_served_in_pieces() {
        let b = bucket(1000, 1000);
        let start = Instant::now();
        let mut moved = 0usize;
        let mut pieces = 0;
        while moved < 10_000 {
            let got = b.take(10_000 - moved).await;
            assert!(got > 0 && got <= 1000);
            moved += got;
            pieces += 1;
        }
        assert!(pieces > 1);
        // The burst is free, the other 9000 bytes take 9 s at 1000 B/s.
        assert!(start.elapsed() >= Duration::from_secs(9));
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn refunds_are_available_again_but_capped() {
        let b = bucket(1000, 2000);
        assert_eq!(b.take(2000).await, 2000);
        b.refund(1500);
        assert_eq!(b.take(5000).await, 1500);
        b.refund(1_000_000);
        assert_eq!(b.take(5000).await, 2000);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_share_the_rate_in_turn() {
        let b = std::sync::Arc::new(bucket(1000, 1000));
        assert_eq!(b.take(1000).await, 1000);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let b = b.clone();
            tasks.push(tokio::spawn(async move {
                let mut moved = 0;
                while moved < 2000 {
                    moved += b.take(2000 - moved).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // 8000 bytes through an empty bucket at 1000 B/s: at least 8 s, all four finish.
        assert!(start.elapsed() >= Duration::from_secs(8));
    }
}
