//! Issue 23, the client puzzle under load (docs/protocol.md §8.7): a service answering two
//! introductions a second is flooded with effort-0 introductions; a client that spends
//! effort on the puzzle is answered ahead of the flood that came before it.
//! Real TCP on 127.0.0.1, a whole test network in this process.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use allium::cell::{Hostname, TargetAddr};
use allium::client::onion_service::{launch, ServiceConfig};
use allium::client::{Client, ClientConfig, Isolation};
use tokio::net::TcpListener;

const NO_HANG: Duration = Duration::from_secs(90);
/// Effort-0 introductions sent at once.
const FLOOD: usize = 24;
/// The effort the second client spends.
const VIP_EFFORT: u32 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_effort_client_is_served_first_under_a_flood() {
    let net = common::net::small_net(6, 1).await;
    // The target accepts and holds connections.
    let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_addr = target.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&held);
    tokio::spawn(async move {
        while let Ok((s, _)) = target.accept().await {
            keep.lock().unwrap().push(s);
        }
    });
    let dir = std::env::temp_dir().join(format!("allium-onion-pow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = ClientConfig::new(net.authority_info.clone());
    let service_client = Client::bootstrap(cfg.clone()).await.unwrap();
    let mut svc = ServiceConfig::new(dir.join("pow.key"), vec![(80, target_addr)]);
    svc.pow = true;
    svc.intros_per_second = 2;
    svc.intro_point_rate = 100;
    svc.intro_point_burst = 100;
    svc.max_rendezvous = 2 * FLOOD;
    svc.intro_queue_max_age = Duration::from_secs(60);
    let service = launch(service_client, svc).await.unwrap();
    assert!(service.wait_published(NO_HANG).await, "not published");
    let host = Hostname::new(&service.address().to_string()).unwrap();

    // The flood: effort 0 (the descriptor suggests 0 and this client spends no more).
    let flooder = Client::bootstrap(cfg.clone()).await.unwrap();
    let mut vip_cfg = cfg;
    vip_cfg.onion_pow_min_effort = VIP_EFFORT;
    let vip = Client::bootstrap(vip_cfg).await.unwrap();

    let t0 = Instant::now();
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..FLOOD {
        let (c, h) = (flooder.clone(), host.clone());
        flood.spawn(async move {
            let iso = Isolation(format!("flood-{i}").into_bytes());
            let r =
                tokio::time::timeout(NO_HANG, c.connect_target(TargetAddr::Hostname(h), 80, &iso))
                    .await;
            (r.is_ok_and(|r| r.is_ok()), Instant::now())
        });
    }
    // Let the flood's introductions reach the queue, then the client with effort.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let vip_start = Instant::now();
    let stream = tokio::time::timeout(
        NO_HANG,
        vip.connect_target(TargetAddr::Hostname(host), 80, &Isolation(b"vip".to_vec())),
    )
    .await
    .expect("the client with effort hung")
    .expect("the client with effort was not answered");
    let vip_done = Instant::now();
    drop(stream);
    let mut done = Vec::new();
    while let Some(r) = flood.join_next().await {
        let (ok, at) = r.unwrap();
        assert!(
            ok,
            "a flood introduction was never answered (the queue holds them all)"
        );
        done.push(at);
    }
    done.sort();
    let after_vip = done.iter().filter(|at| **at > vip_done).count();
    let secs = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64();
    eprintln!(
        "flood of {FLOOD} effort-0 introductions at 2 answered/s: answered {:.1}–{:.1} s after \
         they started (median {:.1} s); a client of effort {VIP_EFFORT} arriving 3 s in was \
         answered {:.1} s after it started, ahead of {after_vip} of the flood",
        secs(t0, done[0]),
        secs(t0, done[FLOOD - 1]),
        secs(t0, done[FLOOD / 2]),
        secs(vip_start, vip_done),
    );
    // Arriving behind about 18 waiting introductions, at the back of an arrival-order
    // queue it would be answered after all of them; first by effort, ahead of most.
    assert!(
        after_vip >= FLOOD / 3,
        "only {after_vip} of {FLOOD} flood introductions were answered after the client \
         with effort"
    );
    service.stop();
    net.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// What the puzzle costs on this machine: run with
/// `cargo test --release --test onion_pow -- --ignored --nocapture puzzle_costs`
/// (docs/PERFORMANCE.md "Client puzzle").
#[test]
#[ignore = "a measurement; run in release"]
fn puzzle_costs() {
    use allium::onion::pow::{self, PowInput};
    let identity = allium::crypto::IdentityKeypair::generate(&mut rand::rng());
    let address = allium::onion::OnionAddress::from_identity(identity.public()).unwrap();
    let period = allium::onion::PeriodParams::default()
        .period_at(1_700_000_000)
        .unwrap();
    let blinded = allium::onion::BlindedPublic::derive(&address, period).unwrap();
    let k = [7u8; 32];
    for effort in [1u32, 10, 100, 1000] {
        let mut times = Vec::new();
        let mut sols = Vec::new();
        for i in 0..10u8 {
            let x = [i; 32];
            let input = PowInput {
                seed: &k,
                blinded: &blinded,
                auth_key: &k,
                enc_key: &k,
                client_x: &x,
            };
            let t = Instant::now();
            let sol = pow::solve(&input, effort, [i; 16], u64::MAX, &|| false).unwrap();
            times.push(t.elapsed().as_secs_f64());
            sols.push((x, sol));
        }
        times.sort_by(f64::total_cmp);
        let t = Instant::now();
        for (x, sol) in &sols {
            let input = PowInput {
                seed: &k,
                blinded: &blinded,
                auth_key: &k,
                enc_key: &k,
                client_x: x,
            };
            pow::verify(&input, sol).unwrap();
        }
        let verify = t.elapsed().as_secs_f64() / sols.len() as f64;
        eprintln!(
            "effort {effort}: solve median {:.3} s (min {:.3}, max {:.3}) over 10; verify {:.0} µs",
            times[5],
            times[0],
            times[9],
            verify * 1e6
        );
    }
}
