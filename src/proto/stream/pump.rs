//! Moves bytes between a local byte stream (a TCP socket at the exit, the application's
//! end of a stream at the client) and the circuit task that owns the stream.
//!
//! Two tasks per stream:
//! - the **reader** reads the socket (up to [`READ_BATCH`] cells per read) and hands it to
//!   the circuit in DATA-sized chunks; each chunk holds one permit from the stream's window
//!   and one from the circuit's, taken before the read, so it stops reading (and TCP
//!   pushes back on the sender) whenever either window is closed;
//! - the **writer** writes DATA received from the peer to the socket (whatever is queued,
//!   in one write), and reports when a SENDME point has been delivered, so stream-level
//!   SENDMEs acknowledge data the application actually received (that is what bounds our
//!   buffering).
//!
//! A stream that does not end cleanly (END(DONE) from the peer) is [truncated](Truncation):
//! its local socket is then closed as a reset ([`LocalSocket::reset`]), never with a plain
//! EOF, so whoever reads it can tell a stream cut short from a complete one.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use crate::cell::relay_msg::MAX_RELAY_DATA;
use crate::cell::{EndReason, StreamId};
use crate::crypto::RelayTag;
use crate::proto::event_queue::EventSender;

/// Most cells' worth of bytes one socket read may take (when that many window permits are
/// free): one `read` syscall per batch instead of one per 491-byte cell. ~7.9 KiB per
/// stream reader.
pub(crate) const READ_BATCH: usize = 16;

/// Bytes of queued DATA the writer gathers into one socket write.
pub(crate) const WRITE_BATCH_BYTES: usize = 32 * 1024;

/// Window permits taken (and forgotten) for chunks not yet handed to the circuit task:
/// given back to both windows on drop, so an aborted reader or a short read returns them.
struct Reserved<'a> {
    stream: &'a Semaphore,
    circuit: &'a Semaphore,
    n: usize,
}

impl Reserved<'_> {
    /// Gives `k` of the reserved permits back now.
    fn release(&mut self, k: usize) {
        let k = k.min(self.n);
        if k > 0 {
            self.stream.add_permits(k);
            self.circuit.add_permits(k);
            self.n -= k;
        }
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.release(self.n);
    }
}

/// Why a stream ended without a clean END(DONE) from the peer. Its local socket is reset
/// rather than closed: a FIN would tell the application the data is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Truncation {
    /// The peer sent END with this reason (not DONE).
    #[error("the stream was ended by the other side ({0:?})")]
    End(EndReason),
    /// The circuit closed under the stream (DESTROY, its channel lost, TRUNCATED, the
    /// circuit task gone).
    #[error("the circuit closed")]
    CircuitClosed,
    /// This end gave the stream up: its socket failed or idled out, the application
    /// aborted it, or whoever opened it went away.
    #[error("the stream was aborted locally")]
    Aborted,
}

/// A stream's local end, as the pump drives it.
pub trait LocalSocket: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The stream was truncated and this socket is about to be closed: make the close
    /// read as a failure (a TCP reset), not as an EOF. Called at most once, from the drop.
    fn reset(&mut self, why: Truncation);
}

impl LocalSocket for tokio::net::TcpStream {
    fn reset(&mut self, _why: Truncation) {
        // SO_LINGER 0: the close sends RST (dropping unsent bytes) instead of FIN.
        let _ = self.set_zero_linger();
    }
}

impl LocalSocket for DuplexStream {
    /// In-process ends (a relay's directory service) only need the stream to stop: a
    /// truncated answer fails their own checks.
    fn reset(&mut self, _why: Truncation) {}
}

impl LocalSocket for Box<dyn LocalSocket> {
    /// A socket whose type the circuit task does not know (an incoming stream's, handed
    /// over by the circuit's owner).
    fn reset(&mut self, why: Truncation) {
        (**self).reset(why);
    }
}

/// The socket as the pump's two tasks share it: resets it when dropped if the stream was
/// truncated. The split halves drop it only once both tasks are gone, so no write (and no
/// FIN) can follow the reset.
struct Guarded<S: LocalSocket> {
    socket: S,
    truncated: Arc<OnceLock<Truncation>>,
}

impl<S: LocalSocket> Drop for Guarded<S> {
    fn drop(&mut self) {
        if let Some(why) = self.truncated.get() {
            self.socket.reset(*why);
        }
    }
}

impl<S: LocalSocket> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_read(cx, buf)
    }
}

impl<S: LocalSocket> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.socket).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_shutdown(cx)
    }
}

/// What a stream's tasks tell the circuit task.
#[derive(Debug)]
pub enum StreamEvent {
    /// A chunk read from the socket (1 to 491 bytes), permits already taken.
    Data(StreamId, Vec<u8>),
    /// The socket's read side reached EOF.
    Eof(StreamId),
    /// The socket failed (reset, timeout).
    Failed(StreamId),
    /// The writer delivered a SENDME point: acknowledge it with this tag.
    Delivered(StreamId, RelayTag),
    /// The writer is gone after the peer's END(DONE) (or a failed write): nothing of the
    /// stream is buffered any more, so a stream closed both ways can now be forgotten.
    WriterDone(StreamId),
}

/// What the circuit task sends a stream's writer.
#[derive(Debug)]
pub(crate) enum ToSocket {
    /// Bytes to write; `Some(tag)` if this cell is a stream-level SENDME point.
    Data(Vec<u8>, Option<RelayTag>),
    /// The peer will send no more: shut down our write side.
    Eof,
}

/// The circuit task's handle on one stream's tasks.
#[derive(Debug)]
pub(crate) struct StreamIo {
    /// Queue to the writer. Unbounded on purpose: the peer cannot exceed the stream's
    /// receive window, which bounds it (500 cells).
    pub to_socket: mpsc::UnboundedSender<ToSocket>,
    /// The stream's send-window permits (the reader takes one per cell).
    pub permits: Arc<Semaphore>,
    truncated: Arc<OnceLock<Truncation>>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl StreamIo {
    /// Stops both tasks at once (stream truncated): the socket is reset, keeping what it
    /// already holds for its reader but nothing still queued here. (Flushing the queue
    /// could wait on a reader that never reads; the reset says the data is incomplete
    /// either way.)
    pub(crate) fn abort(&self, why: Truncation) {
        let _ = self.truncated.set(why);
        self.reader.abort();
        self.writer.abort();
    }
}

impl Drop for StreamIo {
    fn drop(&mut self) {
        // The reader holds no state worth finishing; the writer is allowed to flush what
        // it has (it ends when its queue closes, which dropping `to_socket` does, and
        // resets the socket then unless the peer's END(DONE) came first).
        self.reader.abort();
    }
}

/// Where a stream's tasks deliver their events: the circuit task's queue (a tokio mpsc
/// at the client, an [`EventSender`] at a relay).
pub(crate) trait EventSink<E>: Clone + Send + Sync + 'static {
    /// Delivers `event`, waiting for room; fails once the circuit task is gone.
    fn send_event(&self, event: E) -> impl std::future::Future<Output = Result<(), ()>> + Send;
}

impl<E: Send + 'static> EventSink<E> for mpsc::Sender<E> {
    async fn send_event(&self, event: E) -> Result<(), ()> {
        self.send(event).await.map_err(|_| ())
    }
}

impl<E: Send + 'static> EventSink<E> for EventSender<E> {
    async fn send_event(&self, event: E) -> Result<(), ()> {
        self.send(event).await.map_err(|_| ())
    }
}

/// Starts the reader and writer of stream `id` over `io`. `wrap` turns a [`StreamEvent`]
/// into the circuit task's event type; `circuit_permits` is the circuit's send window.
/// With `idle_timeout`, a socket that sends nothing for that long fails the stream.
///
/// The socket is closed as a reset ([`LocalSocket::reset`]) if the stream is aborted
/// ([`StreamIo::abort`]) or its `StreamIo` dropped before the peer's END(DONE) reached the
/// writer; after END(DONE) its write side is shut down normally.
pub(crate) fn spawn<S, E, F, Q>(
    io: S,
    id: StreamId,
    initial_window: usize,
    idle_timeout: Option<std::time::Duration>,
    circuit_permits: Arc<Semaphore>,
    events: Q,
    wrap: F,
) -> StreamIo
where
    S: LocalSocket,
    E: Send + 'static,
    Q: EventSink<E>,
    F: Fn(StreamEvent) -> E + Send + Sync + Clone + 'static,
{
    let truncated = Arc::new(OnceLock::new());
    let (mut rd, mut wr) = tokio::io::split(Guarded {
        socket: io,
        truncated: Arc::clone(&truncated),
    });
    let permits = Arc::new(Semaphore::new(initial_window));
    let (to_socket, mut from_circuit) = mpsc::unbounded_channel::<ToSocket>();

    let reader = {
        let permits = Arc::clone(&permits);
        let events = events.clone();
        let wrap = wrap.clone();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(MAX_RELAY_DATA * READ_BATCH);
            loop {
                // Take the permits before reading, so a closed window leaves the data in
                // the socket (TCP backpressure) rather than in our memory. One permit of
                // each window is waited for; more are taken only if free right now, so
                // one read can fill several cells without ever waiting for a full batch.
                let (Ok(p1), Ok(p2)) = (permits.acquire().await, circuit_permits.acquire().await)
                else {
                    return;
                };
                p1.forget();
                p2.forget();
                let mut reserved = Reserved {
                    stream: &permits,
                    circuit: &circuit_permits,
                    n: 1,
                };
                while reserved.n < READ_BATCH {
                    let Ok(a) = permits.try_acquire() else { break };
                    let Ok(b) = circuit_permits.try_acquire() else {
                        break;
                    };
                    a.forget();
                    b.forget();
                    reserved.n += 1;
                }
                // `buf` receives exactly this read: at most one cell's data per permit.
                buf.clear();
                let space = (reserved.n * MAX_RELAY_DATA) as u64;
                let read = async {
                    let mut limited = (&mut rd).take(space);
                    let read = limited.read_buf(&mut buf);
                    match idle_timeout {
                        Some(limit) => tokio::time::timeout(limit, read)
                            .await
                            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())),
                        None => read.await,
                    }
                };
                let n = match read.await {
                    Ok(0) => {
                        let _ = events.send_event(wrap(StreamEvent::Eof(id))).await;
                        return;
                    }
                    Ok(n) => n,
                    Err(_) => {
                        let _ = events.send_event(wrap(StreamEvent::Failed(id))).await;
                        return;
                    }
                };
                debug_assert_eq!(n, buf.len());
                let chunks = buf.chunks(MAX_RELAY_DATA);
                reserved.release(reserved.n.saturating_sub(chunks.len()));
                for chunk in chunks {
                    if events
                        .send_event(wrap(StreamEvent::Data(id, chunk.to_vec())))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    // The chunk reached the circuit task, which sends it as a DATA cell:
                    // its window slots stay used until a SENDME returns them. Only now is
                    // the permit consumed, so a send cut short (the stream aborted) gives
                    // the permits back (`Reserved`'s drop); EOF and errors give them back
                    // too.
                    reserved.n -= 1;
                }
            }
        })
    };

    let writer_truncated = Arc::clone(&truncated);
    let writer = tokio::spawn(async move {
        // Whether the peer's END(DONE) has been written (as a shutdown).
        let mut done = false;
        // Cells already queued are written with one `write_all` (one syscall at an exit
        // instead of one per 491-byte cell); acknowledgements follow the write.
        let mut out: Vec<u8> = Vec::new();
        let mut acks: Vec<RelayTag> = Vec::new();
        let mut next = from_circuit.recv().await;
        while let Some(msg) = next.take() {
            let mut eof = false;
            match msg {
                ToSocket::Data(bytes, ack) => {
                    out.clear();
                    acks.clear();
                    out.extend_from_slice(&bytes);
                    acks.extend(ack);
                    while out.len() < WRITE_BATCH_BYTES {
                        match from_circuit.try_recv() {
                            Ok(ToSocket::Data(more, ack)) => {
                                out.extend_from_slice(&more);
                                acks.extend(ack);
                            }
                            Ok(ToSocket::Eof) => {
                                eof = true;
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    if wr.write_all(&out).await.is_err() {
                        // The socket stopped taking data (the other end closed its read
                        // side). Stop writing but leave the stream up: what the other end
                        // still sends (a reply, an error page) must reach the peer; a real
                        // failure shows up on the read side.
                        let _ = events.send_event(wrap(StreamEvent::WriterDone(id))).await;
                        return;
                    }
                    for tag in acks.drain(..) {
                        // Delivered to the socket's buffer: acknowledge.
                        if events
                            .send_event(wrap(StreamEvent::Delivered(id, tag)))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    if out.capacity() > 2 * WRITE_BATCH_BYTES {
                        out = Vec::new();
                    }
                }
                ToSocket::Eof => eof = true,
            }
            if eof {
                done = true;
                let _ = wr.shutdown().await;
                let _ = events.send_event(wrap(StreamEvent::WriterDone(id))).await;
            }
            next = from_circuit.recv().await;
        }
        if !done {
            // The queue closed without END(DONE): the circuit side is gone (e.g. its task
            // ended without stopping its streams). A shutdown would be a false clean end.
            let _ = writer_truncated.set(Truncation::CircuitClosed);
        }
    });

    StreamIo {
        to_socket,
        permits,
        truncated,
        reader,
        writer,
    }
}
