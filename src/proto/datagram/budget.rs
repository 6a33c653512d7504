//! A process-wide bound on the bytes of datagrams waiting in queues, so that many flows
//! together cannot make a relay hold more than its limit however each one behaves.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Bytes of queued datagrams, shared by every flow of a process.
#[derive(Debug)]
pub struct DatagramBudget {
    used: AtomicUsize,
    max: usize,
}

impl DatagramBudget {
    /// A budget of `max` bytes.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(DatagramBudget {
            used: AtomicUsize::new(0),
            max,
        })
    }

    /// Takes `n` bytes if they fit.
    pub fn take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|t| *t <= self.max)
            })
            .is_ok()
    }

    /// Gives back `n` bytes taken before.
    pub fn release(&self, n: usize) {
        let before = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(n))
            });
        // Giving back more than was taken is a bug that would let the budget overflow.
        debug_assert!(before.is_ok_and(|u| u >= n), "budget released twice");
    }

    /// Bytes in use now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_up_to_the_limit_only() {
        let b = DatagramBudget::new(3000);
        assert!(b.take(1472));
        assert!(b.take(1472));
        assert!(!b.take(1472));
        b.release(1472);
        assert!(b.take(100));
        assert_eq!(b.used(), 1572);
        b.release(1572);
        assert_eq!(b.used(), 0);
    }
}
