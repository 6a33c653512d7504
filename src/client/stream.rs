//! The application's end of a stream through the overlay.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

use crate::cell::EndReason;

/// Bytes buffered between the application and the stream's tasks in each direction.
pub const STREAM_BUFFER: usize = 64 * 1024;

/// A connected stream: read and write it like a TCP socket. Shutting down the write side
/// sends END(DONE) to the exit (half-close); the read side keeps working until the exit
/// closes its side.
#[derive(Debug)]
pub struct DataStream {
    inner: DuplexStream,
}

impl DataStream {
    pub(crate) fn new(inner: DuplexStream) -> Self {
        DataStream { inner }
    }
}

impl AsyncRead for DataStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for DataStream {
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
}
