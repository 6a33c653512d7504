//! Why a proxy handshake was refused.

use thiserror::Error;

use super::encode::{auth_reply, http_response, reply, socks5_reply};
use super::types::{ReplyCode, SocksVersion};

/// SOCKS5 "no acceptable methods" method selection.
const NO_ACCEPTABLE_METHODS: u8 = 0xFF;

/// Why a SOCKS or HTTP `CONNECT` handshake was refused.
///
/// Every error ends the handshake: the server writes [`SocksError::reply`] (if any) and
/// closes the connection. No variant carries client-supplied names or credentials, so
/// errors are safe to log.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SocksError {
    /// The first byte named neither SOCKS4 nor SOCKS5.
    #[error("unknown SOCKS version byte {0:#04x}")]
    UnknownVersion(u8),
    /// A SOCKS5 method offer listed no methods.
    #[error("SOCKS5 client offered no authentication methods")]
    NoMethodsOffered,
    /// A SOCKS5 method offer listed neither no-auth (0) nor username/password (2).
    #[error("SOCKS5 client offered no acceptable authentication method")]
    NoAcceptableMethod,
    /// The RFC 1929 sub-negotiation had a version other than 1.
    #[error("unknown username/password sub-negotiation version {0:#04x}")]
    UnknownAuthVersion(u8),
    /// A SOCKS5 request did not start with version 5.
    #[error("SOCKS5 request has version {0:#04x}")]
    BadRequestVersion(u8),
    /// The reserved byte of a SOCKS5 request was not zero.
    #[error("SOCKS5 reserved byte is {0:#04x}, not 0")]
    NonZeroReserved(u8),
    /// A request named an unknown command.
    #[error("unknown {version} command {command:#04x}")]
    UnknownCommand {
        /// The protocol of the request.
        version: SocksVersion,
        /// The command byte.
        command: u8,
    },
    /// A SOCKS5 request named an unknown address type.
    #[error("unknown SOCKS5 address type {0:#04x}")]
    UnknownAddressType(u8),
    /// A destination name was neither a valid hostname nor an IP literal.
    #[error("invalid {version} destination hostname")]
    InvalidHostname {
        /// The protocol of the request.
        version: SocksVersion,
    },
    /// A CONNECT request named port 0.
    #[error("{version} request for port 0")]
    ZeroPort {
        /// The protocol of the request.
        version: SocksVersion,
    },
    /// A SOCKS4 request named destination 0.0.0.0.
    #[error("SOCKS4 destination address 0.0.0.0")]
    Socks4ZeroAddress,
    /// A NUL-terminated SOCKS4 field ran past its bound.
    #[error("SOCKS4 {field} longer than {max} bytes")]
    FieldTooLong {
        /// The field: "user id" or "hostname".
        field: &'static str,
        /// The longest value accepted.
        max: usize,
    },
    /// A handshake message exceeded the buffer bound.
    #[error("{version} handshake message exceeds {max} bytes")]
    TooLarge {
        /// The protocol of the request.
        version: SocksVersion,
        /// The bound.
        max: usize,
    },
    /// An HTTP request head was malformed (request line, header syntax, line endings,
    /// request target, version, or a forbidden header).
    #[error("malformed HTTP CONNECT request: {0}")]
    HttpMalformed(&'static str),
    /// An HTTP request used a method other than `CONNECT`.
    #[error("HTTP method other than CONNECT")]
    HttpMethodNotAllowed,
    /// An HTTP request head had more header lines than allowed.
    #[error("HTTP request has more than {0} header lines")]
    HttpTooManyHeaders(usize),
    /// `feed` was called after the handshake had already finished or failed.
    #[error("handshake already finished")]
    Finished,
}

impl SocksError {
    /// The bytes to write to the client before closing, if the protocol has a way to
    /// report this failure.
    ///
    /// SOCKS5: `05 FF` for method negotiation failures, `01 01` for sub-negotiation
    /// failures, otherwise a reply with code 7 (unknown command), 8 (unknown address type)
    /// or 1 (anything else). SOCKS4: a `0x5B` rejection. HTTP: 400, or 405 for a method
    /// other than `CONNECT`. `None` when the protocol is unknown or the handshake was over.
    pub fn reply(&self) -> Option<Vec<u8>> {
        let r = match self {
            SocksError::UnknownVersion(_) | SocksError::Finished => return None,
            SocksError::NoMethodsOffered | SocksError::NoAcceptableMethod => {
                vec![0x05, NO_ACCEPTABLE_METHODS]
            }
            SocksError::UnknownAuthVersion(_) => auth_reply(false),
            SocksError::BadRequestVersion(_) | SocksError::NonZeroReserved(_) => {
                socks5_reply(ReplyCode::GeneralFailure.socks5_code(), None)
            }
            SocksError::UnknownAddressType(_) => {
                socks5_reply(ReplyCode::AddressTypeNotSupported.socks5_code(), None)
            }
            SocksError::UnknownCommand { version, .. } => {
                reply(*version, ReplyCode::CommandNotSupported, None)
            }
            SocksError::InvalidHostname { version }
            | SocksError::ZeroPort { version }
            | SocksError::TooLarge { version, .. } => match version {
                SocksVersion::HttpConnect => http_response(400, "Bad Request"),
                v => reply(*v, ReplyCode::GeneralFailure, None),
            },
            SocksError::Socks4ZeroAddress | SocksError::FieldTooLong { .. } => {
                reply(SocksVersion::V4, ReplyCode::GeneralFailure, None)
            }
            SocksError::HttpMalformed(_) | SocksError::HttpTooManyHeaders(_) => {
                http_response(400, "Bad Request")
            }
            SocksError::HttpMethodNotAllowed => http_response(405, "Method Not Allowed"),
        };
        Some(r)
    }
}
