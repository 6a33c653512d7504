//! Relay-wide accounting of queued cells, and the out-of-memory policy.
//!
//! Each circuit's inbound queue is bounded, but thousands of circuits times a bounded queue
//! is still a lot of memory. The budget tracks the bytes queued across all circuits; when a
//! new cell pushes the total past the limit, the circuit holding the most queued bytes is
//! told to die (as Tor does), which frees the most memory and punishes the circuit most
//! likely to be the attacker's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::sync::lock;

/// The relay-wide budget. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct QueueBudget {
    limit: usize,
    total: AtomicUsize,
    next_id: AtomicU64,
    circuits: Mutex<HashMap<u64, Arc<QueueStat>>>,
    kills: AtomicU64,
}

/// One circuit's share of the budget, and its state as seen by the channel readers that
/// feed it (the circuit's task and the readers share it through the circuit's slots).
#[derive(Debug, Default)]
pub struct QueueStat {
    queued: AtomicUsize,
    killed: AtomicBool,
    /// Set while the circuit's task waits for room on a neighbour's full channel queue.
    stalled: AtomicBool,
    /// Wakes waiters on a kill and on the start of a stall (waiters recheck the flags).
    notify: Notify,
}

impl QueueStat {
    /// Whether the budget has asked this circuit to die.
    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    /// Resolves once the budget asks this circuit to die.
    pub async fn killed(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_killed() {
                return;
            }
            notified.await;
        }
    }

    /// Bytes this circuit has queued.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Asks this circuit to die (its task sees it wherever it waits to send). Returns
    /// whether this call did it (false if it was already dying).
    pub fn kill(&self) -> bool {
        let first = !self.killed.swap(true, Ordering::AcqRel);
        self.notify.notify_waiters();
        first
    }

    /// Whether the circuit's task is waiting for room on a neighbour's full channel.
    pub fn is_stalled(&self) -> bool {
        self.stalled.load(Ordering::Acquire)
    }

    /// Marks the circuit's task as waiting for room on a neighbour's channel until the
    /// returned guard is dropped (the wait ended, or was cut short).
    pub fn stall(&self) -> StallGuard<'_> {
        self.stalled.store(true, Ordering::Release);
        // A reader already waiting on this circuit's full queue must learn of it now.
        self.notify.notify_waiters();
        StallGuard(self)
    }

    /// Resolves once the circuit is stalled (see [`Self::stall`]) or killed.
    pub async fn stalled_or_killed(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_stalled() || self.is_killed() {
                return;
            }
            notified.await;
        }
    }
}

/// Clears a circuit's stalled mark on drop (see [`QueueStat::stall`]).
#[derive(Debug)]
pub struct StallGuard<'a>(&'a QueueStat);

impl Drop for StallGuard<'_> {
    fn drop(&mut self) {
        self.0.stalled.store(false, Ordering::Release);
    }
}

/// A circuit's registration; unregisters (and returns its queued bytes) on drop.
#[derive(Debug)]
pub struct QueueTicket {
    id: u64,
    stat: Arc<QueueStat>,
    budget: Arc<QueueBudget>,
}

impl QueueBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(QueueBudget {
            limit,
            total: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            circuits: Mutex::new(HashMap::new()),
            kills: AtomicU64::new(0),
        })
    }

    /// Registers a circuit.
    pub fn register(self: &Arc<Self>) -> QueueTicket {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let stat = Arc::new(QueueStat::default());
        lock(&self.circuits).insert(id, Arc::clone(&stat));
        QueueTicket {
            id,
            stat,
            budget: Arc::clone(self),
        }
    }

    /// Bytes queued across the relay.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Circuits destroyed so far for exceeding the budget.
    pub fn kills(&self) -> u64 {
        self.kills.load(Ordering::Relaxed)
    }

    /// Kills the circuit with the most queued bytes (that is not already dying).
    fn kill_largest(&self) {
        let victim = lock(&self.circuits)
            .values()
            .filter(|s| !s.is_killed())
            .max_by_key(|s| s.queued())
            .cloned();
        if let Some(v) = victim {
            v.kill();
            self.kills.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl QueueTicket {
    /// The circuit's statistics (for its task to watch `killed`).
    pub fn stat(&self) -> &Arc<QueueStat> {
        &self.stat
    }

    /// Records `bytes` newly queued; enforces the budget.
    pub fn enqueued(&self, bytes: usize) {
        self.stat.queued.fetch_add(bytes, Ordering::Relaxed);
        let total = self.budget.total.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if total > self.budget.limit {
            self.budget.kill_largest();
        }
    }

    /// Records `bytes` taken off the queue.
    pub fn dequeued(&self, bytes: usize) {
        self.stat.queued.fetch_sub(bytes, Ordering::Relaxed);
        self.budget.total.fetch_sub(bytes, Ordering::Relaxed);
    }
}

impl Drop for QueueTicket {
    fn drop(&mut self) {
        let left = self.stat.queued.swap(0, Ordering::Relaxed);
        self.budget.total.fetch_sub(left, Ordering::Relaxed);
        lock(&self.budget.circuits).remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_budget_kills_the_largest_queue() {
        let budget = QueueBudget::new(1000);
        let small = budget.register();
        let big = budget.register();
        small.enqueued(100);
        big.enqueued(800);
        assert!(!small.stat().is_killed() && !big.stat().is_killed());
        small.enqueued(200); // total 1100 > 1000
        assert!(big.stat().is_killed());
        assert!(!small.stat().is_killed());
        assert_eq!(budget.kills(), 1);
        drop(big);
        assert_eq!(budget.total(), 300);
        small.dequeued(300);
        assert_eq!(budget.total(), 0);
    }

    /// A waiter (a channel reader on a full queue) learns of a stall that begins after it
    /// started waiting; the mark ends with the guard; a kill is reported once.
    #[tokio::test]
    async fn a_stall_wakes_a_waiting_reader_and_ends_with_its_guard() {
        let budget = QueueBudget::new(1000);
        let ticket = budget.register();
        let stat = Arc::clone(ticket.stat());
        let waiter = tokio::spawn(async move { stat.stalled_or_killed().await });
        tokio::task::yield_now().await;
        let guard = ticket.stat().stall();
        assert!(ticket.stat().is_stalled());
        waiter.await.unwrap();
        drop(guard);
        assert!(!ticket.stat().is_stalled());
        assert!(ticket.stat().kill());
        assert!(!ticket.stat().kill());
        assert!(ticket.stat().is_killed());
        // Killed (not stalled): a waiter returns at once.
        ticket.stat().stalled_or_killed().await;
    }
}
