//! A relay's crypto state for one circuit: it removes its layer from forward cells and adds
//! its layer to backward cells.

use crate::cell::consts::{RELAY_BODY_LEN, RELAY_TAG_LEN};
use crate::crypto::circuit_keys::CircuitKeys;
use crate::crypto::layer::{LayerError, LayerState, RelayTag};

/// Outcome of removing this relay's layer from a forward cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recognition {
    /// The cell is addressed to this relay and authentic; `body[16..]` is the plaintext
    /// payload. `tag` is the wire tag the cell arrived with (echoed by authenticated
    /// SENDMEs).
    Recognised {
        /// Wire tag `T'` of the cell at this hop.
        tag: RelayTag,
    },
    /// Not for this relay: forward the transformed body to the next hop. If there is no
    /// next hop, the cell was corrupted and the circuit must be torn down.
    NotForUs,
}

/// Per-circuit relay crypto: forward (remove layer) and backward (add layer) states.
#[derive(Debug)]
pub struct RelayCrypto {
    forward: LayerState,
    backward: LayerState,
}

impl RelayCrypto {
    /// Fresh states from the handshake's keys.
    pub fn new(keys: &CircuitKeys) -> Self {
        Self {
            forward: keys.forward_layer(),
            backward: keys.backward_layer(),
        }
    }

    /// Removes this hop's layer from a forward relay body in place.
    pub fn decrypt_forward(
        &mut self,
        body: &mut [u8; RELAY_BODY_LEN],
    ) -> Result<Recognition, LayerError> {
        let (tag, recognised) = self.forward.remove(body)?;
        Ok(if recognised {
            Recognition::Recognised { tag }
        } else {
            Recognition::NotForUs
        })
    }

    /// Adds this hop's layer to a backward relay body in place and returns the new wire
    /// tag. Used both to pass on a cell from a later hop and, with an all-zero tag, to
    /// originate one (see [`Self::originate_backward`]).
    pub fn encrypt_backward(
        &mut self,
        body: &mut [u8; RELAY_BODY_LEN],
    ) -> Result<RelayTag, LayerError> {
        self.backward.add(body)
    }

    /// Originates a backward cell: zeroes the tag field (so the client recognises the cell
    /// at this hop), then adds the layer. `body[16..]` must hold the payload. Returns the
    /// tag the client will echo in an authenticated SENDME.
    pub fn originate_backward(
        &mut self,
        body: &mut [u8; RELAY_BODY_LEN],
    ) -> Result<RelayTag, LayerError> {
        // Refuse before touching the body, so an error leaves it unchanged.
        self.backward.check_counter()?;
        body[..RELAY_TAG_LEN].fill(0);
        self.backward.add(body)
    }

    /// Cells processed so far (forward, backward). Lets the caller close a circuit long
    /// before the counters could be exhausted.
    pub fn counters(&self) -> (u64, u64) {
        (self.forward.counter(), self.backward.counter())
    }
}
