//! The reader side of one relay channel: parses every inbound cell against the commands
//! legal on it and hands it to the circuit it belongs to.
//!
//! One task per channel, so channels are read in parallel on all cores. The task owns no
//! circuit state: circuits live in their own tasks ([`super::circuit`]), reached through
//! bounded queues. When a circuit's queue is full this task waits, which stops reading the
//! socket: backpressure reaches the peer instead of memory growing. It does not wait on a
//! circuit that is itself stuck sending to a neighbour that stopped reading: that circuit
//! is destroyed instead, so the channel (shared with other clients) keeps flowing.

use std::sync::Arc;

use crate::proto::event_queue::TrySendError;
use tracing::debug;

use crate::cell::chan_contexts::{FromNextHop, FromPreviousHop, NewCircuit, OnRelayChannel};
use crate::cell::consts::CELL_LEN;
use crate::cell::{CellHeader, ChanCell, ChanCmd, ChanMsg, CircId, Create, DestroyReason};
use crate::link::{ChannelReceiver, PaddingState, PeerKind};

use super::circuit;
use super::events::{CircEvent, Side};
use super::events::{CircSlot, RelayChannel};
use super::shared::{RelayCounters, RelayShared};

/// Reads `chan` until it closes, then tells every circuit on it.
pub(crate) async fn run(
    shared: Arc<RelayShared>,
    chan: Arc<RelayChannel>,
    mut receiver: ChannelReceiver,
) {
    let weak = Arc::downgrade(&chan);
    // Our default schedule until a client negotiates its own (docs/protocol.md §5.10).
    let pad_state = Arc::new(PaddingState::new(shared.link.padding));
    crate::link::padding::spawn(
        chan.sender.clone(),
        chan.stats.clone(),
        pad_state.clone(),
        shared.link.idle_timeout,
        move || weak.upgrade().is_some_and(|c| !c.circuits.is_empty()),
    );
    loop {
        let raw = match receiver.recv().await {
            Ok(Some(raw)) => raw,
            Ok(None) => break,
            Err(e) => {
                debug!("relay: channel closed: {e}");
                break;
            }
        };
        if let Err(why) = handle_cell(&shared, &chan, &pad_state, &raw).await {
            debug!("relay: closing channel after protocol violation: {why}");
            RelayCounters::bump(&shared.counters.protocol_violations);
            break;
        }
    }
    chan.sender.close();
    if let PeerKind::Relay(vk) = &chan.peer {
        if let Ok(id) = crate::crypto::IdentityPublic::from_bytes(vk.as_bytes()) {
            shared.unregister_relay_channel(&id, &chan);
        }
    }
    for (_, slot) in chan.circuits.close() {
        // Waits for room in a full queue (a dropped notice would leave the circuit
        // waiting forever); if the circuit is already gone the send just fails.
        tokio::spawn(async move {
            let _ = slot.tx.send(CircEvent::ChannelClosed(slot.side)).await;
        });
    }
}

/// Handles one cell. An error closes the whole channel (the peer broke the link protocol,
/// not just one circuit).
async fn handle_cell(
    shared: &Arc<RelayShared>,
    chan: &Arc<RelayChannel>,
    pad_state: &PaddingState,
    raw: &[u8; CELL_LEN],
) -> Result<(), String> {
    let header = CellHeader::peek(raw).map_err(|e| e.to_string())?;
    if !header.cmd.is_circuit_cmd() {
        return match ChanCell::<OnRelayChannel>::parse_typed(raw) {
            Ok(cell) => match cell.into_parts().1 {
                OnRelayChannel::Padding => {
                    chan.stats.on_padding_received();
                    Ok(())
                }
                OnRelayChannel::PaddingNegotiate(ask) => {
                    // Clients choose how we pad towards them, never faster than our
                    // floor; relays pad each other always, so another relay's request is
                    // ignored (parsed strictly all the same).
                    if !pad_state.negotiate(&chan.peer, ask, shared.link.padding_floor) {
                        debug!("relay: ignoring PADDING_NEGOTIATE from a relay");
                    }
                    Ok(())
                }
                // REKEY is consumed by the link layer, so it never reaches here once the
                // handshake is over; circuit commands were routed above.
                OnRelayChannel::Rekey
                | OnRelayChannel::Create(_)
                | OnRelayChannel::Created(_)
                | OnRelayChannel::Relay(_)
                | OnRelayChannel::RelayEarly(_)
                | OnRelayChannel::Destroy(_) => {
                    Err("channel-level command after the handshake".into())
                }
            },
            Err(e) => Err(e.to_string()),
        };
    }
    let id = CircId::from_wire(header.circ_id).map_err(|e| e.to_string())?;
    let Some(slot) = chan.circuits.get(id) else {
        return on_unknown_circuit(shared, chan, id, raw).await;
    };
    let parsed = match slot.side {
        Side::Prev => ChanCell::<FromPreviousHop>::parse_typed(raw)
            .map(|c| CircEvent::FromPrev(c.into_parts().1)),
        // CREATED is only legal while the circuit awaits it; the circuit checks that.
        Side::Next => {
            ChanCell::<FromNextHop>::parse_typed(raw).map(|c| CircEvent::FromNext(c.into_parts().1))
        }
    };
    let event = parsed.unwrap_or_else(|e| {
        debug!("relay: illegal cell on a circuit: {e}");
        CircEvent::Violation(slot.side)
    });
    slot.ticket.enqueued(CELL_LEN);
    let queued = match slot.tx.try_send(event) {
        Ok(()) => true,
        // The circuit task ended between lookup and send; it cleans up its own slots.
        Err(TrySendError::Closed(_)) => false,
        Err(TrySendError::Full(event)) => wait_for_room(shared, &slot, event).await,
    };
    if !queued {
        slot.ticket.dequeued(CELL_LEN);
    }
    Ok(())
}

/// `slot`'s queue is full: waits for room (backpressure: this channel is not read
/// meanwhile), unless the circuit is itself waiting on a neighbour that does not read
/// (stalled) or dying. Such a circuit is killed and `event` dropped, so one circuit's
/// stalled next hop does not stop this channel, which other clients' circuits share.
/// Returns whether `event` was queued.
async fn wait_for_room(shared: &RelayShared, slot: &CircSlot, event: CircEvent) -> bool {
    let stat = slot.ticket.stat();
    tokio::select! {
        // Room first: a circuit whose stall just ended keeps its cells.
        biased;
        sent = slot.tx.send(event) => sent.is_ok(),
        () = stat.stalled_or_killed() => {
            if stat.kill() {
                debug!("relay: circuit destroyed: stalled on a neighbour with its queue full");
                RelayCounters::bump(&shared.counters.stalled_sends);
            }
            false
        }
    }
}

/// A cell for a circuit id this channel does not carry: only CREATE opens one. Anything
/// else is a late cell for a circuit we already closed, and is dropped.
async fn on_unknown_circuit(
    shared: &Arc<RelayShared>,
    chan: &Arc<RelayChannel>,
    id: CircId,
    raw: &[u8; CELL_LEN],
) -> Result<(), String> {
    match ChanCell::<NewCircuit>::parse_typed(raw) {
        Ok(cell) => {
            let NewCircuit::Create(create) = cell.into_parts().1;
            on_create(shared, chan, id, create).await;
            Ok(())
        }
        Err(e) => {
            // A CREATE whose body does not parse (bad handshake type or length) is
            // answered, so the sender learns its circuit is refused instead of waiting
            // for its timeout; the id stays free. The channel stays open: other users'
            // circuits share it.
            if CellHeader::peek(raw).is_ok_and(|h| h.cmd == ChanCmd::Create) {
                debug!("relay: malformed CREATE: {e}");
                RelayCounters::bump(&shared.counters.refused_malformed_create);
                refuse(chan, id, DestroyReason::Protocol).await;
                return Ok(());
            }
            // A late cell for a circuit we already closed (RELAY, DESTROY, or a CREATED
            // racing our DESTROY to the next hop) is dropped; it must not close the
            // channel, which other users' circuits share.
            Ok(())
        }
    }
}

async fn on_create(
    shared: &Arc<RelayShared>,
    chan: &Arc<RelayChannel>,
    id: CircId,
    create: Create,
) {
    if !shared.handshakes.try_take() {
        RelayCounters::bump(&shared.counters.refused_handshake_rate);
        refuse(chan, id, DestroyReason::ResourceLimit).await;
        return;
    }
    match circuit::spawn(shared, chan, id, create) {
        Ok(()) => {}
        Err(reason) => {
            RelayCounters::bump(&shared.counters.refused_circuit_limit);
            refuse(chan, id, reason).await;
        }
    }
}

async fn refuse(chan: &RelayChannel, id: CircId, reason: DestroyReason) {
    if let Ok(cell) = ChanCell::circuit(id, ChanMsg::Destroy(reason)) {
        let _ = chan.sender.send(&cell).await;
    }
}
