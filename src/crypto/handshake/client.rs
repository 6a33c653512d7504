//! The client side of `allium-ntor-1`: send the client message, check the relay's reply.

use core::fmt;

use rand::CryptoRng;
use subtle::ConstantTimeEq;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::kdf::{client_msg_key, dh, open, seal, Transcript};
use super::wire::{NtorClientMsg, NtorReply};
use super::{HandshakeError, MAX_CLIENT_EXT_LEN};
use crate::crypto::cert::VerifiedOnionKey;
use crate::crypto::circuit_keys::CircuitKeys;
use crate::crypto::keys::{IdentityPublic, OnionPublic};

/// Client state between sending the client message and receiving the reply. Holds the
/// ephemeral secret (zeroized on drop); single use, consumed by [`Self::finish`].
pub struct ClientHandshakeState {
    x: StaticSecret,
    x_pub: [u8; 32],
    id: IdentityPublic,
    b: OnionPublic,
    secret_xb: Zeroizing<[u8; 32]>,
    client_ext_ct: Vec<u8>,
}

impl fmt::Debug for ClientHandshakeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientHandshakeState")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Starts a handshake with the relay `id` whose onion key was verified from its
/// certificate. `ext` (at most [`MAX_CLIENT_EXT_LEN`] bytes) is sent encrypted to the
/// relay's onion key. Returns the state to keep and the message to send.
pub fn client_handshake_start<R: CryptoRng + ?Sized>(
    rng: &mut R,
    id: &IdentityPublic,
    onion: &VerifiedOnionKey,
    ext: &[u8],
) -> Result<(ClientHandshakeState, Vec<u8>), HandshakeError> {
    let mut x = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(&mut x[..]);
    client_handshake_start_with_secret(&x, id, onion, ext)
}

/// [`client_handshake_start`] with an explicit ephemeral secret `x`. For test vectors
/// only: reusing `x` destroys forward secrecy and unlinkability.
pub fn client_handshake_start_with_secret(
    x: &[u8; 32],
    id: &IdentityPublic,
    onion: &VerifiedOnionKey,
    ext: &[u8],
) -> Result<(ClientHandshakeState, Vec<u8>), HandshakeError> {
    if onion.identity() != id {
        return Err(HandshakeError::CertIdentityMismatch);
    }
    if ext.len() > MAX_CLIENT_EXT_LEN {
        return Err(HandshakeError::ExtensionTooLong {
            len: ext.len(),
            max: MAX_CLIENT_EXT_LEN,
        });
    }
    let x = StaticSecret::from(*x);
    let x_pub = PublicKey::from(&x).to_bytes();
    let b = *onion.onion_key();
    let secret_xb = dh(&x, b.as_bytes())?;
    let key = client_msg_key(&secret_xb, id.as_bytes(), b.as_bytes(), &x_pub)?;
    let ad = [id.as_bytes().as_slice(), b.as_bytes(), &x_pub].concat();
    let client_ext_ct = seal(&key, &ad, ext)?;
    let msg = NtorClientMsg::new(id.as_bytes(), b.as_bytes(), &x_pub, &client_ext_ct)?.encode()?;
    let state = ClientHandshakeState {
        x,
        x_pub,
        id: *id,
        b,
        secret_xb,
        client_ext_ct,
    };
    Ok((state, msg))
}

impl ClientHandshakeState {
    /// Processes the relay's reply. On success returns the circuit keys and the decrypted
    /// reply extension. Any modification of the reply is an error.
    pub fn finish(self, reply: &[u8]) -> Result<(CircuitKeys, Vec<u8>), HandshakeError> {
        self.finish_parsed(&NtorReply::parse(reply)?)
    }

    /// The checks of [`Self::finish`] on a parsed reply: `X25519(x, Y)` contributory, `auth`
    /// (constant time), then the reply extension's AEAD tag.
    fn finish_parsed(
        self,
        reply: &NtorReply<'_>,
    ) -> Result<(CircuitKeys, Vec<u8>), HandshakeError> {
        let (y, auth, reply_ext_ct) = (reply.y, reply.auth, reply.ext_ct);
        let secret_xy = dh(&self.x, y)?;
        let transcript = Transcript {
            id: self.id.as_bytes(),
            b: self.b.as_bytes(),
            x: &self.x_pub,
            y,
            client_ext_ct: &self.client_ext_ct,
        };
        let keys = transcript.session_keys(&secret_xy, &self.secret_xb)?;
        let expected = transcript.auth(&keys.auth_key, reply_ext_ct)?;
        if !bool::from(expected.ct_eq(auth)) {
            return Err(HandshakeError::ReplyAuth);
        }
        let reply_ext = open(&keys.reply_key, &transcript.reply_ad(), reply_ext_ct)
            .ok_or(HandshakeError::ReplyExtensionAuth)?;
        Ok((CircuitKeys::from_bytes(&keys.circuit), reply_ext))
    }
}
