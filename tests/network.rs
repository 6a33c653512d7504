//! A whole network in one process: authorities vote and publish a consensus, relays
//! publish descriptors, and a client bootstraps from it and fetches data through 3 hops.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

mod common;

use std::time::Duration;

use allium::client::{Client, ClientConfig};
use allium::testnet::{TestNet, TestNetConfig};
use common::net::serve_body;
use common::prereq;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_authorities_publish_and_a_client_fetches_through_the_network() {
    let cfg = TestNetConfig {
        authorities: 3,
        relays: 5,
        exits: 2,
        period: Duration::from_secs(6),
        ..TestNetConfig::default()
    };
    let net = TestNet::start(&cfg).await.unwrap();
    net.wait_for_consensus(Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let client = Client::bootstrap(ClientConfig::new(net.authority_info.clone()))
        .await
        .unwrap();
    let consensus = client.consensus().unwrap();
    assert_eq!(consensus.signers().len(), 3);
    let body: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let addr = serve_body(body.clone()).await;
    let mut s = client.connect(&addr.to_string()).await.unwrap();
    s.write_all(b"GET /\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    assert_eq!(Sha256::digest(&got), Sha256::digest(&body));
    net.shutdown().await;
}

/// The full user path: the SOCKS proxy in front of a bootstrapped client, used by the real
/// curl. 50 MB arrive byte-identical; two SOCKS usernames get two different circuits; once
/// every authority is gone the client still refreshes its consensus from a guard's cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_the_socks_proxy_with_isolation_and_guard_directory() {
    use allium::client::socks_server::{serve_socks, Connector, ProxyConfig};
    use std::sync::Arc;
    if !prereq::require(&[prereq::curl()]) {
        return;
    }
    let cfg = TestNetConfig {
        authorities: 1,
        relays: 5,
        exits: 2,
        period: Duration::from_secs(6),
        ..TestNetConfig::default()
    };
    let net = TestNet::start(&cfg).await.unwrap();
    net.wait_for_consensus(Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut ccfg = ClientConfig::new(net.authority_info.clone());
    let dir = std::env::temp_dir().join(format!("allium-net-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    ccfg.data_dir = Some(dir.clone());
    let client = Client::bootstrap(ccfg).await.unwrap();
    const SIZE: usize = 50_000_000;
    let body: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    let web = allium::cli::demo_server::start().await.unwrap();
    let socks = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let socks_addr = socks.local_addr().unwrap();
    let connector: Arc<dyn Connector> = Arc::new(client.clone());
    tokio::spawn(serve_socks(
        socks,
        0,
        connector,
        ProxyConfig::default(),
        std::future::pending(),
    ));
    let out_file = dir.join("download");
    for user in ["alice", "bob"] {
        let status = tokio::process::Command::new("curl")
            .env_remove("http_proxy")
            .env_remove("all_proxy")
            .args(["-s", "--max-time", "120", "-o"])
            .arg(&out_file)
            .arg("--proxy")
            .arg(format!("socks5h://{user}:pw@{socks_addr}"))
            .arg(format!("http://localhost:{}/bytes/{SIZE}", web.port()))
            .status()
            .await
            .unwrap();
        assert!(status.success(), "curl as {user}: {status}");
        let got = std::fs::read(&out_file).unwrap();
        assert_eq!(got.len(), SIZE);
        assert!(
            Sha256::digest(&got) == Sha256::digest(&body),
            "corrupted download"
        );
    }
    let classes = client.circuits_by_isolation();
    assert_eq!(classes.len(), 2, "one isolation class per SOCKS user");
    let (a, b) = (&classes[0].1, &classes[1].1);
    assert!(!a.is_empty() && !b.is_empty());
    assert!(a.iter().all(|id| !b.contains(id)), "users shared a circuit");

    // Every authority gone: the guard's directory cache still serves the consensus.
    let authorities: Vec<_> = net
        .authorities
        .iter()
        .map(|(r, _)| r.local_addr())
        .collect();
    let TestNet {
        authorities: auths,
        relays,
        ..
    } = net;
    for (r, _) in auths {
        r.shutdown().await;
    }
    for a in authorities {
        assert!(tokio::net::TcpStream::connect(a).await.is_err());
    }
    // Without the disk cache, only a guard's directory cache can answer now. (It may hold
    // an earlier consensus than the authorities' last one: any live, verified one will do.)
    std::fs::remove_file(dir.join("consensus")).unwrap();
    let c = client.refresh_consensus().await.unwrap();
    assert!(!c.relays().is_empty());
    for r in relays {
        r.shutdown().await;
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Exits advertise their UDP policy through descriptor, vote, consensus and
/// microdescriptor: a test network's exits allow UDP (loopback included) unless listed in
/// `exits_without_udp`, whose exit publishes none and so never ends a UDP path, while it
/// still serves TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exits_advertise_their_udp_policy_and_udp_paths_avoid_exits_without_one() {
    use allium::dir::path::select_exit;
    use allium::dir::{ExitPolicy, PathTarget};
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    let cfg = TestNetConfig {
        authorities: 1,
        relays: 4,
        exits: 2,
        exits_without_udp: vec![1],
        period: Duration::from_secs(6),
        ..TestNetConfig::default()
    };
    let net = TestNet::start(&cfg).await.unwrap();
    let c = net
        .wait_for_consensus(Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<_> = net.relays.iter().map(|r| r.identity()).collect();
    let entry = |i: usize| c.relay(ids[i]).expect("listed and assembled");
    let loopback = ExitPolicy::default_exit_allow_loopback();
    assert_eq!(entry(0).udp_policy, loopback);
    assert_eq!(entry(1).udp_policy, ExitPolicy::reject_all());
    assert_eq!(entry(1).exit_policy, loopback, "still a TCP exit");
    for i in 2..4 {
        assert_eq!(
            entry(i).udp_policy,
            ExitPolicy::reject_all(),
            "non-exit {i}"
        );
    }
    let mut rng = StdRng::seed_from_u64(5);
    let udp = PathTarget::udp(5353, Some("127.0.0.1".parse().unwrap()));
    let tcp = PathTarget::tcp(5353, Some("127.0.0.1".parse().unwrap()));
    let mut tcp_exits = std::collections::HashSet::new();
    for _ in 0..64 {
        let exit = select_exit(&c, &udp, &mut rng).unwrap();
        assert!(
            ids[0] == exit.identity,
            "a UDP path ended at an exit without UDP"
        );
        tcp_exits.insert(select_exit(&c, &tcp, &mut rng).unwrap().identity);
    }
    assert_eq!(tcp_exits.len(), 2, "both exits carry TCP");
    net.shutdown().await;
}
