//! The service's replay cache of introductions.
//!
//! An introduction point sees every INTRODUCE1 it forwards and could send the same
//! INTRODUCE2 again, making the service build circuits to a rendezvous point of the
//! attacker's choosing over and over. The service therefore remembers every client key `X`
//! it accepted under one introduction-point key `B`, and refuses a repeat. The cache never
//! evicts (eviction would re-open replays): when it is full the service refuses further
//! introductions at that point and must rotate to a fresh `B` (a new descriptor), which
//! starts a new, empty cache.

use std::collections::HashSet;

/// Default number of introductions remembered per introduction-point key.
pub const DEFAULT_REPLAY_CAPACITY: usize = 100_000;

/// Why an introduction was refused by the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// This `X` was already seen under this key.
    #[error("introduction replayed")]
    Replayed,
    /// The cache is full: rotate the introduction-point key.
    #[error("replay cache full; the introduction point key must rotate")]
    Full,
}

/// Client ephemeral keys already accepted under one introduction-point key.
#[derive(Debug)]
pub struct ReplayCache {
    seen: HashSet<[u8; 32]>,
    capacity: usize,
}

impl ReplayCache {
    /// An empty cache remembering at most `capacity` introductions.
    pub fn new(capacity: usize) -> Self {
        Self {
            seen: HashSet::new(),
            capacity,
        }
    }

    /// Records `client_x`, refusing it if already present or if the cache is full. Call
    /// only after the introduction decrypted (so garbage cannot fill the cache).
    pub fn check_and_insert(&mut self, client_x: &[u8; 32]) -> Result<(), ReplayError> {
        if self.seen.contains(client_x) {
            return Err(ReplayError::Replayed);
        }
        if self.seen.len() >= self.capacity {
            return Err(ReplayError::Full);
        }
        self.seen.insert(*client_x);
        Ok(())
    }

    /// Number of introductions remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether nothing is remembered yet.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}
