//! A relay under a flood of 10,000 CREATE cells keeps serving an existing circuit, refuses
//! the excess cleanly (rate and circuit limits), and its memory stays bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use allium::cell::chan_msg::BoundedBytes;
use allium::cell::relay_contexts::AtClient;
use allium::cell::relay_msg::Begin;
use allium::cell::{
    ChanCell, ChanMsg, CircId, Create, EndReason, HandshakeType, RelayCell, RelayMsg, StreamId,
    TargetAddr,
};
use allium::crypto::client_handshake_start;
use allium::link::LinkConfig;
use allium::proto::{ClientChannel, ClientCircuit};
use allium::relay::{self, RelayConfig, RelayKeys, RelayLimits};

mod common;
use common::{target, NO_HANG};

/// Resident set size of this process (relay and test share it), in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_flood_is_refused_and_existing_circuits_keep_working() {
    let relay = relay::start(
        RelayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            limits: RelayLimits::default(),
            exit: None,
            clock: allium::clock::Clock::system(),
            bandwidth: None,
            fair_queueing: true,
        },
        RelayKeys::generate(&allium::clock::Clock::system()),
    )
    .await
    .unwrap();
    let t = target(&relay);

    // An honest circuit, on its own channel.
    let honest_chan = ClientChannel::connect(&t, &LinkConfig::default())
        .await
        .unwrap();
    let mut honest = ClientCircuit::create(&honest_chan, &t, NO_HANG)
        .await
        .unwrap();
    let rss_before = rss_kib();

    // The flood: 10,000 CREATE cells with real, distinct handshakes on one channel (the
    // relay refuses a repeated handshake message as a replay without doing the work, so
    // every message is new to make it do the full work for each).
    let flood_chan = ClientChannel::connect(&t, &LinkConfig::default())
        .await
        .unwrap();
    let msgs: Vec<Vec<u8>> = (0..10_000)
        .map(|_| {
            client_handshake_start(&mut rand::rng(), &t.identity, &t.onion, &[])
                .unwrap()
                .1
        })
        .collect();
    let flood = {
        let sender = flood_chan.sender.clone();
        tokio::spawn(async move {
            for i in 0..10_000u32 {
                let id = CircId::new(0x8000_0001 + i).unwrap();
                let create = ChanMsg::Create(Create {
                    htype: HandshakeType::Ntor1,
                    data: BoundedBytes::new(msgs[i as usize % msgs.len()].clone(), "h").unwrap(),
                });
                if sender
                    .send(&ChanCell::circuit(id, create).unwrap())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        })
    };

    // While the flood runs, the honest circuit keeps getting answers.
    let mut answered = 0;
    let mut rss_during = 0;
    for stream in 1..=50u16 {
        let begin = Begin::new(TargetAddr::Ip("127.0.0.1".parse().unwrap()), 80).unwrap();
        honest
            .send(
                0,
                RelayCell::new(StreamId::new(stream), RelayMsg::Begin(begin)).unwrap(),
            )
            .await
            .unwrap();
        let (_, cell, _) = tokio::time::timeout(NO_HANG, honest.recv())
            .await
            .expect("the honest circuit must be served during the flood")
            .unwrap();
        assert_eq!(cell.msg(), &AtClient::End(EndReason::ExitPolicy));
        answered += 1;
        rss_during = rss_during.max(rss_kib());
    }
    tokio::time::timeout(NO_HANG, flood).await.unwrap().unwrap();
    let c = &relay.shared().counters;
    // Wait until the relay has answered every CREATE (created or refused), however slow
    // this build is.
    let answered_all = async {
        loop {
            let total = c.circuits_created.load(Ordering::Relaxed)
                + c.refused_handshake_rate.load(Ordering::Relaxed)
                + c.refused_circuit_limit.load(Ordering::Relaxed)
                + c.refused_replay.load(Ordering::Relaxed);
            if total >= 10_001 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(NO_HANG, answered_all)
        .await
        .expect("the relay must answer every CREATE");
    let rss_after = rss_kib();

    let created = c.circuits_created.load(Ordering::Relaxed);
    let refused_rate = c.refused_handshake_rate.load(Ordering::Relaxed);
    let refused_limit = c.refused_circuit_limit.load(Ordering::Relaxed);
    println!(
        "flood: created {created}, refused by rate {refused_rate}, by circuit limit {refused_limit}; \
         RSS before {rss_before} KiB, during {rss_during} KiB, after {rss_after} KiB"
    );
    assert_eq!(answered, 50);
    // The handshake rate limit (burst 4000) and the per-channel circuit limit (4096) both
    // cap what the flood obtains.
    assert!(created <= 4097, "created {created}");
    assert_eq!(created + refused_rate + refused_limit, 10_001);
    assert_eq!(c.refused_replay.load(Ordering::Relaxed), 0);
    // Bounded memory: thousands of circuits cost a few MiB, not hundreds.
    assert!(
        rss_during < rss_before + 200 * 1024,
        "RSS grew by {} KiB",
        rss_during - rss_before
    );
}
