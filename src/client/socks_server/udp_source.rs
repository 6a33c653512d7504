//! Which datagrams a UDP association accepts: only those of the client its TCP control
//! connection implies (RFC 1928 §7). Anyone who can reach the relay socket could
//! otherwise send through the client's circuits, or read its replies by pinning first.

use std::net::{IpAddr, SocketAddr};

use crate::cell::TargetAddr;

/// The source a UDP association accepts datagrams from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ClientSource {
    /// The TCP peer's address: datagrams must come from it.
    ip: IpAddr,
    /// DST.PORT of the request, if the client named one (not 0).
    port: Option<u16>,
    /// Where the first accepted datagram came from, as the socket reported it (replies
    /// go there); then the only source accepted.
    pinned: Option<SocketAddr>,
}

impl ClientSource {
    /// The filter for a client whose TCP connection comes from `peer`, after a request
    /// naming `target:port` (`0.0.0.0:0` / `[::]:0` when the client does not know its
    /// address yet).
    ///
    /// Returns `None` if the request names an IP other than the peer's: no datagram could
    /// ever be accepted (the proxy refuses the request). A name in DST.ADDR is not
    /// resolved (never locally) and adds nothing to the peer check.
    pub(super) fn new(peer: IpAddr, target: &TargetAddr, port: u16) -> Option<Self> {
        let ip = peer.to_canonical();
        if let TargetAddr::Ip(named) = target {
            let named = named.to_canonical();
            if !named.is_unspecified() && named != ip {
                return None;
            }
        }
        Some(ClientSource {
            ip,
            port: (port != 0).then_some(port),
            pinned: None,
        })
    }

    /// Whether a datagram from `from` may be taken (its header is checked next).
    pub(super) fn admits(&self, from: SocketAddr) -> bool {
        match self.pinned {
            Some(pinned) => canonical(from) == canonical(pinned),
            None => {
                from.ip().to_canonical() == self.ip && self.port.is_none_or(|p| p == from.port())
            }
        }
    }

    /// Pins the client's address to `from` (an admitted source whose datagram was
    /// well-formed) if none is pinned yet; returns the pinned address.
    pub(super) fn pin(&mut self, from: SocketAddr) -> SocketAddr {
        *self.pinned.get_or_insert(from)
    }

    /// The pinned client address, once a datagram was accepted.
    pub(super) fn pinned(&self) -> Option<SocketAddr> {
        self.pinned
    }
}

/// `from` with an IPv4-mapped IPv6 address written as IPv4 (a dual-stack socket reports
/// IPv4 clients that way).
fn canonical(from: SocketAddr) -> SocketAddr {
    SocketAddr::new(from.ip().to_canonical(), from.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn any4() -> TargetAddr {
        TargetAddr::Ip(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    #[test]
    fn the_first_admitted_source_is_pinned_and_then_the_only_one() {
        let mut s = ClientSource::new(LO, &any4(), 0).unwrap();
        let other_host = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 4000);
        assert!(!s.admits(other_host));
        let a = SocketAddr::new(LO, 4000);
        let b = SocketAddr::new(LO, 4001);
        assert!(s.admits(a) && s.admits(b));
        assert_eq!(s.pin(a), a);
        assert_eq!(s.pin(b), a, "a second pin changes nothing");
        assert!(s.admits(a));
        assert!(!s.admits(b));
        assert_eq!(s.pinned(), Some(a));
    }

    #[test]
    fn a_named_port_or_address_restricts_the_source() {
        let s = ClientSource::new(LO, &TargetAddr::Ip(LO), 4000).unwrap();
        assert!(s.admits(SocketAddr::new(LO, 4000)));
        assert!(!s.admits(SocketAddr::new(LO, 4001)));
        // An address other than the TCP peer's can never be served.
        let elsewhere = TargetAddr::Ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(ClientSource::new(LO, &elsewhere, 0), None);
        let any6 = TargetAddr::Ip(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        assert!(ClientSource::new(LO, &any6, 0).is_some());
    }

    #[test]
    fn v4_mapped_addresses_compare_as_ipv4() {
        let mapped = IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped());
        let mut s = ClientSource::new(mapped, &any4(), 0).unwrap();
        assert!(s.admits(SocketAddr::new(LO, 5)));
        s.pin(SocketAddr::new(mapped, 5));
        assert!(s.admits(SocketAddr::new(LO, 5)));
    }
}
