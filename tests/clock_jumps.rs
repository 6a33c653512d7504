//! Wall-clock jumps on a running network (issue 17): every node of an in-process network
//! and the client read one simulated clock, which jumps as after a suspend/resume or an
//! NTP step (the monotonic clock does not move). After each jump a fresh circuit and a
//! stream must work again within 60 s of real time, without restarting anything. And a
//! client whose own clock is wrong is told so, in words, by the error it returns.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::time::{Duration, SystemTime};

use allium::cell::TargetAddr;
use allium::client::{Client, ClientConfig, ClientError, Isolation};
use allium::clock::Clock;
use allium::testnet::{TestNet, TestNetConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// How long after a jump a fresh circuit and stream must work again.
const RECOVERY_LIMIT: Duration = Duration::from_secs(60);

async fn hello_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let _ = s.write_all(b"hello").await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// One stream to `web` on a circuit of a new isolation class (so a fresh circuit, or a
/// clean one built since the jump).
async fn fresh_stream(client: &Client, web: std::net::SocketAddr, n: u64) -> Result<(), String> {
    let iso = Isolation(format!("jump-check-{n}").into_bytes());
    let mut s = client
        .connect_target(TargetAddr::Ip(web.ip()), web.port(), &iso)
        .await
        .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut got))
        .await
        .map_err(|_| "read timed out".to_string())?
        .map_err(|e| e.to_string())?;
    if got != b"hello" {
        return Err(format!("read {got:?}"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_circuits_work_again_within_60_s_after_each_clock_jump() {
    // Real time drives the network (paused time and real sockets do not mix); the
    // simulated wall clock follows it, plus the jumps.
    let clock = Clock::simulated(SystemTime::now());
    let cfg = TestNetConfig {
        authorities: 1,
        relays: 5,
        exits: 2,
        period: Duration::from_secs(10),
        clock: clock.clone(),
        ..TestNetConfig::default()
    };
    let net = TestNet::start(&cfg).await.unwrap();
    net.wait_for_consensus(Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut ccfg = ClientConfig::new(net.authority_info.clone());
    ccfg.clock = clock.clone();
    let client = Client::bootstrap(ccfg).await.unwrap();
    let web = hello_server().await;
    let mut n = 0;
    fresh_stream(&client, web, n).await.unwrap();
    let before: Vec<u32> = client
        .circuits_by_isolation()
        .into_iter()
        .flat_map(|(_, ids)| ids)
        .collect();

    // (name, forward?, by): +3 h, +8 d, -10 min in turn.
    // +8 d outlives the 7-day link-key certificates made at start-up: the relays renew
    // theirs within 30 s of noticing, or no link handshake works again.
    let jumps = [
        ("+3 h", true, 3 * HOUR),
        ("+8 d", true, 8 * DAY),
        ("-10 min", false, Duration::from_secs(600)),
    ];
    for (name, forward, by) in jumps {
        if forward {
            clock.jump_forward(by);
        } else {
            clock.jump_back(by);
        }
        let t0 = Instant::now();
        loop {
            n += 1;
            let Err(last) = fresh_stream(&client, web, n).await else {
                break;
            };
            assert!(
                t0.elapsed() < RECOVERY_LIMIT,
                "{name}: no working circuit {} s after the jump; last error: {last}",
                RECOVERY_LIMIT.as_secs()
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        eprintln!(
            "{name}: a fresh circuit and stream work again ({} s after the jump)",
            t0.elapsed().as_secs()
        );
        let live = client.consensus().unwrap();
        assert!(
            live.is_usable(clock.now_unix()),
            "{name}: the consensus in use is live on the jumped clock"
        );
    }
    // Circuits built before the first jump took no new streams after it.
    let after: Vec<u32> = client
        .circuits_by_isolation()
        .into_iter()
        .flat_map(|(_, ids)| ids)
        .collect();
    assert!(
        !before.iter().any(|id| after.contains(id)),
        "circuits from before the jumps are still in use: {before:?} / {after:?}"
    );
    net.shutdown().await;
}

/// A client whose clock runs 3 hours ahead of the network refuses the (to it, expired)
/// consensus, and the error says why in words: three authorities, three distinct clocks,
/// agree that the client's is the wrong one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_clock_hours_ahead_is_named_as_the_problem() {
    let cfg = TestNetConfig {
        authorities: 3,
        relays: 3,
        exits: 1,
        period: Duration::from_secs(10),
        ..TestNetConfig::default()
    };
    let net = TestNet::start(&cfg).await.unwrap();
    net.wait_for_consensus(Duration::from_secs(90))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut ccfg = ClientConfig::new(net.authority_info.clone());
    let ahead = Clock::simulated(SystemTime::now());
    ahead.jump_forward(3 * HOUR);
    ccfg.clock = ahead;
    let err = Client::bootstrap(ccfg).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ClientError::NoConsensus(_)), "{msg}");
    assert!(
        msg.contains("your clock is 3 h 0 min ahead of the network (3 relays agree)"),
        "{msg}"
    );
    eprintln!("{msg}");
    net.shutdown().await;
}

/// The attacker runs the only authority a client reaches and sets its clock 3 hours back
/// (it signs a consensus that is, at the client's correct clock, long expired, and says so
/// in NETINFO). The client refuses the consensus, and one peer's clock is not enough to
/// call the client's clock wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_lying_clock_neither_passes_an_expired_consensus_nor_blames_ours() {
    let lying = Clock::simulated(SystemTime::now() - 3 * HOUR);
    let cfg = TestNetConfig {
        authorities: 1,
        relays: 3,
        exits: 1,
        period: Duration::from_secs(10),
        clock: lying,
        ..TestNetConfig::default()
    };
    let net = TestNet::start(&cfg).await.unwrap();
    net.wait_for_consensus(Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let err = Client::bootstrap(ClientConfig::new(net.authority_info.clone()))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ClientError::NoConsensus(_)), "{msg}");
    assert!(msg.contains("consensus expired"), "{msg}");
    assert!(!msg.contains("your clock"), "{msg}");
    eprintln!("{msg}");
    net.shutdown().await;
}
