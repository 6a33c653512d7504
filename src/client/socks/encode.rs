//! Reply encoders: what the proxy writes back once it knows the outcome of a request.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::types::{ReplyCode, SocksVersion};

/// The RFC 1929 username/password sub-negotiation version.
pub(crate) const AUTH_VERSION: u8 = 0x01;

/// Encodes the final reply to a request in the client's protocol.
///
/// - SOCKS5: `05 REP 00 ATYP BND.ADDR BND.PORT`. `bound` is the address the stream is
///   bound to, or for [`super::SocksCommand::Resolve`] the resolved address; `None`
///   encodes `0.0.0.0:0`, which is what clients of an onion proxy expect.
/// - SOCKS4: `00 CD DSTPORT DSTIP` with `CD` = `0x5A`/`0x5B`. SOCKS4 cannot carry an IPv6
///   address; an IPv6 `bound` (or `None`) encodes as `0.0.0.0:0`.
/// - HTTP `CONNECT`: a status line from [`ReplyCode::http_status`]; `bound` is ignored.
///   Success is exactly `HTTP/1.1 200 Connection established\r\n\r\n`; failures add
///   `Connection: close` and `Content-Length: 0` (the server closes after sending them).
pub fn reply(version: SocksVersion, code: ReplyCode, bound: Option<SocketAddr>) -> Vec<u8> {
    match version {
        SocksVersion::V5 => socks5_reply(code.socks5_code(), bound),
        SocksVersion::V4 => {
            let (ip, port) = match bound {
                Some(SocketAddr::V4(a)) => (*a.ip(), a.port()),
                Some(SocketAddr::V6(_)) | None => (Ipv4Addr::UNSPECIFIED, 0),
            };
            let mut out = Vec::with_capacity(8);
            out.push(0x00);
            out.push(code.socks4_code());
            out.extend_from_slice(&port.to_be_bytes());
            out.extend_from_slice(&ip.octets());
            out
        }
        SocksVersion::HttpConnect => {
            let (status, reason) = code.http_status();
            http_response(status, reason)
        }
    }
}

/// Encodes the RFC 1929 sub-negotiation reply: `01 00` on success, `01 01` on failure
/// (after which the server must close the connection).
pub fn auth_reply(success: bool) -> Vec<u8> {
    vec![AUTH_VERSION, if success { 0x00 } else { 0x01 }]
}

/// `05 REP 00 ATYP BND.ADDR BND.PORT` with an arbitrary `REP` byte.
pub(crate) fn socks5_reply(rep: u8, bound: Option<SocketAddr>) -> Vec<u8> {
    let addr = bound.unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
    let mut out = Vec::with_capacity(22);
    out.extend_from_slice(&[0x05, rep, 0x00]);
    match addr.ip() {
        IpAddr::V4(v4) => {
            out.push(0x01);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.push(0x04);
            out.extend_from_slice(&v6.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
    out
}

/// An HTTP/1.1 response head with no body.
pub(crate) fn http_response(status: u16, reason: &str) -> Vec<u8> {
    let head = if status == 200 {
        format!("HTTP/1.1 {status} {reason}\r\n\r\n")
    } else if status == 405 {
        format!(
            "HTTP/1.1 {status} {reason}\r\nAllow: CONNECT\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        )
    } else {
        format!("HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    };
    head.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    #[test]
    fn socks5_replies() {
        assert_eq!(
            reply(SocksVersion::V5, ReplyCode::Succeeded, None),
            [5, 0, 0, 1, 0, 0, 0, 0, 0, 0]
        );
        let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)), 0x1234);
        assert_eq!(
            reply(SocksVersion::V5, ReplyCode::HostUnreachable, Some(v4)),
            [5, 4, 0, 1, 10, 1, 2, 3, 0x12, 0x34]
        );
        let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 80);
        let r = reply(SocksVersion::V5, ReplyCode::Succeeded, Some(v6));
        assert_eq!(r.len(), 22);
        assert_eq!(&r[..4], &[5, 0, 0, 4]);
        assert_eq!(&r[4..20], &Ipv6Addr::LOCALHOST.octets());
        assert_eq!(&r[20..], &[0, 80]);
        for code in 0..=8u8 {
            let rc = ReplyCode::from_socks5_code(code).unwrap();
            assert_eq!(rc.socks5_code(), code);
            assert_eq!(reply(SocksVersion::V5, rc, None)[1], code);
        }
        assert_eq!(ReplyCode::from_socks5_code(9), None);
    }

    #[test]
    fn socks4_replies() {
        let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)), 443);
        assert_eq!(
            reply(SocksVersion::V4, ReplyCode::Succeeded, Some(v4)),
            [0, 0x5A, 1, 187, 1, 2, 3, 4]
        );
        assert_eq!(
            reply(SocksVersion::V4, ReplyCode::ConnectionRefused, None),
            [0, 0x5B, 0, 0, 0, 0, 0, 0]
        );
        let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 80);
        assert_eq!(
            reply(SocksVersion::V4, ReplyCode::Succeeded, Some(v6)),
            [0, 0x5A, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn http_replies() {
        assert_eq!(
            reply(SocksVersion::HttpConnect, ReplyCode::Succeeded, None),
            b"HTTP/1.1 200 Connection established\r\n\r\n"
        );
        let cases = [
            (ReplyCode::GeneralFailure, "502"),
            (ReplyCode::NotAllowed, "403"),
            (ReplyCode::NetworkUnreachable, "502"),
            (ReplyCode::HostUnreachable, "404"),
            (ReplyCode::ConnectionRefused, "502"),
            (ReplyCode::TtlExpired, "504"),
            (ReplyCode::CommandNotSupported, "405"),
            (ReplyCode::AddressTypeNotSupported, "400"),
        ];
        for (code, status) in cases {
            let r = String::from_utf8(reply(SocksVersion::HttpConnect, code, None)).unwrap();
            assert!(r.starts_with(&format!("HTTP/1.1 {status} ")), "{r}");
            assert!(r.ends_with("\r\nContent-Length: 0\r\n\r\n"), "{r}");
        }
    }

    #[test]
    fn auth_replies() {
        assert_eq!(auth_reply(true), [1, 0]);
        assert_eq!(auth_reply(false), [1, 1]);
    }
}
