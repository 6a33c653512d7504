//! A client's channel to its first hop, and the task that reads it.
//!
//! The reader parses each cell as one a client may receive ([`OnClientChannel`]) and
//! delivers the circuit-level ones to the circuit they name. Circuits ids are allocated from the initiator's half.

use std::sync::Arc;

use crate::proto::event_queue::EventSender;
use tracing::debug;

use crate::cell::chan_contexts::{FromNextHop, OnClientChannel};
use crate::cell::{CellHeader, ChanCell, ChanMsg, CircId};
use crate::link::mux::CircMux;
use crate::link::{self, ChannelReceiver, ChannelSender, LinkConfig, LinkError, RecordStats};

use super::event::ClientCircEvent;
use super::target::RelayTarget;

/// An open client channel.
#[derive(Debug)]
pub struct ClientChannel {
    /// Queues cells to the relay.
    pub sender: ChannelSender,
    /// The circuits it carries.
    pub circuits: CircMux<EventSender<ClientCircEvent>>,
    /// Record counters.
    pub stats: Arc<RecordStats>,
    /// Our end of the TCP connection.
    pub local_addr: Option<std::net::SocketAddr>,
    /// The relay's clock from its NETINFO (Unix seconds), for the client's skew estimate.
    pub peer_timestamp: u64,
}

impl ClientChannel {
    /// Connects to `first_hop` (which must prove its identity) and starts the reader.
    /// The client does not authenticate: it stays anonymous to the relay.
    pub async fn connect(
        first_hop: &RelayTarget,
        cfg: &LinkConfig,
    ) -> Result<Arc<Self>, LinkError> {
        Self::connect_to(first_hop.addr, &first_hop.identity, cfg).await
    }

    /// Connects to the relay at `addr`, which must prove `identity` (no onion key needed:
    /// for directory authorities before a consensus is known).
    pub async fn connect_to(
        addr: std::net::SocketAddr,
        identity: &crate::crypto::IdentityPublic,
        cfg: &LinkConfig,
    ) -> Result<Arc<Self>, LinkError> {
        let expected = identity
            .to_verifying_key()
            .map_err(|_| LinkError::Protocol("invalid relay identity key"))?;
        let channel = link::connect(addr, &expected, None, cfg).await?;
        let chan = Arc::new(ClientChannel {
            sender: channel.sender,
            circuits: CircMux::new(channel.circ_ids),
            stats: channel.stats,
            local_addr: channel.local_addr,
            peer_timestamp: channel.peer_timestamp,
        });
        // How the relay should pad towards us: asked for before any circuit exists, so
        // it applies from the first one (docs/protocol.md §5.10).
        if let Some(ask) = link::padding::negotiation(cfg.padding) {
            chan.sender
                .send(&ChanCell::channel(ChanMsg::PaddingNegotiate(ask))?)
                .await?;
        }
        let weak = Arc::downgrade(&chan);
        let state = Arc::new(link::PaddingState::new(cfg.padding));
        link::padding::spawn(
            chan.sender.clone(),
            chan.stats.clone(),
            state,
            cfg.idle_timeout,
            move || weak.upgrade().is_some_and(|c| !c.circuits.is_empty()),
        );
        tokio::spawn(read_loop(Arc::clone(&chan), channel.receiver));
        Ok(chan)
    }

    /// Whether the channel has closed.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

async fn read_loop(chan: Arc<ClientChannel>, mut receiver: ChannelReceiver) {
    loop {
        let raw = match receiver.recv().await {
            Ok(Some(raw)) => raw,
            Ok(None) => break,
            Err(e) => {
                debug!("client: channel closed: {e}");
                break;
            }
        };
        let cell = match ChanCell::<OnClientChannel>::parse_typed(&raw) {
            Ok(cell) => cell,
            Err(e) => {
                // Tell the circuit, if the header named one; an illegal channel-level cell
                // closes the channel.
                debug!("client: illegal cell from relay: {e}");
                let id = CellHeader::peek(&raw)
                    .ok()
                    .and_then(|h| CircId::new(h.circ_id));
                match id.and_then(|id| chan.circuits.get(id)) {
                    Some(tx) => {
                        let _ = tx.send(ClientCircEvent::Violation).await;
                        continue;
                    }
                    None => break,
                }
            }
        };
        let (circ, msg) = cell.into_parts();
        let msg = match msg {
            OnClientChannel::Padding => {
                chan.stats.on_padding_received();
                continue;
            }
            OnClientChannel::Rekey => {
                // The link layer consumes REKEY: reaching this is a bug, and the keys can
                // no longer agree.
                debug!("client: channel-level cell the link layer should have consumed");
                break;
            }
            OnClientChannel::Created(created) => FromNextHop::Created(created),
            OnClientChannel::Relay(body) => FromNextHop::Relay(body),
            OnClientChannel::Destroy(reason) => FromNextHop::Destroy(reason),
        };
        // Always a circuit here: the parser refuses a circuit command without one.
        let Some(id) = circ else {
            break;
        };
        if let Some(tx) = chan.circuits.get(id) {
            // A full queue stops this reader: backpressure to the relay.
            let _ = tx.send(ClientCircEvent::Cell(msg)).await;
        }
        // Cells for circuits we closed are late arrivals; drop them.
    }
    chan.sender.close();
    for (_, tx) in chan.circuits.close() {
        tokio::spawn(async move {
            let _ = tx.send(ClientCircEvent::ChannelClosed).await;
        });
    }
}
