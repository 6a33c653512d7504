//! How a service is configured, and the checks a configuration must pass before launch.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use crate::crypto::KeyFileError;
use crate::onion::client_auth::MAX_AUTH_CLIENTS;
use crate::onion::pow::MAX_SUGGESTED_EFFORT;

/// How one onion service runs.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The service's identity key file (created with mode 0600 when missing; the address
    /// is derived from it, so keeping the file keeps the address).
    pub key_file: PathBuf,
    /// Virtual port → local target. Streams to other ports are refused.
    pub ports: Vec<(u16, SocketAddr)>,
    /// Virtual UDP port → local UDP target: flows clients open to other ports are
    /// refused (none by default).
    pub udp_ports: Vec<(u16, SocketAddr)>,
    /// A UDP flow without a datagram either way for this long is closed.
    pub udp_idle: Duration,
    /// UDP flows (one local socket each) open at once over all rendezvous circuits; more
    /// are refused (RESOURCE_LIMIT). Each circuit may have at most 32.
    pub max_udp_flows: usize,
    /// Rendezvous circuits open at once; introductions beyond are dropped (and when all
    /// are in use, those idle for [`Self::rendezvous_idle`] are closed to make room).
    pub max_rendezvous: usize,
    /// Introductions answered per second (all introduction points together); more are
    /// dropped. Only introductions that decrypted, are not replays and carry a valid
    /// puzzle solution (if one is required) count: this bounds the rendezvous circuits
    /// the service builds, the expensive part, and garbage cannot use it up.
    pub intros_per_second: u32,
    /// INTRODUCE2 cells one introduction point may make the service decrypt per second
    /// (a token bucket checked before any public-key work, so a malicious introduction
    /// point sending garbage costs the service little and cannot use up the other points'
    /// decryptions). The current points together are also held to
    /// [`INTRO_POINTS`](super::INTRO_POINTS) times this rate and burst, and the retired
    /// ones (keys replaced, still answering clients with older descriptors) together to
    /// once this rate and burst, so the total decryption work stays bounded whatever the
    /// number of points, and retired points cannot use up the current points' budget.
    pub intro_point_rate: u32,
    /// The burst of that bucket.
    pub intro_point_burst: u32,
    /// Publish a client puzzle (docs/protocol.md §8.8): introductions are then answered
    /// highest puzzle effort first, and the service suggests an effort from its load.
    /// Without it every introduction has effort 0 (answered in arrival order).
    pub pow: bool,
    /// The effort suggested until the first update (0: none until the service is loaded).
    pub pow_initial_effort: u32,
    /// How often the suggested effort is reconsidered (Tor: 5 minutes).
    pub pow_update: Duration,
    /// Valid introductions waiting for the rate of answered ones at most; when full, the
    /// lowest effort is dropped.
    pub intro_queue: usize,
    /// An introduction waiting longer than this is dropped (its client has likely given up).
    pub intro_queue_max_age: Duration,
    /// Client authorisation (protocol.md §8.4.1): when not empty, only these clients can
    /// read the descriptor's introduction points (1 to
    /// [`MAX_AUTH_CLIENTS`](crate::onion::client_auth::MAX_AUTH_CLIENTS), distinct).
    pub authorized_clients: Vec<crate::onion::ClientAuthPublic>,
    /// Connecting to a local target may take this long.
    pub connect_timeout: Duration,
    /// A rendezvous circuit without traffic for this long is closed, freeing its slot
    /// (clients keep theirs open for reuse), if it has no open stream or if all
    /// [`Self::max_rendezvous`] slots are in use; quiet streams otherwise live on.
    pub rendezvous_idle: Duration,
}

impl ServiceConfig {
    /// A service with defaults: 64 rendezvous circuits, 20 introductions per second (10
    /// per second, burst 50, from any one introduction point), a queue of 256
    /// introductions waiting 15 s at most, no puzzle, 10 s to connect
    /// to the target, rendezvous circuits idle for 5 minutes closed (with open streams:
    /// only when all 64 are in use).
    pub fn new(key_file: PathBuf, ports: Vec<(u16, SocketAddr)>) -> Self {
        ServiceConfig {
            key_file,
            ports,
            udp_ports: Vec::new(),
            udp_idle: Duration::from_secs(120),
            max_udp_flows: 256,
            max_rendezvous: 64,
            intros_per_second: 20,
            intro_point_rate: 10,
            intro_point_burst: 50,
            pow: false,
            pow_initial_effort: 0,
            pow_update: Duration::from_secs(5 * 60),
            intro_queue: 256,
            intro_queue_max_age: Duration::from_secs(15),
            authorized_clients: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            rendezvous_idle: Duration::from_secs(5 * 60),
        }
    }
}

/// Why a service could not start.
#[derive(Debug, Error)]
pub enum ServiceError {
    /// The key file could not be read or created.
    #[error("service key: {0}")]
    Key(#[from] KeyFileError),
    /// The key is not usable as a service identity.
    #[error("service key: {0}")]
    Address(#[from] crate::onion::AddressError),
    /// The configuration is not usable.
    #[error("service: {0}")]
    Config(String),
}

/// Refuses a configuration the service cannot run with: no port, an initial effort
/// above [`MAX_SUGGESTED_EFFORT`] (descriptors could not carry it), or an update period
/// under a second.
pub(super) fn check_config(cfg: &ServiceConfig) -> Result<(), ServiceError> {
    if cfg.ports.is_empty() && cfg.udp_ports.is_empty() {
        return Err(ServiceError::Config("no port configured".into()));
    }
    if cfg.pow_initial_effort > MAX_SUGGESTED_EFFORT {
        return Err(ServiceError::Config(format!(
            "initial puzzle effort {} is above {MAX_SUGGESTED_EFFORT}",
            cfg.pow_initial_effort
        )));
    }
    if !(Duration::from_secs(1)..=Duration::from_secs(24 * 3600)).contains(&cfg.pow_update)
        || cfg.intro_queue == 0
    {
        return Err(ServiceError::Config(
            "the puzzle's update period must be a second to a day and the introduction \
             queue hold at least one"
                .into(),
        ));
    }
    let clients = &cfg.authorized_clients;
    if clients.len() > MAX_AUTH_CLIENTS {
        return Err(ServiceError::Config(format!(
            "{} authorised clients; at most {MAX_AUTH_CLIENTS} fit in a descriptor",
            clients.len()
        )));
    }
    if clients
        .iter()
        .enumerate()
        .any(|(i, c)| clients.iter().take(i).any(|e| e == c))
    {
        return Err(ServiceError::Config(
            "an authorised client key is listed twice".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_puzzle_settings_are_refused_at_launch() {
        let target: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let mut cfg = ServiceConfig::new(PathBuf::from("unused.key"), vec![(80, target)]);
        assert!(check_config(&cfg).is_ok());
        cfg.pow = true;
        cfg.pow_initial_effort = MAX_SUGGESTED_EFFORT;
        assert!(check_config(&cfg).is_ok());
        cfg.pow_initial_effort = MAX_SUGGESTED_EFFORT + 1;
        assert!(check_config(&cfg)
            .unwrap_err()
            .to_string()
            .contains("above"));
        cfg.pow_initial_effort = 0;
        cfg.pow_update = Duration::from_secs(u64::MAX);
        assert!(check_config(&cfg).is_err());
        cfg.pow_update = Duration::from_secs(300);
        cfg.intro_queue = 0;
        assert!(check_config(&cfg).is_err());
        cfg.intro_queue = 1;
        let key = crate::onion::ClientAuthSecret::generate(&mut rand::rng()).public();
        cfg.authorized_clients = vec![key; 2];
        assert!(check_config(&cfg)
            .unwrap_err()
            .to_string()
            .contains("twice"));
        cfg.authorized_clients = (0..=MAX_AUTH_CLIENTS)
            .map(|_| crate::onion::ClientAuthSecret::generate(&mut rand::rng()).public())
            .collect();
        assert!(check_config(&cfg)
            .unwrap_err()
            .to_string()
            .contains("at most 32"));
        cfg.authorized_clients.truncate(MAX_AUTH_CLIENTS);
        assert!(check_config(&cfg).is_ok());
        cfg.ports.clear();
        assert!(check_config(&cfg).is_err());
    }
}
