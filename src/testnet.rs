//! A whole local network in one process: authorities, relays (some exits) and the client
//! configuration to use them, all on 127.0.0.1. Used by `allium testnet` and by tests.
//!
//! [`wait_until_listed`] is how every test network, in one process or as separate
//! processes, decides that it is ready: every directory server serves a consensus that
//! lists every relay started.

pub mod fingerprint;
mod meddling_exit;

pub use meddling_exit::MeddlingExit;

use crate::clock::Clock;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use crate::crypto::IdentityPublic;
use crate::dir::{AuthorityInfo, Consensus, ExitPolicy, FlagParams};
use crate::link::BandwidthLimit;
use crate::relay::authority::{Authority, AuthorityConfig};
use crate::relay::dircache::DirCache;
use crate::relay::publish::{spawn_publisher, PublishConfig, Publisher};
use crate::relay::{
    self, ExitConfig, ExitConnector, RelayConfig, RelayHandle, RelayKeys, RelayLimits,
};

/// Shape of a test network.
#[derive(Debug, Clone)]
pub struct TestNetConfig {
    /// Directory authorities (1 to 9).
    pub authorities: usize,
    /// Relays besides the authorities.
    pub relays: usize,
    /// How many of the relays are exits (they allow loopback destinations, TCP and UDP).
    pub exits: usize,
    /// Consensus period.
    pub period: Duration,
    /// The clock every node of the network reads (a simulated one in long-running tests).
    pub clock: Clock,
    /// Where the relays (not the authorities) keep their keys, one directory each
    /// (`relay-1`, ...), so a relay can be restarted with them ([`TestNet::restart_relay`]).
    /// `None`: keys in memory only.
    pub key_dir: Option<PathBuf>,
    /// The authorities' Sybil limits; unlimited by default, since every relay of a test
    /// network is on 127.0.0.1.
    pub sybil: crate::dir::sybil::SybilLimits,
    /// Rate limits of the relays (not the authorities): entry `i` applies to relay `i`
    /// (0-based, exits first); missing entries and `None` are unlimited.
    pub relay_bandwidth: Vec<Option<BandwidthLimit>>,
    /// Resource limits of the relays: entry `i` applies to relay `i` (0-based, exits
    /// first); missing entries and `None` are the defaults. (A test's unreliable relay:
    /// `circuits_per_channel: 0` refuses every circuit.)
    pub relay_limits: Vec<Option<RelayLimits>>,
    /// The authorities measure the relays' bandwidth (about two rounds per period); off by
    /// default, so tests that count circuits or bytes see only their own.
    pub measure: bool,
    /// The authorities check the exits (a round every 2 s); off by default.
    pub check_exits: bool,
    /// Exits whose traffic leaves through a connector of the test's choosing: `(i,
    /// connector)` applies to relay `i` (0-based, exits first), e.g. a malicious exit that
    /// rewrites what it relays.
    pub exit_connectors: Vec<(usize, Arc<dyn ExitConnector>)>,
    /// Exits (relay indices, 0-based, exits first) that publish no UDP policy and refuse
    /// every UDP flow; the other exits allow UDP as their TCP policy allows TCP (loopback
    /// included). Empty by default: every exit carries UDP.
    pub exits_without_udp: Vec<usize>,
    /// The relays' `[relay] fair_queueing` (default true): false queues every circuit of
    /// a channel in one FIFO, to measure what fair queueing changes.
    pub fair_queueing: bool,
}

impl Default for TestNetConfig {
    fn default() -> Self {
        TestNetConfig {
            authorities: 1,
            relays: 5,
            exits: 2,
            period: Duration::from_secs(10),
            clock: Clock::system(),
            key_dir: None,
            sybil: crate::dir::sybil::SybilLimits::UNLIMITED,
            relay_bandwidth: Vec::new(),
            relay_limits: Vec::new(),
            measure: false,
            check_exits: false,
            exit_connectors: Vec::new(),
            exits_without_udp: Vec::new(),
            fair_queueing: true,
        }
    }
}

/// A running test network.
#[derive(Debug)]
pub struct TestNet {
    /// The authorities (they are relays too).
    pub authorities: Vec<(RelayHandle, Arc<Authority>)>,
    /// The relays.
    pub relays: Vec<RelayHandle>,
    /// What clients need to know about the authorities.
    pub authority_info: Vec<AuthorityInfo>,
    /// Each relay's directory cache, in `relays` order.
    pub dir_caches: Vec<Arc<crate::relay::dircache::DirCache>>,
    /// The clock every node reads.
    pub clock: Clock,
    /// Each relay's descriptor uploads, in `relays` order (stopped when it restarts).
    publishers: Vec<Publisher>,
    /// The configuration the network started with (a restarted relay gets its role again).
    config: TestNetConfig,
}

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Flag rules for a small local network: everything is fast and stable at once, and
/// exits count loopback destinations.
pub fn test_flag_params() -> FlagParams {
    FlagParams {
        fast_bandwidth_guarantee: 0,
        stable_uptime: 0,
        exit_ports: vec![80, 443],
        exit_allow_special: true,
    }
}

/// A directory server of a test network: an authority, or a relay (its directory cache
/// answers the same request).
#[derive(Debug, Clone)]
pub struct DirServer {
    /// What messages call it (`authority-1`, `relay 127.0.0.1:5000`).
    pub name: String,
    /// Its link address.
    pub addr: SocketAddr,
    /// Its relay identity.
    pub identity: IdentityPublic,
}

/// How long one consensus fetch may take before that server counts as not answering.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two rounds of fetches.
const POLL: Duration = Duration::from_millis(500);

/// What one server serves: the verified consensus, or why there is none.
async fn fetch(
    server: &DirServer,
    trusted: &[IdentityPublic],
    clock: &Clock,
) -> Result<Consensus, String> {
    crate::proto::dirclient::fetch_consensus(
        server.addr,
        &server.identity,
        trusted,
        &crate::dir::MicrodescIndex::new(),
        None,
        FETCH_TIMEOUT,
        clock,
    )
    .await
    .map(|(c, _)| c)
    .map_err(|e| format!("no verified consensus ({e})"))
}

/// Waits (at most `limit`) until every server of `servers` serves a consensus, verified
/// against the authorities `trusted`, that lists every relay of `relays` (by identity).
/// Asking every server, not one, matters: a client bootstraps from any authority and later
/// refreshes from relays' caches, and an authority or a cache may still serve an earlier
/// consensus that lists only the relays that were up first.
///
/// Returns the consensus the first server serves, or (after `limit`) what each server that
/// was not ready served at the last look.
pub async fn wait_until_listed(
    servers: &[DirServer],
    trusted: &[IdentityPublic],
    relays: &[IdentityPublic],
    limit: Duration,
) -> Result<Consensus, String> {
    wait_until_listed_on(servers, trusted, relays, limit, &Clock::system()).await
}

/// [`wait_until_listed`] for nodes on `clock` (consensus validity read from it).
pub async fn wait_until_listed_on(
    servers: &[DirServer],
    trusted: &[IdentityPublic],
    relays: &[IdentityPublic],
    limit: Duration,
    clock: &Clock,
) -> Result<Consensus, String> {
    poll_until_listed(servers, trusted, relays, limit, clock, POLL, Want::Listed).await
}

/// [`wait_until_listed_on`], asking every `poll`.
/// What [`poll_until_listed`] waits for of each relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Listed,
    /// Listed with a measured bandwidth.
    Measured,
}

async fn poll_until_listed(
    servers: &[DirServer],
    trusted: &[IdentityPublic],
    relays: &[IdentityPublic],
    limit: Duration,
    clock: &Clock,
    poll: Duration,
    want: Want,
) -> Result<Consensus, String> {
    if servers.is_empty() {
        return Err("no directory server to ask".into());
    }
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let mut first = None;
        let mut not_ready = Vec::new();
        for s in servers {
            match fetch(s, trusted, clock).await {
                Ok(c) => {
                    let missing: Vec<String> = relays
                        .iter()
                        .filter(|id| {
                            c.relay(*id)
                                .is_none_or(|e| want == Want::Measured && !e.measured)
                        })
                        .map(|id| id.to_string())
                        .collect();
                    if missing.is_empty() {
                        first.get_or_insert(c);
                    } else {
                        not_ready.push(format!(
                            "{} serves a consensus listing {} of the {} relays{} (missing {})",
                            s.name,
                            relays.len() - missing.len(),
                            relays.len(),
                            if want == Want::Measured {
                                " as measured"
                            } else {
                                ""
                            },
                            missing.join(", ")
                        ));
                    }
                }
                Err(e) => not_ready.push(format!("{}: {e}", s.name)),
            }
        }
        if not_ready.is_empty() {
            if let Some(c) = first {
                return Ok(c);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "after {} s not every directory server lists every relay{}: {}",
                limit.as_secs(),
                if want == Want::Measured {
                    " as measured"
                } else {
                    ""
                },
                not_ready.join("; ")
            ));
        }
        tokio::time::sleep(poll).await;
    }
}

impl TestNet {
    /// Starts the network. Relays publish at once; the first consensus appears within one
    /// to two periods ([`TestNet::wait_for_consensus`]).
    pub async fn start(cfg: &TestNetConfig) -> std::io::Result<TestNet> {
        let mut auth_relays = Vec::new();
        for _ in 0..cfg.authorities.clamp(1, 9) {
            let r = relay::start(
                RelayConfig {
                    listen: localhost(),
                    limits: RelayLimits::default(),
                    exit: None,
                    clock: cfg.clock.clone(),
                    bandwidth: None,
                    fair_queueing: true,
                },
                RelayKeys::generate(&cfg.clock),
            )
            .await?;
            auth_relays.push(r);
        }
        let authority_info: Vec<AuthorityInfo> = auth_relays
            .iter()
            .map(|r| AuthorityInfo {
                identity: r.identity(),
                addr: r.local_addr(),
            })
            .collect();
        let mut authorities = Vec::new();
        for r in auth_relays {
            let mut acfg = AuthorityConfig::new(authority_info.clone());
            acfg.period = cfg.period;
            acfg.flags = test_flag_params();
            acfg.min_upload_interval = Duration::from_secs(1);
            acfg.sybil = cfg.sybil;
            acfg.test_network_probes(cfg.measure, cfg.check_exits);
            let auth = Authority::start(Arc::clone(r.shared()), acfg);
            r.set_dir_service(auth.service());
            authorities.push((r, auth));
        }
        let mut net = TestNet {
            clock: cfg.clock.clone(),
            authorities,
            relays: Vec::new(),
            authority_info,
            dir_caches: Vec::new(),
            publishers: Vec::new(),
            config: cfg.clone(),
        };
        for i in 0..cfg.relays {
            let (relay, cache, publisher) = net.start_relay(i, localhost()).await?;
            net.relays.push(relay);
            net.dir_caches.push(cache);
            net.publishers.push(publisher);
        }
        info!(
            authorities = net.authorities.len(),
            relays = net.relays.len(),
            "testnet: network started"
        );
        Ok(net)
    }

    /// Where relay `i` (0-based) keeps its keys, if the network keeps keys on disk.
    pub fn relay_key_dir(&self, i: usize) -> Option<PathBuf> {
        self.config
            .key_dir
            .as_ref()
            .map(|d| d.join(format!("relay-{}", i + 1)))
    }

    /// Starts relay `i` on `listen` with its directory cache and descriptor uploads; its
    /// keys come from its key directory (created if missing) or are made in memory.
    async fn start_relay(
        &self,
        i: usize,
        listen: SocketAddr,
    ) -> std::io::Result<(RelayHandle, Arc<DirCache>, Publisher)> {
        let keys = match self.relay_key_dir(i) {
            Some(dir) => {
                std::fs::create_dir_all(&dir)?;
                RelayKeys::load_or_create(&dir, &self.clock).map_err(std::io::Error::other)?
            }
            None => RelayKeys::generate(&self.clock),
        };
        let exit = (i < self.config.exits).then(|| {
            let mut e = ExitConfig::new(ExitPolicy::default_exit_allow_loopback());
            if !self.config.exits_without_udp.contains(&i) {
                e.udp_policy = ExitPolicy::default_exit_allow_loopback();
            }
            if let Some((_, c)) = self.config.exit_connectors.iter().find(|(j, _)| *j == i) {
                e.connector = Arc::clone(c);
            }
            e
        });
        let r = relay::start(
            RelayConfig {
                listen,
                limits: self
                    .config
                    .relay_limits
                    .get(i)
                    .cloned()
                    .flatten()
                    .unwrap_or_default(),
                exit,
                clock: self.clock.clone(),
                bandwidth: self.config.relay_bandwidth.get(i).copied().flatten(),
                fair_queueing: self.config.fair_queueing,
            },
            keys,
        )
        .await?;
        let cache = DirCache::start(self.authority_info.clone(), r.shared().clock.clone());
        r.set_dir_service(Arc::clone(&cache) as _);
        let publisher = spawn_publisher(
            Arc::clone(r.shared()),
            PublishConfig {
                authorities: self.authority_info.clone(),
                advertised: r.local_addr(),
                bandwidth: 10_000_000,
                family: Vec::new(),
                interval: self.config.period,
            },
        );
        Ok((r, cache, publisher))
    }

    /// Stops relay `i` (0-based) and starts it again on the same address, with the keys in
    /// its key directory (whatever is there now: a test may delete files first) or, without
    /// one, new keys. Its descriptor uploads and directory cache start afresh. If it cannot
    /// start again it is gone from `relays` (and `dir_caches`), and the error says why.
    pub async fn restart_relay(&mut self, i: usize) -> std::io::Result<()> {
        if i >= self.relays.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such relay",
            ));
        }
        let old = self.relays.remove(i);
        self.dir_caches.remove(i);
        self.publishers.remove(i).stop();
        let listen = old.local_addr();
        old.shutdown().await;
        let (relay, cache, publisher) = self.start_relay(i, listen).await?;
        self.relays.insert(i, relay);
        self.dir_caches.insert(i, cache);
        self.publishers.insert(i, publisher);
        info!("testnet: relay {} restarted", i + 1);
        Ok(())
    }

    /// Every authority and every relay (its directory cache), as directory servers.
    pub fn dir_servers(&self) -> Vec<DirServer> {
        let authorities = self
            .authorities
            .iter()
            .enumerate()
            .map(|(i, (r, _))| (format!("authority {} ({})", i + 1, r.local_addr()), r));
        let relays = self
            .relays
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("relay {} ({})", i + 1, r.local_addr()), r));
        authorities
            .chain(relays)
            .map(|(name, r)| DirServer {
                name,
                addr: r.local_addr(),
                identity: r.identity(),
            })
            .collect()
    }

    /// Waits (at most `limit`) until every authority and every relay's directory cache
    /// serves a consensus listing every relay ([`wait_until_listed`]). Returns that
    /// consensus, or what each server that was not ready served.
    pub async fn wait_for_consensus(&self, limit: Duration) -> Result<Consensus, String> {
        self.wait_for(limit, Want::Listed).await
    }

    /// Waits until every directory server serves a consensus listing every relay with a
    /// measured bandwidth (the authorities must measure: [`TestNetConfig::measure`]).
    pub async fn wait_for_measured(&self, limit: Duration) -> Result<Consensus, String> {
        self.wait_for(limit, Want::Measured).await
    }

    async fn wait_for(&self, limit: Duration, want: Want) -> Result<Consensus, String> {
        let trusted: Vec<IdentityPublic> = self.authority_info.iter().map(|a| a.identity).collect();
        let relays: Vec<IdentityPublic> = self.relays.iter().map(|r| r.identity()).collect();
        // Every round is a connection to every server: with hour-long periods on a
        // simulated clock, half-second rounds would be most of a test's real time.
        let poll = POLL.max(self.config.period / 60);
        poll_until_listed(
            &self.dir_servers(),
            &trusted,
            &relays,
            limit,
            &self.clock,
            poll,
            want,
        )
        .await
    }

    /// Makes the authorities start checking exits now, when the network was started without
    /// (`check_exits: false`): for a test that needs malicious exits to run unflagged first.
    pub fn start_exit_checks(&self) {
        for (_, a) in &self.authorities {
            a.start_test_network_exit_checks();
        }
    }

    /// Relays listed in the first authority's consensus.
    pub fn listed(&self) -> usize {
        let trusted: Vec<_> = self.authority_info.iter().map(|a| a.identity).collect();
        self.authorities
            .first()
            .and_then(|(_, a)| a.current_consensus())
            .and_then(|b| crate::dir::UncheckedConsensus::parse(&b).ok())
            .and_then(|u| u.verify(&trusted, self.clock.now_unix()).ok())
            .map_or(0, |c| c.listed().len())
    }

    /// Stops every node.
    pub async fn shutdown(self) {
        for p in &self.publishers {
            p.stop();
        }
        for r in self.relays {
            r.shutdown().await;
        }
        for (r, _) in self.authorities {
            r.shutdown().await;
        }
    }
}
