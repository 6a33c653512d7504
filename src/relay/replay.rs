//! The CREATE replay filter: a relay refuses a circuit handshake message it has already
//! answered recently.
//!
//! A replayed CREATE (or the handshake inside a replayed EXTEND) cannot give the replayer
//! a usable circuit (it lacks the client's ephemeral secret), but answering it would let a
//! previous hop or anyone who recorded it make the relay repeat work and open a circuit the
//! original client never asked for. The filter makes the relay answer each handshake
//! message at most once within its window.
//!
//! Design (docs/protocol.md §5A, SECURITY.md):
//! - The key is the first 16 bytes of SHA-256 over the handshake type and the whole client
//!   message. For `allium-ntor-1` the message contains the client's ephemeral `X`, and no
//!   one without `x` can make a second valid message for the same `X` (the extension
//!   ciphertext is authenticated under a key derived from `x`), so this is equivalent to
//!   keying on `X`.
//! - Two generations of hash sets: lookups check both, insertions go to the current one.
//!   The current generation becomes the previous one (and the old previous one is dropped)
//!   when it is older than [`ReplayFilter::window`] or holds
//!   [`ReplayFilter::capacity`] entries. A message is therefore remembered for at least one
//!   window unless the relay answers more than `capacity` handshakes within it; at the
//!   bound the oldest generation is forgotten early (the effective window shrinks), so
//!   memory stays bounded and honest clients are never refused because the filter is full.
//! - Only handshakes that succeeded are recorded (after the expensive work, in one
//!   check-and-insert under the lock), so garbage CREATEs cannot flush the filter cheaply
//!   and two copies racing each other cannot both pass. A cheap lookup before the work
//!   spares the handshake for replays that are already known.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use sha2::digest::consts::U16;
use sha2::{Digest, Sha256};

use crate::sync::lock;

/// Default window: a handshake message is remembered for at least this long.
pub(crate) const DEFAULT_WINDOW: Duration = Duration::from_secs(30 * 60);

/// Default capacity of one generation: 7/8 of 2^17, the most a hash table of 2^17
/// buckets holds before it doubles. Each bucket is a 16-byte key and one control byte, so
/// the two generations take about 2 × 131072 × 17 bytes ≈ 4.5 MiB at most. At the default
/// handshake rate limit (2000/s) a generation fills in about a minute, which then bounds
/// the window.
pub(crate) const DEFAULT_CAPACITY: usize = 114_688;

type Key = [u8; 16];

#[derive(Debug)]
struct Generations {
    current: HashSet<Key>,
    previous: HashSet<Key>,
    started: Instant,
}

/// A bounded, time-windowed set of recently answered circuit handshake messages.
#[derive(Debug)]
pub struct ReplayFilter {
    inner: Mutex<Generations>,
    window: Duration,
    capacity: usize,
}

impl Default for ReplayFilter {
    fn default() -> Self {
        ReplayFilter::new(DEFAULT_WINDOW, DEFAULT_CAPACITY)
    }
}

impl ReplayFilter {
    /// A filter remembering messages for at least `window`, holding at most `capacity`
    /// entries per generation (two generations).
    pub fn new(window: Duration, capacity: usize) -> Self {
        ReplayFilter {
            inner: Mutex::new(Generations {
                current: HashSet::new(),
                previous: HashSet::new(),
                started: Instant::now(),
            }),
            window,
            capacity: capacity.max(1),
        }
    }

    /// The minimum time a message is remembered when fewer than `capacity` handshakes
    /// arrive per window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Entries per generation.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn key(htype: u16, msg: &[u8]) -> Key {
        let digest = Sha256::new()
            .chain_update(b"allium-create-replay")
            .chain_update(htype.to_be_bytes())
            .chain_update(msg)
            .finalize();
        // The first 16 of the digest's 32 bytes; the lengths are part of the types.
        let (key, _) = digest.split::<U16>();
        key.into()
    }

    fn rotate_if_due(&self, g: &mut Generations) {
        if g.started.elapsed() >= self.window || g.current.len() >= self.capacity {
            g.previous = std::mem::take(&mut g.current);
            g.started = Instant::now();
        }
    }

    /// Whether the message was answered recently (a cheap check before the handshake).
    pub fn seen(&self, htype: u16, msg: &[u8]) -> bool {
        let key = Self::key(htype, msg);
        let g = lock(&self.inner);
        g.current.contains(&key) || g.previous.contains(&key)
    }

    /// Records the message; false if it was already recorded (a replay: refuse it).
    pub fn check_and_insert(&self, htype: u16, msg: &[u8]) -> bool {
        let key = Self::key(htype, msg);
        let mut g = lock(&self.inner);
        if g.current.contains(&key) || g.previous.contains(&key) {
            return false;
        }
        self.rotate_if_due(&mut g);
        g.current.insert(key)
    }

    /// Entries held now (both generations).
    pub fn len(&self) -> usize {
        let g = lock(&self.inner);
        g.current.len() + g.previous.len()
    }

    /// Whether the filter holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_the_first_16_bytes_of_the_tagged_digest() {
        // docs/protocol.md §5A: SHA-256("allium-create-replay" | htype u16 | hdata)[..16].
        let digest = Sha256::digest(b"allium-create-replay\x00\x01abc");
        assert_eq!(ReplayFilter::key(1, b"abc")[..], digest[..16]);
    }

    #[test]
    fn a_message_is_refused_the_second_time() {
        let f = ReplayFilter::default();
        assert!(!f.seen(1, b"abc"));
        assert!(f.check_and_insert(1, b"abc"));
        assert!(f.seen(1, b"abc"));
        assert!(!f.check_and_insert(1, b"abc"));
        // Another type or another message is a different key.
        assert!(f.check_and_insert(2, b"abc"));
        assert!(f.check_and_insert(1, b"abd"));
    }

    #[test]
    fn memory_is_bounded_and_the_oldest_generation_is_forgotten_at_the_bound() {
        let f = ReplayFilter::new(Duration::from_secs(3600), 4);
        for i in 0u32..100 {
            assert!(f.check_and_insert(1, &i.to_be_bytes()));
            assert!(f.len() <= 8, "{}", f.len());
        }
        // The last capacity's worth is still remembered.
        assert!(!f.check_and_insert(1, &99u32.to_be_bytes()));
        assert!(!f.check_and_insert(1, &96u32.to_be_bytes()));
        // Long gone: forgotten (the effective window shrank under load).
        assert!(f.check_and_insert(1, &0u32.to_be_bytes()));
    }

    #[test]
    fn entries_survive_one_rotation_by_time() {
        let f = ReplayFilter::new(Duration::from_millis(0), 1000);
        assert!(f.check_and_insert(1, b"a"));
        // The next insertion rotates "a" into the previous generation: still refused.
        assert!(f.check_and_insert(1, b"b"));
        assert!(!f.check_and_insert(1, b"a"));
    }
}
