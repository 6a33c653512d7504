//! The onion-service relay messages (commands 32–40): byte layouts only. The cryptography
//! that fills and checks their fields is in [`crate::onion::intro`] and
//! [`crate::onion::handshake`]; docs/protocol.md §8 has the full rules.
//!
//! ```text
//! ESTABLISH_INTRO        auth_key 32 | dos u8 (0|1) | [rate u32 | burst u32] | mac 32 | sig 64
//! INTRO_ESTABLISHED      empty
//! INTRODUCE1/2           auth_key 32 | X 32 | encrypted (rest, 16..=427 bytes)
//! INTRODUCE_ACK          status u8
//! ESTABLISH_RENDEZVOUS   cookie 20
//! RENDEZVOUS_ESTABLISHED empty
//! RENDEZVOUS1            cookie 20 | Y 32 | auth 32
//! RENDEZVOUS2            Y 32 | auth 32
//! ```
//!
//! Every message fits in one relay message's 491 data bytes.

use super::chan_msg::BoundedBytes;
use super::consts::MAX_RELAY_DATA;
use super::error::{CellError, CellResult};
use super::wire_enum::wire_enum;
use crate::bytes::{Readable, Reader, Writeable, Writer};

/// Length of a rendezvous cookie.
pub const REND_COOKIE_LEN: usize = 20;
/// Length of an ed25519 key, x25519 key or MAC field.
pub const KEY_LEN: usize = 32;
/// Length of an ed25519 signature.
pub const SIG_LEN: usize = 64;
/// Length of the AEAD tag every INTRODUCE ciphertext ends with.
pub const INTRODUCE_TAG_LEN: usize = 16;
/// Largest INTRODUCE ciphertext: the data field minus the auth key and `X`.
pub const MAX_INTRODUCE_ENCRYPTED: usize = MAX_RELAY_DATA - 2 * KEY_LEN;
/// Largest introduction rate an ESTABLISH_INTRO may ask the introduction point to allow.
pub const MAX_INTRO_DOS_BURST: u32 = 1_000_000;
/// Length of the handshake reply in RENDEZVOUS1/2: `Y | auth`.
pub const REND_HANDSHAKE_LEN: usize = 2 * KEY_LEN;

/// Rate limit the service asks its introduction point to enforce on INTRODUCE1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntroDosParams {
    /// Sustained introductions per second, 1 ≤ rate ≤ burst.
    pub rate_per_sec: u32,
    /// Bucket size, at most [`MAX_INTRO_DOS_BURST`].
    pub burst: u32,
}

impl IntroDosParams {
    /// Checks `1 ≤ rate ≤ burst ≤ MAX_INTRO_DOS_BURST`.
    pub fn check(&self) -> CellResult<()> {
        if self.rate_per_sec == 0 || self.rate_per_sec > self.burst {
            return Err(CellError::BadValue {
                field: "intro rate",
                value: u64::from(self.rate_per_sec),
            });
        }
        if self.burst > MAX_INTRO_DOS_BURST {
            return Err(CellError::BadValue {
                field: "intro burst",
                value: u64::from(self.burst),
            });
        }
        Ok(())
    }
}

/// ESTABLISH_INTRO: the service asks a relay to be its introduction point for `auth_key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EstablishIntro {
    /// The service's ed25519 auth key for this introduction point.
    pub auth_key: [u8; KEY_LEN],
    /// Optional rate limit.
    pub dos: Option<IntroDosParams>,
    /// HMAC binding the message to the circuit it arrives on.
    pub mac: [u8; KEY_LEN],
    /// Signature by `auth_key` over everything before it.
    pub signature: [u8; SIG_LEN],
}

impl EstablishIntro {
    /// The bytes covered by the MAC: `auth_key | dos fields` (the message up to `mac`).
    pub fn mac_input(&self) -> CellResult<Vec<u8>> {
        let mut head = Vec::new();
        self.write_head(&mut Writer::growable(&mut head))?;
        Ok(head)
    }

    /// The bytes covered by the signature: the message up to `signature`.
    pub fn signed_input(&self) -> CellResult<Vec<u8>> {
        let mut out = self.mac_input()?;
        out.extend_from_slice(&self.mac);
        Ok(out)
    }

    fn write_head(&self, w: &mut Writer<'_>) -> CellResult<()> {
        w.put(&self.auth_key, "auth key")?;
        match &self.dos {
            None => w.u8(0, "dos flag")?,
            Some(dos) => {
                dos.check()?;
                w.u8(1, "dos flag")?;
                w.u32(dos.rate_per_sec, "intro rate")?;
                w.u32(dos.burst, "intro burst")?;
            }
        }
        Ok(())
    }
}

impl Writeable for EstablishIntro {
    type Error = CellError;
    fn write_onto(&self, w: &mut Writer<'_>) -> CellResult<()> {
        self.write_head(w)?;
        w.put(&self.mac, "mac")?;
        Ok(w.put(&self.signature, "signature")?)
    }
}

impl Readable for EstablishIntro {
    type Error = CellError;
    fn take_from(r: &mut Reader<'_>) -> CellResult<Self> {
        let auth_key = r.array("auth key")?;
        let dos = match r.u8("dos flag")? {
            0 => None,
            1 => {
                let dos = IntroDosParams {
                    rate_per_sec: r.u32("intro rate")?,
                    burst: r.u32("intro burst")?,
                };
                dos.check()?;
                Some(dos)
            }
            other => {
                return Err(CellError::BadValue {
                    field: "dos flag",
                    value: u64::from(other),
                })
            }
        };
        Ok(Self {
            auth_key,
            dos,
            mac: r.array("mac")?,
            signature: r.array("signature")?,
        })
    }
}

/// INTRODUCE1 (client → introduction point) and INTRODUCE2 (introduction point →
/// service, the same bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Introduce {
    auth_key: [u8; KEY_LEN],
    client_x: [u8; KEY_LEN],
    encrypted: BoundedBytes<MAX_INTRODUCE_ENCRYPTED>,
}

impl Introduce {
    /// An introduction for the service behind `auth_key`; `encrypted` (ciphertext and tag)
    /// must be 16 to [`MAX_INTRODUCE_ENCRYPTED`] bytes.
    pub fn new(
        auth_key: [u8; KEY_LEN],
        client_x: [u8; KEY_LEN],
        encrypted: Vec<u8>,
    ) -> CellResult<Self> {
        if encrypted.len() < INTRODUCE_TAG_LEN {
            return Err(CellError::Truncated {
                field: "introduce ciphertext",
            });
        }
        Ok(Self {
            auth_key,
            client_x,
            encrypted: BoundedBytes::new(encrypted, "introduce ciphertext")?,
        })
    }
    /// Which introduction point key (hence which service) this is for.
    pub fn auth_key(&self) -> &[u8; KEY_LEN] {
        &self.auth_key
    }
    /// The client's ephemeral x25519 key `X`.
    pub fn client_x(&self) -> &[u8; KEY_LEN] {
        &self.client_x
    }
    /// The encrypted part (ciphertext | 16-byte tag).
    pub fn encrypted(&self) -> &[u8] {
        self.encrypted.as_slice()
    }

    /// Parses the data field of INTRODUCE1/2 on its own (the relay cell parser reads the
    /// same layout): `auth_key 32 | X 32 | encrypted`, the ciphertext 16 to
    /// [`MAX_INTRODUCE_ENCRYPTED`] bytes. The same as [`Readable::parse`], without the import.
    pub fn parse(data: &[u8]) -> CellResult<Self> {
        <Self as Readable>::parse(data)
    }

    /// The data field of INTRODUCE1/2 (the inverse of [`Self::parse`]).
    pub fn encode(&self) -> CellResult<Vec<u8>> {
        <Self as Writeable>::encode(self)
    }
}

impl Readable for Introduce {
    type Error = CellError;
    fn take_from(r: &mut Reader<'_>) -> CellResult<Self> {
        let auth_key = r.array("auth key")?;
        let client_x = r.array("client key")?;
        Self::new(auth_key, client_x, r.take_rest().to_vec())
    }
}

impl Writeable for Introduce {
    type Error = CellError;
    fn write_onto(&self, w: &mut Writer<'_>) -> CellResult<()> {
        w.put(&self.auth_key, "auth key")?;
        w.put(&self.client_x, "client key")?;
        Ok(w.put(self.encrypted.as_slice(), "introduce ciphertext")?)
    }
}

wire_enum! {
    /// Outcome of an introduction, reported to the client in INTRODUCE_ACK.
    pub enum IntroduceAckStatus ("introduce ack status") {
        /// Forwarded to the service.
        Success = 0,
        /// The introduction point has no service for that auth key.
        UnknownService = 1,
        /// The INTRODUCE1 was malformed.
        BadMessage = 2,
        /// The introduction point's rate limit refused it.
        RateLimited = 3,
    }
}

/// RENDEZVOUS1: the service's reply to the client, via the rendezvous point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendezvous1 {
    /// The cookie the client registered.
    pub cookie: [u8; REND_COOKIE_LEN],
    /// The handshake reply `Y | auth`, relayed unchanged in RENDEZVOUS2.
    pub handshake: [u8; REND_HANDSHAKE_LEN],
}

/// Any onion-service relay message, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnionMsg {
    /// ESTABLISH_INTRO (32).
    EstablishIntro(EstablishIntro),
    /// INTRO_ESTABLISHED (33): empty.
    IntroEstablished,
    /// INTRODUCE1 (34).
    Introduce1(Introduce),
    /// INTRODUCE2 (35).
    Introduce2(Introduce),
    /// INTRODUCE_ACK (36).
    IntroduceAck(IntroduceAckStatus),
    /// ESTABLISH_RENDEZVOUS (37): `cookie`.
    EstablishRendezvous([u8; REND_COOKIE_LEN]),
    /// RENDEZVOUS_ESTABLISHED (38): empty.
    RendezvousEstablished,
    /// RENDEZVOUS1 (39).
    Rendezvous1(Rendezvous1),
    /// RENDEZVOUS2 (40): `Y | auth`.
    Rendezvous2([u8; REND_HANDSHAKE_LEN]),
}

/// Parses the data of onion command `code` (32–40); `data` must be consumed exactly.
pub(crate) fn parse(code: u8, r: &mut Reader<'_>) -> CellResult<OnionMsg> {
    Ok(match code {
        32 => OnionMsg::EstablishIntro(r.extract()?),
        33 => OnionMsg::IntroEstablished,
        34 | 35 => {
            let msg: Introduce = r.extract()?;
            if code == 34 {
                OnionMsg::Introduce1(msg)
            } else {
                OnionMsg::Introduce2(msg)
            }
        }
        36 => OnionMsg::IntroduceAck(IntroduceAckStatus::from_code(r.u8("status")?)?),
        37 => OnionMsg::EstablishRendezvous(r.array("cookie")?),
        38 => OnionMsg::RendezvousEstablished,
        39 => OnionMsg::Rendezvous1(Rendezvous1 {
            cookie: r.array("cookie")?,
            handshake: r.array("handshake")?,
        }),
        40 => OnionMsg::Rendezvous2(r.array("handshake")?),
        other => return Err(CellError::UnknownCommand(other)),
    })
}

/// Encodes the data field of `msg`.
pub(crate) fn encode(msg: &OnionMsg, w: &mut Writer<'_>) -> CellResult<()> {
    match msg {
        OnionMsg::EstablishIntro(e) => w.write(e)?,
        OnionMsg::IntroEstablished | OnionMsg::RendezvousEstablished => {}
        OnionMsg::Introduce1(i) | OnionMsg::Introduce2(i) => w.write(i)?,
        OnionMsg::IntroduceAck(status) => w.u8(status.code(), "status")?,
        OnionMsg::EstablishRendezvous(cookie) => w.put(cookie, "cookie")?,
        OnionMsg::Rendezvous1(r) => {
            w.put(&r.cookie, "cookie")?;
            w.put(&r.handshake, "handshake")?;
        }
        OnionMsg::Rendezvous2(h) => w.put(h, "handshake")?,
    }
    Ok(())
}
