//! A client's channel to its first hop, and the task that reads it.
//!
//! The reader parses each cell against the commands a client may receive and delivers it
//! to the circuit it names. Circuits ids are allocated from the initiator's half.

use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::debug;

use crate::cell::chan_cell::sets;
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
    pub circuits: CircMux<mpsc::Sender<ClientCircEvent>>,
    /// Record counters.
    pub stats: Arc<RecordStats>,
    /// Our end of the TCP connection.
    pub local_addr: Option<std::net::SocketAddr>,
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
        });
        let weak = Arc::downgrade(&chan);
        link::keepalive::spawn(chan.sender.clone(), cfg.idle_timeout, move || {
            weak.upgrade().is_some_and(|c| !c.circuits.is_empty())
        });
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
        let cell = match ChanCell::parse(&raw, &sets::CLIENT_CHANNEL) {
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
        match cell.into_parts() {
            (None, ChanMsg::Padding) => {}
            (None, _) => {
                // REKEY is the only other channel-level command here, and the link layer
                // consumes it: reaching this is a bug, and the keys can no longer agree.
                debug!("client: channel-level cell the link layer should have consumed");
                break;
            }
            (Some(id), msg) => {
                if let Some(tx) = chan.circuits.get(id) {
                    // A full queue stops this reader: backpressure to the relay.
                    let _ = tx.send(ClientCircEvent::Cell(msg)).await;
                }
                // Cells for circuits we closed are late arrivals; drop them.
            }
        }
    }
    chan.sender.close();
    for (_, tx) in chan.circuits.close() {
        tokio::spawn(async move {
            let _ = tx.send(ClientCircEvent::ChannelClosed).await;
        });
    }
}
