//! Reputation from probes, tried by the attacker: a relay that answers link handshakes (so
//! the authority's reachability check passes) but refuses every circuit, the way a relay
//! that fails extensions or drops cells costs clients their circuits. The authority's
//! measurement probes go through every relay; after 4 failed probes of 8 the relay loses
//! Running and Valid (and so Stable and Guard), while the honest relays, probed the same way,
//! never lose them.

use std::time::{Duration, Instant};

use crate::common::net::authority_consensus;
use allium::dir::path::USABLE;
use allium::relay::RelayLimits;
use allium::testnet::{TestNet, TestNetConfig};

const PERIOD: Duration = Duration::from_secs(6);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_refuses_circuits_loses_running_and_honest_ones_keep_it() {
    let refusing = RelayLimits {
        circuits_per_channel: 0,
        ..RelayLimits::default()
    };
    let cfg = TestNetConfig {
        authorities: 1,
        relays: 5,
        exits: 2,
        period: PERIOD,
        measure: true,
        relay_limits: vec![None, None, None, Some(refusing)],
        ..TestNetConfig::default()
    };
    let net = TestNet::start(&cfg).await.unwrap();
    let started = Instant::now();
    // (Not `wait_for_consensus`: that asks every relay's directory cache, over a circuit
    // the refusing relay refuses.)
    let bad = net.relays[3].identity();
    let honest: Vec<_> = net
        .relays
        .iter()
        .map(|r| r.identity())
        .filter(|id| *id != bad)
        .collect();
    let deadline = started + 10 * PERIOD;
    let dropped = loop {
        if let Some(c) = authority_consensus(&net) {
            for h in &honest {
                if let Some(e) = c.relay(h) {
                    assert!(
                        e.has(USABLE),
                        "an honest relay lost its flags: {:?}",
                        e.flags
                    );
                }
            }
            if c.relay(bad).is_some_and(|e| !e.has(USABLE)) {
                break c;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the refusing relay kept Running for 10 periods"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!(
        "the refusing relay lost Running {:.1} s ({:.1} periods) after the network started: {:?}",
        started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64() / PERIOD.as_secs_f64(),
        dropped.relay(bad).unwrap().flags
    );
    // The honest relays are measured (the probes that failed the refusing relay work for
    // them), and still usable; the refusing one never is.
    assert!(!dropped.relay(bad).unwrap().measured);
    for h in &honest {
        let e = dropped.relay(h).unwrap();
        assert!(e.has(USABLE) && e.measured, "{:?}", e.flags);
    }
    net.shutdown().await;
}
