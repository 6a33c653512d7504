//! A circuit task's inbound queue: bounded like tokio's mpsc (a full queue makes senders
//! wait, which is the relay's backpressure), but holding memory only while events are
//! queued. tokio's bounded channel allocates a block of 32 slots when it is created and
//! keeps spare blocks after a burst; at 100,000 circuits, slots of ~530-byte cells made
//! that most of a relay's memory. Here each queued event is boxed (so the queue costs
//! about what it holds) and the deque's buffer is released whenever the queue drains.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

pub use tokio::sync::mpsc::error::{SendError, TrySendError};

use crate::sync::lock;

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Wakes the receiver: an event arrived or the last sender left (a stored permit
    /// covers a wake that comes before the receiver waits; there is one receiver).
    readable: Notify,
    /// Wakes a sender waiting for room (one per event taken) or all of them on close.
    writable: Notify,
    senders: AtomicUsize,
    capacity: usize,
}

struct State<T> {
    events: VecDeque<Box<T>>,
    /// The receiver is gone: every send fails.
    closed: bool,
}

/// The sending half (cheap to clone).
pub struct EventSender<T> {
    shared: Arc<Shared<T>>,
}

/// The receiving half (one per queue; dropping it closes the queue).
pub struct EventReceiver<T> {
    shared: Arc<Shared<T>>,
}

/// A queue holding at most `capacity` events (at least 1).
pub fn event_queue<T>(capacity: usize) -> (EventSender<T>, EventReceiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            events: VecDeque::new(),
            closed: false,
        }),
        readable: Notify::new(),
        writable: Notify::new(),
        senders: AtomicUsize::new(1),
        capacity: capacity.max(1),
    });
    (
        EventSender {
            shared: Arc::clone(&shared),
        },
        EventReceiver { shared },
    )
}

impl<T> EventSender<T> {
    /// Queues `event` if there is room, without waiting.
    pub fn try_send(&self, event: T) -> Result<(), TrySendError<T>> {
        let mut state = lock(&self.shared.state);
        if state.closed {
            return Err(TrySendError::Closed(event));
        }
        if state.events.len() >= self.shared.capacity {
            return Err(TrySendError::Full(event));
        }
        state.events.push_back(Box::new(event));
        drop(state);
        self.shared.readable.notify_one();
        Ok(())
    }

    /// Queues `event`, waiting for room. Fails once the receiver is gone.
    pub async fn send(&self, mut event: T) -> Result<(), SendError<T>> {
        loop {
            // Registered before the check, so room made in between is not missed.
            let room = self.shared.writable.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_send(event) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(e)) => return Err(SendError(e)),
                Err(TrySendError::Full(e)) => event = e,
            }
            room.await;
        }
    }

    /// Whether the receiver is gone.
    pub fn is_closed(&self) -> bool {
        lock(&self.shared.state).closed
    }
}

impl<T> Clone for EventSender<T> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        EventSender {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> Drop for EventSender<T> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.readable.notify_one();
        }
    }
}

impl<T> std::fmt::Debug for EventSender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSender").finish_non_exhaustive()
    }
}

impl<T> EventReceiver<T> {
    /// The next event; `None` once every sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<T> {
        loop {
            if let Some(event) = self.try_recv() {
                return Some(event);
            }
            if self.shared.senders.load(Ordering::Acquire) == 0 {
                // A send may have landed just before the last sender left.
                return self.try_recv();
            }
            self.shared.readable.notified().await;
        }
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Option<T> {
        let mut state = lock(&self.shared.state);
        let event = state.events.pop_front()?;
        if state.events.is_empty() {
            // Drained: give the burst's buffer back (an idle circuit holds nothing).
            state.events = VecDeque::new();
        }
        drop(state);
        self.shared.writable.notify_one();
        Some(*event)
    }
}

impl<T> Drop for EventReceiver<T> {
    fn drop(&mut self) {
        let dropped = {
            let mut state = lock(&self.shared.state);
            state.closed = true;
            std::mem::take(&mut state.events)
        };
        // Outside the lock: an event's drop may itself touch queues.
        drop(dropped);
        self.shared.writable.notify_waiters();
    }
}

impl<T> std::fmt::Debug for EventReceiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventReceiver").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Full means full, a taken event makes room for a waiting sender, a drained queue
    /// holds no buffer, and closing either end is seen by the other.
    #[tokio::test]
    async fn bounded_releasing_and_closing() {
        let (tx, mut rx) = event_queue::<u32>(2);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(3).await.is_ok() }
        });
        tokio::task::yield_now().await;
        assert_eq!(rx.recv().await, Some(1));
        assert!(waiting.await.unwrap());
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.recv().await, Some(3));
        assert_eq!(lock(&rx.shared.state).events.capacity(), 0);

        let tx2 = tx.clone();
        drop(tx);
        tx2.try_send(4).unwrap();
        drop(tx2);
        assert_eq!(rx.recv().await, Some(4));
        assert_eq!(rx.recv().await, None);

        let (tx, rx) = event_queue::<u32>(1);
        tx.try_send(1).unwrap();
        let blocked = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(2).await.is_err() }
        });
        tokio::task::yield_now().await;
        drop(rx);
        assert!(blocked.await.unwrap());
        assert!(tx.is_closed());
        assert!(matches!(tx.try_send(5), Err(TrySendError::Closed(5))));
    }
}
