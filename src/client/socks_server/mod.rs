//! Local proxy listeners: a thin tokio server around the I/O-free parsers in
//! [`super::socks`].
//!
//! [`serve_socks`] accepts SOCKS4, SOCKS4a and SOCKS5 clients; [`serve_http_connect`]
//! accepts HTTP `CONNECT` clients. Both run the same accept loop:
//!
//! - at most [`ProxyConfig::max_connections`] connections are served at once; when the
//!   limit is reached, the oldest connection still in its handshake is closed to make room
//!   for the new one (so a flood of idle or slow connections cannot lock honest clients
//!   out: theirs finish their handshake in milliseconds), and if every connection is past
//!   its handshake the new one is closed immediately;
//! - the handshake must finish within [`ProxyConfig::handshake_timeout`]; reads use a
//!   bounded buffer ([`READ_CHUNK`]) and the parsers bound what they keep;
//! - a `CONNECT` goes to the [`Connector`] (the circuit manager) with the request's
//!   [`IsolationKey`], bounded by [`ProxyConfig::connect_timeout`]; its outcome becomes the
//!   reply code ([`reply_code_for`]);
//! - after success, early data (bytes the client sent after its request) is written to the
//!   stream first, then bytes are copied both ways with half-close: when one side reaches
//!   EOF the write side of the other is shut down and the other direction keeps flowing;
//!   a stream that ends any other way (cut short, idle) resets the client's connection
//!   rather than closing it, so a truncated transfer never looks complete;
//! - SOCKS5 UDP ASSOCIATE binds a UDP relay socket for the client, alive as long as its
//!   TCP connection (which counts as one connection), with a flow per destination
//!   (`udp_associate.rs`; limits: [`UDP_MAX_DESTINATIONS`] and its neighbours);
//! - BIND and RESOLVE (and UDP ASSOCIATE over SOCKS4, which has none) are answered
//!   "command not supported"; malformed handshakes get the parser's error reply (if the
//!   protocol has one) and are closed.
//!
//! Names are never resolved locally: a hostname goes to the connector as
//! [`TargetAddr::Hostname`](crate::cell::TargetAddr::Hostname).
//!
//! Logging: at `info` and above only counts and error kinds are logged, never client
//! addresses, destinations or credentials. `debug` adds per-connection outcomes.
//!
//! Files: `listener.rs` the accept loop and its limit, `connection.rs` one connection's
//! handshake, request and reply, `copy.rs` the bytes both ways once the stream is open,
//! `connector.rs` the circuit manager's interface and reply codes, `isolation.rs` the
//! isolation key, `config.rs` the listener's limits; `udp_associate.rs` a UDP
//! association, `udp_source.rs` which datagrams it accepts, `udp_destinations.rs` its
//! flows and their limits.

mod config;
mod connection;
mod connector;
mod copy;
mod isolation;
mod listener;
mod shared;
mod udp_associate;
mod udp_destinations;
mod udp_source;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use config::ProxyConfig;
pub use connection::READ_CHUNK;
pub use connector::{reply_code_for, Connector};
pub use isolation::IsolationKey;
pub use udp_associate::MAX_CONTROL_BYTES;
pub use udp_destinations::{
    EVICT_IDLE as UDP_EVICT_IDLE, MAX_DESTINATIONS as UDP_MAX_DESTINATIONS,
    MAX_OPENING as UDP_MAX_OPENING, OPENING_QUEUE as UDP_OPENING_QUEUE,
    OPENS_PER_SECOND as UDP_OPENS_PER_SECOND, OPEN_BURST as UDP_OPEN_BURST,
    RETRY_AFTER as UDP_RETRY_AFTER,
};

use listener::serve;
use shared::Protocol;

/// Serves SOCKS4, SOCKS4a and SOCKS5 clients on `listener` until `shutdown` completes.
///
/// `listener_index` becomes [`IsolationKey::listener`] for every request accepted here.
/// When this returns, connections still in progress are aborted.
pub async fn serve_socks(
    listener: TcpListener,
    listener_index: u16,
    connector: Arc<dyn Connector>,
    cfg: ProxyConfig,
    shutdown: impl Future<Output = ()>,
) {
    serve(
        listener,
        listener_index,
        connector,
        cfg,
        shutdown,
        Protocol::Socks,
    )
    .await;
}

/// Serves HTTP `CONNECT` clients on `listener` until `shutdown` completes.
///
/// Same behaviour as [`serve_socks`]; credentials come from `Proxy-Authorization: Basic`.
pub async fn serve_http_connect(
    listener: TcpListener,
    listener_index: u16,
    connector: Arc<dyn Connector>,
    cfg: ProxyConfig,
    shutdown: impl Future<Output = ()>,
) {
    serve(
        listener,
        listener_index,
        connector,
        cfg,
        shutdown,
        Protocol::HttpConnect,
    )
    .await;
}
