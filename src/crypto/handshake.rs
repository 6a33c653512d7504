//! The `allium-ntor-1` circuit handshake: one-way authenticated (the client authenticates
//! the relay, never the reverse) and forward secret, shaped like Tor's ntor v3.
//!
//! Notation: `ID` relay identity (ed25519, 32 bytes), `b`/`B` relay onion key (x25519),
//! `x`/`X` client ephemeral, `y`/`Y` relay ephemeral, `|` concatenation.
//!
//! ```text
//! client -> relay:  ID(32) | B(32) | X(32) | ext_len(u16 BE) | ext_ct(ext_len)
//!     secret_xb  = X25519(x, B)                       (rejected if all-zero)
//!     client_key = HKDF-SHA256(salt=PROTOID, ikm=secret_xb,
//!                              info="allium-ntor-1:client-msg" | ID | B | X)[0..32]
//!     ext_ct     = ChaCha20-Poly1305(client_key, nonce=0^12, ad=ID | B | X, client_ext)
//! relay -> client:  Y(32) | auth(32) | ext_len(u16 BE) | ext_ct(ext_len)
//!     secret_xy  = X25519(y, X)                       (rejected if all-zero)
//!     key_seed   = HKDF-Extract(salt=PROTOID,
//!                  ikm=secret_xy | secret_xb | ID | B | X | Y | client_ext_ct)
//!     reply_key  = HKDF-Expand(key_seed, "allium-ntor-1:reply-msg", 32)
//!     ext_ct     = ChaCha20-Poly1305(reply_key, nonce=0^12, ad=ID | B | X | Y, reply_ext)
//!     auth_key   = HKDF-Expand(key_seed, "allium-ntor-1:auth", 32)
//!     auth       = HMAC-SHA256(auth_key, "allium-ntor-1:server" | ID | B | X | Y
//!                  | u16(len client_ext_ct) | client_ext_ct | u16(len reply_ext_ct) | reply_ext_ct)
//!     keys       = HKDF-Expand(key_seed, "allium-ntor-1:circuit-keys", 192)
//!                = Kf_enc | Kf_mac | Kb_enc | Kb_mac
//! ```
//!
//! The extension ciphertexts always carry a 16-byte AEAD tag, even for an empty extension,
//! so `ext_len >= 16`. Both messages are at most [`MAX_HANDSHAKE_LEN`] bytes so they fit
//! in a CREATE/CREATED cell.
//!
//! Parsing and checking are separate: [`NtorClientMsg::parse`] and [`NtorReply::parse`]
//! only split the layout (exact lengths, no trailing bytes) and touch no key;
//! [`relay_handshake`] and [`ClientHandshakeState::finish`] parse, then check identity,
//! onion key, Diffie-Hellman outputs, MAC and AEAD tags.

use core::fmt;

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, KeyInit as _};
use hkdf::{Hkdf, HkdfExtract};
use hmac::{Hmac, Mac};
use rand::CryptoRng;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use x25519_dalek::{PublicKey, SharedSecret, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

use crate::cell::consts::CELL_BODY_LEN;
use crate::crypto::cert::VerifiedOnionKey;
use crate::crypto::circuit_keys::{CircuitKeys, CIRCUIT_KEYS_LEN};
use crate::crypto::keys::{IdentityPublic, OnionPublic};
use crate::crypto::onion_keys::RelayOnionKeys;

/// Protocol identifier; the HKDF salt and the prefix of every label.
pub const PROTOID: &[u8] = b"allium-ntor-1";
const LABEL_CLIENT_MSG: &[u8] = b"allium-ntor-1:client-msg";
const LABEL_REPLY_MSG: &[u8] = b"allium-ntor-1:reply-msg";
const LABEL_AUTH: &[u8] = b"allium-ntor-1:auth";
const LABEL_CIRCUIT_KEYS: &[u8] = b"allium-ntor-1:circuit-keys";
const AUTH_PREFIX: &[u8] = b"allium-ntor-1:server";

/// Maximum length of either handshake message: a cell body minus a 2-byte handshake type
/// and a 2-byte length, as in a CREATE2-style cell.
pub const MAX_HANDSHAKE_LEN: usize = CELL_BODY_LEN - 4;
/// Length of the ChaCha20-Poly1305 tag inside every extension ciphertext.
pub const AEAD_TAG_LEN: usize = 16;
/// Fixed part of the client message: `ID | B | X | ext_len`.
pub const CLIENT_MSG_HEADER_LEN: usize = 32 + 32 + 32 + 2;
/// Fixed part of the reply: `Y | auth | ext_len`.
pub const REPLY_HEADER_LEN: usize = 32 + 32 + 2;
/// Largest client extension plaintext that fits.
pub const MAX_CLIENT_EXT_LEN: usize = MAX_HANDSHAKE_LEN - CLIENT_MSG_HEADER_LEN - AEAD_TAG_LEN;
/// Largest reply extension plaintext that fits.
pub const MAX_REPLY_EXT_LEN: usize = MAX_HANDSHAKE_LEN - REPLY_HEADER_LEN - AEAD_TAG_LEN;

/// Why a handshake failed. The caller answers every one of them by refusing/closing the
/// circuit; the variants exist for logging and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The message is shorter than its fixed header.
    #[error("handshake message too short ({got} bytes)")]
    TooShort {
        /// Length received.
        got: usize,
    },
    /// The message is longer than [`MAX_HANDSHAKE_LEN`].
    #[error("handshake message too long ({got} bytes, max {max})")]
    TooLong {
        /// Length received.
        got: usize,
        /// Limit.
        max: usize,
    },
    /// The extension length field disagrees with the bytes that follow it.
    #[error("extension length field says {declared} bytes but {actual} follow")]
    LengthMismatch {
        /// Value of the length field.
        declared: usize,
        /// Bytes actually present.
        actual: usize,
    },
    /// The extension ciphertext is shorter than its AEAD tag.
    #[error("extension ciphertext shorter than its AEAD tag")]
    ExtensionTooShort,
    /// A caller-supplied extension is too long to fit in a cell.
    #[error("extension of {len} bytes exceeds the maximum of {max}")]
    ExtensionTooLong {
        /// Length given.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The verified onion key was certified by a different identity than the one given.
    #[error("onion key is certified by a different identity")]
    CertIdentityMismatch,
    /// The client named a different relay identity.
    #[error("handshake is for a different relay identity")]
    WrongIdentity,
    /// The client used an onion key that is neither our current nor previous one.
    #[error("handshake uses an unknown onion key")]
    UnknownOnionKey,
    /// A Diffie-Hellman output was all-zero: the peer sent a low-order point.
    #[error("peer sent a low-order (non-contributory) x25519 point")]
    NonContributory,
    /// The client extension failed to decrypt (wrong key or modified).
    #[error("client extension failed authentication")]
    ClientExtensionAuth,
    /// The reply's `auth` did not match: not from the relay holding the onion key, or
    /// modified.
    #[error("handshake reply failed authentication")]
    ReplyAuth,
    /// The reply extension failed to decrypt.
    #[error("reply extension failed authentication")]
    ReplyExtensionAuth,
    /// Internal KDF/AEAD failure (cannot happen with the fixed sizes used here).
    #[error("internal key-derivation failure")]
    Internal,
}

type HmacSha256 = Hmac<Sha256>;

/// Concatenates `parts` into an array; the caller sizes `N` to their total length.
fn concat<const N: usize>(parts: &[&[u8]]) -> [u8; N] {
    let mut out = [0u8; N];
    for (o, b) in out.iter_mut().zip(parts.iter().flat_map(|p| p.iter())) {
        *o = *b;
    }
    out
}

/// X25519, rejecting an all-zero (non-contributory) result.
fn dh(secret: &StaticSecret, peer: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>, HandshakeError> {
    check_contributory(secret.diffie_hellman(&PublicKey::from(*peer)))
}

fn check_contributory(shared: SharedSecret) -> Result<Zeroizing<[u8; 32]>, HandshakeError> {
    if !shared.was_contributory() {
        return Err(HandshakeError::NonContributory);
    }
    Ok(Zeroizing::new(shared.to_bytes()))
}

/// HKDF-Extract of the concatenated `ikm_parts`, ready for Expand. The pseudorandom key
/// that `Hkdf::new` would drop without wiping is zeroized here. (The HMAC state kept in the
/// returned value is wiped on drop: `hmac` and `sha2` are built with `zeroize`.)
pub(crate) fn hkdf_extract(salt: &[u8], ikm_parts: &[&[u8]]) -> Hkdf<Sha256> {
    let mut extract = HkdfExtract::<Sha256>::new(Some(salt));
    for part in ikm_parts {
        extract.input_ikm(part);
    }
    let (mut prk, hk) = extract.finalize();
    prk.as_mut_slice().zeroize();
    hk
}

/// Key for the client extension.
fn client_msg_key(
    secret_xb: &[u8; 32],
    id: &[u8; 32],
    b: &[u8; 32],
    x: &[u8; 32],
) -> Result<Zeroizing<[u8; 32]>, HandshakeError> {
    let hk = hkdf_extract(PROTOID, &[secret_xb]);
    let mut key = Zeroizing::new([0u8; 32]);
    hk.expand_multi_info(&[LABEL_CLIENT_MSG, id, b, x], &mut key[..])
        .map_err(|_| HandshakeError::Internal)?;
    Ok(key)
}

/// Everything derived from `key_seed`.
struct SessionKeys {
    reply_key: Zeroizing<[u8; 32]>,
    auth_key: Zeroizing<[u8; 32]>,
    circuit: Zeroizing<[u8; CIRCUIT_KEYS_LEN]>,
}

/// The public transcript values bound into the key seed and the auth MAC.
struct Transcript<'a> {
    id: &'a [u8; 32],
    b: &'a [u8; 32],
    x: &'a [u8; 32],
    y: &'a [u8; 32],
    client_ext_ct: &'a [u8],
}

impl Transcript<'_> {
    /// `ID | B | X | Y`, the reply extension's associated data.
    fn reply_ad(&self) -> [u8; 128] {
        concat(&[self.id, self.b, self.x, self.y])
    }

    fn session_keys(
        &self,
        secret_xy: &[u8; 32],
        secret_xb: &[u8; 32],
    ) -> Result<SessionKeys, HandshakeError> {
        let mut extract = HkdfExtract::<Sha256>::new(Some(PROTOID));
        for part in [
            secret_xy.as_slice(),
            secret_xb,
            self.id,
            self.b,
            self.x,
            self.y,
            self.client_ext_ct,
        ] {
            extract.input_ikm(part);
        }
        let (mut prk, hk) = extract.finalize();
        prk.as_mut_slice().zeroize();
        let mut keys = SessionKeys {
            reply_key: Zeroizing::new([0; 32]),
            auth_key: Zeroizing::new([0; 32]),
            circuit: Zeroizing::new([0; CIRCUIT_KEYS_LEN]),
        };
        let outputs: [(&[u8], &mut [u8]); 3] = [
            (LABEL_REPLY_MSG, &mut keys.reply_key[..]),
            (LABEL_AUTH, &mut keys.auth_key[..]),
            (LABEL_CIRCUIT_KEYS, &mut keys.circuit[..]),
        ];
        for (label, out) in outputs {
            hk.expand(label, out)
                .map_err(|_| HandshakeError::Internal)?;
        }
        Ok(keys)
    }

    /// `auth` over the whole transcript including the reply extension ciphertext.
    fn auth(&self, auth_key: &[u8; 32], reply_ext_ct: &[u8]) -> Result<[u8; 32], HandshakeError> {
        let mut mac = HmacSha256::new_from_slice(auth_key).map_err(|_| HandshakeError::Internal)?;
        // Both lengths fit in u16 because both messages were bounded before this point.
        let client_len =
            u16::try_from(self.client_ext_ct.len()).map_err(|_| HandshakeError::Internal)?;
        let reply_len = u16::try_from(reply_ext_ct.len()).map_err(|_| HandshakeError::Internal)?;
        for part in [
            AUTH_PREFIX,
            self.id,
            self.b,
            self.x,
            self.y,
            &client_len.to_be_bytes(),
            self.client_ext_ct,
            &reply_len.to_be_bytes(),
            reply_ext_ct,
        ] {
            mac.update(part);
        }
        Ok(mac.finalize().into_bytes().into())
    }
}

/// ChaCha20-Poly1305 with a single-use key and the zero nonce.
fn seal(key: &[u8; 32], ad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, HandshakeError> {
    ChaCha20Poly1305::new(key.into())
        .encrypt(
            &[0u8; 12].into(),
            Payload {
                msg: plaintext,
                aad: ad,
            },
        )
        .map_err(|_| HandshakeError::Internal)
}

/// Inverse of [`seal`]; `None` if the ciphertext or AD were modified.
fn open(key: &[u8; 32], ad: &[u8], ciphertext: &[u8]) -> Option<Vec<u8>> {
    ChaCha20Poly1305::new(key.into())
        .decrypt(
            &[0u8; 12].into(),
            Payload {
                msg: ciphertext,
                aad: ad,
            },
        )
        .ok()
}

/// Splits `len(u16 BE) | ct` and checks the length field matches exactly.
fn parse_ext(rest: &[u8], total: usize) -> Result<&[u8], HandshakeError> {
    let (len, ct) = rest
        .split_first_chunk::<2>()
        .ok_or(HandshakeError::TooShort { got: total })?;
    let declared = usize::from(u16::from_be_bytes(*len));
    if declared != ct.len() {
        return Err(HandshakeError::LengthMismatch {
            declared,
            actual: ct.len(),
        });
    }
    if declared < AEAD_TAG_LEN {
        return Err(HandshakeError::ExtensionTooShort);
    }
    Ok(ct)
}

fn check_max_len(msg: &[u8]) -> Result<(), HandshakeError> {
    if msg.len() > MAX_HANDSHAKE_LEN {
        return Err(HandshakeError::TooLong {
            got: msg.len(),
            max: MAX_HANDSHAKE_LEN,
        });
    }
    Ok(())
}

/// Fixed-size fields of a message followed by the extension ciphertext.
fn split32(rest: &[u8], total: usize) -> Result<(&[u8; 32], &[u8]), HandshakeError> {
    rest.split_first_chunk::<32>()
        .ok_or(HandshakeError::TooShort { got: total })
}

/// Checks that an extension ciphertext after a `header`-byte fixed part fits the rules a
/// parsed message obeys: at least the AEAD tag, the whole at most [`MAX_HANDSHAKE_LEN`].
fn check_ext_ct(header: usize, ext_ct: &[u8]) -> Result<(), HandshakeError> {
    let total = header.saturating_add(ext_ct.len());
    if total > MAX_HANDSHAKE_LEN {
        return Err(HandshakeError::TooLong {
            got: total,
            max: MAX_HANDSHAKE_LEN,
        });
    }
    if ext_ct.len() < AEAD_TAG_LEN {
        return Err(HandshakeError::ExtensionTooShort);
    }
    Ok(())
}

/// `fixed | u16be(len(ext_ct)) | ext_ct`.
fn encode_msg(fixed: &[&[u8; 32]], ext_ct: &[u8]) -> Result<Vec<u8>, HandshakeError> {
    let ct_len = u16::try_from(ext_ct.len()).map_err(|_| HandshakeError::Internal)?;
    let mut out = Vec::with_capacity(32 * fixed.len() + 2 + ext_ct.len());
    for field in fixed {
        out.extend_from_slice(&field[..]);
    }
    out.extend_from_slice(&ct_len.to_be_bytes());
    out.extend_from_slice(ext_ct);
    Ok(out)
}

/// The client message `ID | B | X | ext_len | ext_ct` (docs/protocol.md §4.4.1), split but
/// not checked against any key: [`relay_handshake`] does that. Every value of this type
/// encodes to at most [`MAX_HANDSHAKE_LEN`] bytes with `ext_ct` at least its AEAD tag, and
/// [`Self::parse`] accepts exactly the encodings of such values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NtorClientMsg<'a> {
    id: &'a [u8; 32],
    onion_key: &'a [u8; 32],
    x: &'a [u8; 32],
    ext_ct: &'a [u8],
}

impl<'a> NtorClientMsg<'a> {
    /// A message from its fields; refused if `ext_ct` is shorter than the AEAD tag or the
    /// message would exceed [`MAX_HANDSHAKE_LEN`].
    pub fn new(
        id: &'a [u8; 32],
        onion_key: &'a [u8; 32],
        x: &'a [u8; 32],
        ext_ct: &'a [u8],
    ) -> Result<Self, HandshakeError> {
        check_ext_ct(CLIENT_MSG_HEADER_LEN, ext_ct)?;
        Ok(Self {
            id,
            onion_key,
            x,
            ext_ct,
        })
    }

    /// Splits a client message: at most [`MAX_HANDSHAKE_LEN`] bytes, the length field equal
    /// to the number of bytes after it, at least [`AEAD_TAG_LEN`]. Touches no key.
    pub fn parse(msg: &'a [u8]) -> Result<Self, HandshakeError> {
        check_max_len(msg)?;
        let total = msg.len();
        let (id, rest) = split32(msg, total)?;
        let (onion_key, rest) = split32(rest, total)?;
        let (x, rest) = split32(rest, total)?;
        let ext_ct = parse_ext(rest, total)?;
        Ok(Self {
            id,
            onion_key,
            x,
            ext_ct,
        })
    }

    /// The wire encoding (the inverse of [`Self::parse`]).
    pub fn encode(&self) -> Result<Vec<u8>, HandshakeError> {
        encode_msg(&[self.id, self.onion_key, self.x], self.ext_ct)
    }

    /// `ID`: the relay identity the client means.
    pub fn identity(&self) -> &'a [u8; 32] {
        self.id
    }

    /// `B`: the onion key the client used.
    pub fn onion_key(&self) -> OnionPublic {
        OnionPublic::from_bytes(*self.onion_key)
    }

    /// `X`: the client's ephemeral key.
    pub fn client_key(&self) -> &'a [u8; 32] {
        self.x
    }

    /// The encrypted client extension, with its tag.
    pub fn ext_ciphertext(&self) -> &'a [u8] {
        self.ext_ct
    }
}

/// The relay's reply `Y | auth | ext_len | ext_ct` (docs/protocol.md §4.4.2), split but not
/// checked: [`ClientHandshakeState::finish`] does that. Same length rules as
/// [`NtorClientMsg`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NtorReply<'a> {
    y: &'a [u8; 32],
    auth: &'a [u8; 32],
    ext_ct: &'a [u8],
}

impl<'a> NtorReply<'a> {
    /// A reply from its fields; the same length rules as [`NtorClientMsg::new`].
    pub fn new(
        y: &'a [u8; 32],
        auth: &'a [u8; 32],
        ext_ct: &'a [u8],
    ) -> Result<Self, HandshakeError> {
        check_ext_ct(REPLY_HEADER_LEN, ext_ct)?;
        Ok(Self { y, auth, ext_ct })
    }

    /// Splits a reply: at most [`MAX_HANDSHAKE_LEN`] bytes, the length field equal to the
    /// number of bytes after it, at least [`AEAD_TAG_LEN`]. Touches no key.
    pub fn parse(reply: &'a [u8]) -> Result<Self, HandshakeError> {
        check_max_len(reply)?;
        let total = reply.len();
        let (y, rest) = split32(reply, total)?;
        let (auth, rest) = split32(rest, total)?;
        let ext_ct = parse_ext(rest, total)?;
        Ok(Self { y, auth, ext_ct })
    }

    /// The wire encoding (the inverse of [`Self::parse`]).
    pub fn encode(&self) -> Result<Vec<u8>, HandshakeError> {
        encode_msg(&[self.y, self.auth], self.ext_ct)
    }

    /// `Y`: the relay's ephemeral key.
    pub fn relay_key(&self) -> &'a [u8; 32] {
        self.y
    }

    /// `auth`: the MAC over the transcript.
    pub fn auth(&self) -> &'a [u8; 32] {
        self.auth
    }

    /// The encrypted reply extension, with its tag.
    pub fn ext_ciphertext(&self) -> &'a [u8] {
        self.ext_ct
    }
}

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
    let ad: [u8; 96] = concat(&[id.as_bytes(), b.as_bytes(), &x_pub]);
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
    let client_ad: [u8; 96] = concat(&[id, b, x]);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bytes::hex;
    use crate::crypto::cert::OnionKeyCert;
    use crate::crypto::keys::{IdentityKeypair, OnionKeypair};

    const NOW: u64 = 1_700_000_000;

    /// The fixed inputs of the test vectors (also documented in docs/protocol.md §4).
    fn vector_inputs() -> (RelayOnionKeys, VerifiedOnionKey) {
        let id = IdentityKeypair::from_secret_bytes(&[0x11; 32]);
        let onion = OnionKeypair::from_secret_bytes(&[0x22; 32]);
        let cert = OnionKeyCert::sign(&id, onion.public(), NOW + 1000);
        let verified = cert.verify(NOW).expect("valid cert");
        (RelayOnionKeys::new(id.public(), onion, None), verified)
    }

    /// Expected outputs for the fixed inputs: identity seed 0x11*32, onion secret 0x22*32,
    /// x = 0x33*32, y = 0x44*32, client ext "client-ext", reply ext "reply-ext".
    const VEC_ID: &str = "d04ab232742bb4ab3a1368bd4615e4e6d0224ab71a016baf8520a332c9778737";
    const VEC_B: &str = "0faa684ed28867b97f4a6a2dee5df8ce974e76b7018e3f22a1c4cf2678570f20";
    const VEC_CLIENT_MSG: &str = concat!(
        "d04ab232742bb4ab3a1368bd4615e4e6d0224ab71a016baf8520a332c9778737",
        "0faa684ed28867b97f4a6a2dee5df8ce974e76b7018e3f22a1c4cf2678570f20",
        "7b0d47d93427f8311160781c7c733fd89f88970aef490d8aa0ee19a4cb8a1b14",
        "001a",
        "cef53b13c9b4c2e154b79662c661d7974f84c082e905ccadbf4e",
    );
    const VEC_REPLY: &str = concat!(
        "ff2ee45601ec1b67310c7790404585ae697331eee1c1f8cf2419731c1fff3e6b",
        "9e144814751c2c3955e48035d75d480c0f35b32121736c28c64dc5964a850de4",
        "0019",
        "1714d81ac8115418b0a591e51995204d29bc687017c112a17b",
    );
    const VEC_KEYS: &str = concat!(
        "d2dc64361d1c8b2cb313551f973d65e0e41d53a2371720c8b2294cd80acf9855",
        "81c9bcf399a7ec92702858ef61a6506584852432bbfca458dad1bd928db96047",
        "4ee7331316bb3de8daff0511dbc1ce25083ad692249cd3df6bcf2327fddc7aa4",
        "e026c5813e79fa702533ec44ffc810d42b4afba1151662922acca5916d4d1cb5",
        "726f8a26040ae642cf672a4409379d24f15cb6ae9e2e28a925d8095bbc83d9e4",
        "bc885c6bed0f535e14a25af931363da513b0010294d9d39c77683ba0f9dd9d24",
    );

    fn reply_ext(_: &[u8]) -> Vec<u8> {
        b"reply-ext".to_vec()
    }

    #[test]
    fn fixed_test_vectors() {
        let (relay, verified) = vector_inputs();
        assert_eq!(relay.identity().to_string(), VEC_ID);
        assert_eq!(relay.current().public().to_string(), VEC_B);
        let (state, msg) = client_handshake_start_with_secret(
            &[0x33; 32],
            relay.identity(),
            &verified,
            b"client-ext",
        )
        .expect("start");
        assert_eq!(hex::encode(&msg), VEC_CLIENT_MSG);
        let (rkeys, reply, cext) =
            relay_handshake_with_secret(&[0x44; 32], &relay, &msg, reply_ext).expect("relay");
        assert_eq!(hex::encode(&reply), VEC_REPLY);
        assert_eq!(cext, b"client-ext");
        let (ckeys, rext) = state.finish(&reply).expect("finish");
        assert_eq!(rext, b"reply-ext");
        assert_eq!(hex::encode(&*ckeys.to_bytes()), VEC_KEYS);
        assert_eq!(hex::encode(&*rkeys.to_bytes()), VEC_KEYS);
    }

    #[test]
    fn round_trip_random_and_previous_key() {
        let mut rng = rand::rng();
        let id = IdentityKeypair::generate(&mut rng);
        let old = OnionKeypair::generate(&mut rng);
        let old_cert = OnionKeyCert::sign(&id, old.public(), NOW + 10);
        let mut relay = RelayOnionKeys::new(id.public(), old, None);
        relay.rotate(OnionKeypair::generate(&mut rng));
        // A client still holding the previous certificate succeeds.
        let verified = old_cert.verify(NOW).expect("valid");
        let ext = vec![0xa5; MAX_CLIENT_EXT_LEN];
        let (state, msg) =
            client_handshake_start(&mut rng, &id.public(), &verified, &ext).expect("start");
        assert_eq!(msg.len(), MAX_HANDSHAKE_LEN);
        let big_reply = vec![0x5a; MAX_REPLY_EXT_LEN];
        let (rkeys, reply, cext) =
            relay_handshake(&mut rng, &relay, &msg, |_| big_reply.clone()).expect("relay");
        assert_eq!(reply.len(), MAX_HANDSHAKE_LEN);
        assert_eq!(cext, ext);
        let (ckeys, rext) = state.finish(&reply).expect("finish");
        assert_eq!(rext, big_reply);
        assert_eq!(*rkeys.to_bytes(), *ckeys.to_bytes());
        // Empty extensions work too (ciphertext is the bare 16-byte tag).
        let (state, msg) =
            client_handshake_start(&mut rng, &id.public(), &verified, &[]).expect("start");
        assert_eq!(msg.len(), CLIENT_MSG_HEADER_LEN + AEAD_TAG_LEN);
        let (_, reply, cext) =
            relay_handshake(&mut rng, &relay, &msg, |_| Vec::new()).expect("relay");
        assert!(cext.is_empty());
        assert!(state.finish(&reply).is_ok());
    }

    #[test]
    fn oversized_extensions_rejected() {
        let (relay, verified) = vector_inputs();
        let ext = vec![0; MAX_CLIENT_EXT_LEN + 1];
        assert!(matches!(
            client_handshake_start_with_secret(&[0x33; 32], relay.identity(), &verified, &ext),
            Err(HandshakeError::ExtensionTooLong { .. })
        ));
        let (_, msg) =
            client_handshake_start_with_secret(&[0x33; 32], relay.identity(), &verified, &[])
                .expect("start");
        let res = relay_handshake_with_secret(&[0x44; 32], &relay, &msg, |_| {
            vec![0; MAX_REPLY_EXT_LEN + 1]
        });
        assert!(matches!(res, Err(HandshakeError::ExtensionTooLong { .. })));
    }

    #[test]
    fn wrong_identity_and_unknown_onion_key() {
        let (relay, verified) = vector_inputs();
        let (_, msg) =
            client_handshake_start_with_secret(&[0x33; 32], relay.identity(), &verified, &[])
                .expect("start");
        // Same onion key, different identity on the relay side.
        let other_id = IdentityKeypair::from_secret_bytes(&[0x55; 32]).public();
        let other =
            RelayOnionKeys::new(other_id, OnionKeypair::from_secret_bytes(&[0x22; 32]), None);
        assert_eq!(
            relay_handshake_with_secret(&[0x44; 32], &other, &msg, reply_ext).map(|_| ()),
            Err(HandshakeError::WrongIdentity)
        );
        // Right identity, but the relay no longer has that onion key.
        let rotated = RelayOnionKeys::new(
            *relay.identity(),
            OnionKeypair::from_secret_bytes(&[0x66; 32]),
            Some(OnionKeypair::from_secret_bytes(&[0x77; 32])),
        );
        assert_eq!(
            relay_handshake_with_secret(&[0x44; 32], &rotated, &msg, reply_ext).map(|_| ()),
            Err(HandshakeError::UnknownOnionKey)
        );
        // A verified key from another identity is refused client-side.
        assert_eq!(
            client_handshake_start_with_secret(&[0x33; 32], &other_id, &verified, &[]).map(|_| ()),
            Err(HandshakeError::CertIdentityMismatch)
        );
    }

    #[test]
    fn expired_certificate_yields_no_verified_key() {
        let id = IdentityKeypair::from_secret_bytes(&[0x11; 32]);
        let onion = OnionKeypair::from_secret_bytes(&[0x22; 32]);
        let cert = OnionKeyCert::sign(&id, onion.public(), NOW);
        // The client API only accepts a VerifiedOnionKey, which an expired cert cannot give.
        assert!(matches!(
            cert.verify(NOW + 1),
            Err(crate::crypto::CertError::Expired { .. })
        ));
    }

    #[test]
    fn every_reply_bit_flip_fails() {
        let (relay, verified) = vector_inputs();
        let (_, msg) = client_handshake_start_with_secret(
            &[0x33; 32],
            relay.identity(),
            &verified,
            b"client-ext",
        )
        .expect("start");
        let (_, reply, _) =
            relay_handshake_with_secret(&[0x44; 32], &relay, &msg, reply_ext).expect("relay");
        for bit in 0..reply.len() * 8 {
            let mut bad = reply.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let (state, _) = client_handshake_start_with_secret(
                &[0x33; 32],
                relay.identity(),
                &verified,
                b"client-ext",
            )
            .expect("start");
            assert!(state.finish(&bad).is_err(), "reply bit {bit} flip accepted");
        }
        // Truncated or extended replies are rejected too.
        for len in 0..reply.len() {
            let (state, _) = client_handshake_start_with_secret(
                &[0x33; 32],
                relay.identity(),
                &verified,
                b"client-ext",
            )
            .expect("start");
            assert!(state.finish(&reply[..len]).is_err());
        }
        let mut long = reply.clone();
        long.push(0);
        let (state, _) = client_handshake_start_with_secret(
            &[0x33; 32],
            relay.identity(),
            &verified,
            b"client-ext",
        )
        .expect("start");
        assert!(state.finish(&long).is_err());
    }

    #[test]
    fn every_client_msg_bit_flip_fails() {
        let (relay, verified) = vector_inputs();
        let (_, msg) =
            client_handshake_start_with_secret(&[0x33; 32], relay.identity(), &verified, b"e")
                .expect("start");
        for bit in 0..msg.len() * 8 {
            let mut bad = msg.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                relay_handshake_with_secret(&[0x44; 32], &relay, &bad, reply_ext).is_err(),
                "client msg bit {bit} flip accepted"
            );
        }
        for len in 0..msg.len() {
            assert!(
                relay_handshake_with_secret(&[0x44; 32], &relay, &msg[..len], reply_ext).is_err()
            );
        }
    }

    /// Low-order points of Curve25519 (Montgomery u-coordinates), incl. non-canonical ones.
    fn low_order_points() -> Vec<[u8; 32]> {
        let mut pts = vec![[0u8; 32]];
        let mut one = [0u8; 32];
        one[0] = 1;
        pts.push(one);
        pts.push(
            hex::decode_32("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")
                .expect("hex"),
        );
        pts.push(
            hex::decode_32("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157")
                .expect("hex"),
        );
        // p - 1 (order 2) and p, p + 1 (non-canonical encodings of 0 and 1).
        pts.push(
            hex::decode_32("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")
                .expect("hex"),
        );
        pts.push(
            hex::decode_32("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")
                .expect("hex"),
        );
        pts.push(
            hex::decode_32("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")
                .expect("hex"),
        );
        pts
    }

    #[test]
    fn low_order_x_rejected_by_relay() {
        let (relay, _) = vector_inputs();
        for point in low_order_points() {
            let mut msg = Vec::new();
            msg.extend_from_slice(relay.identity().as_bytes());
            msg.extend_from_slice(relay.current().public().as_bytes());
            msg.extend_from_slice(&point);
            msg.extend_from_slice(&16u16.to_be_bytes());
            msg.extend_from_slice(&[0u8; 16]);
            assert_eq!(
                relay_handshake_with_secret(&[0x44; 32], &relay, &msg, reply_ext).map(|_| ()),
                Err(HandshakeError::NonContributory),
                "low-order X {} accepted",
                hex::encode(&point)
            );
        }
    }

    #[test]
    fn low_order_y_and_b_rejected_by_client() {
        let (relay, verified) = vector_inputs();
        for point in low_order_points() {
            let (state, _) =
                client_handshake_start_with_secret(&[0x33; 32], relay.identity(), &verified, &[])
                    .expect("start");
            let mut reply = point.to_vec();
            reply.extend_from_slice(&[0u8; 32]);
            reply.extend_from_slice(&16u16.to_be_bytes());
            reply.extend_from_slice(&[0u8; 16]);
            assert_eq!(
                state.finish(&reply).map(|_| ()),
                Err(HandshakeError::NonContributory)
            );
            // A relay certifying a low-order onion key is refused too.
            let id = IdentityKeypair::from_secret_bytes(&[0x11; 32]);
            let cert = OnionKeyCert::sign(&id, &OnionPublic::from_bytes(point), NOW + 1);
            let bad = cert.verify(NOW).expect("signature is fine");
            assert_eq!(
                client_handshake_start_with_secret(&[0x33; 32], &id.public(), &bad, &[])
                    .map(|_| ()),
                Err(HandshakeError::NonContributory)
            );
        }
    }

    #[test]
    fn length_field_mismatch() {
        let (relay, verified) = vector_inputs();
        let (_, msg) =
            client_handshake_start_with_secret(&[0x33; 32], relay.identity(), &verified, b"abc")
                .expect("start");
        let mut bad = msg.clone();
        bad[97] = bad[97].wrapping_add(1);
        assert!(matches!(
            relay_handshake_with_secret(&[0x44; 32], &relay, &bad, reply_ext),
            Err(HandshakeError::LengthMismatch { .. })
        ));
        let too_long = vec![0u8; MAX_HANDSHAKE_LEN + 1];
        assert!(matches!(
            relay_handshake_with_secret(&[0x44; 32], &relay, &too_long, reply_ext),
            Err(HandshakeError::TooLong { .. })
        ));
    }
}
