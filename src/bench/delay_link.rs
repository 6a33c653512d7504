//! A delay line: a TCP forwarder that adds a fixed one-way delay in each direction. The
//! real-links bed ([`super::netbed`]) puts one in front of each relay, because the kernel's
//! netem is not available to add delay on a veth.
//!
//! Each direction is one task: bytes read at instant `t` are queued with the due time
//! `t + delay` and written when it comes (tokio timers never fire early, so no byte leaves
//! before its delay: a lower bound by construction). Three rules keep the line from becoming
//! a queue the sender cannot see, so a slow link after it pushes back on the sender as a
//! slow wire would:
//!
//! - **late head**: when the oldest queued chunk is more than [`LATE`] past due (the writer
//!   is blocked: the link after the line is the bottleneck), nothing more is read;
//! - **window**: at most twice what was written in the last `delay` (at least
//!   [`MIN_WINDOW`]) is held, so the line's content follows the rate the output actually
//!   drains (a wire holds rate × delay bytes) instead of whatever the sender offers in one
//!   delay before the late-head rule can notice;
//! - **cap**: never more than `cap` bytes per direction (memory bound; it also sets the
//!   line's throughput ceiling, `cap / delay`).
//!
//! The kernel must not hide a queue either: sockets get a small receive buffer (what the
//! sender can push past a line that stopped reading), a small send buffer and
//! TCP_NOTSENT_LOWAT (what a blocked writer leaves in the kernel).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::Instant;

/// How late the head chunk may be before reading stops (timer granularity is 1 ms).
pub(crate) const LATE: Duration = Duration::from_millis(5);
/// The smallest window, bytes: what a line that has carried nothing lately takes at once.
pub(crate) const MIN_WINDOW: usize = 64 * 1024;
/// Read size: one chunk at most.
const READ_CHUNK: usize = 64 * 1024;
/// Receive buffer requested on every socket (the kernel doubles it).
const RCVBUF: usize = 64 * 1024;
/// Send buffer requested on every socket (the kernel doubles it): what the line has in
/// flight below it stays under the queue a shallow-buffered link after it (the bed's tbf)
/// holds, so that link does not drop, and the backlog stays in the line where the
/// late-head rule sees it.
const SNDBUF: usize = 16 * 1024;
/// TCP_NOTSENT_LOWAT on every socket.
const NOTSENT_LOWAT: u32 = 16 * 1024;

/// A line's parameters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LineParams {
    /// One-way delay added in each direction.
    pub delay: Duration,
    /// Most bytes held per direction.
    pub cap: usize,
}

/// Bytes waiting for their due time.
struct Chunk {
    due: Instant,
    data: Vec<u8>,
    /// Bytes of `data` already written.
    sent: usize,
}

/// One direction's queue and its recent output.
struct Line {
    params: LineParams,
    chunks: VecDeque<Chunk>,
    /// Bytes in `chunks` not yet written.
    queued: usize,
    /// Writes in the last `delay`: (when, bytes), and their sum.
    recent: VecDeque<(Instant, usize)>,
    recent_sum: usize,
    /// Most bytes ever held at once (for tests and the measurement).
    peak: usize,
}

impl Line {
    fn new(params: LineParams) -> Line {
        Line {
            params,
            chunks: VecDeque::new(),
            queued: 0,
            recent: VecDeque::new(),
            recent_sum: 0,
            peak: 0,
        }
    }

    /// Forgets writes older than one delay.
    fn prune(&mut self, now: Instant) {
        while let Some(&(t, n)) = self.recent.front() {
            if now.saturating_duration_since(t) <= self.params.delay {
                break;
            }
            self.recent.pop_front();
            self.recent_sum -= n;
        }
    }

    /// Bytes that may be read now (0: wait for the writer).
    fn room(&self, now: Instant) -> usize {
        if let Some(head) = self.chunks.front() {
            if now.saturating_duration_since(head.due) > LATE {
                return 0;
            }
        }
        let window = self
            .recent_sum
            .saturating_mul(2)
            .clamp(MIN_WINDOW, self.params.cap.max(1));
        window.saturating_sub(self.queued).min(READ_CHUNK)
    }

    fn push(&mut self, now: Instant, data: Vec<u8>) {
        self.queued += data.len();
        self.peak = self.peak.max(self.queued);
        self.chunks.push_back(Chunk {
            due: now + self.params.delay,
            data,
            sent: 0,
        });
    }

    /// Records `n` bytes of the head written.
    fn wrote(&mut self, now: Instant, n: usize) {
        self.queued -= n;
        self.recent.push_back((now, n));
        self.recent_sum += n;
        if let Some(head) = self.chunks.front_mut() {
            head.sent += n;
            if head.sent >= head.data.len() {
                self.chunks.pop_front();
            }
        }
    }
}

/// Writes some of the head chunk once it is due; the bytes written.
async fn write_head<W: AsyncWrite + Unpin>(w: &mut W, head: &Chunk) -> std::io::Result<usize> {
    tokio::time::sleep_until(head.due).await;
    let rest = head.data.get(head.sent..).unwrap_or_default();
    w.write(rest).await
}

/// Copies `r` to `w` through a delay line until `r` ends (then shuts `w`'s write side
/// down); the most bytes it held at once.
pub(crate) async fn pump<R, W>(mut r: R, mut w: W, params: LineParams) -> std::io::Result<usize>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut line = Line::new(params);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut eof = false;
    loop {
        let now = Instant::now();
        line.prune(now);
        let room = if eof { 0 } else { line.room(now) };
        if eof && line.chunks.is_empty() {
            w.shutdown().await?;
            return Ok(line.peak);
        }
        let head = line.chunks.front();
        let want = room.min(buf.len());
        let read_buf = buf.get_mut(..want).unwrap_or_default();
        tokio::select! {
            got = r.read(read_buf), if want > 0 => {
                let n = got?;
                if n == 0 {
                    eof = true;
                } else {
                    let data = buf.get(..n).unwrap_or_default().to_vec();
                    line.push(Instant::now(), data);
                }
            }
            wrote = async { write_head(&mut w, head?).await.ok() }, if head.is_some() => {
                let n = wrote.ok_or_else(|| std::io::Error::other("write failed"))?;
                if n == 0 {
                    return Err(std::io::ErrorKind::WriteZero.into());
                }
                line.wrote(Instant::now(), n);
            }
        }
    }
}

/// Small receive buffer and TCP_NOTSENT_LOWAT on `s` (see the module docs).
fn tune(s: &TcpStream) {
    let sock = SockRef::from(s);
    let _ = sock.set_tcp_notsent_lowat(NOTSENT_LOWAT);
    let _ = s.set_nodelay(true);
}

/// Connects to `addr` with the small receive buffer set before the handshake (the window
/// it advertises is sized then).
pub(crate) async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.set_recv_buffer_size(RCVBUF as u32)?;
    sock.set_send_buffer_size(SNDBUF as u32)?;
    let s = sock.connect(addr).await?;
    tune(&s);
    Ok(s)
}

/// Listens on `addr`; accepted sockets inherit the small receive buffer.
pub(crate) fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.set_recv_buffer_size(RCVBUF as u32)?;
    sock.set_send_buffer_size(SNDBUF as u32)?;
    sock.bind(addr)?;
    sock.listen(1024)
}

/// Forwards one accepted connection to `to` through two delay lines. A failure either way
/// closes both directions; a clean end is forwarded and the other direction continues.
async fn forward(inbound: TcpStream, to: SocketAddr, params: LineParams) -> std::io::Result<()> {
    tune(&inbound);
    let outbound = connect(to).await?;
    let (ir, iw) = inbound.into_split();
    let (or, ow) = outbound.into_split();
    let mut up = Box::pin(pump(ir, ow, params));
    let mut down = Box::pin(pump(or, iw, params));
    tokio::select! {
        r = &mut up => { r?; down.await?; }
        r = &mut down => { r?; up.await?; }
    }
    Ok(())
}

/// Accepts on `listener` forever, forwarding each connection to `to` with `params`.
pub(crate) async fn serve(listener: TcpListener, to: SocketAddr, params: LineParams) {
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                tokio::spawn(async move {
                    let _ = forward(s, to, params).await;
                });
            }
            // Out of descriptors or similar: pause instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;

    fn params(ms: u64) -> LineParams {
        LineParams {
            delay: Duration::from_millis(ms),
            cap: 1 << 20,
        }
    }

    /// An echo server on 127.0.0.1 behind a delay line; the line's address.
    async fn echo_behind_line(p: LineParams) -> SocketAddr {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        let line = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = line.local_addr().unwrap();
        tokio::spawn(serve(line, echo_addr, p));
        addr
    }

    /// Bytes come back intact and in order, never before twice the delay (each direction
    /// adds it), and the far end's close is forwarded.
    #[tokio::test]
    async fn bytes_arrive_intact_in_order_and_not_early() {
        let addr = echo_behind_line(params(30)).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let start = std::time::Instant::now();
        let (mut r, mut w) = s.split();
        let send = async {
            w.write_all(&data).await.unwrap();
            w.shutdown().await.unwrap();
        };
        let recv = async {
            let mut got = Vec::new();
            let mut first = None;
            let mut buf = vec![0u8; 65536];
            loop {
                let n = r.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                first.get_or_insert_with(|| start.elapsed());
                got.extend_from_slice(&buf[..n]);
            }
            (got, first.unwrap())
        };
        let ((), (got, first)) = tokio::join!(send, recv);
        assert_eq!(got.len(), data.len());
        assert!(got == data, "bytes changed or reordered");
        assert!(
            first >= Duration::from_millis(60),
            "first byte after {first:?}"
        );
    }

    /// Small round trips: each one takes at least twice the delay.
    #[tokio::test]
    async fn every_round_trip_takes_at_least_two_delays() {
        let addr = echo_behind_line(params(20)).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        for i in 0..5u8 {
            let t = std::time::Instant::now();
            s.write_all(&[i; 64]).await.unwrap();
            let mut b = [0u8; 64];
            s.read_exact(&mut b).await.unwrap();
            assert_eq!(b, [i; 64]);
            assert!(
                t.elapsed() >= Duration::from_millis(40),
                "{:?}",
                t.elapsed()
            );
        }
    }

    /// A reader that stops reading: the line stops taking bytes from the sender after its
    /// window (no hidden queue, bounded memory), and takes them again once the reader
    /// resumes.
    #[tokio::test]
    async fn a_stalled_output_stops_the_input() {
        let p = params(10);
        let (mut tx, line_in) = tokio::io::duplex(1024);
        let (line_out, mut rx) = tokio::io::duplex(1024);
        let task = tokio::spawn(pump(line_in, line_out, p));
        // The output takes 1 KiB and then nothing: the line may hold its minimum window
        // and one chunk, no more, so a large write blocks.
        let data = vec![7u8; 4 << 20];
        let offered = tokio::time::timeout(Duration::from_millis(500), tx.write_all(&data)).await;
        assert!(
            offered.is_err(),
            "the line took 4 MiB with its output stalled"
        );
        // Resume reading: everything arrives.
        let reader = tokio::spawn(async move {
            let mut got = 0usize;
            let mut buf = vec![0u8; 65536];
            loop {
                let n = rx.read(&mut buf).await.unwrap();
                if n == 0 {
                    return got;
                }
                assert!(buf[..n].iter().all(|&b| b == 7));
                got += n;
            }
        });
        drop(tx);
        let peak = task.await.unwrap().unwrap();
        assert!(peak <= MIN_WINDOW + READ_CHUNK, "held {peak} bytes");
        assert!(reader.await.unwrap() > 0);
    }
}
