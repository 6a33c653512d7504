//! `allium-fast-1`: the first-hop circuit handshake that needs no onion key.
//!
//! A client that has not fetched a consensus yet knows its first hop (a directory
//! authority) only by identity and address: not its onion key. The channel to that hop is
//! already authenticated to the identity and forward secret (Noise XX, docs/protocol.md
//! §5), so the circuit keys can come from fresh randomness sent inside it, as Tor's
//! CREATE_FAST does. Relays accept it only as a first hop (CREATE from the channel
//! initiator), never through EXTEND: its security is exactly that of the link.
//!
//! ```text
//! client → relay   X (32 random bytes)
//! relay  → client  Y (32 random bytes) | AUTH (32)
//! okm  = HKDF-SHA256(salt = "allium-fast-1", ikm = X | Y, info = "allium-fast-1:keys", 224)
//! keys = okm[0..192] (CircuitKeys), AUTH = okm[192..224]
//! ```
//!
//! Both messages have a fixed length and any value is well formed: [`FastCreate::parse`]
//! and [`FastCreated::parse`] check only the length; [`FastClientState::finish`] checks
//! `AUTH`. `X` and `Y` are the key material, so every copy this module keeps (states,
//! parsed messages, the relay's `Y`, the HKDF input and output) is wiped on drop; the
//! message buffers it returns are the caller's (they go into a cell on the encrypted link).

use rand::CryptoRng;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::bytes::{self, Readable, Reader, Writeable, Writer};
use crate::crypto::circuit_keys::{CircuitKeys, CIRCUIT_KEYS_LEN};
use crate::crypto::handshake::{hkdf_extract, HandshakeError};

/// Protocol id (HKDF salt).
pub const FAST_PROTOID: &[u8] = b"allium-fast-1";
/// Length of the client message.
pub const FAST_CLIENT_LEN: usize = 32;
/// Length of the relay's reply.
pub const FAST_REPLY_LEN: usize = 64;

/// `TooShort` or `TooLong` for a message that is not exactly `want` bytes.
fn wrong_length(got: usize, want: usize) -> HandshakeError {
    if got < want {
        HandshakeError::TooShort { got }
    } else {
        HandshakeError::TooLong { got, max: want }
    }
}

/// The CREATE hdata `X` (exactly [`FAST_CLIENT_LEN`] bytes). `X` is key material (the keys
/// come from `X | Y` alone), so it is wiped on drop and never printed.
pub struct FastCreate {
    x: Zeroizing<[u8; 32]>,
}

impl FastCreate {
    /// Parses CREATE hdata: exactly 32 bytes, any value.
    pub fn parse(msg: &[u8]) -> Result<Self, HandshakeError> {
        <Self as Readable>::parse(msg).map_err(|_| wrong_length(msg.len(), FAST_CLIENT_LEN))
    }

    /// The wire encoding (the inverse of [`Self::parse`]). Cannot fail (a growable buffer
    /// and no length prefix); a failure would be [`HandshakeError::Internal`].
    pub fn encode(&self) -> Result<Vec<u8>, HandshakeError> {
        Writeable::encode(self).map_err(|_| HandshakeError::Internal)
    }
}

impl Readable for FastCreate {
    type Error = bytes::Error;
    fn take_from(r: &mut Reader<'_>) -> bytes::Result<Self> {
        Ok(Self {
            x: Zeroizing::new(*r.array_ref("client key material")?),
        })
    }
}

impl Writeable for FastCreate {
    type Error = bytes::Error;
    fn write_onto(&self, w: &mut Writer<'_>) -> bytes::Result<()> {
        w.put(&self.x[..], "client key material")
    }
}

impl std::fmt::Debug for FastCreate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FastCreate(..)")
    }
}

/// The CREATED hdata `Y | AUTH` (exactly [`FAST_REPLY_LEN`] bytes), split but not checked:
/// [`FastClientState::finish`] checks `AUTH`. `Y` is key material: wiped on drop, never
/// printed.
pub struct FastCreated {
    y: Zeroizing<[u8; 32]>,
    auth: [u8; 32],
}

impl FastCreated {
    /// Parses CREATED hdata: exactly 64 bytes, any value.
    pub fn parse(reply: &[u8]) -> Result<Self, HandshakeError> {
        <Self as Readable>::parse(reply).map_err(|_| wrong_length(reply.len(), FAST_REPLY_LEN))
    }

    /// The wire encoding (the inverse of [`Self::parse`]); cannot fail, as
    /// [`FastCreate::encode`].
    pub fn encode(&self) -> Result<Vec<u8>, HandshakeError> {
        Writeable::encode(self).map_err(|_| HandshakeError::Internal)
    }
}

impl Readable for FastCreated {
    type Error = bytes::Error;
    fn take_from(r: &mut Reader<'_>) -> bytes::Result<Self> {
        Ok(Self {
            y: Zeroizing::new(*r.array_ref("relay key material")?),
            auth: r.array("auth")?,
        })
    }
}

impl Writeable for FastCreated {
    type Error = bytes::Error;
    fn write_onto(&self, w: &mut Writer<'_>) -> bytes::Result<()> {
        w.put(&self.y[..], "relay key material")?;
        w.put(&self.auth, "auth")
    }
}

impl std::fmt::Debug for FastCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FastCreated(..)")
    }
}

/// The client's secret between CREATE and CREATED.
pub struct FastClientState {
    x: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for FastClientState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FastClientState(..)")
    }
}

fn derive(x: &[u8; 32], y: &[u8; 32]) -> (CircuitKeys, Zeroizing<[u8; 32]>) {
    let mut ikm = Zeroizing::new([0u8; 64]);
    for (to, from) in ikm.iter_mut().zip(x.iter().chain(y)) {
        *to = *from;
    }
    // Not `Hkdf::new`: it drops the pseudorandom key without wiping it.
    let hk = hkdf_extract(FAST_PROTOID, &[&ikm[..]]);
    let mut okm = Zeroizing::new([0u8; CIRCUIT_KEYS_LEN + 32]);
    // 224 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
    let _ = hk.expand(b"allium-fast-1:keys", &mut okm[..]);
    let mut keys = Zeroizing::new([0u8; CIRCUIT_KEYS_LEN]);
    let mut auth = Zeroizing::new([0u8; 32]);
    for (to, from) in keys.iter_mut().chain(auth.iter_mut()).zip(okm.iter()) {
        *to = *from;
    }
    (CircuitKeys::from_bytes(&keys), auth)
}

/// Client: the CREATE message.
pub fn fast_client_start<R: CryptoRng + ?Sized>(rng: &mut R) -> (FastClientState, Vec<u8>) {
    let mut x = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(&mut x[..]);
    let msg = x.to_vec();
    (FastClientState { x }, msg)
}

impl FastClientState {
    /// Client: checks the CREATED reply and derives the circuit keys.
    pub fn finish(self, reply: &[u8]) -> Result<CircuitKeys, HandshakeError> {
        self.finish_parsed(&FastCreated::parse(reply)?)
    }

    /// The check of [`Self::finish`]: `AUTH` compared in constant time.
    fn finish_parsed(self, reply: &FastCreated) -> Result<CircuitKeys, HandshakeError> {
        let (keys, expected) = derive(&self.x, &reply.y);
        if bool::from(expected.ct_eq(&reply.auth)) {
            Ok(keys)
        } else {
            Err(HandshakeError::ReplyAuth)
        }
    }
}

/// Relay: answers a CREATE message; returns the circuit keys and the CREATED reply.
pub fn fast_relay<R: CryptoRng + ?Sized>(
    rng: &mut R,
    msg: &[u8],
) -> Result<(CircuitKeys, Vec<u8>), HandshakeError> {
    let create = FastCreate::parse(msg)?;
    let mut y = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(&mut y[..]);
    let (keys, auth) = derive(&create.x, &y);
    let reply = FastCreated { y, auth: *auth };
    Ok((keys, reply.encode()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{ClientLayers, RelayCrypto};

    #[test]
    fn round_trip_and_tamper() {
        let mut rng = rand::rng();
        let (state, msg) = fast_client_start(&mut rng);
        let (relay_keys, reply) = fast_relay(&mut rng, &msg).unwrap();
        let client_keys = state.finish(&reply).unwrap();
        // Same keys: a cell wrapped by the client is recognised by the relay.
        let mut layers = ClientLayers::new();
        layers.push_hop(&client_keys).unwrap();
        let mut relay = RelayCrypto::new(&relay_keys);
        let mut body = [7u8; 512];
        layers
            .encrypt_forward(&mut body, 0, crate::crypto::CellKind::Relay)
            .unwrap();
        assert!(matches!(
            relay
                .decrypt_forward(crate::crypto::CellKind::Relay, &mut body)
                .unwrap(),
            crate::crypto::Recognition::Recognised { .. }
        ));
        for i in 0..reply.len() {
            let (state, msg) = fast_client_start(&mut rng);
            let (_, mut reply) = fast_relay(&mut rng, &msg).unwrap();
            reply[i] ^= 1;
            assert!(state.finish(&reply).is_err(), "flip at {i}");
        }
        assert!(fast_relay(&mut rng, &msg[..31]).is_err());
    }

    #[test]
    fn parsers_take_exact_lengths_only() {
        assert!(matches!(
            FastCreate::parse(&[0; 31]),
            Err(HandshakeError::TooShort { got: 31 })
        ));
        assert!(matches!(
            FastCreate::parse(&[0; 33]),
            Err(HandshakeError::TooLong { got: 33, max: 32 })
        ));
        assert!(matches!(
            FastCreated::parse(&[0; 63]),
            Err(HandshakeError::TooShort { got: 63 })
        ));
        assert!(matches!(
            FastCreated::parse(&[0; 65]),
            Err(HandshakeError::TooLong { got: 65, max: 64 })
        ));
        let reply: Vec<u8> = (0..64).collect();
        assert_eq!(
            FastCreated::parse(&reply).unwrap().encode().as_ref(),
            Ok(&reply)
        );
        // Secrets never reach a log line.
        assert_eq!(
            format!("{:?}", FastCreated::parse(&reply).unwrap()),
            "FastCreated(..)"
        );
    }
}
