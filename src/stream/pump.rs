//! Moves bytes between a local byte stream (a TCP socket at the exit, the application's
//! end of a stream at the client) and the circuit task that owns the stream.
//!
//! Two tasks per stream:
//! - the **reader** reads the socket in DATA-sized chunks; before handing a chunk to the
//!   circuit it takes one permit from the stream's window and one from the circuit's, so
//!   it stops reading (and TCP pushes back on the sender) whenever either window is closed;
//! - the **writer** writes DATA received from the peer to the socket, and reports when a
//!   SENDME point has been delivered, so stream-level SENDMEs acknowledge data the
//!   application actually received (that is what bounds our buffering).

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use crate::cell::relay_msg::MAX_RELAY_DATA;
use crate::cell::StreamId;
use crate::crypto::RelayTag;

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
}

/// What the circuit task sends a stream's writer.
#[derive(Debug)]
pub enum ToSocket {
    /// Bytes to write; `Some(tag)` if this cell is a stream-level SENDME point.
    Data(Vec<u8>, Option<RelayTag>),
    /// The peer will send no more: shut down our write side.
    Eof,
}

/// The circuit task's handle on one stream's tasks.
#[derive(Debug)]
pub struct StreamIo {
    /// Queue to the writer. Unbounded on purpose: the peer cannot exceed the stream's
    /// receive window, which bounds it (500 cells).
    pub to_socket: mpsc::UnboundedSender<ToSocket>,
    /// The stream's send-window permits (the reader takes one per cell).
    pub permits: Arc<Semaphore>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl StreamIo {
    /// Stops both tasks at once (stream aborted).
    pub fn abort(&self) {
        self.reader.abort();
        self.writer.abort();
    }
}

impl Drop for StreamIo {
    fn drop(&mut self) {
        // The reader holds no state worth finishing; the writer is allowed to flush what
        // it has (it ends when its queue closes, which dropping `to_socket` does).
        self.reader.abort();
    }
}

/// Starts the reader and writer of stream `id` over `io`. `wrap` turns a [`StreamEvent`]
/// into the circuit task's event type; `circuit_permits` is the circuit's send window.
/// With `idle_timeout`, a socket that sends nothing for that long fails the stream.
pub fn spawn<S, E, F>(
    io: S,
    id: StreamId,
    initial_window: u32,
    idle_timeout: Option<std::time::Duration>,
    circuit_permits: Arc<Semaphore>,
    events: mpsc::Sender<E>,
    wrap: F,
) -> StreamIo
where
    S: AsyncRead + AsyncWrite + Send + 'static,
    E: Send + 'static,
    F: Fn(StreamEvent) -> E + Send + Sync + Clone + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let permits = Arc::new(Semaphore::new(initial_window as usize));
    let (to_socket, mut from_circuit) = mpsc::unbounded_channel::<ToSocket>();

    let reader = {
        let permits = Arc::clone(&permits);
        let events = events.clone();
        let wrap = wrap.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_RELAY_DATA];
            loop {
                // Take the permits before reading, so a closed window leaves the data in
                // the socket (TCP backpressure) rather than in our memory.
                let (Ok(p1), Ok(p2)) = (permits.acquire().await, circuit_permits.acquire().await)
                else {
                    return;
                };
                let read = async {
                    match idle_timeout {
                        Some(limit) => tokio::time::timeout(limit, rd.read(&mut buf))
                            .await
                            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())),
                        None => rd.read(&mut buf).await,
                    }
                };
                let event = match read.await {
                    Ok(0) => StreamEvent::Eof(id),
                    Ok(n) => StreamEvent::Data(id, buf.get(..n).unwrap_or_default().to_vec()),
                    Err(_) => StreamEvent::Failed(id),
                };
                let data = matches!(event, StreamEvent::Data(..));
                if events.send(wrap(event)).await.is_err() || !data {
                    return;
                }
                // The chunk reached the circuit task, which sends it as a DATA cell: its
                // window slots stay used until a SENDME returns them. Forgetting only now
                // means a send cut short (the stream aborted) gives the permits back;
                // EOF and errors give them back too.
                p1.forget();
                p2.forget();
            }
        })
    };

    let writer = tokio::spawn(async move {
        while let Some(msg) = from_circuit.recv().await {
            match msg {
                ToSocket::Data(bytes, ack) => {
                    if wr.write_all(&bytes).await.is_err() {
                        // The socket stopped taking data (the other end closed its read
                        // side). Stop writing but leave the stream up: what the other end
                        // still sends (a reply, an error page) must reach the peer; a real
                        // failure shows up on the read side.
                        return;
                    }
                    if let Some(tag) = ack {
                        // Delivered to the socket's buffer: acknowledge.
                        if events
                            .send(wrap(StreamEvent::Delivered(id, tag)))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
                ToSocket::Eof => {
                    let _ = wr.shutdown().await;
                }
            }
        }
        let _ = wr.shutdown().await;
    });

    StreamIo {
        to_socket,
        permits,
        reader,
        writer,
    }
}
