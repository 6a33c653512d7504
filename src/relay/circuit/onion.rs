//! The onion-service roles of a circuit at its last hop (docs/protocol.md §8.5, §8.6,
//! §8.9): introduction point and rendezvous point, and the crypto plumbing a rendezvous
//! needs (a circuit's crypto becomes shared with its partner, see [`super::super::splice`]).

use std::sync::Arc;
use std::time::Instant;

use tracing::debug;

use crate::cell::consts::RELAY_BODY_LEN;
use crate::cell::onion_msg::{
    EstablishIntro, Introduce, IntroduceAckStatus, OnionMsg, Rendezvous1, REND_COOKIE_LEN,
};
use crate::cell::{DestroyReason, RelayMsg};
use crate::crypto::{CellKind, Recognition, RelayTag};
use crate::onion::intro::verify_establish_intro;

use super::super::events::CircEvent;
use super::super::events::Side;
use super::super::events::{BackwardHalf, SharedBackward};
use super::super::onion_points::{CircRef, IntroReg, RegisterError, RendReg};
use super::super::rate_limit::TokenBucket;
use super::super::shared::RelayCounters;
use super::super::splice::{notify, SpliceError, NOTICE_TIMEOUT};
use super::forward::cell_or_internal;
use super::send::{bounded, lost, queue_cell, SendFailure, Teardown};
use super::{Circuit, Crypto, Next, Role};
use crate::cell::ChanMsg;
use crate::cell::RelayBody;

/// [`Circuit::send_backward`] on a circuit whose crypto is shared with a partner.
async fn send_backward_shared(
    h: SharedBackward,
    body: [u8; RELAY_BODY_LEN],
    originate: bool,
    wait: std::time::Duration,
    kill: Option<&super::super::queue_budget::QueueStat>,
    counters: &super::super::shared::RelayCounters,
) -> Result<RelayTag, Teardown> {
    let mut half = h.lock().await;
    // A cut-short send leaves the half a layer ahead of the client: the teardown that
    // follows closes it.
    match bounded(half.send_backward(body, originate), wait, kill).await {
        Ok(Ok(tag)) => Ok(tag),
        Ok(Err(SpliceError::Closed)) => Err(lost(SendFailure::Closed, Side::Prev, counters)),
        Ok(Err(SpliceError::Crypto)) => Err(internal()),
        Err(f) => Err(lost(f, Side::Prev, counters)),
    }
}

fn internal() -> Teardown {
    Teardown::new(DestroyReason::Internal)
}

impl Circuit {
    /// Removes this hop's layer from a forward cell.
    pub(super) async fn decrypt_forward(
        &mut self,
        kind: CellKind,
        bytes: &mut [u8; RELAY_BODY_LEN],
    ) -> Result<Recognition, Teardown> {
        match &mut self.crypto {
            Crypto::Own(c) => c.decrypt_forward(kind, bytes).map_err(|_| internal()),
            Crypto::Shared(h) => h
                .lock()
                .await
                .decrypt_forward(kind, bytes)
                .map_err(|_| internal()),
            Crypto::Moving => Err(internal()),
        }
    }

    /// Adds this hop's backward layer (`originate`: as a message from this hop) and sends
    /// the cell to the previous hop. Returns the cell's tag. Traffic, as the padding
    /// machine counts it.
    pub(super) async fn send_backward(
        &mut self,
        body: [u8; RELAY_BODY_LEN],
        originate: bool,
    ) -> Result<RelayTag, Teardown> {
        self.padding_event(crate::proto::padding::PaddingEvent::Sent);
        self.send_backward_raw(body, originate).await
    }

    /// [`Self::send_backward`] without telling the padding machine (its own cells).
    pub(super) async fn send_backward_raw(
        &mut self,
        mut body: [u8; RELAY_BODY_LEN],
        originate: bool,
    ) -> Result<RelayTag, Teardown> {
        let wait = self.shared.limits.stalled_send_timeout();
        let kill = Some(self.ticket.stat().as_ref());
        let counters = &self.shared.counters;
        match &mut self.crypto {
            Crypto::Own(c) => {
                let tag = if originate {
                    c.originate_backward(&mut body)
                } else {
                    c.encrypt_backward(&mut body)
                }
                .map_err(|_| internal())?;
                let msg = ChanMsg::Relay(RelayBody(body));
                queue_cell(&self.prev, msg, wait, kill)
                    .await
                    .map_err(|f| lost(f, Side::Prev, counters))?;
                Ok(tag)
            }
            Crypto::Shared(h) => {
                let h = Arc::clone(h);
                // Boxed: rare (rendezvous), and its state would otherwise sit in every
                // circuit's task.
                Box::pin(send_backward_shared(
                    h, body, originate, wait, kill, counters,
                ))
                .await
            }
            Crypto::Moving => Err(internal()),
        }
    }

    /// Makes this circuit's crypto shareable with a rendezvous partner (`partner`: the
    /// partner's task, told when this circuit closes).
    fn share_crypto(
        &mut self,
        partner: Option<crate::proto::event_queue::EventSender<CircEvent>>,
    ) -> Result<SharedBackward, Teardown> {
        match std::mem::replace(&mut self.crypto, Crypto::Moving) {
            Crypto::Own(crypto) => {
                let half = Arc::new(tokio::sync::Mutex::new(BackwardHalf {
                    crypto,
                    prev: self.prev.clone(),
                    closed: false,
                    partner,
                }));
                self.crypto = Crypto::Shared(Arc::clone(&half));
                Ok(half)
            }
            // A role is taken once, so a circuit is never shared twice.
            Crypto::Shared(h) => {
                self.crypto = Crypto::Shared(h);
                Err(internal())
            }
            Crypto::Moving => Err(internal()),
        }
    }

    /// A forward cell not for this hop on a joined circuit: it carries the end-to-end
    /// layer, so it goes backward on the partner's circuit.
    pub(super) async fn splice(
        &mut self,
        partner: SharedBackward,
        bytes: [u8; RELAY_BODY_LEN],
    ) -> Result<(), Teardown> {
        let wait = self.shared.limits.stalled_send_timeout();
        let mut half = partner.lock().await;
        // Bounded like any send: the partner's previous hop may have stopped reading. A
        // cut-short send leaves the partner's half a layer ahead of its client (whose
        // next cell then fails verification there); our teardown tells the partner.
        match bounded(
            half.send_backward(bytes, false),
            wait,
            Some(self.ticket.stat()),
        )
        .await
        {
            Ok(Ok(_)) => {
                self.relayed();
                Ok(())
            }
            Ok(Err(SpliceError::Closed)) => Err(Teardown::new(DestroyReason::Destroyed)),
            Ok(Err(SpliceError::Crypto)) => Err(internal()),
            Err(SendFailure::Stalled) => {
                debug!("relay: rendezvous partner's channel stayed full");
                RelayCounters::bump(&self.shared.counters.stalled_sends);
                Err(Teardown::new(DestroyReason::Destroyed))
            }
            Err(SendFailure::Killed) => Err(Teardown::new(DestroyReason::ResourceLimit)),
            Err(SendFailure::Closed) => Err(Teardown::new(DestroyReason::Destroyed)),
        }
    }

    fn circ_ref(&self) -> CircRef {
        CircRef {
            serial: self.serial,
            tx: self.self_tx.clone(),
            circ: self.prev.id,
            peer: self.prev.chan.remote,
        }
    }

    /// Whether an INTRODUCE1 (even a malformed one) is answered on this circuit.
    pub(super) fn may_introduce(&self) -> bool {
        matches!(self.role, Role::Plain | Role::IntroClient) && self.is_bare_last_hop()
    }

    /// The last hop, with no streams: the only place an onion role may be taken.
    fn is_bare_last_hop(&self) -> bool {
        matches!(self.next, Next::None)
            && self.streams.is_empty()
            && self.connecting.is_empty()
            && self.resolving == 0
    }

    /// A plain circuit may take an onion-service role only at its bare last hop (§8.6);
    /// anything else is refused like a command its role does not allow.
    pub(super) fn may_take_role(&self) -> Result<(), Teardown> {
        if self.is_bare_last_hop() {
            Ok(())
        } else {
            Err(self.role_violation())
        }
    }

    /// A command the circuit's onion-service role does not allow: counted, then teardown.
    pub(super) fn role_violation(&self) -> Teardown {
        debug!("relay: command not allowed on this circuit's onion-service role");
        RelayCounters::bump(&self.shared.counters.protocol_violations);
        Teardown::new(DestroyReason::Protocol)
    }

    async fn send_onion(&mut self, msg: OnionMsg) -> Result<(), Teardown> {
        self.reply(cell_or_internal(None, RelayMsg::Onion(msg))?)
            .await
    }

    /// ESTABLISH_INTRO: key, MAC against this circuit's binding (constant time), signature;
    /// then register, with the rate limit asked for capped by ours.
    pub(super) async fn on_establish_intro(&mut self, msg: EstablishIntro) -> Result<(), Teardown> {
        let key = verify_establish_intro(&msg, &self.binding).map_err(|e| {
            debug!("relay: ESTABLISH_INTRO refused: {e}");
            RelayCounters::bump(&self.shared.counters.protocol_violations);
            Teardown::new(DestroyReason::Protocol)
        })?;
        let limits = &self.shared.limits;
        let (rate, burst) = match msg.dos {
            Some(d) => (
                d.rate_per_sec.min(limits.intro_rate_per_second),
                d.burst.min(limits.intro_burst),
            ),
            None => (limits.intro_rate_per_second, limits.intro_burst),
        };
        let auth_key = *key.as_bytes();
        let reg = IntroReg {
            circ: self.circ_ref(),
            bucket: Arc::new(TokenBucket::new(rate, burst)),
        };
        self.shared
            .onion
            .register_intro(auth_key, reg, limits)
            .map_err(|_| {
                debug!("relay: introduction point table full");
                Teardown::new(DestroyReason::ResourceLimit)
            })?;
        self.role = Role::Intro { auth_key };
        if let Some(o) = self.shared.observer() {
            o.intro_established(self.prev.id, self.prev.chan.remote);
        }
        self.send_onion(OnionMsg::IntroEstablished).await
    }

    /// INTRODUCE1 from a client: forwarded unchanged as INTRODUCE2 to the service's
    /// circuit, answered with INTRODUCE_ACK.
    pub(super) async fn on_introduce1(&mut self, intro: Introduce) -> Result<(), Teardown> {
        self.role = Role::IntroClient;
        let key = *intro.auth_key();
        let status = match self.shared.onion.intro(&key) {
            None => IntroduceAckStatus::UnknownService,
            Some(reg) if !reg.bucket.try_take() => IntroduceAckStatus::RateLimited,
            Some(reg) => match reg.circ.tx.try_send(CircEvent::Introduce2(intro)) {
                Ok(()) => {
                    RelayCounters::bump(&self.shared.counters.introductions_forwarded);
                    if let Some(o) = self.shared.observer() {
                        o.introduction_forwarded(
                            self.prev.id,
                            self.prev.chan.remote,
                            reg.circ.circ,
                            reg.circ.peer,
                        );
                    }
                    IntroduceAckStatus::Success
                }
                // The service's circuit is backed up: as good as rate limited.
                Err(crate::proto::event_queue::TrySendError::Full(_)) => {
                    IntroduceAckStatus::RateLimited
                }
                Err(crate::proto::event_queue::TrySendError::Closed(_)) => {
                    self.shared.onion.unregister_intro(&key, reg.circ.serial);
                    IntroduceAckStatus::UnknownService
                }
            },
        };
        self.introduce_ack(status).await
    }

    pub(super) async fn introduce_ack(
        &mut self,
        status: IntroduceAckStatus,
    ) -> Result<(), Teardown> {
        self.send_onion(OnionMsg::IntroduceAck(status)).await
    }

    /// An introduction forwarded by a client's circuit: INTRODUCE2 to the service.
    pub(super) async fn on_introduce2(&mut self, intro: Introduce) -> Result<(), Teardown> {
        if !matches!(self.role, Role::Intro { .. }) {
            return Ok(());
        }
        self.send_onion(OnionMsg::Introduce2(intro)).await
    }

    /// ESTABLISH_RENDEZVOUS: register the cookie for this circuit, answer
    /// RENDEZVOUS_ESTABLISHED. The circuit's half is locked throughout, so a RENDEZVOUS1
    /// racing in cannot send RENDEZVOUS2 before our answer.
    pub(super) async fn on_establish_rendezvous(
        &mut self,
        cookie: [u8; REND_COOKIE_LEN],
    ) -> Result<(), Teardown> {
        let half = self.share_crypto(None)?;
        let mut guard = half.lock().await;
        let reg = RendReg {
            circ: self.circ_ref(),
            backward: Arc::clone(&half),
            since: Instant::now(),
        };
        match self
            .shared
            .onion
            .register_rend(cookie, reg, &self.shared.limits)
        {
            Ok(()) => {}
            Err(RegisterError::Duplicate) => {
                debug!("relay: ESTABLISH_RENDEZVOUS with a cookie already registered");
                RelayCounters::bump(&self.shared.counters.protocol_violations);
                return Err(Teardown::new(DestroyReason::Protocol));
            }
            Err(RegisterError::Full) => return Err(Teardown::new(DestroyReason::ResourceLimit)),
        }
        self.role = Role::RendWaiting { cookie };
        if let Some(o) = self.shared.observer() {
            o.rendezvous_established(self.prev.id, self.prev.chan.remote);
        }
        let body = cell_or_internal(None, RelayMsg::Onion(OnionMsg::RendezvousEstablished))?
            .encode()
            .map_err(|_| internal())?;
        self.relayed();
        let wait = self.shared.limits.stalled_send_timeout();
        let kill = Some(self.ticket.stat().as_ref());
        match bounded(guard.send_backward(body, true), wait, kill).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(SpliceError::Closed)) => Err(Teardown::from_side(
                DestroyReason::ChannelClosed,
                Side::Prev,
            )),
            // Not the neighbour's doing: it gets DESTROY like at the other call sites.
            Ok(Err(SpliceError::Crypto)) => Err(internal()),
            Err(f) => Err(lost(f, Side::Prev, &self.shared.counters)),
        }
    }

    /// RENDEZVOUS1 from the service: take the cookie, send RENDEZVOUS2 on the client's
    /// circuit, and join the two.
    pub(super) async fn on_rendezvous1(&mut self, msg: Rendezvous1) -> Result<(), Teardown> {
        let Some(reg) = self.shared.onion.take_rend(&msg.cookie) else {
            debug!("relay: RENDEZVOUS1 with an unknown cookie");
            return Err(Teardown::new(DestroyReason::Protocol));
        };
        let mine = self.share_crypto(Some(reg.circ.tx.clone()))?;
        // The client's circuit learns of the join before the client can learn of it
        // (RENDEZVOUS2 below), so it splices every cell the client sends in response.
        // Neither step waits more than NOTICE_TIMEOUT on the client's circuit: a stalled
        // one fails the rendezvous instead of stalling this circuit. On failure our half
        // closes in the teardown, which tells the client's circuit (its cookie is gone).
        let joined = CircEvent::Joined(Arc::clone(&mine));
        if !notify(&reg.circ.tx, joined, NOTICE_TIMEOUT).await {
            debug!("relay: rendezvous circuit gone or stalled; join abandoned");
            return Err(Teardown::new(DestroyReason::Destroyed));
        }
        let body = cell_or_internal(None, RelayMsg::Onion(OnionMsg::Rendezvous2(msg.handshake)))?
            .encode()
            .map_err(|_| internal())?;
        let me = self.self_tx.clone();
        let sent = tokio::time::timeout(NOTICE_TIMEOUT, async {
            let mut theirs = reg.backward.lock().await;
            theirs.partner = Some(me);
            theirs.send_backward(body, true).await
        })
        .await;
        if !matches!(sent, Ok(Ok(_))) {
            debug!("relay: RENDEZVOUS2 could not be sent; join abandoned");
            return Err(Teardown::new(DestroyReason::Destroyed));
        }
        self.relayed();
        self.role = Role::Joined {
            partner: Arc::clone(&reg.backward),
        };
        RelayCounters::bump(&self.shared.counters.rendezvous_joined);
        if let Some(o) = self.shared.observer() {
            o.rendezvous_joined(
                reg.circ.circ,
                reg.circ.peer,
                self.prev.id,
                self.prev.chan.remote,
            );
        }
        Ok(())
    }

    /// The service's circuit joined this waiting circuit.
    pub(super) fn on_joined(&mut self, partner: SharedBackward) -> Result<(), Teardown> {
        if !matches!(self.role, Role::RendWaiting { .. }) {
            return Err(internal());
        }
        // The cookie was taken by the partner; nothing to unregister any more.
        self.role = Role::Joined { partner };
        Ok(())
    }

    /// Unregisters whatever the circuit registered and closes its shared half (telling
    /// the partner), before the circuit's DESTROY is sent.
    pub(super) async fn leave_role(&mut self) {
        match std::mem::replace(&mut self.role, Role::Plain) {
            Role::Intro { auth_key } => self.shared.onion.unregister_intro(&auth_key, self.serial),
            Role::RendWaiting { cookie } => self.shared.onion.unregister_rend(&cookie, self.serial),
            Role::Plain | Role::IntroClient | Role::Joined { .. } => {}
        }
        if let Crypto::Shared(h) = &self.crypto {
            h.lock().await.close();
        }
    }
}
