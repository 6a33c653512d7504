//! Building, signing and uploading the descriptor to the relays of the hash ring.

use std::sync::Arc;

use tracing::debug;

use crate::client::circmgr::relay_target;
use crate::dir::request::{DirRequest, DirStatus};
use crate::onion::descriptor::{
    DescriptorParams, InnerDescriptor, IntroPointInfo, SignedOnionDescriptor,
    MAX_DESCRIPTOR_LIFETIME,
};
use crate::onion::hashring::{responsible_hsdirs, HsDirParams};
use crate::onion::{BlindedKeypair, TimePeriod};
use crate::proto::RelayTarget;
use crate::sync::lock;

use super::intro_slot::IntroSlot;
use super::shared::Shared;

/// Builds, signs and uploads the descriptor listing `up` to every relay of the ring.
/// Returns how many stored it.
pub(super) async fn publish(
    shared: &Arc<Shared>,
    up: &[&IntroSlot],
    period: TimePeriod,
    revision: u64,
) -> Result<usize, String> {
    let blinded = BlindedKeypair::derive(&shared.identity, period).map_err(|e| e.to_string())?;
    let intro_points = up
        .iter()
        // An established slot's relay identity was validated when its circuit was built.
        .filter_map(|s| {
            Some(IntroPointInfo {
                relay_identity: s.relay.validated_identity().ok()?,
                link_addrs: s.relay.addrs.clone(),
                onion_cert: s.relay.onion_cert.clone(),
                auth_key: s.auth.public(),
                enc_key: *s.enc.public(),
            })
        })
        .collect();
    let inner = InnerDescriptor {
        intro_points,
        pow: shared.pow.as_ref().map(|p| lock(p).params()),
    };
    let desc = SignedOnionDescriptor::build_for_clients(
        &mut rand::rng(),
        &shared.identity,
        &blinded,
        &inner,
        &DescriptorParams {
            revision,
            created: shared.clock().now_unix(),
            lifetime: MAX_DESCRIPTOR_LIFETIME,
        },
        &shared.authorized_clients,
    )
    .map_err(|e| e.to_string())?
    .to_bytes()
    .map_err(|e| e.to_string())?;
    let consensus = shared.client.live_consensus().map_err(|e| e.to_string())?;
    let dirs: Vec<RelayTarget> = responsible_hsdirs(
        consensus.relays(),
        blinded.public(),
        period,
        &HsDirParams::default(),
    )
    .iter()
    .filter_map(|id| consensus.relay(id))
    .filter_map(|e| relay_target(e, shared.clock().now_unix()).ok())
    .collect();
    let timeout = shared.client.config().circuit_timeout;
    let uploads = dirs.into_iter().map(|dir| {
        let client = shared.client.clone();
        let req = DirRequest::PutOnionDescriptor(desc.clone());
        tokio::spawn(async move {
            let circ = client
                .build_circuit_ending(&dir, crate::client::CircPurpose::HsDir)
                .await
                .ok()?;
            let handle = circ.into_handle();
            let resp = crate::proto::dirclient::dir_request(&handle, &req, timeout).await;
            handle.close().await;
            match resp {
                Ok(r) if r.status == DirStatus::Ok => Some(()),
                Ok(r) => {
                    debug!(
                        "onion service: a directory refused the descriptor: {}",
                        r.reason()
                    );
                    None
                }
                Err(e) => {
                    debug!("onion service: upload failed: {e}");
                    None
                }
            }
        })
    });
    let mut stored = 0;
    for u in uploads.collect::<Vec<_>>() {
        if let Ok(Some(())) = u.await {
            stored += 1;
        }
    }
    Ok(stored)
}
