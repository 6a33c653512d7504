//! When the descriptor is uploaded: for which periods, how often without a change, and how
//! long to wait after a failed round. Pure: every decision takes `now`.

use std::time::{Duration, Instant};

use crate::onion::{PeriodParams, TimePeriod};

/// The descriptor is re-uploaded this often even when nothing changed (its lifetime is
/// [`MAX_DESCRIPTOR_LIFETIME`](crate::onion::descriptor::MAX_DESCRIPTOR_LIFETIME),
/// 3 h).
pub const REUPLOAD_EVERY: Duration = Duration::from_secs(60 * 60);
/// Wait after an upload round that no directory accepted.
pub(super) const UPLOAD_RETRY: Duration = Duration::from_secs(15);
/// The next period's descriptor is uploaded this long before the period starts.
pub(super) const NEXT_PERIOD_AHEAD: u64 = 2 * 60 * 60;

/// The periods a descriptor is published for at `now`: the current one and, when the
/// next starts within [`NEXT_PERIOD_AHEAD`], the next one too (so clients whose clock
/// has already turned find it; protocol.md §8.3).
pub(super) fn periods_to_serve(params: &PeriodParams, now: u64) -> Vec<TimePeriod> {
    let Ok(current) = params.period_at(now) else {
        return Vec::new();
    };
    let mut out = vec![current];
    let next_start = current
        .number
        .saturating_add(1)
        .saturating_mul(params.length)
        .saturating_add(params.offset);
    if next_start.saturating_sub(now) <= NEXT_PERIOD_AHEAD {
        out.push(TimePeriod {
            length: current.length,
            number: current.number.saturating_add(1),
        });
    }
    out
}

/// What the service uploaded, per period, and when it may try again after a round that no
/// directory accepted.
#[derive(Debug)]
pub(super) struct PublishSchedule {
    /// Per period number: the descriptor's keys (introduction points' auth keys, puzzle
    /// seed) last stored, and when.
    uploaded: Vec<(u64, Vec<[u8; 32]>, Instant)>,
    /// The last revision number used.
    revision: u64,
    /// After a failed upload, no attempt before this (directories may be busy).
    retry_at: Instant,
}

impl PublishSchedule {
    /// Nothing uploaded yet; an upload may start at `now`.
    pub(super) fn new(now: Instant) -> Self {
        PublishSchedule {
            uploaded: Vec::new(),
            revision: 0,
            retry_at: now,
        }
    }

    /// Forgets the uploads for periods no longer served.
    pub(super) fn keep_periods(&mut self, periods: &[TimePeriod]) {
        self.uploaded
            .retain(|(n, _, _)| periods.iter().any(|p| p.number == *n));
    }

    /// Whether an upload may start at `now` (no failed round is being waited out).
    pub(super) fn may_upload(&self, now: Instant) -> bool {
        now >= self.retry_at
    }

    /// Whether `period`'s descriptor must be uploaded at `now`: never stored, stored with
    /// other `keys`, or stored [`REUPLOAD_EVERY`] ago.
    pub(super) fn due(&self, period: u64, keys: &[[u8; 32]], now: Instant) -> bool {
        self.uploaded
            .iter()
            .find(|(n, _, _)| *n == period)
            .is_none_or(|(_, k, at)| {
                k.as_slice() != keys || now.saturating_duration_since(*at) >= REUPLOAD_EVERY
            })
    }

    /// The revision of the next descriptor signed at `now_unix`. Revisions follow the clock
    /// so a restarted service never rolls back.
    pub(super) fn next_revision(&mut self, now_unix: u64) -> u64 {
        self.revision = now_unix.max(self.revision.saturating_add(1));
        self.revision
    }

    /// Records that `period`'s descriptor with `keys` was stored at `now`.
    pub(super) fn stored(&mut self, period: u64, keys: Vec<[u8; 32]>, now: Instant) {
        self.uploaded.retain(|(n, _, _)| *n != period);
        self.uploaded.push((period, keys, now));
    }

    /// Records that no directory stored the descriptor at `now`.
    pub(super) fn failed(&mut self, now: Instant) {
        self.retry_at = now + UPLOAD_RETRY;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_period_is_served_only_near_the_boundary() {
        let p = PeriodParams {
            length: 86_400,
            offset: 43_200,
        };
        let start_of_10 = 43_200 + 10 * 86_400;
        assert_eq!(periods_to_serve(&p, start_of_10).len(), 1);
        let near = start_of_10 + 86_400 - NEXT_PERIOD_AHEAD;
        let served = periods_to_serve(&p, near);
        assert_eq!(served.len(), 2);
        assert_eq!((served[0].number, served[1].number), (10, 11));
        assert_eq!(periods_to_serve(&p, near - 1).len(), 1);
    }

    #[test]
    fn served_periods_follow_a_jump_of_days() {
        let p = PeriodParams {
            length: 86_400,
            offset: 43_200,
        };
        let mid_10 = 43_200 + 10 * 86_400 + 1_000;
        let numbers = |now| {
            periods_to_serve(&p, now)
                .iter()
                .map(|t| t.number)
                .collect::<Vec<_>>()
        };
        assert_eq!(numbers(mid_10), [10]);
        // A machine suspended for three days: the next tick serves the period of its clock.
        assert_eq!(numbers(mid_10 + 3 * 86_400), [13]);
        assert_eq!(numbers(86_400 * 20 + 43_200 - 1), [19, 20]);
        // A period length of zero serves nothing rather than dividing by it.
        let broken = PeriodParams {
            length: 0,
            offset: 0,
        };
        assert!(periods_to_serve(&broken, mid_10).is_empty());
    }

    #[test]
    fn uploads_are_due_when_new_changed_or_an_hour_old() {
        let t0 = Instant::now();
        let keys = vec![[1u8; 32], [2; 32]];
        let mut s = PublishSchedule::new(t0);
        assert!(s.may_upload(t0));
        assert!(s.due(10, &keys, t0), "never stored");
        s.stored(10, keys.clone(), t0);
        assert!(!s.due(10, &keys, t0));
        assert!(!s.due(10, &keys, t0 + REUPLOAD_EVERY - Duration::from_secs(1)));
        assert!(s.due(10, &keys, t0 + REUPLOAD_EVERY));
        assert!(s.due(10, &keys[..1], t0), "another key set");
        assert!(s.due(11, &keys, t0), "another period");
        // Days later: due again, once.
        let days = t0 + Duration::from_secs(4 * 24 * 60 * 60);
        assert!(s.due(10, &keys, days));
        s.stored(10, keys.clone(), days);
        assert!(!s.due(10, &keys, days));
        // Periods no longer served are forgotten: due at once if they come back.
        s.keep_periods(&[TimePeriod {
            length: 86_400,
            number: 11,
        }]);
        assert!(s.due(10, &keys, days));
    }

    #[test]
    fn a_failed_round_waits_and_revisions_never_roll_back() {
        let t0 = Instant::now();
        let mut s = PublishSchedule::new(t0);
        s.failed(t0);
        assert!(!s.may_upload(t0));
        assert!(!s.may_upload(t0 + UPLOAD_RETRY - Duration::from_millis(1)));
        assert!(s.may_upload(t0 + UPLOAD_RETRY));
        assert!(s.may_upload(t0 + Duration::from_secs(3 * 24 * 60 * 60)));
        // Revisions follow the clock, and still grow when the clock stands still or steps
        // back.
        assert_eq!(s.next_revision(1_700_000_000), 1_700_000_000);
        assert_eq!(s.next_revision(1_700_000_000), 1_700_000_001);
        assert_eq!(s.next_revision(1_600_000_000), 1_700_000_002);
        assert_eq!(s.next_revision(1_700_259_200), 1_700_259_200);
    }
}
