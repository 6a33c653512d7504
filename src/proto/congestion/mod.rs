//! Congestion control (docs/protocol.md §3.5): a circuit's send window set by a Vegas-style
//! algorithm from round-trip times measured on SENDMEs, instead of the fixed 1,000 cells.
//!
//! A client asks for it in each hop's handshake ([`crate::cell::circuit_ext`]); the hop that
//! carries the circuit's streams grants it with the SENDME increment both ends use. Without
//! the grant (a hop that does not support it, or a client that did not ask) both ends keep
//! the fixed windows of [`crate::proto::stream`]. Under congestion control, stream-level
//! windows are replaced by XOFF/XON: they only bound what an application does not read.

mod send_window;
pub mod vegas;

pub(crate) use send_window::CircuitSendWindow;
pub use vegas::{Vegas, VegasParams};

/// The SENDME increment a relay grants (cells per circuit-level SENDME): Tor's 31, a
/// round-trip sample every 31 cells, SENDMEs ~3% of the reverse direction's cells.
pub const GRANTED_SENDME_INC: u8 = 31;

/// The cap on a circuit's window under congestion control, in cells (~2 MB): at a 300 ms
/// round trip it allows ~6.8 MB/s per circuit, and it bounds what a receiver must be
/// prepared to buffer for a stream before its XOFF takes effect.
pub const CWND_MAX: u32 = 4096;

/// How a circuit's windows work, as negotiated with the hop at its far end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlowMode {
    /// Fixed windows: circuit 1,000 cells (SENDME every 100), stream 500 (every 50).
    #[default]
    Fixed,
    /// Congestion control: the circuit window follows [`vegas`], a SENDME every
    /// `sendme_inc` cells; streams use XOFF/XON.
    Congestion {
        /// Cells per circuit-level SENDME (granted by the hop).
        sendme_inc: u8,
    },
}

impl FlowMode {
    /// The mode a hop's handshake reply grants.
    pub fn from_grant(granted: Option<u8>) -> Self {
        match granted {
            Some(sendme_inc) => FlowMode::Congestion { sendme_inc },
            None => FlowMode::Fixed,
        }
    }

    /// Whether congestion control is on.
    pub fn is_congestion(self) -> bool {
        matches!(self, FlowMode::Congestion { .. })
    }
}

/// Stream flow control under congestion control (XOFF/XON), in cells buffered towards the
/// application (received, not yet written to its socket).
pub(crate) mod stream_limits {
    /// Above this many buffered cells the receiver sends XOFF (~245 KB: Tor's 500 cells).
    pub(crate) const XOFF_AT: u32 = 500;
    /// At or below this many, after an XOFF, it sends XON.
    pub(crate) const XON_AT: u32 = 250;
    /// The writer reports delivery every this many cells (the granularity of the count).
    pub(crate) const DELIVERY_MARK: u32 = 50;
    /// Window permits a stream's reader holds while the peer has not said XOFF: in effect
    /// unlimited (the circuit window is the limit).
    pub(crate) const UNLIMITED: usize = 1 << 28;
}
