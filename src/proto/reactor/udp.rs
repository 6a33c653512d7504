//! The client circuit task's UDP flows: opening one (BEGIN_UDP, CONNECTED), datagrams both
//! ways, and the circuit window shared with streams (see [`crate::proto::datagram`]).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::debug;

use crate::cell::datagram::Datagram;
use crate::cell::relay_msg::{Begin, Sendme};
use crate::cell::{EndReason, RelayCell, RelayMsg, StreamId, TargetAddr};
use crate::crypto::RelayTag;
use crate::proto::datagram::flows::Sink;
use crate::proto::datagram::inbox::DatagramInbox;
use crate::proto::datagram::{socket, FlowEvent, UdpFlow};
use crate::proto::event::ClientCircEvent;
use crate::proto::stream::StreamOpenError;

use super::{Reactor, ReactorContext};

/// Where an onion service's end sends the UDP flows its clients open: virtual port → local
/// UDP target (other ports are refused), and how long a quiet flow lives.
#[derive(Debug, Clone)]
pub(crate) struct UdpTargets {
    /// Virtual port → local target.
    pub(crate) ports: Vec<(u16, SocketAddr)>,
    /// A flow without a datagram either way for this long is closed.
    pub(crate) idle: Duration,
    /// Flows (one socket each) open at once over all the service's circuits.
    pub(crate) sockets: Arc<tokio::sync::Semaphore>,
}

/// UDP flows one rendezvous circuit may have open at once at a service.
pub(crate) const SERVICE_FLOWS_PER_CIRCUIT: usize = 32;

/// A flow waiting for CONNECTED.
pub(super) struct PendingFlow {
    pub(super) reply: oneshot::Sender<Result<UdpFlow, StreamOpenError>>,
    inbox: Arc<DatagramInbox>,
}

impl<M: ReactorContext> Reactor<M> {
    /// BEGIN_UDP to the last hop; the flow is handed over at CONNECTED.
    pub(super) async fn open_udp(
        &mut self,
        target: TargetAddr,
        port: u16,
        reply: oneshot::Sender<Result<UdpFlow, StreamOpenError>>,
    ) -> bool {
        if self.retiring {
            let _ = reply.send(Err(StreamOpenError::CircuitClosed));
            return true;
        }
        let Some(id) = self.allocate_stream() else {
            let _ = reply.send(Err(StreamOpenError::TooManyStreams));
            return true;
        };
        let Ok(begin) =
            Begin::new(target, port).and_then(|b| RelayCell::new(Some(id), RelayMsg::BeginUdp(b)))
        else {
            let _ = reply.send(Err(StreamOpenError::Refused(EndReason::Misc)));
            return true;
        };
        let inbox = Arc::new(DatagramInbox::default());
        self.flows.reserve(id, Some(Sink::App(Arc::clone(&inbox))));
        self.pending_flows.insert(id, PendingFlow { reply, inbox });
        self.touch();
        self.send(begin).await
    }

    /// BEGIN_UDP from the far end of an accepting circuit (an onion service's end): a
    /// socket connected to the port's local target, or END. CONNECTED carries no address:
    /// the far end must not learn where the flow leads.
    pub(super) async fn on_incoming_udp(&mut self, id: StreamId, port: u16) -> bool {
        if self.streams.contains(id) || self.pending.contains_key(&id) || self.flows.contains(id) {
            debug!("service: BEGIN_UDP reuses an open stream id");
            return false;
        }
        let Some(targets) = self.udp_targets.clone() else {
            return false;
        };
        let Some(target) = targets
            .ports
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, t)| *t)
        else {
            return self
                .send_cell(Some(id), RelayMsg::End(EndReason::ExitPolicy))
                .await;
        };
        let permit = Arc::clone(&targets.sockets).try_acquire_owned().ok();
        let Some(permit) = permit.filter(|_| {
            self.flows.len() < SERVICE_FLOWS_PER_CIRCUIT
                && self.streams.len() + self.flows.len() < super::MAX_STREAMS_PER_CIRCUIT
        }) else {
            return self
                .send_cell(Some(id), RelayMsg::End(EndReason::ResourceLimit))
                .await;
        };
        let sink = match local_socket(target).await {
            Ok(sock) => socket::spawn(
                sock,
                id,
                targets.idle,
                self.tx.clone(),
                ClientCircEvent::Flow,
                Some(permit),
                self.flows.budget(),
            ),
            Err(e) => Err(e),
        };
        let Ok(sink) = sink else {
            return self
                .send_cell(Some(id), RelayMsg::End(EndReason::ConnectRefused))
                .await;
        };
        self.flows.reserve(id, Some(Sink::Socket(sink)));
        self.flows.open(id, None);
        let connected = crate::cell::relay_msg::Connected { resolved: None };
        self.send_cell(Some(id), RelayMsg::Connected(connected))
            .await
    }

    /// CONNECTED for a flow being opened.
    pub(super) async fn on_flow_connected(&mut self, id: StreamId) -> bool {
        let Some(p) = self.pending_flows.remove(&id) else {
            return false;
        };
        self.flows.open(id, None);
        let flow = UdpFlow::new(id, self.tx.clone(), p.inbox);
        if let Err(Ok(flow)) = p.reply.send(Ok(flow)) {
            // The requester gave up: dropping the flow queues its END.
            drop(flow);
        }
        true
    }

    /// END for a flow: refused while opening, or closed by the far end.
    pub(super) fn on_flow_end(&mut self, id: StreamId, reason: EndReason) {
        self.flows.remove(id);
        if let Some(p) = self.pending_flows.remove(&id) {
            let _ = p.reply.send(Err(StreamOpenError::Refused(reason)));
        }
    }

    /// A DATAGRAM fragment: counted against the circuit window, then reassembled.
    pub(super) async fn on_datagram(
        &mut self,
        id: StreamId,
        frag: Datagram,
        tag: &RelayTag,
    ) -> bool {
        let sendme = match self.streams.on_circuit_cell(tag) {
            Ok(s) => s,
            Err(e) => {
                debug!("client: flow control violated by datagrams: {e}");
                return false;
            }
        };
        if self.streams.contains(id) || self.pending.contains_key(&id) {
            debug!("client: DATAGRAM on a stream's id");
            return false;
        }
        if let Err(e) = self.flows.on_datagram(id, frag) {
            debug!("client: flow protocol violation: {e}");
            return false;
        }
        self.touch();
        match sendme {
            Some(cell) => self.send(cell).await,
            None => true,
        }
    }

    /// A circuit-level SENDME: half its credit is kept for waiting datagrams (so a voice
    /// flow is not stuck behind a bulk download, nor can a datagram flood starve the
    /// circuit's streams), the rest goes to the stream readers.
    pub(super) async fn on_circuit_sendme(&mut self, sendme: &Sendme) -> bool {
        match self.streams.on_circuit_sendme(sendme) {
            Ok(credit) => {
                let kept = credit / 2;
                self.streams.release_circuit_permits(credit - kept);
                self.flush_datagrams(kept).await
            }
            Err(e) => {
                debug!("client: bad SENDME: {e}");
                false
            }
        }
    }

    /// From a flow's local end (the application, or a service's socket).
    pub(super) async fn on_flow_event(&mut self, ev: FlowEvent) -> bool {
        match ev {
            FlowEvent::Datagram(id, bytes, _charge) => {
                if self.flows.contains(id) {
                    self.touch();
                }
                match self.flows.submit(id, bytes, &self.streams) {
                    Some((id, frags)) => self.send_datagram(id, frags).await,
                    None => true,
                }
            }
            FlowEvent::Closed(id) => {
                if self.flows.remove(id) && !self.pending_flows.contains_key(&id) {
                    return self
                        .send_cell(Some(id), RelayMsg::End(EndReason::Done))
                        .await;
                }
                true
            }
        }
    }

    /// Sends the waiting datagrams the window allows, paying from `credit` first; the
    /// credit left goes to the stream readers.
    async fn flush_datagrams(&mut self, mut credit: u32) -> bool {
        while let Some((id, frags)) = self.flows.next_sendable(&mut credit, &self.streams) {
            if !self.send_datagram(id, frags).await {
                return false;
            }
        }
        if credit > 0 {
            self.streams.release_circuit_permits(credit);
        }
        true
    }

    /// Sends a datagram's fragments (their window permits already taken).
    async fn send_datagram(&mut self, id: StreamId, frags: Vec<Datagram>) -> bool {
        let last = self.last_hop();
        for frag in frags {
            let Ok(cell) = RelayCell::new(Some(id), RelayMsg::Datagram(frag)) else {
                return false;
            };
            match self.circ.send(last, cell).await {
                Ok(tag) => self.streams.on_circuit_cell_sent(&tag),
                Err(e) => {
                    debug!("client: send failed: {e}");
                    return false;
                }
            }
        }
        true
    }
}

/// A UDP socket connected to a service's local target.
async fn local_socket(target: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    // A loopback target is reached from loopback: nothing listens on other interfaces.
    let local: SocketAddr = match target {
        t if t.ip().is_loopback() => (t.ip(), 0).into(),
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = tokio::net::UdpSocket::bind(local).await?;
    sock.connect(target).await?;
    Ok(sock)
}
