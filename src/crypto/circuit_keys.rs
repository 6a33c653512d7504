//! The four symmetric keys one circuit hop shares with the client, output by the
//! `allium-ntor-1` handshake and consumed by the layer states.

use core::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::crypto::layer::LayerState;

/// Length of one symmetric key.
pub const SYM_KEY_LEN: usize = 32;
/// Length of the serialized key block: `Kf_enc | Kf_mac | Kb_enc | Kb_mac`.
pub const CIRCUIT_KEYS_LEN: usize = 4 * SYM_KEY_LEN;

/// Forward (client → relay) and backward (relay → client) encryption and MAC keys of one
/// hop. Zeroized on drop; never printed.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct CircuitKeys {
    forward_enc: [u8; SYM_KEY_LEN],
    forward_mac: [u8; SYM_KEY_LEN],
    backward_enc: [u8; SYM_KEY_LEN],
    backward_mac: [u8; SYM_KEY_LEN],
}

impl CircuitKeys {
    /// Splits a 128-byte key block `Kf_enc | Kf_mac | Kb_enc | Kb_mac` (the handshake's
    /// HKDF output). Public so that test vectors and benchmarks can build layer states from
    /// known keys; production code gets keys only from the handshake.
    pub fn from_bytes(block: &[u8; CIRCUIT_KEYS_LEN]) -> Self {
        let mut keys = Self {
            forward_enc: [0; SYM_KEY_LEN],
            forward_mac: [0; SYM_KEY_LEN],
            backward_enc: [0; SYM_KEY_LEN],
            backward_mac: [0; SYM_KEY_LEN],
        };
        let targets = [
            &mut keys.forward_enc,
            &mut keys.forward_mac,
            &mut keys.backward_enc,
            &mut keys.backward_mac,
        ];
        for (dst, src) in targets.into_iter().zip(block.chunks_exact(SYM_KEY_LEN)) {
            dst.copy_from_slice(src);
        }
        keys
    }

    /// A fresh state for the forward direction (client adds, relay removes).
    pub(crate) fn forward_layer(&self) -> LayerState {
        LayerState::new(&self.forward_enc, &self.forward_mac)
    }

    /// A fresh state for the backward direction (relay adds, client removes).
    pub(crate) fn backward_layer(&self) -> LayerState {
        LayerState::new(&self.backward_enc, &self.backward_mac)
    }

    /// The key block in `from_bytes` order, for test vectors. Wrapped so it is wiped.
    #[cfg(test)]
    pub(crate) fn to_bytes(&self) -> zeroize::Zeroizing<[u8; CIRCUIT_KEYS_LEN]> {
        let mut out = zeroize::Zeroizing::new([0u8; CIRCUIT_KEYS_LEN]);
        let sources = [
            &self.forward_enc,
            &self.forward_mac,
            &self.backward_enc,
            &self.backward_mac,
        ];
        for (dst, src) in out.chunks_exact_mut(SYM_KEY_LEN).zip(sources) {
            dst.copy_from_slice(src);
        }
        out
    }
}

impl fmt::Debug for CircuitKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CircuitKeys { .. }")
    }
}

/// Domain-separation label of [`CircuitKeys::binding`].
pub const CIRCUIT_BINDING_LABEL: &[u8] = b"allium-circuit-binding-v1";

impl CircuitKeys {
    /// A 32-byte value only the two ends of this hop know:
    /// `SHA-256("allium-circuit-binding-v1" | Kf_mac | Kb_mac)`. An onion service MACs its
    /// ESTABLISH_INTRO with it, so the message is only valid on the circuit it was made
    /// for. One-way, so it reveals nothing about the keys.
    pub fn binding(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        Sha256::new()
            .chain_update(CIRCUIT_BINDING_LABEL)
            .chain_update(self.forward_mac)
            .chain_update(self.backward_mac)
            .finalize()
            .into()
    }
}
