//! Admission of inbound connections to a listener with a bounded number of slots.
//!
//! Every listener (relay links, SOCKS, HTTP CONNECT, metrics) serves at most a fixed number
//! of connections in their handshake (or, for the proxy, at all) at once. Simply closing
//! new connections when the slots are full lets anyone lock honest clients out for a whole
//! handshake timeout with a few hundred idle connections. Instead, when the slots are full,
//! a new connection takes the slot of the connection that is cheapest to lose:
//!
//! 1. the oldest connection that has not sent a single byte yet (a half-open flood), else
//! 2. the oldest connection still in its handshake (slow or garbage clients).
//!
//! An honest client sends its first message as soon as it is connected and finishes its
//! handshake within milliseconds, so it is evicted only if the flood replaces every slot
//! faster than that. Connections past their handshake are never evicted; when every slot
//! holds one, new connections are closed at once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::sync::lock;

/// How long a connection admitted by evicting another waits for the evicted one's slot.
/// The evicted task gives it back as soon as it runs, so this only bounds the wait on a
/// starved runtime.
const EVICTION_WAIT: Duration = Duration::from_secs(2);

/// Connections that can still be evicted, oldest first (ids increase with accept order).
#[derive(Debug, Default)]
struct Evictable {
    /// Nothing received yet.
    silent: BTreeMap<u64, oneshot::Sender<()>>,
    /// Something received, handshake not finished.
    talking: BTreeMap<u64, oneshot::Sender<()>>,
}

/// The slots of one listener. Share it between the accept loop and connection tasks.
#[derive(Debug)]
pub(crate) struct Admission {
    permits: Arc<Semaphore>,
    /// Number of slots.
    slots: usize,
    /// Connections admitted by eviction still waiting for the evicted one's slot. Capped
    /// at `slots`, so the tasks (and sockets) of a flood stay bounded even if the accept
    /// loop runs faster than the evicted tasks give their slots back.
    waiting: AtomicUsize,
    evictable: Mutex<Evictable>,
    next_id: AtomicU64,
    evicted: AtomicU64,
    refused: AtomicU64,
}

/// A connection admitted by [`Admission::admit`]. Holds its slot until dropped.
#[derive(Debug)]
pub(crate) struct Pass {
    admission: Arc<Admission>,
    id: u64,
    permit: Option<OwnedSemaphorePermit>,
    /// Admitted by eviction and counted in `Admission::waiting` until it has a slot.
    counted_waiting: bool,
    eviction: Option<oneshot::Receiver<()>>,
}

/// Why [`Pass::first_bytes`] gave up on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dropped {
    /// Its slot went to a newer connection.
    Evicted,
    /// Nothing arrived before the deadline.
    Timeout,
    /// No slot became free in time (a starved runtime).
    NoSlot,
}

impl Admission {
    /// `slots` connections at once (at least 1).
    pub(crate) fn new(slots: usize) -> Arc<Self> {
        Arc::new(Admission {
            permits: Arc::new(Semaphore::new(slots.max(1))),
            slots: slots.max(1),
            waiting: AtomicUsize::new(0),
            evictable: Mutex::new(Evictable::default()),
            next_id: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// Admits a connection just accepted, evicting one if the slots are full, or returns
    /// `None` (close the connection) if every slot holds a connection past its handshake.
    /// Call from the accept loop, before spawning the connection's task, so that a flood
    /// cannot evict faster than connections become evictable.
    pub(crate) fn admit(self: &Arc<Self>) -> Option<Pass> {
        let permit = match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                if self.waiting.load(Ordering::Relaxed) >= self.slots || !self.evict_one() {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                self.evicted.fetch_add(1, Ordering::Relaxed);
                self.waiting.fetch_add(1, Ordering::Relaxed);
                None // The evicted connection's permit is taken in `first_bytes`.
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.evictable).silent.insert(id, tx);
        Some(Pass {
            admission: Arc::clone(self),
            id,
            counted_waiting: permit.is_none(),
            permit,
            eviction: Some(rx),
        })
    }

    /// Connections evicted to make room so far.
    pub(crate) fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Connections refused because no slot could be freed so far.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Tells the oldest silent connection, else the oldest talking one, to close.
    fn evict_one(&self) -> bool {
        let victim = {
            let mut e = lock(&self.evictable);
            match e.silent.pop_first() {
                Some(v) => Some(v),
                None => e.talking.pop_first(),
            }
        };
        match victim {
            Some((_, tx)) => {
                let _ = tx.send(());
                true
            }
            None => false,
        }
    }
}

impl Pass {
    /// Waits until the peer has sent something (or the deadline passes, or the connection
    /// is evicted), and until this connection holds its slot. On success the connection
    /// is evicted only after every silent one.
    pub(crate) async fn first_bytes(
        &mut self,
        sock: &TcpStream,
        deadline: tokio::time::Instant,
    ) -> Result<(), Dropped> {
        if self.permit.is_none() {
            let wait = Arc::clone(&self.admission.permits).acquire_owned();
            let got = tokio::time::timeout(EVICTION_WAIT, wait).await;
            // No longer waiting, whatever the outcome (`Drop` must not count it again).
            self.admission.waiting.fetch_sub(1, Ordering::Relaxed);
            self.counted_waiting = false;
            match got {
                Ok(Ok(p)) => self.permit = Some(p),
                _ => return Err(Dropped::NoSlot),
            }
        }
        let readable = tokio::time::timeout_at(deadline, sock.readable());
        tokio::select! {
            r = readable => match r {
                // Readable also covers EOF and errors: the handshake will see them.
                Ok(_) => {}
                Err(_) => return Err(Dropped::Timeout),
            },
            () = self.evicted() => return Err(Dropped::Evicted),
        }
        let mut e = lock(&self.admission.evictable);
        match e.silent.remove(&self.id) {
            Some(tx) => {
                e.talking.insert(self.id, tx);
                Ok(())
            }
            // Evicted between the wake-up and now.
            None => Err(Dropped::Evicted),
        }
    }

    /// The signal that this connection is being evicted, to wait on while the handshake
    /// runs. Taken once; [`Pass::first_bytes`] no longer sees evictions afterwards.
    pub(crate) fn eviction(&mut self) -> Eviction {
        Eviction(self.eviction.take())
    }

    /// Resolves when this connection is evicted; never if the handshake has finished.
    async fn evicted(&mut self) {
        if let Some(rx) = self.eviction.as_mut() {
            // Polled by reference so that the signal survives if another branch wins;
            // dropped once it has completed (a completed receiver must not be polled).
            let sent = rx.await.is_ok();
            self.eviction = None;
            if sent {
                return;
            }
        }
        std::future::pending::<()>().await;
    }

    /// The handshake is over: the connection can no longer be evicted. It keeps its slot
    /// until the pass is dropped.
    pub(crate) fn handshake_done(&self) {
        let mut e = lock(&self.admission.evictable);
        e.silent.remove(&self.id);
        e.talking.remove(&self.id);
    }
}

/// Fires when a connection is evicted (see [`Pass::eviction`]).
#[derive(Debug)]
pub(crate) struct Eviction(Option<oneshot::Receiver<()>>);

impl Eviction {
    /// Resolves when the connection is evicted; never once its handshake has finished
    /// (the sender is then dropped, which is not an eviction).
    pub(crate) async fn wait(self) {
        if let Some(rx) = self.0 {
            if rx.await.is_ok() {
                return;
            }
        }
        std::future::pending::<()>().await;
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        self.handshake_done();
        if self.counted_waiting {
            self.admission.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_slots_evict_silent_before_talking_and_refuse_when_none_left() {
        let a = Admission::new(2);
        let first = a.admit().unwrap();
        let second = a.admit().unwrap();
        // Pretend the first one has talked.
        {
            let mut e = lock(&a.evictable);
            let tx = e.silent.remove(&first.id).unwrap();
            e.talking.insert(first.id, tx);
        }
        // Full: the silent second is evicted, not the older but talking first.
        let third = a.admit().unwrap();
        assert!(third.permit.is_none());
        assert_eq!(a.evicted(), 1);
        assert!(!lock(&a.evictable).silent.contains_key(&second.id));
        assert!(lock(&a.evictable).talking.contains_key(&first.id));
        drop(second);
        drop(third);
        // Only a finished handshake left plus one free slot: fill it, then refuse.
        first.handshake_done();
        let fourth = a.admit().unwrap();
        assert!(fourth.permit.is_some());
        let fourth = fourth;
        fourth.handshake_done();
        assert!(a.admit().is_none());
        assert_eq!(a.refused(), 1);
    }

    #[test]
    fn admissions_waiting_for_evicted_slots_are_capped() {
        let a = Admission::new(1);
        let holder = a.admit().unwrap();
        // The holder is evicted; the newcomer waits for its slot. Only one may wait.
        let waiter = a.admit().unwrap();
        assert!(waiter.permit.is_none());
        assert!(a.admit().is_none(), "a second waiter must be refused");
        drop(holder);
        drop(waiter);
        let holder = a.admit().unwrap();
        assert!(holder.permit.is_some());
        let waiter = a.admit().unwrap();
        assert!(waiter.permit.is_none(), "the waiter's place is free again");
    }
}
