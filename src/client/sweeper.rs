//! Retires circuits no longer used, whatever their isolation class: every
//! [`sweep_interval`], circuits past the maximum dirtiness take no new streams and close
//! once their streams are done, and classes left without circuits are forgotten. A
//! request per fresh isolation (a browser isolating by site, a new SOCKS credential per
//! request) would otherwise leave every circuit it built open at the client and at its
//! relays for as long as the client runs.

use std::sync::Weak;
use std::time::Duration;

use tracing::debug;

/// Longest time between two sweeps.
const SWEEP_MAX: Duration = Duration::from_secs(30);
/// Shortest time between two sweeps.
const SWEEP_MIN: Duration = Duration::from_secs(1);

/// How often the sweeper runs for a maximum dirtiness: a tenth of it (circuits close at
/// most 10 % late), between [`SWEEP_MIN`] and [`SWEEP_MAX`].
pub(crate) fn sweep_interval(max_dirtiness: Duration) -> Duration {
    (max_dirtiness / 10).clamp(SWEEP_MIN, SWEEP_MAX)
}

/// What the sweeper sweeps (the client's circuit manager and onion connector); held
/// weakly, so a dropped client stops it.
pub(crate) trait Sweep: Send + Sync {
    /// Retires what is past its dirtiness; returns the circuits still held.
    fn sweep(&self) -> usize;
}

/// Sweeps `targets` every `every` on `clock` until none of them is alive (spawn it).
pub(crate) async fn run(
    clock: crate::clock::Clock,
    every: Duration,
    targets: Vec<Weak<dyn Sweep>>,
) {
    loop {
        clock.sleep(every).await;
        let mut alive = false;
        let mut held = 0;
        for t in &targets {
            if let Some(t) = t.upgrade() {
                alive = true;
                held += t.sweep();
            }
        }
        if !alive {
            return;
        }
        debug!(held, "client: swept circuits past their dirtiness");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_is_a_tenth_of_the_dirtiness_within_bounds() {
        assert_eq!(sweep_interval(Duration::from_secs(600)), SWEEP_MAX);
        assert_eq!(
            sweep_interval(Duration::from_secs(100)),
            Duration::from_secs(10)
        );
        assert_eq!(sweep_interval(Duration::from_millis(500)), SWEEP_MIN);
    }
}
