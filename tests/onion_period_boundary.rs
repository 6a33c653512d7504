//! Clients ask the neighbouring period's directories near a period boundary
//! (docs/protocol.md §8.10 client step 2), on a real network on 127.0.0.1.
//!
//! The network and the onion service run on a clock just past a period boundary B (the
//! service starts after it, so it publishes for period P+1 only); the visitor's clock is
//! four minutes behind (before B: its current period is P), within the consensus and
//! descriptor skews. No directory holds a descriptor of the service for P, so the visitor
//! reaches the service only because it asks P+1's directories too (with the
//! neighbour fetch removed from `periods_to_fetch` this test fails: "no descriptor for
//! that key").
//!
//! The other direction (a visitor past B asking P's directories) matters only when the
//! service is over 2 h behind it (a service uploads P+1's descriptor 2 h before B), far
//! beyond the 10-minute consensus skew (nodes hours apart cannot share this network's
//! short-lived consensuses); unit tests in src/client/onion_connect/periods.rs cover it.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

mod common;

use std::time::{Duration, UNIX_EPOCH};

use allium::cell::{Hostname, TargetAddr};
use allium::client::onion_service::{launch, ServiceConfig};
use allium::client::{Client, ClientConfig, Isolation};
use allium::clock::Clock;
use allium::dir::request::DirStatus;
use allium::onion::{BlindedPublic, PeriodParams, TimePeriod};
use allium::testnet::{TestNet, TestNetConfig};
use common::NO_HANG;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How far the visitor's clock is behind the network's (the consensus skew allows 10 min,
/// the descriptor skew 5 min).
const BEHIND: Duration = Duration::from_secs(240);

/// The relays' directory caches holding a descriptor of `blinded` now.
fn holders(net: &TestNet, blinded: &BlindedPublic) -> usize {
    let now = net.clock.now_unix();
    net.dir_caches
        .iter()
        .filter(|c| c.hsdir().get_at(blinded.as_bytes(), now).status == DirStatus::Ok)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_just_before_a_boundary_finds_a_service_just_past_it() {
    let params = PeriodParams::default();
    let real = allium::clock::now_unix();
    let next = params.period_at(real).unwrap().number + 1;
    let boundary = next * params.length + params.offset;
    // Real time drives the network; its wall clock starts 5 s past the boundary.
    let clock = Clock::simulated(UNIX_EPOCH + Duration::from_secs(boundary + 5));
    let net = common::net::started(TestNetConfig {
        authorities: 1,
        relays: 6,
        exits: 2,
        period: Duration::from_secs(10),
        clock: clock.clone(),
        ..TestNetConfig::default()
    })
    .await;

    let echo = common::tcp_echo().await;
    let dir = std::env::temp_dir().join(format!("allium-boundary-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut scfg = ClientConfig::new(net.authority_info.clone());
    scfg.clock = clock.clone();
    let svc_client = Client::bootstrap(scfg).await.unwrap();
    let service = launch(
        svc_client,
        ServiceConfig::new(dir.join("svc.key"), vec![(80, echo)]),
    )
    .await
    .unwrap();
    assert!(service.wait_published(NO_HANG).await, "not published");

    let behind = Clock::simulated(clock.wall() - BEHIND);
    let mut ccfg = ClientConfig::new(net.authority_info.clone());
    ccfg.clock = behind.clone();
    let client = Client::bootstrap(ccfg).await.unwrap();

    let (p, p1) = (
        TimePeriod {
            length: params.length,
            number: next - 1,
        },
        TimePeriod {
            length: params.length,
            number: next,
        },
    );
    assert_eq!(params.period_at(net.clock.now_unix()).unwrap(), p1);
    assert_eq!(params.period_at(behind.now_unix()).unwrap(), p);
    // The service published for P+1 only: no directory has its P descriptor.
    let address = *service.address();
    let (key_p, key_p1) = (
        BlindedPublic::derive(&address, p).unwrap(),
        BlindedPublic::derive(&address, p1).unwrap(),
    );
    assert_eq!(holders(&net, &key_p), 0);
    let stored = holders(&net, &key_p1);
    assert!(stored > 0);

    let onion = TargetAddr::Hostname(Hostname::new(&address.to_string()).unwrap());
    let mut s = tokio::time::timeout(
        NO_HANG,
        client.connect_target(onion, 80, &Isolation::default()),
    )
    .await
    .expect("connect hung")
    .unwrap_or_else(|e| panic!("the visitor did not reach the service: {e}"));
    s.write_all(b"ping").await.unwrap();
    let mut b = [0u8; 4];
    tokio::time::timeout(NO_HANG, s.read_exact(&mut b))
        .await
        .expect("echo hung")
        .unwrap();
    assert_eq!(&b, b"ping");
    // Still before the boundary on the visitor's clock, and still no P descriptor: it
    // found the service through P+1's directories.
    let now = behind.now_unix();
    assert!(
        now < boundary,
        "the visitor's clock passed the boundary: inconclusive"
    );
    assert_eq!(holders(&net, &key_p), 0);
    eprintln!(
        "visitor at boundary − {} s (period {}), service at boundary + {} s (period {}): \
         reached through the next period's directories ({stored} hold its descriptor)",
        boundary - now,
        p.number,
        net.clock.now_unix() - boundary,
        p1.number
    );

    service.stop();
    net.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
