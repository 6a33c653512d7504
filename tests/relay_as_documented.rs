//! "The docs are the test": a relay started from docs/examples/relay.toml, changing only
//! its port (listen stays on 0.0.0.0, `advertise` stays commented out), its data directory,
//! the authority's identity and address and the metrics listener, is listed in the next
//! consensus with its real address, learned from the authority; and its self-test says so
//! in its log and its metrics. Real `allium` processes on 127.0.0.1, no root needed.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::documented;
use common::procnet::{self, ProcNet};

/// Bound for each step (never a speed assertion: only so a broken relay fails, not hangs).
const BOUND: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_configured_as_documented_is_listed_at_its_learned_address() {
    // One process authority (and one other relay, for the self-test's circuit) from the
    // emitted test network; the relay under test from the documented example.
    let dir = procnet::emit("documented", 1, 3, 1, 6);
    for f in ["relay-2.toml", "relay-3.toml", "proxy.toml"] {
        std::fs::remove_file(dir.join(f)).unwrap();
    }
    let authorities: Vec<_> = ProcNet::open(&dir)
        .authorities
        .iter()
        .map(|a| (a.identity, a.addr))
        .collect();
    let port = procnet::free_port();
    let text = documented::relay(port, &dir.join("relay-doc"), &authorities);
    assert!(text.contains(&format!("listen = \"0.0.0.0:{port}\"")));
    assert!(
        text.contains("# advertise = "),
        "advertise stays commented out"
    );
    let text = documented::with_metrics(&text, "127.0.0.1:0");
    std::fs::write(dir.join("relay-doc.toml"), text).unwrap();

    let mut net = ProcNet::open(&dir);
    net.start("authority-1");
    net.start("relay-1");
    net.start("relay-doc");
    let id = net.node("relay-doc").identity.unwrap();
    let want: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    let listed = net
        .wait_for_consensus_where(BOUND, |c| {
            c.relay(id).is_some_and(|e| e.addrs == vec![want])
        })
        .await;
    if listed.is_none() {
        net.dump_logs();
        panic!("the documented relay is not listed at {want}");
    }
    let log = net.log("relay-doc");
    assert!(
        log.contains(&format!("advertising {want}")),
        "the relay says which address it learned"
    );
    assert!(
        !log.contains("unspecified address"),
        "the relay never published 0.0.0.0"
    );

    let line = format!("relay: self-test: reachable at {want} and listed in the consensus");
    if !net.wait_for_log("relay-doc", &line, BOUND).await {
        net.dump_logs();
        panic!("no self-test line {line:?}");
    }
    for metric in [
        "allium_relay_self_test_reachable",
        "allium_relay_listed",
        "allium_relay_descriptor_accepted",
    ] {
        assert_eq!(net.metric("relay-doc", metric).await, Some(1.0), "{metric}");
    }
    // What an operator following the guide would see.
    eprintln!("--- relay-doc log:\n{}", net.log("relay-doc"));
    net.finish().await;
}

/// The same relay with `advertise` (the example's commented line, enabled) naming a port
/// nothing listens on, as after a wrong port forwarding: the self-test says it is not
/// reachable there, and the metric says 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_advertising_a_closed_port_says_it_is_not_reachable() {
    let dir = procnet::emit("documented-closed", 1, 3, 1, 6);
    for f in ["relay-1.toml", "relay-2.toml", "relay-3.toml", "proxy.toml"] {
        std::fs::remove_file(dir.join(f)).unwrap();
    }
    let authorities: Vec<_> = ProcNet::open(&dir)
        .authorities
        .iter()
        .map(|a| (a.identity, a.addr))
        .collect();
    let port = procnet::free_port();
    let closed = procnet::free_port();
    let text = documented::relay(port, &dir.join("relay-doc"), &authorities);
    let line = text
        .lines()
        .find(|l| l.starts_with("# advertise = "))
        .unwrap()
        .to_string();
    let text =
        documented::replace_line(&text, &line, &format!("advertise = \"127.0.0.1:{closed}\""));
    let text = documented::with_metrics(&text, "127.0.0.1:0");
    std::fs::write(dir.join("relay-doc.toml"), text).unwrap();

    let mut net = ProcNet::open(&dir);
    net.start("authority-1");
    net.start("relay-doc");
    let want = format!("relay: self-test: not reachable at 127.0.0.1:{closed} (");
    if !net.wait_for_log("relay-doc", &want, BOUND).await {
        net.dump_logs();
        panic!("no self-test line {want:?}");
    }
    assert_eq!(
        net.metric("relay-doc", "allium_relay_self_test_reachable")
            .await,
        Some(0.0)
    );
    assert_eq!(
        net.metric("relay-doc", "allium_relay_listed").await,
        Some(0.0)
    );
    eprintln!("--- relay-doc log:\n{}", net.log("relay-doc"));
    net.finish().await;
}
