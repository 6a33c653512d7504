//! The client's crypto state for one circuit: one forward and one backward layer per hop.
//! Hop 0 is the first hop (the guard), whose layer is outermost.

use crate::cell::consts::{RELAY_BODY_LEN, RELAY_TAG_LEN};
use crate::crypto::circuit_keys::CircuitKeys;
use crate::crypto::layer::{LayerError, LayerState, RelayTag};

/// Maximum number of hops on a circuit.
pub const MAX_HOPS: usize = 8;

/// Both directions of one hop, as seen by the client.
#[derive(Debug)]
struct ClientHop {
    forward: LayerState,
    backward: LayerState,
}

/// The layered crypto of a client circuit.
#[derive(Debug, Default)]
pub struct ClientLayers {
    hops: Vec<ClientHop>,
}

impl ClientLayers {
    /// A circuit with no hops yet.
    pub fn new() -> Self {
        Self {
            hops: Vec::with_capacity(MAX_HOPS),
        }
    }

    /// Appends a hop after its handshake completed. At most [`MAX_HOPS`].
    pub fn push_hop(&mut self, keys: &CircuitKeys) -> Result<(), LayerError> {
        if self.hops.len() >= MAX_HOPS {
            return Err(LayerError::TooManyHops { max: MAX_HOPS });
        }
        self.hops.push(ClientHop {
            forward: keys.forward_layer(),
            backward: keys.backward_layer(),
        });
        Ok(())
    }

    /// Appends the end-to-end hop of an onion service's rendezvous circuit, *as the
    /// service* (protocol.md §8.7): the directions are swapped, so the service removes the
    /// client's forward layer (`Kf`) from the cells it receives and adds the backward layer
    /// (`Kb`) to the cells it originates, exactly as a relay's `RelayCrypto` would. The
    /// client side uses [`Self::push_hop`] with the same keys.
    pub fn push_service_hop(&mut self, keys: &CircuitKeys) -> Result<(), LayerError> {
        if self.hops.len() >= MAX_HOPS {
            return Err(LayerError::TooManyHops { max: MAX_HOPS });
        }
        self.hops.push(ClientHop {
            forward: keys.backward_layer(),
            backward: keys.forward_layer(),
        });
        Ok(())
    }

    /// Forgets every hop from index `len` on (after a TRUNCATED). Their keys are zeroized.
    pub fn truncate(&mut self, len: usize) {
        self.hops.truncate(len);
    }

    /// Number of hops.
    pub fn len(&self) -> usize {
        self.hops.len()
    }

    /// Whether there are no hops.
    pub fn is_empty(&self) -> bool {
        self.hops.is_empty()
    }

    /// Originates a forward cell for hop `target_hop`: zeroes the tag field (so the target
    /// recognises it), then adds the layers of hops `target_hop, ..., 1, 0` so hop 0's is
    /// outermost. `body[16..]` must hold the payload. Returns the wire tag the target hop
    /// will see (the value an authenticated SENDME from it echoes).
    ///
    /// All counters involved are checked first, so on error nothing has been modified.
    pub fn encrypt_forward(
        &mut self,
        body: &mut [u8; RELAY_BODY_LEN],
        target_hop: usize,
    ) -> Result<RelayTag, LayerError> {
        let hops_len = self.hops.len();
        let hops = self
            .hops
            .get_mut(..=target_hop)
            .ok_or(LayerError::NoSuchHop {
                index: target_hop,
                hops: hops_len,
            })?;
        for hop in hops.iter() {
            hop.forward.check_counter()?;
        }
        body[..RELAY_TAG_LEN].fill(0);
        let mut target_tag = None;
        for hop in hops.iter_mut().rev() {
            let tag = hop.forward.add(body)?;
            target_tag.get_or_insert(tag);
        }
        // `hops` is non-empty (it contains `target_hop`), so the loop ran at least once.
        target_tag.ok_or(LayerError::NoSuchHop {
            index: target_hop,
            hops: hops_len,
        })
    }

    /// Removes layers 0, 1, 2, ... from a backward cell until one hop recognises it.
    /// Returns that hop's index and the cell's wire tag at that hop; `body[16..]` is then
    /// the plaintext payload. [`LayerError::Unrecognized`] means the cell was modified or
    /// forged: the caller must tear the circuit down (the states are now out of sync). The
    /// same holds for any other error ([`LayerError::CounterExhausted`]), after which some
    /// hops' states may already have advanced.
    pub fn decrypt_backward(
        &mut self,
        body: &mut [u8; RELAY_BODY_LEN],
    ) -> Result<(usize, RelayTag), LayerError> {
        for (index, hop) in self.hops.iter_mut().enumerate() {
            let (tag, recognised) = hop.backward.remove(body)?;
            if recognised {
                return Ok((index, tag));
            }
        }
        Err(LayerError::Unrecognized)
    }
}
