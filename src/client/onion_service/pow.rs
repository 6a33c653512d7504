//! The service's side of the client puzzle (docs/protocol.md §8.8): its seeds, the one
//! replay cache of `(seed, nonce)` all its introduction points share, and the effort it
//! suggests. Pure: every call takes `now` (unix seconds).

use std::collections::HashSet;

use rand::Rng;

use crate::onion::descriptor::{PowParams, MAX_DESCRIPTOR_LIFETIME};
use crate::onion::pow::{self, PowInput, PowSolution, MAX_SUGGESTED_EFFORT, POW_NONCE_LEN};
use crate::onion::BlindedPublic;

/// Seconds a client puzzle seed stays valid.
pub(super) const POW_SEED_LIFETIME: u64 = 24 * 60 * 60;
/// Nonces remembered per seed. Each stands for a verified solution, so filling the cache
/// takes that many solved puzzles; at [`ROTATE_NONCES_AT`] the seed is replaced early (a
/// new descriptor), so a full cache never refuses anyone for long.
pub(super) const NONCE_CAPACITY: usize = 200_000;
/// The seed is replaced once its cache holds this many nonces.
pub(super) const ROTATE_NONCES_AT: usize = NONCE_CAPACITY * 4 / 5;

/// One seed and the nonces already used with it.
#[derive(Debug)]
struct Seed {
    params: PowParams,
    used: HashSet<[u8; POW_NONCE_LEN]>,
}

/// What the service knows of its puzzle.
#[derive(Debug)]
pub(super) struct PowState {
    /// The seed descriptors are published with.
    current: Seed,
    /// The one before it, accepted until it expires (clients may hold older descriptors).
    previous: Option<Seed>,
}

/// Why a solution was not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// It solves no unexpired seed's puzzle for this introduction.
    Invalid,
    /// Its `(seed, nonce)` was used before (at this or another introduction point).
    Replayed,
    /// The seed's nonce cache is full (until the seed rotates).
    Full,
}

fn fresh_seed(suggested_effort: u32, now: u64) -> Seed {
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    Seed {
        params: PowParams {
            suggested_effort,
            seed,
            expires: now.saturating_add(POW_SEED_LIFETIME),
        },
        used: HashSet::new(),
    }
}

impl PowState {
    /// A fresh seed suggesting `effort`.
    pub(super) fn new(effort: u32, now: u64) -> Self {
        PowState {
            current: fresh_seed(effort.min(MAX_SUGGESTED_EFFORT), now),
            previous: None,
        }
    }

    /// What descriptors publish.
    pub(super) fn params(&self) -> PowParams {
        self.current.params
    }

    /// Replaces the current seed once fewer than [`MAX_DESCRIPTOR_LIFETIME`] seconds of it
    /// are left at `now` (every descriptor a client may still hold names a seed accepted
    /// until it expires), or once its nonce cache is [`ROTATE_NONCES_AT`] full.
    pub(super) fn rotate(&mut self, now: u64) {
        let p = self.current.params;
        let due = p.expires.saturating_sub(now) < u64::from(MAX_DESCRIPTOR_LIFETIME)
            || self.current.used.len() >= ROTATE_NONCES_AT;
        if due {
            let next = fresh_seed(p.suggested_effort, now);
            self.previous = Some(std::mem::replace(&mut self.current, next));
        }
        if self
            .previous
            .as_ref()
            .is_some_and(|s| s.params.expires <= now)
        {
            self.previous = None;
        }
    }

    /// The effort `sol` earns this introduction (bound to `blinded`, the point's `auth`
    /// and `enc` keys and the client's `x`), recording its nonce; a refusal otherwise.
    pub(super) fn accept(
        &mut self,
        now: u64,
        blinded: &BlindedPublic,
        (auth, enc): (&[u8; 32], &[u8; 32]),
        x: &[u8; 32],
        sol: &PowSolution,
    ) -> Result<u32, Refused> {
        let seeds = std::iter::once(&mut self.current).chain(self.previous.as_mut());
        for s in seeds {
            if s.params.expires <= now {
                continue;
            }
            let input = PowInput {
                seed: &s.params.seed,
                blinded,
                auth_key: auth,
                enc_key: enc,
                client_x: x,
            };
            if pow::verify(&input, sol).is_err() {
                continue;
            }
            if s.used.contains(&sol.nonce) {
                return Err(Refused::Replayed);
            }
            if s.used.len() >= NONCE_CAPACITY {
                return Err(Refused::Full);
            }
            s.used.insert(sol.nonce);
            return Ok(sol.effort);
        }
        Err(Refused::Invalid)
    }

    /// Sets the effort the next descriptors suggest; whether it changed.
    pub(super) fn suggest(&mut self, effort: u32) -> bool {
        let effort = effort.min(MAX_SUGGESTED_EFFORT);
        let changed = self.current.params.suggested_effort != effort;
        self.current.params.suggested_effort = effort;
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blinded(now: u64) -> BlindedPublic {
        let identity = crate::crypto::IdentityKeypair::generate(&mut rand::rng());
        let address = crate::onion::OnionAddress::from_identity(identity.public()).unwrap();
        let period = crate::onion::PeriodParams::default()
            .period_at(now)
            .unwrap();
        BlindedPublic::derive(&address, period).unwrap()
    }

    fn solve(p: &PowParams, b: &BlindedPublic, keys: (&[u8; 32], &[u8; 32])) -> PowSolution {
        let input = PowInput {
            seed: &p.seed,
            blinded: b,
            auth_key: keys.0,
            enc_key: keys.1,
            client_x: &[7; 32],
        };
        let mut start = [0u8; POW_NONCE_LEN];
        rand::rng().fill_bytes(&mut start);
        pow::solve(&input, 2, start, 1000, &|| false).unwrap()
    }

    /// The attacker solves one puzzle and presents the solution at a second introduction
    /// point of the same service (or again at the first): refused both ways.
    #[test]
    fn one_solution_buys_one_introduction_at_one_point() {
        let now = 1_700_000_000;
        let b = blinded(now);
        let mut state = PowState::new(2, now);
        let (point_a, point_b) = (([1u8; 32], [2u8; 32]), ([3u8; 32], [4u8; 32]));
        let sol = solve(&state.params(), &b, (&point_a.0, &point_a.1));
        let at = |s: &mut PowState, p: &([u8; 32], [u8; 32])| {
            s.accept(now, &b, (&p.0, &p.1), &[7; 32], &sol)
        };
        assert_eq!(at(&mut state, &point_b), Err(Refused::Invalid));
        assert_eq!(at(&mut state, &point_a), Ok(2));
        assert_eq!(at(&mut state, &point_a), Err(Refused::Replayed));
        assert_eq!(at(&mut state, &point_b), Err(Refused::Invalid));
    }

    #[test]
    fn seeds_rotate_before_expiry_and_when_their_cache_fills() {
        let now = 1_700_000_000;
        let b = blinded(now);
        let keys = ([1u8; 32], [2u8; 32]);
        let mut state = PowState::new(2, now);
        let first = state.params();
        state.rotate(now);
        assert_eq!(state.params(), first, "a fresh seed is kept");
        let old = solve(&first, &b, (&keys.0, &keys.1));
        // Less than a descriptor lifetime left: a new seed; the old one still counts.
        let later = first.expires - u64::from(MAX_DESCRIPTOR_LIFETIME) + 1;
        state.rotate(later);
        assert_ne!(state.params().seed, first.seed);
        assert_eq!(state.params().suggested_effort, 2);
        assert_eq!(
            state.accept(later, &b, (&keys.0, &keys.1), &[7; 32], &old),
            Ok(2)
        );
        // Days later (a suspended machine): both expired; the next rotation replaces the
        // stale current seed at once and forgets the previous one.
        let days = now + 5 * 24 * 60 * 60;
        let new = solve(&state.params(), &b, (&keys.0, &keys.1));
        assert_eq!(
            state.accept(days, &b, (&keys.0, &keys.1), &[7; 32], &new),
            Err(Refused::Invalid)
        );
        state.rotate(days);
        assert_eq!(state.params().expires, days + POW_SEED_LIFETIME);
        // A nearly full cache rotates the seed long before it would refuse anyone.
        state
            .current
            .used
            .extend((0..ROTATE_NONCES_AT as u64).map(|i| {
                let mut n = [0u8; POW_NONCE_LEN];
                n[..8].copy_from_slice(&i.to_be_bytes());
                n
            }));
        let before = state.params().seed;
        state.rotate(days);
        assert_ne!(state.params().seed, before);
        assert!(state.current.used.is_empty());
    }
}
