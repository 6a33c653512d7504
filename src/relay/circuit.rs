//! One circuit at a relay: a task that owns the circuit's crypto and both of its ends.
//!
//! Forward cells (from the client side) lose this hop's layer and are either handled here
//! (recognised) or passed to the next hop; backward cells gain this hop's layer and go to
//! the previous hop. Anything unexpected tears the circuit down in both directions: a
//! silently dropped cell would be a side channel.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;

use tokio::sync::mpsc;
use tracing::debug;

use crate::cell::chan_contexts::{FromNextHop, FromPreviousHop};
use crate::cell::chan_msg::BoundedBytes;
use crate::cell::consts::{CELL_LEN, RELAY_BODY_LEN, RELAY_TAG_LEN};
use crate::cell::onion_msg::IntroduceAckStatus;
use crate::cell::relay_cmd::RelayCmd;
use crate::cell::relay_contexts::{AtIntroducingClient, AtOnionRole, AtRelayOnion};
use crate::cell::relay_msg::{Begin, Connected, Extend, Extended, Resolved, ResolvedAnswer};
use crate::cell::RelayMessage;
use crate::cell::{
    ChanCell, ChanMsg, CircId, Create, Created, DestroyReason, EndReason, HandshakeType, RelayBody,
    RelayCell, RelayMsg,
};
use crate::cell::{StreamId, TargetAddr};
use crate::crypto::fast_handshake::fast_relay;
use crate::crypto::{relay_handshake, CellKind, IdentityPublic, RelayCrypto, RelayTag};
use crate::link::mux::CircMux;
use crate::link::{self, LinkError, PeerKind, TrySendError};
use crate::stream::pump;
use crate::stream::set::StreamSet;
use std::time::Duration;

use super::events::{CircEvent, NextHopResult, Side};
use super::onion_points::CircSerial;
use super::queue_budget::{QueueStat, QueueTicket};
use super::reactor;
use super::shared::{CircEnd, CircSlot, RelayChannel, RelayCounters, RelayShared};
use super::splice::SharedBackward;

mod onion;

/// The command byte of INTRODUCE1 (a malformed one is answered, not torn down).
const INTRODUCE1: u8 = RelayCmd::Introduce1.code();

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
    let (tx, rx) = mpsc::channel(shared.limits.cells_queued_per_circuit.max(1));
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
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let Some(circuit) = Circuit::handshake(shared, prev, create, tx, ticket).await else {
            return;
        };
        circuit.run(rx).await;
    });
    Ok(())
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

/// Why the circuit must end, and which neighbour already knows.
struct Teardown {
    reason: DestroyReason,
    /// The side that closed first (no DESTROY is sent back to it).
    from: Option<Side>,
    /// The side whose channel queue stayed full (its DESTROY is only tried: waiting for
    /// room again would repeat the stall).
    stalled: Option<Side>,
}

impl Teardown {
    fn new(reason: DestroyReason) -> Self {
        Teardown {
            reason,
            from: None,
            stalled: None,
        }
    }

    /// The neighbour on `side` closed first (with `reason`, or its channel did).
    fn from_side(reason: DestroyReason, side: Side) -> Self {
        Teardown {
            reason,
            from: Some(side),
            stalled: None,
        }
    }
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
    self_tx: mpsc::Sender<CircEvent>,
    ticket: Arc<QueueTicket>,
    /// Exit streams (empty unless this relay is an exit and the client opened some).
    streams: StreamSet,
    /// Connection attempts of streams being opened, aborted on END or teardown so a
    /// client cannot pile up sockets by opening and abandoning streams.
    connecting: std::collections::HashMap<StreamId, tokio::task::AbortHandle>,
    /// RESOLVE lookups in progress (counted against the stream limit).
    resolving: usize,
    /// What the directory service keeps for this circuit (its upload budget), made at
    /// the first BEGIN_DIR.
    dir_state: Option<Arc<super::dirserve::CircuitDirState>>,
}

impl Circuit {
    /// Answers CREATE. On failure the circuit is refused with DESTROY and never starts.
    async fn handshake(
        shared: Arc<RelayShared>,
        prev: CircEnd,
        create: Create,
        self_tx: mpsc::Sender<CircEvent>,
        ticket: Arc<QueueTicket>,
    ) -> Option<Self> {
        let t0 = std::time::Instant::now();
        let from_client = matches!(prev.chan.peer, PeerKind::Client);
        let htype_code = create.htype.code();
        // A message answered recently is refused before any expensive work.
        if shared.replay.seen(htype_code, create.data.as_slice()) {
            return Self::refuse_replay(&shared, &prev).await;
        }
        let result = match create.htype {
            HandshakeType::Ntor1 => relay_handshake(
                &mut rand::rng(),
                shared.keys.onion_keys(),
                create.data.as_slice(),
                |_ext| Vec::new(),
            )
            .map(|(keys, reply, _ext)| (keys, reply)),
            // Only a client's first hop: its security is the channel's (see
            // crypto::fast_handshake).
            HandshakeType::Fast1 if from_client => {
                fast_relay(&mut rand::rng(), create.data.as_slice())
            }
            HandshakeType::Fast1 => Err(crate::crypto::HandshakeError::WrongIdentity),
        };
        let reply = result.and_then(|(keys, reply)| {
            let created = BoundedBytes::new(reply, "hdata")
                .map_err(|_| crate::crypto::HandshakeError::ExtensionTooShort)?;
            Ok((keys, created))
        });
        let (keys, created) = match reply {
            Ok(v) => v,
            Err(e) => {
                debug!("relay: circuit handshake failed: {e}");
                RelayCounters::bump(&shared.counters.protocol_violations);
                prev.chan.circuits.remove(prev.id);
                let destroy = ChanMsg::Destroy(DestroyReason::Protocol);
                let _ =
                    queue_cell(&prev, destroy, shared.limits.stalled_send_timeout(), None).await;
                return None;
            }
        };
        // Recorded only once the handshake succeeded (garbage cannot flush the filter);
        // the check-and-insert is atomic, so two racing copies cannot both pass.
        if !shared
            .replay
            .check_and_insert(htype_code, create.data.as_slice())
        {
            return Self::refuse_replay(&shared, &prev).await;
        }
        let wait = shared.limits.stalled_send_timeout();
        let created = ChanMsg::Created(Created { data: created });
        if let Err(f) = queue_cell(&prev, created, wait, Some(ticket.stat())).await {
            let _ = lost(f, Side::Prev, &shared.counters);
            prev.chan.circuits.remove(prev.id);
            return None;
        }
        debug!(us = t0.elapsed().as_micros() as u64, "relay: CREATED sent");
        RelayCounters::bump(&shared.counters.circuits_created);
        shared
            .counters
            .circuits_open
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let serial = shared.onion.next_serial();
        Some(Circuit {
            shared,
            prev,
            next: Next::None,
            crypto: Crypto::Own(RelayCrypto::new(&keys)),
            binding: keys.binding(),
            serial,
            role: Role::Plain,
            early_left: MAX_RELAY_EARLY,
            self_tx,
            ticket,
            streams: StreamSet::new(),
            connecting: std::collections::HashMap::new(),
            resolving: 0,
            dir_state: None,
        })
    }

    /// Refuses a replayed CREATE: DESTROY(PROTOCOL), the circuit never starts.
    async fn refuse_replay(shared: &RelayShared, prev: &CircEnd) -> Option<Self> {
        debug!("relay: replayed CREATE refused");
        RelayCounters::bump(&shared.counters.refused_replay);
        prev.chan.circuits.remove(prev.id);
        let destroy = ChanMsg::Destroy(DestroyReason::Protocol);
        let _ = queue_cell(prev, destroy, shared.limits.stalled_send_timeout(), None).await;
        None
    }

    async fn run(mut self, mut rx: mpsc::Receiver<CircEvent>) {
        let deadline = tokio::time::sleep(self.shared.limits.extend_timeout());
        tokio::pin!(deadline);
        let rend_deadline = tokio::time::sleep(self.shared.limits.rend_cookie_timeout());
        tokio::pin!(rend_deadline);
        let teardown = loop {
            let pending = matches!(self.next, Next::Connecting { .. } | Next::Pending(_));
            let waiting = matches!(self.role, Role::RendWaiting { .. });
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
            let was_idle = matches!(self.next, Next::None);
            if let Err(t) = self.handle(event).await {
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
        self.teardown(teardown).await;
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
            CircEvent::StreamConnected { id, result } => self.on_stream_connected(id, result).await,
            CircEvent::Introduce2(intro) => self.on_introduce2(intro).await,
            CircEvent::Joined(partner) => self.on_joined(partner),
            CircEvent::PartnerClosed => Err(Teardown::new(DestroyReason::Destroyed)),
            // Only a waiting circuit has a cookie to lose; a late notice (the circuit was
            // joined meanwhile under another registration) changes nothing.
            CircEvent::CookieEvicted if matches!(self.role, Role::RendWaiting { .. }) => {
                Err(Teardown::new(DestroyReason::ResourceLimit))
            }
            CircEvent::CookieEvicted => Ok(()),
            CircEvent::Resolved { id, result } => {
                self.resolving = self.resolving.saturating_sub(1);
                let msg = match result {
                    Ok(ips) => {
                        let answers = ips
                            .into_iter()
                            .take(crate::cell::relay_msg::MAX_RESOLVED_ANSWERS)
                            .map(|addr| ResolvedAnswer::Ip { addr, ttl: 60 })
                            .collect();
                        Resolved::new(answers)
                            .map(RelayMsg::Resolved)
                            .unwrap_or(RelayMsg::End(EndReason::ResolveFailed))
                    }
                    Err(reason) => RelayMsg::End(reason),
                };
                self.reply(cell_or_internal(Some(id), msg)?).await
            }
        }
    }

    /// A forward cell: remove our layer, then handle it here or pass it on.
    async fn forward(&mut self, body: RelayBody, early: bool) -> Result<(), Teardown> {
        let mut bytes = body.0;
        // Past a rendezvous join nothing can be extended, so RELAY_EARLY has no use there.
        if early && matches!(self.role, Role::Joined { .. }) {
            debug!("relay: RELAY_EARLY on a joined rendezvous circuit");
            RelayCounters::bump(&self.shared.counters.protocol_violations);
            return Err(Teardown::new(DestroyReason::Protocol));
        }
        let kind = if early {
            CellKind::RelayEarly
        } else {
            CellKind::Relay
        };
        let recognition = self.decrypt_forward(kind, &mut bytes).await?;
        if let Some(o) = self.shared.observer() {
            let recognised = matches!(recognition, crate::crypto::Recognition::Recognised { .. });
            o.forward_cell(self.prev.id, &bytes, recognised);
        }
        match recognition {
            crate::crypto::Recognition::Recognised { tag } => {
                self.on_recognised(&bytes, early, &tag).await
            }
            crate::crypto::Recognition::NotForUs => {
                if let Role::Joined { partner } = &self.role {
                    return self.splice(partner.clone(), bytes).await;
                }
                let Next::Open(next) = &self.next else {
                    // Nobody beyond us could recognise it: the cell was modified.
                    debug!("relay: unrecognised cell at the last hop");
                    return Err(Teardown::new(DestroyReason::CryptoFailure));
                };
                let body = RelayBody(bytes);
                let msg = if early {
                    ChanMsg::RelayEarly(body)
                } else {
                    ChanMsg::Relay(body)
                };
                self.relayed();
                let wait = self.shared.limits.stalled_send_timeout();
                queue_cell(next, msg, wait, Some(self.ticket.stat()))
                    .await
                    .map_err(|f| lost(f, Side::Next, &self.shared.counters))
            }
        }
    }

    /// A backward cell from the next hop: add our layer and pass it towards the client.
    async fn backward(&mut self, body: RelayBody) -> Result<(), Teardown> {
        if !matches!(self.next, Next::Open(_)) {
            return Err(Teardown::new(DestroyReason::Protocol));
        }
        let bytes = body.0;
        if let Some(o) = self.shared.observer() {
            o.backward_cell(self.prev.id, &bytes);
        }
        self.relayed();
        self.send_backward(bytes, false).await.map(|_| ())
    }

    fn relayed(&self) {
        RelayCounters::bump(&self.shared.counters.cells_relayed);
    }

    /// Sends a relay message we originate to the client.
    async fn reply(&mut self, cell: RelayCell) -> Result<(), Teardown> {
        let body: [u8; RELAY_BODY_LEN] = cell
            .encode()
            .map_err(|_| Teardown::new(DestroyReason::Internal))?;
        self.relayed();
        let tag = self.send_backward(body, true).await?;
        if let (RelayMsg::Data(_), Some(id)) = (cell.msg(), cell.stream()) {
            self.streams.on_data_sent(id, &tag);
        }
        Ok(())
    }

    /// A cell addressed to this hop.
    async fn on_recognised(
        &mut self,
        body: &[u8; RELAY_BODY_LEN],
        early: bool,
        tag: &RelayTag,
    ) -> Result<(), Teardown> {
        let cell = match RelayCell::<AtRelayOnion>::parse_typed(body) {
            Ok(cell) => cell,
            Err(e) if self.may_introduce() && body.get(RELAY_TAG_LEN) == Some(&INTRODUCE1) => {
                // A malformed INTRODUCE1 gets its answer (§8.5) instead of a teardown, so
                // the client can tell "bad message" from a broken circuit.
                debug!("relay: malformed INTRODUCE1: {e}");
                self.role = Role::IntroClient;
                return self.introduce_ack(IntroduceAckStatus::BadMessage).await;
            }
            Err(e) => {
                debug!("relay: bad relay message: {e}");
                return Err(Teardown::new(DestroyReason::Protocol));
            }
        };
        if let Some(o) = self.shared.observer() {
            o.recognised(self.prev.id, cell.msg().cmd());
        }
        let (stream, msg) = cell.into_parts();
        // RELAY_EARLY exists to carry EXTEND (it caps circuit length); anything else in one
        // would be a channel a hop could use unseen by the client (§2.3).
        if early && !matches!(msg, AtRelayOnion::Extend(_)) {
            debug!("relay: RELAY_EARLY carrying {:?}", msg.cmd());
            RelayCounters::bump(&self.shared.counters.protocol_violations);
            return Err(Teardown::new(DestroyReason::Protocol));
        }
        // A circuit with an onion-service role accepts only that role's messages (§8.6).
        match &self.role {
            Role::Plain => self.on_plain(stream, msg, early, tag).await,
            Role::IntroClient => match msg.narrow::<AtIntroducingClient>() {
                Ok(AtIntroducingClient::Introduce1(m)) if self.may_introduce() => {
                    self.on_introduce1(m).await
                }
                Ok(AtIntroducingClient::Introduce1(_)) => Err(self.role_violation()),
                Ok(AtIntroducingClient::Drop) => Ok(()),
                Err(_) => Err(self.role_violation()),
            },
            Role::Intro { .. } | Role::RendWaiting { .. } | Role::Joined { .. } => {
                match msg.narrow::<AtOnionRole>() {
                    Ok(AtOnionRole::Drop) => Ok(()),
                    Err(_) => Err(self.role_violation()),
                }
            }
        }
    }

    /// A recognised message on a circuit without an onion-service role.
    async fn on_plain(
        &mut self,
        stream: Option<StreamId>,
        msg: AtRelayOnion,
        early: bool,
        tag: &RelayTag,
    ) -> Result<(), Teardown> {
        match msg {
            AtRelayOnion::Extend(extend) if early => self.on_extend(extend),
            // EXTEND outside RELAY_EARLY would let a circuit grow past the RELAY_EARLY cap.
            AtRelayOnion::Extend(_) => Err(Teardown::new(DestroyReason::Protocol)),
            AtRelayOnion::Truncate => {
                self.drop_next(DestroyReason::Requested).await;
                self.reply(cell_or_internal(
                    None,
                    RelayMsg::Truncated(DestroyReason::Requested),
                )?)
                .await
            }
            AtRelayOnion::Drop => Ok(()),
            AtRelayOnion::Begin(begin) => self.on_begin(on_stream(stream)?, begin).await,
            AtRelayOnion::Resolve(name) => self.on_resolve(on_stream(stream)?, name).await,
            AtRelayOnion::BeginDir => self.on_begin_dir(on_stream(stream)?).await,
            AtRelayOnion::Data(data) => match self.streams.on_data(on_stream(stream)?, data, tag) {
                Ok(Some(sendme)) => self.reply(sendme).await,
                Ok(None) => Ok(()),
                Err(e) => {
                    debug!("relay: stream protocol violation: {e}");
                    Err(Teardown::new(DestroyReason::Protocol))
                }
            },
            AtRelayOnion::End(reason) => {
                let id = on_stream(stream)?;
                // END for a stream we already closed is the normal end of a race.
                if let Some(task) = self.connecting.remove(&id) {
                    task.abort();
                }
                self.streams.on_end(id, reason);
                Ok(())
            }
            AtRelayOnion::Sendme(sendme) => self.streams.on_sendme(stream, &sendme).map_err(|e| {
                debug!("relay: bad SENDME: {e}");
                Teardown::new(DestroyReason::Protocol)
            }),
            // The commands that give the circuit a role: only at its bare last hop.
            AtRelayOnion::EstablishIntro(m) => {
                self.may_take_role()?;
                self.on_establish_intro(m).await
            }
            AtRelayOnion::Introduce1(m) => {
                self.may_take_role()?;
                self.on_introduce1(m).await
            }
            AtRelayOnion::EstablishRendezvous(cookie) => {
                self.may_take_role()?;
                self.on_establish_rendezvous(cookie).await
            }
            AtRelayOnion::Rendezvous1(m) => {
                self.may_take_role()?;
                self.on_rendezvous1(m).await
            }
        }
    }

    async fn end_stream(&mut self, id: StreamId, reason: EndReason) -> Result<(), Teardown> {
        self.reply(cell_or_internal(Some(id), RelayMsg::End(reason))?)
            .await
    }

    /// BEGIN: check the policy, then connect in the background.
    async fn on_begin(&mut self, id: StreamId, begin: Begin) -> Result<(), Teardown> {
        if self.streams.contains(id) {
            debug!("relay: BEGIN reuses an open stream id");
            return Err(Teardown::new(DestroyReason::Protocol));
        }
        let Some(exit) = self.shared.exit.clone() else {
            return self.end_stream(id, EndReason::ExitPolicy).await;
        };
        if self.streams.len() >= self.shared.limits.streams_per_circuit {
            return self.end_stream(id, EndReason::ResourceLimit).await;
        }
        let (target, port) = (begin.target().clone(), begin.port());
        if let Err(reason) = exit.precheck(&target, port) {
            return self.end_stream(id, reason).await;
        }
        if let Some(o) = self.shared.observer() {
            o.exit_connect(self.prev.id, &target, port);
        }
        self.streams.reserve(id);
        let tx = self.self_tx.clone();
        let task = tokio::spawn(async move {
            let t0 = std::time::Instant::now();
            let result = exit.connect(&target, port).await;
            debug!(
                us = t0.elapsed().as_micros() as u64,
                "relay: exit connect done"
            );
            let _ = tx.send(CircEvent::StreamConnected { id, result }).await;
        });
        self.connecting.insert(id, task.abort_handle());
        Ok(())
    }

    async fn on_stream_connected(
        &mut self,
        id: StreamId,
        result: Result<(tokio::net::TcpStream, std::net::SocketAddr), EndReason>,
    ) -> Result<(), Teardown> {
        self.connecting.remove(&id);
        if !self.streams.contains(id) {
            // The client gave up (END) while we were connecting.
            return Ok(());
        }
        let idle = self.shared.exit.as_ref().map(|e| e.idle_timeout());
        match result {
            Ok((socket, addr)) => {
                let io = pump::spawn(
                    socket,
                    id,
                    StreamSet::initial_stream_window(),
                    idle,
                    self.streams.circuit_permits(),
                    self.self_tx.clone(),
                    CircEvent::Stream,
                );
                self.streams.attach(id, io);
                let connected = Connected {
                    resolved: Some((addr.ip(), 60)),
                };
                self.reply(cell_or_internal(Some(id), RelayMsg::Connected(connected))?)
                    .await
            }
            Err(reason) => {
                self.streams.remove(id);
                self.end_stream(id, reason).await
            }
        }
    }

    /// BEGIN_DIR: an in-process stream to our directory service.
    async fn on_begin_dir(&mut self, id: StreamId) -> Result<(), Teardown> {
        if self.streams.contains(id) {
            return Err(Teardown::new(DestroyReason::Protocol));
        }
        let Some(service) = self.shared.dir_service() else {
            return self.end_stream(id, EndReason::NotDirectory).await;
        };
        if self.streams.len() >= self.shared.limits.streams_per_circuit {
            return self.end_stream(id, EndReason::ResourceLimit).await;
        }
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        self.streams.reserve(id);
        let io = pump::spawn(
            ours,
            id,
            StreamSet::initial_stream_window(),
            Some(super::dirserve::REQUEST_TIMEOUT),
            self.streams.circuit_permits(),
            self.self_tx.clone(),
            CircEvent::Stream,
        );
        self.streams.attach(id, io);
        let ctx = super::dirserve::DirContext {
            identity: self.shared.keys.identity(),
            circuit: Arc::clone(
                self.dir_state
                    .get_or_insert_with(|| Arc::new(super::dirserve::CircuitDirState::default())),
            ),
        };
        tokio::spawn(super::dirserve::serve(service, ctx, theirs));
        self.reply(cell_or_internal(
            Some(id),
            RelayMsg::Connected(Connected { resolved: None }),
        )?)
        .await
    }

    /// RESOLVE: look the name up (exits only) and answer RESOLVED.
    async fn on_resolve(
        &mut self,
        id: StreamId,
        name: crate::cell::Hostname,
    ) -> Result<(), Teardown> {
        let Some(exit) = self.shared.exit.clone() else {
            return self.end_stream(id, EndReason::ExitPolicy).await;
        };
        if self.streams.len() + self.resolving >= self.shared.limits.streams_per_circuit {
            return self.end_stream(id, EndReason::ResourceLimit).await;
        }
        self.resolving += 1;
        let tx = self.self_tx.clone();
        tokio::spawn(async move {
            let target = TargetAddr::Hostname(name);
            let result = super::exit::resolve_name(
                &target,
                Duration::from_secs(exit.timeouts.connect_secs.max(1)),
            )
            .await;
            let _ = tx.send(CircEvent::Resolved { id, result }).await;
        });
        Ok(())
    }

    fn on_extend(&mut self, extend: Extend) -> Result<(), Teardown> {
        if !matches!(self.next, Next::None) {
            debug!("relay: EXTEND on a circuit that already has a next hop");
            return Err(Teardown::new(DestroyReason::Protocol));
        }
        if extend.htype() != HandshakeType::Ntor1 {
            debug!("relay: EXTEND with a first-hop-only handshake");
            return Err(Teardown::new(DestroyReason::Protocol));
        }
        let target = IdentityPublic::from_bytes(extend.identity())
            .map_err(|_| Teardown::new(DestroyReason::Protocol))?;
        // Extending to ourselves or straight back to the previous hop makes a loop that
        // would let one relay see the same circuit twice.
        let previous = match &self.prev.chan.peer {
            PeerKind::Relay(vk) => Some(*vk.as_bytes()),
            PeerKind::Client => None,
        };
        if target == self.shared.keys.identity() || previous == Some(*target.as_bytes()) {
            debug!("relay: EXTEND back to this relay or to the previous hop");
            return Err(Teardown::new(DestroyReason::Protocol));
        }
        self.next = Next::Connecting {
            htype: extend.htype(),
            handshake: extend.handshake().to_vec(),
        };
        let shared = Arc::clone(&self.shared);
        let tx = self.self_tx.clone();
        let addr = extend.addr();
        tokio::spawn(async move {
            let t0 = std::time::Instant::now();
            let result = channel_to(&shared, addr, target).await;
            debug!(
                us = t0.elapsed().as_micros() as u64,
                "relay: extend channel ready"
            );
            let _ = tx.send(CircEvent::NextHopReady(result)).await;
        });
        Ok(())
    }

    async fn on_next_hop_ready(&mut self, result: NextHopResult) -> Result<(), Teardown> {
        let Next::Connecting { htype, handshake } = std::mem::replace(&mut self.next, Next::None)
        else {
            // A late answer for an extension that was truncated meanwhile.
            return Ok(());
        };
        let chan = result.map_err(Teardown::new)?;
        let slot = CircSlot {
            tx: self.self_tx.clone(),
            side: Side::Next,
            ticket: Arc::clone(&self.ticket),
        };
        let id = chan
            .circuits
            .allocate(slot)
            .map_err(|_| Teardown::new(DestroyReason::ResourceLimit))?;
        let end = CircEnd { chan, id };
        let data = BoundedBytes::new(handshake, "hdata")
            .map_err(|_| Teardown::new(DestroyReason::Protocol))?;
        let wait = self.shared.limits.stalled_send_timeout();
        let create = ChanMsg::Create(Create { htype, data });
        let sent = queue_cell(&end, create, wait, Some(self.ticket.stat())).await;
        debug!("relay: CREATE sent to the next hop");
        self.next = Next::Pending(end);
        match sent {
            Ok(()) => Ok(()),
            Err(SendFailure::Closed) => Err(Teardown::new(DestroyReason::ConnectFailed)),
            Err(f) => Err(lost(f, Side::Next, &self.shared.counters)),
        }
    }

    async fn on_created(&mut self, created: Created) -> Result<(), Teardown> {
        let Next::Pending(end) = std::mem::replace(&mut self.next, Next::None) else {
            self.next = Next::None;
            return Err(Teardown::new(DestroyReason::Protocol));
        };
        self.next = Next::Open(end);
        let extended = Extended::new(created.data.into_vec())
            .map_err(|_| Teardown::new(DestroyReason::Protocol))?;
        let r = self
            .reply(cell_or_internal(None, RelayMsg::Extended(extended))?)
            .await;
        debug!("relay: EXTENDED sent");
        r
    }

    /// Destroys everything beyond this hop (TRUNCATE).
    async fn drop_next(&mut self, reason: DestroyReason) {
        match std::mem::replace(&mut self.next, Next::None) {
            Next::Pending(end) | Next::Open(end) => {
                end.chan.circuits.remove(end.id);
                // Best effort: a stall or kill here ends only the DESTROY (a kill is seen
                // by the event loop right after).
                let wait = self.shared.limits.stalled_send_timeout();
                let destroy = ChanMsg::Destroy(reason);
                let _ = queue_cell(&end, destroy, wait, Some(self.ticket.stat())).await;
            }
            Next::None | Next::Connecting { .. } => {}
        }
    }

    async fn teardown(mut self, t: Teardown) {
        self.leave_role().await;
        self.streams.clear();
        for (_, task) in self.connecting.drain() {
            task.abort();
        }
        // Both slots go before any DESTROY is sent: from here on neither channel's reader
        // queues to this circuit, so neither waits on it while it says goodbye.
        self.prev.chan.circuits.remove(self.prev.id);
        let next = match std::mem::replace(&mut self.next, Next::None) {
            Next::Pending(end) | Next::Open(end) => {
                end.chan.circuits.remove(end.id);
                Some(end)
            }
            Next::None | Next::Connecting { .. } => None,
        };
        if t.from != Some(Side::Prev) {
            self.send_destroy(&self.prev, Side::Prev, &t).await;
        }
        if let Some(end) = next.filter(|_| t.from != Some(Side::Next)) {
            self.send_destroy(&end, Side::Next, &t).await;
        }
        self.shared
            .counters
            .circuits_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// DESTROY towards `side` at teardown: only tried (never waited for) on a side that
    /// stalled, waited for at most `stalled_send_secs` elsewhere. Best effort either way:
    /// the circuit's slots are already gone.
    async fn send_destroy(&self, end: &CircEnd, side: Side, t: &Teardown) {
        let msg = ChanMsg::Destroy(t.reason);
        if t.stalled == Some(side) {
            if let Ok(cell) = ChanCell::circuit(end.id, msg).and_then(|c| c.encode()) {
                let _ = end.chan.sender.try_send_raw(&cell);
            }
        } else {
            let _ = queue_cell(end, msg, self.shared.limits.stalled_send_timeout(), None).await;
        }
    }
}

/// The stream of a stream command. [`RelayCell`] enforces the stream rule, so `None` cannot
/// happen; it is refused like any protocol violation rather than assumed away.
fn on_stream(stream: Option<StreamId>) -> Result<StreamId, Teardown> {
    stream.ok_or_else(|| Teardown::new(DestroyReason::Protocol))
}

fn cell_or_internal(
    stream: Option<crate::cell::StreamId>,
    msg: RelayMsg,
) -> Result<RelayCell, Teardown> {
    RelayCell::new(stream, msg).map_err(|_| Teardown::new(DestroyReason::Internal))
}

/// Why a cell could not be queued on a neighbour's channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendFailure {
    /// The channel is closed (or the cell could not be encoded).
    Closed,
    /// Its queue stayed full for `stalled_send_secs`: the peer is not reading.
    Stalled,
    /// The queue-memory limit killed this circuit while it waited.
    Killed,
}

/// Queues `msg` on circuit `end`. With room in the channel's queue (the per-cell case)
/// this is one non-blocking try: no timer, no allocation. With the queue full it waits
/// for room at most `wait`, and not past a kill of the circuit (`kill`): a peer that
/// stopped reading must not hold this circuit for ever, since while it waits it drains
/// neither its own queue nor, therefore, the channel that feeds it, which other
/// clients' circuits share.
async fn queue_cell(
    end: &CircEnd,
    msg: ChanMsg,
    wait: Duration,
    kill: Option<&QueueStat>,
) -> Result<(), SendFailure> {
    let cell = ChanCell::circuit(end.id, msg)
        .and_then(|c| c.encode())
        .map_err(|_| SendFailure::Closed)?;
    match end.chan.sender.try_send_raw(&cell) {
        Ok(()) => Ok(()),
        Err(TrySendError::Closed) => Err(SendFailure::Closed),
        Err(TrySendError::Full) => bounded_wait(end.chan.sender.send_raw(cell), wait, kill)
            .await?
            .map_err(|_| SendFailure::Closed),
    }
}

/// Runs `send`, a send that cannot be tried without waiting (on a rendezvous half, see
/// [`super::splice`]): polled once first, so with room in the queue it completes without
/// a timer; otherwise bounded like [`queue_cell`]. If it is cut short the cell is lost
/// (and the layer that was added to it): the caller tears its circuit down.
async fn bounded<F: Future>(
    send: F,
    wait: Duration,
    kill: Option<&QueueStat>,
) -> Result<F::Output, SendFailure> {
    let mut send = std::pin::pin!(send);
    if let Poll::Ready(out) = std::future::poll_fn(|cx| Poll::Ready(send.as_mut().poll(cx))).await {
        return Ok(out);
    }
    bounded_wait(send, wait, kill).await
}

/// Waits for `send` (on a full queue) at most `wait`, and not past a kill of the circuit.
/// While it waits the circuit (`kill`, its stat) is marked stalled.
async fn bounded_wait<F: Future>(
    send: F,
    wait: Duration,
    kill: Option<&QueueStat>,
) -> Result<F::Output, SendFailure> {
    let killed = async {
        match kill {
            Some(stat) => stat.killed().await,
            None => std::future::pending().await,
        }
    };
    // While it is marked, a channel reader that finds this circuit's queue full kills the
    // circuit instead of waiting on it (see `reactor::handle_cell`): the stall must cost
    // this circuit, not the channel it came on.
    let _stalled = kill.map(QueueStat::stall);
    tokio::select! {
        out = tokio::time::timeout(wait, send) => out.map_err(|_| SendFailure::Stalled),
        () = killed => Err(SendFailure::Killed),
    }
}

/// How the circuit ends after a cell towards `side` could not be sent.
fn lost(f: SendFailure, side: Side, counters: &RelayCounters) -> Teardown {
    match f {
        SendFailure::Closed => Teardown::from_side(DestroyReason::ChannelClosed, side),
        SendFailure::Stalled => {
            debug!(
                ?side,
                "relay: circuit destroyed: its neighbour's channel stayed full"
            );
            RelayCounters::bump(&counters.stalled_sends);
            Teardown {
                reason: DestroyReason::Timeout,
                from: None,
                stalled: Some(side),
            }
        }
        SendFailure::Killed => {
            debug!("relay: circuit killed by the queue memory limit while sending");
            Teardown {
                reason: DestroyReason::ResourceLimit,
                from: None,
                stalled: Some(side),
            }
        }
    }
}

/// The channel to relay `target` at `addr`: reused if open, otherwise connected (proving
/// the identity) and started.
async fn channel_to(
    shared: &Arc<RelayShared>,
    addr: std::net::SocketAddr,
    target: IdentityPublic,
) -> NextHopResult {
    if let Some(chan) = shared.channel_to(&target) {
        return Ok(chan);
    }
    let lock = shared.connect_lock(&target);
    let _guard = lock.lock().await;
    // Another extension may have connected while we waited.
    if let Some(chan) = shared.channel_to(&target) {
        return Ok(chan);
    }
    let expected = target
        .to_verifying_key()
        .map_err(|_| DestroyReason::Protocol)?;
    let channel = link::connect(addr, &expected, Some(shared.keys.link_auth()), &shared.link)
        .await
        .map_err(|e| match e {
            LinkError::IdentityMismatch { .. } => DestroyReason::WrongIdentity,
            LinkError::HandshakeTimeout => DestroyReason::Timeout,
            _ => DestroyReason::ConnectFailed,
        })?;
    let chan = Arc::new(RelayChannel {
        sender: channel.sender,
        circuits: CircMux::new(channel.circ_ids),
        peer: channel.peer,
        stats: channel.stats,
        remote: addr,
    });
    let registered = shared.register_relay_channel(target, Arc::clone(&chan));
    if Arc::ptr_eq(&registered, &chan) {
        tokio::spawn(reactor::run(
            Arc::clone(shared),
            Arc::clone(&chan),
            channel.receiver,
        ));
    } else {
        // Lost a race with another extension to the same relay: use its channel.
        chan.sender.close();
    }
    Ok(registered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::queue_budget::QueueBudget;

    /// A send with room completes at the first poll; on a queue that stays full it ends
    /// after the bound, or as soon as the circuit is killed, never waiting for ever.
    #[tokio::test]
    async fn a_bounded_send_ends_on_timeout_or_kill() {
        let hour = Duration::from_secs(3600);
        let (room, mut room_rx) = mpsc::channel::<u8>(1);
        assert!(matches!(
            bounded(room.send(1), hour, None).await,
            Ok(Ok(()))
        ));
        assert_eq!(room_rx.recv().await, Some(1));

        let (full, _full_rx) = mpsc::channel::<u8>(1);
        full.try_send(0).unwrap();
        let short = Duration::from_millis(50);
        assert!(matches!(
            bounded(full.send(1), short, None).await,
            Err(SendFailure::Stalled)
        ));

        let budget = QueueBudget::new(10);
        let ticket = budget.register();
        let waiting = bounded(full.send(1), hour, Some(ticket.stat()));
        let kill = async {
            tokio::task::yield_now().await;
            // Over the relay-wide budget: the largest (only) circuit is killed.
            ticket.enqueued(100);
        };
        let (result, ()) = tokio::join!(waiting, kill);
        assert!(matches!(result, Err(SendFailure::Killed)));
        // Already killed: a wait on a full queue ends at once.
        assert!(matches!(
            bounded_wait(full.send(1), hour, Some(ticket.stat())).await,
            Err(SendFailure::Killed)
        ));
        ticket.dequeued(100);
    }
}
