//! One client connection: the handshake (fed to the I/O-free parsers in
//! [`crate::client::socks`]), the request to the [`Connector`](super::Connector), the
//! reply, then the copy ([`super::copy`]), a UDP association ([`super::udp_associate`]),
//! or, for a refused client, a graceful close.

use std::io;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

use crate::admission::Pass;
use crate::cell::TargetAddr;
use crate::client::socks::{
    reply, HttpConnectHandshake, ReplyCode, SocksCommand, SocksError, SocksHandshake, SocksRequest,
    SocksVersion, Step,
};
use crate::proto::{DataStream, StreamOpenError};

use super::copy::relay;
use super::shared::{Protocol, Shared};
use super::udp_associate::Association;
use super::udp_source::ClientSource;
use super::{reply_code_for, IsolationKey};

/// Bytes read from a client per `read` call during the handshake. Early data the client
/// pipelines after its request is at most this much.
pub const READ_CHUNK: usize = 4096;

/// How long a refused client is given to stop sending before its socket is dropped, so
/// that the error reply is not lost to a TCP reset.
const LINGER: Duration = Duration::from_millis(500);

/// How much a refused client may still send while lingering.
const LINGER_BYTES: usize = 64 * 1024;

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
    /// A UDP ASSOCIATE naming a client address other than the connection's peer.
    #[error("UDP ASSOCIATE from another address than the connection's")]
    UdpForeignAddress,
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

/// What a served request became.
enum Opened {
    /// A stream, and the early data to write to it first.
    Stream(DataStream, Vec<u8>),
    /// A UDP association, and what the client sent after its request.
    Udp(Association, Vec<u8>),
}

impl From<io::Error> for ConnError {
    fn from(e: io::Error) -> Self {
        ConnError::Io(e.kind())
    }
}

/// Serves one client connection to the end. `pass` holds its slot; while the handshake
/// runs the connection may be evicted to make room for a newer one.
pub(super) async fn connection(mut sock: TcpStream, shared: &Shared, mut pass: Pass) {
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
        Ok(Opened::Stream(stream, early)) => {
            shared.stats.opened.fetch_add(1, Ordering::Relaxed);
            match relay(sock, stream, &early, shared.cfg.idle_timeout).await {
                Ok((up, down)) => debug!(up, down, "stream finished"),
                Err(e) => debug!(kind = ?e.kind(), "stream ended with an error"),
            }
        }
        Ok(Opened::Udp(association, early)) => {
            // Holds `pass` throughout: an association counts as one connection.
            shared.stats.associations.fetch_add(1, Ordering::Relaxed);
            association.run(sock, &early, shared).await;
        }
        Err(e) => {
            shared.stats.failed.fetch_add(1, Ordering::Relaxed);
            debug!(error = %e, "connection refused");
            linger(sock).await;
        }
    }
}

/// Runs the handshake and opens the stream (or binds the UDP association). On success the
/// client has been told so; on failure it has been sent the error reply, if any.
async fn open(
    sock: &mut TcpStream,
    shared: &Shared,
    deadline: tokio::time::Instant,
    pass: &Pass,
) -> Result<Opened, ConnError> {
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
    // A UDP association's flows are isolated like the client's streams.
    let isolation = IsolationKey {
        listener: shared.listener_index,
        auth,
    };
    // SOCKS4 and HTTP CONNECT have no UDP (their parsers never yield UDP ASSOCIATE).
    if command == SocksCommand::UdpAssociate && version == SocksVersion::V5 {
        return associate(sock, &target, port, isolation, early).await;
    }
    if command != SocksCommand::Connect {
        sock.write_all(&reply(version, ReplyCode::CommandNotSupported, None))
            .await?;
        return Err(ConnError::Unsupported(command));
    }
    debug!(target = %DebugTarget(&target), port, "connecting");
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
    result.map(|stream| Opened::Stream(stream, early))
}

/// Binds a UDP association's relay socket and tells the client where it is.
async fn associate(
    sock: &mut TcpStream,
    target: &TargetAddr,
    port: u16,
    isolation: IsolationKey,
    early: Vec<u8>,
) -> Result<Opened, ConnError> {
    // The client must send from the address it connected from (and the one it named).
    let Some(source) = ClientSource::new(sock.peer_addr()?.ip(), target, port) else {
        sock.write_all(&reply(SocksVersion::V5, ReplyCode::NotAllowed, None))
            .await?;
        return Err(ConnError::UdpForeignAddress);
    };
    let bound = match Association::bind(sock, source, isolation).await {
        Ok(a) => a.reply_addr().map(|addr| (a, addr)),
        Err(e) => Err(e),
    };
    match bound {
        Ok((association, addr)) => {
            sock.write_all(&reply(SocksVersion::V5, ReplyCode::Succeeded, Some(addr)))
                .await?;
            debug!("UDP association bound");
            Ok(Opened::Udp(association, early))
        }
        Err(e) => {
            sock.write_all(&reply(SocksVersion::V5, ReplyCode::GeneralFailure, None))
                .await?;
            Err(e.into())
        }
    }
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
