//! The SOCKS4/4a/5 handshake as a state machine without I/O.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::bytes::{self, Reader};
use crate::cell::{Hostname, TargetAddr};

use super::encode::{auth_reply, AUTH_VERSION};
use super::error::SocksError;
use super::types::{SocksAuth, SocksCommand, SocksRequest, SocksVersion};

/// The largest handshake message buffered. Every legal SOCKS message is at most 520 bytes
/// (a SOCKS4a request with a 255-byte user id and a 255-byte hostname), so a message
/// still incomplete at this size is refused.
pub const MAX_MESSAGE_LEN: usize = 1024;

/// Longest NUL-terminated SOCKS4 field (user id, SOCKS4a hostname), without the NUL.
pub const MAX_SOCKS4_FIELD: usize = 255;

/// SOCKS5 method: no authentication.
const METHOD_NO_AUTH: u8 = 0x00;
/// SOCKS5 method: username/password (RFC 1929).
const METHOD_USER_PASS: u8 = 0x02;

/// What the caller must do after feeding bytes to a handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Every byte given was buffered; read more from the client and feed it.
    NeedMore,
    /// Write `reply` to the client, then call `feed` again with `input[consumed..]` (which
    /// may be empty) followed by whatever the client sends next.
    ///
    /// Only `input[..consumed]` was taken: a client that pipelines its next message is
    /// not answered early, and its bytes stay with the caller.
    Reply {
        /// Bytes to write to the client.
        reply: Vec<u8>,
        /// How many bytes of this call's `input` were taken.
        consumed: usize,
    },
    /// The handshake is complete. The server now acts on `request` and writes the final
    /// reply ([`super::reply`]). `input[consumed..]` is early application data the client
    /// sent after its request: it must be kept and forwarded on the stream.
    Done {
        /// The validated request.
        request: SocksRequest,
        /// How many bytes of this call's `input` were taken.
        consumed: usize,
    },
}

/// Where the handshake is.
#[derive(Debug, Clone)]
enum State {
    /// Expecting a SOCKS4 request or a SOCKS5 method offer.
    Start,
    /// Expecting the RFC 1929 username/password message.
    Socks5Auth,
    /// Expecting the SOCKS5 request; the credentials negotiated so far.
    Socks5Request(SocksAuth),
    /// Finished or failed: nothing more is accepted.
    Finished,
}

/// One complete handshake message.
enum Msg {
    /// A SOCKS5 method offer; the method selected.
    Offer(u8),
    /// RFC 1929 credentials.
    Auth(SocksAuth),
    /// The final request.
    Request(SocksRequest),
}

/// A SOCKS4, SOCKS4a or SOCKS5 server handshake, fed bytes by the caller (no I/O).
///
/// The caller reads from the client and calls [`SocksHandshake::feed`] with whatever
/// arrived; the handshake buffers at most one incomplete message (bounded by
/// [`MAX_MESSAGE_LEN`]) and never takes bytes beyond the message it completes, so early
/// data and pipelined messages stay with the caller (see [`Step`]).
///
/// SOCKS5 method selection: if the client offers username/password (2) it is selected,
/// even when no-auth (0) is offered too, so that the credentials can serve as the
/// stream-isolation key (Tor's behaviour); any credentials are accepted. Otherwise no-auth
/// is selected. Other offered methods (e.g. GSSAPI) are ignored, as RFC 1928 lets the
/// server choose; an offer with neither 0 nor 2 is refused with `05 FF`. Empty usernames
/// and passwords are accepted (some clients send them).
///
/// Names are never resolved locally: a SOCKS5 domain or SOCKS4a hostname becomes a
/// [`TargetAddr::Hostname`], or [`TargetAddr::Ip`] if it is an IP literal.
///
/// ```
/// use allium::client::socks::{SocksCommand, SocksHandshake, Step};
///
/// let mut hs = SocksHandshake::new();
/// // Method offer (no-auth) pipelined with a CONNECT to example.com:80 and early data.
/// let mut input: Vec<u8> = vec![5, 1, 0];
/// input.extend_from_slice(&[5, 1, 0, 3, 11]);
/// input.extend_from_slice(b"example.com");
/// input.extend_from_slice(&[0, 80]);
/// input.extend_from_slice(b"GET /");
///
/// let Step::Reply { reply, consumed } = hs.feed(&input).unwrap() else { panic!() };
/// assert_eq!(reply, [5, 0]);
/// let rest = &input[consumed..];
/// let Step::Done { request, consumed } = hs.feed(rest).unwrap() else { panic!() };
/// assert_eq!(request.command, SocksCommand::Connect);
/// assert_eq!(request.port, 80);
/// assert_eq!(&rest[consumed..], b"GET /");
/// ```
#[derive(Clone)]
pub struct SocksHandshake {
    /// Where the handshake is.
    state: State,
    /// A strict prefix of the current message (never bytes beyond it).
    buf: Vec<u8>,
}

impl std::fmt::Debug for SocksHandshake {
    // The buffer may hold credentials or a destination: show only its length.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocksHandshake")
            .field("state", &self.state)
            .field("buffered", &self.buf.len())
            .finish()
    }
}

impl Default for SocksHandshake {
    fn default() -> Self {
        Self::new()
    }
}

impl SocksHandshake {
    /// A handshake waiting for the client's first byte.
    pub fn new() -> Self {
        SocksHandshake {
            state: State::Start,
            buf: Vec::new(),
        }
    }

    /// True once the handshake has finished ([`Step::Done`]) or failed.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Finished)
    }

    /// Feeds bytes received from the client. See [`Step`] for what to do next.
    ///
    /// On error the handshake is over: write [`SocksError::reply`] (if any) and close.
    /// Further calls return [`SocksError::Finished`].
    pub fn feed(&mut self, input: &[u8]) -> Result<Step, SocksError> {
        if self.is_finished() {
            return Err(SocksError::Finished);
        }
        match self.advance(input) {
            Ok(step) => Ok(step),
            Err(e) => {
                self.finish();
                Err(e)
            }
        }
    }

    /// The body of [`SocksHandshake::feed`]; errors are made final by the caller.
    fn advance(&mut self, input: &[u8]) -> Result<Step, SocksError> {
        let already = self.buf.len();
        self.buf
            .extend(input.iter().take(MAX_MESSAGE_LEN.saturating_sub(already)));

        let Some((msg, len)) = parse(&self.state, &self.buf)? else {
            if self.buf.len() >= MAX_MESSAGE_LEN {
                return Err(SocksError::TooLarge {
                    version: self.version_guess(),
                    max: MAX_MESSAGE_LEN,
                });
            }
            return Ok(Step::NeedMore);
        };
        // The buffer held an incomplete message before this call, so the message ends
        // inside this call's input: `len > already`.
        debug_assert!(len > already && len <= self.buf.len());
        let consumed = len.saturating_sub(already);
        self.buf.clear();

        Ok(match msg {
            Msg::Offer(method) => {
                self.state = if method == METHOD_USER_PASS {
                    State::Socks5Auth
                } else {
                    State::Socks5Request(SocksAuth::None)
                };
                Step::Reply {
                    reply: vec![0x05, method],
                    consumed,
                }
            }
            Msg::Auth(auth) => {
                self.state = State::Socks5Request(auth);
                Step::Reply {
                    reply: auth_reply(true),
                    consumed,
                }
            }
            Msg::Request(request) => {
                self.finish();
                Step::Done { request, consumed }
            }
        })
    }

    /// Ends the handshake and releases the buffer.
    fn finish(&mut self) {
        self.state = State::Finished;
        self.buf = Vec::new();
    }

    /// The protocol of the message being buffered, for error reports.
    fn version_guess(&self) -> SocksVersion {
        match (&self.state, self.buf.first()) {
            (State::Start, Some(4)) => SocksVersion::V4,
            _ => SocksVersion::V5,
        }
    }
}

/// Returns `Ok(None)` (need more bytes) when the read ran past the bytes buffered so far.
/// The reads used here fail in no other way (delimited fields go through [`delimited`]).
macro_rules! need {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(_) => return Ok(None),
        }
    };
}

/// Reads a NUL-terminated SOCKS4 field of at most [`MAX_SOCKS4_FIELD`] bytes: `Ok(None)`
/// while its NUL has not arrived, an error as soon as it is already too long.
fn delimited<'a>(c: &mut Reader<'a>, field: &'static str) -> Result<Option<&'a [u8]>, SocksError> {
    match c.take_until(0, MAX_SOCKS4_FIELD, field) {
        Ok(value) => Ok(Some(value)),
        Err(bytes::Error::LengthOutOfBounds { .. }) => Err(SocksError::FieldTooLong {
            field,
            max: MAX_SOCKS4_FIELD,
        }),
        Err(_) => Ok(None),
    }
}

/// Parses the message expected in `state` from the start of `buf`: `Ok(None)` if `buf` is
/// a prefix of a message that may still be valid, else the message and its length.
/// Errors are reported as soon as the offending byte is buffered.
fn parse(state: &State, buf: &[u8]) -> Result<Option<(Msg, usize)>, SocksError> {
    let mut c = Reader::new(buf);
    let msg = match state {
        State::Start => match need!(c.u8("version")) {
            5 => need!(parse_offer(&mut c)?.ok_or(())),
            4 => Msg::Request(need!(parse_socks4(&mut c)?.ok_or(()))),
            v => return Err(SocksError::UnknownVersion(v)),
        },
        State::Socks5Auth => need!(parse_auth(&mut c)?.ok_or(())),
        State::Socks5Request(auth) => {
            Msg::Request(need!(parse_socks5_request(&mut c, auth)?.ok_or(())))
        }
        State::Finished => return Err(SocksError::Finished),
    };
    Ok(Some((msg, c.consumed())))
}

/// SOCKS5 method offer after the version byte: `NMETHODS | METHODS`.
fn parse_offer(c: &mut Reader<'_>) -> Result<Option<Msg>, SocksError> {
    let n = need!(c.u8("method count"));
    if n == 0 {
        return Err(SocksError::NoMethodsOffered);
    }
    let methods = need!(c.take(usize::from(n), "methods"));
    let method = if methods.contains(&METHOD_USER_PASS) {
        METHOD_USER_PASS
    } else if methods.contains(&METHOD_NO_AUTH) {
        METHOD_NO_AUTH
    } else {
        return Err(SocksError::NoAcceptableMethod);
    };
    Ok(Some(Msg::Offer(method)))
}

/// RFC 1929: `VER=1 | ULEN | UNAME | PLEN | PASSWD`.
fn parse_auth(c: &mut Reader<'_>) -> Result<Option<Msg>, SocksError> {
    let v = need!(c.u8("auth version"));
    if v != AUTH_VERSION {
        return Err(SocksError::UnknownAuthVersion(v));
    }
    let user = need!(c.u8_prefixed("username")).to_vec();
    let pass = need!(c.u8_prefixed("password")).to_vec();
    Ok(Some(Msg::Auth(SocksAuth::Username { user, pass })))
}

/// SOCKS5 request: `VER=5 | CMD | RSV=0 | ATYP | DST.ADDR | DST.PORT`.
fn parse_socks5_request(
    c: &mut Reader<'_>,
    auth: &SocksAuth,
) -> Result<Option<SocksRequest>, SocksError> {
    const V: SocksVersion = SocksVersion::V5;
    let ver = need!(c.u8("version"));
    if ver != 5 {
        return Err(SocksError::BadRequestVersion(ver));
    }
    let command = match need!(c.u8("command")) {
        1 => SocksCommand::Connect,
        2 => SocksCommand::Bind,
        3 => SocksCommand::UdpAssociate,
        0xF0 => SocksCommand::Resolve,
        other => {
            return Err(SocksError::UnknownCommand {
                version: V,
                command: other,
            })
        }
    };
    let rsv = need!(c.u8("reserved"));
    if rsv != 0 {
        return Err(SocksError::NonZeroReserved(rsv));
    }
    let target = match need!(c.u8("address type")) {
        1 => TargetAddr::Ip(IpAddr::V4(Ipv4Addr::from(need!(
            c.array::<4>("ipv4 address")
        )))),
        3 => {
            let name = need!(c.u8_prefixed("hostname"));
            if name.is_empty() {
                return Err(SocksError::InvalidHostname { version: V });
            }
            target_from_name(name, V)?
        }
        4 => TargetAddr::Ip(IpAddr::V6(Ipv6Addr::from(need!(
            c.array::<16>("ipv6 address")
        )))),
        other => return Err(SocksError::UnknownAddressType(other)),
    };
    let port = need!(c.u16("port"));
    if port == 0 && command == SocksCommand::Connect {
        return Err(SocksError::ZeroPort { version: V });
    }
    Ok(Some(SocksRequest {
        version: V,
        command,
        target,
        port,
        auth: auth.clone(),
    }))
}

/// SOCKS4(a) request after the version byte:
/// `CD | DSTPORT | DSTIP | USERID | NUL [| HOSTNAME | NUL]`.
fn parse_socks4(c: &mut Reader<'_>) -> Result<Option<SocksRequest>, SocksError> {
    const V: SocksVersion = SocksVersion::V4;
    let command = match need!(c.u8("command")) {
        1 => SocksCommand::Connect,
        2 => SocksCommand::Bind,
        other => {
            return Err(SocksError::UnknownCommand {
                version: V,
                command: other,
            })
        }
    };
    let port = need!(c.u16("port"));
    if port == 0 && command == SocksCommand::Connect {
        return Err(SocksError::ZeroPort { version: V });
    }
    let ip = need!(c.array::<4>("ip"));
    let socks4a = match ip {
        [0, 0, 0, 0] => return Err(SocksError::Socks4ZeroAddress),
        [0, 0, 0, _] => true,
        _ => false,
    };
    let user_id = need!(delimited(c, "user id")?.ok_or(()));
    let target = if socks4a {
        let name = need!(delimited(c, "hostname")?.ok_or(()));
        target_from_name(name, V)?
    } else {
        TargetAddr::Ip(IpAddr::V4(Ipv4Addr::from(ip)))
    };
    let auth = if user_id.is_empty() {
        SocksAuth::None
    } else {
        SocksAuth::Socks4UserId(user_id.to_vec())
    };
    Ok(Some(SocksRequest {
        version: V,
        command,
        target,
        port,
        auth,
    }))
}

/// A destination given as a name: an IP literal becomes an address, anything else must be
/// a valid [`Hostname`]. Nothing is resolved.
pub(crate) fn target_from_name(
    bytes: &[u8],
    version: SocksVersion,
) -> Result<TargetAddr, SocksError> {
    if let Some(ip) = std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse::<IpAddr>().ok())
    {
        return Ok(TargetAddr::Ip(ip));
    }
    Hostname::from_bytes(bytes)
        .map(TargetAddr::Hostname)
        .map_err(|_| SocksError::InvalidHostname { version })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimited_field_bounds() {
        let mut c = Reader::new(b"abc\0rest");
        assert_eq!(delimited(&mut c, "f"), Ok(Some(&b"abc"[..])));
        assert_eq!(c.consumed(), 4);
        let long = [b'a'; MAX_SOCKS4_FIELD + 1];
        let too_long = Err(SocksError::FieldTooLong {
            field: "f",
            max: MAX_SOCKS4_FIELD,
        });
        assert_eq!(delimited(&mut Reader::new(&long), "f"), too_long);
        assert_eq!(delimited(&mut Reader::new(&long[1..]), "f"), Ok(None));
        assert_eq!(delimited(&mut Reader::new(b""), "f"), Ok(None));
    }

    #[test]
    fn names_and_literals() {
        let v = SocksVersion::V5;
        assert_eq!(
            target_from_name(b"10.0.0.1", v).unwrap(),
            TargetAddr::Ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)))
        );
        assert_eq!(
            target_from_name(b"::", v).unwrap(),
            TargetAddr::Ip(IpAddr::V6(Ipv6Addr::UNSPECIFIED))
        );
        assert_eq!(
            target_from_name(b"x.y", v).unwrap(),
            TargetAddr::Hostname(Hostname::new("x.y").unwrap())
        );
        for bad in [&b""[..], b"a b", b"\xff", b"a:b", b"[::1]"] {
            assert_eq!(
                target_from_name(bad, v),
                Err(SocksError::InvalidHostname { version: v })
            );
        }
    }

    #[test]
    fn parse_is_prefix_monotonic_on_a_sample() {
        // Every strict prefix of a valid message is "need more", never an error.
        let msg = [4u8, 1, 0, 80, 0, 0, 0, 1, b'u', 0, b'h', 0];
        for n in 0..msg.len() {
            assert!(matches!(parse(&State::Start, &msg[..n]), Ok(None)), "{n}");
        }
        assert!(matches!(
            parse(&State::Start, &msg),
            Ok(Some((Msg::Request(_), 12)))
        ));
    }

    #[test]
    fn udp_associate_may_name_the_unspecified_address_and_port_0() {
        // Clients that do not know their address send 0.0.0.0:0 or [::]:0; CONNECT to
        // port 0 stays refused.
        let v4 = [5u8, 3, 0, 1, 0, 0, 0, 0, 0, 0];
        let mut v6 = vec![5u8, 3, 0, 4];
        v6.extend_from_slice(&[0; 16]);
        v6.extend_from_slice(&[0, 0]);
        for (msg, ip) in [
            (&v4[..], IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            (&v6[..], IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        ] {
            let state = State::Socks5Request(SocksAuth::None);
            let Ok(Some((Msg::Request(r), len))) = parse(&state, msg) else {
                panic!("UDP ASSOCIATE to the unspecified address refused");
            };
            assert_eq!(len, msg.len());
            assert_eq!(r.command, SocksCommand::UdpAssociate);
            assert_eq!((r.target, r.port), (TargetAddr::Ip(ip), 0));
        }
        let mut connect = v4;
        connect[1] = 1;
        assert!(matches!(
            parse(&State::Socks5Request(SocksAuth::None), &connect),
            Err(SocksError::ZeroPort { .. })
        ));
    }

    #[test]
    fn feeding_after_failure_is_refused() {
        let mut hs = SocksHandshake::new();
        assert_eq!(hs.feed(&[9]), Err(SocksError::UnknownVersion(9)));
        assert!(hs.is_finished());
        assert_eq!(hs.feed(&[5, 1, 0]), Err(SocksError::Finished));
    }
}
