//! Streams the far end of a circuit opens (BEGIN arriving at the circuit's origin), handed
//! to the circuit's owner, which accepts or refuses each. An onion service's rendezvous
//! circuits are the one use: the client opens streams, the service connects them.

use tokio::sync::mpsc;

use crate::proto::event_queue::EventSender;

use crate::cell::{EndReason, StreamId};

use super::event::{ClientCircEvent, IncomingAnswer};
use super::stream::pump::LocalSocket;
use super::stream::StreamOpenError;

/// The queue of streams the far end opened on an accepting circuit
/// ([`super::reactor::spawn_accepting`]). Ends (`None`) when the circuit closes.
#[derive(Debug)]
pub struct IncomingStreams {
    pub(super) rx: mpsc::Receiver<IncomingStream>,
}

impl IncomingStreams {
    /// The next stream opened, or `None` once the circuit has closed.
    pub async fn next(&mut self) -> Option<IncomingStream> {
        self.rx.recv().await
    }
}

/// A stream the far end asked for with BEGIN. Its id is reserved on the circuit until the
/// owner answers; dropping it unanswered refuses it with END(MISC).
#[derive(Debug)]
pub struct IncomingStream {
    id: StreamId,
    /// The port asked for (the address is meaningless to an onion service, which serves by
    /// port, and is not kept).
    port: u16,
    /// The circuit task's queue; `None` once answered.
    circuit: Option<EventSender<ClientCircEvent>>,
}

impl IncomingStream {
    pub(super) fn new(id: StreamId, port: u16, circuit: EventSender<ClientCircEvent>) -> Self {
        IncomingStream {
            id,
            port,
            circuit: Some(circuit),
        }
    }

    /// Marks the stream answered without answering (the circuit task refuses it itself).
    pub(super) fn forget(&mut self) {
        self.circuit = None;
    }

    /// The port the far end asked for.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Accepts the stream on `socket`: the circuit task pumps bytes between the two and
    /// answers CONNECTED, with no address (the far end must not learn where the stream
    /// leads). Fails only if the circuit has closed.
    pub async fn accept_with<S: LocalSocket>(mut self, socket: S) -> Result<(), StreamOpenError> {
        let answer = IncomingAnswer::Accept {
            id: self.id,
            socket: Box::new(socket),
        };
        self.answer(answer).await
    }

    /// Refuses the stream: the far end gets END(`reason`).
    pub async fn reject(mut self, reason: EndReason) {
        let answer = IncomingAnswer::Reject {
            id: self.id,
            reason,
        };
        let _ = self.answer(answer).await;
    }

    async fn answer(&mut self, answer: IncomingAnswer) -> Result<(), StreamOpenError> {
        let circuit = self.circuit.take().ok_or(StreamOpenError::CircuitClosed)?;
        circuit
            .send(ClientCircEvent::Incoming(answer))
            .await
            .map_err(|_| StreamOpenError::CircuitClosed)
    }
}

impl Drop for IncomingStream {
    fn drop(&mut self) {
        let Some(circuit) = self.circuit.take() else {
            return;
        };
        // Unanswered: refuse it, so its id does not stay reserved while the circuit lives.
        let event = ClientCircEvent::Incoming(IncomingAnswer::Reject {
            id: self.id,
            reason: EndReason::Misc,
        });
        if let Err(crate::proto::event_queue::TrySendError::Full(event)) = circuit.try_send(event) {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = circuit.send(event).await;
                });
            }
        }
    }
}
