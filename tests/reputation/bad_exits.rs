//! BadExit, tried by the attacker: exit operators control their software, so two exits of
//! this network relay traffic through a connector of their own making (`MeddlingExit`),
//! one rewriting a byte of every answer and one cutting every answer short. The authority's exit checks
//! fetch known content through each exit; within a bounded number of periods both get
//! BadExit, the honest exit never does, and a client no longer exits through them: every
//! fetch arrives whole.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::net::{authority_consensus, serve_body};
use allium::client::{Client, ClientConfig};
use allium::crypto::IdentityPublic;
use allium::dir::path::{select_exit, PathTarget};
use allium::dir::{Consensus, RelayFlags};
use allium::relay::ExitConnector;
use allium::testnet::{MeddlingExit, TestNet, TestNetConfig};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PERIOD: Duration = Duration::from_secs(6);

fn bad(c: &Consensus, id: &IdentityPublic) -> bool {
    c.relay(id).is_some_and(|e| e.has(RelayFlags::BAD_EXIT))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exits_that_rewrite_or_cut_traffic_get_bad_exit_and_clients_avoid_them() {
    let rewriter: Arc<dyn ExitConnector> = Arc::new(MeddlingExit {
        flip_at: Some(1000),
        cut_after: None,
    });
    let cutter: Arc<dyn ExitConnector> = Arc::new(MeddlingExit {
        flip_at: None,
        cut_after: Some(4096),
    });
    let cfg = TestNetConfig {
        authorities: 1,
        relays: 5,
        exits: 3,
        period: PERIOD,
        // Started below, once a client's circuit goes through a meddling exit.
        check_exits: false,
        exit_connectors: vec![(0, rewriter), (1, cutter)],
        ..TestNetConfig::default()
    };
    let net = TestNet::start(&cfg).await.unwrap();
    net.wait_for_consensus(Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // A client already using the network, whose current circuit goes through a meddling
    // exit (found by fetching on fresh circuits until an answer comes back wrong; the
    // exits are not flagged yet).
    let early = Client::bootstrap(ClientConfig::new(net.authority_info.clone()))
        .await
        .unwrap();
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let addr = serve_body(body.clone()).await;
    let get = |client: Client| async move {
        let mut s = client.connect(&addr.to_string()).await.unwrap();
        s.write_all(b"GET /\r\n\r\n").await.unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got).await;
        got
    };
    let mut through_meddler = false;
    for _ in 0..20 {
        early.new_identity().await;
        if Sha256::digest(get(early.clone()).await) != Sha256::digest(&body) {
            through_meddler = true;
            break;
        }
    }
    assert!(
        through_meddler,
        "no fresh circuit went through a meddling exit"
    );
    net.start_exit_checks();
    let started = Instant::now();
    let fetch = |client: Client| {
        let body = body.clone();
        async move {
            let got = get(client).await;
            assert_eq!(got.len(), body.len(), "a fetch was cut short");
            assert_eq!(
                Sha256::digest(&got),
                Sha256::digest(&body),
                "a fetch was altered"
            );
        }
    };
    let (rewriting, cutting, honest) = (
        net.relays[0].identity(),
        net.relays[1].identity(),
        net.relays[2].identity(),
    );

    // Bounded: both caught within 6 periods of the checks' start; the honest exit is never
    // flagged in any consensus seen meanwhile.
    let deadline = started + 6 * PERIOD;
    let caught = loop {
        if let Some(c) = authority_consensus(&net) {
            assert!(!bad(&c, &honest), "the honest exit was flagged BadExit");
            if bad(&c, &rewriting) && bad(&c, &cutting) {
                break c;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the meddling exits were not both BadExit within 6 periods"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!(
        "both meddling exits BadExit {:.1} s ({:.1} periods) after the checks started",
        started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64() / PERIOD.as_secs_f64()
    );
    assert!(caught.relay(honest).unwrap().flags.usable_exit());

    // Path selection never picks them as exits again ...
    let mut rng = rand::rng();
    let target = PathTarget {
        port: 80,
        addr: None,
        proto: allium::dir::Transport::Tcp,
    };
    for _ in 0..500 {
        let e = select_exit(&caught, &target, &mut rng).unwrap();
        assert_eq!(e.identity, honest);
    }

    // ... the client that was already running stops using them once it has the new
    // consensus (its circuit through a BadExit takes no new streams) ...
    let learned = Instant::now() + 3 * PERIOD;
    loop {
        // Directory caches may still serve the previous consensus for a moment.
        let c = early.refresh_consensus().await.unwrap();
        if bad(&c, &rewriting) && bad(&c, &cutting) {
            break;
        }
        assert!(
            Instant::now() < learned,
            "the running client never learned of the BadExits"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for _ in 0..4 {
        fetch(early.clone()).await;
    }
    // ... and a new client's fetches, each on a fresh circuit, all arrive whole.
    let client = Client::bootstrap(ClientConfig::new(net.authority_info.clone()))
        .await
        .unwrap();
    assert!(bad(&client.consensus().unwrap(), &rewriting));
    for _ in 0..8 {
        client.new_identity().await;
        fetch(client.clone()).await;
    }
    assert!(!bad(&authority_consensus(&net).unwrap(), &honest));
    net.shutdown().await;
}
