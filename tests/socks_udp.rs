//! SOCKS5 UDP ASSOCIATE (RFC 1928 §7) through the proxy, over a real circuit of three
//! relays on 127.0.0.1 whose exit has a UDP policy (issue 20): datagrams come back with
//! the header naming the destination as the client addressed it; datagrams from another
//! local port, fragments and malformed headers are dropped; closing the control
//! connection ends every flow at the exit and frees the relay port; a destination the
//! exit refuses is held back without spoiling the association; and an independent Python
//! client (tests/udp/voice_client.py) measures loss and round trips.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::future::Future;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use allium::cell::{EndReason, Hostname, TargetAddr};
use allium::client::socks::SocksAuth;
use allium::client::socks_server::{serve_socks, Connector, IsolationKey, ProxyConfig};
use allium::dir::{ExitPolicy, PolicyAction, PolicyRule};
use allium::proto::{CircuitHandle, DataStream, StreamOpenError, UdpFlow};
use allium::relay::RelayLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::oneshot;

mod common;
use common::{prereq, udp_exit_circuit, NO_HANG};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// One UDP flow request as the connector saw it, and how it ended (`None`: pending).
#[derive(Clone, Debug)]
struct Seen {
    target: TargetAddr,
    port: u16,
    key: IsolationKey,
    result: Option<Result<(), StreamOpenError>>,
}

/// A connector opening everything on one real circuit, recording UDP flow requests.
struct CircuitConnector {
    circ: CircuitHandle,
    seen: Mutex<Vec<Seen>>,
}

impl CircuitConnector {
    fn new(circ: CircuitHandle) -> Arc<Self> {
        Arc::new(CircuitConnector {
            circ,
            seen: Mutex::new(Vec::new()),
        })
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until `n` flow requests have an outcome.
    async fn settled(&self, n: usize) -> Vec<Seen> {
        let deadline = tokio::time::Instant::now() + NO_HANG;
        loop {
            let seen = self.seen();
            if seen.iter().filter(|s| s.result.is_some()).count() >= n {
                return seen;
            }
            assert!(tokio::time::Instant::now() < deadline, "opens never ended");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Connector for CircuitConnector {
    fn connect(
        &self,
        target: TargetAddr,
        port: u16,
        _isolation: IsolationKey,
    ) -> Pin<Box<dyn Future<Output = Result<DataStream, StreamOpenError>> + Send + '_>> {
        Box::pin(self.circ.open_stream(target, port, NO_HANG))
    }

    fn open_udp(
        &self,
        target: TargetAddr,
        port: u16,
        isolation: IsolationKey,
    ) -> Pin<Box<dyn Future<Output = Result<UdpFlow, StreamOpenError>> + Send + '_>> {
        let index = {
            let mut seen = self.seen.lock().unwrap();
            seen.push(Seen {
                target: target.clone(),
                port,
                key: isolation,
                result: None,
            });
            seen.len() - 1
        };
        Box::pin(async move {
            let r = self.circ.open_udp(target, port, NO_HANG).await;
            self.seen.lock().unwrap()[index].result = Some(r.as_ref().map(|_| ()).map_err(|e| *e));
            r
        })
    }
}

/// A running SOCKS listener; dropping it stops the listener.
struct Proxy {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn proxy(connector: Arc<CircuitConnector>, index: u16) -> Proxy {
    proxy_with(connector, index, ProxyConfig::default()).await
}

async fn proxy_with(connector: Arc<CircuitConnector>, index: u16, cfg: ProxyConfig) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let connector: Arc<dyn Connector> = connector;
    tokio::spawn(serve_socks(listener, index, connector, cfg, shutdown));
    Proxy { addr, _stop: stop }
}

/// A UDP echo server on 127.0.0.1 that remembers every payload it received.
struct Echo {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Echo {
    fn got(&self, payload: &[u8]) -> bool {
        self.got.lock().unwrap().iter().any(|p| p == payload)
    }
}

async fn echo() -> Echo {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&got);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            log.lock().unwrap().push(buf[..n].to_vec());
            let _ = sock.send_to(&buf[..n], from).await;
        }
    });
    Echo { addr, got }
}

/// UDP policy: IPv4 loopback only (so `localhost` resolves at the exit to 127.0.0.1),
/// except `refused_port` if given.
fn loopback_v4_udp(refused_port: Option<u16>) -> ExitPolicy {
    let net = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0));
    let mut rules = Vec::new();
    if let Some(p) = refused_port {
        rules.push(PolicyRule::new(PolicyAction::Reject, net, 8, p, p).unwrap());
    }
    rules.push(PolicyRule::new(PolicyAction::Accept, net, 8, 1, 65535).unwrap());
    ExitPolicy::new(rules).unwrap()
}

/// Greeting (with credentials if given) and UDP ASSOCIATE naming `dst`; returns the
/// control connection and the relay address from the reply.
async fn associate(
    proxy: SocketAddr,
    auth: Option<(&[u8], &[u8])>,
    dst: SocketAddr,
) -> (TcpStream, SocketAddr) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let mut r = [0u8; 2];
    match auth {
        None => {
            s.write_all(&[5, 1, 0]).await.unwrap();
            s.read_exact(&mut r).await.unwrap();
            assert_eq!(r, [5, 0]);
        }
        Some((user, pass)) => {
            s.write_all(&[5, 1, 2]).await.unwrap();
            s.read_exact(&mut r).await.unwrap();
            assert_eq!(r, [5, 2]);
            let mut m = vec![1, user.len() as u8];
            m.extend_from_slice(user);
            m.push(pass.len() as u8);
            m.extend_from_slice(pass);
            s.write_all(&m).await.unwrap();
            s.read_exact(&mut r).await.unwrap();
            assert_eq!(r, [1, 0]);
        }
    }
    let IpAddr::V4(ip) = dst.ip() else {
        panic!("IPv4 only here")
    };
    let mut req = vec![5, 3, 0, 1];
    req.extend_from_slice(&ip.octets());
    req.extend_from_slice(&dst.port().to_be_bytes());
    s.write_all(&req).await.unwrap();
    let mut reply = [0u8; 10];
    tokio::time::timeout(NO_HANG, s.read_exact(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply[..4], [5, 0, 0, 1], "UDP ASSOCIATE refused");
    let relay = SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(reply[4], reply[5], reply[6], reply[7])),
        u16::from_be_bytes([reply[8], reply[9]]),
    );
    (s, relay)
}

fn unspecified() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
}

/// RFC 1928 §7 header for an IPv4 destination, built by hand (not by the crate's codec).
fn v4_header(to: SocketAddr) -> Vec<u8> {
    let IpAddr::V4(ip) = to.ip() else {
        panic!("IPv4 only here")
    };
    let mut h = vec![0, 0, 0, 1];
    h.extend_from_slice(&ip.octets());
    h.extend_from_slice(&to.port().to_be_bytes());
    h
}

fn name_header(name: &str, port: u16) -> Vec<u8> {
    let mut h = vec![0, 0, 0, 3, name.len() as u8];
    h.extend_from_slice(name.as_bytes());
    h.extend_from_slice(&port.to_be_bytes());
    h
}

async fn client() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

async fn send(sock: &UdpSocket, relay: SocketAddr, header: &[u8], payload: &[u8]) {
    let mut d = header.to_vec();
    d.extend_from_slice(payload);
    sock.send_to(&d, relay).await.unwrap();
}

/// The next datagram on `sock`, which must come from `relay`.
async fn recv(sock: &UdpSocket, relay: SocketAddr) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let (n, from) = tokio::time::timeout(NO_HANG, sock.recv_from(&mut buf))
        .await
        .expect("no datagram came back")
        .unwrap();
    assert_eq!(from, relay, "a reply from elsewhere than the relay socket");
    buf.truncate(n);
    buf
}

fn cat(a: &[u8], b: &[u8]) -> Vec<u8> {
    [a, b].concat()
}

#[tokio::test]
async fn datagrams_to_an_address_and_to_a_name_come_back_with_their_header() {
    let echo = echo().await;
    let (_relays, circ) = udp_exit_circuit(
        ExitPolicy::default_exit_allow_loopback(),
        loopback_v4_udp(None),
        RelayLimits::default(),
    )
    .await;
    let connector = CircuitConnector::new(circ);
    let p = proxy(connector.clone(), 3).await;
    let (_ctl, relay) = associate(p.addr, Some((b"alice", b"pw")), unspecified()).await;
    assert_eq!(
        relay.ip(),
        LOCALHOST,
        "bound on the control connection's address"
    );
    assert_ne!(relay.port(), 0);

    let c = client().await;
    let by_ip = v4_header(echo.addr);
    for len in [0usize, 1, 160, 1472] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
        send(&c, relay, &by_ip, &payload).await;
        assert_eq!(recv(&c, relay).await, cat(&by_ip, &payload), "{len} bytes");
    }
    // A name goes to the exit as given, and the reply names it the same way.
    let by_name = name_header("localhost", echo.addr.port());
    send(&c, relay, &by_name, b"by name").await;
    assert_eq!(recv(&c, relay).await, cat(&by_name, b"by name"));

    // One flow per destination, with the isolation key a stream of this client would have.
    let key = IsolationKey {
        listener: 3,
        auth: SocksAuth::Username {
            user: b"alice".to_vec(),
            pass: b"pw".to_vec(),
        },
    };
    let seen = connector.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].target, TargetAddr::Ip(LOCALHOST));
    assert_eq!(
        seen[1].target,
        TargetAddr::Hostname(Hostname::new("localhost").unwrap()),
        "a name is never resolved by the proxy"
    );
    for s in &seen {
        assert_eq!(s.port, echo.addr.port());
        assert_eq!(s.key, key);
    }
}

#[tokio::test]
async fn datagrams_from_another_local_port_are_dropped() {
    let echo = echo().await;
    let (_relays, circ) = udp_exit_circuit(
        ExitPolicy::default_exit_allow_loopback(),
        loopback_v4_udp(None),
        RelayLimits::default(),
    )
    .await;
    let p = proxy(CircuitConnector::new(circ), 0).await;
    let to_echo = v4_header(echo.addr);

    // DST 0.0.0.0:0: the first datagram pins the client's port.
    let (_ctl, relay) = associate(p.addr, None, unspecified()).await;
    let (a, intruder) = (client().await, client().await);
    send(&a, relay, &to_echo, b"a1").await;
    assert_eq!(recv(&a, relay).await, cat(&to_echo, b"a1"));
    send(&intruder, relay, &to_echo, b"intruder 1").await;
    // The relay socket reads in order: once "a2" is back, the intruder's datagram, sent
    // before it, has been dealt with.
    send(&a, relay, &to_echo, b"a2").await;
    assert_eq!(recv(&a, relay).await, cat(&to_echo, b"a2"));
    assert!(
        !echo.got(b"intruder 1"),
        "a datagram from another port went out"
    );
    let mut buf = [0u8; 64];
    assert!(
        intruder.try_recv_from(&mut buf).is_err(),
        "the intruder got a reply"
    );

    // DST names the client's port: a datagram from another port cannot even pin first.
    let a2 = client().await;
    let named = SocketAddr::new(LOCALHOST, a2.local_addr().unwrap().port());
    let (_ctl2, relay2) = associate(p.addr, None, named).await;
    send(&intruder, relay2, &to_echo, b"intruder 2").await;
    send(&a2, relay2, &to_echo, b"a3").await;
    assert_eq!(recv(&a2, relay2).await, cat(&to_echo, b"a3"));
    send(&intruder, relay2, &to_echo, b"intruder 3").await;
    send(&a2, relay2, &to_echo, b"a4").await;
    assert_eq!(recv(&a2, relay2).await, cat(&to_echo, b"a4"));
    assert!(!echo.got(b"intruder 2") && !echo.got(b"intruder 3"));
    assert!(intruder.try_recv_from(&mut buf).is_err());
}

#[tokio::test]
async fn fragments_and_malformed_headers_are_dropped() {
    let echo = echo().await;
    let (_relays, circ) = udp_exit_circuit(
        ExitPolicy::default_exit_allow_loopback(),
        loopback_v4_udp(None),
        RelayLimits::default(),
    )
    .await;
    let p = proxy(CircuitConnector::new(circ), 0).await;
    let (_ctl, relay) = associate(p.addr, None, unspecified()).await;
    let c = client().await;
    let header = v4_header(echo.addr);
    let mut fragment = header.clone();
    fragment[2] = 1;
    let mut reserved = header.clone();
    reserved[0] = 1;
    send(&c, relay, &fragment, b"fragment").await;
    send(&c, relay, &reserved, b"reserved").await;
    send(&c, relay, &[0, 0, 0, 9], b"address type 9").await;
    send(&c, relay, &header, &[0u8; 1473]).await;
    send(&c, relay, &header, b"whole").await;
    // The first thing back is the well-formed datagram's echo.
    assert_eq!(recv(&c, relay).await, cat(&header, b"whole"));
    let got = echo.got.lock().unwrap().clone();
    assert_eq!(got, vec![b"whole".to_vec()]);
}

#[tokio::test]
async fn closing_the_control_connection_ends_the_association() {
    let (echo1, echo2) = (echo().await, echo().await);
    let (relays, circ) = udp_exit_circuit(
        ExitPolicy::default_exit_allow_loopback(),
        loopback_v4_udp(None),
        RelayLimits::default(),
    )
    .await;
    let flows = &relays[2].shared().udp_flows;
    let limit = flows.available_permits();
    let p = proxy(CircuitConnector::new(circ), 0).await;
    let (mut ctl, relay) = associate(p.addr, None, unspecified()).await;
    let c = client().await;
    for e in [&echo1, &echo2] {
        let h = v4_header(e.addr);
        send(&c, relay, &h, b"ping").await;
        assert_eq!(recv(&c, relay).await, cat(&h, b"ping"));
    }
    assert_eq!(
        flows.available_permits(),
        limit - 2,
        "two flows at the exit"
    );
    // Bytes on the control connection are read and ignored.
    ctl.write_all(b"ignored").await.unwrap();
    let h = v4_header(echo1.addr);
    send(&c, relay, &h, b"still").await;
    assert_eq!(recv(&c, relay).await, cat(&h, b"still"));

    drop(ctl);
    let deadline = tokio::time::Instant::now() + NO_HANG;
    loop {
        let freed = flows.available_permits() == limit;
        // The relay port is free again once the association's socket is closed.
        let closed = std::net::UdpSocket::bind(relay).is_ok();
        if freed && closed {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "association still alive: flows freed {freed}, port closed {closed}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn an_idle_association_is_closed_like_an_idle_stream() {
    let echo = echo().await;
    let (relays, circ) = udp_exit_circuit(
        ExitPolicy::default_exit_allow_loopback(),
        loopback_v4_udp(None),
        RelayLimits::default(),
    )
    .await;
    let flows = &relays[2].shared().udp_flows;
    let limit = flows.available_permits();
    let cfg = ProxyConfig {
        idle_timeout: Some(Duration::from_millis(300)),
        ..ProxyConfig::default()
    };
    let p = proxy_with(CircuitConnector::new(circ), 0, cfg).await;
    let (mut ctl, relay) = associate(p.addr, None, unspecified()).await;
    let c = client().await;
    let h = v4_header(echo.addr);
    send(&c, relay, &h, b"once").await;
    assert_eq!(recv(&c, relay).await, cat(&h, b"once"));
    // Then silence: the proxy closes the control connection and ends the flow.
    let mut byte = [0u8; 1];
    let n = tokio::time::timeout(NO_HANG, ctl.read(&mut byte))
        .await
        .expect("an idle association was kept")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let deadline = tokio::time::Instant::now() + NO_HANG;
    while flows.available_permits() != limit {
        assert!(
            tokio::time::Instant::now() < deadline,
            "flow kept at the exit"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Log lines written while a test runs (every task of a current-thread runtime logs here).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn an_exit_without_udp_refuses_and_the_proxy_says_why_at_debug() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let echo = echo().await;
    let (_relays, circ) = udp_exit_circuit(
        ExitPolicy::default_exit_allow_loopback(),
        ExitPolicy::reject_all(),
        RelayLimits::default(),
    )
    .await;
    let connector = CircuitConnector::new(circ);
    let p = proxy(connector.clone(), 0).await;
    let (mut ctl, relay) = associate(p.addr, None, unspecified()).await;
    let c = client().await;
    send(&c, relay, &v4_header(echo.addr), b"refused").await;
    let seen = connector.settled(1).await;
    assert_eq!(
        seen[0].result,
        Some(Err(StreamOpenError::Refused(EndReason::ExitPolicy)))
    );
    // The association stays up: the control connection is neither closed nor answered.
    let mut byte = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(200), ctl.read(&mut byte))
            .await
            .is_err(),
        "the proxy closed or wrote on the control connection"
    );
    assert!(!echo.got(b"refused"));
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("UDP flow not opened"))
        .unwrap_or_else(|| panic!("no debug line for the refusal in:\n{text}"));
    assert!(line.contains("ExitPolicy"), "{line}");
    assert!(!line.contains(&echo.addr.port().to_string()), "{line}");
}

#[tokio::test]
async fn a_refused_destination_is_held_back_and_others_keep_working() {
    let (open, refused) = (echo().await, echo().await);
    let (_relays, circ) = udp_exit_circuit(
        ExitPolicy::default_exit_allow_loopback(),
        loopback_v4_udp(Some(refused.addr.port())),
        RelayLimits::default(),
    )
    .await;
    let connector = CircuitConnector::new(circ);
    let p = proxy(connector.clone(), 0).await;
    let (_ctl, relay) = associate(p.addr, None, unspecified()).await;
    let c = client().await;
    let to_refused = v4_header(refused.addr);
    send(&c, relay, &to_refused, b"first").await;
    let seen = connector.settled(1).await;
    assert_eq!(
        seen[0].result,
        Some(Err(StreamOpenError::Refused(EndReason::ExitPolicy)))
    );
    // A client retrying in a tight loop: no new flow is asked for (for a few seconds).
    for i in 0..50u8 {
        send(&c, relay, &to_refused, &[i]).await;
    }
    let to_open = v4_header(open.addr);
    send(&c, relay, &to_open, b"fine").await;
    assert_eq!(recv(&c, relay).await, cat(&to_open, b"fine"));
    let seen = connector.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].port, open.addr.port());
    assert!(refused.got.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_independent_python_client_measures_an_echo_through_the_proxy() {
    if !prereq::require(&[prereq::python3()]) {
        return;
    }
    let echo = echo().await;
    let (_relays, circ) = udp_exit_circuit(
        ExitPolicy::default_exit_allow_loopback(),
        loopback_v4_udp(None),
        RelayLimits::default(),
    )
    .await;
    let p = proxy(CircuitConnector::new(circ), 0).await;
    let figures = common::voice::run(p.addr, &echo.addr.to_string(), 100, 50).await;
    let number = |k: &str| common::voice::number(&figures, k);
    assert_eq!(number("sent"), 100.0);
    let received = number("received");
    assert!(
        received >= 90.0,
        "only {received} of 100 echoes: {figures:?}"
    );
}

#[test]
fn the_documented_limits_are_the_code_s() {
    use allium::client::socks_server::{
        MAX_CONTROL_BYTES, UDP_EVICT_IDLE, UDP_MAX_DESTINATIONS, UDP_MAX_OPENING,
        UDP_OPENING_QUEUE, UDP_OPENS_PER_SECOND, UDP_OPEN_BURST, UDP_RETRY_AFTER,
    };
    let doc = include_str!("../docs/operating.md");
    let section = doc
        .split("## The proxy's UDP")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .unwrap();
    // Line breaks may fall anywhere in the prose.
    let section = section.split_whitespace().collect::<Vec<_>>().join(" ");
    for phrase in [
        format!("{} destinations", UDP_MAX_DESTINATIONS),
        format!("{} being opened at once", UDP_MAX_OPENING),
        format!("up to {} datagrams per destination", UDP_OPENING_QUEUE),
        format!("idle for {} s", UDP_EVICT_IDLE.as_secs()),
        format!("held back for {} s", UDP_RETRY_AFTER.as_secs()),
        format!("closed within {} s of opening", UDP_RETRY_AFTER.as_secs()),
        format!(
            "at most {} flows in a burst, then {} per second",
            UDP_OPEN_BURST, UDP_OPENS_PER_SECOND
        ),
        format!("more than {} KiB", MAX_CONTROL_BYTES / 1024),
        format!("at most {} bytes", "1,472"),
    ] {
        assert!(
            section.contains(&phrase),
            "docs/operating.md lacks {phrase:?}"
        );
    }
    assert_eq!(allium::client::socks::MAX_UDP_PAYLOAD, 1472);
}
