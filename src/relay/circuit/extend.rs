//! Extending the circuit: EXTEND opens (or reuses) the channel to the next relay and sends
//! CREATE; CREATED is answered with EXTENDED; TRUNCATE drops everything beyond this hop.

use std::sync::Arc;

use tracing::debug;

use crate::cell::chan_msg::BoundedBytes;
use crate::cell::relay_msg::{Extend, Extended};
use crate::cell::{ChanMsg, Create, Created, DestroyReason, HandshakeType, RelayMsg};
use crate::crypto::IdentityPublic;
use crate::link::mux::CircMux;
use crate::link::{self, LinkError, PeerKind};

use super::super::events::{CircEnd, CircSlot, RelayChannel};
use super::super::events::{CircEvent, NextHopResult, Side};
use super::super::reactor;
use super::super::shared::RelayShared;
use super::forward::cell_or_internal;
use super::send::{lost, queue_cell, SendFailure, Teardown};
use super::{Circuit, Next};

impl Circuit {
    pub(super) fn on_extend(&mut self, extend: Extend) -> Result<(), Teardown> {
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

    pub(super) async fn on_next_hop_ready(
        &mut self,
        result: NextHopResult,
    ) -> Result<(), Teardown> {
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

    pub(super) async fn on_created(&mut self, created: Created) -> Result<(), Teardown> {
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
    pub(super) async fn drop_next(&mut self, reason: DestroyReason) {
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
}

/// The channel to relay `target` at `addr`: reused if open, otherwise connected (proving
/// the identity) and started.
pub(super) async fn channel_to(
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
    let auth = shared.keys.link_auth();
    let channel = link::connect(addr, &expected, Some(&auth), &shared.link)
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
