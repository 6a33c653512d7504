//! Tunables of the link layer.

use std::time::Duration;

use std::sync::Arc;

use crate::clock::Clock;

use super::bandwidth_limit::BandwidthShaper;
use super::padding::{LinkPadding, DEFAULT_PADDING_FLOOR};
use crate::cell::PaddingBounds;

/// Default [`LinkConfig::rekey_after_records`]: 2^20 records (about 560 MB) per key.
pub(crate) const DEFAULT_REKEY_AFTER_RECORDS: u64 = 1 << 20;
/// Default [`LinkConfig::rekey_after`]: one hour.
pub(crate) const DEFAULT_REKEY_AFTER: Duration = Duration::from_secs(60 * 60);
/// Default [`LinkConfig::tcp_notsent_lowat`]: 32 KiB, about one full writer batch (65
/// records of 533 bytes, 34 KiB): enough unsent data for the kernel to keep sending while
/// the writer prepares the next batch, so throughput holds, while a cell queued now
/// waits behind at most ~32 KiB in the kernel (a quarter of a millisecond at 1 Gbit/s)
/// instead of the whole socket buffer.
pub const DEFAULT_TCP_NOTSENT_LOWAT: u32 = 32 * 1024;
/// The protocol's bound on a peer's rekeying (docs/protocol.md §5.5.1): a REKEY that
/// retires a key which protected fewer records than this (the REKEY included) ...
pub const REKEY_MIN_RECORDS: u64 = 1000;
/// ... and which the receiver installed less than this long ago is a protocol violation.
pub const REKEY_MIN_INTERVAL: Duration = Duration::from_secs(1);

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
    /// Our sending key on a channel is replaced (REKEY, docs/protocol.md §5.5.1) once it
    /// has protected this many records, its REKEY record included. Read as at least 3.
    /// Peers refuse a REKEY sooner than [`REKEY_MIN_RECORDS`] records unless
    /// [`REKEY_MIN_INTERVAL`] has passed, so values below it are for tests.
    pub rekey_after_records: u64,
    /// Our sending key is also replaced this long after it protected its first record,
    /// so a key never protects traffic for longer than about this, however quiet the
    /// channel (a key that has protected nothing is not replaced: an idle channel sends
    /// one REKEY after its last traffic, then nothing).
    pub rekey_after: Duration,
    /// The peer's REKEY is a protocol violation, closing the channel, if the key it
    /// retires protected fewer than this many records (the REKEY included) *and* was
    /// installed less than [`Self::peer_rekey_min_interval`] ago. The protocol's values
    /// are [`REKEY_MIN_RECORDS`] and [`REKEY_MIN_INTERVAL`]; lower them only in tests.
    pub peer_rekey_min_records: u64,
    /// See [`Self::peer_rekey_min_records`].
    pub peer_rekey_min_interval: Duration,
    /// The node's clock: certificate validity and NETINFO timestamps read its wall time.
    pub clock: Clock,
    /// The node's byte-rate limit, shared by every channel made with this config (clones
    /// share it): reads from and writes to peers wait for its buckets. `None`: unlimited.
    pub bandwidth: Option<Arc<BandwidthShaper>>,
    /// Whether the writer serves the circuits of a channel fairly (docs/protocol.md §5.7,
    /// local): per-circuit queues, the circuit that sent least recently first, each
    /// circuit held to a quarter of [`Self::outbound_queue_cells`]. `false`: one FIFO for
    /// every circuit, where one bulk circuit's backlog delays every other circuit's cells
    /// (kept to measure the difference).
    pub fair_queueing: bool,
    /// `TCP_NOTSENT_LOWAT` on channel sockets (Linux): the kernel takes more of our bytes
    /// only while fewer than this many it holds are unsent. Without it the socket buffer
    /// (megabytes under autotuning) holds the backlog in arrival order, where no scheduler
    /// can reorder it; with it the backlog stays in our queue, where fair queueing applies
    /// (Tor's KIST idea). See [`DEFAULT_TCP_NOTSENT_LOWAT`]. `None`: the system's default.
    pub tcp_notsent_lowat: Option<u32>,
    /// Our link padding schedule on channels that carry circuits (docs/protocol.md
    /// §5.10): `None` sends only the keep-alive. A client also asks its first hop for it
    /// (PADDING_NEGOTIATE); a relay uses it towards peers that asked for nothing.
    pub padding: Option<PaddingBounds>,
    /// A relay raises the lower bound a client asks for to at least this, so no peer makes
    /// it pad faster (see [`super::padding::DEFAULT_PADDING_FLOOR`]). Lower only in tests.
    pub padding_floor: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            handshake_timeout: Duration::from_secs(10),
            outbound_queue_cells: 1024,
            idle_timeout: Duration::from_secs(5 * 60),
            max_circuits_per_channel: 4096,
            dead_peer_timeout: Some(Duration::from_secs(20)),
            rekey_after_records: DEFAULT_REKEY_AFTER_RECORDS,
            rekey_after: DEFAULT_REKEY_AFTER,
            peer_rekey_min_records: REKEY_MIN_RECORDS,
            peer_rekey_min_interval: REKEY_MIN_INTERVAL,
            clock: Clock::system(),
            bandwidth: None,
            fair_queueing: true,
            tcp_notsent_lowat: Some(DEFAULT_TCP_NOTSENT_LOWAT),
            padding: LinkPadding::Normal.bounds(),
            padding_floor: DEFAULT_PADDING_FLOOR,
        }
    }
}
