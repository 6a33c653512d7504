//! A relay's crypto state for one circuit: it runs the relay side of its layer on forward
//! cells (recognising those addressed to it) and on backward cells.

use crate::cell::consts::RELAY_BODY_LEN;
use crate::crypto::circuit_keys::CircuitKeys;
use crate::crypto::layer::{CellKind, LayerError, LayerState, RelayTag};

/// Outcome of a relay's layer on a forward cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recognition {
    /// The cell is addressed to this relay and authentic; `body[16..]` is the plaintext
    /// payload and the tag field is zero. `tag` is the tag the cell arrived with (echoed
    /// by authenticated SENDMEs).
    Recognised {
        /// Tag of the cell as it entered this hop.
        tag: RelayTag,
    },
    /// Not for this relay: forward the transformed body to the next hop. If there is no
    /// next hop, the cell was corrupted and the circuit must be torn down.
    NotForUs,
}

/// Per-circuit relay crypto: the relay side of the forward and backward layer states.
#[derive(Debug)]
pub struct RelayCrypto {
    forward: LayerState,
    backward: LayerState,
}

impl RelayCrypto {
    /// Fresh states from the handshake's keys.
    pub fn new(keys: &CircuitKeys) -> Self {
        let crypto = Self {
            forward: keys.forward_layer(),
            backward: keys.backward_layer(),
        };
        crate::crypto::scrub::scrub_stack();
        crypto
    }

    /// Runs this hop's layer on a forward relay body (travelling in a `kind` link cell) in
    /// place.
    pub fn decrypt_forward(
        &mut self,
        kind: CellKind,
        body: &mut [u8; RELAY_BODY_LEN],
    ) -> Result<Recognition, LayerError> {
        Ok(match self.forward.relay_receive(kind, body)? {
            Some(tag) => Recognition::Recognised { tag },
            None => Recognition::NotForUs,
        })
    }

    /// Runs this hop's layer on a backward relay body from a later hop and returns the
    /// new tag. Backward cells always travel as RELAY.
    pub fn encrypt_backward(
        &mut self,
        body: &mut [u8; RELAY_BODY_LEN],
    ) -> Result<RelayTag, LayerError> {
        self.backward.relay_pass(CellKind::Relay, body)
    }

    /// Originates a backward cell: `body[16..]` must hold the payload (the tag field is
    /// overwritten). Returns the tag the client will echo in an authenticated SENDME.
    pub fn originate_backward(
        &mut self,
        body: &mut [u8; RELAY_BODY_LEN],
    ) -> Result<RelayTag, LayerError> {
        self.backward.relay_originate(CellKind::Relay, body)
    }

    /// Cells processed so far (forward, backward). Lets the caller close a circuit long
    /// before the counters could be exhausted.
    pub fn counters(&self) -> (u64, u64) {
        (self.forward.counter(), self.backward.counter())
    }
}
