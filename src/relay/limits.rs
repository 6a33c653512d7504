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
    /// its socket (backpressure), or, if the circuit is waiting on a neighbour's full
    /// channel meanwhile, before the circuit is destroyed (RESOURCE_LIMIT). Keep it above
    /// twice the circuit window (2 × 1000 cells), which honest circuits stay within.
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
    /// Inbound connections (channels, handshakes included) open at once; also capped at
    /// three quarters of the process's file-descriptor limit. At the limit, new
    /// connections are closed at once (counted, logged once per burst).
    pub inbound_channels: usize,
    /// Streams one circuit may have open at once (exits); UDP flows count as streams.
    pub streams_per_circuit: usize,
    /// UDP flows (one socket each) an exit has open at once, over all circuits.
    pub udp_flows: usize,
    /// UDP flows one circuit may have open at once (so a few circuits cannot take every
    /// one of `udp_flows`).
    pub udp_flows_per_circuit: usize,
    /// Bytes of datagrams an exit holds waiting for circuit windows, over all circuits;
    /// past it the oldest waiting datagram of the circuit adding one is dropped.
    pub udp_queued_bytes: usize,
    /// Seconds a UDP flow may carry nothing either way before the exit closes it.
    pub udp_idle_secs: u64,
    /// Grant congestion control (docs/protocol.md §3.5) to clients that ask for it in the
    /// circuit handshake. `false` only to measure fixed windows or to act as a relay
    /// without it: clients then detect the missing grant and use fixed windows.
    pub congestion_control: bool,
    /// Run the circuit-padding machines clients ask for in the circuit handshake
    /// (docs/protocol.md §3.6). `false` answers every request "disabled".
    pub circuit_padding: bool,
    /// Most padding cells one machine may send on one circuit; a machine whose cap is
    /// higher is refused ("over budget").
    pub padding_cells_per_circuit: u16,
    /// Padding cells this relay sends per second over all circuits (a token bucket with a
    /// second's worth of burst); past it padding is skipped, never queued.
    pub padding_cells_per_second: u32,
    /// Seconds a channel with no circuits may stay open.
    pub idle_channel_timeout_secs: u64,
    /// Seconds a link handshake may take.
    pub link_handshake_timeout_secs: u64,
    /// Seconds after which a peer that stopped answering (no FIN or RST: cable cut,
    /// crashed host) is considered gone and its channel closed, destroying its circuits
    /// so clients rebuild; 0 leaves it to the system's TCP defaults (up to ~15 min). See
    /// `LinkConfig::dead_peer_timeout`.
    pub dead_peer_timeout_secs: u64,
    /// A channel's sending key is replaced (REKEY, docs/protocol.md §5.5.1) after it has
    /// protected this many records (533 bytes each). Read as at least 1000, the fewest a
    /// peer accepts between two REKEYs (unless a second has passed).
    pub link_rekey_records: u64,
    /// ...and this many seconds after it protected its first record, so a key never
    /// protects more than about this long of a channel's traffic, however quiet the
    /// channel. Read as 60 to 86,400 (a day).
    pub link_rekey_secs: u64,
    /// Seconds to wait for CREATED from the next hop when extending.
    pub extend_timeout_secs: u64,
    /// Seconds a circuit waits for room in a neighbour's full channel queue before it is
    /// destroyed (TIMEOUT towards the other side). A peer that stops reading its channel
    /// must not hold up the circuits that send to it for ever: while one waits it does
    /// not drain its own queue. (The reader of the *other* channel, shared with circuits
    /// of other clients, does not wait on it: a stalled circuit whose queue fills is
    /// destroyed at once.) At least 1 (0 is read as 1).
    pub stalled_send_secs: u64,
    /// Introduction points (auth keys) registered at this relay at once.
    pub intro_points: usize,
    /// Deprecated and ignored: a per-channel bound at a middle let one client exhaust the
    /// share of every other client behind the same guard (their circuits arrive over one
    /// relay-to-relay channel), so only the relay-wide [`Self::intro_points`] applies.
    /// Still accepted so a relay.toml that sets it keeps loading (with a warning, see
    /// [`Self::deprecated_keys`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intro_points_per_channel: Option<usize>,
    /// Largest INTRODUCE1 rate (per second, sustained) an introduction point allows for
    /// one auth key; a service may ask for less in ESTABLISH_INTRO.
    pub intro_rate_per_second: u32,
    /// Largest INTRODUCE1 burst an introduction point allows for one auth key.
    pub intro_burst: u32,
    /// Rendezvous cookies waiting at this relay at once. When the table is full the
    /// oldest cookie is dropped (and its circuit closed) to make room.
    pub rend_cookies: usize,
    /// Deprecated and ignored, like [`Self::intro_points_per_channel`]: only the
    /// relay-wide [`Self::rend_cookies`] applies (a full table drops its oldest cookie).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rend_cookies_per_channel: Option<usize>,
    /// Seconds a rendezvous circuit may wait for its service before it is closed.
    pub rend_cookie_timeout_secs: u64,
    /// Milliseconds: a client's PADDING_NEGOTIATE (docs/protocol.md §5.10) may ask this
    /// relay to pad its channel no faster than this (its lower bound is raised to it), so
    /// no peer turns link padding into a flood. Read as 100 to 60,000.
    pub link_padding_floor_ms: u64,
}

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits {
            circuits_per_channel: 4096,
            // Twice the circuit window (1000 cells each way) plus room for control cells:
            // flow control keeps an honest circuit within it, so only one that ignores it
            // fills its queue, and a stalled circuit is destroyed when it does (see
            // `reactor`). With 256, honest bulk transfers were destroyed at a slow hop.
            // Memory stays capped relay-wide by `total_queued_bytes`.
            cells_queued_per_circuit: MIN_HONEST_CIRCUIT_QUEUE,
            total_queued_bytes: 64 * 1024 * 1024,
            handshakes_per_second: 2000,
            handshake_burst: 4000,
            pending_link_handshakes: 256,
            inbound_channels: 50_000,
            streams_per_circuit: 512,
            udp_flows: 4096,
            udp_flows_per_circuit: 32,
            udp_queued_bytes: 8 * 1024 * 1024,
            udp_idle_secs: 120,
            congestion_control: true,
            circuit_padding: true,
            padding_cells_per_circuit: 100,
            padding_cells_per_second: 2000,
            idle_channel_timeout_secs: 300,
            link_handshake_timeout_secs: 10,
            dead_peer_timeout_secs: 20,
            link_rekey_records: crate::link::config::DEFAULT_REKEY_AFTER_RECORDS,
            link_rekey_secs: crate::link::config::DEFAULT_REKEY_AFTER.as_secs(),
            extend_timeout_secs: 20,
            stalled_send_secs: 30,
            intro_points: 20_000,
            intro_points_per_channel: None,
            intro_rate_per_second: 20,
            intro_burst: 200,
            rend_cookies: 20_000,
            rend_cookies_per_channel: None,
            rend_cookie_timeout_secs: 120,
            link_padding_floor_ms: u64::from(crate::link::padding::NORMAL_LOW_MS),
        }
    }
}

/// The shortest `link_rekey_secs` used: well above the peer's one-second floor, so a
/// REKEY delayed on its way cannot make the next one look early to the peer.
pub(crate) const MIN_LINK_REKEY_SECS: u64 = 60;
/// The longest `link_rekey_secs` used: a key protects at most a day of traffic.
pub(crate) const MAX_LINK_REKEY_SECS: u64 = 86_400;

/// The smallest `cells_queued_per_circuit` an honest circuit stays within: twice the
/// largest circuit window (both directions share the queue; congestion control's cap is
/// the larger) plus room for control cells. Below it, a circuit that obeys flow control
/// can fill its queue while waiting on a slow neighbour and be destroyed as stalled.
pub(crate) const MIN_HONEST_CIRCUIT_QUEUE: usize = 2 * max_circuit_window() + 500;

const fn max_circuit_window() -> usize {
    let fixed = crate::proto::stream::window::CIRCUIT_WINDOW as usize;
    let congestion = crate::proto::congestion::CWND_MAX as usize;
    if fixed > congestion {
        fixed
    } else {
        congestion
    }
}

impl RelayLimits {
    /// Settings that load but will hurt honest traffic, as sentences for the operator (a
    /// relay logs them as warnings at startup).
    pub fn questionable_settings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.cells_queued_per_circuit < MIN_HONEST_CIRCUIT_QUEUE {
            out.push(format!(
                "cells_queued_per_circuit = {} is below {MIN_HONEST_CIRCUIT_QUEUE} (twice the \
                 circuit window plus control cells): honest bulk circuits waiting on a slow \
                 neighbour can fill their queue and be destroyed as stalled",
                self.cells_queued_per_circuit
            ));
        }
        if self.link_rekey_records < crate::link::REKEY_MIN_RECORDS {
            out.push(format!(
                "link_rekey_records = {} is below {} (the fewest records peers accept between \
                 two rekeys); {} is used",
                self.link_rekey_records,
                crate::link::REKEY_MIN_RECORDS,
                crate::link::REKEY_MIN_RECORDS
            ));
        }
        if !(MIN_LINK_REKEY_SECS..=MAX_LINK_REKEY_SECS).contains(&self.link_rekey_secs) {
            out.push(format!(
                "link_rekey_secs = {} is outside {MIN_LINK_REKEY_SECS}..={MAX_LINK_REKEY_SECS}; \
                 {} is used",
                self.link_rekey_secs,
                self.link_rekey_interval().as_secs()
            ));
        }
        out
    }

    /// Records a link key protects before it is replaced (at least the protocol's floor).
    pub fn link_rekey_records(&self) -> u64 {
        self.link_rekey_records.max(crate::link::REKEY_MIN_RECORDS)
    }

    /// How long after its first record a link key is replaced.
    pub fn link_rekey_interval(&self) -> Duration {
        Duration::from_secs(
            self.link_rekey_secs
                .clamp(MIN_LINK_REKEY_SECS, MAX_LINK_REKEY_SECS),
        )
    }

    /// The keys set in this configuration that are deprecated and ignored (a relay
    /// warns about them at startup).
    pub fn deprecated_keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.intro_points_per_channel.is_some() {
            keys.push("intro_points_per_channel");
        }
        if self.rend_cookies_per_channel.is_some() {
            keys.push("rend_cookies_per_channel");
        }
        keys
    }
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
    /// The fastest link padding a client may ask for (within the wire's range).
    pub fn link_padding_floor(&self) -> Duration {
        use crate::cell::padding_negotiate::{PADDING_MAX_MS, PADDING_MIN_MS};
        Duration::from_millis(
            self.link_padding_floor_ms
                .clamp(u64::from(PADDING_MIN_MS), u64::from(PADDING_MAX_MS)),
        )
    }
    /// Extend timeout as a duration.
    pub fn extend_timeout(&self) -> Duration {
        Duration::from_secs(self.extend_timeout_secs)
    }
    /// Longest wait for room in a neighbour's channel queue (at least 1 s: a queue that
    /// is merely full for a moment is ordinary backpressure, not a stall).
    pub fn stalled_send_timeout(&self) -> Duration {
        Duration::from_secs(self.stalled_send_secs.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A relay.toml `[limits]` table written for an older version, with the per-channel
    /// onion bounds, still loads; the keys are reported as deprecated and change nothing
    /// else. Unknown keys are still refused.
    #[test]
    fn old_per_channel_keys_load_and_are_reported() {
        let old: RelayLimits = toml::from_str(
            "intro_points = 100\nintro_points_per_channel = 10\nrend_cookies_per_channel = 5\n",
        )
        .unwrap();
        assert_eq!(old.intro_points, 100);
        assert_eq!(
            old.deprecated_keys(),
            ["intro_points_per_channel", "rend_cookies_per_channel"]
        );
        let mut expected = RelayLimits {
            intro_points: 100,
            ..RelayLimits::default()
        };
        assert_ne!(old, expected);
        expected.intro_points_per_channel = Some(10);
        expected.rend_cookies_per_channel = Some(5);
        assert_eq!(old, expected);
        assert!(RelayLimits::default().deprecated_keys().is_empty());
        assert!(RelayLimits::default().questionable_settings().is_empty());
        let small = RelayLimits {
            cells_queued_per_circuit: 256,
            ..RelayLimits::default()
        };
        let warnings = small.questionable_settings();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("cells_queued_per_circuit = 256"));
        // Written before `stalled_send_secs` existed: loads with its default.
        assert_eq!(
            old.stalled_send_secs,
            RelayLimits::default().stalled_send_secs
        );
        let current: RelayLimits = toml::from_str("rend_cookies = 7\n").unwrap();
        assert!(current.deprecated_keys().is_empty());
        assert!(toml::from_str::<RelayLimits>("rend_cookies_per_circuit = 1\n").is_err());
        // A default configuration written out does not name them.
        let written = toml::to_string(&RelayLimits::default()).unwrap();
        assert!(!written.contains("intro_points_per_channel"), "{written}");
        assert!(!written.contains("rend_cookies_per_channel"), "{written}");
    }

    /// The link rekey settings are read from `[limits]`, clamped to what peers accept (with
    /// a warning), and default to the link layer's defaults.
    #[test]
    fn link_rekey_settings_are_read_and_clamped() {
        let d = RelayLimits::default();
        assert_eq!(d.link_rekey_records(), 1 << 20);
        assert_eq!(d.link_rekey_interval(), Duration::from_secs(3600));
        let l: RelayLimits =
            toml::from_str("link_rekey_records = 5000\nlink_rekey_secs = 600\n").unwrap();
        assert_eq!(l.link_rekey_records(), 5000);
        assert_eq!(l.link_rekey_interval(), Duration::from_secs(600));
        assert!(l.questionable_settings().is_empty());
        let low: RelayLimits =
            toml::from_str("link_rekey_records = 10\nlink_rekey_secs = 1\n").unwrap();
        assert_eq!(low.link_rekey_records(), crate::link::REKEY_MIN_RECORDS);
        assert_eq!(
            low.link_rekey_interval(),
            Duration::from_secs(MIN_LINK_REKEY_SECS)
        );
        assert_eq!(low.questionable_settings().len(), 2);
        let high: RelayLimits = toml::from_str("link_rekey_secs = 999999999\n").unwrap();
        assert_eq!(
            high.link_rekey_interval(),
            Duration::from_secs(MAX_LINK_REKEY_SECS)
        );
        assert_eq!(high.questionable_settings().len(), 1);
    }

    /// `stalled_send_secs` is read from `[limits]`; 0 cannot make every momentarily full
    /// queue a teardown.
    #[test]
    fn stalled_send_timeout_is_configurable_and_at_least_a_second() {
        let l: RelayLimits = toml::from_str("stalled_send_secs = 2\n").unwrap();
        assert_eq!(l.stalled_send_timeout(), Duration::from_secs(2));
        let l: RelayLimits = toml::from_str("stalled_send_secs = 0\n").unwrap();
        assert_eq!(l.stalled_send_timeout(), Duration::from_secs(1));
        assert_eq!(
            RelayLimits::default().stalled_send_timeout(),
            Duration::from_secs(30)
        );
    }
}
