//! The client's side of the puzzle (docs/protocol.md §8.8): which effort to spend on a
//! service's descriptor, and the solver run on a blocking thread, stoppable.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rand::Rng;

use crate::onion::descriptor::PowParams;
#[cfg(test)]
use crate::onion::pow::DEFAULT_CLIENT_MAX_EFFORT as DEFAULT_MAX_POW_EFFORT;
use crate::onion::pow::{self, PowError, PowInput, PowSolution, POW_NONCE_LEN};

/// The effort to spend on a descriptor's puzzle at `now`: the suggested one raised to
/// `min` and capped at `max`; `None` if the puzzle is absent or expired, or the effort 0.
pub(super) fn effort_to_spend(
    pow: Option<PowParams>,
    now: u64,
    (min, max): (u32, u32),
) -> Option<(PowParams, u32)> {
    let p = pow.filter(|p| p.expires > now)?;
    let effort = p.suggested_effort.max(min).min(max);
    (effort > 0).then_some((p, effort))
}

/// Sets its flag when dropped (stops a solver whose requester went away).
pub(super) struct CancelOnDrop(pub(super) Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Solves `input`'s puzzle at `effort` from a random nonce, giving up after eight times
/// the expected number of Equi-X runs (each yields two solutions on average, so about
/// `effort / 2` are expected: no solution with probability about e^-8) or when `cancel`
/// is set. Blocking: run it on a blocking thread.
pub(super) fn solve_puzzle(
    input: &PowInput<'_>,
    effort: u32,
    cancel: &AtomicBool,
) -> Result<PowSolution, PowError> {
    let mut start = [0u8; POW_NONCE_LEN];
    rand::rng().fill_bytes(&mut start);
    let runs = u64::from(effort).saturating_mul(4).saturating_add(16);
    pow::solve(input, effort, start, runs, &|| {
        cancel.load(Ordering::Relaxed)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onion::{BlindedKeypair, BlindedPublic, TimePeriod};

    fn blinded() -> BlindedPublic {
        let id = crate::crypto::IdentityKeypair::generate(&mut rand::rng());
        *BlindedKeypair::derive(
            &id,
            TimePeriod {
                length: 86_400,
                number: 1,
            },
        )
        .unwrap()
        .public()
    }

    #[test]
    fn effort_follows_the_suggestion_within_the_clients_bounds() {
        let p = |suggested_effort| PowParams {
            suggested_effort,
            seed: [7; 32],
            expires: 2_000,
        };
        assert_eq!(effort_to_spend(None, 1_000, (0, 100)), None);
        assert_eq!(effort_to_spend(Some(p(0)), 1_000, (0, 100)), None);
        assert_eq!(
            effort_to_spend(Some(p(0)), 1_000, (5, 100)),
            Some((p(0), 5))
        );
        assert_eq!(
            effort_to_spend(Some(p(40)), 1_000, (5, 100)),
            Some((p(40), 40))
        );
        assert_eq!(
            effort_to_spend(Some(p(1 << 20)), 1_000, (5, 100)),
            Some((p(1 << 20), 100))
        );
        // An expired puzzle is not solved: the service no longer checks it.
        assert_eq!(effort_to_spend(Some(p(40)), 2_000, (5, 100)), None);
    }

    #[test]
    fn solution_verifies_and_cancel_stops_the_solver() {
        let b = blinded();
        let k = [3u8; 32];
        let input = PowInput {
            seed: &k,
            blinded: &b,
            auth_key: &k,
            enc_key: &k,
            client_x: &k,
        };
        let sol = solve_puzzle(&input, 8, &AtomicBool::new(false)).unwrap();
        pow::verify(&input, &sol).unwrap();
        assert_eq!(
            solve_puzzle(&input, u32::MAX, &AtomicBool::new(true)),
            Err(PowError::Exhausted)
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_solver_does_not_block_the_runtime() {
        // On a single-threaded runtime, a timer keeps firing while a puzzle is solved on a
        // blocking thread; the guard's drop stops the solver.
        let b = blinded();
        let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
        let flag = Arc::clone(&cancel.0);
        let solver = tokio::task::spawn_blocking(move || {
            let k = [1u8; 32];
            let input = PowInput {
                seed: &k,
                blinded: &b,
                auth_key: &k,
                enc_key: &k,
                client_x: &k,
            };
            solve_puzzle(&input, DEFAULT_MAX_POW_EFFORT * 100, &flag)
        });
        let mut ticks = 0;
        while ticks < 3 && !solver.is_finished() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            ticks += 1;
        }
        drop(cancel);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(60), solver)
            .await
            .expect("the solver did not stop when cancelled");
    }
}
