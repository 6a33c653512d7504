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
    /// A peer that vanished without closing (cable cut, crashed host, a NAT that forgot the
    /// connection) is detected within about this long: TCP keepalive probes start after
    /// half of it without traffic, and the kernel drops the connection when sent data or
    /// probes stay unacknowledged this long (`TCP_USER_TIMEOUT` on Linux). Without it a
    /// channel with data in flight waits for TCP's retransmission give-up (~15 min) and a
    /// silent one for `idle_timeout`, and every circuit on it stalls meanwhile. `None`:
    /// the system's defaults.
    pub dead_peer_timeout: Option<Duration>,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            handshake_timeout: Duration::from_secs(10),
            outbound_queue_cells: 1024,
            idle_timeout: Duration::from_secs(5 * 60),
            max_circuits_per_channel: 4096,
            dead_peer_timeout: Some(Duration::from_secs(20)),
        }
    }
}
