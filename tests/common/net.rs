//! In-process test networks: a web server to fetch from, and the consensus an authority
//! serves.

use std::net::SocketAddr;
use std::time::Duration;

use allium::dir::{Consensus, UncheckedConsensus};
use allium::testnet::{TestNet, TestNetConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Starts the network `cfg` describes and waits for its first consensus (a bound only: it
/// usually comes within seconds).
pub async fn started(cfg: TestNetConfig) -> TestNet {
    let net = TestNet::start(&cfg).await.unwrap();
    net.wait_for_consensus(Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    net
}

/// One authority, `relays` relays of which `exits` are exits, a 6 s consensus period:
/// what most onion-service tests run on, started and with its first consensus.
pub async fn small_net(relays: usize, exits: usize) -> TestNet {
    started(TestNetConfig {
        authorities: 1,
        relays,
        exits,
        period: Duration::from_secs(6),
        ..TestNetConfig::default()
    })
    .await
}

/// A web server on 127.0.0.1 answering every connection (after its request) with `body`.
pub async fn serve_body(body: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let body = body.clone();
            tokio::spawn(async move {
                let mut req = [0u8; 1024];
                let _ = s.read(&mut req).await;
                let _ = s.write_all(&body).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// The consensus the first authority of `net` serves now, verified (None before the first).
pub fn authority_consensus(net: &TestNet) -> Option<Consensus> {
    let trusted: Vec<_> = net.authority_info.iter().map(|a| a.identity).collect();
    let authority = &net.authorities.first()?.1;
    let bytes = authority.current_consensus()?;
    let mds = authority.current_microdescs();
    UncheckedConsensus::parse(&bytes)
        .ok()?
        .verify(&trusted, allium::clock::now_unix())
        .ok()
        .map(|v| v.assemble_from(&mds))
}
