//! Throughput smoke test of one channel (ignored by default; run in release):
//! `cargo test --release --test link_throughput -- --ignored --nocapture`.
//! Prints a figure; asserts nothing about time.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use allium::cell::consts::CELL_LEN;
use allium::link::{accept, connect, LinkAuth, LinkConfig};
use ed25519_dalek::SigningKey;
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "throughput measurement; run in release with --ignored --nocapture"]
async fn one_way_throughput() {
    const N: u64 = 1_000_000;
    let mut rng = rand::rng();
    let id = SigningKey::generate(&mut rng);
    let auth = LinkAuth::generate(
        &id,
        &mut rng,
        allium::clock::now_unix(),
        Duration::from_secs(3600),
    );
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let cfg = LinkConfig::default();
    let server_cfg = cfg.clone();
    let server = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        accept(s, &auth, &server_cfg).await.unwrap()
    });
    let c = connect(addr, &id.verifying_key(), None, &cfg)
        .await
        .unwrap();
    let mut r = server.await.unwrap();
    let start = Instant::now();
    let tx = c.sender.clone();
    tokio::spawn(async move {
        for _ in 0..N {
            tx.send_raw([3u8; CELL_LEN]).await.unwrap();
        }
    });
    for _ in 0..N {
        r.receiver.recv().await.unwrap().unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{N} cells in {secs:.2} s: {:.0} cells/s, {:.0} MB/s of cells",
        N as f64 / secs,
        (N as f64 * CELL_LEN as f64) / secs / 1e6
    );
}
