//! The client puzzle's seeds: when the current one is replaced and which ones a solution
//! may use. Pure: every call takes `now` (unix seconds).

use rand::Rng;

use crate::onion::descriptor::{PowParams, MAX_DESCRIPTOR_LIFETIME};
use crate::onion::pow::POW_NONCE_LEN;
use crate::onion::BlindedPublic;

/// Seconds a client puzzle seed stays valid.
pub(super) const POW_SEED_LIFETIME: u64 = 24 * 60 * 60;

/// The puzzle seeds: (current, previous). Rotated before the current one expires; a
/// client may still hold a descriptor with the previous one.
pub(super) type PowSeeds = (Option<PowParams>, Option<PowParams>);

/// A fresh puzzle seed valid for [`POW_SEED_LIFETIME`] from `now`.
pub(super) fn new_pow_seed(difficulty: u8, now: u64) -> PowParams {
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    PowParams {
        difficulty,
        seed,
        expires: now.saturating_add(POW_SEED_LIFETIME),
    }
}

/// Replaces the current puzzle seed once fewer than [`MAX_DESCRIPTOR_LIFETIME`] seconds
/// of it are left at `now`, keeping it as the previous one: every descriptor a client may
/// still hold (3 h at most) names a seed that is accepted until it expires.
pub(super) fn rotate_pow_state(pow: &mut PowSeeds, difficulty: u8, now: u64) {
    let due = pow
        .0
        .is_none_or(|p| p.expires.saturating_sub(now) < u64::from(MAX_DESCRIPTOR_LIFETIME));
    if due {
        let previous = pow.0;
        *pow = (Some(new_pow_seed(difficulty, now)), previous);
    }
}

/// Whether `nonce` solves the puzzle of a seed the service still accepts at `now` (the
/// current or the previous one, unexpired) for this client's `client_x` and the blinded
/// key of the period the introduction was made for. No nonce is no solution.
pub(super) fn solution_accepted(
    seeds: &PowSeeds,
    now: u64,
    blinded: &BlindedPublic,
    client_x: &[u8; 32],
    nonce: Option<&[u8; POW_NONCE_LEN]>,
) -> bool {
    let (current, previous) = *seeds;
    nonce.is_some_and(|nonce| {
        [current, previous].into_iter().flatten().any(|p| {
            now < p.expires
                && crate::onion::pow::verify(p.difficulty, &p.seed, blinded, client_x, nonce)
                    .is_ok()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn puzzle_seed_rotates_before_expiry_keeping_the_previous_one() {
        let now = 1_700_000_000;
        let mut state = (Some(new_pow_seed(8, now)), None);
        let first = state.0.unwrap();
        rotate_pow_state(&mut state, 8, now);
        assert_eq!(state.0, Some(first), "a fresh seed is kept");
        // Less than a descriptor lifetime left: a new seed, the old one still accepted.
        let later = first.expires - u64::from(MAX_DESCRIPTOR_LIFETIME) + 1;
        rotate_pow_state(&mut state, 8, later);
        assert_ne!(state.0.unwrap().seed, first.seed);
        assert_eq!(state.1, Some(first));
    }

    /// A solution of `seed`'s puzzle that does not happen to solve `other`'s too.
    fn solve(
        seed: &PowParams,
        other: Option<&PowParams>,
        blinded: &BlindedPublic,
        x: &[u8; 32],
    ) -> [u8; POW_NONCE_LEN] {
        let pow = |p: &PowParams, start: [u8; POW_NONCE_LEN]| {
            crate::onion::pow::solve(p.difficulty, &p.seed, blinded, x, start, 1 << 20)
        };
        for first in 0..=u8::MAX {
            let nonce = pow(seed, [first; POW_NONCE_LEN]).unwrap();
            let also = |o: &PowParams| {
                crate::onion::pow::verify(o.difficulty, &o.seed, blinded, x, &nonce).is_ok()
            };
            if !other.is_some_and(also) {
                return nonce;
            }
        }
        panic!("every solution solves both puzzles");
    }

    #[test]
    fn solutions_count_for_unexpired_current_and_previous_seeds_only() {
        let now = 1_700_000_000;
        let identity = crate::crypto::IdentityKeypair::generate(&mut rand::rng());
        let address = crate::onion::OnionAddress::from_identity(identity.public()).unwrap();
        let period = crate::onion::PeriodParams::default()
            .period_at(now)
            .unwrap();
        let blinded = BlindedPublic::derive(&address, period).unwrap();
        let x = [7u8; 32];
        let first = new_pow_seed(8, now);
        let mut seeds: PowSeeds = (Some(first), None);
        assert!(
            !solution_accepted(&seeds, now, &blinded, &x, None),
            "no nonce"
        );
        // Rotated: a solution for the previous seed still counts until that seed expires.
        let later = first.expires - u64::from(MAX_DESCRIPTOR_LIFETIME) + 1;
        rotate_pow_state(&mut seeds, 8, later);
        let current = seeds.0.unwrap();
        let old = solve(&first, Some(&current), &blinded, &x);
        let new = solve(&current, None, &blinded, &x);
        assert!(solution_accepted(&seeds, now, &blinded, &x, Some(&old)));
        assert!(solution_accepted(&seeds, later, &blinded, &x, Some(&old)));
        assert!(solution_accepted(&seeds, later, &blinded, &x, Some(&new)));
        assert!(!solution_accepted(
            &seeds,
            first.expires,
            &blinded,
            &x,
            Some(&old)
        ));
        assert!(solution_accepted(
            &seeds,
            first.expires,
            &blinded,
            &x,
            Some(&new)
        ));
        // Days later (a suspended machine): both seeds have expired, nothing counts until
        // the next tick rotates, which replaces the stale seed at once.
        let days = now + 5 * 24 * 60 * 60;
        assert!(!solution_accepted(&seeds, days, &blinded, &x, Some(&new)));
        rotate_pow_state(&mut seeds, 8, days);
        assert_eq!(seeds.1, Some(current));
        let fresh = seeds.0.unwrap();
        assert_eq!(fresh.expires, days + POW_SEED_LIFETIME);
        let solved = solve(&fresh, None, &blinded, &x);
        assert!(solution_accepted(&seeds, days, &blinded, &x, Some(&solved)));
    }
}
