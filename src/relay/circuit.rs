//! One circuit at a relay: a task that owns the circuit's crypto and both of its ends.
//!
//! Forward cells (from the client side) lose this hop's layer and are either handled here
//! (recognised) or passed to the next hop; backward cells gain this hop's layer and go to
//! the previous hop. Anything unexpected tears the circuit down in both directions: a
//! silently dropped cell would be a side channel.

use std::sync::Arc;

use crate::proto::event_queue::{event_queue, EventReceiver, EventSender};
use tracing::debug;

use crate::cell::chan_contexts::{FromNextHop, FromPreviousHop};
use crate::cell::consts::CELL_LEN;
use crate::cell::{CircId, Create, DestroyReason, HandshakeType, StreamId};
use crate::crypto::RelayCrypto;
use crate::link::LinkError;
use crate::proto::stream::set::StreamSet;

use super::events::SharedBackward;
use super::events::{CircEnd, CircSlot, RelayChannel};
use super::events::{CircEvent, Side};
use super::onion_points::CircSerial;
use super::queue_budget::QueueTicket;
use super::shared::{RelayCounters, RelayShared};

mod create;
mod exit_flows;
mod exit_streams;
mod extend;
mod forward;
mod onion;
mod padding;
mod send;

use send::{Step, Teardown};

/// RELAY_EARLY cells a circuit may carry. EXTEND must ride in one and the first hop sees
/// every EXTEND, so this caps a circuit at 8 hops.
pub const MAX_RELAY_EARLY: u8 = 7;

/// Registers a new circuit opened by CREATE on `chan` and starts its task.
pub fn spawn(
    shared: &Arc<RelayShared>,
    chan: &Arc<RelayChannel>,
    id: CircId,
    create: Create,
) -> Result<(), DestroyReason> {
    let ticket = Arc::new(shared.budget.register());
    let (tx, rx) = event_queue(shared.limits.cells_queued_per_circuit.max(1));
    let slot = CircSlot {
        tx: tx.clone(),
        side: Side::Prev,
        ticket: Arc::clone(&ticket),
    };
    chan.circuits.insert_peer(id, slot).map_err(|e| match e {
        LinkError::TooManyCircuits { .. } => DestroyReason::ResourceLimit,
        _ => DestroyReason::Protocol,
    })?;
    let prev = CircEnd {
        chan: Arc::clone(chan),
        id,
    };
    tokio::spawn(task(Arc::clone(shared), prev, create, tx, rx, ticket));
    Ok(())
}

/// A circuit's task: the handshake, then the circuit until it ends. Its size is what every
/// open circuit costs in task memory (`tests::an_idle_circuit_task_is_small`).
async fn task(
    shared: Arc<RelayShared>,
    prev: CircEnd,
    create: Create,
    tx: EventSender<CircEvent>,
    rx: EventReceiver<CircEvent>,
    ticket: Arc<QueueTicket>,
) {
    // Boxed: the handshake's state is large and needed once; inline, the task of every
    // open circuit would keep room for it.
    let handshake = Box::pin(Circuit::handshake(shared, prev, create, tx, ticket));
    let Some(circuit) = handshake.await else {
        return;
    };
    circuit.run(rx).await;
}

/// The state of the circuit beyond this hop.
enum Next {
    /// This hop is the last.
    None,
    /// EXTEND received; the channel to the next relay is being opened.
    Connecting {
        htype: HandshakeType,
        handshake: Vec<u8>,
    },
    /// CREATE sent; awaiting CREATED.
    Pending(CircEnd),
    /// Extended.
    Open(CircEnd),
}

/// The circuit's relay crypto: owned by its task, or shared with a partner circuit once
/// it takes part in a rendezvous (see [`super::splice`]).
// Inline on purpose: one per circuit task, never moved around; boxing the common case
// would add a pointer chase to every cell.
#[allow(clippy::large_enum_variant)]
enum Crypto {
    Own(RelayCrypto),
    Shared(SharedBackward),
    /// Only while converting from `Own` to `Shared`.
    Moving,
}

/// What the circuit is for at this hop, beyond relaying (§8.6). A role is taken by the
/// first onion command and never changes back, so one circuit cannot play two parts.
enum Role {
    /// An ordinary circuit.
    Plain,
    /// A service's introduction circuit for this auth key.
    Intro { auth_key: [u8; 32] },
    /// A client's circuit to this introduction point (it sent INTRODUCE1).
    IntroClient,
    /// A client's circuit waiting here, as rendezvous point, under `cookie`.
    RendWaiting { cookie: [u8; 20] },
    /// Joined at this rendezvous point: unrecognised forward cells go backward on the
    /// partner's circuit (`partner` is its backward half).
    Joined { partner: SharedBackward },
}

struct Circuit {
    shared: Arc<RelayShared>,
    prev: CircEnd,
    next: Next,
    crypto: Crypto,
    /// `CircuitKeys::binding` of this hop's keys (ESTABLISH_INTRO is MACed with it).
    binding: [u8; 32],
    serial: CircSerial,
    role: Role,
    early_left: u8,
    self_tx: EventSender<CircEvent>,
    ticket: Arc<QueueTicket>,
    /// Exit streams (empty unless this relay is an exit and the client opened some).
    streams: StreamSet,
    /// Connection attempts of streams being opened, aborted on END or teardown so a
    /// client cannot pile up sockets by opening and abandoning streams.
    connecting: std::collections::HashMap<StreamId, tokio::task::AbortHandle>,
    /// UDP flows (made at the first BEGIN_UDP: most circuits never have one).
    flows: Option<Box<crate::proto::datagram::flows::FlowSet>>,
    /// RESOLVE lookups in progress (counted against the stream limit).
    resolving: usize,
    /// What the directory service keeps for this circuit (its upload budget), made at
    /// the first BEGIN_DIR.
    dir_state: Option<Arc<super::dirserve::CircuitDirState>>,
    /// The padding machine the client asked this hop to run (boxed: most circuits have
    /// none).
    padding: Option<Box<crate::proto::padding::CircuitPadding>>,
}

impl Circuit {
    /// Whether `task` is the open attempt in progress for `id` (then forgets it). A result
    /// from an attempt the client ENDed, its id since reused, is stale: it must neither
    /// open the new stream or flow nor take its task's abort handle.
    fn current_attempt(&mut self, id: StreamId, task: tokio::task::Id) -> bool {
        if self.connecting.get(&id).is_some_and(|h| h.id() == task) {
            self.connecting.remove(&id);
            return true;
        }
        false
    }

    async fn run(mut self, mut rx: EventReceiver<CircEvent>) {
        let deadline = tokio::time::sleep(self.shared.limits.extend_timeout());
        tokio::pin!(deadline);
        let rend_deadline = tokio::time::sleep(self.shared.limits.rend_cookie_timeout());
        tokio::pin!(rend_deadline);
        let teardown = loop {
            let pending = matches!(self.next, Next::Connecting { .. } | Next::Pending(_));
            let waiting = matches!(self.role, Role::RendWaiting { .. });
            let was_idle = matches!(self.next, Next::None);
            // The event is consumed inside this block: only the small `Step` is awaited
            // below, so the task does not keep room for a cell across that wait.
            let step = {
                let event = tokio::select! {
                    ev = rx.recv() => ev,
                    _ = self.ticket.stat().killed() => {
                        debug!("relay: circuit killed by the queue memory limit");
                        break Teardown::new(DestroyReason::ResourceLimit);
                    }
                    _ = &mut deadline, if pending => {
                        break Teardown::new(DestroyReason::Timeout);
                    }
                    // An unjoined cookie expires with its circuit.
                    _ = &mut rend_deadline, if waiting => {
                        break Teardown::new(DestroyReason::Timeout);
                    }
                };
                // `self_tx` keeps the queue open, so `None` cannot happen; treat it as closed.
                let Some(event) = event else {
                    break Teardown::new(DestroyReason::Internal);
                };
                if matches!(
                    event,
                    CircEvent::FromPrev(_) | CircEvent::FromNext(_) | CircEvent::Violation(_)
                ) {
                    self.ticket.dequeued(CELL_LEN);
                }
                self.dispatch(event)
            };
            if let Err(t) = step.await {
                break t;
            }
            if !waiting && matches!(self.role, Role::RendWaiting { .. }) {
                rend_deadline
                    .as_mut()
                    .reset(tokio::time::Instant::now() + self.shared.limits.rend_cookie_timeout());
            }
            if was_idle && matches!(self.next, Next::Connecting { .. }) {
                deadline
                    .as_mut()
                    .reset(tokio::time::Instant::now() + self.shared.limits.extend_timeout());
            }
        };
        // Nothing more is taken from the queue: a reader blocked on it (full) must fail
        // now, not wait for the DESTROYs below.
        drop(rx);
        Box::pin(self.teardown(teardown)).await;
    }

    /// Relayed cells are handled without allocating (see [`Self::forward`]); every other
    /// event's handling is boxed, so an idle circuit's task does not keep room for the
    /// largest of them (EXTEND, streams, onion roles) while it waits.
    fn dispatch(&mut self, event: CircEvent) -> Step<'_> {
        match event {
            CircEvent::FromPrev(FromPreviousHop::Relay(body)) => self.forward(body, false),
            CircEvent::FromNext(FromNextHop::Relay(body)) => self.backward(body),
            other => Step::boxed(self.handle(other)),
        }
    }

    async fn handle(&mut self, event: CircEvent) -> Result<(), Teardown> {
        match event {
            CircEvent::FromPrev(FromPreviousHop::Relay(body)) => self.forward(body, false).await,
            CircEvent::FromPrev(FromPreviousHop::RelayEarly(body)) => {
                if self.early_left == 0 {
                    debug!("relay: more than {MAX_RELAY_EARLY} RELAY_EARLY cells");
                    return Err(Teardown::new(DestroyReason::Protocol));
                }
                self.early_left -= 1;
                self.forward(body, true).await
            }
            // Pass the reason on: it tells the client why (e.g. the next relay's limits).
            CircEvent::FromPrev(FromPreviousHop::Destroy(reason)) => {
                Err(Teardown::from_side(reason, Side::Prev))
            }
            CircEvent::FromNext(FromNextHop::Destroy(reason)) => {
                Err(Teardown::from_side(reason, Side::Next))
            }
            CircEvent::FromNext(FromNextHop::Created(created)) => self.on_created(created).await,
            CircEvent::FromNext(FromNextHop::Relay(body)) => self.backward(body).await,
            CircEvent::Violation(_) => {
                RelayCounters::bump(&self.shared.counters.protocol_violations);
                Err(Teardown::new(DestroyReason::Protocol))
            }
            CircEvent::ChannelClosed(side) => {
                Err(Teardown::from_side(DestroyReason::ChannelClosed, side))
            }
            CircEvent::NextHopReady(result) => self.on_next_hop_ready(result).await,
            CircEvent::Stream(ev) => match self.streams.on_stream_event(ev) {
                Some(cell) => self.reply(cell).await,
                None => Ok(()),
            },
            CircEvent::StreamConnected { id, task, result } => {
                self.on_stream_connected(id, task, result).await
            }
            CircEvent::Introduce2(intro) => self.on_introduce2(intro).await,
            CircEvent::Joined(partner) => self.on_joined(partner),
            CircEvent::PartnerClosed => Err(Teardown::new(DestroyReason::Destroyed)),
            // Only a waiting circuit has a cookie to lose; a late notice (the circuit was
            // joined meanwhile under another registration) changes nothing.
            CircEvent::CookieEvicted if matches!(self.role, Role::RendWaiting { .. }) => {
                Err(Teardown::new(DestroyReason::ResourceLimit))
            }
            CircEvent::CookieEvicted => Ok(()),
            CircEvent::Resolved { id, result } => self.on_resolved(id, result).await,
            CircEvent::Flow(ev) => self.on_flow_event(ev).await,
            CircEvent::PaddingDue => self.on_padding_due().await,
            CircEvent::FlowOpened { id, task, result } => {
                self.on_flow_opened(id, task, result).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<A, B, F, Fut>(_: F) -> usize
    where
        F: FnOnce(A, B) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    fn task_size<F, Fut>(_: F) -> usize
    where
        F: FnOnce(
            Arc<RelayShared>,
            CircEnd,
            Create,
            EventSender<CircEvent>,
            EventReceiver<CircEvent>,
            Arc<QueueTicket>,
        ) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// What an open circuit's task holds whatever it does: the task's future (the
    /// circuit's state and room for whatever it awaits inline). Rare work is boxed so this
    /// stays small (docs/PERFORMANCE.md, "Memory per circuit").
    #[test]
    fn an_idle_circuit_task_is_small() {
        let task = task_size(task);
        let run = future_size::<Circuit, EventReceiver<CircEvent>, _, _>(Circuit::run);
        let handle = future_size::<&mut Circuit, CircEvent, _, _>(Circuit::handle);
        fn size3<A, B, C, F, Fut>(_: F) -> usize
        where
            F: FnOnce(A, B, C) -> Fut,
        {
            std::mem::size_of::<Fut>()
        }
        use crate::cell::RelayBody;
        println!(
            "forward {} backward {} send_backward {} sleep {}",
            size3::<&mut Circuit, RelayBody, bool, _, _>(Circuit::forward),
            future_size::<&mut Circuit, RelayBody, _, _>(Circuit::backward),
            size3::<&mut Circuit, [u8; crate::cell::consts::RELAY_BODY_LEN], bool, _, _>(
                Circuit::send_backward
            ),
            std::mem::size_of::<tokio::time::Sleep>(),
        );
        println!(
            "circuit task future {task} B, run {run} B, handle (boxed) {handle} B, \
             Circuit {} B, CircEvent {} B",
            std::mem::size_of::<Circuit>(),
            std::mem::size_of::<CircEvent>()
        );
        assert!(task <= 2048, "circuit task future is {task} bytes");
    }
}
