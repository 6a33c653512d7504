//! Answering CREATE: the circuit handshake that makes this hop, with the replay filter in
//! front of it. On failure the circuit never starts.

use std::sync::Arc;

use crate::proto::event_queue::EventSender;
use tracing::debug;

use crate::cell::chan_msg::BoundedBytes;
use crate::cell::circuit_ext::{ClientExtensions, PaddingStatus, ReplyExtensions};
use crate::cell::{ChanMsg, Create, Created, DestroyReason, HandshakeType};
use crate::crypto::fast_handshake::fast_relay;
use crate::crypto::{relay_handshake, RelayCrypto};
use crate::link::PeerKind;
use crate::proto::congestion::{FlowMode, GRANTED_SENDME_INC};
use crate::proto::stream::set::StreamSet;

use super::super::events::CircEnd;
use super::super::events::{CircEvent, Side};
use super::super::queue_budget::QueueTicket;
use super::super::shared::{RelayCounters, RelayShared};
use super::send::{lost, queue_cell};
use super::{Circuit, Crypto, Next, Role, MAX_RELAY_EARLY};

impl Circuit {
    /// Answers CREATE. On failure the circuit is refused with DESTROY and never starts.
    pub(super) async fn handshake(
        shared: Arc<RelayShared>,
        prev: CircEnd,
        create: Create,
        self_tx: EventSender<CircEvent>,
        ticket: Arc<QueueTicket>,
    ) -> Option<Self> {
        let t0 = std::time::Instant::now();
        let from_client = matches!(prev.chan.peer, PeerKind::Client);
        let htype_code = create.htype.code();
        // A message answered recently is refused before any expensive work.
        if shared.replay.seen(htype_code, create.data.as_slice()) {
            return Self::refuse_replay(&shared, &prev).await;
        }
        let mut flow = FlowMode::Fixed;
        let mut machine = None;
        let result = match create.htype {
            HandshakeType::Ntor1 => relay_handshake(
                &mut rand::rng(),
                &shared.keys.onion_keys(),
                create.data.as_slice(),
                |ext| {
                    let granted = grant(ext, &shared, from_client);
                    flow = granted.flow;
                    machine = granted.machine;
                    granted.reply
                },
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
        let padding = machine.map(|m| {
            Box::new(crate::proto::padding::CircuitPadding::start(
                m,
                self_tx.clone(),
                || CircEvent::PaddingDue,
            ))
        });
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
            streams: StreamSet::new(flow),
            connecting: std::collections::HashMap::new(),
            flows: None,
            resolving: 0,
            dir_state: None,
            padding,
        })
    }

    /// Refuses a replayed CREATE: DESTROY(PROTOCOL), the circuit never starts.
    pub(super) async fn refuse_replay(shared: &RelayShared, prev: &CircEnd) -> Option<Self> {
        debug!("relay: replayed CREATE refused");
        RelayCounters::bump(&shared.counters.refused_replay);
        prev.chan.circuits.remove(prev.id);
        let destroy = ChanMsg::Destroy(DestroyReason::Protocol);
        let _ = queue_cell(prev, destroy, shared.limits.stalled_send_timeout(), None).await;
        None
    }
}

/// What a hop grants in its handshake reply.
struct Granted {
    flow: FlowMode,
    machine: Option<crate::cell::padding_machine::PaddingMachine>,
    reply: Vec<u8>,
}

/// The reply extensions for a client's: congestion control granted if asked for and
/// enabled; a padding machine run if asked for, enabled and within the per-circuit budget
/// (`padding_cells_per_circuit`). A relay that is the circuit's first hop (`from_client`)
/// refuses: padding is for the second hop, and one-hop circuits would make loading the
/// relay-wide rate cheap. Malformed client extensions are answered as if empty (the client
/// asked for nothing we can read; it learns so from the missing grant).
fn grant(client_ext: &[u8], shared: &RelayShared, from_client: bool) -> Granted {
    let asked = ClientExtensions::parse(client_ext).unwrap_or_default();
    let limits = &shared.limits;
    let cc = asked.congestion_control && limits.congestion_control;
    let (machine, padding) = match asked.padding {
        None => (None, None),
        Some(_) if !limits.circuit_padding || limits.padding_cells_per_second == 0 => {
            (None, Some(PaddingStatus::Disabled))
        }
        Some(_) if from_client => (None, Some(PaddingStatus::Disabled)),
        Some(m) if m.max_padding > limits.padding_cells_per_circuit => {
            (None, Some(PaddingStatus::OverBudget))
        }
        Some(m) => (Some(m), Some(PaddingStatus::Accepted)),
    };
    if matches!(padding, Some(s) if s != PaddingStatus::Accepted) {
        RelayCounters::bump(&shared.counters.padding_machines_refused);
    }
    let reply = ReplyExtensions {
        congestion_control: cc.then_some(GRANTED_SENDME_INC),
        padding,
    };
    match reply.encode() {
        Ok(bytes) => Granted {
            flow: FlowMode::from_grant(reply.congestion_control),
            machine,
            reply: bytes,
        },
        Err(_) => Granted {
            flow: FlowMode::Fixed,
            machine: None,
            reply: Vec::new(),
        },
    }
}
