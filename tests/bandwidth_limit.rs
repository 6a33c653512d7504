//! A relay's bandwidth rate limit (`[relay] bandwidth_rate`/`bandwidth_burst`) over real
//! TCP on 127.0.0.1: traffic through a relay limited to R bytes/s with burst B cannot
//! move N bytes in less than (N − B)/R, whether on one channel or spread over several
//! (the limit is relay-wide). Only lower bounds are asserted: a slow machine cannot make
//! them fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::time::Duration;

use allium::cell::TargetAddr;
use allium::dir::ExitPolicy;
use allium::link::BandwidthLimit;
use allium::relay::{RelayHandle, RelayLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

mod common;
use common::{build_through, build_through_refs, start_relay_limited, NO_HANG};

const RATE: u64 = 200_000;
const BURST: u64 = 20_000;
/// Timer rounding (tokio sleeps never end early, but the two instants are read apart).
const SLACK: Duration = Duration::from_millis(10);

fn limit() -> BandwidthLimit {
    BandwidthLimit::new(RATE, Some(BURST)).unwrap()
}

/// The least time moving `bytes` through the limited relay can take.
fn lower_bound(bytes: usize) -> Duration {
    Duration::from_secs_f64((bytes as u64 - BURST) as f64 / RATE as f64).saturating_sub(SLACK)
}

/// Answers each connection with `size` bytes, ignoring what it is sent.
async fn download_server(size: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let _ = s.write_all(&vec![0x5a; size]).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// Reads each connection to its end and reports how many bytes it got.
async fn upload_server() -> (SocketAddr, tokio::sync::mpsc::Receiver<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let _ = s.read_to_end(&mut got).await;
                let _ = tx.send(got.len()).await;
            });
        }
    });
    (addr, rx)
}

/// Guard, middle, exit; relay `limited` (0-based) has the rate limit, if any.
async fn relays(limited: Option<usize>) -> Vec<RelayHandle> {
    let mut relays = Vec::new();
    for i in 0..3 {
        let exit = (i == 2).then(ExitPolicy::default_exit_allow_loopback);
        let bw = (limited == Some(i)).then(limit);
        relays.push(start_relay_limited(RelayLimits::default(), exit, bw).await);
    }
    relays
}

fn loopback() -> TargetAddr {
    TargetAddr::Ip("127.0.0.1".parse().unwrap())
}

/// Downloads `size` bytes through a fresh circuit over `relays`; returns how long it took.
async fn timed_download(relays: &[RelayHandle], size: usize) -> Duration {
    let server = download_server(size).await;
    let circ = build_through(relays).await.into_handle();
    let start = Instant::now();
    let mut stream = circ
        .open_stream(loopback(), server.port(), NO_HANG)
        .await
        .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(NO_HANG, stream.read_to_end(&mut got))
        .await
        .expect("the download must finish")
        .unwrap();
    assert_eq!(got.len(), size);
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_through_a_limited_middle_takes_at_least_its_share_of_time() {
    const SIZE: usize = 500_000;
    // The middle reads every byte (more: cell headers and record overhead) from the exit.
    let limited = relays(Some(1)).await;
    let took = timed_download(&limited, SIZE).await;
    let bound = lower_bound(SIZE);
    assert!(
        took >= bound,
        "{SIZE} bytes through a relay limited to {RATE} B/s (burst {BURST}) took {took:?} < {bound:?}"
    );
    // The same transfer without a limit completes too (its speed is not asserted).
    let free = relays(None).await;
    let free_took = timed_download(&free, SIZE).await;
    eprintln!("limited: {took:?} (bound {bound:?}), unlimited: {free_took:?}");
    for r in limited.into_iter().chain(free) {
        r.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_from_a_limited_exit_is_held_by_its_write_bucket() {
    const SIZE: usize = 400_000;
    // The exit reads the destination's bytes from a plain socket (not a channel), so only
    // its write bucket stands between them and the middle.
    let relays = relays(Some(2)).await;
    let took = timed_download(&relays, SIZE).await;
    let bound = lower_bound(SIZE);
    assert!(
        took >= bound,
        "{SIZE} bytes from an exit limited to {RATE} B/s (burst {BURST}) took {took:?} < {bound:?}"
    );
    for r in relays {
        r.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_is_shared_by_all_channels_of_the_relay() {
    const EACH: usize = 250_000;
    // Two uploads at once over two-hop circuits through different middles, so they reach
    // the limited exit on two channels. The exit writes to the destination over a plain
    // socket: only its read bucket, which both channels draw from, holds them back.
    let mut relays = Vec::new();
    for _ in 0..2 {
        relays.push(start_relay_limited(RelayLimits::default(), None, None).await);
    }
    let exit = ExitPolicy::default_exit_allow_loopback();
    relays.push(start_relay_limited(RelayLimits::default(), Some(exit), Some(limit())).await);
    let (server, mut uploads) = upload_server().await;
    let a = build_through_refs(&[&relays[0], &relays[2]])
        .await
        .into_handle();
    let b = build_through_refs(&[&relays[1], &relays[2]])
        .await
        .into_handle();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for circ in [a, b] {
        tasks.push(tokio::spawn(async move {
            let mut s = circ
                .open_stream(loopback(), server.port(), NO_HANG)
                .await
                .unwrap();
            s.write_all(&vec![0xa5; EACH]).await.unwrap();
            s.shutdown().await.unwrap();
            // Keep the circuit until the server has everything.
            tokio::time::sleep(NO_HANG).await;
            drop(circ);
        }));
    }
    for _ in 0..2 {
        let got = tokio::time::timeout(NO_HANG, uploads.recv())
            .await
            .expect("both uploads must finish")
            .unwrap();
        assert_eq!(got, EACH);
    }
    let took = start.elapsed();
    let bound = lower_bound(2 * EACH);
    assert!(
        took >= bound,
        "2 × {EACH} bytes into an exit limited to {RATE} B/s (burst {BURST}) took {took:?} < {bound:?}"
    );
    for t in tasks {
        t.abort();
    }
    for r in relays {
        r.shutdown().await;
    }
}

/// `allium relay` processes with `bandwidth_rate` in their relay.toml (the multi-process
/// helpers write it): one declaring more than its rate starts and warns; a rate of 0 is
/// refused at startup with a message naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_processes_read_their_rate_from_relay_toml() {
    use common::procnet::{emit, limit_relay_bandwidth, ProcNet};
    let dir = emit("bwlimit", 1, 3, 1, 6);
    // The emitted relays declare 10 MB/s.
    limit_relay_bandwidth(&dir, "relay-1", 100_000, Some(200_000));
    limit_relay_bandwidth(&dir, "relay-2", 0, None);
    let mut net = ProcNet::open(&dir);
    net.start("relay-1");
    net.start("relay-2");
    let warned = net
        .wait_for_log("relay-1", "is above bandwidth_rate", NO_HANG)
        .await;
    let listening = net.wait_for_log("relay-1", "listening", NO_HANG).await;
    let refused = net
        .wait_for_log("relay-2", "bandwidth_rate must be at least 1", NO_HANG)
        .await;
    if !(warned && listening && refused) {
        net.dump_logs();
    }
    assert!(warned, "no warning about the declared bandwidth");
    assert!(listening, "the limited relay did not start");
    assert!(refused, "a rate of 0 was not refused");
    net.finish().await;
}

/// The in-process test network gives each relay the limit its config lists (others none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testnet_relays_get_their_configured_limits() {
    use allium::testnet::{TestNet, TestNetConfig};
    let net = TestNet::start(&TestNetConfig {
        relays: 3,
        exits: 1,
        relay_bandwidth: vec![None, Some(limit())],
        ..TestNetConfig::default()
    })
    .await
    .unwrap();
    let limits: Vec<_> = net.relays.iter().map(|r| r.bandwidth_limit()).collect();
    assert_eq!(limits, vec![None, Some(limit()), None]);
    assert!(net
        .authorities
        .iter()
        .all(|(a, _)| a.bandwidth_limit().is_none()));
    net.shutdown().await;
}
