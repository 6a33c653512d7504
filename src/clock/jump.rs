//! Noticing that the wall clock jumped: after a suspend (the monotonic clock stood still
//! while the wall clock ran on) or an NTP step. A watcher compares elapsed wall time with
//! elapsed monotonic time every [`JUMP_CHECK`]; a difference over [`JUMP_THRESHOLD`]
//! either way is a jump, and every role that stamps or schedules by wall time recovers
//! from it (refetches, republishes, re-aligns) instead of waiting out stale deadlines.

use std::time::Duration;

use tokio::sync::mpsc;

use super::Clock;

/// How often (monotonic) a watcher compares the two clocks.
pub const JUMP_CHECK: Duration = Duration::from_secs(10);

/// A difference between elapsed wall and monotonic time above this is a jump. Well above
/// what NTP slewing or a loaded machine produce in [`JUMP_CHECK`], well below the
/// shortest thing a jump breaks (a consensus period).
pub const JUMP_THRESHOLD: Duration = Duration::from_secs(60);

/// Jumps queued for a watcher that has not looked yet; more are dropped (one is enough to
/// make it recover).
const QUEUED_JUMPS: usize = 4;

/// One wall-clock jump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Jump {
    /// How far the wall clock moved beyond the monotonic clock, in seconds: positive
    /// forward (resume from suspend), negative back (a fast clock corrected).
    pub by_secs: i64,
    /// The wall time (Unix seconds) when the jump was noticed.
    pub noticed_at: u64,
}

impl std::fmt::Display for Jump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dir = if self.by_secs >= 0 { "forward" } else { "back" };
        write!(
            f,
            "the wall clock jumped {dir} by {}",
            human(self.by_secs.unsigned_abs())
        )
    }
}

/// `secs` as a short human duration, the last unit rounded ("3 h 0 min" for 10,799 s,
/// "8 d 0 h", "10 min 0 s"): measured offsets are a second or so off.
pub fn human(secs: u64) -> String {
    match secs {
        s if s >= 86_400 - 1800 => {
            let h = (s + 1800) / 3600;
            format!("{} d {} h", h / 24, h % 24)
        }
        s if s >= 3600 - 30 => {
            let m = (s + 30) / 60;
            format!("{} h {} min", m / 60, m % 60)
        }
        s if s >= 60 => format!("{} min {} s", s / 60, s % 60),
        s => format!("{s} s"),
    }
}

/// A moment on both clocks, to tell later whether the wall clock jumped since (e.g. a
/// circuit built before a jump the watcher has not reported yet).
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    wall_ms: i64,
    mono: tokio::time::Instant,
}

impl Stamp {
    /// How far (seconds) the wall clock moved beyond the monotonic clock since this
    /// stamp, if that is a jump (over [`JUMP_THRESHOLD`] either way).
    pub fn jumped_since(&self, clock: &Clock) -> Option<i64> {
        let wall = i128::from(clock.wall_ms()) - i128::from(self.wall_ms);
        let mono = i128::try_from((clock.instant() - self.mono).as_millis()).unwrap_or(0);
        let drift = wall - mono;
        let threshold = i128::from(JUMP_THRESHOLD.as_secs()) * 1000;
        (drift.abs() > threshold).then(|| i64::try_from(drift / 1000).unwrap_or(i64::MAX))
    }
}

/// The jumps of one clock, for one subscriber. Its watcher task ends when this is dropped.
#[derive(Debug)]
pub struct JumpWatch {
    rx: mpsc::Receiver<Jump>,
}

impl JumpWatch {
    /// Waits for the next jump. Cancel-safe (use it in `select!`).
    pub async fn next(&mut self) -> Jump {
        match self.rx.recv().await {
            Some(j) => j,
            // The watcher only stops when we are dropped; never report a phantom jump.
            None => std::future::pending().await,
        }
    }
}

impl Clock {
    /// Now, on both clocks.
    pub fn stamp(&self) -> Stamp {
        Stamp {
            wall_ms: self.wall_ms(),
            mono: self.instant(),
        }
    }

    /// Starts watching this clock for wall-clock jumps (simulated jumps and real ones
    /// alike). Each subscriber gets its own watcher, which ends when the watch is dropped.
    pub fn watch_jumps(&self) -> JumpWatch {
        let (tx, rx) = mpsc::channel(QUEUED_JUMPS);
        let clock = self.clone();
        tokio::spawn(async move {
            let mut since = clock.stamp();
            loop {
                clock.sleep(JUMP_CHECK).await;
                if tx.is_closed() {
                    return;
                }
                let jumped = since.jumped_since(&clock);
                since = clock.stamp();
                if let Some(by_secs) = jumped {
                    let jump = Jump {
                        by_secs,
                        noticed_at: clock.now_unix(),
                    };
                    // Full: earlier jumps are still queued; the subscriber will recover.
                    let _ = tx.try_send(jump);
                }
            }
        });
        JumpWatch { rx }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    const START: u64 = 1_800_000_000;

    fn clock() -> Clock {
        Clock::simulated(UNIX_EPOCH + Duration::from_secs(START))
    }

    /// Lets the watcher run its next checks (paused time advances to its timers).
    async fn after_checks(watch: &mut JumpWatch) -> Option<Jump> {
        tokio::time::timeout(JUMP_CHECK * 2, watch.next())
            .await
            .ok()
    }

    async fn detected(by: i64) -> Option<Jump> {
        let clock = clock();
        let mut watch = clock.watch_jumps();
        tokio::time::advance(Duration::from_secs(3)).await;
        if by >= 0 {
            clock.jump_forward(Duration::from_secs(by.unsigned_abs()));
        } else {
            clock.jump_back(Duration::from_secs(by.unsigned_abs()));
        }
        after_checks(&mut watch).await
    }

    #[tokio::test(start_paused = true)]
    async fn three_hours_forward_is_a_jump() {
        let j = detected(3 * 3600).await.expect("jump noticed");
        assert!((3 * 3600 - 1..=3 * 3600).contains(&j.by_secs), "{j:?}");
        assert!(j.to_string().contains("forward by 3 h 0 min"), "{j}");
    }

    #[tokio::test(start_paused = true)]
    async fn eight_days_forward_is_a_jump() {
        let j = detected(8 * 86_400).await.expect("jump noticed");
        assert!((8 * 86_400 - 1..=8 * 86_400).contains(&j.by_secs), "{j:?}");
        assert!(j.to_string().contains("8 d 0 h"), "{j}");
    }

    #[tokio::test(start_paused = true)]
    async fn ten_minutes_back_is_a_jump() {
        let j = detected(-600).await.expect("jump noticed");
        assert!((-600..=-599).contains(&j.by_secs), "{j:?}");
        assert!(j.to_string().contains("back by 10 min 0 s"), "{j}");
    }

    #[tokio::test(start_paused = true)]
    async fn small_steps_and_time_passing_are_not_jumps() {
        assert_eq!(detected(30).await, None, "a 30 s NTP step is no jump");
        let clock = clock();
        let mut watch = clock.watch_jumps();
        // Days of ordinary time: wall and monotonic advance together.
        for _ in 0..100 {
            tokio::time::advance(Duration::from_secs(3600)).await;
        }
        assert_eq!(after_checks(&mut watch).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn each_jump_is_reported_once() {
        let clock = clock();
        let mut watch = clock.watch_jumps();
        tokio::time::advance(Duration::from_secs(1)).await;
        clock.jump_forward(Duration::from_secs(7200));
        assert!(after_checks(&mut watch).await.is_some());
        assert_eq!(after_checks(&mut watch).await, None);
        clock.jump_back(Duration::from_secs(7200));
        assert!(after_checks(&mut watch)
            .await
            .is_some_and(|j| j.by_secs < 0));
    }

    #[test]
    fn durations_read_rounded() {
        assert_eq!(human(3 * 3600 - 1), "3 h 0 min");
        assert_eq!(human(3 * 3600 + 29), "3 h 0 min");
        assert_eq!(human(8 * 86_400 - 1), "8 d 0 h");
        assert_eq!(human(86_399), "1 d 0 h");
        assert_eq!(human(600), "10 min 0 s");
        assert_eq!(human(59), "59 s");
    }

    #[tokio::test]
    async fn the_system_clock_can_be_watched() {
        // No jump expected in a second of real time; the watcher must simply not fire.
        let mut watch = Clock::system().watch_jumps();
        let quiet = tokio::time::timeout(Duration::from_millis(50), watch.next()).await;
        assert!(quiet.is_err());
    }
}
