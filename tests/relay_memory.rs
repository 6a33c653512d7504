//! Memory per open circuit at a relay (in-process, real TCP on 127.0.0.1): many circuits
//! opened by CREATE stay open, idle; the process's resident memory grows by a bounded
//! amount per circuit, also after the circuits carried a burst of cells. The figures for
//! docs/PERFORMANCE.md come from `allium bench` (a relay in its own process); this test
//! keeps the per-circuit cost from creeping back up. `ALLIUM_MEM_CIRCUITS=N` changes the
//! count (e.g. to profile: `valgrind --tool=massif <test binary> --nocapture`).

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use allium::cell::chan_msg::BoundedBytes;
use allium::cell::{ChanCell, ChanMsg, Create, HandshakeType};
use allium::crypto::client_handshake_start;
use allium::link::LinkConfig;
use allium::proto::event::ClientCircEvent;
use allium::proto::event_queue::event_queue;
use allium::proto::ClientChannel;
use allium::relay::{RelayHandle, RelayLimits};

mod common;
use common::{target, NO_HANG};

/// Resident bytes of this process (Linux).
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn circuits() -> usize {
    std::env::var("ALLIUM_MEM_CIRCUITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

/// Opens `n` circuits on `relay` by raw CREATE cells (the client never finishes its side,
/// so the client keeps only a circuit-id slot per circuit) and waits until the relay
/// counts them open. Returns the channels, which keep the circuits open.
async fn open_circuits(relay: &RelayHandle, n: usize) -> Vec<Arc<ClientChannel>> {
    let t = target(relay);
    let per_channel = 2000;
    let mut chans = Vec::new();
    let before = relay
        .shared()
        .counters
        .circuits_open
        .load(Ordering::Relaxed);
    let mut left = n;
    while left > 0 {
        let k = left.min(per_channel);
        left -= k;
        let chan = ClientChannel::connect(&t, &LinkConfig::default())
            .await
            .unwrap();
        let (tx, mut rx) = event_queue::<ClientCircEvent>(64);
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        for _ in 0..k {
            let (_state, msg) =
                client_handshake_start(&mut rand::rng(), &t.identity, &t.onion, &[]).unwrap();
            let id = chan.circuits.allocate(tx.clone()).unwrap();
            let data = BoundedBytes::new(msg, "hdata").unwrap();
            let create = Create {
                htype: HandshakeType::Ntor1,
                data,
            };
            let cell = ChanCell::circuit(id, ChanMsg::Create(create)).unwrap();
            chan.sender.send(&cell).await.unwrap();
        }
        chans.push(chan);
    }
    let want = before + n as u64;
    tokio::time::timeout(NO_HANG, async {
        while relay
            .shared()
            .counters
            .circuits_open
            .load(Ordering::Relaxed)
            < want
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("all circuits open");
    chans
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_relay_circuits_cost_little_memory() {
    let limits = RelayLimits {
        circuits_per_channel: 4096,
        handshakes_per_second: 1_000_000,
        handshake_burst: 1_000_000,
        ..RelayLimits::default()
    };
    let relay = common::start_relay_with(limits, None).await;
    // Warm up: the first circuits grow tables and allocator arenas once.
    let warm = open_circuits(&relay, 500).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = circuits();
    let idle = rss();
    let chans = open_circuits(&relay, n).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let loaded = rss();
    let per = loaded.saturating_sub(idle) as f64 / n as f64;
    println!(
        "relay_memory: {n} idle circuits: RSS {:.1} -> {:.1} MiB, {:.0} B per circuit",
        idle as f64 / 1048576.0,
        loaded as f64 / 1048576.0,
        per
    );
    // ~21 KiB before the queues, tasks and crypto were slimmed (docs/PERFORMANCE.md);
    // ~4 KiB in this debug build with the client side in the same process. Generous:
    // allocator arenas make in-process RSS noisy.
    assert!(per < 8192.0, "{per:.0} bytes per idle relay circuit");
    drop((warm, chans));
}
