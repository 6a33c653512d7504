//! The four symmetric keys one circuit hop shares with the client, output by the
//! `allium-ntor-1` handshake and consumed by the layer states.

use core::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::crypto::layer::{Direction, LayerState, LAYER_SEED_LEN};

/// Length of [`CircuitKeys::binding`].
pub const BINDING_LEN: usize = 32;
/// Length of the serialized key block: forward layer seed, backward layer seed, binding.
pub const CIRCUIT_KEYS_LEN: usize = 2 * LAYER_SEED_LEN + BINDING_LEN;

/// The key material one circuit hop shares with the client: the seed of each direction's
/// layer (`KJ | HJ | KS | HS | N`, docs/protocol.md §4.5) and a binding value. Zeroized on
/// drop; never printed.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct CircuitKeys {
    forward: [u8; LAYER_SEED_LEN],
    backward: [u8; LAYER_SEED_LEN],
    binding: [u8; BINDING_LEN],
}

impl CircuitKeys {
    /// Splits a key block `forward(80) | backward(80) | binding(32)` (a handshake's HKDF
    /// output). Public so that test vectors and benchmarks can build layer states from
    /// known keys; production code gets keys only from a handshake.
    pub fn from_bytes(block: &[u8; CIRCUIT_KEYS_LEN]) -> Self {
        let mut keys = Self {
            forward: [0; LAYER_SEED_LEN],
            backward: [0; LAYER_SEED_LEN],
            binding: [0; BINDING_LEN],
        };
        let (forward, rest) = block.split_at(LAYER_SEED_LEN);
        let (backward, binding) = rest.split_at(LAYER_SEED_LEN);
        keys.forward.copy_from_slice(forward);
        keys.backward.copy_from_slice(backward);
        keys.binding.copy_from_slice(binding);
        keys
    }

    /// A fresh state for the forward direction (client originates, relay recognises).
    pub(crate) fn forward_layer(&self) -> LayerState {
        LayerState::new(&self.forward, Direction::Forward)
    }

    /// A fresh state for the backward direction (relay originates, client recognises).
    pub(crate) fn backward_layer(&self) -> LayerState {
        LayerState::new(&self.backward, Direction::Backward)
    }

    /// The key block in `from_bytes` order, for test vectors. Wrapped so it is wiped.
    #[cfg(test)]
    pub(crate) fn to_bytes(&self) -> zeroize::Zeroizing<[u8; CIRCUIT_KEYS_LEN]> {
        let mut out = zeroize::Zeroizing::new([0u8; CIRCUIT_KEYS_LEN]);
        let (forward, rest) = out.split_at_mut(LAYER_SEED_LEN);
        let (backward, binding) = rest.split_at_mut(LAYER_SEED_LEN);
        forward.copy_from_slice(&self.forward);
        backward.copy_from_slice(&self.backward);
        binding.copy_from_slice(&self.binding);
        out
    }
}

impl fmt::Debug for CircuitKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CircuitKeys { .. }")
    }
}

impl CircuitKeys {
    /// A 32-byte value only the two ends of this hop know, derived with the layer keys but
    /// independent of them. An onion service MACs its ESTABLISH_INTRO with it, so the
    /// message is only valid on the circuit it was made for.
    pub fn binding(&self) -> [u8; BINDING_LEN] {
        self.binding
    }
}
