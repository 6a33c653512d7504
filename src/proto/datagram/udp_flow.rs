//! The application's end of a UDP flow: send datagrams to the flow's destination, receive
//! what it sends back. Sending never waits: a datagram that finds the circuit's queue full
//! is dropped, as a congested network would.

use std::sync::Arc;

use crate::cell::datagram::MAX_DATAGRAM_LEN;
use crate::cell::StreamId;
use crate::proto::event::ClientCircEvent;
use crate::proto::event_queue::{EventSender, TrySendError};

use super::budget::DatagramBudget;
use super::inbox::DatagramInbox;
use super::socket::Charge;
use super::FlowEvent;

/// Why a datagram was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UdpSendError {
    /// Over [`MAX_DATAGRAM_LEN`] bytes.
    #[error("datagram of {0} bytes is over the {MAX_DATAGRAM_LEN}-byte limit")]
    TooLong(usize),
    /// The circuit's queue is full; the datagram was dropped.
    #[error("circuit queue full: datagram dropped")]
    QueueFull,
    /// The flow or its circuit has closed.
    #[error("flow closed")]
    Closed,
}

/// An open UDP flow to one destination, through a circuit's last hop.
#[derive(Debug)]
pub struct UdpFlow {
    id: StreamId,
    tx: EventSender<ClientCircEvent>,
    inbox: Arc<DatagramInbox>,
    /// Datagrams handed to the circuit task and not yet taken, at most
    /// [`MAX_PENDING_SENDS`]: an application sending as fast as it can must leave the
    /// task's queue room for the cells it receives (the SENDMEs that open its window).
    pending: Arc<DatagramBudget>,
}

/// Datagrams of one flow waiting in its circuit task's queue.
pub(crate) const MAX_PENDING_SENDS: usize = 64;

impl UdpFlow {
    pub(crate) fn new(
        id: StreamId,
        tx: EventSender<ClientCircEvent>,
        inbox: Arc<DatagramInbox>,
    ) -> Self {
        UdpFlow {
            id,
            tx,
            inbox,
            pending: DatagramBudget::new(MAX_PENDING_SENDS),
        }
    }

    /// Sends one datagram (at most [`MAX_DATAGRAM_LEN`] bytes) without waiting.
    pub fn send(&self, datagram: &[u8]) -> Result<(), UdpSendError> {
        if datagram.len() > MAX_DATAGRAM_LEN {
            return Err(UdpSendError::TooLong(datagram.len()));
        }
        if self.inbox.is_closed() {
            return Err(UdpSendError::Closed);
        }
        let Some(slot) = Charge::take(&self.pending, 1) else {
            return Err(UdpSendError::QueueFull);
        };
        let ev = ClientCircEvent::Flow(FlowEvent::Datagram(self.id, datagram.to_vec(), Some(slot)));
        match self.tx.try_send(ev) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(UdpSendError::QueueFull),
            Err(TrySendError::Closed(_)) => Err(UdpSendError::Closed),
        }
    }

    /// The next datagram from the destination; `None` once the flow has closed (END from
    /// the far end, idle timeout, circuit gone).
    pub async fn recv(&self) -> Option<Vec<u8>> {
        self.inbox.recv().await
    }

    /// Whether the flow has closed.
    pub fn is_closed(&self) -> bool {
        self.inbox.is_closed()
    }

    /// Datagrams received but dropped because they were not read in time.
    pub fn dropped(&self) -> u64 {
        self.inbox.dropped()
    }
}

impl Drop for UdpFlow {
    /// Ends the flow at the far end too.
    fn drop(&mut self) {
        if self.inbox.is_closed() {
            return;
        }
        self.inbox.close();
        let ev = ClientCircEvent::Flow(FlowEvent::Closed(self.id));
        if let Err(TrySendError::Full(ev)) = self.tx.try_send(ev) {
            // The queue is busy: close once there is room, so the exit's socket is not
            // kept until its idle timeout.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let tx = self.tx.clone();
                rt.spawn(async move {
                    let _ = tx.send(ev).await;
                });
            }
        }
    }
}
