//! Opening channels: [`connect`] (initiator) and [`accept`] (responder).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ed25519_dalek::VerifyingKey;
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use super::auth::LinkAuth;
use super::channel::{Channel, ChannelReceiver, ChannelSender, RekeyFloor};
use super::circ_ids::CircIdAllocator;
use super::close::CloseSignal;
use super::config::LinkConfig;
use super::error::{LinkError, LinkResult};
use super::handshake::{initiate, respond, Established};
use super::out_queue::OutQueue;
use super::peer::PeerKind;
use super::reader::RecordReader;
use super::stats::RecordStats;
use super::writer::{RecordWriter, RekeyPolicy};

/// Clock skew past which we warn: directory freshness checks work in hours, so a
/// peer this far off will disagree with us about which documents are valid.
const SKEW_WARN_SECS: u64 = 30 * 60;
/// Least time between two skew warnings (the rest go to debug).
const SKEW_WARN_EVERY: u64 = 600;
/// When the last skew warning was logged (Unix seconds, on the node's clock).
static LAST_SKEW_WARNING: AtomicU64 = AtomicU64::new(0);

/// Opens a channel to the relay at `addr`, which must prove `expected` as its identity.
///
/// A client passes `our_auth = None` and stays anonymous (a fresh Noise key per
/// connection); a relay passes its credentials. The TCP connect and the whole handshake
/// share `cfg.handshake_timeout`.
pub async fn connect(
    addr: SocketAddr,
    expected: &VerifyingKey,
    our_auth: Option<&LinkAuth>,
    cfg: &LinkConfig,
) -> LinkResult<Channel> {
    debug!(%addr, "link: connecting");
    let result = tokio::time::timeout(cfg.handshake_timeout, async {
        let stream = TcpStream::connect(addr).await?;
        handshake(stream, cfg, Role::Initiator { expected, our_auth }).await
    })
    .await
    .unwrap_or(Err(LinkError::HandshakeTimeout));
    match &result {
        Ok(ch) => debug!(peer = peer_label(ch), "link: outbound channel open"),
        Err(e) => {
            // The full error may name relay identities: debug only.
            debug!(%addr, "link: outbound handshake failed: {e}");
            info!(error = e.kind(), "link: outbound handshake failed");
        }
    }
    result
}

/// Runs the responder's handshake on an accepted connection.
pub async fn accept(
    stream: TcpStream,
    our_auth: &LinkAuth,
    cfg: &LinkConfig,
) -> LinkResult<Channel> {
    if let Ok(addr) = stream.peer_addr() {
        debug!(%addr, "link: accepted connection");
    }
    let result = tokio::time::timeout(
        cfg.handshake_timeout,
        handshake(stream, cfg, Role::Responder { our_auth }),
    )
    .await
    .unwrap_or(Err(LinkError::HandshakeTimeout));
    match &result {
        Ok(ch) => debug!(peer = peer_label(ch), "link: inbound channel open"),
        // Debug only: anyone can connect and fail, and a port scan must not flood the logs.
        Err(e) => debug!("link: inbound handshake failed: {e}"),
    }
    result
}

/// "client" or "relay": enough for logs without naming anyone.
fn peer_label(ch: &Channel) -> &'static str {
    match ch.peer {
        super::PeerKind::Client => "client",
        super::PeerKind::Relay(_) => "relay",
    }
}

/// Which side of the handshake we run, with what it needs.
enum Role<'a> {
    Initiator {
        expected: &'a VerifyingKey,
        our_auth: Option<&'a LinkAuth>,
    },
    Responder {
        our_auth: &'a LinkAuth,
    },
}

/// Makes the kernel close `stream` if the peer stops answering for about `timeout` (see
/// [`LinkConfig::dead_peer_timeout`]). Best effort: a socket that refuses the options
/// still works, it just notices a dead peer later.
fn detect_dead_peer(stream: &TcpStream, timeout: std::time::Duration) {
    let sock = socket2::SockRef::from(stream);
    // Probes from half the timeout on, four per remaining half: with TCP_USER_TIMEOUT set,
    // Linux gives up once the timeout has passed without an answer.
    // The kernel counts in whole seconds and refuses 0.
    let second = std::time::Duration::from_secs(1);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time((timeout / 2).max(second))
        .with_interval((timeout / 8).max(second))
        .with_retries(4);
    if let Err(e) = sock.set_tcp_keepalive(&keepalive) {
        debug!("link: cannot enable TCP keepalive: {e}");
    }
    #[cfg(target_os = "linux")]
    if let Err(e) = sock.set_tcp_user_timeout(Some(timeout)) {
        debug!("link: cannot set TCP_USER_TIMEOUT: {e}");
    }
}

/// Keeps the kernel from holding more than `lowat` unsent bytes of `stream`
/// ([`LinkConfig::tcp_notsent_lowat`]): the rest of the backlog stays in the channel's
/// queue, where the scheduler decides the order. Best effort: without it the channel
/// works, with the socket buffer in arrival order in front of the scheduler.
fn keep_backlog_queued(stream: &TcpStream, lowat: u32) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_notsent_lowat(lowat) {
        debug!("link: cannot set TCP_NOTSENT_LOWAT: {e}");
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (stream, lowat);
}

/// Splits the stream, runs one side of the handshake, and starts the channel's writer task.
async fn handshake(stream: TcpStream, cfg: &LinkConfig, role: Role<'_>) -> LinkResult<Channel> {
    // Cells are small and latency matters more than packet count: batching happens in the
    // writer task, not in Nagle's algorithm.
    stream.set_nodelay(true)?;
    let local_addr = stream.local_addr().ok();
    // Our NETINFO tells the peer where we see it (how a relay learns its own address).
    let peer_addr = stream.peer_addr()?;
    if let Some(t) = cfg.dead_peer_timeout {
        detect_dead_peer(&stream, t);
    }
    if let Some(lowat) = cfg.tcp_notsent_lowat {
        keep_backlog_queued(&stream, lowat);
    }
    let (read_half, mut write_half) = stream.into_split();
    let stats = Arc::new(RecordStats::default());
    let mut reader = RecordReader::new(read_half, stats.clone());
    reader.set_bandwidth(cfg.bandwidth.clone());
    let is_initiator = matches!(role, Role::Initiator { .. });
    let now = cfg.clock.now_unix();
    let est: Established = match role {
        Role::Initiator { expected, our_auth } => {
            initiate(
                &mut reader,
                &mut write_half,
                expected,
                our_auth,
                now,
                peer_addr,
            )
            .await?
        }
        Role::Responder { our_auth } => {
            respond(&mut reader, &mut write_half, our_auth, now, peer_addr).await?
        }
    };

    // A client sends 0 (protocol.md §5.6), and whatever one sends instead is not a relay's
    // clock: only relays' clocks are compared. At most one warning per SKEW_WARN_EVERY, so
    // peers cannot fill the log.
    let now = cfg.clock.now_unix();
    let skew = est.peer_timestamp.abs_diff(now);
    let relay_peer = matches!(est.peer, PeerKind::Relay(_));
    if relay_peer && est.peer_timestamp != 0 && skew > SKEW_WARN_SECS {
        let last = LAST_SKEW_WARNING.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= SKEW_WARN_EVERY
            && LAST_SKEW_WARNING
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            warn!(skew_secs = skew, "link: a relay's clock differs from ours");
        } else {
            debug!(skew_secs = skew, "link: a relay's clock differs from ours");
        }
    }

    let close = CloseSignal::new();
    reader.set_open_channel(cfg.idle_timeout, close.clone());
    let queue = Arc::new(OutQueue::new(cfg.outbound_queue_cells, cfg.fair_queueing));
    let writer = RecordWriter {
        queue: queue.clone(),
        stream: write_half,
        cipher: est.send,
        close: close.clone(),
        stats: stats.clone(),
        rekey: RekeyPolicy {
            after_records: cfg.rekey_after_records,
            after: cfg.rekey_after,
        },
        bandwidth: cfg.bandwidth.clone(),
    };
    tokio::spawn(writer.run());
    let floor = RekeyFloor {
        min_records: cfg.peer_rekey_min_records,
        min_interval: cfg.peer_rekey_min_interval,
    };

    Ok(Channel {
        sender: ChannelSender::new(queue, close.clone()),
        receiver: ChannelReceiver::new(reader, est.recv, floor, close),
        peer: est.peer,
        is_initiator,
        peer_timestamp: est.peer_timestamp,
        seen_as: est.seen_as,
        local_addr,
        circ_ids: CircIdAllocator::new(
            is_initiator,
            cfg.max_circuits_per_channel,
            &mut rand::rng(),
        ),
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option reaches the socket (Linux; elsewhere it is not set).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[tokio::test]
    async fn notsent_lowat_is_set_on_the_socket() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        keep_backlog_queued(&s, 32 * 1024);
        let got = socket2::SockRef::from(&s).tcp_notsent_lowat().unwrap();
        assert_eq!(got, 32 * 1024);
    }
}
