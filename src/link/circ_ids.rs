//! Circuit-id allocation on one channel (docs/protocol.md §2.2).
//!
//! The channel initiator allocates ids with the top bit set, the responder ids with it
//! clear, so both ends allocate without coordination and never collide. Allocation starts
//! at a random point so ids do not reveal how many circuits a channel has carried.

use std::collections::HashSet;

use rand::Rng;

use super::error::{LinkError, LinkResult};
use crate::cell::CircId;

/// Ids in one half of the space: the low 31 bits.
const LOW_MASK: u32 = !CircId::INITIATOR_BIT;
/// The most circuits one half can hold (the responder's half excludes zero).
const HALF_CAPACITY: usize = LOW_MASK as usize;

/// Tracks the circuit ids live on one channel, both ours and the peer's, and hands out new
/// ones from our half.
#[derive(Debug, Clone)]
pub struct CircIdAllocator {
    initiator: bool,
    in_use: HashSet<u32>,
    next_low: u32,
    max: usize,
}

impl CircIdAllocator {
    /// An allocator for the channel end that is (or is not) the initiator, allowing at most
    /// `max` live circuits in total (clamped to what one half of the id space holds).
    pub fn new<R: Rng + ?Sized>(is_initiator: bool, max: usize, rng: &mut R) -> Self {
        CircIdAllocator {
            initiator: is_initiator,
            in_use: HashSet::new(),
            next_low: rng.next_u32() & LOW_MASK,
            max: max.min(HALF_CAPACITY),
        }
    }

    fn with_half(&self, low: u32) -> u32 {
        if self.initiator {
            low | CircId::INITIATOR_BIT
        } else {
            low
        }
    }

    /// A fresh id from our half, not currently in use.
    pub fn allocate(&mut self) -> LinkResult<CircId> {
        if self.in_use.len() >= self.max {
            return Err(LinkError::TooManyCircuits { max: self.max });
        }
        // Fewer than `max <= HALF_CAPACITY` ids are live, so a free one exists in our half
        // and this loop ends within `in_use.len() + 2` steps.
        loop {
            let raw = self.with_half(self.next_low);
            self.next_low = self.next_low.wrapping_add(1) & LOW_MASK;
            if let Some(id) = CircId::new(raw) {
                if self.in_use.insert(raw) {
                    return Ok(id);
                }
            }
        }
    }

    /// Records a circuit the peer opened (a CREATE it sent), refusing an id from our half,
    /// one already live, or one over the limit.
    pub fn register_peer(&mut self, id: CircId) -> LinkResult<()> {
        if !self.is_peer_allocated(id) {
            return Err(LinkError::WrongCircIdHalf(id.get()));
        }
        if self.in_use.contains(&id.get()) {
            return Err(LinkError::CircIdInUse(id.get()));
        }
        if self.in_use.len() >= self.max {
            return Err(LinkError::TooManyCircuits { max: self.max });
        }
        self.in_use.insert(id.get());
        Ok(())
    }

    /// Frees an id once its circuit is gone; returns whether it was live.
    pub fn release(&mut self, id: CircId) -> bool {
        self.in_use.remove(&id.get())
    }

    /// Whether the peer (rather than we) would have allocated `id`.
    pub fn is_peer_allocated(&self, id: CircId) -> bool {
        id.is_initiator_allocated() != self.initiator
    }

    /// Whether `id` is live on this channel.
    pub fn contains(&self, id: CircId) -> bool {
        self.in_use.contains(&id.get())
    }

    /// Live circuits.
    pub fn len(&self) -> usize {
        self.in_use.len()
    }

    /// Whether no circuit is live.
    pub fn is_empty(&self) -> bool {
        self.in_use.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(initiator: bool, max: usize) -> CircIdAllocator {
        CircIdAllocator::new(initiator, max, &mut rand::rng())
    }

    #[test]
    fn halves_are_disjoint() {
        let mut a = alloc(true, 100);
        let mut b = alloc(false, 100);
        for _ in 0..100 {
            let x = a.allocate().unwrap();
            let y = b.allocate().unwrap();
            assert!(x.is_initiator_allocated());
            assert!(!y.is_initiator_allocated());
            assert!(b.is_peer_allocated(x) && !a.is_peer_allocated(x));
            assert!(a.is_peer_allocated(y) && !b.is_peer_allocated(y));
        }
    }

    #[test]
    fn limit_is_enforced_and_release_frees() {
        let mut a = alloc(false, 3);
        let ids: Vec<_> = (0..3).map(|_| a.allocate().unwrap()).collect();
        assert!(matches!(
            a.allocate(),
            Err(LinkError::TooManyCircuits { max: 3 })
        ));
        assert!(a.release(ids[1]));
        assert!(!a.release(ids[1]));
        a.allocate().unwrap();
        assert_eq!(a.len(), 3);
    }

    #[test]
    fn skips_ids_in_use_and_zero() {
        // Responder starting at low 0 must skip zero; then wrap around a nearly full range.
        let mut a = CircIdAllocator {
            initiator: false,
            in_use: HashSet::new(),
            next_low: LOW_MASK,
            max: 10,
        };
        assert_eq!(a.allocate().unwrap().get(), LOW_MASK);
        assert_eq!(
            a.allocate().unwrap().get(),
            1,
            "zero is skipped after wrapping"
        );
        a.in_use.insert(2);
        a.in_use.insert(3);
        assert_eq!(a.allocate().unwrap().get(), 4);
        // The initiator may use 0x8000_0000 (non-zero).
        let mut i = CircIdAllocator {
            initiator: true,
            in_use: HashSet::new(),
            next_low: 0,
            max: 10,
        };
        assert_eq!(i.allocate().unwrap().get(), CircId::INITIATOR_BIT);
    }

    #[test]
    fn peer_registration_checks() {
        let mut a = alloc(true, 2);
        let ours = CircId::new(CircId::INITIATOR_BIT | 5).unwrap();
        let theirs = CircId::new(5).unwrap();
        assert!(matches!(
            a.register_peer(ours),
            Err(LinkError::WrongCircIdHalf(_))
        ));
        a.register_peer(theirs).unwrap();
        assert!(matches!(
            a.register_peer(theirs),
            Err(LinkError::CircIdInUse(5))
        ));
        a.register_peer(CircId::new(6).unwrap()).unwrap();
        assert!(matches!(
            a.register_peer(CircId::new(7).unwrap()),
            Err(LinkError::TooManyCircuits { .. })
        ));
        assert!(a.contains(theirs));
    }
}
