//! The client's crypto state for one circuit: one forward and one backward layer per hop.
//! Hop 0 is the first hop (the guard), whose layer is outermost.

use crate::cell::consts::RELAY_BODY_LEN;
use crate::crypto::circuit_keys::CircuitKeys;
use crate::crypto::layer::{CellKind, LayerError, LayerState, RelayTag};

/// Maximum number of hops on a circuit.
pub const MAX_HOPS: usize = 8;

/// Which side of a hop's layer this end runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// A relay hop: the client side of both directions.
    Relay,
    /// The end-to-end hop of a rendezvous circuit, as the client: the client side, with
    /// the tweak's command fixed to RELAY (the cell crosses the rendezvous point as RELAY
    /// whatever it travelled in before).
    EndToEnd,
    /// The end-to-end hop, as the service: the relay side, as a relay runs its own layer.
    Service,
}

/// Both directions of one hop, as seen by the client.
#[derive(Debug)]
struct ClientHop {
    forward: LayerState,
    backward: LayerState,
    side: Side,
}

impl ClientHop {
    fn kind(&self, kind: CellKind) -> CellKind {
        match self.side {
            Side::Relay => kind,
            Side::EndToEnd | Side::Service => CellKind::Relay,
        }
    }
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

    fn push(&mut self, keys: &CircuitKeys, side: Side) -> Result<(), LayerError> {
        if self.hops.len() >= MAX_HOPS {
            return Err(LayerError::TooManyHops { max: MAX_HOPS });
        }
        self.hops.push(ClientHop {
            forward: keys.forward_layer(),
            backward: keys.backward_layer(),
            side,
        });
        crate::crypto::scrub::scrub_stack();
        Ok(())
    }

    /// Appends a relay hop after its handshake completed. At most [`MAX_HOPS`].
    pub fn push_hop(&mut self, keys: &CircuitKeys) -> Result<(), LayerError> {
        self.push(keys, Side::Relay)
    }

    /// Appends the end-to-end hop of an onion-service rendezvous circuit, *as the client*
    /// (protocol.md §8.7). The service adds the same keys with [`Self::push_service_hop`].
    pub fn push_end_to_end_hop(&mut self, keys: &CircuitKeys) -> Result<(), LayerError> {
        self.push(keys, Side::EndToEnd)
    }

    /// Appends the end-to-end hop of a rendezvous circuit *as the service*: the service
    /// runs the relay side of that layer, recognising the client's forward cells and
    /// originating backward ones, exactly as a relay's `RelayCrypto` would.
    pub fn push_service_hop(&mut self, keys: &CircuitKeys) -> Result<(), LayerError> {
        self.push(keys, Side::Service)
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

    /// Originates a forward cell for hop `target_hop`, to travel in a `kind` link cell:
    /// `body[16..]` must hold the payload. Runs the target's layer, then the client side
    /// of hops `target_hop − 1, ..., 0`, so hop 0's is outermost. Returns the tag the
    /// target hop will see (the value an authenticated SENDME from it echoes).
    ///
    /// All counters involved are checked first, so on error nothing has been modified.
    pub fn encrypt_forward(
        &mut self,
        body: &mut [u8; RELAY_BODY_LEN],
        target_hop: usize,
        kind: CellKind,
    ) -> Result<RelayTag, LayerError> {
        let hops_len = self.hops.len();
        let no_such_hop = LayerError::NoSuchHop {
            index: target_hop,
            hops: hops_len,
        };
        let hops = self.hops.get_mut(..=target_hop).ok_or(no_such_hop)?;
        for hop in hops.iter() {
            match hop.side {
                Side::Service => hop.backward.check_counter()?,
                Side::Relay | Side::EndToEnd => hop.forward.check_counter()?,
            };
        }
        let (target, below) = hops.split_last_mut().ok_or(no_such_hop)?;
        let target_kind = target.kind(kind);
        let tag = match target.side {
            Side::Service => target.backward.relay_originate(target_kind, body)?,
            Side::Relay | Side::EndToEnd => target.forward.client_originate(target_kind, body)?,
        };
        for hop in below.iter_mut().rev() {
            let hop_kind = hop.kind(kind);
            hop.forward.client_pass(hop_kind, body)?;
        }
        Ok(tag)
    }

    /// Runs layers 0, 1, 2, ... on a backward cell until one hop recognises it. Returns
    /// that hop's index and the cell's tag at that hop; `body[16..]` is then the plaintext
    /// payload. [`LayerError::Unrecognized`] means the cell was modified or forged: the
    /// caller must tear the circuit down (the states are now out of sync). The same holds
    /// for any other error ([`LayerError::CounterExhausted`]), after which some hops'
    /// states may already have advanced.
    pub fn decrypt_backward(
        &mut self,
        body: &mut [u8; RELAY_BODY_LEN],
    ) -> Result<(usize, RelayTag), LayerError> {
        for (index, hop) in self.hops.iter_mut().enumerate() {
            let recognised = match hop.side {
                Side::Service => hop.forward.relay_receive(CellKind::Relay, body)?,
                Side::Relay | Side::EndToEnd => {
                    hop.backward.client_receive(CellKind::Relay, body)?
                }
            };
            if let Some(tag) = recognised {
                return Ok((index, tag));
            }
        }
        Err(LayerError::Unrecognized)
    }
}
