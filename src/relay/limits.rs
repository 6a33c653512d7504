//! Resource limits of a relay: everything a peer can make us allocate has a bound here.
//!
//! Reaching a limit is a clean refusal (DESTROY with RESOURCE_LIMIT, or a closed
//! connection), never a crash or unbounded growth.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Limits a relay enforces. Every field has a safe default; operators may tune them in the
/// `[limits]` table of relay.toml.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayLimits {
    /// Circuits one channel may have open at once (both directions together).
    pub circuits_per_channel: usize,
    /// Cells queued towards one circuit before the channel that feeds it stops reading
    /// its socket (backpressure).
    pub cells_queued_per_circuit: usize,
    /// Bytes of cells queued across all circuits of the relay. When exceeded, the circuit
    /// holding the most queued cells is destroyed.
    pub total_queued_bytes: usize,
    /// Circuit handshakes (CREATE) answered per second, sustained.
    pub handshakes_per_second: u32,
    /// Burst allowance above the sustained handshake rate.
    pub handshake_burst: u32,
    /// Inbound link handshakes in progress at once.
    pub pending_link_handshakes: usize,
    /// Streams one circuit may have open at once (exits).
    pub streams_per_circuit: usize,
    /// Seconds a channel with no circuits may stay open.
    pub idle_channel_timeout_secs: u64,
    /// Seconds a link handshake may take.
    pub link_handshake_timeout_secs: u64,
    /// Seconds after which a peer that stopped answering (no FIN or RST: cable cut,
    /// crashed host) is considered gone and its channel closed, destroying its circuits
    /// so clients rebuild; 0 leaves it to the system's TCP defaults (up to ~15 min). See
    /// `LinkConfig::dead_peer_timeout`.
    pub dead_peer_timeout_secs: u64,
    /// Seconds to wait for CREATED from the next hop when extending.
    pub extend_timeout_secs: u64,
    /// Introduction points (auth keys) registered at this relay at once.
    pub intro_points: usize,
    /// Introduction points registered through one channel at once.
    pub intro_points_per_channel: usize,
    /// Largest INTRODUCE1 rate (per second, sustained) an introduction point allows for
    /// one auth key; a service may ask for less in ESTABLISH_INTRO.
    pub intro_rate_per_second: u32,
    /// Largest INTRODUCE1 burst an introduction point allows for one auth key.
    pub intro_burst: u32,
    /// Rendezvous cookies waiting at this relay at once.
    pub rend_cookies: usize,
    /// Rendezvous cookies waiting through one channel at once.
    pub rend_cookies_per_channel: usize,
    /// Seconds a rendezvous circuit may wait for its service before it is closed.
    pub rend_cookie_timeout_secs: u64,
}

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits {
            circuits_per_channel: 4096,
            cells_queued_per_circuit: 256,
            total_queued_bytes: 64 * 1024 * 1024,
            handshakes_per_second: 2000,
            handshake_burst: 4000,
            pending_link_handshakes: 256,
            streams_per_circuit: 512,
            idle_channel_timeout_secs: 300,
            link_handshake_timeout_secs: 10,
            dead_peer_timeout_secs: 20,
            extend_timeout_secs: 20,
            intro_points: 20_000,
            intro_points_per_channel: 2_000,
            intro_rate_per_second: 20,
            intro_burst: 200,
            rend_cookies: 20_000,
            rend_cookies_per_channel: 2_000,
            rend_cookie_timeout_secs: 120,
        }
    }
}

impl RelayLimits {
    /// Idle channel timeout as a duration.
    pub fn idle_channel_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_channel_timeout_secs)
    }
    /// Link handshake timeout as a duration.
    pub fn link_handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.link_handshake_timeout_secs)
    }
    /// Dead-peer timeout as a duration (`None` when 0: system defaults).
    pub fn dead_peer_timeout(&self) -> Option<Duration> {
        (self.dead_peer_timeout_secs > 0).then(|| Duration::from_secs(self.dead_peer_timeout_secs))
    }
    /// How long a rendezvous cookie waits for its service.
    pub fn rend_cookie_timeout(&self) -> Duration {
        Duration::from_secs(self.rend_cookie_timeout_secs)
    }
    /// Extend timeout as a duration.
    pub fn extend_timeout(&self) -> Duration {
        Duration::from_secs(self.extend_timeout_secs)
    }
}
