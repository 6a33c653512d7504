//! A whole local network in one process: authorities, relays (some exits) and the client
//! configuration to use them, all on 127.0.0.1. Used by `allium testnet` and by tests.

use crate::clock::now_unix;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use crate::dir::AuthorityInfo;
use crate::dir::{ExitPolicy, FlagParams};
use crate::relay::authority::{Authority, AuthorityConfig};
use crate::relay::publish::{spawn_publisher, PublishConfig};
use crate::relay::{self, ExitConfig, RelayConfig, RelayHandle, RelayKeys, RelayLimits};

/// Shape of a test network.
#[derive(Debug, Clone)]
pub struct TestNetConfig {
    /// Directory authorities (1 to 9).
    pub authorities: usize,
    /// Relays besides the authorities.
    pub relays: usize,
    /// How many of the relays are exits (they allow loopback destinations).
    pub exits: usize,
    /// Consensus period.
    pub period: Duration,
}

impl Default for TestNetConfig {
    fn default() -> Self {
        TestNetConfig {
            authorities: 1,
            relays: 5,
            exits: 2,
            period: Duration::from_secs(10),
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
                },
                RelayKeys::generate(),
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
            let auth = Authority::start(Arc::clone(r.shared()), acfg);
            r.set_dir_service(auth.service());
            authorities.push((r, auth));
        }
        let mut relays = Vec::new();
        let mut dir_caches = Vec::new();
        for i in 0..cfg.relays {
            let exit =
                (i < cfg.exits).then(|| ExitConfig::new(ExitPolicy::default_exit_allow_loopback()));
            let r = relay::start(
                RelayConfig {
                    listen: localhost(),
                    limits: RelayLimits::default(),
                    exit,
                },
                RelayKeys::generate(),
            )
            .await?;
            let cache = crate::relay::dircache::DirCache::start(authority_info.clone());
            r.set_dir_service(Arc::clone(&cache) as _);
            dir_caches.push(cache);
            spawn_publisher(
                Arc::clone(r.shared()),
                PublishConfig {
                    authorities: authority_info.clone(),
                    advertised: r.local_addr(),
                    bandwidth: 10_000_000,
                    family: Vec::new(),
                    interval: cfg.period,
                },
            );
            relays.push(r);
        }
        info!(
            authorities = authorities.len(),
            relays = relays.len(),
            "testnet: network started"
        );
        Ok(TestNet {
            authorities,
            relays,
            authority_info,
            dir_caches,
        })
    }

    /// Waits until every authority serves a consensus listing all relays, and every relay's
    /// directory cache holds one (or `limit`).
    pub async fn wait_for_consensus(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let ready = self.authorities.iter().all(|(_, a)| {
                a.current_consensus()
                    .and_then(|b| crate::dir::UncheckedConsensus::parse(&b).ok())
                    .is_some()
            }) && self.listed() >= self.relays.len()
                && self.dir_caches.iter().all(|c| c.has_consensus());
            if ready {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Relays listed in the first authority's consensus.
    pub fn listed(&self) -> usize {
        let trusted: Vec<_> = self.authority_info.iter().map(|a| a.identity).collect();
        self.authorities
            .first()
            .and_then(|(_, a)| a.current_consensus())
            .and_then(|b| crate::dir::UncheckedConsensus::parse(&b).ok())
            .and_then(|u| u.verify(&trusted, now_unix()).ok())
            .map_or(0, |c| c.relays().len())
    }

    /// Stops every node.
    pub async fn shutdown(self) {
        for r in self.relays {
            r.shutdown().await;
        }
        for (r, _) in self.authorities {
            r.shutdown().await;
        }
    }
}
