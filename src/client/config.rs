//! How a client runs: its trusted authorities, state directory, circuit shape and time
//! limits.

use std::path::PathBuf;
use std::time::Duration;

use crate::clock::Clock;
use crate::dir::AuthorityInfo;
use crate::link::LinkPadding;

/// How a client runs.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The directory authorities it trusts (a strict majority must sign the consensus).
    pub authorities: Vec<AuthorityInfo>,
    /// Where to cache the consensus and guard state (`None`: memory only).
    pub data_dir: Option<PathBuf>,
    /// Hops per circuit (2 to 8).
    pub path_len: usize,
    /// A circuit takes new streams for this long after its first one.
    pub max_dirtiness: Duration,
    /// Building one circuit may take this long.
    pub circuit_timeout: Duration,
    /// Opening one stream may take this long.
    pub stream_timeout: Duration,
    /// Circuits kept ready for the first requests.
    pub prebuilt_circuits: usize,
    /// The client's clock (consensus and certificate validity, refresh times).
    pub clock: Clock,
    /// Ask each hop for congestion control (docs/protocol.md §3.5): circuit windows that
    /// follow the measured round trip instead of the fixed 1,000 cells. A hop that does not
    /// grant it is used with fixed windows. `false` only to measure fixed windows.
    pub congestion_control: bool,
    /// Pad onion-service circuits (introduction, rendezvous) so that a watcher at the
    /// guard cannot tell them from exit circuits (docs/protocol.md §3.6). `false` only to
    /// measure what padding hides.
    pub circuit_padding: bool,
    /// Vanguards-lite (docs/protocol.md §8.10): the second hop of every onion-service
    /// circuit (descriptor, introduction, rendezvous; as client and as service) is one of
    /// 4 relays kept 1 to 12 days, against guard discovery. Default true.
    pub vanguards: bool,
    /// The least puzzle effort spent on an onion service that publishes a puzzle, even
    /// when it suggests less (0: follow the suggestion). docs/protocol.md §8.8.
    pub onion_pow_min_effort: u32,
    /// The most puzzle effort spent on one introduction, whatever the service suggests
    /// (default [`DEFAULT_CLIENT_MAX_EFFORT`](crate::onion::pow::DEFAULT_CLIENT_MAX_EFFORT)).
    pub onion_pow_max_effort: u32,
    /// Told of every circuit built and its purpose (tests and measurements; `None` by
    /// default).
    pub observer: Option<std::sync::Arc<dyn crate::client::ClientObserver>>,
    /// How the client's channels are padded (docs/protocol.md §5.10): by the client, and,
    /// negotiated after the link handshake, by its first hop towards it. "reduced" or "off"
    /// for mobile clients, whose flow records may then end while idle.
    pub link_padding: LinkPadding,
    /// Client authorisation keys (protocol.md §8.4.1), one per onion service that
    /// requires one.
    pub onion_client_auth: Vec<(crate::onion::OnionAddress, crate::onion::ClientAuthSecret)>,
}

impl ClientConfig {
    /// Defaults: 3 hops, 10-minute dirtiness, 2 circuits ready.
    pub fn new(authorities: Vec<AuthorityInfo>) -> Self {
        ClientConfig {
            authorities,
            data_dir: None,
            path_len: 3,
            max_dirtiness: Duration::from_secs(600),
            circuit_timeout: Duration::from_secs(30),
            stream_timeout: Duration::from_secs(60),
            prebuilt_circuits: 2,
            clock: Clock::system(),
            congestion_control: true,
            circuit_padding: true,
            vanguards: true,
            onion_pow_min_effort: 0,
            onion_pow_max_effort: crate::onion::pow::DEFAULT_CLIENT_MAX_EFFORT,
            observer: None,
            link_padding: LinkPadding::Normal,
            onion_client_auth: Vec::new(),
        }
    }
}
