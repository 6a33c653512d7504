//! The task that owns a built client circuit: multiplexes streams over it.
//!
//! Everything reaches the task through one queue (see [`super::event`]), so the task
//! never has to race futures against each other and every event is handled to completion.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::debug;

use crate::cell::chan_contexts::FromNextHop;
use crate::cell::relay_contexts::{AtClient, AtRelay};
use crate::cell::relay_msg::{Begin, Connected, Data, Sendme};
use crate::cell::{EndReason, RelayCell, RelayMessage, RelayMsg, StreamId, TargetAddr};
use crate::proto::event_queue::EventSender;

use super::circuit::ClientCircuit;
use super::datagram::budget::DatagramBudget;
use super::datagram::flows::{FlowSet, MAX_WAITING};
use super::event::{CircuitRequest, ClientCircEvent, IncomingAnswer};
use super::incoming::{IncomingStream, IncomingStreams};
use super::stream::data_stream::{pair, CircuitEnd};
use super::stream::pump::{self, LocalSocket, StreamEvent};
use super::stream::set::StreamSet;
use super::stream::{DataStream, StreamOpenError};

mod handle;
mod udp;

use handle::Activity;
pub use handle::CircuitHandle;
pub(crate) use udp::UdpTargets;

/// Most streams one client circuit carries at once (UDP flows included).
pub(crate) const MAX_STREAMS_PER_CIRCUIT: usize = 512;

/// A stream waiting for CONNECTED.
struct Pending {
    reply: oneshot::Sender<Result<DataStream, StreamOpenError>>,
    local: CircuitEnd,
    app: DataStream,
}

/// What the reactor makes of a relay message, at either end it runs: an ordinary circuit
/// ([`AtClient`]) or the service end of a rendezvous circuit ([`AtRelay`]).
enum Inbound {
    Connected,
    Data(Data),
    End(EndReason),
    Sendme(Sendme),
    Drop,
    /// XOFF (`false`) or XON (`true`) for a stream (congestion control only).
    FlowSignal(bool),
    /// The far end opens a stream (only where it plays the client).
    Begin(Begin),
    /// The far end opens a UDP flow (only where it plays the client).
    BeginUdp(Begin),
    /// A fragment of a datagram on a flow.
    Datagram(crate::cell::datagram::Datagram),
    /// Legal in the context but nothing the reactor asked for: closes the circuit.
    Unexpected,
}

/// A receiving context the reactor runs on; each maps every one of its commands, by an
/// exhaustive match, to what the reactor does with it.
trait ReactorContext: RelayMessage + Send + 'static {
    fn inbound(self) -> Inbound;
}

impl ReactorContext for AtClient {
    fn inbound(self) -> Inbound {
        match self {
            AtClient::Connected(_) => Inbound::Connected,
            AtClient::Data(data) => Inbound::Data(data),
            AtClient::End(reason) => Inbound::End(reason),
            AtClient::Sendme(sendme) => Inbound::Sendme(sendme),
            AtClient::Drop => Inbound::Drop,
            AtClient::Datagram(d) => Inbound::Datagram(d),
            AtClient::Xoff => Inbound::FlowSignal(false),
            AtClient::Xon => Inbound::FlowSignal(true),
            AtClient::Extended(_) | AtClient::Truncated(_) | AtClient::Resolved(_) => {
                Inbound::Unexpected
            }
        }
    }
}

impl ReactorContext for AtRelay {
    fn inbound(self) -> Inbound {
        match self {
            AtRelay::Begin(begin) => Inbound::Begin(begin),
            AtRelay::Data(data) => Inbound::Data(data),
            AtRelay::End(reason) => Inbound::End(reason),
            AtRelay::Sendme(sendme) => Inbound::Sendme(sendme),
            AtRelay::Drop => Inbound::Drop,
            AtRelay::Xoff => Inbound::FlowSignal(false),
            AtRelay::Xon => Inbound::FlowSignal(true),
            AtRelay::BeginUdp(begin) => Inbound::BeginUdp(begin),
            AtRelay::Datagram(d) => Inbound::Datagram(d),
            AtRelay::Extend(_) | AtRelay::Resolve(_) | AtRelay::Truncate | AtRelay::BeginDir => {
                Inbound::Unexpected
            }
        }
    }
}

struct Reactor<M> {
    circ: ClientCircuit<M>,
    /// Where streams the far end opens go (`None`: BEGIN is a protocol violation).
    incoming: Option<mpsc::Sender<IncomingStream>>,
    /// Where UDP flows the far end opens go, by virtual port (an onion service's end).
    udp_targets: Option<Arc<udp::UdpTargets>>,
    streams: StreamSet,
    pending: HashMap<StreamId, Pending>,
    flows: FlowSet,
    /// UDP flows waiting for CONNECTED.
    pending_flows: HashMap<StreamId, udp::PendingFlow>,
    next_stream: u16,
    closed: Arc<AtomicBool>,
    tx: EventSender<ClientCircEvent>,
    retiring: bool,
    activity: Arc<Activity>,
    open_streams: watch::Sender<usize>,
}

impl ClientCircuit<AtClient> {
    /// Hands the circuit to a task that multiplexes streams over it.
    pub fn into_handle(self) -> CircuitHandle {
        spawn(self)
    }
}

/// Starts the task owning `circ` and returns a handle on it.
pub(crate) fn spawn(circ: ClientCircuit<AtClient>) -> CircuitHandle {
    spawn_with(circ, None, None)
}

/// Starts the task owning a circuit whose far end opens streams (an onion service's
/// rendezvous circuit, end-to-end hop added with the directions swapped). Each BEGIN is
/// handed to the owner through the returned queue, to accept or refuse.
pub(crate) fn spawn_accepting(
    circ: ClientCircuit<AtRelay>,
    udp_targets: Arc<udp::UdpTargets>,
) -> (CircuitHandle, IncomingStreams) {
    // Each stream waiting in the queue holds a reserved stream id, so the circuit's stream
    // limit bounds the queue too.
    let (tx, rx) = mpsc::channel(MAX_STREAMS_PER_CIRCUIT);
    (
        spawn_with(circ, Some(tx), Some(udp_targets)),
        IncomingStreams { rx },
    )
}

fn spawn_with<M: ReactorContext>(
    circ: ClientCircuit<M>,
    incoming: Option<mpsc::Sender<IncomingStream>>,
    udp_targets: Option<Arc<udp::UdpTargets>>,
) -> CircuitHandle {
    let tx = circ.event_sender();
    let closed = Arc::new(AtomicBool::new(false));
    let activity = Arc::new(Activity {
        start: Instant::now(),
        last: AtomicU64::new(0),
    });
    let (open_streams, open_rx) = watch::channel(0);
    let handle = CircuitHandle {
        tx: tx.clone(),
        closed: Arc::clone(&closed),
        hops: circ.len(),
        id: circ.id(),
        flow: circ.flow_mode(),
        activity: Arc::clone(&activity),
        open_streams: open_rx,
    };
    let flow = circ.flow_mode();
    let reactor = Reactor {
        circ,
        incoming,
        udp_targets,
        streams: StreamSet::new(flow),
        pending: HashMap::new(),
        flows: FlowSet::new(DatagramBudget::new(
            MAX_WAITING * crate::cell::datagram::MAX_DATAGRAM_LEN,
        )),
        pending_flows: HashMap::new(),
        next_stream: 1,
        closed,
        tx,
        retiring: false,
        activity,
        open_streams,
    };
    tokio::spawn(reactor.run());
    handle
}

impl<M: ReactorContext> Reactor<M> {
    async fn run(mut self) {
        loop {
            let event = self.circ.next_raw_event().await;
            let keep_going = match event {
                Some(ClientCircEvent::Cell(FromNextHop::Relay(body))) => {
                    match self.circ.open_body(body).await {
                        Ok((hop, cell, tag)) => self.on_cell(hop, cell, tag).await,
                        Err(e) => {
                            debug!("client: circuit failed: {e}");
                            false
                        }
                    }
                }
                Some(ClientCircEvent::Cell(FromNextHop::Destroy(reason))) => {
                    debug!("client: circuit destroyed by the network ({reason:?})");
                    self.circ.mark_closed();
                    false
                }
                Some(ClientCircEvent::Stream(ev)) => self.on_stream_event(ev).await,
                Some(ClientCircEvent::Incoming(answer)) => self.on_incoming_answer(answer).await,
                Some(ClientCircEvent::Request(CircuitRequest::Open { to, reply })) => {
                    self.open(to, reply).await
                }
                Some(ClientCircEvent::Request(CircuitRequest::OpenUdp {
                    target,
                    port,
                    reply,
                })) => self.open_udp(target, port, reply).await,
                Some(ClientCircEvent::Flow(ev)) => self.on_flow_event(ev).await,
                Some(ClientCircEvent::PaddingDue) => match self.circ.send_due_padding().await {
                    Ok(()) => true,
                    Err(e) => {
                        debug!("client: padding send failed: {e}");
                        false
                    }
                },
                Some(ClientCircEvent::Request(CircuitRequest::Close)) => false,
                Some(ClientCircEvent::Request(CircuitRequest::Retire)) => {
                    self.retiring = true;
                    true
                }
                Some(ClientCircEvent::ChannelClosed) | None => {
                    self.circ.mark_closed();
                    false
                }
                Some(ClientCircEvent::Cell(FromNextHop::Created(_)))
                | Some(ClientCircEvent::Violation) => false,
            };
            let open = self.streams.len() + self.pending.len() + self.flows.len();
            if !keep_going || (self.retiring && open == 0) {
                break;
            }
            self.open_streams
                .send_if_modified(|n| std::mem::replace(n, open) != open);
        }
        self.closed.store(true, Ordering::Release);
        let (cwnd, rtt) = self.streams.window_state();
        debug!(
            cwnd,
            rtt_ms = rtt.map(|r| r.as_secs_f64() * 1e3),
            "client: circuit closing"
        );
        self.streams.clear();
        for (_, p) in self.pending.drain() {
            let _ = p.reply.send(Err(StreamOpenError::CircuitClosed));
        }
        self.flows.clear();
        for (_, p) in self.pending_flows.drain() {
            let _ = p.reply.send(Err(StreamOpenError::CircuitClosed));
        }
        self.circ.shutdown().await;
    }

    /// Records stream activity (see [`Activity`]).
    fn touch(&self) {
        self.activity.touch();
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
        if self.streams.len() + self.flows.len() >= MAX_STREAMS_PER_CIRCUIT {
            return None;
        }
        for _ in 0..=u16::MAX {
            let id = StreamId::new(self.next_stream);
            self.next_stream = self.next_stream.wrapping_add(1).max(1);
            if let Some(id) =
                id.filter(|id| !self.streams.contains(*id) && !self.flows.contains(*id))
            {
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
        let (local, app) = pair();
        self.pending.insert(id, Pending { reply, local, app });
        self.send(begin).await
    }

    async fn on_cell(
        &mut self,
        hop: usize,
        cell: RelayCell<M>,
        tag: crate::crypto::RelayTag,
    ) -> bool {
        let (stream, msg) = cell.into_parts();
        let msg = msg.inbound();
        if hop != self.last_hop() && !matches!(msg, Inbound::Drop) {
            debug!("client: relay message from a middle hop");
            return false;
        }
        match (stream, msg) {
            (Some(id), Inbound::Connected) if self.pending_flows.contains_key(&id) => {
                self.on_flow_connected(id).await
            }
            (Some(id), Inbound::Connected) => {
                let Some(p) = self.pending.remove(&id) else {
                    return false;
                };
                self.attach(id, p.local);
                if p.reply.send(Ok(p.app)).is_err() {
                    // The requester gave up; close the stream again.
                    self.streams.remove(id);
                    return self
                        .send_cell(Some(id), RelayMsg::End(EndReason::Misc))
                        .await;
                }
                true
            }
            (Some(id), Inbound::Data(_) | Inbound::Sendme(_)) if self.flows.contains(id) => {
                debug!("client: stream message on a flow's id");
                false
            }
            (Some(id), Inbound::Data(data)) => match self.streams.on_data(id, data, &tag) {
                Ok(replies) => {
                    self.touch();
                    for reply in replies.into_iter().flatten() {
                        if !self.send(reply).await {
                            return false;
                        }
                    }
                    true
                }
                Err(e) => {
                    debug!("client: stream protocol violation: {e}");
                    false
                }
            },
            (Some(id), Inbound::End(reason)) if self.flows.contains(id) => {
                self.on_flow_end(id, reason);
                true
            }
            (Some(id), Inbound::End(reason)) => {
                if let Some(p) = self.pending.remove(&id) {
                    self.streams.remove(id);
                    let _ = p.reply.send(Err(StreamOpenError::Refused(reason)));
                    return true;
                }
                // END for a stream we already closed is the normal end of a race.
                self.streams.on_end(id, reason);
                true
            }
            (Some(id), Inbound::Datagram(frag)) => self.on_datagram(id, frag, &tag).await,
            (Some(id), Inbound::BeginUdp(begin)) if self.udp_targets.is_some() => {
                self.touch();
                self.on_incoming_udp(id, begin.port()).await
            }
            (None, Inbound::Sendme(sendme)) => self.on_circuit_sendme(&sendme).await,
            (stream, Inbound::Sendme(sendme)) => match self.streams.on_sendme(stream, &sendme) {
                Ok(()) => true,
                Err(e) => {
                    debug!("client: bad SENDME: {e}");
                    false
                }
            },
            (_, Inbound::Drop) => true,
            (Some(id), Inbound::FlowSignal(on)) => match self.streams.on_flow_signal(id, on) {
                Ok(()) => true,
                Err(e) => {
                    debug!("client: {e}");
                    false
                }
            },
            (Some(id), Inbound::Begin(begin)) if self.incoming.is_some() => {
                self.touch();
                self.on_incoming_begin(id, begin).await
            }
            // A stream command without a stream cannot parse; BEGIN where nobody takes
            // streams, or a command the reactor never asked for, closes the circuit.
            (_, Inbound::Unexpected | Inbound::Begin(_) | Inbound::BeginUdp(_))
            | (
                None,
                Inbound::Connected
                | Inbound::Data(_)
                | Inbound::End(_)
                | Inbound::Datagram(_)
                | Inbound::FlowSignal(_),
            ) => {
                debug!("client: unexpected relay message");
                false
            }
        }
    }

    /// BEGIN from the far end of an accepting circuit: the stream id is reserved and the
    /// stream handed to the owner, whose answer comes back as [`IncomingAnswer`].
    async fn on_incoming_begin(&mut self, id: StreamId, begin: Begin) -> bool {
        if self.streams.contains(id) || self.pending.contains_key(&id) || self.flows.contains(id) {
            debug!("client: BEGIN reuses an open stream id");
            return false;
        }
        let Some(incoming) = &self.incoming else {
            return false;
        };
        if self.streams.len() >= MAX_STREAMS_PER_CIRCUIT {
            return self
                .send_cell(Some(id), RelayMsg::End(EndReason::ResourceLimit))
                .await;
        }
        let stream = IncomingStream::new(id, begin.port(), self.tx.clone());
        self.streams.reserve(id);
        match incoming.try_send(stream) {
            Ok(()) => true,
            Err(e) => {
                // The owner is gone (or, impossibly, its queue is full): refuse the stream.
                let reason = match e {
                    mpsc::error::TrySendError::Full(_) => EndReason::ResourceLimit,
                    mpsc::error::TrySendError::Closed(_) => EndReason::Misc,
                };
                // Dropping the stream would queue its own refusal: answer here instead.
                let mut stream = e.into_inner();
                stream.forget();
                self.streams.remove(id);
                self.send_cell(Some(id), RelayMsg::End(reason)).await
            }
        }
    }

    /// The owner answered an incoming stream.
    async fn on_incoming_answer(&mut self, answer: IncomingAnswer) -> bool {
        let (id, accepted) = match answer {
            IncomingAnswer::Accept { id, socket } => (id, Ok(socket)),
            IncomingAnswer::Reject { id, reason } => (id, Err(reason)),
        };
        if !self.streams.contains(id) {
            // The far end gave up (END) while the owner was deciding.
            return true;
        }
        match accepted {
            Ok(socket) => {
                self.attach(id, socket);
                // No address in CONNECTED: the far end must not learn where it leads.
                let connected = Connected { resolved: None };
                self.send_cell(Some(id), RelayMsg::Connected(connected))
                    .await
            }
            Err(reason) => {
                self.streams.remove(id);
                self.send_cell(Some(id), RelayMsg::End(reason)).await
            }
        }
    }

    /// Starts the pump between stream `id` and its local end.
    fn attach<S: LocalSocket>(&mut self, id: StreamId, socket: S) {
        let io = pump::spawn(
            socket,
            id,
            self.streams.initial_stream_window(),
            None,
            self.streams.circuit_permits(),
            self.tx.clone(),
            ClientCircEvent::Stream,
        );
        self.streams.attach(id, io);
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
