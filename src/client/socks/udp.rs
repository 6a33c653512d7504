//! The SOCKS5 UDP request header (RFC 1928 §7): what an application puts in front of
//! every datagram it sends to the proxy's UDP relay socket after UDP ASSOCIATE, and what
//! the proxy puts in front of every datagram it hands back.
//!
//! ```text
//! RSV u16 (= 0) | FRAG u8 | ATYP u8 | DST.ADDR | DST.PORT u16 | DATA
//! ```
//!
//! Strict and total, without I/O: reserved bytes must be zero, fragments (FRAG ≠ 0, an
//! optional part of the RFC that no common client uses) are refused, the port must not be
//! 0, and DATA is at most [`MAX_UDP_PAYLOAD`] bytes. Names are never resolved locally: a
//! domain becomes a [`TargetAddr::Hostname`] (or [`TargetAddr::Ip`] if it is an IP
//! literal), resolved at the exit.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::bytes::Reader;
use crate::cell::TargetAddr;

/// Largest datagram payload carried: an Ethernet MTU (1,500) less IPv4 and UDP headers.
/// Larger datagrams would be fragmented by IP on most paths anyway.
pub const MAX_UDP_PAYLOAD: usize = 1472;

/// Why a datagram from the application was refused (it is dropped: UDP has no reply).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UdpHeaderError {
    /// The datagram ends inside the header.
    #[error("SOCKS5 UDP header truncated in {0}")]
    Truncated(&'static str),
    /// RSV was not zero.
    #[error("SOCKS5 UDP header reserved field is {0:#06x}, not 0")]
    NonZeroReserved(u16),
    /// FRAG was not zero: fragment reassembly (RFC 1928 §7) is not supported.
    #[error("SOCKS5 UDP fragment {0} refused: fragmentation is not supported")]
    Fragmented(u8),
    /// ATYP was not 1 (IPv4), 3 (domain) or 4 (IPv6).
    #[error("SOCKS5 UDP header address type {0} is unknown")]
    UnknownAddressType(u8),
    /// The domain was empty or not a valid hostname.
    #[error("SOCKS5 UDP header carries an invalid hostname")]
    InvalidHostname,
    /// DST.PORT was 0.
    #[error("SOCKS5 UDP header names port 0")]
    ZeroPort,
    /// DATA was longer than [`MAX_UDP_PAYLOAD`].
    #[error("datagram of {0} bytes exceeds the {MAX_UDP_PAYLOAD}-byte limit")]
    Oversized(usize),
}

/// A parsed datagram: where it goes and what it carries (borrowed from the input).
///
/// `Debug` redacts the destination (logs never hold destinations at the default level).
#[derive(Clone, PartialEq, Eq)]
pub struct UdpDatagram<'a> {
    /// The destination.
    pub target: TargetAddr,
    /// The destination port, never 0.
    pub port: u16,
    /// The payload.
    pub data: &'a [u8],
}

impl std::fmt::Debug for UdpDatagram<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpDatagram")
            .field("target", &"[redacted]")
            .field("len", &self.data.len())
            .finish()
    }
}

fn need<T>(r: crate::bytes::Result<T>, field: &'static str) -> Result<T, UdpHeaderError> {
    r.map_err(|_| UdpHeaderError::Truncated(field))
}

/// Parses one datagram as received on the UDP relay socket.
pub fn parse_udp_datagram(bytes: &[u8]) -> Result<UdpDatagram<'_>, UdpHeaderError> {
    let mut r = Reader::new(bytes);
    let rsv = need(r.u16("reserved"), "reserved")?;
    if rsv != 0 {
        return Err(UdpHeaderError::NonZeroReserved(rsv));
    }
    let frag = need(r.u8("fragment"), "fragment")?;
    if frag != 0 {
        return Err(UdpHeaderError::Fragmented(frag));
    }
    let target = match need(r.u8("address type"), "address type")? {
        1 => TargetAddr::Ip(IpAddr::V4(Ipv4Addr::from(need(
            r.array::<4>("ipv4 address"),
            "ipv4 address",
        )?))),
        3 => {
            let name = need(r.u8_prefixed("hostname"), "hostname")?;
            target_from_name(name)?
        }
        4 => TargetAddr::Ip(IpAddr::V6(Ipv6Addr::from(need(
            r.array::<16>("ipv6 address"),
            "ipv6 address",
        )?))),
        other => return Err(UdpHeaderError::UnknownAddressType(other)),
    };
    let port = need(r.u16("port"), "port")?;
    if port == 0 {
        return Err(UdpHeaderError::ZeroPort);
    }
    let data = r.take_rest();
    if data.len() > MAX_UDP_PAYLOAD {
        return Err(UdpHeaderError::Oversized(data.len()));
    }
    Ok(UdpDatagram { target, port, data })
}

/// A SOCKS5 domain as a target: the CONNECT parser's rule (an IP literal becomes
/// [`TargetAddr::Ip`]), with this header's error.
fn target_from_name(name: &[u8]) -> Result<TargetAddr, UdpHeaderError> {
    if name.is_empty() {
        return Err(UdpHeaderError::InvalidHostname);
    }
    super::handshake::target_from_name(name, super::SocksVersion::V5)
        .map_err(|_| UdpHeaderError::InvalidHostname)
}

/// Encodes a datagram with its header, as the proxy sends it back to the application
/// (`target`/`port`: where the datagram came from). IP addresses use ATYP 1 or 4, names
/// ATYP 3 (a [`crate::cell::Hostname`] is at most 255 bytes, so its length fits the prefix).
pub fn encode_udp_datagram(target: &TargetAddr, port: u16, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 1 + 255 + 2 + data.len());
    out.extend_from_slice(&[0, 0, 0]);
    match target {
        TargetAddr::Ip(IpAddr::V4(ip)) => {
            out.push(1);
            out.extend_from_slice(&ip.octets());
        }
        TargetAddr::Ip(IpAddr::V6(ip)) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        TargetAddr::Hostname(name) => {
            let bytes = name.as_str().as_bytes();
            out.push(3);
            out.push(u8::try_from(bytes.len()).unwrap_or(u8::MAX));
            out.extend_from_slice(bytes.get(..usize::from(u8::MAX)).unwrap_or(bytes));
        }
    }
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::Hostname;

    #[test]
    fn ipv4_ipv6_and_name_forms_round_trip() {
        let targets = [
            TargetAddr::Ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))),
            TargetAddr::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            TargetAddr::Hostname(Hostname::new("voice.example").unwrap()),
        ];
        for t in targets {
            let bytes = encode_udp_datagram(&t, 5060, b"rtp");
            let d = parse_udp_datagram(&bytes).unwrap();
            assert_eq!(d.target, t);
            assert_eq!(d.port, 5060);
            assert_eq!(d.data, b"rtp");
        }
    }

    #[test]
    fn an_ip_literal_given_as_a_name_is_an_ip() {
        let mut b = vec![0, 0, 0, 3, 8];
        b.extend_from_slice(b"10.0.0.1");
        b.extend_from_slice(&[0, 53]);
        let d = parse_udp_datagram(&b).unwrap();
        assert_eq!(
            d.target,
            TargetAddr::Ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)))
        );
        assert!(d.data.is_empty());
    }

    #[test]
    fn strict_refusals() {
        let ok = encode_udp_datagram(&TargetAddr::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)), 7, b"x");
        let mut rsv = ok.clone();
        rsv[1] = 1;
        assert_eq!(
            parse_udp_datagram(&rsv),
            Err(UdpHeaderError::NonZeroReserved(1))
        );
        let mut frag = ok.clone();
        frag[2] = 1;
        assert_eq!(
            parse_udp_datagram(&frag),
            Err(UdpHeaderError::Fragmented(1))
        );
        let mut atyp = ok.clone();
        atyp[3] = 2;
        assert_eq!(
            parse_udp_datagram(&atyp),
            Err(UdpHeaderError::UnknownAddressType(2))
        );
        let mut port0 = ok.clone();
        port0[8] = 0;
        port0[9] = 0;
        assert_eq!(parse_udp_datagram(&port0), Err(UdpHeaderError::ZeroPort));
        for cut in 0..10 {
            assert!(matches!(
                parse_udp_datagram(&ok[..cut]),
                Err(UdpHeaderError::Truncated(_))
            ));
        }
        assert_eq!(
            parse_udp_datagram(&[0, 0, 0, 3, 0, 0, 7]),
            Err(UdpHeaderError::InvalidHostname)
        );
        let big = encode_udp_datagram(
            &TargetAddr::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            7,
            &[0; MAX_UDP_PAYLOAD + 1],
        );
        assert_eq!(
            parse_udp_datagram(&big),
            Err(UdpHeaderError::Oversized(MAX_UDP_PAYLOAD + 1))
        );
    }

    #[test]
    fn debug_hides_the_destination() {
        let b = encode_udp_datagram(
            &TargetAddr::Hostname(Hostname::new("secret.example").unwrap()),
            9,
            b"",
        );
        let d = parse_udp_datagram(&b).unwrap();
        assert!(!format!("{d:?}").contains("secret"));
    }
}
