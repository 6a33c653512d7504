//! HTTP `CONNECT` tunnel requests (RFC 9110 §9.3.6), parsed without I/O.
//!
//! Accepted: `CONNECT host:port HTTP/1.1` (or `HTTP/1.0`) with CRLF line endings, header
//! lines `name: value`, and an empty line. The target is a hostname, an IPv4 literal or a
//! bracketed IPv6 literal, always with a non-zero port. An optional
//! `Proxy-Authorization: Basic` header supplies the stream-isolation key. The head is
//! bounded ([`MAX_HTTP_HEAD_LEN`] bytes, [`MAX_HTTP_HEADERS`] header lines).
//!
//! Refused (400): bare CR or LF, obsolete line folding, malformed header lines, control
//! characters in values, other HTTP versions, targets in any other form, a second
//! `Proxy-Authorization`, other authorization schemes, malformed Basic credentials, and a
//! request body (`Transfer-Encoding`, or a `Content-Length` other than 0: a CONNECT
//! request has no content, and accepting one invites request smuggling). Methods other
//! than `CONNECT` are refused with 405.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::cell::{Hostname, TargetAddr};

use super::base64;
use super::error::SocksError;
use super::handshake::Step;
use super::types::{SocksAuth, SocksCommand, SocksRequest, SocksVersion};

/// Largest request head accepted (request line, headers and the final empty line).
pub const MAX_HTTP_HEAD_LEN: usize = 8 * 1024;

/// Most header lines accepted after the request line.
pub const MAX_HTTP_HEADERS: usize = 100;

/// The only version this module speaks.
const V: SocksVersion = SocksVersion::HttpConnect;

/// Shorthand for a 400-class refusal.
fn malformed(why: &'static str) -> SocksError {
    SocksError::HttpMalformed(why)
}

/// An HTTP `CONNECT` server handshake, fed bytes by the caller (no I/O).
///
/// [`HttpConnectHandshake::feed`] returns [`Step::NeedMore`] until the empty line ending
/// the head arrives, then [`Step::Done`]: it never returns [`Step::Reply`]. The server
/// answers with [`super::reply`] using [`SocksVersion::HttpConnect`]. Bytes after the head
/// (`input[consumed..]`) are early tunnel data and must be kept.
///
/// ```
/// use allium::client::socks::{HttpConnectHandshake, Step};
///
/// let mut hs = HttpConnectHandshake::new();
/// let input = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03";
/// let Step::Done { request, consumed } = hs.feed(input).unwrap() else { panic!() };
/// assert_eq!(request.port, 443);
/// assert_eq!(&input[consumed..], b"\x16\x03");
/// ```
#[derive(Clone, Default)]
pub struct HttpConnectHandshake {
    /// A strict prefix of the head (never bytes beyond it).
    buf: Vec<u8>,
    /// How much of `buf` has been checked for line endings.
    scanned: usize,
    /// Whether the request line has been seen and validated.
    request_line_seen: bool,
    /// Finished or failed.
    finished: bool,
}

impl std::fmt::Debug for HttpConnectHandshake {
    // The buffer may hold credentials or a destination: show only its length.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConnectHandshake")
            .field("buffered", &self.buf.len())
            .field("finished", &self.finished)
            .finish()
    }
}

impl HttpConnectHandshake {
    /// A handshake waiting for the request line.
    pub fn new() -> Self {
        Self::default()
    }

    /// True once the handshake has finished ([`Step::Done`]) or failed.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Feeds bytes received from the client. See [`Step`] for what to do next.
    ///
    /// On error the handshake is over: write [`SocksError::reply`] (400 or 405) and
    /// close. A method other than `CONNECT` is refused as soon as the request line ends.
    pub fn feed(&mut self, input: &[u8]) -> Result<Step, SocksError> {
        if self.finished {
            return Err(SocksError::Finished);
        }
        let result = self.advance(input);
        if !matches!(result, Ok(Step::NeedMore)) {
            self.finished = true;
            self.buf = Vec::new();
        }
        result
    }

    /// The body of [`HttpConnectHandshake::feed`].
    fn advance(&mut self, input: &[u8]) -> Result<Step, SocksError> {
        let already = self.buf.len();
        self.buf
            .extend(input.iter().take(MAX_HTTP_HEAD_LEN.saturating_sub(already)));

        let mut end = None;
        let mut prev = self
            .scanned
            .checked_sub(1)
            .and_then(|i| self.buf.get(i).copied());
        for (i, &b) in self.buf.iter().enumerate().skip(self.scanned) {
            if b == b'\n' && prev != Some(b'\r') {
                return Err(malformed("bare LF"));
            }
            if prev == Some(b'\r') && b != b'\n' {
                return Err(malformed("bare CR"));
            }
            if b == b'\n' {
                if !self.request_line_seen {
                    // Up to the CR before this LF (checked above).
                    let line = self
                        .buf
                        .get(..i)
                        .and_then(|l| l.strip_suffix(b"\r"))
                        .ok_or(malformed("bare LF"))?;
                    parse_request_line(line)?;
                    self.request_line_seen = true;
                }
                if i >= 3 && self.buf.get(i - 3..=i) == Some(b"\r\n\r\n".as_slice()) {
                    end = Some(i + 1);
                    break;
                }
            }
            prev = Some(b);
        }

        let Some(end) = end else {
            self.scanned = self.buf.len();
            if self.buf.len() >= MAX_HTTP_HEAD_LEN {
                return Err(SocksError::TooLarge {
                    version: V,
                    max: MAX_HTTP_HEAD_LEN,
                });
            }
            return Ok(Step::NeedMore);
        };
        // What follows the head is early tunnel data, left to the caller (`consumed`);
        // the buffer is discarded after this call.
        self.buf.truncate(end);
        let request = parse_head(&self.buf)?;
        debug_assert!(end > already);
        Ok(Step::Done {
            request,
            consumed: end.saturating_sub(already),
        })
    }
}

/// Parses a complete head, ending with the empty line; line endings are already checked
/// (every CR is followed by LF and every LF preceded by CR).
fn parse_head(head: &[u8]) -> Result<SocksRequest, SocksError> {
    let body = head
        .strip_suffix(b"\r\n\r\n")
        .ok_or(malformed("unterminated head"))?;
    let mut lines = body
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let (target, port) = parse_request_line(request_line)?;

    let mut auth = None;
    let mut count = 0usize;
    for line in lines {
        count += 1;
        if count > MAX_HTTP_HEADERS {
            return Err(SocksError::HttpTooManyHeaders(MAX_HTTP_HEADERS));
        }
        let (name, value) = parse_header(line)?;
        if name.eq_ignore_ascii_case(b"proxy-authorization") {
            if auth.is_some() {
                return Err(malformed("repeated Proxy-Authorization"));
            }
            auth = Some(parse_basic(value)?);
        } else if name.eq_ignore_ascii_case(b"content-length") {
            if value != b"0" {
                return Err(malformed("CONNECT request with a body"));
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(malformed("CONNECT request with a body"));
        }
    }
    Ok(SocksRequest {
        version: V,
        command: SocksCommand::Connect,
        target,
        port,
        auth: auth.unwrap_or(SocksAuth::None),
    })
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `METHOD SP authority SP HTTP/1.x` (without CRLF).
fn parse_request_line(line: &[u8]) -> Result<(TargetAddr, u16), SocksError> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("request line is not `METHOD target version`"));
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(malformed("invalid method"));
    }
    if method != b"CONNECT" {
        return Err(SocksError::HttpMethodNotAllowed);
    }
    if version != b"HTTP/1.1" && version != b"HTTP/1.0" {
        return Err(malformed("unsupported HTTP version"));
    }
    parse_authority(target)
}

/// Splits at the first occurrence of `sep` (excluded).
fn split_first(bytes: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let i = bytes.iter().position(|&b| b == sep)?;
    Some((bytes.get(..i)?, bytes.get(i + 1..)?))
}

/// Splits at the last occurrence of `sep` (excluded).
fn split_last(bytes: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let i = bytes.iter().rposition(|&b| b == sep)?;
    Some((bytes.get(..i)?, bytes.get(i + 1..)?))
}

/// `host:port`, `ipv4:port` or `[ipv6]:port`.
fn parse_authority(target: &[u8]) -> Result<(TargetAddr, u16), SocksError> {
    let (addr, port) = if let Some(rest) = target.strip_prefix(b"[") {
        let (inner, after) = split_first(rest, b']').ok_or(malformed("unclosed '['"))?;
        let port = after.strip_prefix(b":").ok_or(malformed("missing port"))?;
        let ip = std::str::from_utf8(inner)
            .ok()
            .and_then(|s| s.parse::<Ipv6Addr>().ok())
            .ok_or(malformed("invalid IPv6 literal"))?;
        (TargetAddr::Ip(IpAddr::V6(ip)), port)
    } else {
        let (host, port) = split_last(target, b':').ok_or(malformed("missing port"))?;
        if host.contains(&b':') {
            return Err(malformed("IPv6 literal without brackets"));
        }
        let v4 = std::str::from_utf8(host)
            .ok()
            .and_then(|s| s.parse::<Ipv4Addr>().ok());
        let addr = match v4 {
            Some(ip) => TargetAddr::Ip(IpAddr::V4(ip)),
            None => Hostname::from_bytes(host)
                .map(TargetAddr::Hostname)
                .map_err(|_| SocksError::InvalidHostname { version: V })?,
        };
        (addr, port)
    };
    if port.is_empty() || port.len() > 5 || !port.iter().all(u8::is_ascii_digit) {
        return Err(malformed("invalid port"));
    }
    let port = std::str::from_utf8(port)
        .ok()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or(malformed("invalid port"))?;
    if port == 0 {
        return Err(SocksError::ZeroPort { version: V });
    }
    Ok((addr, port))
}

/// `value` without optional white space (spaces and tabs) at either end.
fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// `name ":" OWS value OWS`; returns the name and the trimmed value.
fn parse_header(line: &[u8]) -> Result<(&[u8], &[u8]), SocksError> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(malformed("obsolete line folding"));
    }
    let (name, value) = split_first(line, b':').ok_or(malformed("header line without ':'"))?;
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(malformed("invalid header name"));
    }
    let value = trim_ows(value);
    if !value
        .iter()
        .all(|&b| b == b'\t' || (0x20..=0x7E).contains(&b) || b >= 0x80)
    {
        return Err(malformed("control character in header value"));
    }
    Ok((name, value))
}

/// `Basic <base64(user ":" pass)>` (scheme case-insensitive).
fn parse_basic(value: &[u8]) -> Result<SocksAuth, SocksError> {
    let (scheme, creds) =
        split_first(value, b' ').ok_or(malformed("invalid Proxy-Authorization"))?;
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return Err(malformed("unsupported Proxy-Authorization scheme"));
    }
    let creds = creds.trim_ascii_start();
    let decoded = base64::decode(creds).ok_or(malformed("invalid Basic credentials"))?;
    let (user, pass) = split_first(&decoded, b':').ok_or(malformed("invalid Basic credentials"))?;
    Ok(SocksAuth::Username {
        user: user.to_vec(),
        pass: pass.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_trimmed_of_spaces_and_tabs_only() {
        assert_eq!(trim_ows(b""), b"");
        assert_eq!(trim_ows(b" \t "), b"");
        assert_eq!(trim_ows(b"\t v w \t"), b"v w");
        assert_eq!(trim_ows(b"v"), b"v");
        assert_eq!(trim_ows(b"\x0bv\x0c"), b"\x0bv\x0c");
        assert_eq!(
            parse_header(b"X-Tab:\t v\tw \t").unwrap(),
            (&b"X-Tab"[..], &b"v\tw"[..])
        );
    }

    #[test]
    fn authority_forms() {
        assert_eq!(
            parse_authority(b"a.b:1").unwrap(),
            (TargetAddr::Hostname(Hostname::new("a.b").unwrap()), 1)
        );
        assert_eq!(
            parse_authority(b"[::1]:65535").unwrap(),
            (TargetAddr::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)), 65535)
        );
        assert_eq!(
            parse_authority(b"127.0.0.1:00080").unwrap(),
            (TargetAddr::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)), 80)
        );
        for bad in [
            &b""[..],
            b":",
            b"a.b:",
            b"a.b:x",
            b"a.b:-1",
            b"a.b:99999",
            b"[::1]",
            b"[::1]:",
            b"[]:1",
            b"[a.b]:1",
            b"1::2:3",
        ] {
            assert!(parse_authority(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn header_lines() {
        assert_eq!(
            parse_header(b"Name:  a b \t").unwrap(),
            (&b"Name"[..], &b"a b"[..])
        );
        assert_eq!(parse_header(b"N:").unwrap(), (&b"N"[..], &b""[..]));
        assert_eq!(parse_header(b"N:a:b").unwrap(), (&b"N"[..], &b"a:b"[..]));
        for bad in [
            &b" N: v"[..],
            b"\tN: v",
            b"N v",
            b"N : v",
            b"N\x01: v",
            b"N: \x1b",
        ] {
            assert!(parse_header(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn basic_credentials() {
        assert_eq!(
            parse_basic(b"Basic dTpw").unwrap(),
            SocksAuth::Username {
                user: b"u".to_vec(),
                pass: b"p".to_vec()
            }
        );
        assert_eq!(
            parse_basic(b"BASIC   dTpw").unwrap(),
            SocksAuth::Username {
                user: b"u".to_vec(),
                pass: b"p".to_vec()
            }
        );
        for bad in [
            &b"Basic"[..],
            b"Basic ",
            b"Digest dTpw",
            b"Basic dTp",
            b"Basic dQ==",
        ] {
            assert!(parse_basic(bad).is_err(), "{bad:?}");
        }
    }
}
