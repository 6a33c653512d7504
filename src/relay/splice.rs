//! The backward half of a circuit joined at a rendezvous point (docs/protocol.md §8.9),
//! shared with its partner circuit.
//!
//! After RENDEZVOUS1, a forward cell that this hop does not recognise on either circuit
//! carries the end-to-end layer: it is passed on as a backward cell on the *other*
//! circuit, with this hop's backward layer for that circuit. The circuit that received it
//! does this itself (it locks the partner's half, adds the layer and sends on the
//! partner's previous channel), instead of queueing the cell to the partner's task: two
//! tasks each waiting for room in the other's full queue would deadlock, whereas a send on
//! a channel waits only for the socket, exactly like ordinary forwarding, and is bounded
//! the same way (the circuit task gives up after `stalled_send_secs`, §5A).
//!
//! The half is behind an async mutex held across the send, so the cells of one circuit
//! leave in the order their layer was added (the layer's counter and chain require it),
//! and a circuit that closes marks its half closed under the same lock: nothing is sent
//! on its circuit id after its DESTROY, even if the id is reused.
//!
//! The few events one circuit does queue to another (the join notice, the partner-closed
//! notice) go through [`notify`], which waits at most [`NOTICE_TIMEOUT`] for room: a
//! stalled circuit must not hold up its partner indefinitely.

use std::time::Duration;

use crate::proto::event_queue::{EventSender, TrySendError};

use crate::cell::consts::RELAY_BODY_LEN;
use crate::cell::{ChanCell, ChanMsg, RelayBody};
use crate::crypto::{CellKind, Recognition, RelayTag};

use super::events::{BackwardHalf, CircEvent};

/// Longest a circuit waits for room in another circuit's queue, or for the other
/// circuit's half at a rendezvous (RENDEZVOUS2).
pub(crate) const NOTICE_TIMEOUT: Duration = Duration::from_secs(5);

/// Queues `event` for another circuit's task, waiting at most `timeout` for room in its
/// queue. False if the task is gone or its queue stayed full (the caller decides what a
/// lost notice means; it never waits longer).
pub(crate) async fn notify(
    tx: &EventSender<CircEvent>,
    event: CircEvent,
    timeout: Duration,
) -> bool {
    match tx.try_send(event) {
        Ok(()) => true,
        Err(TrySendError::Closed(_)) => false,
        Err(TrySendError::Full(event)) => {
            matches!(
                tokio::time::timeout(timeout, tx.send(event)).await,
                Ok(Ok(()))
            )
        }
    }
}

/// Why a cell could not be sent backward on a half.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpliceError {
    /// The circuit has closed (or its channel has).
    Closed,
    /// The layer's counter is exhausted.
    Crypto,
}

impl BackwardHalf {
    /// Removes this hop's layer from a forward cell of this circuit.
    pub fn decrypt_forward(
        &mut self,
        kind: CellKind,
        body: &mut [u8; RELAY_BODY_LEN],
    ) -> Result<Recognition, SpliceError> {
        self.crypto
            .decrypt_forward(kind, body)
            .map_err(|_| SpliceError::Crypto)
    }

    /// Adds this hop's backward layer (`originate`: as a message from this hop, tag
    /// zeroed first) and sends the cell to the previous hop.
    pub async fn send_backward(
        &mut self,
        mut body: [u8; RELAY_BODY_LEN],
        originate: bool,
    ) -> Result<RelayTag, SpliceError> {
        if self.closed {
            return Err(SpliceError::Closed);
        }
        let tag = if originate {
            self.crypto.originate_backward(&mut body)
        } else {
            self.crypto.encrypt_backward(&mut body)
        }
        .map_err(|_| SpliceError::Crypto)?;
        let cell = ChanCell::circuit(self.prev.id, ChanMsg::Relay(RelayBody(body)))
            .map_err(|_| SpliceError::Closed)?;
        self.prev
            .chan
            .sender
            .send(&cell)
            .await
            .map_err(|_| SpliceError::Closed)?;
        Ok(tag)
    }

    /// Marks the circuit closed and tells the partner, if any (from a task of its own,
    /// so this circuit never waits for room in the partner's queue). The notice is
    /// dropped if the partner's queue stays full for [`NOTICE_TIMEOUT`]; the partner
    /// then learns of the close from the next cell it splices (this half is closed).
    pub fn close(&mut self) {
        self.closed = true;
        if let Some(tx) = self.partner.take() {
            tokio::spawn(async move {
                notify(&tx, CircEvent::PartnerClosed, NOTICE_TIMEOUT).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A notice to a circuit whose queue stays full gives up instead of waiting for ever;
    /// with room it is delivered; to a circuit that is gone it fails at once.
    #[tokio::test]
    async fn notify_never_waits_unbounded() {
        let (tx, mut rx) = crate::proto::event_queue::event_queue(1);
        assert!(notify(&tx, CircEvent::PartnerClosed, NOTICE_TIMEOUT).await);
        // Full, and nobody reads: bounded by the (short) timeout.
        assert!(!notify(&tx, CircEvent::CookieEvicted, Duration::from_millis(50)).await);
        assert!(matches!(rx.recv().await, Some(CircEvent::PartnerClosed)));
        // Full, and the reader makes room while we wait: delivered.
        assert!(notify(&tx, CircEvent::PartnerClosed, NOTICE_TIMEOUT).await);
        let reader = tokio::spawn(async move {
            let first = rx.recv().await;
            let second = rx.recv().await;
            (first, second)
        });
        assert!(notify(&tx, CircEvent::CookieEvicted, NOTICE_TIMEOUT).await);
        let (first, second) = reader.await.unwrap();
        assert!(matches!(first, Some(CircEvent::PartnerClosed)));
        assert!(matches!(second, Some(CircEvent::CookieEvicted)));
        // Gone.
        let (tx, rx) = crate::proto::event_queue::event_queue(1);
        drop(rx);
        assert!(!notify(&tx, CircEvent::PartnerClosed, NOTICE_TIMEOUT).await);
    }
}
