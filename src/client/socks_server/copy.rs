//! Copying bytes both ways between a client's socket and its stream once the stream is
//! open: half-close, an idle limit, and a reset (never a clean close) for a stream that
//! ends any other way than with the exit's END(DONE).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::proto::DataStream;
use crate::sync::lock;

/// Forwards early data, then copies both ways with half-close until both directions end,
/// or until nothing has moved for `idle`. Returns the bytes sent to and received from the
/// stream (early data included).
///
/// A FIN reaches the client only for the exit's END(DONE). Any error (the stream cut
/// short, the idle limit, the client's socket failing) resets the client's connection
/// instead, so a truncated download never looks complete, and aborts the stream, so the
/// exit's destination sees a failure too. Bytes already read from the stream were handed
/// to the client's socket first; a reset discards what its kernel buffer still holds.
pub(super) async fn relay(
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
