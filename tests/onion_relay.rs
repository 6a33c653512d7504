//! The relay side of onion services on real TCP sockets (127.0.0.1, ephemeral ports),
//! relays in-process: descriptor storage over BEGIN_DIR (§8.3/§8.4, §6.12).

use std::time::Duration;

use allium::client::dirclient::one_shot;
use allium::dir::request::{DirRequest, DirStatus};
use allium::relay::{RelayHandle, RelayLimits};

mod common;
mod onion_common;
use common::NO_HANG;

async fn start_relay() -> RelayHandle {
    common::start_relay_with(RelayLimits::default(), None).await
}

/// A descriptor of the fixture service with `revision`, created a minute ago (the
/// fixtures' own time is in the past, so it would be expired at a real relay).
fn live_descriptor(revision: u64) -> (Vec<u8>, [u8; 32]) {
    use allium::onion::descriptor::{DescriptorParams, SignedOnionDescriptor};
    use allium::onion::{BlindedKeypair, PeriodParams};
    let now = common::now();
    let period = PeriodParams::default().period_at(now).unwrap();
    let blinded = BlindedKeypair::derive(&onion_common::service(), period).unwrap();
    let params = DescriptorParams {
        revision,
        created: now - 60,
        lifetime: 3600,
    };
    let d = SignedOnionDescriptor::build(
        &mut rand::rng(),
        &onion_common::service(),
        &blinded,
        &onion_common::inner(2, false),
        &params,
    )
    .unwrap();
    (d.to_bytes().unwrap(), *blinded.public().as_bytes())
}

/// PUT then GET over BEGIN_DIR at a relay whose directory cache (no authorities: it never
/// gets a consensus) stores descriptors; a forged upload and a rollback are refused.
#[tokio::test]
async fn hsdir_put_get_round_trip_refuses_forgery_and_rollback() {
    let relay = start_relay().await;
    let cache = allium::relay::dircache::DirCache::start(Vec::new());
    relay.set_dir_service(cache.clone());
    let (addr, id) = (relay.local_addr(), relay.identity());
    let ask = |req: DirRequest| async move { one_shot(addr, &id, &req, NO_HANG).await.unwrap() };

    let (d5, key) = live_descriptor(5);
    let get = DirRequest::GetOnionDescriptor { blinded_key: key };
    assert_eq!(ask(get.clone()).await.status, DirStatus::NotFound);
    let put = ask(DirRequest::PutOnionDescriptor(d5.clone())).await;
    assert_eq!(put.status, DirStatus::Ok, "{}", put.reason());
    let got = ask(get.clone()).await;
    assert_eq!(got.status, DirStatus::Ok);
    assert_eq!(got.body, d5);

    // Forged: one bit of the signature flipped.
    let (mut forged, _) = live_descriptor(6);
    let last = forged.len() - 1;
    forged[last] ^= 0x01;
    let r = ask(DirRequest::PutOnionDescriptor(forged)).await;
    assert_eq!(r.status, DirStatus::Refused);
    eprintln!("forged upload: {:?} {}", r.status, r.reason());

    // Rollback: an older (validly signed) revision.
    let (d4, _) = live_descriptor(4);
    let r = ask(DirRequest::PutOnionDescriptor(d4)).await;
    assert_eq!(r.status, DirStatus::Refused);
    eprintln!("rollback upload: {:?} {}", r.status, r.reason());

    // Garbage is a bad request; the stored descriptor is unchanged throughout.
    let r = ask(DirRequest::PutOnionDescriptor(vec![1, 2, 3])).await;
    assert_eq!(r.status, DirStatus::BadRequest);
    assert_eq!(ask(get.clone()).await.body, d5);

    // A newer revision replaces it.
    let (d7, _) = live_descriptor(7);
    assert_eq!(
        ask(DirRequest::PutOnionDescriptor(d7.clone())).await.status,
        DirStatus::Ok
    );
    assert_eq!(ask(get).await.body, d7);
    assert_eq!(cache.hsdir().len(), 1);
    eprintln!("descriptor of {} bytes stored and served", d7.len());
    tokio::time::timeout(Duration::from_secs(10), relay.shutdown())
        .await
        .unwrap();
}
