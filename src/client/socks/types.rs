//! What a finished proxy handshake yields, and the outcome codes a server answers with.

use std::fmt;

use crate::cell::TargetAddr;

/// The proxy protocol a client spoke. Replies must be encoded in the same protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SocksVersion {
    /// SOCKS4 or SOCKS4a.
    V4,
    /// SOCKS5 (RFC 1928).
    V5,
    /// An HTTP `CONNECT` tunnel request (RFC 9110 §9.3.6).
    HttpConnect,
}

impl fmt::Display for SocksVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SocksVersion::V4 => "SOCKS4",
            SocksVersion::V5 => "SOCKS5",
            SocksVersion::HttpConnect => "HTTP CONNECT",
        })
    }
}

/// What the client asked the proxy to do.
///
/// Only [`SocksCommand::Connect`] (and, if the server implements it,
/// [`SocksCommand::Resolve`]) can be served by an onion proxy; the others are parsed so that
/// the server can answer them with [`ReplyCode::CommandNotSupported`] instead of hanging up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SocksCommand {
    /// Open a TCP stream to the target (SOCKS4/5 command 1, HTTP `CONNECT`).
    Connect,
    /// Accept one inbound connection (SOCKS4/5 command 2). Never supported.
    Bind,
    /// Relay UDP datagrams (SOCKS5 command 3). Never supported.
    UdpAssociate,
    /// Resolve a hostname through the overlay (Tor's SOCKS5 extension, command `0xF0`).
    /// The answer travels in the reply's bound address.
    Resolve,
}

/// Credentials a client presented. allium never checks them: they only separate streams
/// that must not share a circuit (stream isolation, like Tor's `IsolateSOCKSAuth`).
///
/// `Debug` output is redacted: credentials must not reach logs.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum SocksAuth {
    /// No credentials (SOCKS5 method 0, an empty SOCKS4 user id, no
    /// `Proxy-Authorization` header).
    None,
    /// SOCKS5 username/password (RFC 1929) or HTTP `Proxy-Authorization: Basic`.
    /// Either field may be empty.
    Username {
        /// The user name, as raw bytes (not necessarily UTF-8).
        user: Vec<u8>,
        /// The password, as raw bytes (not necessarily UTF-8).
        pass: Vec<u8>,
    },
    /// A non-empty SOCKS4 user id, as raw bytes.
    Socks4UserId(Vec<u8>),
}

impl fmt::Debug for SocksAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SocksAuth::None => "SocksAuth::None",
            SocksAuth::Username { .. } => "SocksAuth::Username(<redacted>)",
            SocksAuth::Socks4UserId(_) => "SocksAuth::Socks4UserId(<redacted>)",
        })
    }
}

/// A complete, validated proxy request.
///
/// `Debug` output redacts the destination and the credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocksRequest {
    /// The protocol spoken; replies must use it.
    pub version: SocksVersion,
    /// The requested operation.
    pub command: SocksCommand,
    /// The destination. Names are never resolved locally: a hostname goes to the exit as
    /// is, and an IP literal given as a name (SOCKS5 domain, SOCKS4a, HTTP) becomes
    /// [`TargetAddr::Ip`].
    pub target: TargetAddr,
    /// The destination port. Never 0 for [`SocksCommand::Connect`].
    pub port: u16,
    /// The credentials presented, if any.
    pub auth: SocksAuth,
}

impl SocksRequest {
    /// The stream-isolation key: streams whose keys differ must not share a circuit.
    ///
    /// It is the presented credentials, whatever the protocol; requests without credentials
    /// all share [`SocksAuth::None`].
    pub fn isolation_key(&self) -> &SocksAuth {
        &self.auth
    }
}

/// The outcome a proxy reports to its client, named after the SOCKS5 reply codes
/// (RFC 1928 §6). SOCKS4 and HTTP replies are derived from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplyCode {
    /// 0: the stream is open (or the name resolved).
    Succeeded,
    /// 1: general SOCKS server failure.
    GeneralFailure,
    /// 2: connection not allowed by ruleset (e.g. exit policy).
    NotAllowed,
    /// 3: network unreachable.
    NetworkUnreachable,
    /// 4: host unreachable (includes a name that failed to resolve).
    HostUnreachable,
    /// 5: connection refused.
    ConnectionRefused,
    /// 6: TTL expired (used for timeouts).
    TtlExpired,
    /// 7: command not supported.
    CommandNotSupported,
    /// 8: address type not supported.
    AddressTypeNotSupported,
    /// 0xF4 (Tor's extended code): the onion service requires client authorisation and
    /// no key is configured for it.
    OnionAuthMissing,
    /// 0xF5 (Tor's extended code): the onion service did not accept the client
    /// authorisation key.
    OnionAuthRejected,
}

impl ReplyCode {
    /// The SOCKS5 `REP` byte.
    pub fn socks5_code(self) -> u8 {
        match self {
            ReplyCode::Succeeded => 0x00,
            ReplyCode::GeneralFailure => 0x01,
            ReplyCode::NotAllowed => 0x02,
            ReplyCode::NetworkUnreachable => 0x03,
            ReplyCode::HostUnreachable => 0x04,
            ReplyCode::ConnectionRefused => 0x05,
            ReplyCode::TtlExpired => 0x06,
            ReplyCode::CommandNotSupported => 0x07,
            ReplyCode::AddressTypeNotSupported => 0x08,
            ReplyCode::OnionAuthMissing => 0xF4,
            ReplyCode::OnionAuthRejected => 0xF5,
        }
    }

    /// The SOCKS4 `CD` byte: `0x5A` (granted) on success, `0x5B` (rejected or failed)
    /// otherwise. SOCKS4 has no finer distinction that applies to a proxy without identd.
    pub fn socks4_code(self) -> u8 {
        match self {
            ReplyCode::Succeeded => 0x5A,
            _ => 0x5B,
        }
    }

    /// The HTTP status code and reason phrase answering an HTTP `CONNECT`.
    ///
    /// Succeeded → 200; not allowed → 403; host unreachable → 404 (the name did not
    /// resolve or the host is unknown); command not supported → 405; address type not
    /// supported → 400; TTL expired → 504; onion client authorisation missing or refused
    /// → 403; everything else → 502.
    pub fn http_status(self) -> (u16, &'static str) {
        match self {
            ReplyCode::Succeeded => (200, "Connection established"),
            ReplyCode::NotAllowed => (403, "Forbidden"),
            ReplyCode::HostUnreachable => (404, "Not Found"),
            ReplyCode::CommandNotSupported => (405, "Method Not Allowed"),
            ReplyCode::AddressTypeNotSupported => (400, "Bad Request"),
            ReplyCode::TtlExpired => (504, "Gateway Timeout"),
            ReplyCode::OnionAuthMissing | ReplyCode::OnionAuthRejected => (403, "Forbidden"),
            ReplyCode::GeneralFailure
            | ReplyCode::NetworkUnreachable
            | ReplyCode::ConnectionRefused => (502, "Bad Gateway"),
        }
    }

    /// Parses a SOCKS5 `REP` byte (0 to 8, 0xF4, 0xF5).
    pub fn from_socks5_code(code: u8) -> Option<Self> {
        Some(match code {
            0x00 => ReplyCode::Succeeded,
            0x01 => ReplyCode::GeneralFailure,
            0x02 => ReplyCode::NotAllowed,
            0x03 => ReplyCode::NetworkUnreachable,
            0x04 => ReplyCode::HostUnreachable,
            0x05 => ReplyCode::ConnectionRefused,
            0x06 => ReplyCode::TtlExpired,
            0x07 => ReplyCode::CommandNotSupported,
            0x08 => ReplyCode::AddressTypeNotSupported,
            0xF4 => ReplyCode::OnionAuthMissing,
            0xF5 => ReplyCode::OnionAuthRejected,
            _ => return None,
        })
    }
}
