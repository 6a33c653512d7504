//! Time as a node reads it: one [`Clock`] for wall time (whole seconds since the Unix epoch,
//! what certificates, descriptors and consensus periods are stamped with) and the runtime's
//! monotonic time and sleeps (what timeouts are measured with).
//!
//! Nodes run for months and laptops sleep for days, so time is an input: a test builds a
//! [`Clock::simulated`] clock under `tokio::time::pause()`, advances days in milliseconds
//! and jumps the wall clock without the monotonic clock moving (a suspended laptop, an NTP
//! correction). A running node's roles read wall time only through their `Clock`,
//! including the certificates of its keys, which `relay/key_maintenance.rs` renews on the
//! node's clock while it runs. [`now_unix`] is for code with no node around it. Jumps of the wall clock are noticed by
//! [`Clock::watch_jumps`] (`clock/jump.rs`).

mod jump;

pub use jump::{human, Jump, JumpWatch, Stamp, JUMP_CHECK, JUMP_THRESHOLD};

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a wall-time wait sleeps at most before it reads the wall clock again, so a
/// jump of the wall clock (resume from suspend, which the monotonic clock does not count)
/// is noticed within this long instead of after the rest of the original wait.
pub const WALL_RECHECK: Duration = Duration::from_secs(30);

/// A node's clock. Cheap to clone; clones share one simulated time.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    simulated: Option<Arc<Simulated>>,
}

/// Wall time that advances with the runtime's (pausable) monotonic time, plus jumps.
#[derive(Debug)]
struct Simulated {
    /// Wall time at `origin`, in milliseconds since the epoch.
    origin_wall_ms: i64,
    origin: tokio::time::Instant,
    /// Sum of the wall-clock jumps so far, in milliseconds.
    jumped_ms: AtomicI64,
}

impl Clock {
    /// The system's clocks: what every node uses outside tests.
    pub fn system() -> Self {
        Clock::default()
    }

    /// A clock whose wall time starts at `start` and then advances exactly as the tokio
    /// runtime's monotonic time does (so `tokio::time::pause` / `advance` drive it), plus
    /// the jumps made with [`Clock::jump_forward`] and [`Clock::jump_back`].
    pub fn simulated(start: SystemTime) -> Self {
        let origin_wall_ms = match start.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(_) => 0,
        };
        Clock {
            simulated: Some(Arc::new(Simulated {
                origin_wall_ms,
                origin: tokio::time::Instant::now(),
                jumped_ms: AtomicI64::new(0),
            })),
        }
    }

    /// Whether this clock is simulated (tests only).
    pub fn is_simulated(&self) -> bool {
        self.simulated.is_some()
    }

    /// Steps a simulated wall clock forward by `by` without the monotonic clock moving
    /// (what a node sees after its machine resumed from suspend). No effect on the system
    /// clock.
    pub fn jump_forward(&self, by: Duration) {
        self.jump(i64::try_from(by.as_millis()).unwrap_or(i64::MAX));
    }

    /// Steps a simulated wall clock back by `by` (an NTP correction of a clock that ran
    /// fast). No effect on the system clock.
    pub fn jump_back(&self, by: Duration) {
        self.jump(-i64::try_from(by.as_millis()).unwrap_or(i64::MAX));
    }

    fn jump(&self, ms: i64) {
        if let Some(sim) = &self.simulated {
            let _ = sim
                .jumped_ms
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |j| {
                    Some(j.saturating_add(ms))
                });
        }
    }

    /// The wall time now.
    pub fn wall(&self) -> SystemTime {
        let Some(sim) = &self.simulated else {
            return SystemTime::now();
        };
        let run = i64::try_from(sim.origin.elapsed().as_millis()).unwrap_or(i64::MAX);
        let ms = sim
            .origin_wall_ms
            .saturating_add(run)
            .saturating_add(sim.jumped_ms.load(Ordering::Relaxed))
            .max(0);
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    }

    /// The wall time now in milliseconds since the Unix epoch (negative before it).
    fn wall_ms(&self) -> i64 {
        match self.wall().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// The wall time now in whole seconds since the Unix epoch.
    pub fn now_unix(&self) -> u64 {
        to_unix(self.wall())
    }

    /// The runtime's monotonic time now (paused and advanced by `tokio::time` in tests).
    pub fn instant(&self) -> tokio::time::Instant {
        tokio::time::Instant::now()
    }

    /// Sleeps for `d` of monotonic time.
    pub async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }

    /// Sleeps until the wall clock reads at least `t` (Unix seconds). The wall clock is read
    /// again at least every [`WALL_RECHECK`], so a jump forward ends the wait soon after
    /// and a jump back lengthens it.
    pub async fn sleep_until_unix(&self, t: u64) {
        loop {
            let now = self.now_unix();
            if now >= t {
                return;
            }
            self.sleep(Duration::from_secs(t - now).min(WALL_RECHECK))
                .await;
        }
    }
}

/// Seconds since the Unix epoch on the system clock (0 if it is set before 1970). For code
/// that has no node around it (command-line tools, key generation at the prompt); a node's
/// code reads its [`Clock`].
pub fn now_unix() -> u64 {
    Clock::system().now_unix()
}

/// `t` in whole seconds since the Unix epoch (0 for a time before 1970, so a clock set
/// before 1970 makes certificates look unexpired rather than panicking; a certificate
/// still needs a valid signature).
pub fn to_unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);
    const START: u64 = 1_800_000_000;

    fn start() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(START)
    }

    #[test]
    fn whole_seconds_and_zero_before_the_epoch() {
        assert_eq!(to_unix(UNIX_EPOCH + Duration::from_millis(1_999)), 1);
        assert_eq!(to_unix(UNIX_EPOCH - Duration::from_secs(5)), 0);
        assert!(now_unix() > 1_600_000_000);
        assert!(!Clock::system().is_simulated());
    }

    #[tokio::test(start_paused = true)]
    async fn simulated_wall_time_follows_paused_runtime_time() {
        let clock = Clock::simulated(start());
        assert_eq!(clock.now_unix(), START);
        tokio::time::advance(60 * DAY).await;
        assert_eq!(clock.now_unix(), START + 60 * 86_400);
        let other = clock.clone();
        other.jump_forward(Duration::from_secs(5));
        assert_eq!(
            clock.now_unix(),
            START + 60 * 86_400 + 5,
            "clones share time"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_jump_moves_wall_time_only() {
        let clock = Clock::simulated(start());
        let before = clock.instant();
        clock.jump_forward(3 * DAY);
        assert_eq!(clock.now_unix(), START + 3 * 86_400);
        assert_eq!(clock.instant(), before);
        clock.jump_back(4 * DAY);
        assert_eq!(clock.now_unix(), START - 86_400);
        // A jump before the epoch reads as the epoch, never wraps.
        clock.jump_back(Duration::from_secs(START * 2));
        assert_eq!(clock.now_unix(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wall_wait_ends_soon_after_a_jump_past_its_deadline() {
        let clock = Clock::simulated(start());
        let t0 = clock.instant();
        let waiter = {
            let clock = clock.clone();
            tokio::spawn(async move { clock.sleep_until_unix(START + 7 * 86_400).await })
        };
        tokio::time::advance(Duration::from_secs(1)).await;
        clock.jump_forward(8 * DAY);
        waiter.await.expect("waiter");
        assert!(
            clock.instant() - t0 <= WALL_RECHECK + Duration::from_secs(1),
            "woke {:?} after the jump",
            clock.instant() - t0
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wall_wait_lasts_longer_after_a_jump_back() {
        let clock = Clock::simulated(start());
        let t0 = clock.instant();
        let waiter = {
            let clock = clock.clone();
            tokio::spawn(async move { clock.sleep_until_unix(START + 100).await })
        };
        tokio::time::advance(Duration::from_secs(50)).await;
        clock.jump_back(Duration::from_secs(100));
        waiter.await.expect("waiter");
        assert!(clock.now_unix() >= START + 100);
        assert!(clock.instant() - t0 >= Duration::from_secs(200));
    }
}
