//! Reading a circuit's queue without a reactor: while a circuit is built, and while an
//! onion-service circuit exchanges its messages by hand. Padding due meanwhile is sent
//! here, so a circuit in that phase pads as one driven by a reactor does.

use std::time::Duration;

use crate::cell::chan_contexts::FromNextHop;
use crate::cell::RelayMessage;
use crate::proto::error::CircuitError;
use crate::proto::event::ClientCircEvent;

use super::ClientCircuit;

impl<M: RelayMessage> ClientCircuit<M> {
    pub(super) async fn next_event(
        &mut self,
        timeout: Duration,
    ) -> Result<FromNextHop, CircuitError> {
        match tokio::time::timeout(timeout, self.next_event_forever()).await {
            Ok(r) => r,
            Err(_) => Err(self.fail(CircuitError::Timeout).await),
        }
    }

    pub(super) async fn next_event_forever(&mut self) -> Result<FromNextHop, CircuitError> {
        loop {
            if self.slot.closed {
                return Err(CircuitError::ChannelClosed);
            }
            let event = self.rx.recv().await;
            if matches!(event, Some(ClientCircEvent::PaddingDue)) {
                self.send_due_padding().await?;
                continue;
            }
            return self.on_raw_event(event).await;
        }
    }

    async fn on_raw_event(
        &mut self,
        event: Option<ClientCircEvent>,
    ) -> Result<FromNextHop, CircuitError> {
        match event {
            Some(ClientCircEvent::Cell(FromNextHop::Destroy(reason))) => {
                self.slot.closed = true;
                self.slot.chan.circuits.remove(self.slot.id);
                Err(CircuitError::Destroyed(reason))
            }
            Some(ClientCircEvent::Cell(msg)) => Ok(msg),
            Some(ClientCircEvent::Violation) => Err(self
                .fail(CircuitError::Protocol("illegal cell from the first hop"))
                .await),
            Some(ClientCircEvent::ChannelClosed) | None => {
                self.slot.closed = true;
                Err(CircuitError::ChannelClosed)
            }
            Some(
                ClientCircEvent::Stream(_)
                | ClientCircEvent::Request(_)
                | ClientCircEvent::Incoming(_)
                | ClientCircEvent::Flow(_)
                | ClientCircEvent::PaddingDue,
            ) => Err(CircuitError::Protocol(
                "stream event on a circuit without a reactor",
            )),
        }
    }
}
