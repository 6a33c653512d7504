//! TOML configuration files for `allium relay`, `allium authority` and `allium proxy`.
//! Unknown keys are refused, and every error names the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::dir::AuthorityInfo;
use crate::link::BandwidthLimit;
use crate::relay::{ExitTimeouts, RelayLimits};

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid for this command (syntax, unknown key, bad value).
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the key and line).
        message: String,
    },
}

/// Reads and parses `path`.
pub fn load<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Invalid {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// relay.toml
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayFile {
    /// The `[relay]` table.
    pub relay: RelaySection,
    /// The `[exit]` table: present only on exits (a relay is not an exit by default).
    pub exit: Option<ExitSection>,
    /// The `[limits]` table.
    #[serde(default)]
    pub limits: RelayLimits,
    /// The `[metrics]` table (off unless present).
    pub metrics: Option<MetricsSection>,
}

/// `[metrics]`: a Prometheus text endpoint. Keep it on a private address.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Address to serve metrics on, e.g. "127.0.0.1:9100".
    pub listen: SocketAddr,
    /// Requests served at once (default 16); when full, the oldest connection that has not
    /// sent its whole request is closed to make room.
    #[serde(default = "default_metrics_connections")]
    pub max_connections: usize,
    /// Seconds a client has to send its request (default 5).
    #[serde(default = "default_metrics_timeout")]
    pub request_timeout_secs: u64,
}

impl MetricsSection {
    /// The endpoint's limits, defaults filled in (zero values are raised to 1).
    pub fn limits(&self) -> crate::relay::metrics::MetricsLimits {
        crate::relay::metrics::MetricsLimits {
            max_connections: self.max_connections.max(1),
            request_timeout: std::time::Duration::from_secs(self.request_timeout_secs.max(1)),
        }
    }
}

fn default_metrics_connections() -> usize {
    crate::relay::metrics::MetricsLimits::default().max_connections
}

fn default_metrics_timeout() -> u64 {
    crate::relay::metrics::MetricsLimits::default()
        .request_timeout
        .as_secs()
}

/// `[relay]` of relay.toml.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySection {
    /// Address to listen on for channels.
    pub listen: SocketAddr,
    /// Address other nodes should use (default: `listen`).
    pub advertise: Option<SocketAddr>,
    /// Where keys live (created mode 0700/0600).
    pub data_dir: PathBuf,
    /// Declared bandwidth, bytes per second.
    #[serde(default = "default_bandwidth")]
    pub bandwidth: u64,
    /// Identities (hex) of the operator's other relays.
    #[serde(default)]
    pub family: Vec<String>,
    /// The directory authorities to publish to.
    pub authorities: Vec<AuthorityInfo>,
    /// Seconds between descriptor uploads.
    #[serde(default = "default_publish_interval")]
    pub publish_interval_secs: u64,
    /// Most bytes per second the relay reads from other nodes, and (separately) writes to
    /// them; unset: unlimited.
    pub bandwidth_rate: Option<u64>,
    /// Bytes the relay may pass at once above `bandwidth_rate` after a quiet period
    /// (default: the rate); at least one record. Needs `bandwidth_rate`.
    pub bandwidth_burst: Option<u64>,
    /// Serve the circuits sharing a channel fairly (default true): the circuit that sent
    /// least recently goes first, so one bulk circuit cannot delay the others. false: one
    /// FIFO per channel (for measurements).
    #[serde(default = "yes")]
    pub fair_queueing: bool,
}

impl RelaySection {
    /// The rate limit, validated (`None`: unlimited). Errors name the file and the key.
    pub fn bandwidth_limit(&self, path: &Path) -> Result<Option<BandwidthLimit>, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        match (self.bandwidth_rate, self.bandwidth_burst) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err(invalid(
                "[relay] bandwidth_burst needs bandwidth_rate".to_string(),
            )),
            (Some(rate), burst) => BandwidthLimit::new(rate, burst)
                .map(Some)
                .map_err(|e| invalid(format!("[relay] {e}"))),
        }
    }

    /// A warning if the declared `bandwidth` is more than the rate limit lets through (the
    /// authorities measure the relay anyway; the declaration only caps their figure).
    pub fn bandwidth_warning(&self) -> Option<String> {
        let rate = self.bandwidth_rate?;
        (self.bandwidth > rate).then(|| {
            format!(
                "[relay] bandwidth ({} B/s) is above bandwidth_rate ({rate} B/s): the relay cannot carry what it declares",
                self.bandwidth
            )
        })
    }
}

fn default_bandwidth() -> u64 {
    1_000_000
}

fn default_publish_interval() -> u64 {
    1800
}

/// `[exit]` of relay.toml.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitSection {
    /// Policy rules, first match wins, e.g. `"accept *:80-443"`; default: the standard
    /// exit policy (rejects private, loopback and link-local destinations).
    pub policy: Option<Vec<String>>,
    /// UDP policy rules, same syntax, e.g. `["accept *:53", "accept *:443"]`; every
    /// special-purpose range (private, loopback, link-local, multicast, ...) is rejected in
    /// front of them whatever they say. Absent: no UDP at all.
    pub udp_policy: Option<Vec<String>>,
    /// Seconds to resolve and connect to a destination (default 10).
    pub connect_secs: Option<u64>,
    /// Seconds a stream may stay silent (default 300).
    pub idle_secs: Option<u64>,
}

impl ExitSection {
    /// The timeouts, defaults filled in.
    pub fn timeouts(&self) -> ExitTimeouts {
        let d = ExitTimeouts::default();
        ExitTimeouts {
            connect_secs: self.connect_secs.unwrap_or(d.connect_secs),
            idle_secs: self.idle_secs.unwrap_or(d.idle_secs),
        }
    }
}

/// authority.toml
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorityFile {
    /// The `[authority]` table.
    pub authority: AuthoritySection,
    /// The `[limits]` table.
    #[serde(default)]
    pub limits: RelayLimits,
    /// The `[metrics]` table (off unless present).
    pub metrics: Option<MetricsSection>,
}

/// `[authority]` of authority.toml.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthoritySection {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where keys live.
    pub data_dir: PathBuf,
    /// Every authority of the network, this one included.
    pub authorities: Vec<AuthorityInfo>,
    /// Consensus period in seconds (default 3600).
    #[serde(default = "default_period")]
    pub period_secs: u64,
    /// A local test network: relays may be fast/stable at once and exits may serve only
    /// loopback destinations. Never set on a public network.
    #[serde(default)]
    pub test_network: bool,
    /// Most relays on one address (IPv6: one /64) that get the flags making them usable;
    /// the rest are listed without Running and Valid. Default 2, or unlimited with
    /// `test_network`; 0 = unlimited.
    pub max_relays_per_address: Option<usize>,
    /// The same for one IPv4 /24 (IPv6: /48). Default 4, or unlimited with
    /// `test_network`; 0 = unlimited.
    pub max_relays_per_subnet: Option<usize>,
    /// Relays never listed: identities (64 hex digits), addresses or prefixes
    /// (e.g. "198.51.100.0/24").
    #[serde(default)]
    pub reject: Vec<String>,
    /// Measure every relay's bandwidth through two-hop circuits (default true). Without
    /// measurements the authority votes none, and relays get the low unmeasured weight.
    #[serde(default = "yes")]
    pub measure_bandwidth: bool,
    /// Check exits by fetching known content through them (default true).
    #[serde(default = "yes")]
    pub check_exits: bool,
    /// Where the exit-check server listens and exits are asked to connect (default: this
    /// authority's address with a port the system picks; exits whose policy refuses that
    /// port are not checked, so a port most exits allow, such as 80 or 443, is better).
    pub exit_check_listen: Option<SocketAddr>,
}

fn yes() -> bool {
    true
}

impl AuthoritySection {
    /// The Sybil limits, defaults filled in.
    pub fn sybil_limits(&self) -> crate::dir::sybil::SybilLimits {
        let d = if self.test_network {
            crate::dir::sybil::SybilLimits::UNLIMITED
        } else {
            crate::dir::sybil::SybilLimits::default()
        };
        crate::dir::sybil::SybilLimits {
            per_address: self.max_relays_per_address.unwrap_or(d.per_address),
            per_subnet: self.max_relays_per_subnet.unwrap_or(d.per_subnet),
        }
    }
}

fn default_period() -> u64 {
    3600
}

/// proxy.toml
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyFile {
    /// The `[proxy]` table.
    pub proxy: ProxySection,
    /// `[[service]]` entries: onion services this proxy publishes (none by default).
    #[serde(default)]
    pub service: Vec<ServiceSection>,
    /// The `[control]` table: the control port (off without it; docs/control.md).
    pub control: Option<super::control::ControlSection>,
    /// `[[client_auth]]` entries: this proxy's keys for services that authorise clients.
    #[serde(default)]
    pub client_auth: Vec<ClientAuthEntry>,
}

pub use super::client_auth_files::{client_auth_keys, ClientAuthEntry};

/// One `[[service]]` entry of proxy.toml: a virtual port of an onion service and the local
/// target its streams connect to. Several entries with the same `key_file` are one service
/// with several ports.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    /// The service's identity key file (created with mode 0600 if missing). The address
    /// is derived from it: keep the file to keep the address.
    pub key_file: PathBuf,
    /// The virtual port clients connect to (`<address>.allium:port`), 1 to 65535.
    pub port: u16,
    /// Where its streams go, e.g. "127.0.0.1:8080".
    pub target: SocketAddr,
    /// `"tcp"` (the default: streams) or `"udp"` (UDP flows to a local UDP target; a port
    /// may be listed once for each).
    #[serde(default)]
    pub protocol: ServiceProtocol,
    /// Publish a client puzzle (docs/protocol.md §8.8): introductions are answered
    /// highest puzzle effort first and the service suggests an effort from its load
    /// (default false). Service-wide: entries of one key file must agree.
    pub pow: Option<bool>,
    /// The effort suggested until the service first reconsiders it (default 0).
    pub pow_initial_effort: Option<u32>,
    /// Introductions answered per second, all introduction points together (default 20).
    pub intros_per_second: Option<u32>,
    /// Valid introductions waiting to be answered at most (default 256).
    pub intro_queue: Option<usize>,
    /// Client authorisation: a directory (mode 0700) of `<name>.auth` files, one per
    /// client allowed to reach the service (docs/protocol.md §8.4.1). Entries with the
    /// same `key_file` must name the same directory, or only one of them any.
    pub authorized_clients_dir: Option<PathBuf>,
}

/// Applies an entry's service-wide setting `value` to `slot`, refusing a second entry of
/// the same service that sets it differently.
fn service_wide<T: PartialEq + Copy + std::fmt::Debug>(
    seen: &mut Option<T>,
    slot: &mut T,
    value: Option<T>,
    name: &str,
) -> Result<(), String> {
    let Some(v) = value else {
        return Ok(());
    };
    match seen {
        Some(before) if *before != v => Err(format!(
            "{name} is {before:?} in an earlier entry of the same key file and {v:?} here"
        )),
        _ => {
            *seen = Some(v);
            *slot = v;
            Ok(())
        }
    }
}

/// What a `[[service]]` port carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceProtocol {
    /// TCP streams.
    #[default]
    Tcp,
    /// UDP flows.
    Udp,
}

/// Groups `[[service]]` entries by key file into service configurations, refusing port 0
/// and a virtual port listed twice for one key file. `file` names the file in errors.
pub fn services(
    entries: &[ServiceSection],
    file: &Path,
) -> Result<Vec<crate::client::onion_service::ServiceConfig>, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        path: file.to_path_buf(),
        message,
    };
    let mut out: Vec<crate::client::onion_service::ServiceConfig> = Vec::new();
    // Per service: the service-wide settings some entry set (pow, initial effort, rate,
    // queue).
    type Seen = (Option<bool>, Option<u32>, Option<u32>, Option<usize>);
    let mut seen: Vec<Seen> = Vec::new();
    let mut dirs: Vec<(PathBuf, PathBuf)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if e.port == 0 {
            return Err(invalid(format!(
                "[[service]] entry {}: port 0 is not a port",
                i + 1
            )));
        }
        if e.key_file.as_os_str().is_empty() {
            return Err(invalid(format!(
                "[[service]] entry {}: key_file is empty",
                i + 1
            )));
        }
        let idx = match out.iter().position(|s| s.key_file == e.key_file) {
            Some(idx) => idx,
            None => {
                out.push(crate::client::onion_service::ServiceConfig::new(
                    e.key_file.clone(),
                    Vec::new(),
                ));
                seen.push(Seen::default());
                out.len() - 1
            }
        };
        let (Some(s), Some(seen)) = (out.get_mut(idx), seen.get_mut(idx)) else {
            continue;
        };
        let wide = |r: Result<(), String>| {
            r.map_err(|m| invalid(format!("[[service]] entry {}: {m}", i + 1)))
        };
        wide(service_wide(&mut seen.0, &mut s.pow, e.pow, "pow"))?;
        wide(service_wide(
            &mut seen.1,
            &mut s.pow_initial_effort,
            e.pow_initial_effort,
            "pow_initial_effort",
        ))?;
        wide(service_wide(
            &mut seen.2,
            &mut s.intros_per_second,
            e.intros_per_second,
            "intros_per_second",
        ))?;
        wide(service_wide(
            &mut seen.3,
            &mut s.intro_queue,
            e.intro_queue,
            "intro_queue",
        ))?;
        let ports = match e.protocol {
            ServiceProtocol::Tcp => &mut s.ports,
            ServiceProtocol::Udp => &mut s.udp_ports,
        };
        if ports.iter().any(|(p, _)| *p == e.port) {
            return Err(invalid(format!(
                "[[service]] entry {}: {:?} port {} is listed twice for key file {}",
                i + 1,
                e.protocol,
                e.port,
                e.key_file.display()
            )));
        }
        ports.push((e.port, e.target));
        if let Some(dir) = &e.authorized_clients_dir {
            if dirs.iter().any(|(k, d)| *k == e.key_file && d != dir) {
                return Err(invalid(format!(
                    "[[service]] entry {}: another authorized_clients_dir for key file {}",
                    i + 1,
                    e.key_file.display()
                )));
            }
            if !dirs.iter().any(|(k, _)| *k == e.key_file) {
                s.authorized_clients =
                    super::client_auth_files::load_authorized_clients(dir).map_err(invalid)?;
                dirs.push((e.key_file.clone(), dir.clone()));
            }
        }
    }
    Ok(out)
}

/// `[proxy]` of proxy.toml.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySection {
    /// SOCKS listener (default 127.0.0.1:9050).
    #[serde(default = "default_socks")]
    pub socks_listen: SocketAddr,
    /// Optional HTTP CONNECT listener.
    pub http_connect_listen: Option<SocketAddr>,
    /// Where the consensus and guard state are cached (default: memory only).
    pub data_dir: Option<PathBuf>,
    /// Hops per circuit (2 to 8, default 3).
    #[serde(default = "default_path_len")]
    pub path_len: usize,
    /// Seconds an open stream may move no byte in either direction before the proxy
    /// closes it (a stalled circuit must not hang the application); 0: never. Default 300.
    #[serde(default = "default_stream_idle")]
    pub stream_idle_secs: u64,
    /// Seconds a circuit takes new streams after its first (default 600, at least 10);
    /// then it is retired: it closes once its streams are done, whatever its isolation.
    #[serde(default = "default_max_dirtiness")]
    pub max_circuit_dirtiness_secs: u64,
    /// The directory authorities to trust.
    pub authorities: Vec<AuthorityInfo>,
    /// Client connections each proxy listener serves at once (default 1024). When full,
    /// the oldest connection still in its handshake is closed to make room; if none is,
    /// the new connection is closed.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds a client has from connecting to a complete SOCKS or CONNECT request
    /// (default 10); slower clients are closed.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_secs: u64,
    /// Seconds allowed to open the stream through the network (default 60).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Ask relays for congestion control (default true): circuit windows follow the
    /// measured round trip (docs/protocol.md §3.5). `false` keeps the fixed windows, for
    /// measuring the difference.
    #[serde(default = "default_true")]
    pub congestion_control: bool,
    /// Pad circuits so that a watcher at the guard cannot tell onion-service circuits
    /// from exit circuits (default true; docs/protocol.md §3.6). `false` only to measure
    /// what padding hides: it saves about 1.6 KB per circuit.
    #[serde(default = "default_true")]
    pub circuit_padding: bool,
    /// Link padding (docs/protocol.md §5.10): "normal" (default: Tor's netflow timing),
    /// "reduced" (about half the bytes, for mobile clients) or "off" (keep-alive only;
    /// idle channels' flow records may then end). Asked of the first hop too.
    #[serde(default)]
    pub link_padding: crate::link::LinkPadding,
    /// Vanguards-lite (default true; docs/protocol.md §8.10): the second hop of every
    /// onion-service circuit, as client and as service, is one of 4 relays kept 1 to 12
    /// days, so an attacker making a service build circuits at will cannot soon find its
    /// guard. `false` only to measure the difference.
    #[serde(default = "default_true")]
    pub vanguards: bool,
    /// The least client-puzzle effort spent on an onion service with a puzzle, even when
    /// it suggests less (default 0: follow its suggestion; docs/protocol.md §8.8).
    #[serde(default)]
    pub onion_pow_min_effort: u32,
    /// The most client-puzzle effort spent on one introduction, whatever a service
    /// suggests (default 10000: seconds to tens of seconds of one core).
    #[serde(default = "default_pow_max_effort")]
    pub onion_pow_max_effort: u32,
}

fn default_pow_max_effort() -> u32 {
    crate::onion::pow::DEFAULT_CLIENT_MAX_EFFORT
}

impl ProxySection {
    /// The listeners' limits, defaults filled in (zero values are raised to 1; timeouts
    /// above a year are read as a year, so adding one to a clock cannot overflow).
    pub fn proxy_config(&self) -> crate::client::ProxyConfig {
        const YEAR: u64 = 365 * 24 * 3600;
        let secs = |s: u64| std::time::Duration::from_secs(s.clamp(1, YEAR));
        crate::client::ProxyConfig {
            max_connections: self.max_connections.max(1),
            handshake_timeout: secs(self.handshake_timeout_secs),
            connect_timeout: secs(self.connect_timeout_secs),
            idle_timeout: (self.stream_idle_secs > 0).then(|| secs(self.stream_idle_secs)),
        }
    }
}

fn default_max_connections() -> usize {
    crate::client::ProxyConfig::default().max_connections
}

fn default_handshake_timeout() -> u64 {
    crate::client::ProxyConfig::default()
        .handshake_timeout
        .as_secs()
}

fn default_connect_timeout() -> u64 {
    crate::client::ProxyConfig::default()
        .connect_timeout
        .as_secs()
}

fn default_socks() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9050))
}

fn default_true() -> bool {
    true
}

fn default_path_len() -> usize {
    3
}

fn default_max_dirtiness() -> u64 {
    600
}

/// Shortest maximum dirtiness a proxy accepts: below it, nearly every request would build
/// a circuit.
pub const MIN_DIRTINESS_SECS: u64 = 10;

fn default_stream_idle() -> u64 {
    300
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused_naming_key_and_file() {
        let dir = std::env::temp_dir().join(format!("allium-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("proxy.toml");
        std::fs::write(
            &path,
            "[proxy]\nauthorities = []\nsocks_lisen = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        let err = load::<ProxyFile>(&path).unwrap_err().to_string();
        assert!(err.contains("socks_lisen"), "{err}");
        assert!(err.contains("proxy.toml"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `[proxy] link_padding` takes the three schedules (default normal), refuses others,
    /// and the documented example loads with it.
    #[test]
    fn link_padding_reads_the_three_schedules() {
        use crate::link::LinkPadding;
        let parse = |line: &str| {
            toml::from_str::<ProxyFile>(&format!("[proxy]\nauthorities = []\n{line}"))
                .map(|f| f.proxy.link_padding)
                .map_err(|e| e.to_string())
        };
        assert_eq!(parse(""), Ok(LinkPadding::Normal));
        assert_eq!(parse("link_padding = \"normal\""), Ok(LinkPadding::Normal));
        assert_eq!(
            parse("link_padding = \"reduced\""),
            Ok(LinkPadding::Reduced)
        );
        assert_eq!(parse("link_padding = \"off\""), Ok(LinkPadding::Off));
        let err = parse("link_padding = \"fast\"").unwrap_err();
        assert!(err.contains("fast"), "{err}");
        let example: ProxyFile =
            toml::from_str(include_str!("../../docs/examples/proxy.toml")).unwrap();
        assert_eq!(example.proxy.link_padding, LinkPadding::Normal);
    }

    /// The commented `[[service]]` block of docs/examples/proxy.toml, uncommented, loads
    /// with the puzzle settings it shows; and the client's effort bounds load.
    #[test]
    fn documented_service_with_a_puzzle_loads() {
        let doc = include_str!("../../docs/examples/proxy.toml");
        let example: ProxyFile = toml::from_str(doc).unwrap();
        assert_eq!(example.proxy.onion_pow_max_effort, 10_000);
        assert_eq!(example.proxy.onion_pow_min_effort, 0);
        assert!(example.proxy.vanguards);
        let mut text = String::from("[proxy]\nauthorities = []\n");
        // The block: from "# [[service]]" to the next blank line.
        let block = doc
            .lines()
            .skip_while(|l| *l != "# [[service]]")
            .take_while(|l| !l.is_empty());
        for line in block.filter_map(|l| l.strip_prefix("# ")) {
            // (authorized_clients_dir names a directory this test does not have; the
            // client-authorisation tests load it.)
            let key = line.split_once(" = ").map(|(k, _)| k);
            if line == "[[service]]"
                || key.is_some_and(|k| !k.contains(' ') && k != "authorized_clients_dir")
            {
                text.push_str(line);
                text.push('\n');
            }
        }
        let file: ProxyFile = toml::from_str(&text).unwrap();
        let grouped = services(&file.service, Path::new("proxy.toml")).unwrap();
        let [s] = grouped.as_slice() else {
            panic!("one service expected: {text}");
        };
        assert!(s.pow);
        assert_eq!((s.intros_per_second, s.intro_queue), (20, 256));
        assert_eq!(s.ports, vec![(80, "127.0.0.1:8080".parse().unwrap())]);
        // A second entry of the same service disagreeing is refused, naming the key.
        let mut two = file.service.clone();
        two.push(ServiceSection {
            port: 22,
            pow: Some(false),
            ..two[0].clone()
        });
        let err = services(&two, Path::new("proxy.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("pow") && err.contains("entry 2"), "{err}");
        two[1].pow = None;
        assert!(services(&two, Path::new("proxy.toml")).unwrap()[0].pow);
    }

    #[test]
    fn service_entries_are_strict_and_grouped_by_key_file() {
        let parse = |text: &str| toml::from_str::<ProxyFile>(text).map_err(|e| e.to_string());
        let base = "[proxy]\nauthorities = []\n";
        // Unknown key, missing key, bad target: refused naming the key.
        let err = parse(&format!(
            "{base}[[service]]\nkey_file = \"k\"\nport = 80\ntarget = \"127.0.0.1:1\"\nprot = 1\n"
        ))
        .unwrap_err();
        assert!(err.contains("prot"), "{err}");
        let err = parse(&format!("{base}[[service]]\nkey_file = \"k\"\nport = 80\n")).unwrap_err();
        assert!(err.contains("target"), "{err}");
        let err = parse(&format!(
            "{base}[[service]]\nkey_file = \"k\"\nport = 80\ntarget = \"localhost\"\n"
        ))
        .unwrap_err();
        assert!(
            err.contains("target") || err.contains("socket address"),
            "{err}"
        );
        let err = parse(&format!(
            "{base}[[service]]\nkey_file = \"k\"\nport = 70000\ntarget = \"127.0.0.1:1\"\n"
        ))
        .unwrap_err();
        assert!(err.contains("port") || err.contains("70000"), "{err}");
        // Two ports of one service, one of another; a duplicate port is refused.
        let file = parse(&format!(
            "{base}[[service]]\nkey_file = \"a\"\nport = 80\ntarget = \"127.0.0.1:8080\"\n\
             [[service]]\nkey_file = \"a\"\nport = 22\ntarget = \"127.0.0.1:22\"\n\
             [[service]]\nkey_file = \"b\"\nport = 80\ntarget = \"127.0.0.1:9\"\n"
        ))
        .unwrap();
        let grouped = services(&file.service, Path::new("proxy.toml")).unwrap();
        assert_eq!(grouped.len(), 2);
        assert_eq!(grouped[0].ports.len(), 2);
        assert_eq!(grouped[1].ports, vec![(80, "127.0.0.1:9".parse().unwrap())]);
        let mut dup = file.service.clone();
        dup.push(dup[0].clone());
        let err = services(&dup, Path::new("proxy.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("listed twice") && err.contains("proxy.toml"),
            "{err}"
        );
        let mut zero = file.service.clone();
        zero[0].port = 0;
        let err = services(&zero, Path::new("proxy.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("port 0"), "{err}");
        // No [[service]]: none.
        assert!(parse(base).unwrap().service.is_empty());
        // A UDP port beside a TCP port of the same number; "udp" twice is refused, an
        // unknown protocol is refused naming it.
        let file = parse(&format!(
            "{base}[[service]]\nkey_file = \"v\"\nport = 5060\ntarget = \"127.0.0.1:5060\"\n\
             [[service]]\nkey_file = \"v\"\nport = 5060\ntarget = \"127.0.0.1:5061\"\n\
             protocol = \"udp\"\n"
        ))
        .unwrap();
        let grouped = services(&file.service, Path::new("proxy.toml")).unwrap();
        assert_eq!(
            grouped[0].ports,
            vec![(5060, "127.0.0.1:5060".parse().unwrap())]
        );
        assert_eq!(
            grouped[0].udp_ports,
            vec![(5060, "127.0.0.1:5061".parse().unwrap())]
        );
        let mut dup = file.service.clone();
        dup.push(dup[1].clone());
        let err = services(&dup, Path::new("proxy.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("Udp port 5060 is listed twice"), "{err}");
        let err = parse(&format!(
            "{base}[[service]]\nkey_file = \"v\"\nport = 1\ntarget = \"127.0.0.1:1\"\n\
             protocol = \"sctp\"\n"
        ))
        .unwrap_err();
        assert!(err.contains("sctp"), "{err}");
    }

    #[test]
    fn bandwidth_rate_parses_and_bad_values_are_refused_clearly() {
        let path = Path::new("relay.toml");
        let relay = |extra: &str| {
            toml::from_str::<RelayFile>(&format!(
                "[relay]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"d\"\nauthorities = []\n{extra}"
            ))
            .unwrap()
            .relay
        };
        // Unset: unlimited, and no warning whatever the declaration.
        let r = relay("bandwidth = 5000000\n");
        assert_eq!(r.bandwidth_limit(path).unwrap(), None);
        assert_eq!(r.bandwidth_warning(), None);
        // A rate alone: the burst defaults to the rate.
        let r = relay("bandwidth = 100000\nbandwidth_rate = 100000\n");
        let l = r.bandwidth_limit(path).unwrap().unwrap();
        assert_eq!((l.rate(), l.burst()), (100_000, 100_000));
        assert_eq!(r.bandwidth_warning(), None);
        let r = relay("bandwidth_rate = 100000\nbandwidth_burst = 300000\n");
        let l = r.bandwidth_limit(path).unwrap().unwrap();
        assert_eq!((l.rate(), l.burst()), (100_000, 300_000));
        // Declaring more than the limit lets through is warned about.
        let r = relay("bandwidth = 1000000\nbandwidth_rate = 100000\n");
        let w = r.bandwidth_warning().unwrap();
        assert!(w.contains("bandwidth_rate"), "{w}");
        // Refused, naming the file and the key.
        for (extra, key) in [
            ("bandwidth_rate = 0\n", "bandwidth_rate"),
            (
                "bandwidth_rate = 100000\nbandwidth_burst = 100\n",
                "bandwidth_burst",
            ),
            ("bandwidth_burst = 100000\n", "bandwidth_rate"),
        ] {
            let err = relay(extra).bandwidth_limit(path).unwrap_err().to_string();
            assert!(err.contains("relay.toml") && err.contains(key), "{err}");
        }
        let err = relay("bandwidth_rate = 100000\nbandwidth_burst = 100\n")
            .bandwidth_limit(path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("one record"), "{err}");
        // A negative or misspelled value is refused by the parser.
        assert!(toml::from_str::<RelayFile>(
            "[relay]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"d\"\nauthorities = []\nbandwidth_rate = -1\n"
        )
        .is_err());
    }

    /// `[relay] fair_queueing`: on unless set to false; not a boolean is refused.
    #[test]
    fn fair_queueing_defaults_to_on() {
        let parse = |extra: &str| {
            toml::from_str::<RelayFile>(&format!(
                "[relay]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"d\"\nauthorities = []\n{extra}"
            ))
            .map(|f| f.relay.fair_queueing)
        };
        assert!(parse("").unwrap());
        assert!(parse("fair_queueing = true\n").unwrap());
        assert!(!parse("fair_queueing = false\n").unwrap());
        assert!(parse("fair_queueing = \"no\"\n").is_err());
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    fn example(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("docs/examples")
            .join(name)
    }

    /// The commented examples in docs/examples must stay valid configurations.
    #[test]
    fn examples_parse() {
        let relay: RelayFile = load(&example("relay.toml")).unwrap();
        assert!(
            relay.exit.is_none(),
            "the example relay must not be an exit"
        );
        assert_eq!(relay.limits, RelayLimits::default());
        let auth: AuthorityFile = load(&example("authority.toml")).unwrap();
        assert_eq!(auth.authority.period_secs, 3600);
        let proxy: ProxyFile = load(&example("proxy.toml")).unwrap();
        assert_eq!(proxy.proxy.path_len, 3);
        assert_eq!(proxy.proxy.max_circuit_dirtiness_secs, 600);
        assert_eq!(proxy.proxy.stream_idle_secs, 300);
        assert_eq!(
            proxy.proxy.proxy_config(),
            crate::client::ProxyConfig::default()
        );
    }

    /// The example's commented `[[service]]` with client authorisation and its
    /// `[[client_auth]]`, uncommented as an operator would with only the paths and the
    /// address substituted, load: the service lists the client, the client has its key.
    #[test]
    fn example_client_authorisation_loads() {
        use std::os::unix::fs::PermissionsExt;
        let text = std::fs::read_to_string(example("proxy.toml")).unwrap();
        let d = std::env::temp_dir().join(format!("allium-doc-auth-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let clients = d.join("web-clients");
        std::fs::create_dir_all(&clients).unwrap();
        let private = |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
        private(&clients, 0o700).unwrap();
        let line = crate::cli::client_auth_files::keygen(&d.join("alice.key")).unwrap();
        std::fs::write(clients.join("alice.auth"), format!("{line}\n")).unwrap();
        private(&clients.join("alice.auth"), 0o600).unwrap();
        let id = crate::crypto::IdentityKeypair::generate(&mut rand::rng()).public();
        let address = crate::onion::OnionAddress::from_identity(id).unwrap();
        let start = text.find("# [[service]]").unwrap();
        let end = text[start..]
            .find("\n# Control port")
            .map_or(text.len(), |e| start + e);
        let section: String = text[start..end]
            .lines()
            .filter(|l| l.starts_with("# ") && (l.contains(" = ") || l.starts_with("# [[")))
            .map(|l| format!("{}\n", &l[2..]))
            .collect();
        let toml_text = format!(
            "{}{}",
            &text[..start],
            section
                .replace("/var/lib/allium/proxy/", &format!("{}/", d.display()))
                .replace("<address>.allium", &address.to_string())
        );
        let file: ProxyFile = toml::from_str(&toml_text).unwrap();
        let svcs = services(&file.service, Path::new("proxy.toml")).unwrap();
        let alice = client_auth_keys(&file.client_auth).unwrap();
        assert_eq!(alice.len(), 1);
        assert_eq!(alice[0].0, address);
        assert_eq!(svcs[0].authorized_clients, vec![alice[0].1.public()]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// The example's commented `[exit]` table, uncommented as an operator would, is a
    /// valid exit: its documented `udp_policy` opens DNS and QUIC behind the special-range
    /// rejects; without the key the exit has no UDP.
    #[test]
    fn example_exit_table_with_udp_policy_parses() {
        use crate::dir::ExitPolicy;
        use crate::relay::udp_policy_from_config;
        let text = std::fs::read_to_string(example("relay.toml")).unwrap();
        let uncomment = |text: &str, prefix: &str| {
            let line = text
                .lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("the example has no line {prefix:?}"));
            text.replacen(line, line.trim_start_matches("# "), 1)
        };
        let exit = uncomment(&text, "# [exit]");
        let without: RelayFile = toml::from_str(&exit).unwrap();
        let section = without.exit.unwrap();
        assert_eq!(section.udp_policy, None);
        assert_eq!(
            udp_policy_from_config(section.udp_policy.as_deref()).unwrap(),
            ExitPolicy::reject_all()
        );
        let with: RelayFile = toml::from_str(&uncomment(&exit, "# udp_policy = ")).unwrap();
        let udp = udp_policy_from_config(with.exit.unwrap().udp_policy.as_deref()).unwrap();
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(udp.allows_ip(ip("9.9.9.9"), 53) && udp.allows_ip(ip("9.9.9.9"), 443));
        assert!(!udp.allows_ip(ip("9.9.9.9"), 123));
        assert!(!udp.allows_ip(ip("127.0.0.1"), 53) && !udp.allows_ip(ip("10.0.0.1"), 53));
        // A misspelled key is refused (deny_unknown_fields).
        let typo = exit.replacen("[exit]", "[exit]\nudp_polcy = []", 1);
        let err = toml::from_str::<RelayFile>(&typo).unwrap_err().to_string();
        assert!(err.contains("udp_polcy"), "{err}");
    }
}
