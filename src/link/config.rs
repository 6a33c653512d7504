//! Tunables of the link layer.

use std::time::Duration;

/// Limits and timeouts applied to every channel.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// The whole handshake (TCP connect for [`connect`](super::connect), Noise messages,
    /// NETINFO exchange) must finish within this; a peer that stalls is dropped.
    pub handshake_timeout: Duration,
    /// Capacity of a channel's outbound queue, in cells. A full queue makes
    /// [`ChannelSender::send`](super::ChannelSender::send) wait: backpressure reaches the
    /// circuits instead of memory growing without bound.
    pub outbound_queue_cells: usize,
    /// A channel on which no record arrives for this long is closed. Upper layers that
    /// want an idle channel to stay open send PADDING.
    pub idle_timeout: Duration,
    /// Most circuits (both directions together) one channel may carry.
    pub max_circuits_per_channel: usize,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            handshake_timeout: Duration::from_secs(10),
            outbound_queue_cells: 1024,
            idle_timeout: Duration::from_secs(5 * 60),
            max_circuits_per_channel: 4096,
        }
    }
}
