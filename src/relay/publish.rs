//! A relay publishing its signed descriptor to the directory authorities.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::crypto::IdentityPublic;
use crate::dir::request::{DirRequest, DirStatus};
use crate::dir::{Descriptor, DescriptorError, ExitPolicy, SignedDescriptor};
use crate::proto::dirclient::one_shot;

use super::address_discovery::AdvertisedAddress;
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
    let (exit, exit_policy, udp_policy) = match &shared.exit {
        Some(e) => (true, e.policy.clone(), e.udp_policy.clone()),
        None => (false, ExitPolicy::reject_all(), ExitPolicy::reject_all()),
    };
    let descriptor = Descriptor {
        identity: shared.keys.identity(),
        onion_cert: shared.keys.onion_cert(),
        addrs: vec![cfg.advertised],
        exit,
        exit_policy,
        udp_policy,
        bandwidth: cfg.bandwidth,
        family: cfg.family.clone(),
        version: concat!("allium ", env!("CARGO_PKG_VERSION")).to_string(),
        published: shared.clock.now_unix(),
    };
    descriptor.sign(shared.keys.identity_keypair())
}

/// Uploads the descriptor to every authority now and then every `interval`, and at once
/// when the onion key rotated, [`RelayShared::republish`] is notified or the wall clock
/// jumps. A round that fails (no address, a refusal, an authority unreachable) is retried
/// sooner, backing off from 5 s to a few minutes. When the advertised address is
/// unspecified, it is learned from the authorities at every round, so a changed address is
/// re-published. Starts the self-test, which runs after every round.
pub(crate) fn spawn_publisher(shared: Arc<RelayShared>, cfg: PublishConfig) -> Publisher {
    let self_test = super::self_test::spawn_self_test(Arc::clone(&shared), cfg.authorities.clone());
    let uploads = tokio::spawn(async move {
        let mut jumps = shared.clock.watch_jumps();
        let mut address = AdvertisedAddress::new(cfg.advertised);
        let mut failed_rounds = 0u32;
        loop {
            let all_ok = publish_round(&shared, &cfg, &mut address).await;
            failed_rounds = if all_ok {
                0
            } else {
                failed_rounds.saturating_add(1)
            };
            let wait = retry_wait(failed_rounds, cfg.interval);
            // A rotated onion key is published at once, not after the interval; so is the
            // descriptor after a wall-clock jump, which makes its `published` time wrong
            // (and, forward, the authorities may have forgotten us).
            tokio::select! {
                () = shared.clock.sleep(wait) => {}
                () = shared.keys.descriptor_changed().notified() => {}
                () = shared.republish.notified() => {}
                jump = jumps.next() => info!("relay: {jump}; publishing the descriptor again"),
            }
        }
    });
    Publisher { uploads, self_test }
}

/// A relay's publishing tasks (uploads and the self-test). They run until the runtime
/// ends unless stopped: a relay restarted in the same process must not leave its previous
/// instance uploading stale keys next to it.
#[derive(Debug)]
pub(crate) struct Publisher {
    uploads: tokio::task::JoinHandle<()>,
    self_test: tokio::task::JoinHandle<()>,
}

impl Publisher {
    /// Stops both tasks.
    pub(crate) fn stop(&self) {
        self.uploads.abort();
        self.self_test.abort();
    }
}

/// How long to wait before the next round after `failed_rounds` failed ones in a row:
/// the interval after a success, else 5 s doubling up to 5 minutes (never past the
/// interval), so a lasting problem is neither hammered nor logged every few seconds.
fn retry_wait(failed_rounds: u32, interval: Duration) -> Duration {
    if failed_rounds == 0 {
        return interval;
    }
    let backoff =
        Duration::from_secs(5).saturating_mul(1 << failed_rounds.min(7).saturating_sub(1));
    backoff.min(Duration::from_secs(300)).min(interval)
}

/// One round: learns the address if need be, builds the descriptor and uploads it to
/// every authority; records the outcome for the self-test. Whether all went well.
async fn publish_round(
    shared: &Arc<RelayShared>,
    cfg: &PublishConfig,
    address: &mut AdvertisedAddress,
) -> bool {
    let now = shared.clock.now_unix();
    let Some(advertised) = address.resolve(&cfg.authorities, &shared.clock).await else {
        shared.self_test.record_round(None, None, now);
        return false;
    };
    let round_cfg = PublishConfig {
        advertised,
        ..cfg.clone()
    };
    let bytes = match build_descriptor(shared, &round_cfg)
        .and_then(|d| d.to_bytes().map_err(DescriptorError::Codec))
    {
        Ok(bytes) => bytes,
        Err(e) => {
            warn!("relay: cannot build the descriptor: {e}");
            shared.self_test.record_round(Some(advertised), None, now);
            return false;
        }
    };
    let mut all_ok = true;
    let mut accepted = false;
    let mut refusal = None;
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
                accepted = true;
                debug!("relay: descriptor accepted by an authority")
            }
            Ok(resp) if resp.status == DirStatus::Busy => {}
            Ok(resp) => {
                all_ok = false;
                warn!(
                    "relay: an authority refused the descriptor: {}",
                    resp.reason()
                );
                refusal = Some(resp.reason().to_string());
            }
            Err(e) => {
                all_ok = false;
                info!("relay: could not reach an authority: {e}");
            }
        }
    }
    let outcome = match (accepted, refusal) {
        (true, _) => Some(Ok(())),
        (false, Some(reason)) => Some(Err(reason)),
        (false, None) => None,
    };
    shared
        .self_test
        .record_round(Some(advertised), outcome, now);
    all_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_rounds_back_off_to_minutes_not_seconds_forever() {
        let hour = Duration::from_secs(3600);
        let waits: Vec<u64> = (0..10).map(|n| retry_wait(n, hour).as_secs()).collect();
        assert_eq!(waits, [3600, 5, 10, 20, 40, 80, 160, 300, 300, 300]);
        // Never longer than the publish interval itself.
        assert_eq!(
            retry_wait(9, Duration::from_secs(60)),
            Duration::from_secs(60)
        );
    }
}
