//! The client puzzle a service can require when introductions flood in.
//!
//! The client finds a 16-byte `nonce` such that
//! `SHA-256("allium-pow-v1" | seed | A' | X | nonce)` starts with at least `d` zero bits,
//! where `seed` and `d` come from the descriptor, `A'` is the period's blinded key and `X`
//! the client's ephemeral key of this very introduction (so one solution buys exactly one
//! introduction: a fresh `X` needs fresh work, and the service's replay cache of `X`
//! refuses reuse). Solving takes about `2^d` hashes; verifying takes one.

use sha2::{Digest, Sha256};

use crate::onion::blinding::BlindedPublic;

/// Domain-separation prefix of the puzzle hash.
pub const POW_LABEL: &[u8] = b"allium-pow-v1";
/// Largest difficulty a descriptor may ask for (≈ 2^32 hashes, minutes of CPU).
pub const MAX_POW_DIFFICULTY: u8 = 32;
/// Length of a solution nonce.
pub const POW_NONCE_LEN: usize = 16;

/// Why a solution was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PowError {
    /// Difficulty 0 or above [`MAX_POW_DIFFICULTY`].
    #[error("proof-of-work difficulty {0} is out of range")]
    BadDifficulty(u8),
    /// The hash has too few leading zero bits.
    #[error("insufficient proof of work")]
    Insufficient,
    /// The solver gave up after its iteration budget.
    #[error("no solution within the iteration budget")]
    Exhausted,
}

/// The puzzle hash.
pub fn pow_hash(
    seed: &[u8; 32],
    blinded: &BlindedPublic,
    client_x: &[u8; 32],
    nonce: &[u8; POW_NONCE_LEN],
) -> [u8; 32] {
    Sha256::new()
        .chain_update(POW_LABEL)
        .chain_update(seed)
        .chain_update(blinded.as_bytes())
        .chain_update(client_x)
        .chain_update(nonce)
        .finalize()
        .into()
}

/// Number of leading zero bits of `hash`.
pub fn leading_zero_bits(hash: &[u8; 32]) -> u32 {
    let mut bits = 0;
    for &b in hash {
        if b == 0 {
            bits += 8;
        } else {
            return bits + b.leading_zeros();
        }
    }
    bits
}

/// Checks a solution: one hash.
pub fn verify(
    difficulty: u8,
    seed: &[u8; 32],
    blinded: &BlindedPublic,
    client_x: &[u8; 32],
    nonce: &[u8; POW_NONCE_LEN],
) -> Result<(), PowError> {
    if difficulty == 0 || difficulty > MAX_POW_DIFFICULTY {
        return Err(PowError::BadDifficulty(difficulty));
    }
    if leading_zero_bits(&pow_hash(seed, blinded, client_x, nonce)) >= u32::from(difficulty) {
        Ok(())
    } else {
        Err(PowError::Insufficient)
    }
}

/// Searches nonces `start, start+1, ...` (as a big-endian counter in the last 8 bytes of
/// `start`) for at most `max_iterations` hashes. Clients start from a random nonce.
pub fn solve(
    difficulty: u8,
    seed: &[u8; 32],
    blinded: &BlindedPublic,
    client_x: &[u8; 32],
    start: [u8; POW_NONCE_LEN],
    max_iterations: u64,
) -> Result<[u8; POW_NONCE_LEN], PowError> {
    if difficulty == 0 || difficulty > MAX_POW_DIFFICULTY {
        return Err(PowError::BadDifficulty(difficulty));
    }
    let mut nonce = start;
    let mut counter_bytes = [0u8; 8];
    counter_bytes.copy_from_slice(&start[8..]);
    let mut counter = u64::from_be_bytes(counter_bytes);
    for _ in 0..max_iterations {
        if leading_zero_bits(&pow_hash(seed, blinded, client_x, &nonce)) >= u32::from(difficulty) {
            return Ok(nonce);
        }
        counter = counter.wrapping_add(1);
        nonce[8..].copy_from_slice(&counter.to_be_bytes());
    }
    Err(PowError::Exhausted)
}
