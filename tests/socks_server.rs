//! The SOCKS and HTTP CONNECT listeners over real TCP on 127.0.0.1: curl downloads through
//! a 3-relay in-process network, reply codes for refusals, unsupported commands and bad
//! requests, early data and half-close, garbage, connection limits, timeouts and stream
//! isolation keys.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use allium::cell::{EndReason, Hostname, TargetAddr};
use allium::client::socks::SocksAuth;
use allium::client::socks_server::{
    serve_http_connect, serve_socks, Connector, IsolationKey, ProxyConfig,
};
use allium::dir::ExitPolicy;
use allium::proto::{CircuitHandle, DataStream, StreamOpenError};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

mod common;
use common::{exit_circuit as circuit, NO_HANG};

/// One request as the connector saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    target: TargetAddr,
    port: u16,
    key: IsolationKey,
}

/// What the connector does.
enum Mode {
    /// Open the stream on this circuit.
    Circuit(CircuitHandle),
    /// Fail with this error.
    Fail(StreamOpenError),
    /// Never answer.
    Hang,
}

/// A connector that records every request.
struct TestConnector {
    mode: Mode,
    seen: Mutex<Vec<Seen>>,
}

impl TestConnector {
    fn new(mode: Mode) -> Arc<Self> {
        Arc::new(TestConnector {
            mode,
            seen: Mutex::new(Vec::new()),
        })
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Connector for TestConnector {
    fn connect(
        &self,
        target: TargetAddr,
        port: u16,
        isolation: IsolationKey,
    ) -> Pin<Box<dyn Future<Output = Result<DataStream, StreamOpenError>> + Send + '_>> {
        self.seen.lock().unwrap().push(Seen {
            target: target.clone(),
            port,
            key: isolation,
        });
        Box::pin(async move {
            match &self.mode {
                Mode::Circuit(circ) => circ.open_stream(target, port, NO_HANG).await,
                Mode::Fail(e) => Err(*e),
                Mode::Hang => std::future::pending().await,
            }
        })
    }

    fn open_udp(
        &self,
        target: TargetAddr,
        port: u16,
        isolation: IsolationKey,
    ) -> Pin<Box<dyn Future<Output = Result<allium::proto::UdpFlow, StreamOpenError>> + Send + '_>>
    {
        self.seen.lock().unwrap().push(Seen {
            target: target.clone(),
            port,
            key: isolation,
        });
        Box::pin(async move {
            match &self.mode {
                Mode::Circuit(circ) => circ.open_udp(target, port, NO_HANG).await,
                Mode::Fail(e) => Err(*e),
                Mode::Hang => std::future::pending().await,
            }
        })
    }
}

/// A running proxy listener; dropping it stops the listener.
struct Proxy {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

#[derive(Clone, Copy)]
enum Kind {
    Socks,
    Http,
}

async fn proxy(kind: Kind, index: u16, connector: Arc<TestConnector>, cfg: ProxyConfig) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let connector: Arc<dyn Connector> = connector;
    match kind {
        Kind::Socks => tokio::spawn(serve_socks(listener, index, connector, cfg, shutdown)),
        Kind::Http => tokio::spawn(serve_http_connect(
            listener, index, connector, cfg, shutdown,
        )),
    };
    Proxy { addr, _stop: stop }
}

// ---------------------------------------------------------------------------------------
// Destination servers.

fn pattern(size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

/// A tiny HTTP/1.1 server: `GET /file` answers `pattern(size)` with Content-Length and
/// `Connection: close`; anything else gets a 404.
async fn http_server(size: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = Arc::new(pattern(size));
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let body = Arc::clone(&body);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                    if head.len() > 16 * 1024 {
                        return;
                    }
                }
                if head.starts_with(b"GET /file ") {
                    let hdr = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = sock.write_all(hdr.as_bytes()).await;
                    let _ = sock.write_all(&body).await;
                } else {
                    let _ = sock
                        .write_all(
                            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        )
                        .await;
                }
                let _ = sock.shutdown().await;
            });
        }
    });
    addr
}

/// Reads everything until EOF, then writes it all back and closes: only works if the
/// client's half-close reaches it and the other direction stays open.
async fn echo_after_eof_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut all = Vec::new();
                if sock.read_to_end(&mut all).await.is_ok() {
                    let _ = sock.write_all(&all).await;
                    let _ = sock.shutdown().await;
                }
            });
        }
    });
    addr
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------
// A SOCKS5 client.

const CMD_CONNECT: u8 = 1;
const CMD_BIND: u8 = 2;
const CMD_UDP: u8 = 3;
const CMD_RESOLVE: u8 = 0xF0;

fn ipv4(ip: [u8; 4]) -> Vec<u8> {
    let mut v = vec![1];
    v.extend_from_slice(&ip);
    v
}

fn domain(name: &str) -> Vec<u8> {
    let mut v = vec![3, name.len() as u8];
    v.extend_from_slice(name.as_bytes());
    v
}

/// The greeting (with credentials if given) and request, in one buffer.
fn socks5_request(auth: Option<(&str, &str)>, cmd: u8, addr: &[u8], port: u16) -> Vec<u8> {
    let mut out = Vec::new();
    match auth {
        None => out.extend_from_slice(&[5, 1, 0]),
        Some((u, p)) => {
            out.extend_from_slice(&[5, 1, 2, 1, u.len() as u8]);
            out.extend_from_slice(u.as_bytes());
            out.push(p.len() as u8);
            out.extend_from_slice(p.as_bytes());
        }
    }
    out.extend_from_slice(&[5, cmd, 0]);
    out.extend_from_slice(addr);
    out.extend_from_slice(&port.to_be_bytes());
    out
}

/// Reads the method selection (and auth reply) and the final reply; returns its code.
async fn socks5_read_reply(sock: &mut TcpStream, with_auth: bool) -> u8 {
    let mut method = [0u8; 2];
    sock.read_exact(&mut method).await.unwrap();
    assert_eq!(method, [5, if with_auth { 2 } else { 0 }]);
    if with_auth {
        let mut a = [0u8; 2];
        sock.read_exact(&mut a).await.unwrap();
        assert_eq!(a, [1, 0]);
    }
    let mut head = [0u8; 4];
    sock.read_exact(&mut head).await.unwrap();
    assert_eq!(head[0], 5);
    assert_eq!(head[2], 0);
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        other => panic!("reply address type {other}"),
    };
    let mut bound = vec![0u8; rest];
    sock.read_exact(&mut bound).await.unwrap();
    head[1]
}

/// A SOCKS5 request sent in one write (pipelined); returns the socket and the reply code.
async fn socks5(
    proxy: SocketAddr,
    auth: Option<(&str, &str)>,
    cmd: u8,
    addr: &[u8],
    port: u16,
) -> (TcpStream, u8) {
    let mut sock = TcpStream::connect(proxy).await.unwrap();
    sock.write_all(&socks5_request(auth, cmd, addr, port))
        .await
        .unwrap();
    let code = tokio::time::timeout(NO_HANG, socks5_read_reply(&mut sock, auth.is_some()))
        .await
        .expect("a reply");
    (sock, code)
}

/// Waits until the proxy closes the connection (EOF or reset), discarding what it sends.
async fn assert_closed(sock: &mut TcpStream) {
    let mut buf = [0u8; 256];
    tokio::time::timeout(NO_HANG, async {
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the proxy must close the connection");
}

/// `GET /file` over an established tunnel; returns the body.
async fn http_get(sock: &mut TcpStream) -> Vec<u8> {
    sock.write_all(b"GET /file HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(NO_HANG, sock.read_to_end(&mut all))
        .await
        .expect("response")
        .unwrap();
    let end = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(all.starts_with(b"HTTP/1.1 200 "));
    all.split_off(end)
}

// ---------------------------------------------------------------------------------------
// curl.

/// Runs curl with `args`, writing the body to a fresh file; returns the body.
async fn curl(label: &str, args: &[String]) -> Vec<u8> {
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("socks_server-{}-{label}.bin", std::process::id()));
    let _ = std::fs::remove_file(&out);
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sS", "--fail", "--max-time", "60"])
        .args(args)
        .arg("-o")
        .arg(&out)
        .kill_on_drop(true);
    // Proxy settings from the environment must not redirect or bypass our proxy.
    for var in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        cmd.env_remove(var);
    }
    let output = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("curl must finish")
        .unwrap();
    assert!(
        output.status.success(),
        "curl {label} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let body = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn curl_downloads_through_socks5_socks4a_and_http_connect() {
    const SIZE: usize = 5 * 1024 * 1024;
    if !common::prereq::require(&[common::prereq::curl()]) {
        return;
    }
    let (_relays, circ) = circuit(ExitPolicy::default_exit_allow_loopback()).await;
    let connector = TestConnector::new(Mode::Circuit(circ));
    let socks = proxy(Kind::Socks, 0, connector.clone(), ProxyConfig::default()).await;
    let http = proxy(Kind::Http, 1, connector.clone(), ProxyConfig::default()).await;
    let server = http_server(SIZE).await;
    let url = format!("http://localhost:{}/file", server.port());
    let expected = Sha256::digest(pattern(SIZE));

    let s5 = [
        "--socks5-hostname".to_string(),
        socks.addr.to_string(),
        url.clone(),
    ];
    let s4a = ["--socks4a".to_string(), socks.addr.to_string(), url.clone()];
    let tunnel = [
        "--proxy".to_string(),
        format!("http://{}", http.addr),
        "-p".to_string(),
        url.clone(),
    ];
    let (a, b, c) = tokio::join!(
        curl("socks5h", &s5),
        curl("socks4a", &s4a),
        curl("connect", &tunnel)
    );
    for (name, body) in [("socks5h", a), ("socks4a", b), ("connect", c)] {
        assert_eq!(body.len(), SIZE, "{name}");
        assert_eq!(Sha256::digest(&body), expected, "{name}");
    }

    // All three went through the connector, with the name unresolved.
    let seen = connector.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    let localhost = TargetAddr::Hostname(Hostname::new("localhost").unwrap());
    for s in &seen {
        assert_eq!(s.target, localhost);
        assert_eq!(s.port, server.port());
        assert_eq!(s.key.auth, SocksAuth::None);
    }
    let mut listeners: Vec<u16> = seen.iter().map(|s| s.key.listener).collect();
    listeners.sort_unstable();
    assert_eq!(listeners, [0, 0, 1]);
}

// ---------------------------------------------------------------------------------------
// Reply codes.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks5_refused_port_unsupported_commands_and_bad_address_type() {
    let (_relays, circ) = circuit(ExitPolicy::default_exit_allow_loopback()).await;
    let connector = TestConnector::new(Mode::Circuit(circ));
    let p = proxy(Kind::Socks, 0, connector.clone(), ProxyConfig::default()).await;

    // Nothing listens there: connection refused (05), then the proxy closes.
    let (mut s, code) = socks5(
        p.addr,
        None,
        CMD_CONNECT,
        &ipv4([127, 0, 0, 1]),
        free_port(),
    )
    .await;
    assert_eq!(code, 0x05);
    assert_closed(&mut s).await;

    // BIND: command not supported (07), and so is RESOLVE for now.
    for cmd in [CMD_BIND, CMD_RESOLVE] {
        let (mut s, code) = socks5(p.addr, None, cmd, &ipv4([127, 0, 0, 1]), 80).await;
        assert_eq!(code, 0x07, "command {cmd:#x}");
        assert_closed(&mut s).await;
    }
    // UDP ASSOCIATE (served: tests/socks_udp.rs) naming a client address other than the
    // connection's: not allowed (02).
    let (mut s, code) = socks5(p.addr, None, CMD_UDP, &ipv4([10, 0, 0, 1]), 80).await;
    assert_eq!(code, 0x02);
    assert_closed(&mut s).await;

    // Address type 9: address type not supported (08).
    let (mut s, code) = socks5(p.addr, None, CMD_CONNECT, &[9, 1, 2, 3, 4], 80).await;
    assert_eq!(code, 0x08);
    assert_closed(&mut s).await;

    // Only the CONNECT reached the connector.
    assert_eq!(connector.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_policy_refusal_is_not_allowed_in_every_protocol() {
    // The default exit policy refuses loopback.
    let (_relays, circ) = circuit(ExitPolicy::default_exit()).await;
    let connector = TestConnector::new(Mode::Circuit(circ));
    let socks = proxy(Kind::Socks, 0, connector.clone(), ProxyConfig::default()).await;
    let http = proxy(Kind::Http, 1, connector.clone(), ProxyConfig::default()).await;
    let server = http_server(10).await;

    let (mut s, code) = socks5(
        socks.addr,
        None,
        CMD_CONNECT,
        &ipv4([127, 0, 0, 1]),
        server.port(),
    )
    .await;
    assert_eq!(code, 0x02);
    assert_closed(&mut s).await;

    // SOCKS4: a plain rejection.
    let mut s = TcpStream::connect(socks.addr).await.unwrap();
    let mut req = vec![4, 1];
    req.extend_from_slice(&server.port().to_be_bytes());
    req.extend_from_slice(&[127, 0, 0, 1, 0]);
    s.write_all(&req).await.unwrap();
    let mut r = [0u8; 8];
    tokio::time::timeout(NO_HANG, s.read_exact(&mut r))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r[..2], [0, 0x5B]);
    assert_closed(&mut s).await;

    // HTTP CONNECT: 403.
    let mut s = TcpStream::connect(http.addr).await.unwrap();
    let req = format!(
        "CONNECT 127.0.0.1:{0} HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\n\r\n",
        server.port()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(NO_HANG, s.read_to_end(&mut resp))
        .await
        .unwrap()
        .unwrap();
    assert!(resp.starts_with(b"HTTP/1.1 403 "), "{resp:?}");
}

// ---------------------------------------------------------------------------------------
// Garbage, early data, half-close, isolation.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_closes_only_that_connection() {
    let (_relays, circ) = circuit(ExitPolicy::default_exit_allow_loopback()).await;
    let connector = TestConnector::new(Mode::Circuit(circ));
    let p = proxy(Kind::Socks, 0, connector.clone(), ProxyConfig::default()).await;
    let server = http_server(100_000).await;

    // A tunnel established before the garbage arrives...
    let (mut before, code) = socks5(
        p.addr,
        None,
        CMD_CONNECT,
        &ipv4([127, 0, 0, 1]),
        server.port(),
    )
    .await;
    assert_eq!(code, 0);

    // ...garbage on another connection: that one is closed...
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[5, 0][..],
        &[0xFF; 3000][..],
    ] {
        let mut g = TcpStream::connect(p.addr).await.unwrap();
        g.write_all(garbage).await.unwrap();
        assert_closed(&mut g).await;
    }

    // ...while the earlier tunnel and a new one still work.
    assert_eq!(http_get(&mut before).await, pattern(100_000));
    let (mut after, code) = socks5(
        p.addr,
        None,
        CMD_CONNECT,
        &domain("localhost"),
        server.port(),
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(http_get(&mut after).await, pattern(100_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_data_and_half_close_and_isolation_keys() {
    let (_relays, circ) = circuit(ExitPolicy::default_exit_allow_loopback()).await;
    let connector = TestConnector::new(Mode::Circuit(circ));
    let p = proxy(Kind::Socks, 5, connector.clone(), ProxyConfig::default()).await;
    let echo = echo_after_eof_server().await;

    // Greeting, credentials, request and payload in one write; then half-close. The
    // server only answers after EOF, so the payload must arrive (early data first) and the
    // other direction must stay open.
    let payload = pattern(300_000);
    for (i, auth) in [Some(("alice", "pw")), Some(("bob", "pw")), None]
        .into_iter()
        .enumerate()
    {
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        let mut msg = socks5_request(auth, CMD_CONNECT, &ipv4([127, 0, 0, 1]), echo.port());
        msg.extend_from_slice(&payload[..1000]);
        s.write_all(&msg).await.unwrap();
        let code = tokio::time::timeout(NO_HANG, socks5_read_reply(&mut s, auth.is_some()))
            .await
            .unwrap();
        assert_eq!(code, 0, "client {i}");
        s.write_all(&payload[1000..]).await.unwrap();
        s.shutdown().await.unwrap();
        let mut back = Vec::new();
        tokio::time::timeout(NO_HANG, s.read_to_end(&mut back))
            .await
            .expect("echo")
            .unwrap();
        assert!(back == payload, "client {i}: got {} bytes", back.len());
    }

    let keys: Vec<IsolationKey> = connector.seen().into_iter().map(|s| s.key).collect();
    let user = |u: &str| SocksAuth::Username {
        user: u.as_bytes().to_vec(),
        pass: b"pw".to_vec(),
    };
    assert_eq!(
        keys,
        [
            IsolationKey {
                listener: 5,
                auth: user("alice")
            },
            IsolationKey {
                listener: 5,
                auth: user("bob")
            },
            IsolationKey {
                listener: 5,
                auth: SocksAuth::None
            },
        ]
    );
    assert_ne!(keys[0], keys[1]);
    assert_ne!(keys[0], keys[2]);
}

// ---------------------------------------------------------------------------------------
// Without a network: connector failures, timeouts, limits.

#[tokio::test]
async fn connector_failures_map_to_reply_codes_and_names_stay_unresolved() {
    let cases = [
        (StreamOpenError::Refused(EndReason::ResolveFailed), 0x04),
        (StreamOpenError::Refused(EndReason::NoRoute), 0x04),
        (StreamOpenError::Refused(EndReason::Timeout), 0x06),
        (StreamOpenError::Timeout, 0x06),
        (StreamOpenError::CircuitClosed, 0x01),
        (StreamOpenError::TooManyStreams, 0x01),
    ];
    for (err, want) in cases {
        let connector = TestConnector::new(Mode::Fail(err));
        let p = proxy(Kind::Socks, 3, connector.clone(), ProxyConfig::default()).await;
        let (mut s, code) = socks5(
            p.addr,
            Some(("u", "")),
            CMD_CONNECT,
            &domain("does-not-exist.invalid"),
            443,
        )
        .await;
        assert_eq!(code, want, "{err:?}");
        assert_closed(&mut s).await;
        let seen = connector.seen();
        assert_eq!(
            seen,
            [Seen {
                target: TargetAddr::Hostname(Hostname::new("does-not-exist.invalid").unwrap()),
                port: 443,
                key: IsolationKey {
                    listener: 3,
                    auth: SocksAuth::Username {
                        user: b"u".to_vec(),
                        pass: Vec::new()
                    }
                },
            }]
        );
    }
}

#[tokio::test]
async fn connect_timeout_is_ttl_expired() {
    let connector = TestConnector::new(Mode::Hang);
    let cfg = ProxyConfig {
        connect_timeout: Duration::from_millis(200),
        ..ProxyConfig::default()
    };
    let p = proxy(Kind::Socks, 0, connector.clone(), cfg.clone()).await;
    let (mut s, code) = socks5(p.addr, None, CMD_CONNECT, &domain("example.com"), 80).await;
    assert_eq!(code, 0x06);
    assert_closed(&mut s).await;

    let h = proxy(Kind::Http, 1, connector, cfg).await;
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    s.write_all(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        .await
        .unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(NO_HANG, s.read_to_end(&mut resp))
        .await
        .unwrap()
        .unwrap();
    assert!(resp.starts_with(b"HTTP/1.1 504 "), "{resp:?}");
}

#[tokio::test]
async fn stalled_handshake_is_closed() {
    let connector = TestConnector::new(Mode::Hang);
    let cfg = ProxyConfig {
        handshake_timeout: Duration::from_millis(200),
        ..ProxyConfig::default()
    };
    let p = proxy(Kind::Socks, 0, connector.clone(), cfg).await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(&[5, 1]).await.unwrap();
    assert_closed(&mut s).await;
    assert!(connector.seen().is_empty());
}

#[tokio::test]
async fn over_the_connection_limit_evicts_unfinished_handshakes_then_closes() {
    let connector = TestConnector::new(Mode::Hang);
    let cfg = ProxyConfig {
        max_connections: 1,
        connect_timeout: Duration::from_secs(1),
        ..ProxyConfig::default()
    };
    let p = proxy(Kind::Socks, 0, connector, cfg).await;

    // The first client holds the only slot with an unfinished handshake.
    let mut first = TcpStream::connect(p.addr).await.unwrap();
    first.write_all(&[5, 1, 0]).await.unwrap();
    let mut m = [0u8; 2];
    first.read_exact(&mut m).await.unwrap();
    assert_eq!(m, [5, 0]);
    // A second client takes its slot: the unfinished handshake is closed.
    let mut second = TcpStream::connect(p.addr).await.unwrap();
    second.write_all(&[5, 1, 0]).await.unwrap();
    let mut m = [0u8; 2];
    tokio::time::timeout(NO_HANG, second.read_exact(&mut m))
        .await
        .expect("second served")
        .unwrap();
    assert_eq!(m, [5, 0]);
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(NO_HANG, first.read(&mut buf))
        .await
        .expect("first closed");
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    // The second completes its request (the connector hangs): past its handshake, it is
    // never evicted, so a third client is closed without an answer.
    second
        .write_all(&[5, 1, 0, 1, 127, 0, 0, 1, 0, 80])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = TcpStream::connect(p.addr).await.unwrap();
    let _ = third.write_all(&[5, 1, 0]).await;
    let r = tokio::time::timeout(NO_HANG, third.read(&mut buf))
        .await
        .expect("third closed");
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");

    // Once the second's connect times out, the slot is free again (retry: the release
    // is asynchronous).
    drop(second);
    tokio::time::timeout(NO_HANG, async {
        loop {
            let mut s = TcpStream::connect(p.addr).await.unwrap();
            let _ = s.write_all(&[5, 1, 0]).await;
            let mut m = [0u8; 2];
            if s.read_exact(&mut m).await.is_ok() {
                assert_eq!(m, [5, 0]);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a slot frees up");
}

#[tokio::test]
async fn shutdown_stops_the_listener() {
    let connector: Arc<dyn Connector> = TestConnector::new(Mode::Hang);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_socks(
        listener,
        0,
        connector,
        ProxyConfig::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    // A connection in progress...
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut m = [0u8; 2];
    s.read_exact(&mut m).await.unwrap();
    // ...is aborted when the listener stops, and new ones are refused.
    stop.send(()).unwrap();
    tokio::time::timeout(NO_HANG, task)
        .await
        .expect("serve returns")
        .unwrap();
    assert_closed(&mut s).await;
    assert!(TcpStream::connect(addr).await.is_err());
}
