//! The two `allium-ntor-1` messages as bytes: split and encoded with exact lengths, checked
//! against no key.

use super::{
    HandshakeError, AEAD_TAG_LEN, CLIENT_MSG_HEADER_LEN, MAX_HANDSHAKE_LEN, REPLY_HEADER_LEN,
};
use crate::crypto::keys::OnionPublic;

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
/// not checked against any key: [`relay_handshake`](super::relay_handshake) does that. Every value of this type
/// encodes to at most [`MAX_HANDSHAKE_LEN`] bytes with `ext_ct` at least its AEAD tag, and
/// [`Self::parse`] accepts exactly the encodings of such values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NtorClientMsg<'a> {
    pub(super) id: &'a [u8; 32],
    pub(super) onion_key: &'a [u8; 32],
    pub(super) x: &'a [u8; 32],
    pub(super) ext_ct: &'a [u8],
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
/// checked: [`ClientHandshakeState::finish`](super::ClientHandshakeState::finish) does that. Same length rules as
/// [`NtorClientMsg`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NtorReply<'a> {
    pub(super) y: &'a [u8; 32],
    pub(super) auth: &'a [u8; 32],
    pub(super) ext_ct: &'a [u8],
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
