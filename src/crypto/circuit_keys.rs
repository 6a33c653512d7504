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
/// drop; never printed. On the heap, so moving it never leaves a copy behind.
pub struct CircuitKeys(Box<KeyBlock>);

#[derive(Zeroize, ZeroizeOnDrop)]
struct KeyBlock {
    forward: [u8; LAYER_SEED_LEN],
    backward: [u8; LAYER_SEED_LEN],
    binding: [u8; BINDING_LEN],
}

impl CircuitKeys {
    /// Splits a key block `forward(80) | backward(80) | binding(32)` (a handshake's HKDF
    /// output). Public so that test vectors and benchmarks can build layer states from
    /// known keys; production code gets keys only from a handshake.
    pub fn from_bytes(block: &[u8; CIRCUIT_KEYS_LEN]) -> Self {
        // Filled in place on the heap (no stack copy of the keys to move).
        let mut keys = Box::new(KeyBlock {
            forward: [0; LAYER_SEED_LEN],
            backward: [0; LAYER_SEED_LEN],
            binding: [0; BINDING_LEN],
        });
        let (forward, rest) = block.split_at(LAYER_SEED_LEN);
        let (backward, binding) = rest.split_at(LAYER_SEED_LEN);
        keys.forward.copy_from_slice(forward);
        keys.backward.copy_from_slice(backward);
        keys.binding.copy_from_slice(binding);
        Self(keys)
    }

    /// A fresh state for the forward direction (client originates, relay recognises).
    pub(crate) fn forward_layer(&self) -> LayerState {
        LayerState::new(&self.0.forward, Direction::Forward)
    }

    /// A fresh state for the backward direction (relay originates, client recognises).
    pub(crate) fn backward_layer(&self) -> LayerState {
        LayerState::new(&self.0.backward, Direction::Backward)
    }

    /// The key block bit-inverted, for tests that search a process's memory for stale
    /// copies of it (the inverted form is never a copy). Only with the `testing` feature.
    #[cfg(feature = "testing")]
    pub fn inverted_bytes_for_tests(&self) -> zeroize::Zeroizing<[u8; CIRCUIT_KEYS_LEN]> {
        let mut out = zeroize::Zeroizing::new([0u8; CIRCUIT_KEYS_LEN]);
        let src = self
            .0
            .forward
            .iter()
            .chain(&self.0.backward)
            .chain(&self.0.binding);
        for (o, s) in out.iter_mut().zip(src) {
            *o = !*s;
        }
        out
    }

    /// The key block in `from_bytes` order, for test vectors. Wrapped so it is wiped.
    #[cfg(test)]
    pub(crate) fn to_bytes(&self) -> zeroize::Zeroizing<[u8; CIRCUIT_KEYS_LEN]> {
        let mut out = zeroize::Zeroizing::new([0u8; CIRCUIT_KEYS_LEN]);
        let (forward, rest) = out.split_at_mut(LAYER_SEED_LEN);
        let (backward, binding) = rest.split_at_mut(LAYER_SEED_LEN);
        forward.copy_from_slice(&self.0.forward);
        backward.copy_from_slice(&self.0.backward);
        binding.copy_from_slice(&self.0.binding);
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
        self.0.binding
    }
}
