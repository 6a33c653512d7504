//! What a listener and its connection tasks share: which protocol it speaks, its
//! configuration and connector, and its counters. Its own file so that the accept loop and
//! the connection handling do not import each other.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use super::{Connector, ProxyConfig};

/// Which parser a listener uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Protocol {
    /// SOCKS4/4a/5.
    Socks,
    /// HTTP `CONNECT`.
    HttpConnect,
}

impl Protocol {
    pub(super) fn name(self) -> &'static str {
        match self {
            Protocol::Socks => "SOCKS",
            Protocol::HttpConnect => "HTTP CONNECT",
        }
    }
}

/// Counters for one listener, logged when it stops.
#[derive(Debug, Default)]
pub(super) struct Stats {
    /// Connections accepted and served.
    pub(super) accepted: AtomicU64,
    /// Streams opened and relayed.
    pub(super) opened: AtomicU64,
    /// Connections that ended without a stream (bad handshake, refusal, timeout, ...).
    pub(super) failed: AtomicU64,
    /// SOCKS5 UDP associations served.
    pub(super) associations: AtomicU64,
    /// Datagrams dropped because they came from another address than the association's
    /// client.
    pub(super) udp_foreign: AtomicU64,
    /// Datagrams from a client dropped for any other reason (malformed, fragment, limits,
    /// destination held back after a failure, full queue).
    pub(super) udp_dropped: AtomicU64,
}

/// Per-listener state shared by its connection tasks.
pub(super) struct Shared {
    pub(super) protocol: Protocol,
    pub(super) listener_index: u16,
    pub(super) connector: Arc<dyn Connector>,
    pub(super) cfg: ProxyConfig,
    pub(super) stats: Stats,
}
