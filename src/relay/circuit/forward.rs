//! Forwarding: a forward cell loses this hop's layer and is handled here (recognised) or
//! passed on; a backward cell gains it and goes towards the client. A recognised message is
//! matched on the context the circuit's role allows.

use tracing::debug;

use crate::cell::consts::{RELAY_BODY_LEN, RELAY_TAG_LEN};
use crate::cell::onion_msg::IntroduceAckStatus;
use crate::cell::relay_contexts::{AtIntroducingClient, AtOnionRole, AtRelayOnion};
use crate::cell::{
    ChanMsg, DestroyReason, RelayBody, RelayCell, RelayCmd, RelayMessage, RelayMsg, StreamId,
};
use crate::crypto::{CellKind, RelayTag};

use super::super::events::Side;
use super::super::shared::RelayCounters;
use super::send::{queue_cell, Step, Teardown};
use super::{Circuit, Crypto, Next, Role};

/// The command byte of INTRODUCE1 (a malformed one is answered, not torn down).
const INTRODUCE1: u8 = RelayCmd::Introduce1.code();

impl Circuit {
    /// A forward cell: remove our layer, then handle it here or pass it on. Not an `async
    /// fn`, so the cell is not kept in every circuit's task (see [`queue_cell`]): the
    /// common case (decrypt, queue on the next hop's channel) finishes here, and what
    /// must wait is boxed.
    pub(super) fn forward(&mut self, body: RelayBody, early: bool) -> Step<'_> {
        let mut bytes = body.0;
        // Past a rendezvous join nothing can be extended, so RELAY_EARLY has no use there.
        if early && matches!(self.role, Role::Joined { .. }) {
            debug!("relay: RELAY_EARLY on a joined rendezvous circuit");
            RelayCounters::bump(&self.shared.counters.protocol_violations);
            return Step::done(Err(Teardown::new(DestroyReason::Protocol)));
        }
        let kind = if early {
            CellKind::RelayEarly
        } else {
            CellKind::Relay
        };
        let recognition = match &mut self.crypto {
            Crypto::Own(c) => c
                .decrypt_forward(kind, &mut bytes)
                .map_err(|_| Teardown::new(DestroyReason::Internal)),
            // Shared with a rendezvous partner: its lock is awaited.
            Crypto::Shared(_) | Crypto::Moving => {
                return Step::boxed(async move {
                    let recognition = self.decrypt_forward(kind, &mut bytes).await;
                    self.after_decrypt(bytes, early, recognition).await
                });
            }
        };
        self.after_decrypt(bytes, early, recognition)
    }

    fn after_decrypt(
        &mut self,
        bytes: [u8; RELAY_BODY_LEN],
        early: bool,
        recognition: Result<crate::crypto::Recognition, Teardown>,
    ) -> Step<'_> {
        let recognition = match recognition {
            Ok(r) => r,
            Err(t) => return Step::done(Err(t)),
        };
        if let Some(o) = self.shared.observer() {
            let recognised = matches!(recognition, crate::crypto::Recognition::Recognised { .. });
            o.forward_cell(self.prev.id, &bytes, recognised);
        }
        self.padding_forward(&recognition, &bytes);
        match recognition {
            // Boxed: the messages for this hop have the largest handling.
            crate::crypto::Recognition::Recognised { tag } => {
                Step::boxed(async move { self.on_recognised(&bytes, early, &tag).await })
            }
            crate::crypto::Recognition::NotForUs => {
                if let Role::Joined { partner } = &self.role {
                    let partner = partner.clone();
                    return Step::boxed(self.splice(partner, bytes));
                }
                let Next::Open(next) = &self.next else {
                    // Nobody beyond us could recognise it: the cell was modified.
                    debug!("relay: unrecognised cell at the last hop");
                    return Step::done(Err(Teardown::new(DestroyReason::CryptoFailure)));
                };
                let body = RelayBody(bytes);
                let msg = if early {
                    ChanMsg::RelayEarly(body)
                } else {
                    ChanMsg::Relay(body)
                };
                RelayCounters::bump(&self.shared.counters.cells_relayed);
                let wait = self.shared.limits.stalled_send_timeout();
                queue_cell(next, msg, wait, Some(self.ticket.stat()))
                    .into_step(Side::Next, &self.shared.counters)
            }
        }
    }

    /// A backward cell from the next hop: add our layer and pass it towards the client.
    /// Not an `async fn`, like [`Self::forward`].
    pub(super) fn backward(&mut self, body: RelayBody) -> Step<'_> {
        if !matches!(self.next, Next::Open(_)) {
            return Step::done(Err(Teardown::new(DestroyReason::Protocol)));
        }
        let mut bytes = body.0;
        if let Some(o) = self.shared.observer() {
            o.backward_cell(self.prev.id, &bytes);
        }
        self.relayed();
        self.padding_event_sent();
        match &mut self.crypto {
            Crypto::Own(c) => {
                if c.encrypt_backward(&mut bytes).is_err() {
                    return Step::done(Err(Teardown::new(DestroyReason::Internal)));
                }
                let wait = self.shared.limits.stalled_send_timeout();
                let msg = ChanMsg::Relay(RelayBody(bytes));
                queue_cell(&self.prev, msg, wait, Some(self.ticket.stat()))
                    .into_step(Side::Prev, &self.shared.counters)
            }
            Crypto::Shared(_) | Crypto::Moving => {
                Step::boxed(async move { self.send_backward_raw(bytes, false).await.map(|_| ()) })
            }
        }
    }

    pub(super) fn relayed(&self) {
        RelayCounters::bump(&self.shared.counters.cells_relayed);
    }

    /// Sends a relay message we originate to the client.
    pub(super) async fn reply(&mut self, cell: RelayCell) -> Result<(), Teardown> {
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
    pub(super) async fn on_recognised(
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

    /// XOFF (`on == false`) or XON from the client for one of our exit streams.
    fn on_flow_signal(&mut self, stream: Option<StreamId>, on: bool) -> Result<(), Teardown> {
        let id = on_stream(stream)?;
        if self.has_flow(id) {
            debug!("relay: XOFF/XON on a flow's id");
            return Err(Teardown::new(DestroyReason::Protocol));
        }
        self.streams.on_flow_signal(id, on).map_err(|e| {
            debug!("relay: {e}");
            Teardown::new(DestroyReason::Protocol)
        })
    }

    /// A recognised message on a circuit without an onion-service role.
    pub(super) async fn on_plain(
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
            AtRelayOnion::BeginUdp(begin) => self.on_begin_udp(on_stream(stream)?, begin).await,
            AtRelayOnion::Datagram(frag) => self.on_datagram(on_stream(stream)?, frag, tag).await,
            AtRelayOnion::Data(_) if stream.is_some_and(|id| self.has_flow(id)) => {
                debug!("relay: DATA on a flow's id");
                Err(Teardown::new(DestroyReason::Protocol))
            }
            AtRelayOnion::Data(data) => match self.streams.on_data(on_stream(stream)?, data, tag) {
                Ok(replies) => {
                    for reply in replies.into_iter().flatten() {
                        self.reply(reply).await?;
                    }
                    Ok(())
                }
                Err(e) => {
                    debug!("relay: stream protocol violation: {e}");
                    Err(Teardown::new(DestroyReason::Protocol))
                }
            },
            AtRelayOnion::Xoff => self.on_flow_signal(stream, false),
            AtRelayOnion::Xon => self.on_flow_signal(stream, true),
            AtRelayOnion::End(reason) => {
                let id = on_stream(stream)?;
                // END for a stream we already closed is the normal end of a race.
                if let Some(task) = self.connecting.remove(&id) {
                    task.abort();
                }
                if !self.end_flow(id) {
                    self.streams.on_end(id, reason);
                }
                Ok(())
            }
            AtRelayOnion::Sendme(sendme) if stream.is_none() => {
                self.on_circuit_sendme(&sendme).await
            }
            AtRelayOnion::Sendme(_) if stream.is_some_and(|id| self.has_flow(id)) => {
                debug!("relay: stream SENDME on a flow's id");
                Err(Teardown::new(DestroyReason::Protocol))
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
}

/// The stream of a stream command. [`RelayCell`] enforces the stream rule, so `None` cannot
/// happen; it is refused like any protocol violation rather than assumed away.
pub(super) fn on_stream(stream: Option<StreamId>) -> Result<StreamId, Teardown> {
    stream.ok_or_else(|| Teardown::new(DestroyReason::Protocol))
}

pub(super) fn cell_or_internal(
    stream: Option<crate::cell::StreamId>,
    msg: RelayMsg,
) -> Result<RelayCell, Teardown> {
    RelayCell::new(stream, msg).map_err(|_| Teardown::new(DestroyReason::Internal))
}
