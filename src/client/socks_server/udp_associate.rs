//! SOCKS5 UDP ASSOCIATE (RFC 1928 §7): a UDP relay socket for one client, living as long
//! as the client's TCP control connection.
//!
//! - The relay socket is bound on the address the control connection arrived on (port
//!   0) and reported in the reply.
//! - Only the client's datagrams are taken ([`ClientSource`]): from the TCP peer's IP (and
//!   the address and port the request named, if any); the first one taken pins the
//!   source port. Others, fragments (FRAG ≠ 0: the RFC says MUST drop) and malformed
//!   headers are dropped silently (counted; never logged with addresses).
//! - Each destination gets its own flow from the [`Connector`](super::Connector), with the
//!   isolation key the client's streams would have; limits in [`super::udp_destinations`].
//!   Names go to the exit as given.
//! - Replies go to the pinned address with a header naming the destination as the client
//!   addressed it.
//! - The association ends when the control connection closes (EOF, error, or more than
//!   [`MAX_CONTROL_BYTES`] sent on it), or when no datagram went either way for the
//!   listener's idle timeout (as a stream would): every flow is dropped (ENDed at the
//!   exit) and the socket closed, and so is the control connection.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};
use tracing::debug;

use crate::client::socks::{encode_udp_datagram, parse_udp_datagram, UdpHeaderError};
use crate::proto::{StreamOpenError, UdpFlow};

use super::shared::Shared;
use super::udp_destinations::{Dest, Destinations, DropReason, Outcome};
use super::udp_source::ClientSource;
use super::IsolationKey;

/// What a client may send on the control connection after its request (it has nothing to
/// say there); more ends the association.
pub const MAX_CONTROL_BYTES: usize = 64 * 1024;

/// Receive buffer: larger than any acceptable datagram (a 262-byte header at most plus
/// 1,472 bytes), so one cut short by the buffer is always seen as oversized.
const RECV_BUF: usize = 4096;

/// A bound relay socket waiting to serve its client.
pub(super) struct Association {
    udp: Arc<UdpSocket>,
    source: ClientSource,
    isolation: IsolationKey,
    /// Datagrams relayed to the client, by every flow (activity for the idle timeout).
    replied: Arc<AtomicU64>,
}

/// Why datagrams were dropped during one association, for the debug line at its end.
#[derive(Default)]
struct Counts {
    foreign: u64,
    malformed: u64,
    fragments: u64,
    held_back: u64,
    over_limit: u64,
    queue_full: u64,
    sent: u64,
}

impl Association {
    /// Binds the relay socket on the address `control` arrived on, for datagrams from
    /// `source`.
    pub(super) async fn bind(
        control: &TcpStream,
        source: ClientSource,
        isolation: IsolationKey,
    ) -> io::Result<Self> {
        let local = control.local_addr()?;
        // An IPv4 client of a dual-stack listener arrives as a v4-mapped address, which a
        // UDP socket cannot bind as such; a link-local IPv6 address needs its scope.
        let bind_at = match local {
            SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_none() => {
                SocketAddr::V6(std::net::SocketAddrV6::new(*v6.ip(), 0, 0, v6.scope_id()))
            }
            other => SocketAddr::new(other.ip().to_canonical(), 0),
        };
        let udp = UdpSocket::bind(bind_at).await?;
        Ok(Association {
            udp: Arc::new(udp),
            source,
            isolation,
            replied: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The address to report as BND.ADDR/BND.PORT (IPv4 as IPv4, even on a dual-stack
    /// listener).
    pub(super) fn reply_addr(&self) -> io::Result<SocketAddr> {
        let a = self.udp.local_addr()?;
        Ok(SocketAddr::new(a.ip().to_canonical(), a.port()))
    }

    /// Serves the association until the control connection closes. `early` is what the
    /// client sent after its request on the control connection.
    pub(super) async fn run(mut self, mut control: TcpStream, early: &[u8], shared: &Shared) {
        let mut control_bytes = early.len();
        let mut ctl = [0u8; 1024];
        let mut buf = vec![0u8; RECV_BUF];
        let mut dests = Destinations::<UdpFlow>::new();
        let mut opening = Opening::default();
        let mut replies = JoinSet::new();
        let mut counts = Counts::default();
        // Idle: no datagram either way for the listener's idle timeout (as for streams).
        let idle = shared.cfg.idle_timeout;
        let mut active_at = Instant::now();
        let mut replies_seen = 0;
        while control_bytes <= MAX_CONTROL_BYTES {
            // `checked_add`: an absurd idle timeout in the config means never, not a panic.
            let idle_at = idle.and_then(|d| active_at.checked_add(d));
            tokio::select! {
                r = control.read(&mut ctl) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => control_bytes = control_bytes.saturating_add(n),
                },
                r = self.udp.recv_from(&mut buf) => match r {
                    Ok((n, from)) => {
                        let datagram = buf.get(..n).unwrap_or_default();
                        if self.on_datagram(datagram, from, &mut dests, &mut opening, shared, &mut counts) {
                            active_at = Instant::now();
                        }
                    }
                    // ICMP errors can surface on an unconnected socket; they say nothing
                    // about the association.
                    Err(e) if is_transient(&e) => {}
                    Err(e) => {
                        debug!(kind = ?e.kind(), "UDP relay socket failed");
                        break;
                    }
                },
                Some((dest, result)) = opening.next(), if !opening.tasks.is_empty() => {
                    self.on_opened(dest, result, &mut dests, &mut replies, &mut counts);
                }
                Some(_) = replies.join_next(), if !replies.is_empty() => {}
                () = sleep_until(idle_at.unwrap_or(active_at)), if idle_at.is_some() => {
                    let replied = self.replied.load(Ordering::Relaxed);
                    if replied == replies_seen {
                        debug!("UDP association idle: closed");
                        break;
                    }
                    replies_seen = replied;
                    active_at = Instant::now();
                }
            }
        }
        let stats = &shared.stats;
        stats
            .udp_foreign
            .fetch_add(counts.foreign, Ordering::Relaxed);
        let dropped = counts.malformed
            + counts.fragments
            + counts.held_back
            + counts.over_limit
            + counts.queue_full;
        stats.udp_dropped.fetch_add(dropped, Ordering::Relaxed);
        debug!(
            destinations = dests.len(),
            sent = counts.sent,
            foreign = counts.foreign,
            malformed = counts.malformed,
            fragments = counts.fragments,
            held_back = counts.held_back,
            over_limit = counts.over_limit,
            queue_full = counts.queue_full,
            "UDP association ended"
        );
        // Dropping `dests`, `opening` and `replies` ENDs every flow; then the socket closes.
    }

    /// One datagram received on the relay socket; true if it was a well-formed datagram of
    /// the client's (activity for the idle timeout).
    fn on_datagram(
        &mut self,
        datagram: &[u8],
        from: SocketAddr,
        dests: &mut Destinations<UdpFlow>,
        opening: &mut Opening,
        shared: &Shared,
        counts: &mut Counts,
    ) -> bool {
        if !self.source.admits(from) {
            counts.foreign += 1;
            return false;
        }
        let parsed = match parse_udp_datagram(datagram) {
            Ok(d) => d,
            Err(UdpHeaderError::Fragmented(_)) => {
                counts.fragments += 1;
                return false;
            }
            Err(_) => {
                counts.malformed += 1;
                return false;
            }
        };
        self.source.pin(from);
        let dest = (parsed.target, parsed.port);
        match dests.send(&dest, parsed.data, Instant::now()) {
            Outcome::Sent => counts.sent += 1,
            Outcome::Queued { dropped } => counts.queue_full += dropped as u64,
            Outcome::Open => opening.start(dest, self.isolation.clone(), shared),
            Outcome::Dropped(DropReason::HeldBack) => counts.held_back += 1,
            Outcome::Dropped(DropReason::QueueFull) => counts.queue_full += 1,
            Outcome::Dropped(DropReason::TooManyDestinations | DropReason::TooManyOpening) => {
                counts.over_limit += 1
            }
        }
        true
    }

    /// A flow finished opening (or failed to).
    fn on_opened(
        &self,
        dest: Dest,
        result: Result<UdpFlow, StreamOpenError>,
        dests: &mut Destinations<UdpFlow>,
        replies: &mut JoinSet<()>,
        counts: &mut Counts,
    ) {
        let client = self.source.pinned();
        match (result, client) {
            (Ok(flow), Some(client)) => {
                let flow = Arc::new(flow);
                let task = replies.spawn(relay_replies(
                    Arc::clone(&flow),
                    Arc::clone(&self.udp),
                    client,
                    dest.clone(),
                    Arc::clone(&self.replied),
                ));
                counts.queue_full += dests.opened(&dest, flow, Some(task), Instant::now()) as u64;
            }
            // Cannot happen: a flow is opened only for a datagram that pinned the client.
            (Ok(_), None) => {}
            (Err(e), _) => {
                debug!(error = %e, "UDP flow not opened; its destination is held back");
                counts.held_back += dests.failed(&dest, Instant::now()) as u64;
            }
        }
    }
}

/// Flows being opened in the background, and for which destination (so that even a task
/// that panicked reports its destination, which is then held back).
#[derive(Default)]
struct Opening {
    tasks: JoinSet<Result<UdpFlow, StreamOpenError>>,
    dests: HashMap<tokio::task::Id, Dest>,
}

impl Opening {
    /// Opens `dest`'s flow, bounded by the listener's connect timeout.
    fn start(&mut self, dest: Dest, isolation: IsolationKey, shared: &Shared) {
        let connector = Arc::clone(&shared.connector);
        let timeout = shared.cfg.connect_timeout;
        let (target, port) = dest.clone();
        let task = self.tasks.spawn(async move {
            let open = connector.open_udp(target, port, isolation);
            match tokio::time::timeout(timeout, open).await {
                Ok(r) => r,
                Err(_) => Err(StreamOpenError::Timeout),
            }
        });
        self.dests.insert(task.id(), dest);
    }

    /// The next open to finish (`None` if none is running).
    async fn next(&mut self) -> Option<(Dest, Result<UdpFlow, StreamOpenError>)> {
        let (id, result) = match self.tasks.join_next_with_id().await? {
            Ok((id, result)) => (id, result),
            Err(e) => (e.id(), Err(StreamOpenError::CircuitClosed)),
        };
        self.dests.remove(&id).map(|dest| (dest, result))
    }
}

/// Sends what the flow receives to the client, with the header naming `dest` as the
/// client addressed it.
async fn relay_replies(
    flow: Arc<UdpFlow>,
    udp: Arc<UdpSocket>,
    client: SocketAddr,
    dest: Dest,
    replied: Arc<AtomicU64>,
) {
    let (target, port) = dest;
    while let Some(data) = flow.recv().await {
        replied.fetch_add(1, Ordering::Relaxed);
        // A full socket buffer or an unreachable client loses this datagram, as UDP does.
        let _ = udp
            .send_to(&encode_udp_datagram(&target, port, &data), client)
            .await;
    }
}

/// Errors `recv_from` reports for earlier sends (ICMP unreachable) or interruptions.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}
