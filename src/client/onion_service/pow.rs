//! The service's side of the client puzzle (docs/protocol.md §8.8): its seeds, the one
//! replay cache of `(seed, nonce)` all its introduction points share, and the effort it
//! suggests. Pure: every call takes `now` (unix seconds).

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use rand::Rng;

use crate::onion::descriptor::{PowParams, MAX_DESCRIPTOR_LIFETIME};
use crate::onion::pow::{self, PowInput, PowSolution, MAX_SUGGESTED_EFFORT, POW_NONCE_LEN};
use crate::onion::BlindedPublic;
use crate::sync::lock;

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

/// Seeds accepted at once: the current one and the two before it (a seed replaced early,
/// its cache filling, must not take its predecessor's clients with it).
pub(super) const MAX_SEEDS: usize = 3;

/// What the service knows of its puzzle.
#[derive(Debug)]
pub(super) struct PowState {
    /// Newest first: the first is the one descriptors are published with; the others are
    /// accepted until they expire (clients may hold older descriptors).
    seeds: VecDeque<Seed>,
}

/// Why a solution was not counted (the introduction then counts as effort 0).
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
            seeds: VecDeque::from([fresh_seed(effort.min(MAX_SUGGESTED_EFFORT), now)]),
        }
    }

    /// What descriptors publish.
    pub(super) fn params(&self) -> PowParams {
        self.seeds.front().map_or(
            PowParams {
                suggested_effort: 0,
                seed: [0; 32],
                expires: 0,
            },
            |s| s.params,
        )
    }

    /// Replaces the current seed once fewer than [`MAX_DESCRIPTOR_LIFETIME`] seconds of it
    /// are left at `now` (every descriptor a client may still hold names a seed accepted
    /// until it expires), or once its nonce cache is [`ROTATE_NONCES_AT`] full; forgets
    /// expired seeds and all but the newest [`MAX_SEEDS`].
    pub(super) fn rotate(&mut self, now: u64) {
        let p = self.params();
        let due = p.expires.saturating_sub(now) < u64::from(MAX_DESCRIPTOR_LIFETIME)
            || self
                .seeds
                .front()
                .is_none_or(|s| s.used.len() >= ROTATE_NONCES_AT);
        if due {
            self.seeds.push_front(fresh_seed(p.suggested_effort, now));
        }
        self.seeds.truncate(MAX_SEEDS);
        let mut first = true;
        self.seeds
            .retain(|s| std::mem::take(&mut first) || s.params.expires > now);
    }

    /// The effort `sol` earns this introduction (bound to `blinded`, the point's `auth`
    /// and `enc` keys and the client's `x`), recording its nonce; a refusal otherwise.
    /// The Equi-X checks run without the lock held (introduction tasks share the state);
    /// a nonce already used under some seed is refused before any of them.
    pub(super) fn accept(
        state: &Mutex<PowState>,
        now: u64,
        blinded: &BlindedPublic,
        (auth, enc): (&[u8; 32], &[u8; 32]),
        x: &[u8; 32],
        sol: &PowSolution,
    ) -> Result<u32, Refused> {
        let candidates: Vec<[u8; 32]> = {
            let st = lock(state);
            if st.seeds.iter().any(|s| s.used.contains(&sol.nonce)) {
                return Err(Refused::Replayed);
            }
            st.seeds
                .iter()
                .filter(|s| s.params.expires > now)
                .map(|s| s.params.seed)
                .collect()
        };
        let solved = candidates.into_iter().find(|seed| {
            let input = PowInput {
                seed,
                blinded,
                auth_key: auth,
                enc_key: enc,
                client_x: x,
            };
            pow::verify(&input, sol).is_ok()
        });
        let seed = solved.ok_or(Refused::Invalid)?;
        let mut st = lock(state);
        // The seed may have been forgotten meanwhile: then the solution no longer counts.
        let s = st
            .seeds
            .iter_mut()
            .find(|s| s.params.seed == seed)
            .ok_or(Refused::Invalid)?;
        if s.used.len() >= NONCE_CAPACITY {
            return Err(Refused::Full);
        }
        // Two points verifying the same solution at once: the second insert finds it.
        if !s.used.insert(sol.nonce) {
            return Err(Refused::Replayed);
        }
        Ok(sol.effort)
    }

    /// Sets the effort the next descriptors suggest; whether it changed.
    pub(super) fn suggest(&mut self, effort: u32) -> bool {
        let effort = effort.min(MAX_SUGGESTED_EFFORT);
        let Some(current) = self.seeds.front_mut() else {
            return false;
        };
        let changed = current.params.suggested_effort != effort;
        current.params.suggested_effort = effort;
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
        let state = Mutex::new(PowState::new(2, now));
        let (point_a, point_b) = (([1u8; 32], [2u8; 32]), ([3u8; 32], [4u8; 32]));
        let sol = solve(&lock(&state).params(), &b, (&point_a.0, &point_a.1));
        let at = |p: &([u8; 32], [u8; 32])| {
            PowState::accept(&state, now, &b, (&p.0, &p.1), &[7; 32], &sol)
        };
        assert_eq!(at(&point_b), Err(Refused::Invalid));
        assert_eq!(at(&point_a), Ok(2));
        assert_eq!(at(&point_a), Err(Refused::Replayed));
        assert_eq!(at(&point_b), Err(Refused::Replayed));
    }

    #[test]
    fn seeds_rotate_before_expiry_and_when_their_cache_fills() {
        let now = 1_700_000_000;
        let b = blinded(now);
        let keys = ([1u8; 32], [2u8; 32]);
        let state = Mutex::new(PowState::new(2, now));
        let accept = |t: u64, sol: &PowSolution| {
            PowState::accept(&state, t, &b, (&keys.0, &keys.1), &[7; 32], sol)
        };
        let first = lock(&state).params();
        lock(&state).rotate(now);
        assert_eq!(lock(&state).params(), first, "a fresh seed is kept");
        let old = solve(&first, &b, (&keys.0, &keys.1));
        // Less than a descriptor lifetime left: a new seed; the old one still counts.
        let later = first.expires - u64::from(MAX_DESCRIPTOR_LIFETIME) + 1;
        lock(&state).rotate(later);
        assert_ne!(lock(&state).params().seed, first.seed);
        assert_eq!(lock(&state).params().suggested_effort, 2);
        assert_eq!(accept(later, &old), Ok(2));
        // An attacker fills the current seed's cache to force early rotations, twice:
        // a client holding the descriptor of two seeds ago still gets its effort.
        let held = lock(&state).params();
        let honest = solve(&held, &b, (&keys.0, &keys.1));
        for round in 0..2u64 {
            let mut st = lock(&state);
            let current = st.seeds.front_mut().unwrap();
            current.used.extend((0..ROTATE_NONCES_AT as u64).map(|i| {
                let mut n = [0u8; POW_NONCE_LEN];
                n[..8].copy_from_slice(&i.to_be_bytes());
                n[8..].copy_from_slice(&round.to_be_bytes());
                n
            }));
            let before = st.params().seed;
            st.rotate(later);
            assert_ne!(st.params().seed, before);
        }
        assert_eq!(lock(&state).seeds.len(), MAX_SEEDS);
        assert_eq!(accept(later, &honest), Ok(2));
        // Days later (a suspended machine): all expired; the next rotation replaces the
        // stale current seed at once and forgets the others.
        let days = now + 5 * 24 * 60 * 60;
        let new = solve(&lock(&state).params(), &b, (&keys.0, &keys.1));
        assert_eq!(accept(days, &new), Err(Refused::Invalid));
        lock(&state).rotate(days);
        assert_eq!(lock(&state).params().expires, days + POW_SEED_LIFETIME);
        assert_eq!(lock(&state).seeds.len(), 1);
    }
}
