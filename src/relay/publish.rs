//! A relay publishing its signed descriptor to the directory authorities.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::crypto::IdentityPublic;
use crate::dir::request::{DirRequest, DirStatus};
use crate::dir::{Descriptor, DescriptorError, ExitPolicy, SignedDescriptor};
use crate::proto::dirclient::one_shot;

use super::shared::RelayShared;
use crate::dir::AuthorityInfo;

/// What a relay advertises and where it publishes.
#[derive(Debug, Clone)]
pub(crate) struct PublishConfig {
    /// The authorities to upload to.
    pub authorities: Vec<AuthorityInfo>,
    /// The address clients and relays connect to (the listen address unless behind NAT).
    pub advertised: SocketAddr,
    /// Declared bandwidth, bytes/s.
    pub bandwidth: u64,
    /// Relays run by the same operator (never used together in one circuit).
    pub family: Vec<IdentityPublic>,
    /// How often to republish.
    pub interval: Duration,
}

/// Builds and signs the relay's current descriptor.
pub(crate) fn build_descriptor(
    shared: &RelayShared,
    cfg: &PublishConfig,
) -> Result<SignedDescriptor, DescriptorError> {
    let (exit, exit_policy) = match &shared.exit {
        Some(e) => (true, e.policy.clone()),
        None => (false, ExitPolicy::reject_all()),
    };
    let descriptor = Descriptor {
        identity: shared.keys.identity(),
        onion_cert: shared.keys.onion_cert().clone(),
        addrs: vec![cfg.advertised],
        exit,
        exit_policy,
        bandwidth: cfg.bandwidth,
        family: cfg.family.clone(),
        version: concat!("allium ", env!("CARGO_PKG_VERSION")).to_string(),
        published: shared.clock.now_unix(),
    };
    descriptor.sign(shared.keys.identity_keypair())
}

/// Uploads the descriptor to every authority now and then every `interval`, and at once
/// when [`RelayShared::republish`] is notified or the wall clock jumps; a failed upload is
/// retried after a few seconds.
pub(crate) fn spawn_publisher(shared: Arc<RelayShared>, cfg: PublishConfig) {
    tokio::spawn(async move {
        let mut jumps = shared.clock.watch_jumps();
        loop {
            let mut all_ok = true;
            match build_descriptor(&shared, &cfg)
                .and_then(|d| d.to_bytes().map_err(DescriptorError::Codec))
            {
                Ok(bytes) => {
                    for a in &cfg.authorities {
                        let req = DirRequest::PostDescriptor(bytes.clone());
                        match one_shot(
                            a.addr,
                            &a.identity,
                            &req,
                            Duration::from_secs(10),
                            &shared.clock,
                        )
                        .await
                        {
                            Ok(resp) if resp.status == DirStatus::Ok => {
                                debug!("relay: descriptor accepted by an authority")
                            }
                            Ok(resp) if resp.status == DirStatus::Busy => {}
                            Ok(resp) => {
                                all_ok = false;
                                warn!(
                                    "relay: an authority refused the descriptor: {}",
                                    resp.reason()
                                );
                            }
                            Err(e) => {
                                all_ok = false;
                                info!("relay: could not reach an authority: {e}");
                            }
                        }
                    }
                }
                Err(e) => {
                    warn!("relay: cannot build the descriptor: {e}");
                    all_ok = false;
                }
            }
            let wait = if all_ok {
                cfg.interval
            } else {
                Duration::from_secs(5).min(cfg.interval)
            };
            // A wall-clock jump makes the uploaded `published` time wrong (and, forward,
            // the authorities may have forgotten us): upload again at once.
            tokio::select! {
                () = shared.clock.sleep(wait) => {}
                () = shared.republish.notified() => {}
                jump = jumps.next() => info!("relay: {jump}; publishing the descriptor again"),
            }
        }
    });
}
