//! Onion services end to end (issue 10), over real TCP on 127.0.0.1 with an in-process
//! test network:
//! * curl through the SOCKS proxy (socks5h) to `http://<address>.allium/bytes/10000000`
//!   fetches 10 MB byte-identical;
//! * the introduction and rendezvous relays (their observers) never see the visitor's or
//!   the service's connections as the previous hop of an introduction or rendezvous
//!   circuit, while first hops do see them (so the check can fail);
//! * a mistyped address fails with the checksum error, and SOCKS answers "host
//!   unreachable";
//! * a restarted service (same key file) keeps its address and is reachable again;
//! * a service that requires a client puzzle is reached (the client solves it), and it
//!   closes idle rendezvous circuits; one left with a quiet stream open is closed only
//!   when all rendezvous slots are in use, otherwise the stream lives on;
//! * a rendezvous stream the client gives up, or whose circuit is cut, reaches the local
//!   target as a TCP reset; one it closes normally as a FIN;
//! * forged, expired, rolled-back and foreign descriptors are refused by the client's
//!   verification (unit level, real descriptors).

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use allium::cell::CircId;
use allium::client::onion_connect::{verify_descriptor, DESCRIPTOR_SKEW};
use allium::client::onion_service::{launch, ServiceConfig};
use allium::client::socks_server::{serve_socks, Connector, ProxyConfig};
use allium::client::{Client, ClientConfig};
use allium::onion::descriptor::{DescriptorParams, SignedOnionDescriptor};
use allium::onion::{BlindedKeypair, OnionAddress, PeriodParams};
use allium::relay::RelayObserver;
use allium::testnet::TestNet;
use common::prereq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

mod common;

/// Upper bound for steps that must not hang (never a speed assertion).
const NO_HANG: Duration = Duration::from_secs(90);
const BIG: usize = 10_000_000;

/// The previous hops an introduction or rendezvous point saw on its onion circuits, and
/// every inbound TCP peer of the relay.
#[derive(Debug, Default)]
struct Seen {
    inbound: Mutex<Vec<SocketAddr>>,
    intro_peers: Mutex<Vec<SocketAddr>>,
    rend_peers: Mutex<Vec<SocketAddr>>,
    joined: Mutex<usize>,
    introductions: Mutex<usize>,
    established: Mutex<usize>,
}

impl Seen {
    fn established(&self) -> usize {
        *self.established.lock().unwrap()
    }
}

impl RelayObserver for Seen {
    fn inbound_channel(&self, peer: SocketAddr) {
        self.inbound.lock().unwrap().push(peer);
    }
    fn intro_established(&self, _: CircId, peer: SocketAddr) {
        *self.established.lock().unwrap() += 1;
        self.intro_peers.lock().unwrap().push(peer);
    }
    fn introduction_forwarded(
        &self,
        _: CircId,
        client: SocketAddr,
        _: CircId,
        service: SocketAddr,
    ) {
        *self.introductions.lock().unwrap() += 1;
        self.intro_peers.lock().unwrap().extend([client, service]);
    }
    fn rendezvous_established(&self, _: CircId, peer: SocketAddr) {
        self.rend_peers.lock().unwrap().push(peer);
    }
    fn rendezvous_joined(&self, _: CircId, client: SocketAddr, _: CircId, service: SocketAddr) {
        *self.joined.lock().unwrap() += 1;
        self.rend_peers.lock().unwrap().extend([client, service]);
    }
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("allium-onion-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

async fn curl(socks: SocketAddr, url: &str, out: &std::path::Path) -> std::process::Output {
    tokio::process::Command::new("curl")
        .args(["-s", "-S", "--max-time", "80", "--socks5-hostname"])
        .arg(socks.to_string())
        .arg(url)
        .arg("-o")
        .arg(out)
        .output()
        .await
        .unwrap()
}

/// A SOCKS5 request for `host:port` (no auth); returns the reply code.
async fn socks5_reply(proxy: SocketAddr, host: &str, port: u16) -> u8 {
    let mut s = tokio::net::TcpStream::connect(proxy).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut m = [0u8; 2];
    s.read_exact(&mut m).await.unwrap();
    let mut req = vec![5, 1, 0, 3, host.len() as u8];
    req.extend_from_slice(host.as_bytes());
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).await.unwrap();
    let mut reply = [0u8; 2];
    s.read_exact(&mut reply).await.unwrap();
    reply[1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onion_service_end_to_end() {
    if !prereq::require(&[prereq::curl()]) {
        return;
    }
    let started = Instant::now();
    let net = common::net::small_net(6, 1).await;
    let seen: Vec<Arc<Seen>> = net
        .relays
        .iter()
        .map(|r| {
            let s = Arc::new(Seen::default());
            r.set_observer(Arc::clone(&s) as Arc<dyn RelayObserver>)
                .unwrap();
            s
        })
        .collect();
    eprintln!("network up in {:?}", started.elapsed());

    // The service, on its own client, in front of the demo web server.
    let web = allium::cli::demo_server::start().await.unwrap();
    let dir = temp_dir("svc");
    let key_file = dir.join("service.key");
    let mut cfg = ClientConfig::new(net.authority_info.clone());
    cfg.prebuilt_circuits = 1;
    let service_client = Client::bootstrap(cfg.clone()).await.unwrap();
    let service = launch(
        service_client.clone(),
        ServiceConfig::new(key_file.clone(), vec![(80, web)]),
    )
    .await
    .unwrap();
    let address = *service.address();
    assert!(
        service.wait_published(NO_HANG).await,
        "descriptor not published"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "key file mode {mode:o}");
    }
    eprintln!("service published after {:?}", started.elapsed());

    // The visitor: another client behind a SOCKS listener.
    let visitor = Client::bootstrap(cfg).await.unwrap();
    let socks = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let socks_addr = socks.local_addr().unwrap();
    let connector: Arc<dyn Connector> = Arc::new(visitor.clone());
    tokio::spawn(serve_socks(
        socks,
        0,
        connector,
        ProxyConfig::default(),
        std::future::pending::<()>(),
    ));

    // 10 MB through curl, byte-identical.
    let out = dir.join("big");
    let t = Instant::now();
    let r = curl(socks_addr, &format!("http://{address}/bytes/{BIG}"), &out).await;
    assert!(r.status.success(), "curl failed: {r:?}");
    let body = std::fs::read(&out).unwrap();
    let elapsed = t.elapsed();
    assert_eq!(body.len(), BIG);
    assert!(
        body.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8),
        "the body differs from what the web server sent"
    );
    eprintln!(
        "10 MB via the onion service: byte-identical, {:?} ({:.1} MB/s, connection included)",
        elapsed,
        BIG as f64 / elapsed.as_secs_f64() / 1e6
    );
    // A second fetch reuses the rendezvous circuit (no new introduction).
    let intros_before: usize = seen.iter().map(|s| *s.introductions.lock().unwrap()).sum();
    let small = dir.join("small");
    let r = curl(socks_addr, &format!("http://{address}/"), &small).await;
    assert!(r.status.success(), "{r:?}");
    let intros_after: usize = seen.iter().map(|s| *s.introductions.lock().unwrap()).sum();
    assert_eq!(
        intros_before, intros_after,
        "the rendezvous circuit was not reused"
    );
    assert!(String::from_utf8_lossy(&std::fs::read(&small).unwrap()).contains("allium"));

    // Neither end's connections are ever the previous hop of an introduction or
    // rendezvous circuit; first hops do see them (the check can fail).
    let mut ends = visitor.channel_local_addrs();
    ends.extend(service_client.channel_local_addrs());
    assert!(!ends.is_empty());
    let (mut intro_events, mut rend_events, mut joined) = (0, 0, 0);
    for s in &seen {
        for p in s.intro_peers.lock().unwrap().iter() {
            assert!(
                !ends.contains(p),
                "an introduction point saw an end's connection"
            );
            intro_events += 1;
        }
        for p in s.rend_peers.lock().unwrap().iter() {
            assert!(
                !ends.contains(p),
                "a rendezvous point saw an end's connection"
            );
            rend_events += 1;
        }
        joined += *s.joined.lock().unwrap();
    }
    assert!(
        intro_events >= 3,
        "introduction points observed: {intro_events}"
    );
    assert!(joined >= 1, "no rendezvous was joined");
    let first_hops_saw = seen
        .iter()
        .flat_map(|s| s.inbound.lock().unwrap().clone())
        .filter(|p| ends.contains(p))
        .count();
    assert!(
        first_hops_saw > 0,
        "control: no relay saw an end's connection at all"
    );
    eprintln!(
        "observers: {intro_events} introduction-point peers, {rend_events} rendezvous-point \
         peers, {joined} joins; none is one of the {} end connections (first hops saw {first_hops_saw})",
        ends.len()
    );

    // A mistyped address: the checksum error, and "host unreachable" over SOCKS.
    let text = address.to_string();
    let mut chars: Vec<char> = text.chars().collect();
    chars[10] = if chars[10] == 'a' { 'b' } else { 'a' };
    let typo: String = chars.into_iter().collect();
    let err = visitor.connect(&format!("{typo}:80")).await.unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
    assert_eq!(socks5_reply(socks_addr, &typo, 80).await, 4);
    eprintln!("mistyped address: {err}");

    // A port the service does not serve is refused by the service (END).
    let err = visitor.connect(&format!("{address}:81")).await.unwrap_err();
    assert!(err.to_string().contains("ExitPolicy"), "{err}");
    eprintln!("port 81 refused by the service: {err}");

    // Restart with the same key file: same address, reachable again (from a new
    // isolation class, so a new introduction and rendezvous happen).
    service.stop();
    let established_before: usize = seen.iter().map(|s| s.established()).sum();
    let forwarded_before: usize = seen.iter().map(|s| *s.introductions.lock().unwrap()).sum();
    let service = launch(
        service_client.clone(),
        ServiceConfig::new(key_file.clone(), vec![(80, web)]),
    )
    .await
    .unwrap();
    assert_eq!(
        *service.address(),
        address,
        "the address changed on restart"
    );
    assert!(service.wait_published(NO_HANG).await);
    let t = Instant::now();
    let iso = allium::client::Isolation(b"after-restart".to_vec());
    let mut stream = tokio::time::timeout(
        NO_HANG,
        visitor.connect_target(
            allium::cell::TargetAddr::Hostname(
                allium::cell::Hostname::new(&address.to_string()).unwrap(),
            ),
            80,
            &iso,
        ),
    )
    .await
    .unwrap()
    .unwrap();
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut page = Vec::new();
    tokio::time::timeout(NO_HANG, stream.read_to_end(&mut page))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&page).contains("allium test network"));
    let established_after: usize = seen.iter().map(|s| s.established()).sum();
    let forwarded_after: usize = seen.iter().map(|s| *s.introductions.lock().unwrap()).sum();
    // The restarted instance established its own introduction points, and a new
    // introduction went through one of them.
    assert!(established_after > established_before);
    assert!(forwarded_after > forwarded_before);
    eprintln!(
        "restarted service (same address) reachable again in {:?}: {} new introduction \
         points, {} new introductions",
        t.elapsed(),
        established_after - established_before,
        forwarded_after - forwarded_before
    );
    service.stop();

    // A service with a client puzzle suggesting effort 50: the client solves it (the
    // descriptor carries the seed and the effort) and gets through.
    let mut pow_cfg = ServiceConfig::new(dir.join("pow.key"), vec![(80, web)]);
    pow_cfg.pow = true;
    pow_cfg.pow_initial_effort = 50;
    pow_cfg.rendezvous_idle = Duration::from_secs(2);
    let pow_service = launch(service_client.clone(), pow_cfg).await.unwrap();
    assert!(pow_service.wait_published(NO_HANG).await);
    let t = Instant::now();
    let r = curl(
        socks_addr,
        &format!("http://{}/", pow_service.address()),
        &small,
    )
    .await;
    assert!(r.status.success(), "{r:?}");
    assert!(String::from_utf8_lossy(&std::fs::read(&small).unwrap()).contains("allium"));
    eprintln!(
        "service suggesting puzzle effort 50 reached in {:?}",
        t.elapsed()
    );
    // That service closes rendezvous circuits idle for 2 s: the next fetch needs a new
    // introduction (the client's kept circuit is gone).
    let before: usize = seen.iter().map(|s| *s.introductions.lock().unwrap()).sum();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let r = curl(
        socks_addr,
        &format!("http://{}/", pow_service.address()),
        &small,
    )
    .await;
    assert!(r.status.success(), "{r:?}");
    let after: usize = seen.iter().map(|s| *s.introductions.lock().unwrap()).sum();
    assert!(after > before, "the idle rendezvous circuit was not closed");
    eprintln!("idle rendezvous circuit closed by the service; the next fetch introduced again");
    pow_service.stop();
    net.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("total {:?}", started.elapsed());
}

/// A test network, a silent local target whose accepted connections are handed to the
/// test, a service in front of it (idle time 2 s, `max_rendezvous` slots) and a visitor.
struct QuietSetup {
    net: TestNet,
    service: allium::client::onion_service::OnionService,
    visitor: Client,
    held: tokio::sync::mpsc::UnboundedReceiver<tokio::net::TcpStream>,
    dir: std::path::PathBuf,
}

async fn quiet_setup(tag: &str, max_rendezvous: usize) -> QuietSetup {
    let net = common::net::small_net(6, 1).await;
    let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_addr = target.local_addr().unwrap();
    let (held_tx, held) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = target.accept().await {
            if held_tx.send(s).is_err() {
                break;
            }
        }
    });
    let dir = temp_dir(tag);
    let mut cfg = ClientConfig::new(net.authority_info.clone());
    cfg.prebuilt_circuits = 1;
    let service_client = Client::bootstrap(cfg.clone()).await.unwrap();
    let mut svc_cfg = ServiceConfig::new(dir.join("idle.key"), vec![(80, target_addr)]);
    svc_cfg.rendezvous_idle = IDLE;
    svc_cfg.max_rendezvous = max_rendezvous;
    let service = launch(service_client, svc_cfg).await.unwrap();
    assert!(service.wait_published(NO_HANG).await, "not published");
    let visitor = Client::bootstrap(cfg).await.unwrap();
    QuietSetup {
        net,
        service,
        visitor,
        held,
        dir,
    }
}

/// The rendezvous idle time of [`quiet_setup`]'s service.
const IDLE: Duration = Duration::from_secs(2);

impl QuietSetup {
    /// Opens a stream to the service in isolation class `iso`, checks it works both ways
    /// and returns it with the target's end of it.
    async fn open(&mut self, iso: &[u8]) -> (allium::client::DataStream, tokio::net::TcpStream) {
        let host = allium::cell::Hostname::new(&self.service.address().to_string()).unwrap();
        let mut stream = tokio::time::timeout(
            NO_HANG,
            self.visitor.connect_target(
                allium::cell::TargetAddr::Hostname(host),
                80,
                &allium::client::Isolation(iso.to_vec()),
            ),
        )
        .await
        .expect("connecting hung")
        .expect("connecting failed");
        let mut held = tokio::time::timeout(NO_HANG, self.held.recv())
            .await
            .expect("the service never connected to the target")
            .unwrap();
        ping_pong(&mut stream, &mut held).await;
        (stream, held)
    }

    async fn shutdown(self) {
        self.service.stop();
        self.net.shutdown().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One message each way on an open stream.
async fn ping_pong(stream: &mut allium::client::DataStream, held: &mut tokio::net::TcpStream) {
    stream.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(NO_HANG, held.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"ping");
    held.write_all(b"pong").await.unwrap();
    tokio::time::timeout(NO_HANG, stream.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"pong");
}

/// Waits (bounded) until the service closed the quiet stream: the target's connection and
/// the client's stream both end.
async fn assert_closed_by_service(
    stream: &mut allium::client::DataStream,
    held: &mut tokio::net::TcpStream,
) {
    let mut rest = [0u8; 16];
    let n = tokio::time::timeout(NO_HANG, held.read(&mut rest))
        .await
        .expect("the service kept an idle stream (and its rendezvous circuit) open")
        .unwrap_or(0);
    assert_eq!(n, 0, "unexpected data from the client");
    let r = tokio::time::timeout(NO_HANG, stream.read(&mut rest))
        .await
        .expect("the client's stream stayed open after the service closed the circuit");
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
}

/// Under pressure (every rendezvous slot in use: the service allows one, and this client
/// holds it), a client that keeps a stream open without sending anything does not hold
/// the slot forever: once idle for the service's idle time (2 s here) the circuit is
/// closed and the stream with it, so both the target's connection and the client's
/// stream end. (Bounded waits only; before the fix an open stream disabled the idle timer
/// and both waits ran out.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_stream_and_rendezvous_circuit_are_closed_by_the_service() {
    let mut t = quiet_setup("idle", 1).await;
    let (mut stream, mut held) = t.open(b"idle").await;
    // Then silence on both sides, the stream left open: the service closes it.
    assert_closed_by_service(&mut stream, &mut held).await;
    eprintln!("idle stream and rendezvous circuit closed by the service (no slot free)");
    t.shutdown().await;
}

/// With rendezvous slots free, a quiet stream is not cut: it is still open and working
/// after three times the idle time. Once another client takes the last slot, the service
/// is under pressure and the quiet circuit (idle past its time) makes room, while the
/// newcomer's stream works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_stream_lives_on_until_the_service_needs_its_slot() {
    let mut t = quiet_setup("quiet", 2).await;
    let (mut stream, mut held) = t.open(b"first").await;
    // Silence for 3 × the idle time: nothing arrives, nothing closes.
    let mut rest = [0u8; 16];
    let r = tokio::time::timeout(3 * IDLE, held.read(&mut rest)).await;
    assert!(
        r.is_err(),
        "the quiet stream was closed with slots free: {r:?}"
    );
    ping_pong(&mut stream, &mut held).await;
    eprintln!("a quiet stream outlived 3 x the idle time with slots free");
    // Quiet again past the idle time, then a second client takes the last slot.
    tokio::time::sleep(IDLE + IDLE / 2).await;
    let (mut second, mut second_held) = t.open(b"second").await;
    assert_closed_by_service(&mut stream, &mut held).await;
    ping_pong(&mut second, &mut second_held).await;
    eprintln!("under pressure the quiet circuit made room; the newcomer's stream works");
    t.shutdown().await;
}

/// Truncation is visible at the service's end too (issue 15, item 4): the local target's
/// connection gets a FIN only when the client ends its stream with END(DONE); a stream the
/// client gives up (END with another reason) or whose rendezvous circuit is cut (here:
/// every relay goes away) reaches the target as a TCP reset, not a clean-looking EOF.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_rendezvous_stream_resets_the_target_connection() {
    let mut t = quiet_setup("cut", 4).await;
    let mut rest = [0u8; 16];
    let ending = |r: std::io::Result<usize>| r.map_err(|e| e.kind());

    let (mut clean, mut held) = t.open(b"cut").await;
    clean.shutdown().await.unwrap();
    let r = tokio::time::timeout(NO_HANG, held.read(&mut rest)).await;
    assert_eq!(ending(r.expect("no FIN")), Ok(0), "END(DONE) is a FIN");

    let (given_up, mut held) = t.open(b"cut").await;
    given_up.abort();
    let r = tokio::time::timeout(NO_HANG, held.read(&mut rest)).await;
    assert_eq!(
        ending(r.expect("no reset")),
        Err(std::io::ErrorKind::ConnectionReset),
        "END other than DONE is a reset"
    );

    let (_open, mut held) = t.open(b"cut").await;
    let QuietSetup {
        net, service, dir, ..
    } = t;
    net.shutdown().await;
    let r = tokio::time::timeout(NO_HANG, held.read(&mut rest)).await;
    assert_eq!(
        ending(r.expect("no reset")),
        Err(std::io::ErrorKind::ConnectionReset),
        "a cut rendezvous circuit is a reset"
    );
    service.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn forged_expired_rolled_back_and_foreign_descriptors_are_refused() {
    use common::onion::{address, inner, period, service, NOW};
    let periods = PeriodParams::default();
    let blinded = BlindedKeypair::derive(&service(), period()).unwrap();
    let build = |revision: u64, created: u64| {
        SignedOnionDescriptor::build(
            &mut rand::rng(),
            &service(),
            &blinded,
            &inner(3, false),
            &DescriptorParams {
                revision,
                created,
                lifetime: 3600,
            },
        )
        .unwrap()
        .to_bytes()
        .unwrap()
    };
    let good = build(7, NOW);
    let (inner_ok, _, revision, expires) =
        verify_descriptor(&good, &address(), &periods, NOW, 0).unwrap();
    assert_eq!(inner_ok.intro_points.len(), 3);
    assert_eq!((revision, expires), (7, NOW + 3600));

    // Forged: one bit of the signature (the last bytes of the encoding) flipped.
    let mut forged = good.clone();
    let n = forged.len();
    forged[n - 5] ^= 0x01;
    let err = verify_descriptor(&forged, &address(), &periods, NOW, 0).unwrap_err();
    assert!(err.to_string().contains("signature"), "{err}");
    // Forged: a byte of the signed body changed.
    let mut forged = good.clone();
    forged[20] ^= 0x80;
    assert!(verify_descriptor(&forged, &address(), &periods, NOW, 0).is_err());
    // Expired (past created + lifetime + skew).
    let late = NOW + 3600 + DESCRIPTOR_SKEW;
    let err = verify_descriptor(&good, &address(), &periods, late, 0).unwrap_err();
    assert!(err.to_string().contains("expire"), "{err}");
    // Future-dated beyond the skew.
    let future = build(8, NOW + DESCRIPTOR_SKEW + 60);
    assert!(verify_descriptor(&future, &address(), &periods, NOW, 0).is_err());
    // Rolled back: older than a revision already accepted.
    let err = verify_descriptor(&good, &address(), &periods, NOW, 8).unwrap_err();
    assert!(err.to_string().contains("revision"), "{err}");
    // Another service's address.
    let other = OnionAddress::from_identity(common::onion::key(201).public()).unwrap();
    assert!(verify_descriptor(&good, &other, &periods, NOW, 0).is_err());
    eprintln!("forged, expired, future-dated, rolled-back and foreign descriptors refused");
}
