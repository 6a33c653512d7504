//! The service's replay cache of introductions.
//!
//! An introduction point sees every INTRODUCE1 it forwards and could send the same
//! INTRODUCE2 again, making the service build circuits to a rendezvous point of the
//! attacker's choosing over and over. The service therefore remembers every client key `X`
//! it accepted under one introduction-point key `B`, and refuses a repeat. The cache never
//! evicts (eviction would re-open replays). Instead the service rotates to a fresh `B` (a
//! new descriptor, a new, empty cache) once the cache is [`ROTATE_AT_PERCENT`] full
//! ([`ReplayCache::rotation_due`]), long before it is full; the old cache lives only while
//! the old key may still be used. A cache that does fill up refuses every further
//! introduction under its key, so flooding it cannot re-open replays.

use std::collections::HashSet;

/// Default number of introductions remembered per introduction-point key.
pub const DEFAULT_REPLAY_CAPACITY: usize = 100_000;
/// The service rotates an introduction point's key once its cache holds this percentage
/// of its capacity, so a flood of valid introductions leads to a new key, not to a full
/// cache refusing everyone.
pub const ROTATE_AT_PERCENT: usize = 80;

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

    /// Whether [`Self::check_and_insert`] would accept `client_x` now, without recording
    /// it: lets the service refuse a replay before charging it to any budget, yet record
    /// only an introduction it goes on to answer.
    pub fn check(&self, client_x: &[u8; 32]) -> Result<(), ReplayError> {
        if self.seen.contains(client_x) {
            return Err(ReplayError::Replayed);
        }
        if self.seen.len() >= self.capacity {
            return Err(ReplayError::Full);
        }
        Ok(())
    }

    /// Records `client_x`, refusing it if already present or if the cache is full. Call
    /// only after the introduction decrypted (so garbage cannot fill the cache).
    pub fn check_and_insert(&mut self, client_x: &[u8; 32]) -> Result<(), ReplayError> {
        self.check(client_x)?;
        self.seen.insert(*client_x);
        Ok(())
    }

    /// Number of introductions remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Most introductions remembered.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether the cache is at least [`ROTATE_AT_PERCENT`] full, so the key it belongs to
    /// should be replaced while some room is left for clients holding the old descriptor.
    pub fn rotation_due(&self) -> bool {
        // len * 100 >= capacity * 80, without overflow for any capacity.
        self.seen.len().saturating_mul(100) >= self.capacity.saturating_mul(ROTATE_AT_PERCENT)
    }

    /// Whether nothing is remembered yet.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> [u8; 32] {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&i.to_be_bytes());
        k
    }

    #[test]
    fn rotation_is_due_at_eighty_percent_and_replays_stay_refused() {
        let mut c = ReplayCache::new(10);
        for i in 0..7 {
            c.check_and_insert(&key(i)).unwrap();
            assert!(!c.rotation_due(), "{} of 10", c.len());
        }
        c.check_and_insert(&key(7)).unwrap();
        assert!(c.rotation_due(), "8 of 10 is 80%");
        assert_eq!(c.check_and_insert(&key(0)), Err(ReplayError::Replayed));
        c.check_and_insert(&key(8)).unwrap();
        c.check_and_insert(&key(9)).unwrap();
        // Full: nothing is evicted, so old keys stay refused and new ones are refused too.
        assert_eq!(c.check_and_insert(&key(10)), Err(ReplayError::Full));
        assert_eq!(c.check_and_insert(&key(3)), Err(ReplayError::Replayed));
        assert_eq!(c.len(), 10);
    }

    #[test]
    fn check_answers_like_insert_without_recording() {
        let mut c = ReplayCache::new(2);
        assert_eq!(c.check(&key(1)), Ok(()));
        assert_eq!(c.check(&key(1)), Ok(()), "a check records nothing");
        assert!(c.is_empty());
        c.check_and_insert(&key(1)).unwrap();
        assert_eq!(c.check(&key(1)), Err(ReplayError::Replayed));
        c.check_and_insert(&key(2)).unwrap();
        assert_eq!(c.check(&key(3)), Err(ReplayError::Full));
    }

    #[test]
    fn rotation_threshold_of_the_default_capacity() {
        let c = ReplayCache::new(DEFAULT_REPLAY_CAPACITY);
        assert_eq!(c.capacity(), 100_000);
        assert!(!c.rotation_due());
        assert!(
            ReplayCache::new(0).rotation_due(),
            "an empty capacity rotates at once"
        );
    }
}
