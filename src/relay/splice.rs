//! The backward half of a circuit joined at a rendezvous point (docs/protocol.md §8.9),
//! shared with its partner circuit.
//!
//! After RENDEZVOUS1, a forward cell that this hop does not recognise on either circuit
//! carries the end-to-end layer: it is passed on as a backward cell on the *other*
//! circuit, with this hop's backward layer for that circuit. The circuit that received it
//! does this itself (it locks the partner's half, adds the layer and sends on the
//! partner's previous channel), instead of queueing the cell to the partner's task: two
//! tasks each waiting for room in the other's full queue would deadlock, whereas a send on
//! a channel waits only for the socket, exactly like ordinary forwarding.
//!
//! The half is behind an async mutex held across the send, so the cells of one circuit
//! leave in the order their layer was added (the layer's counter and chain require it),
//! and a circuit that closes marks its half closed under the same lock: nothing is sent
//! on its circuit id after its DESTROY, even if the id is reused.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::cell::consts::RELAY_BODY_LEN;
use crate::cell::{ChanCell, ChanMsg, RelayBody};
use crate::crypto::{Recognition, RelayCrypto, RelayTag};

use super::events::CircEvent;
use super::shared::CircEnd;

/// A circuit's relay crypto and previous hop, shared with its partner once joined.
#[derive(Debug)]
pub struct BackwardHalf {
    /// The circuit's crypto (its own task uses the forward state, the partner the
    /// backward state).
    pub crypto: RelayCrypto,
    /// The circuit's previous hop.
    pub prev: CircEnd,
    /// Set when the circuit is torn down: nothing more may be sent on it.
    pub closed: bool,
    /// The partner's task, told when this circuit closes.
    pub partner: Option<mpsc::Sender<CircEvent>>,
}

/// A [`BackwardHalf`] shared by the two circuits of a rendezvous.
pub type SharedBackward = Arc<tokio::sync::Mutex<BackwardHalf>>;

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
        body: &mut [u8; RELAY_BODY_LEN],
    ) -> Result<Recognition, SpliceError> {
        self.crypto
            .decrypt_forward(body)
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

    /// Marks the circuit closed and tells the partner, if any (without waiting for room
    /// in its queue: the notice must not be lost, and this task must not block on it).
    pub fn close(&mut self) {
        self.closed = true;
        if let Some(tx) = self.partner.take() {
            tokio::spawn(async move {
                let _ = tx.send(CircEvent::PartnerClosed).await;
            });
        }
    }
}
