//! The client puzzle a service under load sets its introductions (docs/protocol.md §8.8):
//! Equi-X (as Tor's proposal 327) with an effort the client chooses.
//!
//! The challenge names everything one introduction is for:
//!
//! ```text
//! C = "allium-pow-v2" | seed 32 | A' 32 | AUTH 32 | B 32 | X 32 | nonce 16 | u32be(effort)
//! ```
//!
//! (`seed` from the descriptor, `A'` the period's blinded key, `AUTH` and `B` the
//! introduction point's auth and encryption keys, `X` the client's ephemeral key of this
//! introduction). A solution is a 16-byte Equi-X solution `S` of `C` such that
//! `u32be(SHA-256("allium-pow-v2-effort" | C | S)[0..4]) * effort ≤ 2^32 − 1`: about
//! `effort` Equi-X solutions must be tried (each Equi-X run yields two on average), while
//! checking one takes a single Equi-X verification (tens of microseconds). Binding `AUTH`
//! and `B` makes a solution good at one introduction point only; the service also keeps
//! one replay cache of `(seed, nonce)` for all its points.
//!
//! Why Equi-X: its solver needs about 1.8 MB of memory per attempt and a program
//! generated from the challenge, which narrows the gap between a phone and a GPU or ASIC
//! that plain SHA-256 leading zeros leave wide open, and verification is far cheaper than
//! solving (an asymmetric puzzle; a memory-hard hash such as Argon2 costs the verifier as
//! much as one attempt).

use sha2::{Digest, Sha256};

use crate::onion::blinding::BlindedPublic;

/// Domain-separation prefix of the challenge.
pub const POW_LABEL: &[u8] = b"allium-pow-v2";
/// Domain-separation prefix of the effort hash.
pub const EFFORT_LABEL: &[u8] = b"allium-pow-v2-effort";
/// Length of a solution's nonce.
pub const POW_NONCE_LEN: usize = 16;
/// Length of an Equi-X solution.
pub const POW_SOLUTION_LEN: usize = equix::Solution::NUM_BYTES;
/// The most effort a client spends by default (Tor's clients stop at 10,000 too): about
/// 5,000 Equi-X runs, seconds to tens of seconds of one core.
pub const DEFAULT_CLIENT_MAX_EFFORT: u32 = 10_000;
/// The most effort a descriptor may suggest (Tor clients cap theirs at 10,000).
pub const MAX_SUGGESTED_EFFORT: u32 = 1 << 20;

/// Why a solution was refused or not found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PowError {
    /// Effort 0 is no solution at all.
    #[error("proof-of-work effort must be at least 1")]
    ZeroEffort,
    /// The Equi-X solution does not solve this challenge (or is malformed).
    #[error("invalid Equi-X solution")]
    Invalid,
    /// A valid Equi-X solution, but its hash does not meet the claimed effort.
    #[error("insufficient proof of work for the claimed effort")]
    Insufficient,
    /// The solver gave up (its budget spent or it was told to stop).
    #[error("no solution within the attempt budget")]
    Exhausted,
}

/// What a solution is bound to: the service's seed and the introduction it is for.
#[derive(Debug, Clone, Copy)]
pub struct PowInput<'a> {
    /// The descriptor's puzzle seed.
    pub seed: &'a [u8; 32],
    /// The period's blinded key `A'`.
    pub blinded: &'a BlindedPublic,
    /// The introduction point's auth key.
    pub auth_key: &'a [u8; 32],
    /// The introduction point's encryption key `B`.
    pub enc_key: &'a [u8; 32],
    /// The client's ephemeral key `X` of this introduction.
    pub client_x: &'a [u8; 32],
}

/// A solution as the client sends it inside INTRODUCE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowSolution {
    /// The nonce the challenge was made with.
    pub nonce: [u8; POW_NONCE_LEN],
    /// The effort the client claims (the service orders introductions by it).
    pub effort: u32,
    /// The Equi-X solution.
    pub solution: [u8; POW_SOLUTION_LEN],
}

/// The challenge string `C`.
pub fn challenge(input: &PowInput<'_>, nonce: &[u8; POW_NONCE_LEN], effort: u32) -> Vec<u8> {
    let mut c = Vec::with_capacity(POW_LABEL.len() + 5 * 32 + POW_NONCE_LEN + 4);
    c.extend_from_slice(POW_LABEL);
    c.extend_from_slice(input.seed);
    c.extend_from_slice(input.blinded.as_bytes());
    c.extend_from_slice(input.auth_key);
    c.extend_from_slice(input.enc_key);
    c.extend_from_slice(input.client_x);
    c.extend_from_slice(nonce);
    c.extend_from_slice(&effort.to_be_bytes());
    c
}

/// Whether the Equi-X solution `s` of `c` meets `effort` (≥ 1).
fn meets_effort(c: &[u8], s: &[u8; POW_SOLUTION_LEN], effort: u32) -> bool {
    let h = Sha256::new()
        .chain_update(EFFORT_LABEL)
        .chain_update(c)
        .chain_update(s)
        .finalize();
    let [a, b, c, d, ..] = h.as_slice() else {
        return false;
    };
    let r = u32::from_be_bytes([*a, *b, *c, *d]);
    u64::from(r) * u64::from(effort) <= u64::from(u32::MAX)
}

/// Checks a solution: the effort, then one Equi-X verification (the costlier part).
pub fn verify(input: &PowInput<'_>, sol: &PowSolution) -> Result<(), PowError> {
    if sol.effort == 0 {
        return Err(PowError::ZeroEffort);
    }
    let c = challenge(input, &sol.nonce, sol.effort);
    // Cheap first: a solution that misses the effort is refused without building the
    // challenge's hash program.
    if !meets_effort(&c, &sol.solution, sol.effort) {
        return Err(PowError::Insufficient);
    }
    equix::verify_bytes(&c, &sol.solution).map_err(|_| PowError::Invalid)
}

/// Searches for a solution of `effort` (≥ 1) from the nonce `start`, counting up in its
/// last 8 bytes, for at most `max_runs` Equi-X runs, asking `stop` before each run.
/// Blocking (milliseconds per run): clients run it on a blocking thread.
pub fn solve(
    input: &PowInput<'_>,
    effort: u32,
    start: [u8; POW_NONCE_LEN],
    max_runs: u64,
    stop: &dyn Fn() -> bool,
) -> Result<PowSolution, PowError> {
    if effort == 0 {
        return Err(PowError::ZeroEffort);
    }
    let mut memory = equix::SolverMemory::new();
    let mut nonce = start;
    let (head, tail) = start.split_at(8);
    let mut counter = u64::from_be_bytes(tail.try_into().map_err(|_| PowError::Exhausted)?);
    for _ in 0..max_runs {
        if stop() {
            return Err(PowError::Exhausted);
        }
        let c = challenge(input, &nonce, effort);
        // A small fraction of challenges give no usable hash program: next nonce.
        if let Ok(eq) = equix::EquiX::new(&c) {
            for s in eq.solve_with_memory(&mut memory) {
                let bytes = s.to_bytes();
                if meets_effort(&c, &bytes, effort) {
                    return Ok(PowSolution {
                        nonce,
                        effort,
                        solution: bytes,
                    });
                }
            }
        }
        counter = counter.wrapping_add(1);
        nonce = [0; POW_NONCE_LEN];
        let (h, t) = nonce.split_at_mut(8);
        h.copy_from_slice(head);
        t.copy_from_slice(&counter.to_be_bytes());
    }
    Err(PowError::Exhausted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> BlindedPublic {
        let identity = crate::crypto::IdentityKeypair::generate(&mut rand::rng());
        let address = crate::onion::OnionAddress::from_identity(identity.public()).unwrap();
        let period = crate::onion::PeriodParams::default()
            .period_at(1_700_000_000)
            .unwrap();
        BlindedPublic::derive(&address, period).unwrap()
    }

    #[test]
    fn a_solution_verifies_only_for_what_it_was_made_for() {
        let blinded = keys();
        let (seed, auth, b, x) = ([1u8; 32], [2u8; 32], [3u8; 32], [4u8; 32]);
        let input = PowInput {
            seed: &seed,
            blinded: &blinded,
            auth_key: &auth,
            enc_key: &b,
            client_x: &x,
        };
        let sol = solve(&input, 4, [0; 16], 1000, &|| false).unwrap();
        verify(&input, &sol).unwrap();
        let other = [9u8; 32];
        for changed in [
            PowInput {
                seed: &other,
                ..input
            },
            PowInput {
                auth_key: &other,
                ..input
            },
            PowInput {
                enc_key: &other,
                ..input
            },
            PowInput {
                client_x: &other,
                ..input
            },
        ] {
            assert!(verify(&changed, &sol).is_err());
        }
        // A lower claimed effort changes the challenge too: no reuse at another effort.
        let cheaper = PowSolution { effort: 1, ..sol };
        assert!(verify(&input, &cheaper).is_err());
        assert_eq!(
            verify(&input, &PowSolution { effort: 0, ..sol }),
            Err(PowError::ZeroEffort)
        );
        let mut garbage = sol;
        garbage.solution = [0x42; POW_SOLUTION_LEN];
        assert!(verify(&input, &garbage).is_err());
    }

    #[test]
    fn solver_stops_when_told() {
        let blinded = keys();
        let z = [0u8; 32];
        let input = PowInput {
            seed: &z,
            blinded: &blinded,
            auth_key: &z,
            enc_key: &z,
            client_x: &z,
        };
        assert_eq!(
            solve(&input, u32::MAX, [0; 16], 1000, &|| true),
            Err(PowError::Exhausted)
        );
        assert_eq!(
            solve(&input, u32::MAX, [0; 16], 2, &|| false),
            Err(PowError::Exhausted)
        );
    }
}
