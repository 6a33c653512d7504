//! Sending and teardown: cells queued on a neighbour's channel, bounded so a peer that
//! stopped reading cannot hold the circuit; and the teardown that sends DESTROY both ways.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tracing::debug;

use crate::cell::{ChanCell, ChanMsg, DestroyReason};
use crate::link::TrySendError;

use super::super::events::CircEnd;
use super::super::events::Side;
use super::super::queue_budget::QueueStat;
use super::super::shared::RelayCounters;
use super::{Circuit, Next};

/// Why the circuit must end, and which neighbour already knows.
pub(super) struct Teardown {
    reason: DestroyReason,
    /// The side that closed first (no DESTROY is sent back to it).
    from: Option<Side>,
    /// The side whose channel queue stayed full (its DESTROY is only tried: waiting for
    /// room again would repeat the stall).
    stalled: Option<Side>,
}

impl Teardown {
    pub(super) fn new(reason: DestroyReason) -> Self {
        Teardown {
            reason,
            from: None,
            stalled: None,
        }
    }

    /// The neighbour on `side` closed first (with `reason`, or its channel did).
    pub(super) fn from_side(reason: DestroyReason, side: Side) -> Self {
        Teardown {
            reason,
            from: Some(side),
            stalled: None,
        }
    }
}

impl Circuit {
    pub(super) async fn teardown(mut self, t: Teardown) {
        self.leave_role().await;
        self.streams.clear();
        for (_, task) in self.connecting.drain() {
            task.abort();
        }
        // Both slots go before any DESTROY is sent: from here on neither channel's reader
        // queues to this circuit, so neither waits on it while it says goodbye.
        self.prev.chan.circuits.remove(self.prev.id);
        let next = match std::mem::replace(&mut self.next, Next::None) {
            Next::Pending(end) | Next::Open(end) => {
                end.chan.circuits.remove(end.id);
                Some(end)
            }
            Next::None | Next::Connecting { .. } => None,
        };
        if t.from != Some(Side::Prev) {
            self.send_destroy(&self.prev, Side::Prev, &t).await;
        }
        if let Some(end) = next.filter(|_| t.from != Some(Side::Next)) {
            self.send_destroy(&end, Side::Next, &t).await;
        }
        self.shared
            .counters
            .circuits_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// DESTROY towards `side` at teardown: only tried (never waited for) on a side that
    /// stalled, waited for at most `stalled_send_secs` elsewhere. Best effort either way:
    /// the circuit's slots are already gone.
    pub(super) async fn send_destroy(&self, end: &CircEnd, side: Side, t: &Teardown) {
        let msg = ChanMsg::Destroy(t.reason);
        if t.stalled == Some(side) {
            // The circuit's cells still queued there would only be discarded by the peer
            // with the circuit; the room they free lets the DESTROY through.
            end.chan.sender.discard_queued(end.id);
            if let Ok(cell) = ChanCell::circuit(end.id, msg).and_then(|c| c.encode()) {
                let _ = end.chan.sender.try_send_raw(&cell);
            }
        } else {
            let _ = queue_cell(end, msg, self.shared.limits.stalled_send_timeout(), None).await;
        }
    }
}

/// Why a cell could not be queued on a neighbour's channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SendFailure {
    /// The channel is closed (or the cell could not be encoded).
    Closed,
    /// Its queue stayed full for `stalled_send_secs`: the peer is not reading.
    Stalled,
    /// The queue-memory limit killed this circuit while it waited.
    Killed,
}

/// Queues `msg` on circuit `end`. With room in the channel's queue (the per-cell case)
/// this is one non-blocking try: no timer, no allocation. With the queue full it waits
/// for room at most `wait`, and not past a kill of the circuit (`kill`): a peer that
/// stopped reading must not hold this circuit for ever, since while it waits it drains
/// neither its own queue nor, therefore, the channel that feeds it, which other
/// clients' circuits share.
///
/// Not an `async fn`: the try happens here, and the returned future is a few words (the
/// rare wait is boxed). Every circuit's task keeps room for what it awaits inline, so a
/// cell held in that future would cost each open circuit half a kilobyte.
pub(super) fn queue_cell<'a>(
    end: &'a CircEnd,
    msg: ChanMsg,
    wait: Duration,
    kill: Option<&'a QueueStat>,
) -> QueueCell<'a> {
    let cell = match ChanCell::circuit(end.id, msg).and_then(|c| c.encode()) {
        Ok(cell) => cell,
        Err(_) => return QueueCell::Done(Some(Err(SendFailure::Closed))),
    };
    match end.chan.sender.try_send_raw(&cell) {
        Ok(()) => QueueCell::Done(Some(Ok(()))),
        Err(TrySendError::Closed) => QueueCell::Done(Some(Err(SendFailure::Closed))),
        Err(TrySendError::Full) => QueueCell::Waiting(Box::pin(async move {
            bounded_wait(end.chan.sender.send_raw(cell), wait, kill)
                .await?
                .map_err(|_| SendFailure::Closed)
        })),
    }
}

/// A boxed future the circuit's task awaits (rare work, kept out of the task's size).
pub(super) type BoxedWork<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// [`queue_cell`]'s outcome: done at once, or waiting for room.
pub(super) enum QueueCell<'a> {
    /// Queued (or failed) at once; taken when polled.
    Done(Option<Result<(), SendFailure>>),
    /// The channel's queue was full.
    Waiting(BoxedWork<'a, Result<(), SendFailure>>),
}

impl Future for QueueCell<'_> {
    type Output = Result<(), SendFailure>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        match &mut *self {
            QueueCell::Done(out) => Poll::Ready(out.take().unwrap_or(Err(SendFailure::Closed))),
            QueueCell::Waiting(f) => f.as_mut().poll(cx),
        }
    }
}

impl<'a> QueueCell<'a> {
    /// As a step of a cell's handling: a failed send ends the circuit (see [`lost`]).
    pub(super) fn into_step(self, side: Side, counters: &'a RelayCounters) -> Step<'a> {
        match self {
            QueueCell::Done(out) => Step::Done(Some(
                out.unwrap_or(Err(SendFailure::Closed))
                    .map_err(|f| lost(f, side, counters)),
            )),
            QueueCell::Waiting(f) => Step::Waiting(Box::pin(async move {
                f.await.map_err(|f| lost(f, side, counters))
            })),
        }
    }
}

/// What handling one event still has to wait for: nothing (the relayed cell was queued
/// at once), or boxed work. Small on purpose, like [`QueueCell`].
pub(super) enum Step<'a> {
    /// Finished; taken when polled.
    Done(Option<Result<(), Teardown>>),
    /// Still to do.
    Waiting(BoxedWork<'a, Result<(), Teardown>>),
}

impl<'a> Step<'a> {
    /// Work to be awaited, boxed.
    pub(super) fn boxed(work: impl Future<Output = Result<(), Teardown>> + Send + 'a) -> Self {
        Step::Waiting(Box::pin(work))
    }

    /// Finished with `result`.
    pub(super) fn done(result: Result<(), Teardown>) -> Self {
        Step::Done(Some(result))
    }
}

impl Future for Step<'_> {
    type Output = Result<(), Teardown>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        match &mut *self {
            Step::Done(out) => Poll::Ready(
                out.take()
                    .unwrap_or(Err(Teardown::new(DestroyReason::Internal))),
            ),
            Step::Waiting(f) => f.as_mut().poll(cx),
        }
    }
}

/// Runs `send`, a send that cannot be tried without waiting (on a rendezvous half, see
/// [`super::splice`]): polled once first, so with room in the queue it completes without
/// a timer; otherwise bounded like [`queue_cell`]. If it is cut short the cell is lost
/// (and the layer that was added to it): the caller tears its circuit down.
pub(super) async fn bounded<F: Future>(
    send: F,
    wait: Duration,
    kill: Option<&QueueStat>,
) -> Result<F::Output, SendFailure> {
    let mut send = std::pin::pin!(send);
    if let Poll::Ready(out) = std::future::poll_fn(|cx| Poll::Ready(send.as_mut().poll(cx))).await {
        return Ok(out);
    }
    bounded_wait(send, wait, kill).await
}

/// Waits for `send` (on a full queue) at most `wait`, and not past a kill of the circuit.
/// While it waits the circuit (`kill`, its stat) is marked stalled.
pub(super) async fn bounded_wait<F: Future>(
    send: F,
    wait: Duration,
    kill: Option<&QueueStat>,
) -> Result<F::Output, SendFailure> {
    let killed = async {
        match kill {
            Some(stat) => stat.killed().await,
            None => std::future::pending().await,
        }
    };
    // While it is marked, a channel reader that finds this circuit's queue full kills the
    // circuit instead of waiting on it (see `reactor::handle_cell`): the stall must cost
    // this circuit, not the channel it came on.
    let _stalled = kill.map(QueueStat::stall);
    tokio::select! {
        out = tokio::time::timeout(wait, send) => out.map_err(|_| SendFailure::Stalled),
        () = killed => Err(SendFailure::Killed),
    }
}

/// How the circuit ends after a cell towards `side` could not be sent.
pub(super) fn lost(f: SendFailure, side: Side, counters: &RelayCounters) -> Teardown {
    match f {
        SendFailure::Closed => Teardown::from_side(DestroyReason::ChannelClosed, side),
        SendFailure::Stalled => {
            debug!(
                ?side,
                "relay: circuit destroyed: its neighbour's channel stayed full"
            );
            RelayCounters::bump(&counters.stalled_sends);
            Teardown {
                reason: DestroyReason::Timeout,
                from: None,
                stalled: Some(side),
            }
        }
        SendFailure::Killed => {
            debug!("relay: circuit killed by the queue memory limit while sending");
            Teardown {
                reason: DestroyReason::ResourceLimit,
                from: None,
                stalled: Some(side),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::queue_budget::QueueBudget;
    use tokio::sync::mpsc;

    /// A send with room completes at the first poll; on a queue that stays full it ends
    /// after the bound, or as soon as the circuit is killed, never waiting for ever.
    #[tokio::test]
    async fn a_bounded_send_ends_on_timeout_or_kill() {
        let hour = Duration::from_secs(3600);
        let (room, mut room_rx) = mpsc::channel::<u8>(1);
        assert!(matches!(
            bounded(room.send(1), hour, None).await,
            Ok(Ok(()))
        ));
        assert_eq!(room_rx.recv().await, Some(1));

        let (full, _full_rx) = mpsc::channel::<u8>(1);
        full.try_send(0).unwrap();
        let short = Duration::from_millis(50);
        assert!(matches!(
            bounded(full.send(1), short, None).await,
            Err(SendFailure::Stalled)
        ));

        let budget = QueueBudget::new(10);
        let ticket = budget.register();
        let waiting = bounded(full.send(1), hour, Some(ticket.stat()));
        let kill = async {
            tokio::task::yield_now().await;
            // Over the relay-wide budget: the largest (only) circuit is killed.
            ticket.enqueued(100);
        };
        let (result, ()) = tokio::join!(waiting, kill);
        assert!(matches!(result, Err(SendFailure::Killed)));
        // Already killed: a wait on a full queue ends at once.
        assert!(matches!(
            bounded_wait(full.send(1), hour, Some(ticket.stat())).await,
            Err(SendFailure::Killed)
        ));
        ticket.dequeued(100);
    }
}
