//! Local proxy listeners: a thin tokio server around the I/O-free parsers in
//! [`super::socks`].
//!
//! [`serve_socks`] accepts SOCKS4, SOCKS4a and SOCKS5 clients; [`serve_http_connect`]
//! accepts HTTP `CONNECT` clients. Both run the same accept loop:
//!
//! - at most [`ProxyConfig::max_connections`] connections are served at once; when the
//!   limit is reached, the oldest connection still in its handshake is closed to make room
//!   for the new one (so a flood of idle or slow connections cannot lock honest clients
//!   out: theirs finish their handshake in milliseconds), and if every connection is past
//!   its handshake the new one is closed immediately;
//! - the handshake must finish within [`ProxyConfig::handshake_timeout`]; reads use a
//!   bounded buffer ([`READ_CHUNK`]) and the parsers bound what they keep;
//! - a `CONNECT` goes to the [`Connector`] (the circuit manager) with the request's
//!   [`IsolationKey`], bounded by [`ProxyConfig::connect_timeout`]; its outcome becomes the
//!   reply code ([`reply_code_for`]);
//! - after success, early data (bytes the client sent after its request) is written to the
//!   stream first, then bytes are copied both ways with half-close: when one side reaches
//!   EOF the write side of the other is shut down and the other direction keeps flowing;
//!   a stream that ends any other way (cut short, idle) resets the client's connection
//!   rather than closing it, so a truncated transfer never looks complete;
//! - BIND, UDP ASSOCIATE and RESOLVE are answered "command not supported"; malformed
//!   handshakes get the parser's error reply (if the protocol has one) and are closed.
//!
//! Names are never resolved locally: a hostname goes to the connector as
//! [`TargetAddr::Hostname`].
//!
//! Logging: at `info` and above only counts and error kinds are logged, never client
//! addresses, destinations or credentials. `debug` adds per-connection outcomes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::admission::{Admission, Pass};
use crate::cell::{EndReason, TargetAddr};
use crate::client::socks::{
    reply, HttpConnectHandshake, ReplyCode, SocksAuth, SocksCommand, SocksError, SocksHandshake,
    SocksRequest, Step,
};
use crate::client::stream::{DataStream, StreamOpenError};
use crate::sync::lock;

/// Bytes read from a client per `read` call during the handshake. Early data the client
/// pipelines after its request is at most this much.
pub const READ_CHUNK: usize = 4096;

/// How long a refused client is given to stop sending before its socket is dropped, so
/// that the error reply is not lost to a TCP reset.
const LINGER: Duration = Duration::from_millis(500);

/// How much a refused client may still send while lingering.
const LINGER_BYTES: usize = 64 * 1024;

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What separates streams that must not share a circuit.
///
/// Two requests may share a circuit only if their keys are equal: they arrived on the same
/// listener and presented the same credentials (or none). `Debug` output redacts the
/// credentials.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IsolationKey {
    /// Index of the listener the request arrived on (the `listener_index` given to
    /// [`serve_socks`] or [`serve_http_connect`]).
    pub listener: u16,
    /// The credentials in the request ([`SocksRequest::isolation_key`]).
    pub auth: SocksAuth,
}

/// Opens streams through the overlay for the proxy; implemented by the circuit manager.
pub trait Connector: Send + Sync + 'static {
    /// Opens a stream to `target:port` on a circuit suitable for `isolation`: streams with
    /// different keys must never share a circuit. `target` may be a hostname; it must be
    /// resolved by the exit, never locally.
    ///
    /// The proxy bounds the returned future by [`ProxyConfig::connect_timeout`] and drops
    /// it when that expires.
    fn connect(
        &self,
        target: TargetAddr,
        port: u16,
        isolation: IsolationKey,
    ) -> Pin<Box<dyn Future<Output = Result<DataStream, StreamOpenError>> + Send + '_>>;
}

/// Limits of a proxy listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Connections served at once; more are closed on accept. Default 1024.
    pub max_connections: usize,
    /// Time allowed for the whole handshake, from accept to a complete request. Default
    /// 10 s.
    pub handshake_timeout: Duration,
    /// Time allowed for the connector to open the stream. Default 60 s.
    pub connect_timeout: Duration,
    /// An open stream on which no byte moves in either direction for this long is reset
    /// (a circuit can stall without closing, e.g. behind a hung relay); `None`: never.
    /// Default 300 s, the exits' own idle limit.
    pub idle_timeout: Option<Duration>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(60),
            idle_timeout: Some(Duration::from_secs(300)),
        }
    }
}

/// The reply code reporting a failure to open a stream.
///
/// Exit policy → not allowed by ruleset; name resolution failure or no route → host
/// unreachable; connection refused → connection refused; a timeout at the exit or in the
/// client → TTL expired; no usable consensus → network unreachable; anything else →
/// general failure.
pub fn reply_code_for(err: &StreamOpenError) -> ReplyCode {
    match err {
        StreamOpenError::Refused(EndReason::ExitPolicy) => ReplyCode::NotAllowed,
        StreamOpenError::Refused(EndReason::ResolveFailed | EndReason::NoRoute) => {
            ReplyCode::HostUnreachable
        }
        StreamOpenError::Refused(EndReason::ConnectRefused) => ReplyCode::ConnectionRefused,
        StreamOpenError::Refused(EndReason::Timeout) | StreamOpenError::Timeout => {
            ReplyCode::TtlExpired
        }
        // The whole network is out of reach until a live consensus is fetched.
        StreamOpenError::NoConsensus => ReplyCode::NetworkUnreachable,
        StreamOpenError::Refused(_)
        | StreamOpenError::CircuitClosed
        | StreamOpenError::TooManyStreams => ReplyCode::GeneralFailure,
    }
}

/// Serves SOCKS4, SOCKS4a and SOCKS5 clients on `listener` until `shutdown` completes.
///
/// `listener_index` becomes [`IsolationKey::listener`] for every request accepted here.
/// When this returns, connections still in progress are aborted.
pub async fn serve_socks(
    listener: TcpListener,
    listener_index: u16,
    connector: Arc<dyn Connector>,
    cfg: ProxyConfig,
    shutdown: impl Future<Output = ()>,
) {
    serve(
        listener,
        listener_index,
        connector,
        cfg,
        shutdown,
        Protocol::Socks,
    )
    .await;
}

/// Serves HTTP `CONNECT` clients on `listener` until `shutdown` completes.
///
/// Same behaviour as [`serve_socks`]; credentials come from `Proxy-Authorization: Basic`.
pub async fn serve_http_connect(
    listener: TcpListener,
    listener_index: u16,
    connector: Arc<dyn Connector>,
    cfg: ProxyConfig,
    shutdown: impl Future<Output = ()>,
) {
    serve(
        listener,
        listener_index,
        connector,
        cfg,
        shutdown,
        Protocol::HttpConnect,
    )
    .await;
}

/// Which parser a listener uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    /// SOCKS4/4a/5.
    Socks,
    /// HTTP `CONNECT`.
    HttpConnect,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Socks => "SOCKS",
            Protocol::HttpConnect => "HTTP CONNECT",
        }
    }
}

/// Either handshake state machine.
enum Handshake {
    /// SOCKS4/4a/5.
    Socks(SocksHandshake),
    /// HTTP `CONNECT`.
    Http(HttpConnectHandshake),
}

impl Handshake {
    fn new(protocol: Protocol) -> Self {
        match protocol {
            Protocol::Socks => Handshake::Socks(SocksHandshake::new()),
            Protocol::HttpConnect => Handshake::Http(HttpConnectHandshake::new()),
        }
    }

    fn feed(&mut self, input: &[u8]) -> Result<Step, SocksError> {
        match self {
            Handshake::Socks(h) => h.feed(input),
            Handshake::Http(h) => h.feed(input),
        }
    }
}

/// Counters for one listener, logged when it stops.
#[derive(Debug, Default)]
struct Stats {
    /// Connections accepted and served.
    accepted: AtomicU64,
    /// Streams opened and relayed.
    opened: AtomicU64,
    /// Connections that ended without a stream (bad handshake, refusal, timeout, ...).
    failed: AtomicU64,
}

/// Why a connection ended without a relayed stream. Carries no client-supplied data.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    /// A socket error during the handshake or reply.
    #[error("I/O error: {0:?}")]
    Io(io::ErrorKind),
    /// The client closed before completing its request.
    #[error("client closed during the handshake")]
    ClientClosed,
    /// The handshake did not finish in time.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// The request was malformed or refused by the parser.
    #[error("handshake refused: {0}")]
    Protocol(#[from] SocksError),
    /// A command this proxy does not serve.
    #[error("unsupported command {0:?}")]
    Unsupported(SocksCommand),
    /// The connector failed.
    #[error("stream not opened: {0}")]
    Connect(StreamOpenError),
    /// The connector did not answer within the connect timeout.
    #[error("stream not opened: connect timeout")]
    ConnectTimeout,
    /// The handshake parser reported more input consumed than it was given (a bug).
    #[error("handshake parser consumed {consumed} of {fed} bytes")]
    ParserOverrun {
        /// What the parser reported.
        consumed: usize,
        /// What it was given.
        fed: usize,
    },
}

impl From<io::Error> for ConnError {
    fn from(e: io::Error) -> Self {
        ConnError::Io(e.kind())
    }
}

/// Per-listener state shared by its connection tasks.
struct Shared {
    protocol: Protocol,
    listener_index: u16,
    connector: Arc<dyn Connector>,
    cfg: ProxyConfig,
    stats: Stats,
}

async fn serve(
    listener: TcpListener,
    listener_index: u16,
    connector: Arc<dyn Connector>,
    cfg: ProxyConfig,
    shutdown: impl Future<Output = ()>,
    protocol: Protocol,
) {
    let slots = Admission::new(cfg.max_connections);
    let shared = Arc::new(Shared {
        protocol,
        listener_index,
        connector,
        cfg,
        stats: Stats::default(),
    });
    info!(
        listener = listener_index,
        "{} listener started",
        protocol.name()
    );
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((sock, peer)) => {
                    let evicted_before = slots.evicted();
                    let Some(pass) = slots.admit() else {
                        if slots.refused() == 1 {
                            warn!(
                                listener = listener_index,
                                max = shared.cfg.max_connections,
                                "connection limit reached; closing new connections"
                            );
                        }
                        debug!(%peer, "over the connection limit; closed");
                        drop(sock);
                        continue;
                    };
                    if evicted_before == 0 && slots.evicted() == 1 {
                        warn!(
                            listener = listener_index,
                            max = shared.cfg.max_connections,
                            "connection limit reached; closing the oldest unfinished handshakes"
                        );
                    }
                    shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
                    debug!(%peer, listener = listener_index, "accepted");
                    let shared = Arc::clone(&shared);
                    tasks.spawn(async move {
                        connection(sock, &shared, pass).await;
                    });
                }
                Err(e) => {
                    warn!(kind = ?e.kind(), "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    tasks.shutdown().await;
    let s = &shared.stats;
    info!(
        listener = listener_index,
        accepted = s.accepted.load(Ordering::Relaxed),
        over_limit = slots.refused(),
        evicted = slots.evicted(),
        opened = s.opened.load(Ordering::Relaxed),
        failed = s.failed.load(Ordering::Relaxed),
        "{} listener stopped",
        protocol.name()
    );
}

/// Serves one client connection to the end. `pass` holds its slot; while the handshake
/// runs the connection may be evicted to make room for a newer one.
async fn connection(mut sock: TcpStream, shared: &Shared, mut pass: Pass) {
    // Latency matters more than packet count for interactive traffic.
    let _ = sock.set_nodelay(true);
    let deadline = tokio::time::Instant::now() + shared.cfg.handshake_timeout;
    if let Err(why) = pass.first_bytes(&sock, deadline).await {
        // Evicted or silent until the deadline: close at once (nothing to linger for),
        // so an evicted slot goes to the newer connection without delay.
        shared.stats.failed.fetch_add(1, Ordering::Relaxed);
        debug!(?why, "closed before the handshake");
        return;
    }
    let eviction = pass.eviction();
    let opened = tokio::select! {
        r = open(&mut sock, shared, deadline, &pass) => Some(r),
        () = eviction.wait() => None,
    };
    let Some(opened) = opened else {
        shared.stats.failed.fetch_add(1, Ordering::Relaxed);
        debug!("evicted during the handshake");
        return;
    };
    match opened {
        Ok((stream, early)) => {
            shared.stats.opened.fetch_add(1, Ordering::Relaxed);
            match relay(sock, stream, &early, shared.cfg.idle_timeout).await {
                Ok((up, down)) => debug!(up, down, "stream finished"),
                Err(e) => debug!(kind = ?e.kind(), "stream ended with an error"),
            }
        }
        Err(e) => {
            shared.stats.failed.fetch_add(1, Ordering::Relaxed);
            debug!(error = %e, "connection refused");
            linger(sock).await;
        }
    }
}

/// Runs the handshake and opens the stream. On success the client has been told so; on
/// failure it has been sent the error reply, if any.
async fn open(
    sock: &mut TcpStream,
    shared: &Shared,
    deadline: tokio::time::Instant,
    pass: &Pass,
) -> Result<(DataStream, Vec<u8>), ConnError> {
    let handshake = tokio::time::timeout_at(deadline, handshake(sock, shared)).await;
    // Past the handshake (complete or failed): no longer evictable. A complete request
    // is an honest client's; a failed one ends promptly anyway.
    pass.handshake_done();
    let (request, early) = match handshake {
        Ok(r) => r?,
        Err(_) => return Err(ConnError::HandshakeTimeout),
    };
    let SocksRequest {
        version,
        command,
        target,
        port,
        auth,
    } = request;
    if command != SocksCommand::Connect {
        sock.write_all(&reply(version, ReplyCode::CommandNotSupported, None))
            .await?;
        return Err(ConnError::Unsupported(command));
    }
    debug!(target = %DebugTarget(&target), port, "connecting");
    let isolation = IsolationKey {
        listener: shared.listener_index,
        auth,
    };
    let outcome = tokio::time::timeout(
        shared.cfg.connect_timeout,
        shared.connector.connect(target, port, isolation),
    )
    .await;
    let (code, result) = match outcome {
        Ok(Ok(stream)) => (ReplyCode::Succeeded, Ok(stream)),
        Ok(Err(e)) => (reply_code_for(&e), Err(ConnError::Connect(e))),
        Err(_) => (ReplyCode::TtlExpired, Err(ConnError::ConnectTimeout)),
    };
    sock.write_all(&reply(version, code, None)).await?;
    result.map(|stream| (stream, early))
}

/// Reads and feeds the parser until the request is complete. Returns the request and the
/// early data that followed it.
async fn handshake(
    sock: &mut TcpStream,
    shared: &Shared,
) -> Result<(SocksRequest, Vec<u8>), ConnError> {
    let mut hs = Handshake::new(shared.protocol);
    let mut buf = Vec::with_capacity(READ_CHUNK);
    loop {
        // `buf` holds exactly the bytes of this read (at most READ_CHUNK: the capacity).
        buf.clear();
        let n = (&mut *sock)
            .take(READ_CHUNK as u64)
            .read_buf(&mut buf)
            .await?;
        if n == 0 {
            return Err(ConnError::ClientClosed);
        }
        let mut input = buf.as_slice();
        loop {
            match hs.feed(input) {
                Ok(Step::NeedMore) => break,
                Ok(Step::Reply { reply, consumed }) => {
                    sock.write_all(&reply).await?;
                    input = after_consumed(input, consumed)?;
                }
                Ok(Step::Done { request, consumed }) => {
                    let early = after_consumed(input, consumed)?.to_vec();
                    return Ok((request, early));
                }
                Err(e) => {
                    if let Some(r) = e.reply() {
                        sock.write_all(&r).await?;
                    }
                    return Err(e.into());
                }
            }
        }
    }
}

/// What follows the `consumed` bytes of `input` that the parser took. The parser never
/// reports more than it was fed; if it did, that is a bug, and an error rather than a
/// silently empty rest.
fn after_consumed(input: &[u8], consumed: usize) -> Result<&[u8], ConnError> {
    input.get(consumed..).ok_or(ConnError::ParserOverrun {
        consumed,
        fed: input.len(),
    })
}

/// Forwards early data, then copies both ways with half-close until both directions end,
/// or until nothing has moved for `idle`. Returns the bytes sent to and received from the
/// stream (early data included).
///
/// A FIN reaches the client only for the exit's END(DONE). Any error (the stream cut
/// short, the idle limit, the client's socket failing) resets the client's connection
/// instead, so a truncated download never looks complete, and aborts the stream, so the
/// exit's destination sees a failure too. Bytes already read from the stream were handed
/// to the client's socket first; a reset discards what its kernel buffer still holds.
async fn relay(
    sock: TcpStream,
    stream: DataStream,
    early: &[u8],
    idle: Option<Duration>,
) -> io::Result<(u64, u64)> {
    // SO_LINGER 0 from the start: until the copy ends cleanly, any drop of the socket
    // (an error below, or this task cancelled when the listener stops) sends RST, not FIN.
    let _ = sock.set_zero_linger();
    let last = Arc::new(std::sync::Mutex::new(tokio::time::Instant::now()));
    let mut sock = Activity {
        inner: sock,
        last: Arc::clone(&last),
    };
    let mut stream = Activity {
        inner: stream,
        last: Arc::clone(&last),
    };
    let outcome = {
        let copy = async {
            if !early.is_empty() {
                stream.write_all(early).await?;
            }
            tokio::io::copy_bidirectional(&mut sock, &mut stream).await
        };
        match idle {
            None => copy.await,
            Some(idle) => {
                let watchdog = async {
                    loop {
                        let deadline = *lock(&last) + idle;
                        if tokio::time::Instant::now() >= deadline {
                            return;
                        }
                        tokio::time::sleep_until(deadline).await;
                    }
                };
                tokio::select! {
                    r = copy => r,
                    () = watchdog => Err(io::Error::new(io::ErrorKind::TimedOut, "stream idle")),
                }
            }
        }
    };
    match outcome {
        Ok((up, down)) => {
            // Both directions ended with a FIN: close normally.
            let _ = socket2::SockRef::from(&sock.inner).set_linger(None);
            Ok((up.saturating_add(early.len() as u64), down))
        }
        Err(e) => {
            stream.inner.abort();
            Err(e)
        }
    }
}

/// A socket that records when it last read any byte (the stream's liveness).
struct Activity<S> {
    inner: S,
    last: Arc<std::sync::Mutex<tokio::time::Instant>>,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Activity<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            *lock(&self.last) = tokio::time::Instant::now();
        }
        r
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Activity<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Closes a refused client's connection gracefully: sends FIN, then reads (and discards)
/// what it still sends for a bounded time, so that unread input does not turn the close
/// into a reset that could destroy the error reply before the client reads it.
async fn linger(mut sock: TcpStream) {
    if sock.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut buf = [0u8; 1024];
        let mut total = 0usize;
        while total < LINGER_BYTES {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total = total.saturating_add(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Shows a destination in debug logs (never at `info`).
struct DebugTarget<'a>(&'a TargetAddr);

impl std::fmt::Display for DebugTarget<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            TargetAddr::Ip(ip) => write!(f, "{ip}"),
            TargetAddr::Hostname(h) => f.write_str(h.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_codes() {
        use EndReason as R;
        use StreamOpenError as E;
        let cases = [
            (E::Refused(R::ExitPolicy), ReplyCode::NotAllowed),
            (E::Refused(R::ResolveFailed), ReplyCode::HostUnreachable),
            (E::Refused(R::NoRoute), ReplyCode::HostUnreachable),
            (E::Refused(R::ConnectRefused), ReplyCode::ConnectionRefused),
            (E::Refused(R::Timeout), ReplyCode::TtlExpired),
            (E::Timeout, ReplyCode::TtlExpired),
            (E::Refused(R::Misc), ReplyCode::GeneralFailure),
            (E::Refused(R::Destroyed), ReplyCode::GeneralFailure),
            (E::Refused(R::Done), ReplyCode::GeneralFailure),
            (E::Refused(R::Internal), ReplyCode::GeneralFailure),
            (E::Refused(R::ResourceLimit), ReplyCode::GeneralFailure),
            (E::Refused(R::ConnectionReset), ReplyCode::GeneralFailure),
            (E::Refused(R::Protocol), ReplyCode::GeneralFailure),
            (E::Refused(R::NotDirectory), ReplyCode::GeneralFailure),
            (E::CircuitClosed, ReplyCode::GeneralFailure),
            (E::TooManyStreams, ReplyCode::GeneralFailure),
            (E::NoConsensus, ReplyCode::NetworkUnreachable),
        ];
        for (err, code) in cases {
            assert_eq!(reply_code_for(&err), code, "{err:?}");
        }
    }

    #[test]
    fn socks5_reply_bytes_for_failures() {
        let r = reply(
            crate::client::socks::SocksVersion::V5,
            reply_code_for(&StreamOpenError::Refused(EndReason::ExitPolicy)),
            None,
        );
        assert_eq!(r, [5, 2, 0, 1, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn default_config() {
        let c = ProxyConfig::default();
        assert_eq!(c.max_connections, 1024);
        assert_eq!(c.handshake_timeout, Duration::from_secs(10));
        assert_eq!(c.connect_timeout, Duration::from_secs(60));
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(300)));
    }

    #[test]
    fn isolation_keys_differ_by_listener_and_auth() {
        let a = IsolationKey {
            listener: 0,
            auth: SocksAuth::None,
        };
        let b = IsolationKey {
            listener: 1,
            auth: SocksAuth::None,
        };
        let c = IsolationKey {
            listener: 0,
            auth: SocksAuth::Username {
                user: b"u".to_vec(),
                pass: Vec::new(),
            },
        };
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, a.clone());
        assert!(!format!("{c:?}").contains("\"u\""));
    }
}
