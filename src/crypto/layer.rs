//! One layer of the relay-cell crypto: the state of one hop in one direction, and the
//! operations on it (docs/protocol.md §4.5).
//!
//! The relay side of a layer always runs UIV+ *encryption* ([`super::uiv`]), which is
//! non-malleable, and chains on the tag it outputs; the client side always runs the
//! inverse. A cell is recognised when the layer's output tag equals the layer's current
//! 16-byte nonce `N`, which the originator put in the tag field; the recognising end and
//! the originator then both replace the layer's keys and nonce by a one-way update.
//!
//! Every call binds a 16-byte tweak block `ad = cmd | direction | 0^6 | u64be(counter)`:
//! the link command (RELAY or RELAY_EARLY) the cell travels in, the direction, and the
//! cell's position in this direction of this layer.

use core::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use crate::cell::consts::{RELAY_BODY_LEN, RELAY_TAG_LEN};
use crate::crypto::uiv::{Uiv, BLOCK_LEN, UIV_KEYS_LEN};

/// The 16-byte tag at the front of a relay body, as seen on the wire at one hop. The tag of
/// a recognised cell (as it enters the recognising layer on the relay side) is what an
/// authenticated SENDME echoes.
pub type RelayTag = [u8; RELAY_TAG_LEN];

/// Length of the key material of one direction of one layer: UIV+ keys, then the first
/// nonce.
pub const LAYER_SEED_LEN: usize = UIV_KEYS_LEN + BLOCK_LEN;

/// The link command a relay body travels in. It is bound into every layer's tweak, so a
/// hop that turns RELAY into RELAY_EARLY (or back) garbles the cell for everyone after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellKind {
    /// RELAY (link command 3).
    Relay,
    /// RELAY_EARLY (link command 5).
    RelayEarly,
}

impl CellKind {
    /// The link command byte (docs/protocol.md §2).
    pub const fn code(self) -> u8 {
        match self {
            CellKind::Relay => 3,
            CellKind::RelayEarly => 5,
        }
    }
}

/// Which way a layer's cells travel; part of the tweak (the two directions also have
/// independent keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Away from the client.
    Forward = 0,
    /// Towards the client.
    Backward = 1,
}

/// Errors from the layered relay crypto. All of them mean the circuit must be torn down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LayerError {
    /// The per-direction cell counter would overflow; the position tweak would repeat.
    #[error("relay cell counter exhausted; the circuit must be closed")]
    CounterExhausted,
    /// No hop recognised a backward cell: it was modified or is out of sync.
    #[error("relay cell not recognised by any hop")]
    Unrecognized,
    /// The client circuit already has the maximum number of hops.
    #[error("circuit already has the maximum of {max} hops")]
    TooManyHops {
        /// The limit.
        max: usize,
    },
    /// A cell was addressed to a hop the circuit does not have.
    #[error("no hop {index} on a circuit of {hops} hops")]
    NoSuchHop {
        /// Requested hop index (0 = first hop).
        index: usize,
        /// Hops on the circuit.
        hops: usize,
    },
}

/// The state of one layer in one direction of one hop: keys, nonce, the chained tag of the
/// previous cell and the cell counter. Wiped on drop.
///
/// It lives on the heap and only the pointer moves: Rust never wipes a moved-from value,
/// so a state moved by value into a circuit (and that circuit into its task) would leave
/// copies of the initial keys behind, from which every later key follows.
pub struct LayerState(Box<Layer>);

impl core::ops::Deref for LayerState {
    type Target = Layer;
    fn deref(&self) -> &Layer {
        &self.0
    }
}

impl core::ops::DerefMut for LayerState {
    fn deref_mut(&mut self) -> &mut Layer {
        &mut self.0
    }
}

/// The fields of a [`LayerState`].
pub struct Layer {
    uiv: Uiv,
    /// The tag the next cell originated in this direction carries inside this layer.
    nonce: [u8; BLOCK_LEN],
    /// The relay-side output tag of the previous cell in this direction (zero initially).
    chain: RelayTag,
    /// Counter of the next cell; the value `u64::MAX` is never used.
    counter: u64,
    direction: Direction,
}

impl LayerState {
    /// A fresh state from `KJ | HJ | KS | HS | N` (counter 0, all-zero chain).
    pub(crate) fn new(seed: &[u8; LAYER_SEED_LEN], direction: Direction) -> Self {
        let mut keys = [0u8; UIV_KEYS_LEN];
        let mut nonce = [0u8; BLOCK_LEN];
        let (k, n) = seed.split_at(UIV_KEYS_LEN);
        keys.copy_from_slice(k);
        nonce.copy_from_slice(n);
        let layer = Box::new(Layer {
            uiv: Uiv::new(&keys),
            nonce,
            chain: [0; RELAY_TAG_LEN],
            counter: 0,
            direction,
        });
        keys.zeroize();
        nonce.zeroize();
        Self(layer)
    }
}

impl Layer {
    /// Number of cells processed so far in this direction (the next cell's counter).
    pub fn counter(&self) -> u64 {
        self.counter
    }

    /// Moves the counter, for exhaustion tests.
    #[cfg(test)]
    pub(crate) fn set_counter(&mut self, counter: u64) {
        self.counter = counter;
    }

    /// The counter to use for the next cell, or an error if using it would leave no valid
    /// successor. Checked before anything is modified, so on error the body and state are
    /// untouched.
    pub(crate) fn check_counter(&self) -> Result<u64, LayerError> {
        if self.counter == u64::MAX {
            Err(LayerError::CounterExhausted)
        } else {
            Ok(self.counter)
        }
    }

    /// The tweak block of cell `n`.
    fn ad(&self, kind: CellKind, n: u64) -> [u8; BLOCK_LEN] {
        let mut ad = [0u8; BLOCK_LEN];
        let (head, count) = ad.split_at_mut(8);
        head.copy_from_slice(&[kind.code(), self.direction as u8, 0, 0, 0, 0, 0, 0]);
        count.copy_from_slice(&n.to_be_bytes());
        ad
    }

    /// Whether the body's tag field equals the nonce (constant time).
    fn tag_is_nonce(&self, body: &[u8; RELAY_BODY_LEN]) -> bool {
        let (tag, _) = body.split_at(RELAY_TAG_LEN);
        bool::from(tag.ct_eq(&self.nonce))
    }

    /// The body's tag field.
    fn tag_of(body: &[u8; RELAY_BODY_LEN]) -> RelayTag {
        let mut tag = [0u8; RELAY_TAG_LEN];
        tag.copy_from_slice(&body[..RELAY_TAG_LEN]);
        tag
    }

    /// Relay side: encrypts and chains on the output tag. Returns the input tag.
    fn relay_step(
        &mut self,
        kind: CellKind,
        body: &mut [u8; RELAY_BODY_LEN],
    ) -> Result<RelayTag, LayerError> {
        let n = self.check_counter()?;
        let ad = self.ad(kind, n);
        let input = Self::tag_of(body);
        self.uiv.encrypt(&self.chain, &ad, body);
        self.chain = Self::tag_of(body);
        self.counter = n + 1; // n < u64::MAX, checked above
        Ok(input)
    }

    /// Client side: decrypts and chains on the input tag (the relay side's output).
    fn client_step(
        &mut self,
        kind: CellKind,
        body: &mut [u8; RELAY_BODY_LEN],
    ) -> Result<RelayTag, LayerError> {
        let n = self.check_counter()?;
        let ad = self.ad(kind, n);
        let input = Self::tag_of(body);
        self.uiv.decrypt(&self.chain, &ad, body);
        self.chain = input;
        self.counter = n + 1; // n < u64::MAX, checked above
        Ok(input)
    }

    /// Recognition: if the tag field (after this layer's step) is the nonce, the cell is
    /// for this end: the tag field becomes zero (the relay-message format's all-zero tag),
    /// the layer moves to its next keys and nonce, and the cell's tag `input` is returned.
    fn recognise(&mut self, input: RelayTag, body: &mut [u8; RELAY_BODY_LEN]) -> Option<RelayTag> {
        if !self.tag_is_nonce(body) {
            return None;
        }
        body[..RELAY_TAG_LEN].fill(0);
        self.uiv.update(&mut self.nonce);
        Some(input)
    }

    /// Relay side, a cell arriving at this layer: `Some(tag)` if it is recognised here
    /// (its tag field is then zero and `body[16..]` the payload), `None` to pass it on.
    pub(crate) fn relay_receive(
        &mut self,
        kind: CellKind,
        body: &mut [u8; RELAY_BODY_LEN],
    ) -> Result<Option<RelayTag>, LayerError> {
        let input = self.relay_step(kind, body)?;
        Ok(self.recognise(input, body))
    }

    /// Relay side, a cell passing through towards the client. Returns the output tag.
    pub(crate) fn relay_pass(
        &mut self,
        kind: CellKind,
        body: &mut [u8; RELAY_BODY_LEN],
    ) -> Result<RelayTag, LayerError> {
        self.relay_step(kind, body)?;
        Ok(self.chain)
    }

    /// Relay side, originating: `body[16..]` holds the payload. Returns the output tag,
    /// which is what the client's SENDME for this cell echoes.
    pub(crate) fn relay_originate(
        &mut self,
        kind: CellKind,
        body: &mut [u8; RELAY_BODY_LEN],
    ) -> Result<RelayTag, LayerError> {
        self.check_counter()?;
        body[..RELAY_TAG_LEN].copy_from_slice(&self.nonce);
        self.relay_step(kind, body)?;
        self.uiv.update(&mut self.nonce);
        Ok(self.chain)
    }

    /// Client side, a layer under the target hop's.
    pub(crate) fn client_pass(
        &mut self,
        kind: CellKind,
        body: &mut [u8; RELAY_BODY_LEN],
    ) -> Result<(), LayerError> {
        self.client_step(kind, body).map(|_| ())
    }

    /// Client side, originating for this hop: `body[16..]` holds the payload. Returns the
    /// tag the cell will carry as it enters this hop's layer (what its SENDME echoes).
    pub(crate) fn client_originate(
        &mut self,
        kind: CellKind,
        body: &mut [u8; RELAY_BODY_LEN],
    ) -> Result<RelayTag, LayerError> {
        self.check_counter()?;
        body[..RELAY_TAG_LEN].copy_from_slice(&self.nonce);
        self.client_step(kind, body)?;
        self.uiv.update(&mut self.nonce);
        Ok(Self::tag_of(body))
    }

    /// Client side, a cell from this hop or beyond: `Some(tag)` if this hop sent it.
    pub(crate) fn client_receive(
        &mut self,
        kind: CellKind,
        body: &mut [u8; RELAY_BODY_LEN],
    ) -> Result<Option<RelayTag>, LayerError> {
        let input = self.client_step(kind, body)?;
        Ok(self.recognise(input, body))
    }
}

impl Drop for Layer {
    fn drop(&mut self) {
        // `uiv` wipes itself.
        self.nonce.zeroize();
        self.chain.zeroize();
    }
}

impl fmt::Debug for LayerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Debug for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LayerState")
            .field("counter", &self.counter)
            .field("direction", &self.direction)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(direction: Direction) -> (LayerState, LayerState) {
        let seed: [u8; LAYER_SEED_LEN] = core::array::from_fn(|i| i as u8);
        (
            LayerState::new(&seed, direction),
            LayerState::new(&seed, direction),
        )
    }

    #[test]
    fn counter_exhaustion_refuses_without_touching_body() {
        let (mut client, mut relay) = pair(Direction::Forward);
        client.set_counter(u64::MAX - 1);
        relay.set_counter(u64::MAX - 1);
        let mut body = [7u8; RELAY_BODY_LEN];
        let sent = client
            .client_originate(CellKind::Relay, &mut body)
            .expect("last usable counter");
        assert_eq!(
            relay.relay_receive(CellKind::Relay, &mut body),
            Ok(Some(sent))
        );
        assert_eq!(client.counter(), u64::MAX);
        let before = body;
        assert_eq!(
            client.client_originate(CellKind::Relay, &mut body),
            Err(LayerError::CounterExhausted)
        );
        assert_eq!(body, before);
        assert_eq!(
            relay.relay_receive(CellKind::Relay, &mut body),
            Err(LayerError::CounterExhausted)
        );
        assert_eq!(body, before);
        assert_eq!(relay.counter(), u64::MAX);
    }

    #[test]
    fn originate_then_receive_recognises_both_ways() {
        let (mut client, mut relay) = pair(Direction::Forward);
        let (mut relay_b, mut client_b) = pair(Direction::Backward);
        for i in 0..5u8 {
            let mut body = [0u8; RELAY_BODY_LEN];
            body[RELAY_TAG_LEN..].fill(i);
            let plain = body;
            let sent = client
                .client_originate(CellKind::Relay, &mut body)
                .expect("originate");
            assert_ne!(body, plain);
            assert_eq!(
                relay.relay_receive(CellKind::Relay, &mut body),
                Ok(Some(sent))
            );
            assert_eq!(body, plain);

            let sent = relay_b
                .relay_originate(CellKind::Relay, &mut body)
                .expect("originate");
            assert_eq!(
                client_b.client_receive(CellKind::Relay, &mut body),
                Ok(Some(sent))
            );
            assert_eq!(body, plain);
        }
    }

    /// Forward secrecy per cell, from the attacker's side: it records the wire bodies of a
    /// layer's first cells, then reads the exit's whole layer state (keys, nonce, chain,
    /// counter) and rewinds the public parts (chain, counter) to those of cell 0. The
    /// updated keys open nothing it recorded; the state before the update would have.
    #[test]
    fn a_later_state_compromise_opens_no_earlier_cell() {
        let (mut client, mut exit) = pair(Direction::Forward);
        let plain: Vec<[u8; RELAY_BODY_LEN]> = (0..3u8)
            .map(|c| {
                let mut b = [0u8; RELAY_BODY_LEN];
                b[RELAY_TAG_LEN..].fill(c.wrapping_add(0x41));
                b
            })
            .collect();
        let mut wire = Vec::new();
        for p in &plain {
            let mut b = *p;
            client
                .client_originate(CellKind::Relay, &mut b)
                .expect("originate");
            wire.push(b);
            let mut seen = b;
            assert!(exit
                .relay_receive(CellKind::Relay, &mut seen)
                .expect("layer")
                .is_some());
        }
        // The compromised state, rewound to each earlier cell's public position.
        let mut chain = [0u8; RELAY_TAG_LEN];
        for (n, (w, p)) in wire.iter().zip(&plain).enumerate() {
            exit.chain = chain;
            exit.counter = n as u64;
            let mut b = *w;
            let got = exit.relay_receive(CellKind::Relay, &mut b).expect("layer");
            assert_eq!(got, None, "cell {n} recognised by the later state");
            let same = b[RELAY_TAG_LEN..]
                .iter()
                .zip(&p[RELAY_TAG_LEN..])
                .filter(|(x, y)| x == y)
                .count();
            assert!(same < 16, "cell {n}: {same} plaintext bytes recovered");
            // The honest relay-side chain after cell n is what the client's side recorded.
            let mut replay =
                LayerState::new(&core::array::from_fn(|i| i as u8), Direction::Forward);
            for w in wire.iter().take(n + 1) {
                let mut b = *w;
                replay
                    .relay_receive(CellKind::Relay, &mut b)
                    .expect("layer");
            }
            chain = replay.chain;
        }
        // Control: the state as it was before cell 0 opens cell 0.
        let (_, mut fresh) = pair(Direction::Forward);
        let mut b = wire[0];
        assert!(fresh
            .relay_receive(CellKind::Relay, &mut b)
            .expect("layer")
            .is_some());
        assert_eq!(b, plain[0]);
    }

    #[test]
    fn the_command_is_bound() {
        let (mut client, mut relay) = pair(Direction::Forward);
        let mut body = [0u8; RELAY_BODY_LEN];
        client
            .client_originate(CellKind::Relay, &mut body)
            .expect("originate");
        assert_eq!(
            relay.relay_receive(CellKind::RelayEarly, &mut body),
            Ok(None)
        );
    }
}
