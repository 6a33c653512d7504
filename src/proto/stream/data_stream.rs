//! The application's end of a stream through the overlay.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

use crate::cell::EndReason;
use crate::proto::stream::pump::{LocalSocket, Truncation};

/// Bytes buffered between the application and the stream's tasks in each direction.
pub(crate) const STREAM_BUFFER: usize = 64 * 1024;

/// What the two ends of a client stream tell each other besides the bytes: how a
/// closed duplex is to be read.
#[derive(Debug, Default)]
struct Ends {
    /// Set by the circuit's end before it closes: the stream was cut short.
    truncated: OnceLock<Truncation>,
    /// Set by the application's end before it closes: it gave the stream up.
    abandoned: AtomicBool,
}

/// A new stream's two ends: the circuit task's (driven by the pump) and the application's.
pub(crate) fn pair() -> (CircuitEnd, DataStream) {
    let (ours, theirs) = tokio::io::duplex(STREAM_BUFFER);
    let ends = Arc::new(Ends::default());
    (
        CircuitEnd {
            inner: ours,
            ends: Arc::clone(&ends),
        },
        DataStream {
            inner: theirs,
            ends,
        },
    )
}

/// True if `poll_read` just reported EOF: ready, nothing read although there was room.
fn at_eof(r: &Poll<io::Result<()>>, room: usize, before: usize, buf: &ReadBuf<'_>) -> bool {
    matches!(r, Poll::Ready(Ok(()))) && room > 0 && buf.filled().len() == before
}

/// A stream is ended with an error rather than an EOF: `kind` with `why` inside
/// (`io::Error::get_ref` and `downcast_ref::<Truncation>` give it back).
fn truncated(kind: io::ErrorKind, why: Truncation) -> io::Error {
    io::Error::new(kind, why)
}

/// The circuit task's end of a client stream.
#[derive(Debug)]
pub(crate) struct CircuitEnd {
    inner: DuplexStream,
    ends: Arc<Ends>,
}

impl AsyncRead for CircuitEnd {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let (room, before) = (buf.remaining(), buf.filled().len());
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if at_eof(&r, room, before, buf) && self.ends.abandoned.load(Ordering::Acquire) {
            // An error, not EOF: the pump then ends the stream with END(CONNRESET), not
            // END(DONE), and the exit resets its destination connection.
            return Poll::Ready(Err(truncated(
                io::ErrorKind::ConnectionAborted,
                Truncation::Aborted,
            )));
        }
        r
    }
}

impl AsyncWrite for CircuitEnd {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl LocalSocket for CircuitEnd {
    fn reset(&mut self, why: Truncation) {
        // Recorded before the duplex closes (right after this), so the application never
        // sees that close without the reason.
        let _ = self.ends.truncated.set(why);
    }
}

/// A connected stream: read and write it like a TCP socket. Shutting down the write side
/// (or dropping the stream) sends END(DONE) to the exit (half-close); the read side keeps
/// working until the exit closes its side.
///
/// A read returns `Ok(0)` (EOF) only after the exit's END(DONE), with every byte before
/// it. A stream cut short (END with another reason, the circuit destroyed or its channel
/// lost) instead fails with [`io::ErrorKind::ConnectionReset`] once the bytes that did
/// arrive are read, and writes fail likewise; the error's inner value is the
/// [`Truncation`].
#[derive(Debug)]
pub struct DataStream {
    inner: DuplexStream,
    ends: Arc<Ends>,
}

impl DataStream {
    /// Gives the stream up as failed: the exit is sent END with a reason other than DONE
    /// (and resets its destination connection) rather than the END(DONE) that dropping
    /// or shutting down sends.
    pub fn abort(self) {
        self.ends.abandoned.store(true, Ordering::Release);
    }

    /// The truncation, if the circuit's end closed for one.
    fn truncation(&self) -> Option<Truncation> {
        self.ends.truncated.get().copied()
    }
}

impl AsyncRead for DataStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let (room, before) = (buf.remaining(), buf.filled().len());
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if at_eof(&r, room, before, buf) {
            if let Some(why) = self.truncation() {
                return Poll::Ready(Err(truncated(io::ErrorKind::ConnectionReset, why)));
            }
        }
        r
    }
}

impl AsyncWrite for DataStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        match (r, self.truncation()) {
            // The duplex reports a closed peer as BrokenPipe; say why it closed.
            (Poll::Ready(Err(_)), Some(why)) => {
                Poll::Ready(Err(truncated(io::ErrorKind::ConnectionReset, why)))
            }
            (r, _) => r,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Why a stream could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamOpenError {
    /// The exit refused or failed, with its reason.
    #[error("the exit closed the stream: {0:?}")]
    Refused(EndReason),
    /// The circuit failed or closed before the stream opened.
    #[error("the circuit closed")]
    CircuitClosed,
    /// The circuit has too many streams.
    #[error("too many streams on this circuit")]
    TooManyStreams,
    /// No answer in time.
    #[error("timed out waiting for the exit")]
    Timeout,
    /// No circuit can be built: the client holds no live consensus (expired, and neither
    /// the authorities nor the guards' caches answered with a newer one).
    #[error("no usable consensus")]
    NoConsensus,
    /// The onion service requires client authorisation; no key is configured for it.
    #[error("this onion service requires client authorisation; no key configured for it")]
    OnionAuthMissing,
    /// The onion service requires client authorisation and did not list our key.
    #[error("client authorisation key not accepted by this service")]
    OnionAuthRejected,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::{mpsc, Semaphore};

    use super::*;
    use crate::cell::StreamId;
    use crate::proto::stream::pump::{self, StreamEvent, StreamIo, ToSocket};

    /// A pump over a new pair's circuit end, as the circuit task starts it.
    fn pumped() -> (StreamIo, DataStream, mpsc::Receiver<StreamEvent>) {
        let (ours, app) = pair();
        let (tx, rx) = mpsc::channel(64);
        let id = StreamId::new(1).unwrap();
        let io = pump::spawn(
            ours,
            id,
            500,
            None,
            Arc::new(Semaphore::new(1000)),
            tx,
            |e| e,
        );
        (io, app, rx)
    }

    /// Reads until EOF or an error; returns the bytes and the outcome.
    async fn drain(app: &mut DataStream) -> (Vec<u8>, io::Result<()>) {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match app.read(&mut buf).await {
                Ok(0) => return (all, Ok(())),
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(e) => return (all, Err(e)),
            }
        }
    }

    fn reason(e: &io::Error) -> Option<Truncation> {
        e.get_ref()?.downcast_ref::<Truncation>().copied()
    }

    #[tokio::test]
    async fn end_done_is_eof_after_every_byte() {
        let (io, mut app, _rx) = pumped();
        io.to_socket
            .send(ToSocket::Data(b"abc".to_vec(), None))
            .unwrap();
        io.to_socket.send(ToSocket::Eof).unwrap();
        // The clean path drops the handle without aborting (set.rs).
        drop(io);
        let (bytes, end) = drain(&mut app).await;
        assert_eq!(bytes, b"abc");
        assert!(end.is_ok(), "{end:?}");
    }

    #[tokio::test]
    async fn truncation_is_an_error_after_the_bytes_already_delivered() {
        let (io, mut app, mut rx) = pumped();
        io.to_socket
            .send(ToSocket::Data(b"abc".to_vec(), None))
            .unwrap();
        let mut first = [0u8; 3];
        app.read_exact(&mut first).await.unwrap();
        // "de" is written into the stream, unread, before the stream is cut (the writer
        // reports the write as delivered).
        let tag: crate::crypto::RelayTag = Default::default();
        io.to_socket
            .send(ToSocket::Data(b"de".to_vec(), Some(tag)))
            .unwrap();
        assert!(matches!(rx.recv().await, Some(StreamEvent::Delivered(_, t)) if t == tag));
        io.abort(Truncation::End(EndReason::Misc));
        let (bytes, end) = drain(&mut app).await;
        assert_eq!(bytes, b"de", "bytes already in the stream come first");
        let e = end.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(reason(&e), Some(Truncation::End(EndReason::Misc)));
        let w = app.write_all(b"more").await.unwrap_err();
        assert_eq!(w.kind(), io::ErrorKind::ConnectionReset);
    }

    #[tokio::test]
    async fn circuit_side_gone_without_end_done_is_a_reset() {
        let (io, mut app, _rx) = pumped();
        drop(io);
        let (_, end) = drain(&mut app).await;
        let e = end.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(reason(&e), Some(Truncation::CircuitClosed));
    }

    #[tokio::test]
    async fn abort_is_a_failure_to_the_circuit_not_eof() {
        let (_io, mut app, mut rx) = pumped();
        app.write_all(b"xy").await.unwrap();
        app.abort();
        let mut data = Vec::new();
        loop {
            match rx.recv().await.unwrap() {
                StreamEvent::Data(_, b) => data.extend_from_slice(&b),
                StreamEvent::Failed(_) => break,
                other => panic!("expected a failure, got {other:?}"),
            }
        }
        assert_eq!(
            data, b"xy",
            "what was written before the abort is still sent"
        );

        // A plain drop stays a clean end (END(DONE)).
        let (_io, app, mut rx) = pumped();
        drop(app);
        assert!(matches!(rx.recv().await, Some(StreamEvent::Eof(_))));
    }
}
