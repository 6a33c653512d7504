//! What an authority has observed of one relay through its own probes, and the documented
//! rules that turn it into the measured bandwidth and flags it votes (docs/protocol.md
//! §6.6). Nothing here comes from the relay's own statements.

use std::collections::VecDeque;

/// Probes (measurement circuits through the relay) remembered.
pub(crate) const PROBE_WINDOW: usize = 8;
/// This many failed probes in the window: the relay loses Running (and so every flag that
/// makes it usable).
pub(crate) const FAILURES_LOSE_RUNNING: usize = 4;
/// This many failed probes in the window: the relay loses Stable and Guard.
pub(crate) const FAILURES_LOSE_STABLE: usize = 2;
/// Measurements remembered; the vote carries their low median.
pub(crate) const MEASUREMENTS_KEPT: usize = 3;
/// Exit checks remembered.
pub(crate) const EXIT_CHECK_WINDOW: usize = 4;
/// Failure points in the exit-check window that make the relay a BadExit. A check that
/// failed (refused, cut, timed out) scores 1, one that returned altered bytes scores 2, so
/// a single proven tampering is enough and an overloaded honest exit needs two failures.
pub(crate) const BAD_EXIT_POINTS: u32 = 2;

/// The verdict of one exit check, as reputation counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExitVerdict {
    /// The expected bytes came back.
    Passed,
    /// The stream was refused, cut short or timed out.
    Failed,
    /// Bytes came back altered: proof of tampering.
    Tampered,
}

impl ExitVerdict {
    fn points(self) -> u32 {
        match self {
            ExitVerdict::Passed => 0,
            ExitVerdict::Failed => 1,
            ExitVerdict::Tampered => 2,
        }
    }
}

/// One relay's record at one authority.
#[derive(Debug, Default, Clone)]
pub(crate) struct Reputation {
    /// Newest last; `true` = the probe succeeded.
    probes: VecDeque<bool>,
    /// `(unix time, bytes/s)`, newest last.
    measurements: VecDeque<(u64, u64)>,
    /// Newest last.
    exit_checks: VecDeque<ExitVerdict>,
}

fn push_bounded<T>(q: &mut VecDeque<T>, item: T, max: usize) {
    q.push_back(item);
    while q.len() > max {
        q.pop_front();
    }
}

impl Reputation {
    /// Records a measurement probe that built its circuit and completed its transfer at
    /// `bytes_per_second`.
    pub(crate) fn measured(&mut self, now: u64, bytes_per_second: u64) {
        push_bounded(&mut self.probes, true, PROBE_WINDOW);
        push_bounded(
            &mut self.measurements,
            (now, bytes_per_second),
            MEASUREMENTS_KEPT,
        );
    }

    /// Records a probe that failed: the relay did not extend our circuit, or the transfer
    /// through it stalled, was cut or came back wrong.
    pub(crate) fn probe_failed(&mut self) {
        push_bounded(&mut self.probes, false, PROBE_WINDOW);
    }

    /// Records an exit check.
    pub(crate) fn exit_checked(&mut self, verdict: ExitVerdict) {
        push_bounded(&mut self.exit_checks, verdict, EXIT_CHECK_WINDOW);
    }

    fn probe_failures(&self) -> usize {
        self.probes.iter().filter(|ok| !**ok).count()
    }

    /// Whether the relay fails too many probes to be Running.
    pub(crate) fn loses_running(&self) -> bool {
        self.probe_failures() >= FAILURES_LOSE_RUNNING
    }

    /// Whether the relay fails too many probes to be Stable (or Guard).
    pub(crate) fn loses_stable(&self) -> bool {
        self.probe_failures() >= FAILURES_LOSE_STABLE
    }

    /// Whether the exit checks make the relay a BadExit.
    pub(crate) fn bad_exit(&self) -> bool {
        self.exit_checks.iter().map(|v| v.points()).sum::<u32>() >= BAD_EXIT_POINTS
    }

    /// The bandwidth to vote: the low median of the measurements taken since
    /// `now − max_age`, `None` if there are none or the last two probes failed. The median of several rounds damps noise
    /// and a momentary load; the age limit forgets a relay's past capacity.
    pub(crate) fn measured_bandwidth(&self, now: u64, max_age: u64) -> Option<u64> {
        // A relay that refuses its latest probes does not keep its old figure.
        let mut latest = self.probes.iter().rev();
        if let (Some(false), Some(false)) = (latest.next(), latest.next()) {
            return None;
        }
        let mut recent: Vec<u64> = self
            .measurements
            .iter()
            .filter(|(t, _)| t.saturating_add(max_age) >= now && *t <= now.saturating_add(60))
            .map(|(_, bw)| *bw)
            .collect();
        recent.sort_unstable();
        crate::dir::flags::low_median(&recent)
    }

    /// Forgets the measurements (after a wall-clock jump their times mean nothing; probe
    /// and exit-check outcomes stay: they are not a matter of time).
    pub(crate) fn forget_timed(&mut self) {
        self.measurements.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_failures_cost_stable_then_running_and_recover() {
        let mut r = Reputation::default();
        for _ in 0..PROBE_WINDOW {
            r.measured(100, 1_000);
        }
        assert!(!r.loses_stable() && !r.loses_running());
        r.probe_failed();
        assert!(!r.loses_stable());
        r.probe_failed();
        assert!(r.loses_stable() && !r.loses_running());
        r.probe_failed();
        r.probe_failed();
        assert!(r.loses_running());
        // Good behaviour pushes the failures out of the window.
        for _ in 0..PROBE_WINDOW {
            r.measured(200, 1_000);
        }
        assert!(!r.loses_stable() && !r.loses_running());
    }

    #[test]
    fn one_tampering_or_two_failures_make_a_bad_exit() {
        let mut r = Reputation::default();
        r.exit_checked(ExitVerdict::Passed);
        r.exit_checked(ExitVerdict::Failed);
        assert!(
            !r.bad_exit(),
            "one failure may be an overloaded honest exit"
        );
        r.exit_checked(ExitVerdict::Failed);
        assert!(r.bad_exit());
        let mut t = Reputation::default();
        t.exit_checked(ExitVerdict::Tampered);
        assert!(t.bad_exit());
        // It stays bad until the tampering has left the window.
        for _ in 0..EXIT_CHECK_WINDOW - 1 {
            t.exit_checked(ExitVerdict::Passed);
            assert!(t.bad_exit());
        }
        t.exit_checked(ExitVerdict::Passed);
        assert!(!t.bad_exit());
    }

    #[test]
    fn the_voted_bandwidth_is_the_low_median_of_recent_measurements() {
        let mut r = Reputation::default();
        assert_eq!(r.measured_bandwidth(1_000, 500), None);
        r.measured(100, 9_000_000); // old
        r.measured(800, 1_000);
        r.measured(900, 3_000);
        // Three kept; the one at t=100 is too old at now=1000 with max_age 500.
        assert_eq!(r.measured_bandwidth(1_000, 500), Some(1_000));
        r.measured(950, 2_000);
        assert_eq!(r.measured_bandwidth(1_000, 500), Some(2_000));
        // A measurement stamped in the future (clock set back) does not count.
        let mut f = Reputation::default();
        f.measured(10_000, 5);
        assert_eq!(f.measured_bandwidth(1_000, 500), None);
        // A relay measured fast that then refuses its probes loses the figure after two.
        r.probe_failed();
        assert_eq!(r.measured_bandwidth(1_000, 500), Some(2_000));
        r.probe_failed();
        assert_eq!(r.measured_bandwidth(1_000, 500), None);
    }
}
