//! Sybil limits, tried by the attacker: ten relays of one operator on one address. Identities
//! are free, addresses are not; the authorities let at most two relays per address be usable
//! and list the rest without Running and Valid, so clients never build through them.

use std::time::Duration;

use allium::dir::path::USABLE;
use allium::dir::sybil::SybilLimits;
use allium::testnet::{TestNet, TestNetConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_relays_on_one_address_yield_at_most_two_usable() {
    let cfg = TestNetConfig {
        authorities: 1,
        relays: 10,
        exits: 3,
        period: Duration::from_secs(6),
        sybil: SybilLimits::default(),
        ..TestNetConfig::default()
    };
    let net = TestNet::start(&cfg).await.unwrap();
    let consensus = net
        .wait_for_consensus(Duration::from_secs(60))
        .await
        .unwrap();
    // All ten are listed (the operator can see why they carry nothing) ...
    let ours: Vec<_> = net.relays.iter().map(|r| r.identity()).collect();
    let listed: Vec<_> = consensus
        .relays()
        .iter()
        .filter(|e| ours.iter().any(|o| *o == e.identity))
        .collect();
    assert_eq!(listed.len(), 10);
    // ... but only two are usable, and paths only ever use those two.
    let usable: Vec<_> = listed.iter().filter(|e| e.has(USABLE)).collect();
    assert_eq!(
        usable.len(),
        2,
        "flags: {:?}",
        listed.iter().map(|e| e.flags).collect::<Vec<_>>()
    );
    let mut rng = rand::rng();
    for _ in 0..200 {
        if let Some(m) = allium::dir::path::select_middle(&consensus, &[], &mut rng) {
            assert!(usable.iter().any(|u| u.identity == m.identity));
        }
    }
    net.shutdown().await;
}
