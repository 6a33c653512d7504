//! The listener and one task per connection: lines in (bounded: [`MAX_LINE`] bytes, one
//! line buffered), replies and events out. A connection that has not authenticated within
//! the configured time is closed; one that falls [`EVENT_QUEUE`] events behind is told so
//! and closed; writes that stall for [`WRITE_TIMEOUT`] close it too.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{broadcast, mpsc};
use tracing::debug;

use super::commands::{handle, Reply, Session};
use super::events::{Event, EVENT_QUEUE};
use super::line::{parse_line, MAX_LINE};
use super::Control;

/// A reply or event that cannot be written for this long closes the connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves control connections from `listener` until `shutdown` completes.
pub async fn serve_tcp(
    listener: TcpListener,
    ctl: Arc<Control>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok((s, _)) => admit(s, &ctl),
                Err(e) => {
                    debug!("control: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// [`serve_tcp`] on a Unix socket.
pub async fn serve_unix(
    listener: UnixListener,
    ctl: Arc<Control>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok((s, _)) => admit(s, &ctl),
                Err(e) => {
                    debug!("control: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// Starts a connection's task if a connection slot is free; otherwise says so and closes.
fn admit<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(mut stream: S, ctl: &Arc<Control>) {
    let Ok(permit) = Arc::clone(&ctl.slots).try_acquire_owned() else {
        tokio::spawn(async move {
            let _ = tokio::time::timeout(
                WRITE_TIMEOUT,
                stream.write_all(b"551 Too many control connections\r\n"),
            )
            .await;
        });
        return;
    };
    let ctl = Arc::clone(ctl);
    tokio::spawn(async move {
        connection(stream, &ctl).await;
        drop(permit);
    });
}

/// What the reader task hands over.
enum Line {
    Ok(Vec<u8>),
    TooLong,
}

/// Reads one line into `buf` (without its LF or CRLF). `None` at the end of the stream
/// (a last line without LF is dropped), [`Line::TooLong`] once more than [`MAX_LINE`]
/// bytes came without a line end.
async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<Option<Line>> {
    let mut buf = Vec::new();
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok(None);
        }
        let (take, done) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (avail.len(), false),
        };
        buf.extend_from_slice(avail.get(..take).unwrap_or_default());
        r.consume(take + usize::from(done));
        if buf.ends_with(b"\r") && done {
            buf.pop();
        }
        if buf.len() > MAX_LINE {
            return Ok(Some(Line::TooLong));
        }
        if done {
            return Ok(Some(Line::Ok(buf)));
        }
    }
}

async fn read_lines<R: AsyncRead + Unpin>(r: R, tx: mpsc::Sender<Line>) {
    let mut r = BufReader::new(r);
    while let Ok(Some(line)) = read_line(&mut r).await {
        let stop = matches!(line, Line::TooLong);
        if tx.send(line).await.is_err() || stop {
            return;
        }
    }
}

/// The next event, or never when the connection has not subscribed.
async fn next_event(
    rx: &mut Option<broadcast::Receiver<Event>>,
) -> Result<Event, broadcast::error::RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    ctl: &Arc<Control>,
) {
    let (r, mut w) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel(1);
    let reader = tokio::spawn(read_lines(r, tx));
    let mut session = Session {
        id: ctl.next_conn.fetch_add(1, Ordering::Relaxed),
        authenticated: false,
        protocolinfo_done: false,
        events: Vec::new(),
    };
    let auth_deadline = tokio::time::Instant::now() + ctl.auth_timeout;
    let mut events: Option<broadcast::Receiver<Event>> = None;
    loop {
        let reply = tokio::select! {
            line = rx.recv() => match line {
                None => break,
                Some(Line::TooLong) => Reply::closing(&format!(
                    "512 Line too long (the limit is {MAX_LINE} bytes); closing"
                )),
                Some(Line::Ok(bytes)) => match parse_line(&bytes) {
                    Ok(cmd) => handle(ctl, &mut session, cmd).await,
                    // Before authentication, anything unexpected closes (as in Tor).
                    Err(_) if !session.authenticated => {
                        Reply::closing("514 Authentication required.")
                    }
                    Err(e) => Reply::line(&format!("{} {e}", e.code())),
                },
            },
            ev = next_event(&mut events) => match ev {
                Ok(ev) if session.events.contains(&ev.kind()) => Reply::line(&ev.line()),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => Reply::closing(&format!(
                    "551 Event queue overflow: {n} events dropped (more than {EVENT_QUEUE} \
                     unread); closing"
                )),
                Err(broadcast::error::RecvError::Closed) => {
                    events = None;
                    continue;
                }
            },
            () = tokio::time::sleep_until(auth_deadline), if !session.authenticated => break,
        };
        // Subscribed only once authenticated, so nothing reaches an unauthenticated peer.
        if !session.authenticated || session.events.is_empty() {
            events = None;
        } else if events.is_none() {
            events = Some(ctl.events.subscribe());
        }
        let written = tokio::time::timeout(WRITE_TIMEOUT, w.write_all(reply.text.as_bytes())).await;
        if reply.close || !matches!(written, Ok(Ok(()))) {
            break;
        }
    }
    reader.abort();
    let _ = tokio::time::timeout(WRITE_TIMEOUT, w.shutdown()).await;
    ctl.services.drop_owned(session.id);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_bounded_and_split_on_lf() {
        let data = format!("A\r\nB\nC\r\n{}\nD", "x".repeat(MAX_LINE + 1));
        let mut r = BufReader::with_capacity(7, data.as_bytes());
        for want in [&b"A"[..], b"B", b"C"] {
            match read_line(&mut r).await.unwrap() {
                Some(Line::Ok(l)) => assert_eq!(l, want),
                _ => panic!("expected a line"),
            }
        }
        assert!(matches!(
            read_line(&mut r).await.unwrap(),
            Some(Line::TooLong)
        ));
    }
}
