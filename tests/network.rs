//! A whole network in one process: authorities vote and publish a consensus, relays
//! publish descriptors, and a client bootstraps from it and fetches data through 3 hops.

use std::time::Duration;

use allium::client::{Client, ClientConfig};
use allium::testnet::{TestNet, TestNetConfig};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

async fn server(body: Vec<u8>) -> std::net::SocketAddr {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_authorities_publish_and_a_client_fetches_through_the_network() {
    let cfg = TestNetConfig {
        authorities: 3,
        relays: 5,
        exits: 2,
        period: Duration::from_secs(6),
    };
    let net = TestNet::start(&cfg).await.unwrap();
    assert!(
        net.wait_for_consensus(Duration::from_secs(60)).await,
        "no consensus listing every relay (listed {})",
        net.listed()
    );
    let client = Client::bootstrap(ClientConfig::new(net.authority_info.clone()))
        .await
        .unwrap();
    let consensus = client.consensus().unwrap();
    assert_eq!(consensus.signers().len(), 3);
    let body: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let addr = server(body.clone()).await;
    let mut s = client.connect(&addr.to_string()).await.unwrap();
    s.write_all(b"GET /\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    assert_eq!(Sha256::digest(&got), Sha256::digest(&body));
    net.shutdown().await;
}
