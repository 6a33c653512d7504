//! Typed relay messages: what a RELAY body holds once every encryption layer is removed.
//!
//! Each message encodes into the `data` field of a relay body (see [`super::relay_cell`]).
//! Parsers consume `data` exactly: a message with bytes left over is refused.

use std::net::{IpAddr, SocketAddr};

use super::address::{self, Hostname, TargetAddr};
use super::chan_cmd::DestroyReason;
use super::chan_msg::{BoundedBytes, HandshakeType};
use super::datagram::Datagram;
use super::error::{CellError, CellResult};
use super::onion_msg::{self, OnionMsg};
use super::relay_cmd::{EndReason, RelayCmd};
use crate::bytes::Reader;
use crate::bytes::Writer;

pub use super::consts::{MAX_RELAY_DATA, RELAY_HEADER_LEN};
/// Largest handshake carried in EXTEND: `data` minus the largest fixed part
/// (IPv6 address 1+16, port 2, identity 32, htype 2).
pub const MAX_EXTEND_HANDSHAKE: usize = MAX_RELAY_DATA - (1 + 16 + 2 + 32 + 2);
/// Largest handshake reply carried in EXTENDED.
pub const MAX_EXTENDED_HANDSHAKE: usize = MAX_RELAY_DATA;
/// Most answers in one RESOLVED.
pub const MAX_RESOLVED_ANSWERS: usize = 16;
/// Version byte of authenticated SENDMEs.
pub const SENDME_VERSION: u8 = 1;
/// Length of the tag a SENDME echoes.
pub const SENDME_TAG_LEN: usize = 16;

/// BEGIN: `target address | port (u16, non-zero)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begin {
    target: TargetAddr,
    port: u16,
}

impl Begin {
    /// A stream request; port 0 is refused.
    pub fn new(target: TargetAddr, port: u16) -> CellResult<Self> {
        if port == 0 {
            return Err(CellError::BadValue {
                field: "port",
                value: 0,
            });
        }
        Ok(Begin { target, port })
    }
    /// Where to connect.
    pub fn target(&self) -> &TargetAddr {
        &self.target
    }
    /// Which port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// DATA: 1 to [`MAX_RELAY_DATA`] bytes of stream data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data(BoundedBytes<MAX_RELAY_DATA>);

impl Data {
    /// Wraps stream bytes: non-empty, at most [`MAX_RELAY_DATA`].
    pub fn new(bytes: Vec<u8>) -> CellResult<Self> {
        if bytes.is_empty() {
            return Err(CellError::BadValue {
                field: "data length",
                value: 0,
            });
        }
        Ok(Data(BoundedBytes::new(bytes, "data")?))
    }
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        self.0.as_slice()
    }
    /// Unwraps into the bytes.
    pub fn into_vec(self) -> Vec<u8> {
        self.0.into_vec()
    }
}

/// CONNECTED: `atype 0` (no address), or `atype (1|2) | address | ttl (u32)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connected {
    /// The address the exit connected to and how long the client may cache it.
    pub resolved: Option<(IpAddr, u32)>,
}

/// SENDME: `version (u8) = 1 | tag (16 bytes)`. The tag is the relay-crypto tag of the
/// cell being acknowledged, which proves the sender of the SENDME received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sendme {
    /// Tag of the acknowledged cell.
    pub tag: [u8; SENDME_TAG_LEN],
}

/// EXTEND: `atype | address | port (u16) | identity (32) | htype (u16) | hdata (rest)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extend {
    addr: SocketAddr,
    identity: [u8; 32],
    htype: HandshakeType,
    handshake: BoundedBytes<MAX_EXTEND_HANDSHAKE>,
}

impl Extend {
    /// A request to extend to `addr`, which must prove `identity`; port 0 and an empty
    /// handshake are refused.
    pub fn new(
        addr: SocketAddr,
        identity: [u8; 32],
        htype: HandshakeType,
        handshake: Vec<u8>,
    ) -> CellResult<Self> {
        if addr.port() == 0 {
            return Err(CellError::BadValue {
                field: "port",
                value: 0,
            });
        }
        if handshake.is_empty() {
            return Err(CellError::BadValue {
                field: "handshake length",
                value: 0,
            });
        }
        Ok(Extend {
            addr,
            identity,
            htype,
            handshake: BoundedBytes::new(handshake, "handshake")?,
        })
    }
    /// The next hop's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// The next hop's ed25519 identity.
    pub fn identity(&self) -> &[u8; 32] {
        &self.identity
    }
    /// The circuit handshake type.
    pub fn htype(&self) -> HandshakeType {
        self.htype
    }
    /// The client's handshake message for the next hop.
    pub fn handshake(&self) -> &[u8] {
        self.handshake.as_slice()
    }
}

/// EXTENDED: `hdata (rest)`, the new hop's handshake reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extended {
    handshake: BoundedBytes<MAX_EXTENDED_HANDSHAKE>,
}

impl Extended {
    /// Wraps a handshake reply (non-empty).
    pub fn new(handshake: Vec<u8>) -> CellResult<Self> {
        if handshake.is_empty() {
            return Err(CellError::BadValue {
                field: "handshake length",
                value: 0,
            });
        }
        Ok(Extended {
            handshake: BoundedBytes::new(handshake, "handshake")?,
        })
    }
    /// The reply.
    pub fn handshake(&self) -> &[u8] {
        self.handshake.as_slice()
    }
}

/// One answer in RESOLVED: `kind (u8) | ttl (u32) | address (4 or 16 bytes, for kinds 1, 2)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedAnswer {
    /// An address (kind 1 for IPv4, 2 for IPv6).
    Ip {
        /// The address.
        addr: IpAddr,
        /// Seconds it may be cached.
        ttl: u32,
    },
    /// Resolution failed but may succeed later (kind 0xF0).
    TransientError {
        /// Seconds to wait before retrying.
        ttl: u32,
    },
    /// The name does not exist (kind 0xF1).
    PermanentError {
        /// Seconds the failure may be cached.
        ttl: u32,
    },
}

const RESOLVED_TRANSIENT: u8 = 0xF0;
const RESOLVED_PERMANENT: u8 = 0xF1;

/// RESOLVED: 1 to [`MAX_RESOLVED_ANSWERS`] answers, back to back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    answers: Vec<ResolvedAnswer>,
}

impl Resolved {
    /// Wraps 1 to [`MAX_RESOLVED_ANSWERS`] answers.
    pub fn new(answers: Vec<ResolvedAnswer>) -> CellResult<Self> {
        if answers.is_empty() || answers.len() > MAX_RESOLVED_ANSWERS {
            return Err(CellError::LengthOutOfBounds {
                field: "answers",
                len: answers.len(),
                max: MAX_RESOLVED_ANSWERS,
            });
        }
        Ok(Resolved { answers })
    }
    /// The answers.
    pub fn answers(&self) -> &[ResolvedAnswer] {
        &self.answers
    }
}

/// Any relay message, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayMsg {
    /// BEGIN.
    Begin(Begin),
    /// DATA.
    Data(Data),
    /// END: `reason (u8)`.
    End(EndReason),
    /// CONNECTED.
    Connected(Connected),
    /// SENDME.
    Sendme(Sendme),
    /// EXTEND.
    Extend(Extend),
    /// EXTENDED.
    Extended(Extended),
    /// TRUNCATE: empty.
    Truncate,
    /// TRUNCATED: `reason (u8)`.
    Truncated(DestroyReason),
    /// DROP: empty.
    Drop,
    /// RESOLVE: `hostname (all of data)`.
    Resolve(Hostname),
    /// RESOLVED.
    Resolved(Resolved),
    /// BEGIN_DIR: empty.
    BeginDir,
    /// One of the onion-service messages (commands 32–40, §8).
    Onion(OnionMsg),
    /// BEGIN_UDP: open a UDP flow; same data as BEGIN.
    BeginUdp(Begin),
    /// DATAGRAM: one fragment of a datagram on a flow.
    Datagram(Datagram),
    /// XOFF: empty; stop sending on this stream (only under congestion control).
    Xoff,
    /// XON: empty; resume sending on this stream.
    Xon,
}

impl RelayMsg {
    /// The command byte of this message.
    pub fn cmd(&self) -> RelayCmd {
        match self {
            RelayMsg::Begin(_) => RelayCmd::Begin,
            RelayMsg::Data(_) => RelayCmd::Data,
            RelayMsg::End(_) => RelayCmd::End,
            RelayMsg::Connected(_) => RelayCmd::Connected,
            RelayMsg::Sendme(_) => RelayCmd::Sendme,
            RelayMsg::Extend(_) => RelayCmd::Extend,
            RelayMsg::Extended(_) => RelayCmd::Extended,
            RelayMsg::Truncate => RelayCmd::Truncate,
            RelayMsg::Truncated(_) => RelayCmd::Truncated,
            RelayMsg::Drop => RelayCmd::Drop,
            RelayMsg::Resolve(_) => RelayCmd::Resolve,
            RelayMsg::Resolved(_) => RelayCmd::Resolved,
            RelayMsg::BeginDir => RelayCmd::BeginDir,
            RelayMsg::Xoff => RelayCmd::Xoff,
            RelayMsg::Xon => RelayCmd::Xon,
            RelayMsg::BeginUdp(_) => RelayCmd::BeginUdp,
            RelayMsg::Datagram(_) => RelayCmd::Datagram,
            RelayMsg::Onion(m) => match m {
                OnionMsg::EstablishIntro(_) => RelayCmd::EstablishIntro,
                OnionMsg::IntroEstablished => RelayCmd::IntroEstablished,
                OnionMsg::Introduce1(_) => RelayCmd::Introduce1,
                OnionMsg::Introduce2(_) => RelayCmd::Introduce2,
                OnionMsg::IntroduceAck(_) => RelayCmd::IntroduceAck,
                OnionMsg::EstablishRendezvous(_) => RelayCmd::EstablishRendezvous,
                OnionMsg::RendezvousEstablished => RelayCmd::RendezvousEstablished,
                OnionMsg::Rendezvous1(_) => RelayCmd::Rendezvous1,
                OnionMsg::Rendezvous2(_) => RelayCmd::Rendezvous2,
            },
        }
    }

    /// Parses the `data` field of a relay body for command `cmd`; `data` must be consumed
    /// exactly.
    pub fn parse_data(cmd: RelayCmd, data: &[u8]) -> CellResult<Self> {
        let mut r = Reader::new(data);
        let msg = match cmd {
            RelayCmd::Begin => {
                let target = r.extract::<TargetAddr>()?;
                RelayMsg::Begin(Begin::new(target, address::read_port(&mut r)?)?)
            }
            RelayCmd::Data => RelayMsg::Data(Data::new(r.take_rest().to_vec())?),
            RelayCmd::End => RelayMsg::End(EndReason::from_code(r.u8("end reason")?)?),
            RelayCmd::Connected => RelayMsg::Connected(Connected {
                resolved: match r.u8("address type")? {
                    0 => None,
                    atype => {
                        let ip = address::read_ip_of_type(atype, &mut r)?;
                        Some((ip, r.u32("ttl")?))
                    }
                },
            }),
            RelayCmd::Sendme => {
                let version = r.u8("sendme version")?;
                if version != SENDME_VERSION {
                    return Err(CellError::BadValue {
                        field: "sendme version",
                        value: u64::from(version),
                    });
                }
                RelayMsg::Sendme(Sendme {
                    tag: r.array("sendme tag")?,
                })
            }
            RelayCmd::Extend => {
                let addr = address::read_socket_addr(&mut r)?;
                let identity = r.array("identity")?;
                let htype = HandshakeType::from_code(r.u16("htype")?)?;
                RelayMsg::Extend(Extend::new(addr, identity, htype, r.take_rest().to_vec())?)
            }
            RelayCmd::Extended => RelayMsg::Extended(Extended::new(r.take_rest().to_vec())?),
            RelayCmd::Truncate => RelayMsg::Truncate,
            RelayCmd::Truncated => {
                RelayMsg::Truncated(DestroyReason::from_code(r.u8("truncate reason")?)?)
            }
            RelayCmd::Drop => RelayMsg::Drop,
            RelayCmd::Resolve => RelayMsg::Resolve(Hostname::from_bytes(r.take_rest())?),
            RelayCmd::Resolved => {
                let mut answers = Vec::new();
                while r.remaining() > 0 {
                    if answers.len() == MAX_RESOLVED_ANSWERS {
                        return Err(CellError::LengthOutOfBounds {
                            field: "answers",
                            len: answers.len() + 1,
                            max: MAX_RESOLVED_ANSWERS,
                        });
                    }
                    answers.push(read_answer(&mut r)?);
                }
                RelayMsg::Resolved(Resolved::new(answers)?)
            }
            RelayCmd::BeginDir => RelayMsg::BeginDir,
            RelayCmd::Xoff => RelayMsg::Xoff,
            RelayCmd::Xon => RelayMsg::Xon,
            RelayCmd::BeginUdp => {
                let target = r.extract::<TargetAddr>()?;
                RelayMsg::BeginUdp(Begin::new(target, address::read_port(&mut r)?)?)
            }
            RelayCmd::Datagram => RelayMsg::Datagram(Datagram::parse(&mut r)?),
            RelayCmd::EstablishIntro
            | RelayCmd::IntroEstablished
            | RelayCmd::Introduce1
            | RelayCmd::Introduce2
            | RelayCmd::IntroduceAck
            | RelayCmd::EstablishRendezvous
            | RelayCmd::RendezvousEstablished
            | RelayCmd::Rendezvous1
            | RelayCmd::Rendezvous2 => RelayMsg::Onion(onion_msg::parse(cmd.code(), &mut r)?),
        };
        r.finish()?;
        Ok(msg)
    }

    /// Encodes the `data` field.
    pub fn encode_data(&self, w: &mut Writer<'_>) -> CellResult<()> {
        match self {
            RelayMsg::Begin(b) | RelayMsg::BeginUdp(b) => {
                w.write(&b.target)?;
                Ok(w.u16(b.port, "port")?)
            }
            RelayMsg::Datagram(d) => d.encode(w),
            RelayMsg::Data(d) => Ok(w.put(d.as_slice(), "data")?),
            RelayMsg::End(reason) => Ok(w.u8(reason.code(), "end reason")?),
            RelayMsg::Connected(c) => match &c.resolved {
                None => Ok(w.u8(0, "address type")?),
                Some((ip, ttl)) => {
                    address::write_ip(ip, w)?;
                    Ok(w.u32(*ttl, "ttl")?)
                }
            },
            RelayMsg::Sendme(s) => {
                w.u8(SENDME_VERSION, "sendme version")?;
                Ok(w.put(&s.tag, "sendme tag")?)
            }
            RelayMsg::Extend(e) => {
                address::write_socket_addr(&e.addr, w)?;
                w.put(&e.identity, "identity")?;
                w.u16(e.htype.code(), "htype")?;
                Ok(w.put(e.handshake.as_slice(), "handshake")?)
            }
            RelayMsg::Extended(e) => Ok(w.put(e.handshake.as_slice(), "handshake")?),
            RelayMsg::Truncate
            | RelayMsg::Drop
            | RelayMsg::BeginDir
            | RelayMsg::Xoff
            | RelayMsg::Xon => Ok(()),
            RelayMsg::Truncated(reason) => Ok(w.u8(reason.code(), "truncate reason")?),
            RelayMsg::Resolve(h) => Ok(w.put(h.as_str().as_bytes(), "hostname")?),
            RelayMsg::Resolved(r) => r.answers.iter().try_for_each(|a| write_answer(a, w)),
            RelayMsg::Onion(m) => onion_msg::encode(m, w),
        }
    }
}

fn read_answer(r: &mut Reader<'_>) -> CellResult<ResolvedAnswer> {
    let kind = r.u8("answer kind")?;
    let ttl = r.u32("ttl")?;
    match kind {
        RESOLVED_TRANSIENT => Ok(ResolvedAnswer::TransientError { ttl }),
        RESOLVED_PERMANENT => Ok(ResolvedAnswer::PermanentError { ttl }),
        ip_kind => Ok(ResolvedAnswer::Ip {
            addr: address::read_ip_of_type(ip_kind, r)?,
            ttl,
        }),
    }
}

fn write_answer(a: &ResolvedAnswer, w: &mut Writer<'_>) -> CellResult<()> {
    match a {
        ResolvedAnswer::Ip { addr, ttl } => {
            w.u8(address::ip_type(addr), "answer kind")?;
            w.u32(*ttl, "ttl")?;
            address::write_ip_octets(addr, w)
        }
        ResolvedAnswer::TransientError { ttl } => {
            w.u8(RESOLVED_TRANSIENT, "answer kind")?;
            Ok(w.u32(*ttl, "ttl")?)
        }
        ResolvedAnswer::PermanentError { ttl } => {
            w.u8(RESOLVED_PERMANENT, "answer kind")?;
            Ok(w.u32(*ttl, "ttl")?)
        }
    }
}
