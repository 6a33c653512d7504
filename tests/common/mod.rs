//! Helpers shared by the integration tests (each test binary uses a different subset; a
//! test file includes them with `mod common;`). Here: in-process relays on 127.0.0.1 and
//! circuits through them. Submodules: directory fixtures (`dir`), onion-service fixtures
//! (`onion`), prerequisites (`prereq`), networks of real processes (`procnet`), in-process
//! networks' web server and consensus (`net`), circuits driven by hand (`raw_circuit`).

// Helpers shared by the test crates: `pub` for them, no API of anyone's.
#![allow(unreachable_pub)]
#![allow(dead_code)]

pub mod dir;
pub mod documented;
pub mod net;
pub mod onion;
pub mod prereq;
pub mod procnet;
pub mod raw_circuit;
pub mod voice;

use std::time::Duration;

use allium::dir::ExitPolicy;
use allium::link::LinkConfig;
use allium::proto::{CircuitHandle, ClientChannel, ClientCircuit, RelayTarget};
use allium::relay::{self, ExitConfig, RelayConfig, RelayHandle, RelayKeys, RelayLimits};

/// Upper bound for operations that must not hang (never a speed assertion).
pub const NO_HANG: Duration = Duration::from_secs(60);

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    allium::clock::now_unix()
}

/// A relay on an ephemeral port, an exit with `exit` if given.
pub async fn start_relay_with(limits: RelayLimits, exit: Option<ExitPolicy>) -> RelayHandle {
    start_relay_limited(limits, exit, None).await
}

/// [`start_relay_with`], with a bandwidth rate limit if given.
pub async fn start_relay_limited(
    limits: RelayLimits,
    exit: Option<ExitPolicy>,
    bandwidth: Option<allium::link::BandwidthLimit>,
) -> RelayHandle {
    let config = RelayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        limits,
        exit: exit.map(ExitConfig::new),
        clock: allium::clock::Clock::system(),
        bandwidth,
        fair_queueing: true,
    };
    let keys = RelayKeys::generate(&config.clock);
    relay::start(config, keys).await.unwrap()
}

/// What a client needs to use `r` as a hop.
pub fn target(r: &RelayHandle) -> RelayTarget {
    RelayTarget {
        addr: r.local_addr(),
        identity: r.identity(),
        onion: r.keys().onion_cert().verify(now()).unwrap(),
    }
}

/// A circuit through `relays` in order, over a new channel to the first.
pub async fn build_through(relays: &[RelayHandle]) -> ClientCircuit {
    build_through_refs(&relays.iter().collect::<Vec<_>>()).await
}

/// [`build_through`] for relays that are not in one slice.
pub async fn build_through_refs(relays: &[&RelayHandle]) -> ClientCircuit {
    build_through_asking(relays, true).await
}

/// [`build_through`] asking no hop for congestion control: fixed windows.
pub async fn build_through_fixed(relays: &[RelayHandle]) -> ClientCircuit {
    build_through_asking(&relays.iter().collect::<Vec<_>>(), false).await
}

/// A circuit through `relays`, asking each hop for congestion control if `congestion`.
pub async fn build_through_asking(relays: &[&RelayHandle], congestion: bool) -> ClientCircuit {
    let chan = ClientChannel::connect(&target(relays[0]), &LinkConfig::default())
        .await
        .unwrap();
    let mut circ = ClientCircuit::create_with(&chan, &target(relays[0]), NO_HANG, congestion)
        .await
        .unwrap();
    for r in &relays[1..] {
        circ.extend(&target(r), NO_HANG).await.unwrap();
    }
    circ
}

/// A TCP echo server on 127.0.0.1 (every connection gets its bytes back); returns its
/// address.
pub async fn tcp_echo() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A UDP echo server on 127.0.0.1 (every datagram back to its sender); returns its
/// address.
pub async fn udp_echo() -> std::net::SocketAddr {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let _ = sock.send_to(&buf[..n], from).await;
        }
    });
    addr
}

/// Two relays and an exit with TCP policy `tcp` and UDP policy `udp`, relay limits
/// `limits` at each.
pub async fn udp_exit_relays(
    tcp: ExitPolicy,
    udp: ExitPolicy,
    limits: RelayLimits,
) -> Vec<RelayHandle> {
    let mut exit = ExitConfig::new(tcp);
    exit.udp_policy = udp;
    let config = RelayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        limits: limits.clone(),
        exit: Some(exit),
        clock: allium::clock::Clock::system(),
        bandwidth: None,
        fair_queueing: true,
    };
    let keys = RelayKeys::generate(&config.clock);
    vec![
        start_relay_with(limits.clone(), None).await,
        start_relay_with(limits, None).await,
        relay::start(config, keys).await.unwrap(),
    ]
}

/// [`udp_exit_relays`] and a running circuit through them.
pub async fn udp_exit_circuit(
    tcp: ExitPolicy,
    udp: ExitPolicy,
    limits: RelayLimits,
) -> (Vec<RelayHandle>, CircuitHandle) {
    let relays = udp_exit_relays(tcp, udp, limits).await;
    let circ = build_through(&relays).await;
    (relays, circ.into_handle())
}

/// Two relays and an exit with `exit_policy`, and a running circuit through them.
pub async fn exit_circuit(exit_policy: ExitPolicy) -> (Vec<RelayHandle>, CircuitHandle) {
    let relays = vec![
        start_relay_with(RelayLimits::default(), None).await,
        start_relay_with(RelayLimits::default(), None).await,
        start_relay_with(RelayLimits::default(), Some(exit_policy)).await,
    ];
    let circ = build_through(&relays).await;
    (relays, circ.into_handle())
}
