//! A client circuit: built hop by hop (CREATE, then EXTEND per further hop), then used to
//! exchange relay messages with any hop.
//!
//! This is the low-level, single-owner object; stream multiplexing is layered on top.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use crate::proto::event_queue::{event_queue, EventReceiver, EventSender};

use crate::cell::chan_contexts::FromNextHop;
use crate::cell::chan_msg::BoundedBytes;
use crate::cell::circuit_ext::{ClientExtensions, ReplyExtensions};
use crate::cell::consts::RELAY_BODY_LEN;
use crate::cell::relay_contexts::AtClient;
use crate::cell::relay_msg::Extend;
use crate::cell::{
    ChanCell, ChanMsg, CircId, Create, DestroyReason, HandshakeType, RelayBody, RelayCell,
    RelayMessage, RelayMsg,
};
use crate::crypto::fast_handshake::fast_client_start;
use crate::crypto::{
    client_handshake_start, CellKind, CircuitKeys, ClientLayers, IdentityPublic, RelayTag, MAX_HOPS,
};

use super::channel::ClientChannel;
use super::congestion::FlowMode;
use super::error::CircuitError;
use super::event::ClientCircEvent;
use super::target::RelayTarget;

mod padding;
mod raw_events;
pub(crate) use padding::PaddingSide;

/// Cells queued from the channel reader to one circuit before the reader waits.
const CIRCUIT_QUEUE: usize = 256;
/// RELAY_EARLY cells a client may send (the relays enforce the same cap): one per
/// EXTEND, so at most 8 hops.
const MAX_RELAY_EARLY: u8 = 7;

/// A circuit owned by a client, accepting from its hops the relay commands of context `M`
/// (protocol.md §2.3, §8.6): [`AtClient`] while it is built and used for streams; an
/// onion-service circuit changes context with [`Self::accepting`].
///
/// The context is a type, not a run-time set, so each consumer's signature says what it
/// receives, matches that enum exhaustively, and cannot be handed a circuit in another one.
#[derive(Debug)]
pub struct ClientCircuit<M = AtClient> {
    slot: CircuitSlot,
    layers: ClientLayers,
    hops: Vec<IdentityPublic>,
    rx: EventReceiver<ClientCircEvent>,
    /// A sender into our own queue, for stream tasks and handles.
    self_tx: EventSender<ClientCircEvent>,
    early_left: u8,
    /// Set by `unlimited_relay_early_for_tests` (`testing` feature only): no client-side
    /// RELAY_EARLY rule.
    early_unlimited_for_tests: bool,
    /// Hops without a relay: the end-to-end hop of an onion-service rendezvous circuit.
    virtual_hops: usize,
    /// `CircuitKeys::binding` of the last relay hop (ESTABLISH_INTRO's MAC, §8.5).
    last_binding: [u8; 32],
    /// Whether each handshake asks the hop for congestion control.
    want_congestion: bool,
    /// What the last hop granted (`Fixed` once an end-to-end hop is added: that hop's
    /// handshake has no extensions).
    last_flow: FlowMode,
    /// Circuit padding with the second hop (docs/protocol.md §3.6).
    pad: PaddingSide,
    context: PhantomData<fn() -> M>,
}

/// The circuit's id on its channel: released when the circuit closes, and, if it is
/// dropped while still open, closed with a DESTROY. Apart from the context type so that
/// [`ClientCircuit::accepting`] can move the circuit's fields into a new one.
#[derive(Debug)]
struct CircuitSlot {
    chan: Arc<ClientChannel>,
    id: CircId,
    closed: bool,
}

impl ClientCircuit<AtClient> {
    /// Creates a one-hop circuit with the `allium-fast-1` handshake: for a first hop whose
    /// onion key we do not know (a directory authority before we have a consensus). The
    /// channel's authentication of the relay's identity is what protects it.
    pub async fn create_fast(
        chan: &Arc<ClientChannel>,
        identity: IdentityPublic,
        timeout: Duration,
    ) -> Result<Self, CircuitError> {
        let mut circ = Self::allocate(chan)?;
        let (state, msg) = fast_client_start(&mut rand::rng());
        let reply = circ
            .exchange_create(HandshakeType::Fast1, msg, timeout)
            .await?;
        let keys = match state.finish(&reply) {
            Ok(v) => v,
            Err(e) => return Err(circ.fail(e.into()).await),
        };
        circ.push_hop(&keys, identity)?;
        Ok(circ)
    }

    /// Sends CREATE carrying `msg` and returns the handshake reply of the CREATED that
    /// answers it; anything else fails (and destroys) the circuit.
    async fn exchange_create(
        &mut self,
        htype: HandshakeType,
        msg: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, CircuitError> {
        let data = BoundedBytes::new(msg, "hdata")?;
        self.send_chan(ChanMsg::Create(Create { htype, data }))
            .await?;
        match self.next_event(timeout).await? {
            FromNextHop::Created(c) => Ok(c.data.into_vec()),
            FromNextHop::Relay(_) | FromNextHop::Destroy(_) => {
                Err(self.fail(CircuitError::Protocol("expected CREATED")).await)
            }
        }
    }

    /// Adds the layer of a hop whose handshake finished with `keys`.
    fn push_hop(
        &mut self,
        keys: &CircuitKeys,
        identity: IdentityPublic,
    ) -> Result<(), CircuitError> {
        self.layers.push_hop(keys)?;
        self.last_binding = keys.binding();
        self.hops.push(identity);
        Ok(())
    }

    fn allocate(chan: &Arc<ClientChannel>) -> Result<Self, CircuitError> {
        let (tx, rx) = event_queue(CIRCUIT_QUEUE);
        let id = chan.circuits.allocate(tx.clone())?;
        Ok(ClientCircuit {
            slot: CircuitSlot {
                chan: Arc::clone(chan),
                id,
                closed: false,
            },
            layers: ClientLayers::new(),
            hops: Vec::new(),
            rx,
            self_tx: tx,
            early_left: MAX_RELAY_EARLY,
            early_unlimited_for_tests: false,
            virtual_hops: 0,
            last_binding: [0; 32],
            want_congestion: true,
            last_flow: FlowMode::Fixed,
            pad: PaddingSide::default(),
            context: PhantomData,
        })
    }

    /// Creates a one-hop circuit to the relay at the other end of `chan`, asking every hop
    /// for congestion control.
    pub async fn create(
        chan: &Arc<ClientChannel>,
        first: &RelayTarget,
        timeout: Duration,
    ) -> Result<Self, CircuitError> {
        Self::create_with(chan, first, timeout, true).await
    }

    /// [`Self::create`], asking each hop for congestion control only if `congestion`.
    pub async fn create_with(
        chan: &Arc<ClientChannel>,
        first: &RelayTarget,
        timeout: Duration,
        congestion: bool,
    ) -> Result<Self, CircuitError> {
        let mut circ = Self::allocate(chan)?;
        circ.want_congestion = congestion;
        let ext = circ.client_extensions()?;
        let (state, msg) =
            client_handshake_start(&mut rand::rng(), &first.identity, &first.onion, &ext)?;
        let reply = circ
            .exchange_create(HandshakeType::Ntor1, msg, timeout)
            .await?;
        let (keys, ext) = match state.finish(&reply) {
            Ok(v) => v,
            Err(e) => return Err(circ.fail(e.into()).await),
        };
        if let Err(e) = circ.on_reply_extensions(&ext) {
            return Err(circ.fail(e).await);
        }
        circ.push_hop(&keys, first.identity)?;
        Ok(circ)
    }

    /// The extensions for the next hop's handshake: the padding machine goes to the hop
    /// at [`padding::PADDING_HOP`] only.
    fn client_extensions(&self) -> Result<Vec<u8>, CircuitError> {
        ClientExtensions {
            congestion_control: self.want_congestion,
            padding: self.pad.hop_machine_for(self.hops.len()),
        }
        .encode()
        .map_err(CircuitError::from)
    }

    /// Takes in a hop's reply extensions: a grant not asked for, or a malformed one, fails
    /// the circuit.
    fn on_reply_extensions(&mut self, ext: &[u8]) -> Result<(), CircuitError> {
        let reply = ReplyExtensions::parse(ext)
            .map_err(|_| CircuitError::Protocol("malformed handshake reply extensions"))?;
        if reply.congestion_control.is_some() && !self.want_congestion {
            return Err(CircuitError::Protocol(
                "congestion control granted without being asked for",
            ));
        }
        let asked = self.pad.hop_machine_for(self.hops.len()).is_some();
        self.pad.on_reply(asked, reply.padding)?;
        self.last_flow = FlowMode::from_grant(reply.congestion_control);
        Ok(())
    }

    /// Extends the circuit by one hop through its current last hop.
    pub async fn extend(
        &mut self,
        next: &RelayTarget,
        timeout: Duration,
    ) -> Result<(), CircuitError> {
        if self.hops.len() >= MAX_HOPS || self.virtual_hops > 0 {
            return Err(CircuitError::Protocol(
                "circuit already has the maximum length",
            ));
        }
        let ext = self.client_extensions()?;
        let (state, msg) =
            client_handshake_start(&mut rand::rng(), &next.identity, &next.onion, &ext)?;
        let extend = Extend::new(
            next.addr,
            *next.identity.as_bytes(),
            HandshakeType::Ntor1,
            msg,
        )?;
        let last = self.hops.len() - 1;
        self.send_inner(last, RelayCell::new(None, RelayMsg::Extend(extend))?, true)
            .await?;
        // Padding from an earlier hop (docs/protocol.md §3.6) may come first.
        let next_not_padding = async {
            loop {
                let (hop, cell, tag) = self.recv().await?;
                if !matches!(cell.msg(), AtClient::Drop) {
                    return Ok::<_, CircuitError>((hop, cell, tag));
                }
            }
        };
        let (hop, cell, _tag) = tokio::time::timeout(timeout, next_not_padding)
            .await
            .map_err(|_| CircuitError::Timeout)??;
        let extended = match cell.msg() {
            AtClient::Extended(extended) => extended,
            AtClient::Connected(_)
            | AtClient::Data(_)
            | AtClient::End(_)
            | AtClient::Sendme(_)
            | AtClient::Truncated(_)
            | AtClient::Resolved(_)
            | AtClient::Datagram(_)
            | AtClient::Xoff
            | AtClient::Xon
            | AtClient::Drop => {
                return Err(self.fail(CircuitError::Protocol("expected EXTENDED")).await)
            }
        };
        if hop != last {
            return Err(self
                .fail(CircuitError::Protocol("EXTENDED from the wrong hop"))
                .await);
        }
        let (keys, ext) = match state.finish(extended.handshake()) {
            Ok(v) => v,
            Err(e) => return Err(self.fail(e.into()).await),
        };
        if let Err(e) = self.on_reply_extensions(&ext) {
            return Err(self.fail(e).await);
        }
        self.push_hop(&keys, next.identity)
    }
}

impl<M: RelayMessage> ClientCircuit<M> {
    /// The same circuit, accepting from its hops only the commands of context `N` from
    /// now on: onion-service circuits use the contexts of protocol.md §8.6, and a
    /// service's rendezvous circuit, whose far end is a client, [`crate::cell::relay_contexts::AtRelay`].
    pub fn accepting<N: RelayMessage>(self) -> ClientCircuit<N> {
        let ClientCircuit {
            slot,
            layers,
            hops,
            rx,
            self_tx,
            early_left,
            early_unlimited_for_tests,
            virtual_hops,
            last_binding,
            want_congestion,
            last_flow,
            pad,
            context: _,
        } = self;
        ClientCircuit {
            slot,
            layers,
            hops,
            rx,
            self_tx,
            early_left,
            early_unlimited_for_tests,
            virtual_hops,
            last_binding,
            want_congestion,
            last_flow,
            pad,
            context: PhantomData,
        }
    }

    /// How the circuit's windows work with its last hop (congestion control if that hop
    /// granted it).
    pub fn flow_mode(&self) -> FlowMode {
        self.last_flow
    }

    /// Number of hops (including an onion service's end-to-end hop once added).
    pub fn len(&self) -> usize {
        self.hops.len() + self.virtual_hops
    }

    /// The binding value (`CircuitKeys::binding`) of the keys shared with the last relay
    /// hop: only that relay and this client know it (ESTABLISH_INTRO's MAC, §8.5).
    pub fn last_hop_binding(&self) -> [u8; 32] {
        self.last_binding
    }

    /// The relays of the circuit, first hop first (no entry for an end-to-end hop).
    pub fn relays(&self) -> &[IdentityPublic] {
        &self.hops
    }

    /// Adds the end-to-end hop of an onion-service rendezvous circuit (protocol.md §8.7):
    /// as the client (`as_service == false`) or as the service (directions swapped, see
    /// [`ClientLayers::push_service_hop`]). The hop then behaves as the circuit's last hop.
    pub fn push_end_to_end_hop(
        &mut self,
        keys: &crate::crypto::CircuitKeys,
        as_service: bool,
    ) -> Result<(), CircuitError> {
        if as_service {
            self.layers.push_service_hop(keys)?;
        } else {
            self.layers.push_end_to_end_hop(keys)?;
        }
        self.virtual_hops += 1;
        self.last_flow = FlowMode::Fixed;
        Ok(())
    }

    /// Sends `msg` (stream id 0) to the last hop.
    pub async fn send_to_last(&mut self, msg: RelayMsg) -> Result<(), CircuitError> {
        let last = self.len().saturating_sub(1);
        self.send(last, RelayCell::new(None, msg)?)
            .await
            .map(|_| ())
    }

    /// Receives the next relay message within `timeout` (the circuit is closed on timeout).
    pub async fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<(usize, RelayCell<M>, RelayTag), CircuitError> {
        match tokio::time::timeout(timeout, self.recv()).await {
            Ok(r) => r,
            Err(_) => Err(self.fail(CircuitError::Timeout).await),
        }
    }

    /// Whether the circuit has no hop (never true for a built circuit).
    pub fn is_empty(&self) -> bool {
        self.hops.is_empty()
    }

    /// The circuit id on the first hop's channel.
    pub fn id(&self) -> CircId {
        self.slot.id
    }

    /// The channel to the first hop.
    pub fn channel(&self) -> &Arc<ClientChannel> {
        &self.slot.chan
    }

    /// Sends a relay message to hop `hop` (0 = first). Returns the tag that hop will see,
    /// which an authenticated SENDME from it echoes.
    pub async fn send(&mut self, hop: usize, cell: RelayCell) -> Result<RelayTag, CircuitError> {
        self.send_inner(hop, cell, false).await
    }

    /// Sends a relay message in a RELAY_EARLY cell (as EXTEND must be). A circuit may send
    /// at most 7; relays destroy a circuit that sends more.
    pub async fn send_early(
        &mut self,
        hop: usize,
        cell: RelayCell,
    ) -> Result<RelayTag, CircuitError> {
        self.send_inner(hop, cell, true).await
    }

    /// Lifts the client-side RELAY_EARLY budget, so tests can check that relays enforce
    /// theirs. Only with the `testing` feature.
    #[cfg(feature = "testing")]
    pub fn unlimited_relay_early_for_tests(&mut self) {
        self.early_unlimited_for_tests = true;
    }

    async fn send_inner(
        &mut self,
        hop: usize,
        cell: RelayCell,
        early: bool,
    ) -> Result<RelayTag, CircuitError> {
        let padding = matches!(cell.msg(), RelayMsg::Drop);
        let mut body: [u8; RELAY_BODY_LEN] = cell.encode()?;
        // The budget is for building: spent only on a circuit's first cells, so once
        // anything else has been sent no RELAY_EARLY follows (tor-spec's rule). Checked
        // first, spent only once the cell is encrypted.
        let checked = !self.early_unlimited_for_tests;
        if checked && early && self.early_left == 0 {
            return Err(CircuitError::Protocol("RELAY_EARLY budget exhausted"));
        }
        let kind = if early {
            CellKind::RelayEarly
        } else {
            CellKind::Relay
        };
        let tag = self.layers.encrypt_forward(&mut body, hop, kind)?;
        if checked {
            self.early_left = if early {
                self.early_left.saturating_sub(1)
            } else {
                0
            };
        }
        let msg = if early {
            ChanMsg::RelayEarly(RelayBody(body))
        } else {
            ChanMsg::Relay(RelayBody(body))
        };
        self.send_chan(msg).await?;
        if !padding {
            self.pad.on_event(super::padding::PaddingEvent::Sent);
        }
        Ok(tag)
    }

    /// Receives the next relay message: which hop sent it, the message, and its tag.
    pub async fn recv(&mut self) -> Result<(usize, RelayCell<M>, RelayTag), CircuitError> {
        let body = match self.next_event_forever().await? {
            FromNextHop::Relay(body) => body,
            FromNextHop::Created(_) | FromNextHop::Destroy(_) => {
                return Err(self
                    .fail(CircuitError::Protocol("unexpected cell on an open circuit"))
                    .await)
            }
        };
        self.open_body(body).await
    }

    /// A sender into this circuit's event queue (stream tasks and handles use it).
    pub(crate) fn event_sender(&self) -> EventSender<ClientCircEvent> {
        self.self_tx.clone()
    }

    /// The next raw event, for the circuit task; `None` once closed.
    pub(crate) async fn next_raw_event(&mut self) -> Option<ClientCircEvent> {
        if self.slot.closed {
            return None;
        }
        self.rx.recv().await
    }

    /// Marks the circuit closed by the network (no DESTROY will be sent).
    pub(crate) fn mark_closed(&mut self) {
        if !self.slot.closed {
            self.slot.closed = true;
            self.slot.chan.circuits.remove(self.slot.id);
        }
    }

    /// Closes the circuit, telling the network if it is still open.
    pub(crate) async fn shutdown(&mut self) {
        self.close(DestroyReason::Finished).await;
    }

    /// Removes the layers of a RELAY body and parses the message inside.
    pub(crate) async fn open_body(
        &mut self,
        body: RelayBody,
    ) -> Result<(usize, RelayCell<M>, RelayTag), CircuitError> {
        let mut bytes = body.0;
        let (hop, tag) = match self.layers.decrypt_backward(&mut bytes) {
            Ok(v) => v,
            Err(e) => return Err(self.fail(e.into()).await),
        };
        match RelayCell::<M>::parse_typed(&bytes) {
            Ok(cell) => {
                self.pad.on_received(hop, cell.msg().cmd());
                Ok((hop, cell, tag))
            }
            Err(e) => Err(self.fail(e.into()).await),
        }
    }

    /// Tears the circuit down (DESTROY to the first hop, which propagates it).
    pub async fn destroy(mut self) {
        self.close(DestroyReason::Requested).await;
    }

    async fn send_chan(&mut self, msg: ChanMsg) -> Result<(), CircuitError> {
        if self.slot.closed {
            return Err(CircuitError::ChannelClosed);
        }
        let cell = ChanCell::circuit(self.slot.id, msg)?;
        self.slot.chan.sender.send(&cell).await.map_err(|e| {
            self.slot.closed = true;
            CircuitError::from(e)
        })
    }

    /// Closes the circuit after an error and returns the error.
    async fn fail(&mut self, err: CircuitError) -> CircuitError {
        let reason = match err {
            CircuitError::Timeout => DestroyReason::Timeout,
            CircuitError::Crypto(_) => DestroyReason::CryptoFailure,
            _ => DestroyReason::Protocol,
        };
        self.close(reason).await;
        err
    }

    async fn close(&mut self, reason: DestroyReason) {
        if self.slot.closed {
            return;
        }
        self.slot.closed = true;
        self.slot.chan.circuits.remove(self.slot.id);
        if let Ok(cell) = ChanCell::circuit(self.slot.id, ChanMsg::Destroy(reason)) {
            let _ = self.slot.chan.sender.send(&cell).await;
        }
    }
}

impl Drop for CircuitSlot {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        self.chan.circuits.remove(self.id);
        // Best effort: tell the network, if a runtime is still around to do it.
        if let (Ok(handle), Ok(cell)) = (
            tokio::runtime::Handle::try_current(),
            ChanCell::circuit(self.id, ChanMsg::Destroy(DestroyReason::Finished)),
        ) {
            let sender = self.chan.sender.clone();
            handle.spawn(async move {
                let _ = sender.send(&cell).await;
            });
        }
    }
}
