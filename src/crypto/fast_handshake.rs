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

use hkdf::Hkdf;
use rand::CryptoRng;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::crypto::circuit_keys::{CircuitKeys, CIRCUIT_KEYS_LEN};
use crate::crypto::handshake::HandshakeError;

/// Protocol id (HKDF salt).
pub const FAST_PROTOID: &[u8] = b"allium-fast-1";
/// Length of the client message.
pub const FAST_CLIENT_LEN: usize = 32;
/// Length of the relay's reply.
pub const FAST_REPLY_LEN: usize = 64;

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
    ikm[..32].copy_from_slice(x);
    ikm[32..].copy_from_slice(y);
    let hk = Hkdf::<Sha256>::new(Some(FAST_PROTOID), &ikm[..]);
    let mut okm = Zeroizing::new([0u8; CIRCUIT_KEYS_LEN + 32]);
    // 224 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
    let _ = hk.expand(b"allium-fast-1:keys", &mut okm[..]);
    let mut keys = Zeroizing::new([0u8; CIRCUIT_KEYS_LEN]);
    keys.copy_from_slice(&okm[..CIRCUIT_KEYS_LEN]);
    let mut auth = Zeroizing::new([0u8; 32]);
    auth.copy_from_slice(&okm[CIRCUIT_KEYS_LEN..]);
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
        let (y, auth) = split_reply(reply)?;
        let (keys, expected) = derive(&self.x, &y);
        if bool::from(expected.ct_eq(&auth)) {
            Ok(keys)
        } else {
            Err(HandshakeError::ReplyAuth)
        }
    }
}

fn split_reply(reply: &[u8]) -> Result<([u8; 32], [u8; 32]), HandshakeError> {
    if reply.len() != FAST_REPLY_LEN {
        return Err(HandshakeError::TooShort { got: reply.len() });
    }
    let (y, auth) = reply.split_at(32);
    let y: [u8; 32] = y
        .try_into()
        .map_err(|_| HandshakeError::TooShort { got: reply.len() })?;
    let auth: [u8; 32] = auth
        .try_into()
        .map_err(|_| HandshakeError::TooShort { got: reply.len() })?;
    Ok((y, auth))
}

/// Relay: answers a CREATE message; returns the circuit keys and the CREATED reply.
pub fn fast_relay<R: CryptoRng + ?Sized>(
    rng: &mut R,
    msg: &[u8],
) -> Result<(CircuitKeys, Vec<u8>), HandshakeError> {
    let x: [u8; 32] = msg
        .try_into()
        .map_err(|_| HandshakeError::TooShort { got: msg.len() })?;
    let mut y = [0u8; 32];
    rng.fill_bytes(&mut y);
    let (keys, auth) = derive(&x, &y);
    let mut reply = y.to_vec();
    reply.extend_from_slice(&auth[..]);
    Ok((keys, reply))
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
}
