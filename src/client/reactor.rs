//! The task that owns a built client circuit: multiplexes streams over it.
//!
//! Everything reaches the task through one queue (cells from the channel reader, stream
//! task events, requests from [`CircuitHandle`]), so the task never has to race futures
//! against each other and every event is handled to completion.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tracing::debug;

use crate::cell::relay_msg::Begin;
use crate::cell::{ChanMsg, EndReason, RelayCell, RelayMsg, StreamId, TargetAddr};
use crate::stream::pump::{self, StreamEvent};
use crate::stream::set::StreamSet;

use super::channel::ClientCircEvent;
use super::circuit::ClientCircuit;
use super::stream::{CircuitEnd, DataStream, StreamOpenError};

/// Most streams one client circuit carries at once.
pub const MAX_STREAMS_PER_CIRCUIT: usize = 512;

/// A request to the circuit task.
#[derive(Debug)]
pub enum CircuitRequest {
    /// Open a stream: to `target:port` at the exit, or (with `None`) to the last hop's
    /// directory service (BEGIN_DIR).
    Open {
        /// Destination (names are resolved by the exit) and port.
        to: Option<(TargetAddr, u16)>,
        /// Where to send the outcome.
        reply: oneshot::Sender<Result<DataStream, StreamOpenError>>,
    },
    /// Close the circuit.
    Close,
    /// Take no new streams; close once the open ones have finished.
    Retire,
}

/// A cloneable handle on a running client circuit.
#[derive(Debug, Clone)]
pub struct CircuitHandle {
    tx: mpsc::Sender<ClientCircEvent>,
    closed: Arc<AtomicBool>,
    hops: usize,
    id: crate::cell::CircId,
}

impl CircuitHandle {
    /// Opens a stream to `target:port` through the circuit's last hop.
    pub async fn open_stream(
        &self,
        target: TargetAddr,
        port: u16,
        timeout: Duration,
    ) -> Result<DataStream, StreamOpenError> {
        self.open(Some((target, port)), timeout).await
    }

    /// Opens a stream to the last hop's directory service (BEGIN_DIR).
    pub async fn open_dir_stream(&self, timeout: Duration) -> Result<DataStream, StreamOpenError> {
        self.open(None, timeout).await
    }

    async fn open(
        &self,
        to: Option<(TargetAddr, u16)>,
        timeout: Duration,
    ) -> Result<DataStream, StreamOpenError> {
        let (reply, rx) = oneshot::channel();
        let req = CircuitRequest::Open { to, reply };
        self.tx
            .send(ClientCircEvent::Request(req))
            .await
            .map_err(|_| StreamOpenError::CircuitClosed)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(StreamOpenError::CircuitClosed),
            Err(_) => Err(StreamOpenError::Timeout),
        }
    }

    /// Whether the circuit has closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.tx.is_closed()
    }

    /// Number of hops.
    pub fn hops(&self) -> usize {
        self.hops
    }

    /// The circuit's id on its first hop's channel.
    pub fn id(&self) -> crate::cell::CircId {
        self.id
    }

    /// Asks the circuit to take no new streams and to close once its streams are done
    /// (what happens to circuits past their maximum dirtiness).
    pub async fn retire(&self) {
        let _ = self
            .tx
            .send(ClientCircEvent::Request(CircuitRequest::Retire))
            .await;
    }

    /// Asks the circuit to close.
    pub async fn close(&self) {
        let _ = self
            .tx
            .send(ClientCircEvent::Request(CircuitRequest::Close))
            .await;
    }
}

/// A stream waiting for CONNECTED.
struct Pending {
    reply: oneshot::Sender<Result<DataStream, StreamOpenError>>,
    local: CircuitEnd,
    app: DataStream,
}

/// An onion service's rendezvous slots: a bounded number of rendezvous circuits open at
/// once, and a signal to its circuits when the last slot is taken or an introduction finds
/// none free. A circuit whose streams have been quiet for its idle time gives its slot up
/// then (see [`ServiceEnd::idle_timeout`]), one circuit per signal.
#[derive(Debug)]
pub struct RendezvousSlots {
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
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(RendezvousSlots {
            permits: Arc::new(Semaphore::new(max.max(1))),
            pressure: Notify::new(),
            eviction_wanted: AtomicBool::new(false),
        })
    }

    /// Takes a slot, or `None` when all are in use. Either way, if no slot is left the
    /// service is under pressure: one of its circuits idle past their idle time is told
    /// to make room.
    pub fn try_acquire(self: &Arc<Self>) -> Option<RendezvousSlot> {
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
    pub fn exhausted(&self) -> bool {
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
pub struct RendezvousSlot {
    _permit: OwnedSemaphorePermit,
    slots: Arc<RendezvousSlots>,
}

/// What the task does when it is an onion service's end of a rendezvous circuit: the
/// client opens streams with BEGIN, and the service connects them to local targets.
pub struct ServiceEnd {
    /// Virtual port → local target (e.g. 80 → 127.0.0.1:8080). Other ports are refused.
    pub ports: Arc<Vec<(u16, std::net::SocketAddr)>>,
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
}

impl std::fmt::Debug for ServiceEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceEnd { .. }")
    }
}

struct Reactor {
    circ: ClientCircuit,
    service: Option<ServiceEnd>,
    streams: StreamSet,
    pending: HashMap<StreamId, Pending>,
    next_stream: u16,
    closed: Arc<AtomicBool>,
    tx: mpsc::Sender<ClientCircEvent>,
    retiring: bool,
    /// Last stream activity (a stream opened, stream data sent or received); the service
    /// end closes the circuit [`ServiceEnd::idle_timeout`] after it.
    idle_since: tokio::time::Instant,
}

/// Starts the task owning `circ` and returns a handle on it.
pub fn spawn(circ: ClientCircuit) -> CircuitHandle {
    spawn_with(circ, None)
}

/// Starts the task owning an onion service's rendezvous circuit (end-to-end hop added
/// with the directions swapped): it accepts the client's BEGINs for the configured ports.
pub fn spawn_service(circ: ClientCircuit, service: ServiceEnd) -> CircuitHandle {
    spawn_with(circ, Some(service))
}

fn spawn_with(circ: ClientCircuit, service: Option<ServiceEnd>) -> CircuitHandle {
    let tx = circ.event_sender();
    let closed = Arc::new(AtomicBool::new(false));
    let handle = CircuitHandle {
        tx: tx.clone(),
        closed: Arc::clone(&closed),
        hops: circ.len(),
        id: circ.id(),
    };
    let reactor = Reactor {
        circ,
        service,
        streams: StreamSet::new(),
        pending: HashMap::new(),
        next_stream: 1,
        closed,
        tx,
        retiring: false,
        idle_since: tokio::time::Instant::now(),
    };
    tokio::spawn(reactor.run());
    handle
}

impl Reactor {
    /// The next event for the task, or `None` when the service end closes the circuit as
    /// idle. A service closes a rendezvous circuit without streams once it carried no
    /// traffic for its idle time, and one with open streams only when, idle that long,
    /// all the service's rendezvous slots are in use: clients that keep circuits or
    /// streams open cannot hold the (bounded) slots against newcomers, yet quiet
    /// long-lived sessions are not cut while there is room. Idle time is measured from
    /// the last activity, not the last event: DROP cells and the like do not count.
    async fn next_event(&mut self) -> Option<Option<ClientCircEvent>> {
        loop {
            let Some(service) = &self.service else {
                return Some(self.circ.next_raw_event().await);
            };
            let at = self.idle_since + service.idle_timeout;
            let slots = service.slot.as_ref().map(|s| Arc::clone(&s.slots));
            if tokio::time::Instant::now() < at {
                match tokio::time::timeout_at(at, self.circ.next_raw_event()).await {
                    Ok(e) => return Some(e),
                    // Idle time reached: decide below.
                    Err(_) => continue,
                }
            }
            if self.streams.is_empty() && self.pending.is_empty() {
                debug!("service: idle rendezvous circuit closed");
                return None;
            }
            let Some(slots) = slots else {
                return Some(self.circ.next_raw_event().await);
            };
            // Registered before the check, so pressure arising between the two is seen.
            let pressure = slots.pressure.notified();
            tokio::pin!(pressure);
            pressure.as_mut().enable();
            if slots.claim_eviction() {
                debug!(
                    "service: idle rendezvous circuit closed to free a slot ({} streams open)",
                    self.streams.len()
                );
                // Free the slot now, not after the shutdown (the next request for room
                // must find the slots exhausted only if they are).
                if let Some(s) = self.service.as_mut() {
                    s.slot = None;
                }
                return None;
            }
            tokio::select! {
                e = self.circ.next_raw_event() => return Some(e),
                () = &mut pressure => {}
            }
        }
    }

    async fn run(mut self) {
        loop {
            let Some(event) = self.next_event().await else {
                break;
            };
            let keep_going = match event {
                Some(ClientCircEvent::Cell(ChanMsg::Relay(body))) => {
                    match self.circ.open_body(body).await {
                        Ok((hop, cell, tag)) => self.on_cell(hop, cell, tag).await,
                        Err(e) => {
                            debug!("client: circuit failed: {e}");
                            false
                        }
                    }
                }
                Some(ClientCircEvent::Cell(ChanMsg::Destroy(reason))) => {
                    debug!("client: circuit destroyed by the network ({reason:?})");
                    self.circ.mark_closed();
                    false
                }
                Some(ClientCircEvent::Stream(ev)) => self.on_stream_event(ev).await,
                Some(ClientCircEvent::ServiceConnected { id, result }) => {
                    self.on_service_connected(id, result).await
                }
                Some(ClientCircEvent::Request(CircuitRequest::Open { to, reply })) => {
                    self.open(to, reply).await
                }
                Some(ClientCircEvent::Request(CircuitRequest::Close)) => false,
                Some(ClientCircEvent::Request(CircuitRequest::Retire)) => {
                    self.retiring = true;
                    true
                }
                Some(ClientCircEvent::ChannelClosed) | None => {
                    self.circ.mark_closed();
                    false
                }
                Some(ClientCircEvent::Cell(_)) | Some(ClientCircEvent::Violation) => false,
            };
            if !keep_going || (self.retiring && self.streams.is_empty() && self.pending.is_empty())
            {
                break;
            }
        }
        self.closed.store(true, Ordering::Release);
        self.streams.clear();
        for (_, p) in self.pending.drain() {
            let _ = p.reply.send(Err(StreamOpenError::CircuitClosed));
        }
        self.circ.shutdown().await;
    }

    /// Records stream activity (see [`Self::idle_since`]).
    fn touch(&mut self) {
        self.idle_since = tokio::time::Instant::now();
    }

    fn last_hop(&self) -> usize {
        self.circ.len().saturating_sub(1)
    }

    async fn send(&mut self, cell: RelayCell) -> bool {
        let last = self.last_hop();
        let data_stream = match cell.msg() {
            RelayMsg::Data(_) => cell.stream(),
            _ => None,
        };
        if data_stream.is_some() {
            self.touch();
        }
        match self.circ.send(last, cell).await {
            Ok(tag) => {
                if let Some(id) = data_stream {
                    self.streams.on_data_sent(id, &tag);
                }
                true
            }
            Err(e) => {
                debug!("client: send failed: {e}");
                false
            }
        }
    }

    fn allocate_stream(&mut self) -> Option<StreamId> {
        if self.streams.len() >= MAX_STREAMS_PER_CIRCUIT {
            return None;
        }
        for _ in 0..=u16::MAX {
            let id = StreamId::new(self.next_stream);
            self.next_stream = self.next_stream.wrapping_add(1).max(1);
            if let Some(id) = id.filter(|id| !self.streams.contains(*id)) {
                return Some(id);
            }
        }
        None
    }

    async fn open(
        &mut self,
        to: Option<(TargetAddr, u16)>,
        reply: oneshot::Sender<Result<DataStream, StreamOpenError>>,
    ) -> bool {
        let Some(id) = self.allocate_stream() else {
            let _ = reply.send(Err(StreamOpenError::TooManyStreams));
            return true;
        };
        let msg = match to {
            Some((target, port)) => Begin::new(target, port).map(RelayMsg::Begin),
            None => Ok(RelayMsg::BeginDir),
        };
        let Ok(begin) = msg.and_then(|m| RelayCell::new(Some(id), m)) else {
            let _ = reply.send(Err(StreamOpenError::Refused(EndReason::Misc)));
            return true;
        };
        self.streams.reserve(id);
        let (local, app) = super::stream::pair();
        self.pending.insert(id, Pending { reply, local, app });
        self.send(begin).await
    }

    async fn on_cell(&mut self, hop: usize, cell: RelayCell, tag: crate::crypto::RelayTag) -> bool {
        let (stream, msg) = cell.into_parts();
        if hop != self.last_hop() && !matches!(msg, RelayMsg::Drop) {
            debug!("client: relay message from a middle hop");
            return false;
        }
        match (stream, msg) {
            (Some(id), RelayMsg::Connected(_)) => {
                let Some(p) = self.pending.remove(&id) else {
                    return false;
                };
                let tx = self.tx.clone();
                let io = pump::spawn(
                    p.local,
                    id,
                    StreamSet::initial_stream_window(),
                    None,
                    self.streams.circuit_permits(),
                    tx,
                    ClientCircEvent::Stream,
                );
                self.streams.attach(id, io);
                if p.reply.send(Ok(p.app)).is_err() {
                    // The requester gave up; close the stream again.
                    self.streams.remove(id);
                    return self
                        .send_cell(Some(id), RelayMsg::End(EndReason::Misc))
                        .await;
                }
                true
            }
            (Some(id), RelayMsg::Data(data)) => match self.streams.on_data(id, data, &tag) {
                Ok(sendme) => {
                    self.touch();
                    match sendme {
                        Some(sendme) => self.send(sendme).await,
                        None => true,
                    }
                }
                Err(e) => {
                    debug!("client: stream protocol violation: {e}");
                    false
                }
            },
            (Some(id), RelayMsg::End(reason)) => {
                if let Some(p) = self.pending.remove(&id) {
                    self.streams.remove(id);
                    let _ = p.reply.send(Err(StreamOpenError::Refused(reason)));
                    return true;
                }
                // END for a stream we already closed is the normal end of a race.
                self.streams.on_end(id, reason);
                true
            }
            (stream, RelayMsg::Sendme(sendme)) => match self.streams.on_sendme(stream, &sendme) {
                Ok(()) => true,
                Err(e) => {
                    debug!("client: bad SENDME: {e}");
                    false
                }
            },
            (_, RelayMsg::Drop) => true,
            (Some(id), RelayMsg::Begin(begin)) if self.service.is_some() => {
                self.touch();
                self.on_service_begin(id, begin.port()).await
            }
            _ => {
                debug!("client: unexpected relay message");
                false
            }
        }
    }

    /// Service: BEGIN from the client. A configured virtual port is connected to its local
    /// target in the background; any other port is refused with END (EXITPOLICY).
    async fn on_service_begin(&mut self, id: StreamId, port: u16) -> bool {
        if self.streams.contains(id) || self.pending.contains_key(&id) {
            debug!("service: BEGIN reuses an open stream id");
            return false;
        }
        let Some(service) = &self.service else {
            return false;
        };
        let target = service
            .ports
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, t)| *t);
        let timeout = service.connect_timeout;
        let Some(target) = target else {
            return self
                .send_cell(Some(id), RelayMsg::End(EndReason::ExitPolicy))
                .await;
        };
        if self.streams.len() >= MAX_STREAMS_PER_CIRCUIT {
            return self
                .send_cell(Some(id), RelayMsg::End(EndReason::ResourceLimit))
                .await;
        }
        self.streams.reserve(id);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let result =
                match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(target)).await {
                    Ok(Ok(s)) => Ok(s),
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        Err(EndReason::ConnectRefused)
                    }
                    Ok(Err(_)) => Err(EndReason::NoRoute),
                    Err(_) => Err(EndReason::Timeout),
                };
            let _ = tx
                .send(ClientCircEvent::ServiceConnected { id, result })
                .await;
        });
        true
    }

    /// Service: the local connection for stream `id` finished.
    async fn on_service_connected(
        &mut self,
        id: StreamId,
        result: Result<tokio::net::TcpStream, EndReason>,
    ) -> bool {
        if !self.streams.contains(id) {
            // The client gave up (END) while we were connecting.
            return true;
        }
        match result {
            Ok(socket) => {
                let _ = socket.set_nodelay(true);
                let io = pump::spawn(
                    socket,
                    id,
                    StreamSet::initial_stream_window(),
                    None,
                    self.streams.circuit_permits(),
                    self.tx.clone(),
                    ClientCircEvent::Stream,
                );
                self.streams.attach(id, io);
                // No address in CONNECTED: the client must not learn the local target.
                self.send_cell(
                    Some(id),
                    RelayMsg::Connected(crate::cell::relay_msg::Connected { resolved: None }),
                )
                .await
            }
            Err(reason) => {
                self.streams.remove(id);
                self.send_cell(Some(id), RelayMsg::End(reason)).await
            }
        }
    }

    async fn send_cell(&mut self, stream: Option<StreamId>, msg: RelayMsg) -> bool {
        match RelayCell::new(stream, msg) {
            Ok(cell) => self.send(cell).await,
            Err(_) => false,
        }
    }

    async fn on_stream_event(&mut self, ev: StreamEvent) -> bool {
        match self.streams.on_stream_event(ev) {
            Some(cell) => self.send(cell).await,
            None => true,
        }
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

    /// The signal wakes every waiting circuit (as in `Reactor::next_event`), but only one
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
