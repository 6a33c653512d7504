//! An onion service's end of its rendezvous circuits: the client opens streams with BEGIN,
//! and the service connects those for a configured virtual port to their local targets.
//! Also the service's bound on rendezvous circuits ([`RendezvousSlots`]) and its idle
//! policy, which closes quiet circuits ([`ServiceEnd::idle_timeout`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tracing::debug;

use crate::cell::EndReason;
use crate::proto::{CircuitHandle, IncomingStream, IncomingStreams};

/// An onion service's rendezvous slots: a bounded number of rendezvous circuits open at
/// once, and a signal to its circuits when the last slot is taken or an introduction finds
/// none free. A circuit whose streams have been quiet for its idle time gives its slot up
/// then (see [`ServiceEnd::idle_timeout`]), one circuit per signal.
#[derive(Debug)]
pub(crate) struct RendezvousSlots {
    permits: Arc<Semaphore>,
    pressure: Notify,
    /// An eviction is wanted: set when the last slot is taken or an introduction finds
    /// none, cleared by the one circuit that claims it ([`Self::claim_eviction`]).
    /// The signal wakes every idle circuit with open streams, and on a multi-threaded
    /// runtime several could see every slot in use before the first gives its slot back;
    /// only the circuit that clears this flag closes. A flag, not a count: each eviction
    /// frees a slot for the next newcomer, and the next one to take the last slot or find
    /// none asks again, so sessions are closed one per need as it arises, never in a
    /// batch for requests that piled up while no circuit was idle.
    eviction_wanted: AtomicBool,
}

impl RendezvousSlots {
    /// `max` slots (at least one).
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(RendezvousSlots {
            permits: Arc::new(Semaphore::new(max.max(1))),
            pressure: Notify::new(),
            eviction_wanted: AtomicBool::new(false),
        })
    }

    /// Takes a slot, or `None` when all are in use. Either way, if no slot is left the
    /// service is under pressure: one of its circuits idle past their idle time is told
    /// to make room.
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<RendezvousSlot> {
        let permit = Arc::clone(&self.permits).try_acquire_owned().ok();
        if permit.is_none() || self.exhausted() {
            self.eviction_wanted.store(true, Ordering::Release);
            self.pressure.notify_waiters();
        }
        permit.map(|permit| RendezvousSlot {
            _permit: permit,
            slots: Arc::clone(self),
        })
    }

    /// Whether every slot is in use.
    pub(crate) fn exhausted(&self) -> bool {
        self.permits.available_permits() == 0
    }

    /// For an idle circuit with open streams: whether it is the one to give its slot up
    /// now. True at most once per eviction wanted, and only while every slot is in use
    /// (a slot freed meanwhile leaves the request for the next time the slots run out).
    fn claim_eviction(&self) -> bool {
        self.exhausted()
            && self
                .eviction_wanted
                .compare_exchange(true, false, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }
}

/// One of a service's rendezvous slots, held by a rendezvous circuit while it lives.
#[derive(Debug)]
pub(crate) struct RendezvousSlot {
    _permit: OwnedSemaphorePermit,
    slots: Arc<RendezvousSlots>,
}

/// What the task does when it is an onion service's end of a rendezvous circuit: the
/// client opens streams with BEGIN, and the service connects them to local targets.
pub(crate) struct ServiceEnd {
    /// Virtual port → local target (e.g. 80 → 127.0.0.1:8080). Other ports are refused.
    pub ports: Arc<Vec<(u16, SocketAddr)>>,
    /// Connecting to a local target may take this long.
    pub connect_timeout: Duration,
    /// Idle time: how long the circuit may go without traffic (no stream opened and no
    /// stream data in either direction; DROP and SENDME cells do not count, so a client
    /// cannot reset it with keep-alives). Without open streams, the circuit is closed
    /// once idle this long. With open streams it lives on (a quiet SSH or IRC session is
    /// not abandoned) unless the service is under pressure, every rendezvous slot in use:
    /// then circuits idle this long are closed, open streams and all, to make room.
    pub idle_timeout: Duration,
    /// Held while the circuit lives (bounds the service's rendezvous circuits, and tells
    /// the circuit when they are all in use).
    pub slot: Option<RendezvousSlot>,
    /// Turns true when the service stops (DEL_ONION): the circuit is closed then, so a
    /// stopped service is unreachable at once, not only once clients' circuits expire.
    pub stopped: Option<tokio::sync::watch::Receiver<bool>>,
}

/// Waits until `stopped` turns true; forever without one (or once its sender is gone).
async fn stop_requested(stopped: Option<tokio::sync::watch::Receiver<bool>>) {
    if let Some(mut rx) = stopped {
        if rx.wait_for(|s| *s).await.is_ok() {
            return;
        }
    }
    std::future::pending().await
}

impl std::fmt::Debug for ServiceEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceEnd { .. }")
    }
}

/// Serves the client's streams on a rendezvous circuit (started with
/// [`crate::proto::reactor::spawn_accepting`]) until the circuit closes or `end`'s idle
/// policy closes it. The slot is held until then.
///
/// A service closes a rendezvous circuit without streams once it carried no traffic for
/// its idle time, and one with open streams only when, idle that long, all the service's
/// rendezvous slots are in use: clients that keep circuits or streams open cannot hold the
/// (bounded) slots against newcomers, yet quiet long-lived sessions are not cut while
/// there is room. Idle time is measured from the last activity
/// ([`CircuitHandle::last_activity`]), not the last cell: DROP cells and the like do not
/// count.
pub(crate) async fn serve(
    circuit: CircuitHandle,
    mut incoming: IncomingStreams,
    mut end: ServiceEnd,
) {
    let mut open = circuit.open_streams();
    let stop = stop_requested(end.stopped.clone());
    tokio::pin!(stop);
    loop {
        let at = circuit.last_activity() + end.idle_timeout;
        if tokio::time::Instant::now() < at {
            tokio::select! {
                s = incoming.next() => match s {
                    Some(s) => end.on_begin(s).await,
                    None => return, // the circuit closed
                },
                () = tokio::time::sleep_until(at) => {}
                () = &mut stop => break,
            }
            continue;
        }
        if *open.borrow_and_update() == 0 {
            debug!("service: idle rendezvous circuit closed");
            break;
        }
        let slots = end.slot.as_ref().map(|s| Arc::clone(&s.slots));
        // Registered before the check, so pressure arising between the two is seen.
        let pressure = slots.as_ref().map(|s| s.pressure.notified());
        tokio::pin!(pressure);
        if let Some(p) = pressure.as_mut().as_pin_mut() {
            p.enable();
        }
        if slots.as_ref().is_some_and(|s| s.claim_eviction()) {
            debug!(
                "service: idle rendezvous circuit closed to free a slot ({} streams open)",
                *open.borrow()
            );
            // Free the slot now, not after the shutdown (the next request for room must
            // find the slots exhausted only if they are).
            end.slot = None;
            break;
        }
        // Idle with streams open: wait for a change (new stream, streams closing, room
        // wanted) and decide again.
        tokio::select! {
            s = incoming.next() => match s {
                Some(s) => end.on_begin(s).await,
                None => return,
            },
            changed = open.changed() => {
                if changed.is_err() {
                    return; // the circuit closed
                }
            }
            () = async {
                match pressure.as_mut().as_pin_mut() {
                    Some(p) => p.await,
                    None => std::future::pending().await,
                }
            } => {}
            () = &mut stop => break,
        }
    }
    circuit.close().await;
}

impl ServiceEnd {
    /// BEGIN from the client: a configured virtual port is connected to its local target
    /// in the background; any other port is refused with END (EXITPOLICY).
    async fn on_begin(&self, stream: IncomingStream) {
        let target = self
            .ports
            .iter()
            .find(|(p, _)| *p == stream.port())
            .map(|(_, t)| *t);
        let Some(target) = target else {
            return stream.reject(EndReason::ExitPolicy).await;
        };
        let timeout = self.connect_timeout;
        tokio::spawn(async move {
            let connect = tokio::net::TcpStream::connect(target);
            match tokio::time::timeout(timeout, connect).await {
                Ok(Ok(socket)) => {
                    let _ = socket.set_nodelay(true);
                    let _ = stream.accept_with(socket).await;
                }
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    stream.reject(EndReason::ConnectRefused).await;
                }
                Ok(Err(_)) => stream.reject(EndReason::NoRoute).await,
                Err(_) => stream.reject(EndReason::Timeout).await,
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every slot taken: one eviction is wanted and exactly one claimant gets it, even
    /// when several claim at once from different threads.
    #[test]
    fn one_eviction_per_request_even_with_concurrent_claims() {
        let slots = RendezvousSlots::new(2);
        let a = slots.try_acquire().expect("a free slot");
        assert!(!slots.claim_eviction(), "a slot is still free");
        let b = slots.try_acquire().expect("the last slot");
        assert!(slots.claim_eviction(), "taking the last slot asks for room");
        assert!(!slots.claim_eviction(), "once");
        for _ in 0..20 {
            assert!(slots.try_acquire().is_none());
            let barrier = std::sync::Barrier::new(8);
            let claimed = std::thread::scope(|s| {
                let handles: Vec<_> = (0..8)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            slots.claim_eviction()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or(false))
                    .filter(|c| *c)
                    .count()
            });
            assert_eq!(claimed, 1, "exactly one circuit makes room");
        }
        // A request made while every slot was in use, then a slot freed otherwise: nobody
        // closes for it now, and it is still there when the slots run out again.
        assert!(slots.try_acquire().is_none());
        drop(b);
        assert!(!slots.claim_eviction());
        let _b = slots.try_acquire().expect("the freed slot");
        assert!(slots.claim_eviction());
        drop(a);
    }

    /// The signal wakes every waiting circuit (as in [`serve`]), but only one
    /// of them claims the eviction.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pressure_wakes_all_waiters_but_one_closes() {
        let slots = RendezvousSlots::new(1);
        let _held = slots.try_acquire().expect("the only slot");
        assert!(slots.claim_eviction());
        let waiters = 8;
        let ready = Arc::new(tokio::sync::Barrier::new(waiters + 1));
        let tasks: Vec<_> = (0..waiters)
            .map(|_| {
                let slots = Arc::clone(&slots);
                let ready = Arc::clone(&ready);
                tokio::spawn(async move {
                    let pressure = slots.pressure.notified();
                    tokio::pin!(pressure);
                    pressure.as_mut().enable();
                    assert!(!slots.claim_eviction(), "nothing wanted yet");
                    ready.wait().await;
                    pressure.await;
                    slots.claim_eviction()
                })
            })
            .collect();
        ready.wait().await;
        assert!(
            slots.try_acquire().is_none(),
            "an introduction finds no slot"
        );
        let mut closed = 0;
        for t in tasks {
            if t.await.expect("waiter") {
                closed += 1;
            }
        }
        assert_eq!(closed, 1);
    }
}
