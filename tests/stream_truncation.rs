//! Truncation is visible (issue 15, item 4), over real TCP on 127.0.0.1 through a 3-relay
//! in-process network and the SOCKS5 / HTTP CONNECT listeners: a stream that ends with
//! END(DONE) reaches the application as a FIN after every byte, while one cut short (the
//! circuit destroyed, the channel to the guard torn down, END with another reason, the
//! proxy's idle timeout) reaches it as a TCP reset, never as a clean-looking EOF. Where
//! the exit sees the cut too, its destination connection is reset as well.
//!
//! The application side is a plain `TcpStream`: `read` returning `Ok(0)` is a FIN,
//! `Err(ConnectionReset)` a reset.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use allium::cell::TargetAddr;
use allium::client::socks_server::{
    serve_http_connect, serve_socks, Connector, IsolationKey, ProxyConfig,
};
use allium::dir::ExitPolicy;
use allium::proto::{CircuitHandle, DataStream, StreamOpenError};
use allium::relay::RelayHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

mod common;
use common::{exit_circuit, NO_HANG};

/// Bytes the destination sends (and the application reads) before the stream is cut; the
/// destination then holds its connection open, so the cut is always mid-transfer.
const FIRST: usize = 200_000;

fn pattern(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

/// Opens every stream on one circuit.
struct OneCircuit(CircuitHandle);

impl Connector for OneCircuit {
    fn connect(
        &self,
        target: TargetAddr,
        port: u16,
        _isolation: IsolationKey,
    ) -> Pin<Box<dyn Future<Output = Result<DataStream, StreamOpenError>> + Send + '_>> {
        Box::pin(async move { self.0.open_stream(target, port, NO_HANG).await })
    }

    fn open_udp(
        &self,
        target: TargetAddr,
        port: u16,
        _isolation: IsolationKey,
    ) -> Pin<Box<dyn Future<Output = Result<allium::proto::UdpFlow, StreamOpenError>> + Send + '_>>
    {
        Box::pin(async move { self.0.open_udp(target, port, NO_HANG).await })
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Socks,
    Http,
}

/// A proxy listener of `kind` over `circ`; stops when the returned sender is dropped.
async fn proxy(
    kind: Kind,
    circ: CircuitHandle,
    cfg: ProxyConfig,
) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let connector: Arc<dyn Connector> = Arc::new(OneCircuit(circ));
    match kind {
        Kind::Socks => tokio::spawn(serve_socks(listener, 0, connector, cfg, shutdown)),
        Kind::Http => tokio::spawn(serve_http_connect(listener, 0, connector, cfg, shutdown)),
    };
    (addr, stop)
}

/// A destination that sends `pattern(size)` to each connection it accepts, closes its
/// sending side normally (FIN) if `finish`, and then hands the connection to the test
/// (which otherwise decides how it ends: reset, or held open).
async fn destination(
    size: usize,
    finish: bool,
) -> (SocketAddr, mpsc::UnboundedReceiver<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                if sock.write_all(&pattern(size)).await.is_err() {
                    return;
                }
                if finish && sock.shutdown().await.is_err() {
                    return;
                }
                let _ = tx.send(sock);
            });
        }
    });
    (addr, rx)
}

/// Connects through the proxy to `127.0.0.1:port`; returns the tunnel.
async fn tunnel(kind: Kind, proxy: SocketAddr, port: u16) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    match kind {
        Kind::Socks => {
            let mut req = vec![5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1];
            req.extend_from_slice(&port.to_be_bytes());
            s.write_all(&req).await.unwrap();
            let mut reply = [0u8; 2 + 10];
            tokio::time::timeout(NO_HANG, s.read_exact(&mut reply))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(reply[..4], [5, 0, 5, 0], "SOCKS5 reply {reply:?}");
        }
        Kind::Http => {
            let req =
                format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                tokio::time::timeout(NO_HANG, s.read_exact(&mut b))
                    .await
                    .unwrap()
                    .unwrap();
                head.push(b[0]);
            }
            assert!(head.starts_with(b"HTTP/1.1 200 "), "{head:?}");
        }
    }
    s
}

/// How a connection's read side ended.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    /// `read` returned `Ok(0)`.
    Fin,
    /// `read` failed with this kind.
    Error(io::ErrorKind),
}

/// Reads until the connection ends (bounded); returns what was read and how it ended.
async fn read_to_end(sock: &mut TcpStream) -> (Vec<u8>, Ending) {
    let mut all = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let ending = tokio::time::timeout(NO_HANG, async {
        loop {
            match sock.read(&mut buf).await {
                Ok(0) => return Ending::Fin,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(e) => return Ending::Error(e.kind()),
            }
        }
    })
    .await
    .expect("the connection neither ended nor failed");
    (all, ending)
}

/// Reads exactly `n` bytes (bounded) and checks they are the pattern's first `n`.
async fn read_first(sock: &mut TcpStream, n: usize) {
    let mut got = vec![0u8; n];
    tokio::time::timeout(NO_HANG, sock.read_exact(&mut got))
        .await
        .expect("the first bytes never arrived")
        .unwrap();
    assert!(got == pattern(n), "the first {n} bytes differ");
}

/// Relays, a circuit through them, a destination, a proxy of `kind` and a tunnel to the
/// destination that has carried its first [`FIRST`] bytes, `read` of which the
/// application has read.
async fn mid_transfer(kind: Kind, cfg: ProxyConfig, read: usize) -> Scene {
    let (relays, circ) = exit_circuit(ExitPolicy::default_exit_allow_loopback()).await;
    let (dest, mut accepted) = destination(FIRST, false).await;
    let (proxy, stop) = proxy(kind, circ, cfg).await;
    let mut app = tunnel(kind, proxy, dest.port()).await;
    read_first(&mut app, read).await;
    let far = tokio::time::timeout(NO_HANG, accepted.recv())
        .await
        .unwrap()
        .unwrap();
    Scene {
        relays,
        app,
        far,
        _stop: stop,
    }
}

struct Scene {
    relays: Vec<RelayHandle>,
    /// The application's connection to the proxy.
    app: TcpStream,
    /// The destination's connection from the exit.
    far: TcpStream,
    _stop: oneshot::Sender<()>,
}

/// The application, having read the first `had` bytes, must see a reset after at most
/// the rest of the first [`FIRST`] bytes, in order. Returns how many more it got.
async fn assert_reset(app: &mut TcpStream, had: usize, what: &str) -> usize {
    let (rest, ending) = read_to_end(app).await;
    assert_eq!(
        ending,
        Ending::Error(io::ErrorKind::ConnectionReset),
        "{what}: the application must see a reset, not a clean end (after {} more bytes)",
        rest.len()
    );
    let expected = pattern(FIRST);
    assert!(
        expected.get(had..had + rest.len()) == Some(rest.as_slice()),
        "{what}: {} bytes after the first {had} are not the transfer's next ones",
        rest.len()
    );
    rest.len()
}

/// END(DONE): the destination sends everything and closes normally. The application gets
/// every byte, then a FIN (both listeners).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_end_is_a_fin_after_every_byte() {
    const SIZE: usize = 1_000_000;
    let (_relays, circ) = exit_circuit(ExitPolicy::default_exit_allow_loopback()).await;
    let (dest, mut accepted) = destination(SIZE, true).await;
    for kind in [Kind::Socks, Kind::Http] {
        let (proxy, _stop) = proxy(kind, circ.clone(), ProxyConfig::default()).await;
        let mut app = tunnel(kind, proxy, dest.port()).await;
        let (body, ending) = read_to_end(&mut app).await;
        assert_eq!(ending, Ending::Fin, "{kind:?}");
        assert!(body == pattern(SIZE), "{kind:?}: got {} bytes", body.len());
        let mut far = tokio::time::timeout(NO_HANG, accepted.recv())
            .await
            .unwrap()
            .unwrap();
        // The other direction still works after the half-close, and its clean end is a
        // FIN at the destination.
        app.write_all(b"bye").await.unwrap();
        app.shutdown().await.unwrap();
        let (back, ending) = read_to_end(&mut far).await;
        assert_eq!(
            (back.as_slice(), ending),
            (&b"bye"[..], Ending::Fin),
            "{kind:?}"
        );
    }
}

/// The circuit destroyed mid-transfer (the middle relay goes away: the guard sends
/// DESTROY) while the application has read only half of what the destination sent: it
/// reads what had reached it, in order, then a reset; the destination is reset too (the
/// exit's side of the circuit is gone as well).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_destroyed_mid_transfer_is_a_reset() {
    let Scene {
        mut relays,
        mut app,
        mut far,
        _stop,
    } = mid_transfer(Kind::Socks, ProxyConfig::default(), FIRST / 2).await;
    relays.remove(1).shutdown().await;
    let more = assert_reset(&mut app, FIRST / 2, "circuit destroyed").await;
    eprintln!(
        "{more} of the {} bytes in flight reached the application before the reset",
        FIRST - FIRST / 2
    );
    let (_, ending) = read_to_end(&mut far).await;
    assert_eq!(
        ending,
        Ending::Error(io::ErrorKind::ConnectionReset),
        "the exit must reset the destination when the circuit is destroyed"
    );
}

/// The client's channel to its guard torn down mid-transfer (the guard goes away), over
/// HTTP CONNECT: a reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_torn_down_mid_transfer_is_a_reset() {
    let Scene {
        mut relays,
        mut app,
        far: _far,
        _stop,
    } = mid_transfer(Kind::Http, ProxyConfig::default(), FIRST).await;
    relays.remove(0).shutdown().await;
    assert_reset(&mut app, FIRST, "channel torn down").await;
}

/// The destination resets its connection mid-transfer: the exit sends END with reason
/// CONNRESET (not DONE), and the application sees a reset too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_with_another_reason_than_done_is_a_reset() {
    let Scene {
        relays: _relays,
        mut app,
        far,
        _stop,
    } = mid_transfer(Kind::Socks, ProxyConfig::default(), FIRST).await;
    far.set_zero_linger().unwrap();
    drop(far);
    assert_reset(&mut app, FIRST, "END(CONNRESET)").await;
}

/// The proxy's idle timeout ends a stalled stream: the application sees a reset, and the
/// exit is told the stream failed (END other than DONE), so the destination is reset too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_is_a_reset_both_ways() {
    let cfg = ProxyConfig {
        idle_timeout: Some(Duration::from_secs(2)),
        ..ProxyConfig::default()
    };
    let Scene {
        relays: _relays,
        mut app,
        mut far,
        _stop,
    } = mid_transfer(Kind::Socks, cfg, FIRST).await;
    // Nothing moves any more: the destination holds the connection open, silent.
    assert_reset(&mut app, FIRST, "idle timeout").await;
    let (_, ending) = read_to_end(&mut far).await;
    assert_eq!(
        ending,
        Ending::Error(io::ErrorKind::ConnectionReset),
        "the destination must be reset when the client gives the stream up"
    );
}
