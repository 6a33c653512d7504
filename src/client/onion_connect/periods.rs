//! Which periods' descriptors a client asks for (docs/protocol.md §8.10 client step 2):
//! near a period boundary, clocks that differ by minutes put the client and the service
//! in different periods, so the neighbouring period's descriptor is asked for too. Pure.

use crate::onion::{PeriodParams, TimePeriod};

/// Within this long of a period boundary, the period on its other side is tried too
/// (services upload the next period's descriptor 2 h ahead, and a descriptor of the
/// period before stays stored for its 3 h lifetime).
pub(super) const BOUNDARY_MARGIN: u64 = 2 * 60 * 60;

/// The periods to fetch a descriptor for at `now`, in order: the current one, then the
/// next if it starts within [`BOUNDARY_MARGIN`] (the service's clock may be ahead), then
/// the previous if the current one started within it (the service's clock may be
/// behind). Empty if the parameters are unusable.
pub(super) fn periods_to_fetch(params: &PeriodParams, now: u64) -> Vec<TimePeriod> {
    let Ok(current) = params.period_at(now) else {
        return Vec::new();
    };
    let start = current
        .number
        .saturating_mul(params.length)
        .saturating_add(params.offset);
    let next_start = start.saturating_add(params.length);
    let mut out = vec![current];
    if next_start.saturating_sub(now) <= BOUNDARY_MARGIN {
        out.push(TimePeriod {
            number: current.number.saturating_add(1),
            ..current
        });
    }
    if now.saturating_sub(start) < BOUNDARY_MARGIN {
        if let Some(number) = current.number.checked_sub(1) {
            out.push(TimePeriod { number, ..current });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_are_tried_only_near_a_boundary_and_after_days() {
        let params = PeriodParams::default();
        let now = 1_700_000_000;
        let current = params.period_at(now).unwrap();
        let start = current.number * params.length + params.offset;
        let at = |t: u64| -> Vec<u64> {
            periods_to_fetch(&params, t)
                .iter()
                .map(|p| p.number)
                .collect()
        };
        let n = current.number;
        assert_eq!(at(start + params.length / 2), vec![n]);
        assert_eq!(at(start + params.length - 60), vec![n, n + 1]);
        assert_eq!(at(start + params.length - BOUNDARY_MARGIN), vec![n, n + 1]);
        assert_eq!(at(start + 60), vec![n, n - 1]);
        assert_eq!(at(start + BOUNDARY_MARGIN), vec![n]);
        // Days later (a laptop that slept): the same rule on the new day.
        let later = start + 9 * params.length + 30;
        assert_eq!(at(later), vec![n + 9, n + 8]);
        // Unusable parameters: nothing to fetch, no panic.
        let zero = PeriodParams {
            length: 0,
            ..params
        };
        assert!(periods_to_fetch(&zero, now).is_empty());
    }
}
