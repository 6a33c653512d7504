//! Destination addresses carried in BEGIN, CONNECTED, EXTEND, RESOLVE and RESOLVED.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::error::{CellError, CellResult};
use crate::bytes::{Readable, Reader, Writeable, Writer};

/// Longest hostname accepted (the DNS limit).
pub(crate) const MAX_HOSTNAME_LEN: usize = 255;

/// Address type codes.
const ATYPE_IPV4: u8 = 1;
const ATYPE_IPV6: u8 = 2;
const ATYPE_HOSTNAME: u8 = 3;

/// A hostname to be resolved at the exit, never locally.
///
/// Canonical: 1 to 255 bytes of `[A-Za-z0-9._-]`, and not an IP literal (those travel as
/// addresses, so one destination has one encoding).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Hostname(String);

impl Hostname {
    /// Validates a hostname.
    pub fn new(name: &str) -> CellResult<Self> {
        Self::from_bytes(name.as_bytes())
    }

    /// Validates a hostname given as bytes from the wire.
    pub fn from_bytes(bytes: &[u8]) -> CellResult<Self> {
        let ok_len = !bytes.is_empty() && bytes.len() <= MAX_HOSTNAME_LEN;
        let ok_chars = bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if !ok_len || !ok_chars {
            return Err(CellError::InvalidHostname);
        }
        // Every byte is ASCII, so this cannot fail; map rather than unwrap regardless.
        let name = std::str::from_utf8(bytes).map_err(|_| CellError::InvalidHostname)?;
        if name.parse::<IpAddr>().is_ok() {
            return Err(CellError::InvalidHostname);
        }
        Ok(Hostname(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Hostname {
    // Destinations must not leak into logs through Debug output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hostname(<redacted>)")
    }
}

/// Where a stream should go: an address, or a name for the exit to resolve.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum TargetAddr {
    /// A literal address.
    Ip(IpAddr),
    /// A hostname.
    Hostname(Hostname),
}

impl fmt::Debug for TargetAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TargetAddr(<redacted>)")
    }
}

/// `atype (u8) | address`: 4 bytes (IPv4), 16 bytes (IPv6), or `len (u8) | name`.
impl Readable for TargetAddr {
    type Error = CellError;
    fn take_from(r: &mut Reader<'_>) -> CellResult<Self> {
        match r.u8("address type")? {
            ATYPE_HOSTNAME => {
                let len = usize::from(r.u8("hostname length")?);
                Ok(TargetAddr::Hostname(Hostname::from_bytes(
                    r.take(len, "hostname")?,
                )?))
            }
            other => Ok(TargetAddr::Ip(read_ip_of_type(other, r)?)),
        }
    }
}

impl Writeable for TargetAddr {
    type Error = CellError;
    fn write_onto(&self, w: &mut Writer<'_>) -> CellResult<()> {
        match self {
            TargetAddr::Ip(ip) => write_ip(ip, w),
            TargetAddr::Hostname(h) => {
                w.u8(ATYPE_HOSTNAME, "address type")?;
                let len = u8::try_from(h.0.len())
                    .map_err(|_| CellError::TooLarge { field: "hostname" })?;
                w.u8(len, "hostname length")?;
                Ok(w.put(h.0.as_bytes(), "hostname")?)
            }
        }
    }
}

/// Reads the address that follows an already-read address type (1 = IPv4, 2 = IPv6).
pub(crate) fn read_ip_of_type(atype: u8, r: &mut Reader<'_>) -> CellResult<IpAddr> {
    match atype {
        ATYPE_IPV4 => Ok(IpAddr::V4(Ipv4Addr::from(r.array::<4>("ipv4 address")?))),
        ATYPE_IPV6 => Ok(IpAddr::V6(Ipv6Addr::from(r.array::<16>("ipv6 address")?))),
        other => Err(CellError::BadValue {
            field: "address type",
            value: u64::from(other),
        }),
    }
}

/// Reads `atype (u8) | address` where only IPv4 (1) and IPv6 (2) are legal.
pub(crate) fn read_ip(r: &mut Reader<'_>) -> CellResult<IpAddr> {
    let atype = r.u8("address type")?;
    read_ip_of_type(atype, r)
}

/// Writes `atype (u8) | address` for an IP address.
pub(crate) fn write_ip(ip: &IpAddr, w: &mut Writer<'_>) -> CellResult<()> {
    w.u8(ip_type(ip), "address type")?;
    write_ip_octets(ip, w)
}

/// The address type code of an IP address (1 = IPv4, 2 = IPv6).
pub(crate) fn ip_type(ip: &IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => ATYPE_IPV4,
        IpAddr::V6(_) => ATYPE_IPV6,
    }
}

/// Writes the 4 or 16 address bytes, without a type.
pub(crate) fn write_ip_octets(ip: &IpAddr, w: &mut Writer<'_>) -> CellResult<()> {
    match ip {
        IpAddr::V4(v4) => Ok(w.put(&v4.octets(), "ipv4 address")?),
        IpAddr::V6(v6) => Ok(w.put(&v6.octets(), "ipv6 address")?),
    }
}

/// Reads `atype | address | port (u16)`; port 0 is refused.
pub(crate) fn read_socket_addr(r: &mut Reader<'_>) -> CellResult<SocketAddr> {
    let ip = read_ip(r)?;
    let port = read_port(r)?;
    Ok(SocketAddr::new(ip, port))
}

/// Writes `atype | address | port (u16)`.
pub(crate) fn write_socket_addr(addr: &SocketAddr, w: &mut Writer<'_>) -> CellResult<()> {
    write_ip(&addr.ip(), w)?;
    Ok(w.u16(addr.port(), "port")?)
}

/// Reads a non-zero port.
pub(crate) fn read_port(r: &mut Reader<'_>) -> CellResult<u16> {
    match r.u16("port")? {
        0 => Err(CellError::BadValue {
            field: "port",
            value: 0,
        }),
        p => Ok(p),
    }
}
