//! A relay listening on 0.0.0.0 learns its address from what the authorities report in
//! NETINFO, over real link handshakes on 127.0.0.1. An authority that reports a wrong
//! address (here: one that sees our connection arrive from 127.0.0.66, through a forwarder
//! bound there; to the relay this is indistinguishable from an authority writing any
//! address it likes in its NETINFO) cannot move the address unless it is a majority.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use allium::clock::Clock;
use allium::crypto::IdentityPublic;
use allium::dir::AuthorityInfo;
use allium::link::{accept, LinkAuth, LinkConfig};
use allium::relay::address_discovery::{learn_public_ip, AddressVerdict};
use ed25519_dalek::SigningKey;
use tokio::net::{TcpListener, TcpSocket};

const DAY: Duration = Duration::from_secs(86_400);

fn localhost() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

/// An authority's link responder (the part address discovery talks to), accepting for
/// ever. Returns how to name it.
async fn authority() -> AuthorityInfo {
    let mut rng = rand::rng();
    let id = SigningKey::generate(&mut rng);
    let auth = std::sync::Arc::new(LinkAuth::generate(
        &id,
        &mut rng,
        allium::clock::now_unix(),
        DAY,
    ));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            let auth = std::sync::Arc::clone(&auth);
            tokio::spawn(async move {
                let _ = accept(s, &auth, &LinkConfig::default()).await;
            });
        }
    });
    AuthorityInfo {
        identity: IdentityPublic::from_bytes(id.verifying_key().as_bytes()).unwrap(),
        addr,
    }
}

/// An authority that sees every connection arrive from `from`: a forwarder in front of a
/// real one, connecting out from that address.
async fn authority_seeing_us_as(from: IpAddr) -> AuthorityInfo {
    let real = authority().await;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut inbound, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let sock = TcpSocket::new_v4().unwrap();
                sock.bind(SocketAddr::new(from, 0)).unwrap();
                let mut out = sock.connect(real.addr).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
            });
        }
    });
    AuthorityInfo {
        identity: real.identity,
        addr,
    }
}

/// An authority nobody answers at.
async fn dead_authority() -> AuthorityInfo {
    let a = authority().await;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    AuthorityInfo { addr, ..a }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_authorities_report_the_address_we_connect_from() {
    let auths = vec![authority().await, authority().await, authority().await];
    let verdict = learn_public_ip(&auths, &Clock::system()).await;
    assert_eq!(verdict, AddressVerdict::Agreed(localhost()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_minority_cannot_move_the_address() {
    let liar: IpAddr = "127.0.0.66".parse().unwrap();
    let clock = Clock::system();

    // One liar of three: the honest majority decides.
    let auths = vec![
        authority_seeing_us_as(liar).await,
        authority().await,
        authority().await,
    ];
    assert_eq!(
        learn_public_ip(&auths, &clock).await,
        AddressVerdict::Agreed(localhost())
    );

    // One liar of three while an honest one is down: the liar and the honest one tie,
    // and the answering pair is not a majority of the three: nothing is learned.
    let auths = vec![
        authority_seeing_us_as(liar).await,
        authority().await,
        dead_authority().await,
    ];
    assert!(matches!(
        learn_public_ip(&auths, &clock).await,
        AddressVerdict::NoMajority {
            answered: 2,
            configured: 3
        }
    ));

    // The liar alone answering: one of three is no majority either.
    let auths = vec![
        authority_seeing_us_as(liar).await,
        dead_authority().await,
        dead_authority().await,
    ];
    assert!(matches!(
        learn_public_ip(&auths, &clock).await,
        AddressVerdict::NoMajority {
            answered: 1,
            configured: 3
        }
    ));

    // The threshold is the majority: two colluding authorities of three do decide (as they
    // could decide the consensus itself).
    let auths = vec![
        authority_seeing_us_as(liar).await,
        authority_seeing_us_as(liar).await,
        authority().await,
    ];
    assert_eq!(
        learn_public_ip(&auths, &clock).await,
        AddressVerdict::Agreed(liar)
    );
}
