//! Typed bodies of link cells, each with a strict parser and a canonical encoder.
//!
//! Every body is exactly [`CELL_BODY_LEN`] bytes: the fields below, then zero padding.
//! Parsers refuse non-zero padding and length fields past their bound, so every accepted
//! body has exactly one encoding.

use std::net::SocketAddr;

use super::address::{read_socket_addr, write_socket_addr};
use super::chan_cmd::{ChanCmd, DestroyReason};
use super::consts::{CELL_BODY_LEN, RELAY_BODY_LEN};
use super::error::{CellError, CellResult};
use super::padding_negotiate::PaddingNegotiate;
use crate::bytes::Reader;
use crate::bytes::Writer;

/// Largest handshake payload in CREATE: the body minus `htype` and `hlen`.
pub const MAX_CREATE_DATA: usize = CELL_BODY_LEN - 4;
/// Largest handshake payload in CREATED: the body minus `hlen`.
pub const MAX_CREATED_DATA: usize = CELL_BODY_LEN - 2;
/// Largest payload of a LINK_* handshake cell: the body minus `len`.
pub const MAX_LINK_HANDSHAKE_DATA: usize = CELL_BODY_LEN - 2;

/// The circuit handshake a CREATE (or EXTEND) asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandshakeType {
    /// `allium-ntor-1`: one-way authenticated, forward-secret X25519 handshake.
    Ntor1,
    /// `allium-fast-1`: keys from randomness inside the (already authenticated) channel;
    /// first hop only.
    Fast1,
}

impl HandshakeType {
    /// The value on the wire.
    pub const fn code(self) -> u16 {
        match self {
            HandshakeType::Ntor1 => 1,
            HandshakeType::Fast1 => 2,
        }
    }

    /// Decodes the wire value, refusing unknown handshakes.
    pub fn from_code(code: u16) -> CellResult<Self> {
        match code {
            1 => Ok(HandshakeType::Ntor1),
            2 => Ok(HandshakeType::Fast1),
            other => Err(CellError::BadValue {
                field: "handshake type",
                value: u64::from(other),
            }),
        }
    }
}

/// A bounded byte string: the payload of a handshake message.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BoundedBytes<const MAX: usize>(Vec<u8>);

impl<const MAX: usize> BoundedBytes<MAX> {
    /// Wraps `bytes`, refusing more than `MAX`.
    pub fn new(bytes: Vec<u8>, field: &'static str) -> CellResult<Self> {
        if bytes.len() > MAX {
            return Err(CellError::LengthOutOfBounds {
                field,
                len: bytes.len(),
                max: MAX,
            });
        }
        Ok(BoundedBytes(bytes))
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// Unwraps into the bytes.
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }
}

impl<const MAX: usize> std::fmt::Debug for BoundedBytes<MAX> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

/// CREATE: `htype (u16) | hlen (u16) | hdata (hlen bytes) | zero padding`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Create {
    /// Which circuit handshake `data` belongs to.
    pub htype: HandshakeType,
    /// The client's handshake message.
    pub data: BoundedBytes<MAX_CREATE_DATA>,
}

/// CREATED: `hlen (u16) | hdata (hlen bytes) | zero padding`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// The relay's handshake reply.
    pub data: BoundedBytes<MAX_CREATED_DATA>,
}

/// NETINFO: `timestamp (u64, seconds since the Unix epoch) | other_addr (atype | address |
/// port) | zero padding`. The timestamp lets relays notice clock skew (clients send 0: an
/// exact clock would fingerprint them); `other_addr` tells the receiver the address the
/// sender sees it at, from which a relay learns its public address (docs/protocol.md §5.6).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Netinfo {
    /// The sender's clock, or 0 from a client.
    pub timestamp: u64,
    /// The receiver's address as the sender sees it (the TCP peer address).
    pub other_addr: SocketAddr,
}

impl std::fmt::Debug for Netinfo {
    // `other_addr` may be a client's address: keep it out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netinfo")
            .field("timestamp", &self.timestamp)
            .field("other_addr", &"<redacted>")
            .finish()
    }
}

/// A link handshake message (LINK_INIT, LINK_RESP, LINK_FINISH):
/// `len (u16) | data (len bytes) | zero padding`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkHandshake {
    /// The handshake bytes.
    pub data: BoundedBytes<MAX_LINK_HANDSHAKE_DATA>,
}

/// The body of a RELAY or RELAY_EARLY cell: opaque at the link layer (one encryption layer
/// per remaining hop), so every 512-byte value is valid.
#[derive(Clone, PartialEq, Eq)]
pub struct RelayBody(pub [u8; RELAY_BODY_LEN]);

impl std::fmt::Debug for RelayBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelayBody(..)")
    }
}

/// Any link cell body, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChanMsg {
    /// PADDING: all-zero body.
    Padding,
    /// CREATE.
    Create(Create),
    /// CREATED.
    Created(Created),
    /// RELAY.
    Relay(RelayBody),
    /// RELAY_EARLY.
    RelayEarly(RelayBody),
    /// DESTROY: `reason (u8) | zero padding`.
    Destroy(DestroyReason),
    /// NETINFO.
    Netinfo(Netinfo),
    /// REKEY: all-zero body. The link layer sends and consumes it (docs/protocol.md §5.5.1).
    Rekey,
    /// PADDING_NEGOTIATE.
    PaddingNegotiate(PaddingNegotiate),
    /// LINK_INIT.
    LinkInit(LinkHandshake),
    /// LINK_RESP.
    LinkResp(LinkHandshake),
    /// LINK_FINISH.
    LinkFinish(LinkHandshake),
}

impl ChanMsg {
    /// The command byte of this message.
    pub fn cmd(&self) -> ChanCmd {
        match self {
            ChanMsg::Padding => ChanCmd::Padding,
            ChanMsg::Create(_) => ChanCmd::Create,
            ChanMsg::Created(_) => ChanCmd::Created,
            ChanMsg::Relay(_) => ChanCmd::Relay,
            ChanMsg::RelayEarly(_) => ChanCmd::RelayEarly,
            ChanMsg::Destroy(_) => ChanCmd::Destroy,
            ChanMsg::Netinfo(_) => ChanCmd::Netinfo,
            ChanMsg::Rekey => ChanCmd::Rekey,
            ChanMsg::PaddingNegotiate(_) => ChanCmd::PaddingNegotiate,
            ChanMsg::LinkInit(_) => ChanCmd::LinkInit,
            ChanMsg::LinkResp(_) => ChanCmd::LinkResp,
            ChanMsg::LinkFinish(_) => ChanCmd::LinkFinish,
        }
    }

    /// Parses a body of exactly [`CELL_BODY_LEN`] bytes for command `cmd`.
    pub fn parse_body(cmd: ChanCmd, body: &[u8]) -> CellResult<Self> {
        if body.len() != CELL_BODY_LEN {
            return Err(CellError::WrongLength {
                expected: CELL_BODY_LEN,
                got: body.len(),
            });
        }
        let mut r = Reader::new(body);
        let msg = match cmd {
            ChanCmd::Padding => ChanMsg::Padding,
            ChanCmd::Rekey => ChanMsg::Rekey,
            ChanCmd::PaddingNegotiate => ChanMsg::PaddingNegotiate(PaddingNegotiate::read(&mut r)?),
            ChanCmd::Create => {
                let htype = HandshakeType::from_code(r.u16("htype")?)?;
                let len = r.len_u16("hlen", MAX_CREATE_DATA)?;
                let data = BoundedBytes::new(r.take(len, "hdata")?.to_vec(), "hdata")?;
                ChanMsg::Create(Create { htype, data })
            }
            ChanCmd::Created => {
                let len = r.len_u16("hlen", MAX_CREATED_DATA)?;
                let data = BoundedBytes::new(r.take(len, "hdata")?.to_vec(), "hdata")?;
                ChanMsg::Created(Created { data })
            }
            ChanCmd::Relay | ChanCmd::RelayEarly => {
                let body = RelayBody(r.array("relay body")?);
                if cmd == ChanCmd::Relay {
                    ChanMsg::Relay(body)
                } else {
                    ChanMsg::RelayEarly(body)
                }
            }
            ChanCmd::Destroy => ChanMsg::Destroy(DestroyReason::from_code(r.u8("reason")?)?),
            ChanCmd::Netinfo => ChanMsg::Netinfo(Netinfo {
                timestamp: r.u64("timestamp")?,
                other_addr: read_socket_addr(&mut r)?,
            }),
            ChanCmd::LinkInit | ChanCmd::LinkResp | ChanCmd::LinkFinish => {
                let len = r.len_u16("len", MAX_LINK_HANDSHAKE_DATA)?;
                let data = BoundedBytes::new(r.take(len, "data")?.to_vec(), "data")?;
                let hs = LinkHandshake { data };
                match cmd {
                    ChanCmd::LinkInit => ChanMsg::LinkInit(hs),
                    ChanCmd::LinkResp => ChanMsg::LinkResp(hs),
                    _ => ChanMsg::LinkFinish(hs),
                }
            }
        };
        r.finish_zero_padded()?;
        Ok(msg)
    }

    /// Encodes the body into `out`, which must be [`CELL_BODY_LEN`] zeroed bytes.
    pub fn encode_body(&self, out: &mut [u8; CELL_BODY_LEN]) -> CellResult<()> {
        out.fill(0);
        let mut w = Writer::new(out);
        match self {
            ChanMsg::Padding | ChanMsg::Rekey => {}
            ChanMsg::PaddingNegotiate(p) => p.write(&mut w)?,
            ChanMsg::Create(c) => {
                w.u16(c.htype.code(), "htype")?;
                w.u16_prefixed(c.data.as_slice(), "hdata")?;
            }
            ChanMsg::Created(c) => w.u16_prefixed(c.data.as_slice(), "hdata")?,
            ChanMsg::Relay(b) | ChanMsg::RelayEarly(b) => w.put(&b.0, "relay body")?,
            ChanMsg::Destroy(reason) => w.u8(reason.code(), "reason")?,
            ChanMsg::Netinfo(n) => {
                w.u64(n.timestamp, "timestamp")?;
                write_socket_addr(&n.other_addr, &mut w)?;
            }
            ChanMsg::LinkInit(h) | ChanMsg::LinkResp(h) | ChanMsg::LinkFinish(h) => {
                w.u16_prefixed(h.data.as_slice(), "data")?
            }
        }
        Ok(())
    }
}
