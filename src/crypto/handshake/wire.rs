//! The two `allium-ntor-1` messages as bytes: split and encoded with exact lengths, checked
//! against no key.
//!
//! The messages borrow their fields from the input (no copy of the ciphertext), so they are
//! read with a [`Reader`] by an inherent `parse` rather than through [`crate::bytes::Readable`],
//! whose values cannot borrow from the reader; they are written through [`Writeable`].

use super::{
    HandshakeError, AEAD_TAG_LEN, CLIENT_MSG_HEADER_LEN, MAX_HANDSHAKE_LEN, REPLY_HEADER_LEN,
};
use crate::bytes::{self, Reader, Writeable, Writer};
use crate::crypto::keys::OnionPublic;

/// Takes the `len(u16 BE) | ct` that ends a message and checks the length field matches
/// the bytes after it exactly. `total` is the whole message's length, for the error.
fn take_ext<'a>(r: &mut Reader<'a>, total: usize) -> Result<&'a [u8], HandshakeError> {
    let declared = usize::from(
        r.u16("extension length")
            .map_err(|_| HandshakeError::TooShort { got: total })?,
    );
    let ct = r.take_rest();
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

/// Takes one 32-byte field of a message's fixed part; a short message is `TooShort`.
fn take32<'a>(
    r: &mut Reader<'a>,
    field: &'static str,
    total: usize,
) -> Result<&'a [u8; 32], HandshakeError> {
    r.array_ref(field)
        .map_err(|_| HandshakeError::TooShort { got: total })
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
        let mut r = Reader::new(msg);
        let id = take32(&mut r, "identity", total)?;
        let onion_key = take32(&mut r, "onion key", total)?;
        let x = take32(&mut r, "client key", total)?;
        let ext_ct = take_ext(&mut r, total)?;
        Ok(Self {
            id,
            onion_key,
            x,
            ext_ct,
        })
    }

    /// The wire encoding (the inverse of [`Self::parse`]). Cannot fail for a value built by
    /// [`Self::new`] or [`Self::parse`]; a failure would be [`HandshakeError::Internal`].
    pub fn encode(&self) -> Result<Vec<u8>, HandshakeError> {
        Writeable::encode(self).map_err(|_| HandshakeError::Internal)
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

impl Writeable for NtorClientMsg<'_> {
    type Error = bytes::Error;
    fn write_onto(&self, w: &mut Writer<'_>) -> bytes::Result<()> {
        w.put(self.id, "identity")?;
        w.put(self.onion_key, "onion key")?;
        w.put(self.x, "client key")?;
        w.u16_prefixed(self.ext_ct, "extension")
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
        let mut r = Reader::new(reply);
        let y = take32(&mut r, "relay key", total)?;
        let auth = take32(&mut r, "auth", total)?;
        let ext_ct = take_ext(&mut r, total)?;
        Ok(Self { y, auth, ext_ct })
    }

    /// The wire encoding (the inverse of [`Self::parse`]); cannot fail, as
    /// [`NtorClientMsg::encode`].
    pub fn encode(&self) -> Result<Vec<u8>, HandshakeError> {
        Writeable::encode(self).map_err(|_| HandshakeError::Internal)
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

impl Writeable for NtorReply<'_> {
    type Error = bytes::Error;
    fn write_onto(&self, w: &mut Writer<'_>) -> bytes::Result<()> {
        w.put(self.y, "relay key")?;
        w.put(self.auth, "auth")?;
        w.u16_prefixed(self.ext_ct, "extension")
    }
}
