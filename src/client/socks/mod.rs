//! Local proxy protocols: SOCKS4, SOCKS4a, SOCKS5 and HTTP `CONNECT`, parsed without I/O.
//!
//! Modelled on arti's `tor-socksproto`: a handshake is a state machine the server feeds
//! with bytes read from the client ([`SocksHandshake::feed`],
//! [`HttpConnectHandshake::feed`]); each call says what to write back and whether the
//! request is complete ([`Step`]). The server then opens the stream and answers with
//! [`reply`] in the client's protocol.
//!
//! Every parser is total and strict: any input yields a [`Step`] or a typed
//! [`SocksError`], never a panic; buffering is bounded ([`MAX_MESSAGE_LEN`],
//! [`MAX_HTTP_HEAD_LEN`]); bytes after the request (early data) are never swallowed.
//! Destinations are never resolved locally. Credentials are accepted unchecked and serve
//! as the stream-isolation key ([`SocksRequest::isolation_key`]).
//!
//! A server loop looks like:
//!
//! ```
//! use allium::client::socks::{reply, ReplyCode, SocksHandshake, Step};
//!
//! # fn main() -> Result<(), allium::client::socks::SocksError> {
//! let chunks: [&[u8]; 2] = [&[5, 1, 0], &[5, 1, 0, 1, 127, 0, 0, 1, 0, 80, b'h', b'i']];
//! let mut to_client = Vec::new();
//! let mut hs = SocksHandshake::new();
//! 'read: for chunk in chunks {
//!     let mut input = chunk;
//!     loop {
//!         match hs.feed(input)? {
//!             Step::NeedMore => continue 'read,
//!             Step::Reply { reply, consumed } => {
//!                 to_client.extend_from_slice(&reply);
//!                 input = &input[consumed..];
//!             }
//!             Step::Done { request, consumed } => {
//!                 let early_data = &input[consumed..];
//!                 assert_eq!(early_data, b"hi");
//!                 // ... open the stream, then:
//!                 to_client.extend(reply(request.version, ReplyCode::Succeeded, None));
//!                 break 'read;
//!             }
//!         }
//!     }
//! }
//! assert_eq!(to_client, [5, 0, 5, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
//! # Ok(())
//! # }
//! ```

pub(crate) mod base64;
mod encode;
mod error;
mod handshake;
pub(crate) mod http_connect;
mod types;
mod udp;

pub use encode::{auth_reply, reply};
pub use error::SocksError;
pub use handshake::{SocksHandshake, Step, MAX_MESSAGE_LEN, MAX_SOCKS4_FIELD};
pub use http_connect::{HttpConnectHandshake, MAX_HTTP_HEADERS, MAX_HTTP_HEAD_LEN};
pub use types::{ReplyCode, SocksAuth, SocksCommand, SocksRequest, SocksVersion};
pub use udp::{
    encode_udp_datagram, parse_udp_datagram, UdpDatagram, UdpHeaderError, MAX_UDP_PAYLOAD,
};
