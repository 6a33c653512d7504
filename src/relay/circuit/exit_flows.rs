//! Exit UDP flows: BEGIN_UDP (checked against the UDP policy, socket opened in the
//! background under the relay-wide flow limit), DATAGRAM both ways, and the circuit window
//! the flows share with the circuit's streams (see [`crate::proto::datagram`]).

use std::time::Duration;

use tracing::debug;

use crate::cell::datagram::Datagram;
use crate::cell::relay_msg::{Begin, Connected, Sendme};
use crate::cell::{DestroyReason, EndReason, RelayMsg, StreamId};
use crate::crypto::RelayTag;
use crate::proto::datagram::flows::{FlowSet, Sink};
use crate::proto::datagram::{socket, FlowEvent};

use super::super::events::CircEvent;
use super::super::exit_udp::OpenedFlow;
use super::forward::cell_or_internal;
use super::send::Teardown;
use super::Circuit;

impl Circuit {
    pub(super) fn has_flow(&self, id: StreamId) -> bool {
        self.flows.as_ref().is_some_and(|f| f.contains(id))
    }

    fn flow_count(&self) -> usize {
        self.flows.as_ref().map_or(0, |f| f.len())
    }

    /// Whether `id` names a stream or a flow of this circuit.
    pub(super) fn id_in_use(&self, id: StreamId) -> bool {
        self.streams.contains(id) || self.has_flow(id)
    }

    /// Streams and flows together, against `streams_per_circuit`.
    pub(super) fn streams_and_flows(&self) -> usize {
        self.streams.len() + self.flow_count()
    }

    /// BEGIN_UDP: check the UDP policy and the limits, then open the socket in the
    /// background.
    pub(super) async fn on_begin_udp(
        &mut self,
        id: StreamId,
        begin: Begin,
    ) -> Result<(), Teardown> {
        if self.id_in_use(id) {
            debug!("relay: BEGIN_UDP reuses an open stream id");
            return Err(Teardown::new(DestroyReason::Protocol));
        }
        let Some(exit) = self.shared.exit.clone() else {
            return self.end_stream(id, EndReason::ExitPolicy).await;
        };
        let (target, port) = (begin.target().clone(), begin.port());
        if let Err(reason) = exit.precheck_udp(&target, port) {
            return self.end_stream(id, reason).await;
        }
        if self.streams_and_flows() >= self.shared.limits.streams_per_circuit
            || self.flow_count() >= self.shared.limits.udp_flows_per_circuit
        {
            return self.end_stream(id, EndReason::ResourceLimit).await;
        }
        let Ok(permit) = std::sync::Arc::clone(&self.shared.udp_flows).try_acquire_owned() else {
            debug!("relay: UDP flow limit reached");
            return self.end_stream(id, EndReason::ResourceLimit).await;
        };
        let budget = std::sync::Arc::clone(&self.shared.datagrams);
        self.flows
            .get_or_insert_with(|| Box::new(FlowSet::new(budget)))
            .reserve(id, None);
        let tx = self.self_tx.clone();
        let task = tokio::spawn(async move {
            let result = exit
                .open_udp(&target, port)
                .await
                .map(|(socket, addr)| OpenedFlow {
                    socket,
                    addr,
                    permit,
                });
            let task = tokio::task::id();
            let _ = tx.send(CircEvent::FlowOpened { id, task, result }).await;
        });
        self.connecting.insert(id, task.abort_handle());
        Ok(())
    }

    /// A flow's socket is ready (or could not be opened): CONNECTED or END.
    pub(super) async fn on_flow_opened(
        &mut self,
        id: StreamId,
        task: tokio::task::Id,
        result: Result<OpenedFlow, EndReason>,
    ) -> Result<(), Teardown> {
        if !self.current_attempt(id, task) || !self.has_flow(id) {
            // The client gave up (END) meanwhile; the socket and permit drop here.
            return Ok(());
        }
        match result {
            Ok(opened) => {
                let idle = Duration::from_secs(self.shared.limits.udp_idle_secs.max(1));
                let spawned = socket::spawn(
                    opened.socket,
                    id,
                    idle,
                    self.self_tx.clone(),
                    CircEvent::Flow,
                    Some(opened.permit),
                    std::sync::Arc::clone(&self.shared.datagrams),
                );
                let Ok(sink) = spawned else {
                    self.end_flow(id);
                    return self.end_stream(id, EndReason::ResourceLimit).await;
                };
                if let Some(flows) = self.flows.as_mut() {
                    flows.open(id, Some(Sink::Socket(sink)));
                }
                let connected = Connected {
                    resolved: Some((opened.addr.ip(), 60)),
                };
                self.reply(cell_or_internal(Some(id), RelayMsg::Connected(connected))?)
                    .await
            }
            Err(reason) => {
                if let Some(flows) = self.flows.as_mut() {
                    flows.remove(id);
                }
                self.end_stream(id, reason).await
            }
        }
    }

    /// DATAGRAM from the client: counted against the circuit window whatever becomes of
    /// it, then written to the flow's socket.
    pub(super) async fn on_datagram(
        &mut self,
        id: StreamId,
        frag: Datagram,
        tag: &RelayTag,
    ) -> Result<(), Teardown> {
        let sendme = self.streams.on_circuit_cell(tag).map_err(|e| {
            debug!("relay: datagrams past the circuit window: {e}");
            Teardown::new(DestroyReason::Protocol)
        })?;
        if self.streams.contains(id) {
            debug!("relay: DATAGRAM on a stream's id");
            return Err(Teardown::new(DestroyReason::Protocol));
        }
        if let Some(flows) = self.flows.as_mut() {
            flows.on_datagram(id, frag).map_err(|e| {
                debug!("relay: flow protocol violation: {e}");
                Teardown::new(DestroyReason::Protocol)
            })?;
        }
        match sendme {
            Some(cell) => self.reply(cell).await,
            None => Ok(()),
        }
    }

    /// END from the client for a flow. False if `id` is not a flow.
    pub(super) fn end_flow(&mut self, id: StreamId) -> bool {
        self.flows.as_mut().is_some_and(|f| f.remove(id))
    }

    /// A circuit-level SENDME: half its credit is kept for waiting datagrams (so a voice
    /// flow is not stuck behind bulk data, nor can a flood of replies starve the
    /// circuit's streams), the rest goes to the stream readers.
    pub(super) async fn on_circuit_sendme(&mut self, sendme: &Sendme) -> Result<(), Teardown> {
        let credit = self.streams.on_circuit_sendme(sendme).map_err(|e| {
            debug!("relay: bad SENDME: {e}");
            Teardown::new(DestroyReason::Protocol)
        })?;
        let kept = credit / 2;
        self.streams.release_circuit_permits(credit - kept);
        self.flush_datagrams(kept).await
    }

    /// From a flow's socket: a datagram for the client, or the flow ended (idle, error).
    pub(super) async fn on_flow_event(&mut self, ev: FlowEvent) -> Result<(), Teardown> {
        match ev {
            FlowEvent::Datagram(id, bytes, _charge) => {
                let now = match self.flows.as_mut() {
                    Some(flows) => flows.submit(id, bytes, &self.streams),
                    None => None,
                };
                if let Some((id, frags)) = now {
                    self.send_datagram(id, frags).await?;
                }
                Ok(())
            }
            FlowEvent::Closed(id) => {
                if self.end_flow(id) {
                    return self.end_stream(id, EndReason::Done).await;
                }
                Ok(())
            }
        }
    }

    /// Sends the waiting datagrams the window allows, paying from `credit` first; the
    /// credit left goes to the stream readers.
    async fn flush_datagrams(&mut self, mut credit: u32) -> Result<(), Teardown> {
        loop {
            let next = match self.flows.as_mut() {
                Some(flows) => flows.next_sendable(&mut credit, &self.streams),
                None => None,
            };
            let Some((id, frags)) = next else { break };
            self.send_datagram(id, frags).await?;
        }
        if credit > 0 {
            self.streams.release_circuit_permits(credit);
        }
        Ok(())
    }

    /// Sends a datagram's fragments (their window permits already taken).
    async fn send_datagram(&mut self, id: StreamId, frags: Vec<Datagram>) -> Result<(), Teardown> {
        for frag in frags {
            let cell = cell_or_internal(Some(id), RelayMsg::Datagram(frag))?;
            let body = cell
                .encode()
                .map_err(|_| Teardown::new(DestroyReason::Internal))?;
            self.relayed();
            let tag = self.send_backward(body, true).await?;
            self.streams.on_circuit_cell_sent(&tag);
        }
        Ok(())
    }
}
