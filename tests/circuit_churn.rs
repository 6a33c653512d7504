//! Circuits of isolation classes never used again are closed (issue 19, item 0).
//!
//! A busy client (a browser isolating by site, a SOCKS credential per request) builds a
//! circuit for each new isolation class. Before this was fixed, a circuit was retired only
//! when a later request came for the *same* class, and classes were never forgotten: every
//! circuit ever built stayed open at the client and at its three relays.
//!
//! The test churns [`REQUESTS`] requests, each with a fresh isolation class, through an
//! in-process network (real TCP on 127.0.0.1), then lets the maximum dirtiness pass on the
//! paused clock and checks that the client holds only its clean pool again and that every
//! relay is back to the circuits it had before the churn.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use allium::cell::TargetAddr;
use allium::client::{Client, ClientConfig, Isolation};
use allium::clock::Clock;
use allium::testnet::{TestNet, TestNetConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Requests, each on its own isolation class.
const REQUESTS: usize = 1500;
/// Requests in flight at once.
const PARALLEL: usize = 8;
/// The client's maximum dirtiness (its default).
const DIRTINESS: Duration = Duration::from_secs(600);
const PERIOD: Duration = Duration::from_secs(3600);

/// Open circuits at every node of the network (authorities, then relays).
fn open_circuits(net: &TestNet) -> Vec<u64> {
    net.authorities
        .iter()
        .map(|(h, _)| h)
        .chain(net.relays.iter())
        .map(|h| h.shared().counters.circuits_open.load(Ordering::Relaxed))
        .collect()
}

/// Whether the nodes' open circuits are back to `before`: no more in all (one circuit's
/// three hops of slack, for a directory or self-test circuit of the network's own), and
/// at no node more than the client's `pool` more (the clean circuits built since may take
/// other paths than those before the churn; a relay is at most once on a path).
fn back_to(before: &[u64], after: &[u64], pool: usize) -> bool {
    let (b, a): (u64, u64) = (before.iter().sum(), after.iter().sum());
    a <= b + 3 && after.iter().zip(before).all(|(x, y)| *x <= y + pool as u64)
}

async fn fetch(client: &Client, web: std::net::SocketAddr, class: usize) -> Result<usize, String> {
    let iso = Isolation(format!("site-{class}").into_bytes());
    let mut s = client
        .connect_target(TargetAddr::Ip(web.ip()), web.port(), &iso)
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    s.read_to_end(&mut body).await.map_err(|e| e.to_string())?;
    Ok(body.len())
}

#[tokio::test(start_paused = true)]
async fn circuits_of_isolations_not_used_again_close_at_the_client_and_every_relay() {
    // As in tests/sixty_days.rs: certificates made at start-up are stamped from the system
    // clock, so the simulated clock starts just before it, half a period before one starts.
    let p = PERIOD.as_secs();
    let sys = allium::clock::now_unix();
    let lead = p / 2 + 60;
    let start = (sys + lead) / p * p - lead;
    let clock = Clock::simulated(std::time::UNIX_EPOCH + Duration::from_secs(start));
    let net = TestNet::start(&TestNetConfig {
        authorities: 3,
        relays: 5,
        exits: 2,
        period: PERIOD,
        clock: clock.clone(),
        ..TestNetConfig::default()
    })
    .await
    .unwrap();
    net.wait_for_consensus(3 * PERIOD).await.unwrap();
    let web = common::net::serve_body(vec![7u8; 4096]).await;

    let mut cfg = ClientConfig::new(net.authority_info.clone());
    cfg.clock = clock.clone();
    cfg.max_dirtiness = DIRTINESS;
    let pool = cfg.prebuilt_circuits;
    let client = Client::bootstrap(cfg).await.unwrap();
    // Settle: the clean pool built, the bootstrap's directory circuits done.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = open_circuits(&net);
    let held_before = client.circuits_held();
    eprintln!("before: client holds {held_before}, nodes {before:?}");

    let mut failed = 0usize;
    let mut classes = 0..REQUESTS;
    let mut running = tokio::task::JoinSet::new();
    loop {
        while running.len() < PARALLEL {
            let Some(class) = classes.next() else { break };
            let client = client.clone();
            running.spawn(async move { fetch(&client, web, class).await });
        }
        match running.join_next().await {
            Some(Ok(Ok(len))) => assert_eq!(len, 4096),
            Some(Ok(Err(e))) => {
                failed += 1;
                eprintln!("a request failed: {e}");
            }
            Some(Err(e)) => panic!("{e}"),
            None => break,
        }
    }
    // A read pending while the paused runtime goes idle can time out; a few may fail.
    assert!(
        failed * 50 < REQUESTS,
        "{failed} of {REQUESTS} requests failed"
    );
    let during = open_circuits(&net);
    let held_during = client.circuits_held();
    eprintln!(
        "after {REQUESTS} requests ({failed} failed): client holds {held_during}, nodes {during:?}"
    );
    assert!(
        held_during >= REQUESTS / 2,
        "the churn should leave its circuits open until the dirtiness passes: {held_during}"
    );

    // The dirtiness passes, then the sweeper's next rounds.
    let swept_from = tokio::time::Instant::now();
    let deadline = swept_from + DIRTINESS + Duration::from_secs(120);
    let (held, after) = loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let held = client.circuits_held();
        let after = open_circuits(&net);
        let settled = held <= pool && back_to(&before, &after, pool);
        if settled || tokio::time::Instant::now() > deadline {
            break (held, after);
        }
    };
    eprintln!(
        "{} s later (simulated): client holds {held} (pool {pool}), nodes {after:?}",
        swept_from.elapsed().as_secs()
    );
    assert!(
        held <= pool,
        "the client still holds {held} circuits (its pool is {pool})"
    );
    assert!(
        back_to(&before, &after, pool),
        "the nodes have {after:?} circuits open, {before:?} before the churn"
    );
    // And the client still works after the sweep.
    assert_eq!(fetch(&client, web, REQUESTS).await.unwrap(), 4096);
    net.shutdown().await;
}
