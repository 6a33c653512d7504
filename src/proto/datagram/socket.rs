//! A flow whose local end is a connected UDP socket (at an exit, or at an onion service
//! towards its target): a task reads datagrams and hands them to the circuit task, which
//! writes the other way without waiting. Nothing is buffered here: a full circuit queue
//! or a full socket buffer drops the datagram.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::cell::datagram::MAX_DATAGRAM_LEN;
use crate::cell::StreamId;
use crate::proto::event_queue::{EventSender, TrySendError};

use super::budget::DatagramBudget;
use super::FlowEvent;

/// Socket errors in a row that end a flow.
const MAX_ERRORS: u32 = 64;

/// Bytes of the process's datagram budget held by a datagram on its way to the circuit
/// task; given back when dropped.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<DatagramBudget>,
    bytes: usize,
}

impl Charge {
    /// Takes `len` (at least 1) from `budget`, if it has that much left.
    pub(crate) fn take(budget: &Arc<DatagramBudget>, len: usize) -> Option<Charge> {
        let bytes = len.max(1);
        budget.take(bytes).then(|| Charge {
            budget: Arc::clone(budget),
            bytes,
        })
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

/// When a flow last carried a datagram either way.
#[derive(Debug)]
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// The circuit task's handle on a socket flow.
#[derive(Debug)]
pub(crate) struct SocketFlow {
    /// The sending side: a plain non-blocking socket, so a send fails only when the
    /// kernel's buffer is really full (tokio's `try_send` also fails before the socket was
    /// first polled writable).
    sender: std::net::UdpSocket,
    activity: Arc<Activity>,
    reader: AbortHandle,
    /// The flow's share of a process-wide flow limit, given back with the flow.
    _permit: Option<OwnedSemaphorePermit>,
}

impl SocketFlow {
    /// Writes a datagram to the socket if it takes it now. False if dropped.
    pub(crate) fn send(&self, datagram: &[u8]) -> bool {
        self.activity.touch();
        matches!(self.sender.send(datagram), Ok(n) if n == datagram.len())
    }

    /// Stops the reader; the socket closes with the last handle.
    pub(crate) fn stop(&self) {
        self.reader.abort();
    }
}

/// Starts the reader of flow `id` on `socket` (already connected to its destination);
/// fails only if the socket cannot be duplicated or registered (out of descriptors).
/// The flow ends, with [`FlowEvent::Closed`], after `idle` without a datagram either way
/// or on a socket error other than an ICMP refusal (which UDP reports and shrugs off).
pub(crate) fn spawn<E: Send + 'static>(
    socket: UdpSocket,
    id: StreamId,
    idle: Duration,
    tx: EventSender<E>,
    wrap: fn(FlowEvent) -> E,
    permit: Option<OwnedSemaphorePermit>,
    budget: Arc<DatagramBudget>,
) -> std::io::Result<SocketFlow> {
    let sender = socket.into_std()?;
    sender.set_nonblocking(true)?;
    let socket = Arc::new(UdpSocket::from_std(sender.try_clone()?)?);
    let activity = Arc::new(Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    });
    let reader = tokio::spawn(read_loop(
        Arc::clone(&socket),
        Arc::clone(&activity),
        budget,
        (id, idle),
        tx,
        wrap,
    ));
    Ok(SocketFlow {
        sender,
        activity,
        reader: reader.abort_handle(),
        _permit: permit,
    })
}

async fn read_loop<E: Send + 'static>(
    socket: Arc<UdpSocket>,
    activity: Arc<Activity>,
    budget: Arc<DatagramBudget>,
    (id, idle): (StreamId, Duration),
    tx: EventSender<E>,
    wrap: fn(FlowEvent) -> E,
) {
    // Socket errors in a row before the flow is given up (ICMP errors are reported on a
    // connected UDP socket and are no reason to end it; a broken socket keeps failing).
    let mut errors = 0u32;
    // One byte more than the largest datagram, so an oversized one is seen and dropped.
    let mut buf = vec![0u8; MAX_DATAGRAM_LEN + 1];
    let sleep = tokio::time::sleep(idle);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            r = socket.recv(&mut buf) => match r {
                Ok(n) if n <= MAX_DATAGRAM_LEN => {
                    errors = 0;
                    activity.touch();
                    // A destination flooding faster than the circuit task takes its
                    // datagrams is held to the process's datagram budget: past it, they
                    // are dropped here.
                    let Some(charge) = Charge::take(&budget, n) else {
                        continue;
                    };
                    let datagram = buf.get(..n).unwrap_or_default().to_vec();
                    let ev = wrap(FlowEvent::Datagram(id, datagram, Some(charge)));
                    if let Err(TrySendError::Closed(_)) = tx.try_send(ev) {
                        return;
                    }
                }
                Ok(_) => errors = 0,
                Err(_) if errors < MAX_ERRORS => {
                    errors += 1;
                    // ECONNREFUSED and unreachable errors come from ICMP, which anyone
                    // on the path could forge: not a reason to end the flow.
                    tokio::task::yield_now().await;
                }
                Err(_) => break,
            },
            () = &mut sleep => {
                let due = activity.last() + idle;
                if Instant::now() >= due {
                    break;
                }
                sleep.as_mut().reset(due);
            }
        }
    }
    let _ = tx.send(wrap(FlowEvent::Closed(id))).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::event_queue::event_queue;

    #[tokio::test]
    async fn carries_both_ways_and_closes_when_idle() {
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let ours = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        ours.connect(peer.local_addr().unwrap()).await.unwrap();
        let ours_addr = ours.local_addr().unwrap();
        let (tx, mut rx) = event_queue::<FlowEvent>(8);
        let id = StreamId::new(3).unwrap();
        let budget = DatagramBudget::new(1 << 20);
        let flow = spawn(
            ours,
            id,
            Duration::from_millis(300),
            tx,
            |e| e,
            None,
            budget.clone(),
        )
        .unwrap();
        assert!(flow.send(b"ping"));
        let mut buf = [0u8; 64];
        let (n, from) = peer.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"ping"[..], ours_addr));
        peer.send_to(b"pong", ours_addr).await.unwrap();
        match rx.recv().await {
            Some(FlowEvent::Datagram(got, d, charge)) => {
                assert_eq!((got, d), (id, b"pong".to_vec()));
                assert_eq!(budget.used(), 4, "held while queued");
                drop(charge);
                assert_eq!(budget.used(), 0);
            }
            other => panic!("{other:?}"),
        }
        // A datagram from another address is not the flow's: the connected socket
        // drops it.
        let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        stranger.send_to(b"spoof", ours_addr).await.unwrap();
        match rx.recv().await {
            Some(FlowEvent::Closed(got)) => assert_eq!(got, id),
            other => panic!("expected the idle close, got {other:?}"),
        }
    }
}
