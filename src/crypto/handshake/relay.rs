//! The relay side of `allium-ntor-1`: check the client message, answer it.

use rand::CryptoRng;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::kdf::{check_contributory, client_msg_key, dh, open, seal, Transcript};
use super::wire::{NtorClientMsg, NtorReply};
use super::{HandshakeError, MAX_REPLY_EXT_LEN};
use crate::crypto::circuit_keys::CircuitKeys;
use crate::crypto::keys::OnionPublic;
use crate::crypto::onion_keys::RelayOnionKeys;

/// Relay side: validates and answers a client message.
///
/// `reply_ext` sees the decrypted client extension and returns the reply extension
/// (at most [`MAX_REPLY_EXT_LEN`] bytes). Returns the circuit keys, the reply message to
/// send, and the client extension.
pub fn relay_handshake<R, F>(
    rng: &mut R,
    keys: &RelayOnionKeys,
    msg: &[u8],
    reply_ext: F,
) -> Result<(CircuitKeys, Vec<u8>, Vec<u8>), HandshakeError>
where
    R: CryptoRng + ?Sized,
    F: FnOnce(&[u8]) -> Vec<u8>,
{
    let mut y = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(&mut y[..]);
    relay_handshake_with_secret(&y, keys, msg, reply_ext)
}

/// [`relay_handshake`] with an explicit ephemeral secret `y`. For test vectors only.
pub fn relay_handshake_with_secret<F>(
    y: &[u8; 32],
    keys: &RelayOnionKeys,
    msg: &[u8],
    reply_ext: F,
) -> Result<(CircuitKeys, Vec<u8>, Vec<u8>), HandshakeError>
where
    F: FnOnce(&[u8]) -> Vec<u8>,
{
    relay_respond(y, keys, &NtorClientMsg::parse(msg)?, reply_ext)
}

/// The relay's checks and answer on a parsed client message: identity, onion key,
/// `X25519(b, X)` contributory, the client extension's AEAD tag, `X25519(y, X)`
/// contributory; then the key schedule and the reply.
fn relay_respond<F>(
    y: &[u8; 32],
    keys: &RelayOnionKeys,
    msg: &NtorClientMsg<'_>,
    reply_ext: F,
) -> Result<(CircuitKeys, Vec<u8>, Vec<u8>), HandshakeError>
where
    F: FnOnce(&[u8]) -> Vec<u8>,
{
    let (id, b, x, client_ext_ct) = (msg.id, msg.onion_key, msg.x, msg.ext_ct);
    // Public values: ordinary comparisons are fine.
    if id != keys.identity().as_bytes() {
        return Err(HandshakeError::WrongIdentity);
    }
    let onion = keys
        .find(&OnionPublic::from_bytes(*b))
        .ok_or(HandshakeError::UnknownOnionKey)?;
    let secret_xb = check_contributory(onion.diffie_hellman(x))?;
    let client_key = client_msg_key(&secret_xb, id, b, x)?;
    let client_ad = [id.as_slice(), b, x].concat();
    let client_ext =
        open(&client_key, &client_ad, client_ext_ct).ok_or(HandshakeError::ClientExtensionAuth)?;

    let y = StaticSecret::from(*y);
    let y_pub = PublicKey::from(&y).to_bytes();
    let secret_xy = dh(&y, x)?;
    let transcript = Transcript {
        id,
        b,
        x,
        y: &y_pub,
        client_ext_ct,
    };
    let session = transcript.session_keys(&secret_xy, &secret_xb)?;

    let reply_plain = Zeroizing::new(reply_ext(&client_ext));
    if reply_plain.len() > MAX_REPLY_EXT_LEN {
        return Err(HandshakeError::ExtensionTooLong {
            len: reply_plain.len(),
            max: MAX_REPLY_EXT_LEN,
        });
    }
    let reply_ext_ct = seal(&session.reply_key, &transcript.reply_ad(), &reply_plain)?;
    let auth = transcript.auth(&session.auth_key, &reply_ext_ct)?;
    let reply = NtorReply::new(&y_pub, &auth, &reply_ext_ct)?.encode()?;
    Ok((CircuitKeys::from_bytes(&session.circuit), reply, client_ext))
}
