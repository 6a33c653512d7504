//! A channel's outbound queue: the cells its senders queued and its writer task has not
//! yet sealed, bounded channel-wide.
//!
//! In place of a bounded `mpsc` (which could only be one FIFO), so that the writer can
//! take cells in the order the [`Scheduler`] picks (fair queueing between circuits) or,
//! with fair queueing off, in arrival order. The guarantees are those of the `mpsc`:
//! at most `capacity` cells queued; a try never waits; a waiting sender wakes when the
//! writer takes cells; the writer sees every cell queued before the last sender went
//! away (the graceful close flushes), and senders see the writer's end as a closed
//! channel. An idle queue holds no cell buffer (the `mpsc` kept a 16.5 KiB block).

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::close::CloseSignal;
use super::scheduler::Scheduler;
use crate::cell::consts::CELL_LEN;
use crate::sync::lock;

/// Why [`ChannelSender::try_send_raw`](super::ChannelSender::try_send_raw) did not queue a
/// cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrySendError {
    /// The queue is full (the peer is not taking cells as fast as they come).
    Full,
    /// The channel is closed.
    Closed,
}

/// Which cell goes next.
#[derive(Debug)]
enum Discipline {
    /// Arrival order, one queue for every circuit (`fair_queueing = false`).
    Fifo(VecDeque<[u8; CELL_LEN]>),
    /// Per-circuit queues, least recently busy circuit first.
    Fair(Scheduler),
}

#[derive(Debug)]
struct State {
    cells: Discipline,
    capacity: usize,
    /// Live [`ChannelSender`](super::ChannelSender)s; at 0 the writer flushes and ends.
    senders: usize,
    /// The writer ended: nothing queued will be sent.
    writer_gone: bool,
}

impl State {
    fn len(&self) -> usize {
        match &self.cells {
            Discipline::Fifo(q) => q.len(),
            Discipline::Fair(s) => s.len(),
        }
    }
}

/// The queue between a channel's senders and its writer task.
pub(crate) struct OutQueue {
    state: Mutex<State>,
    /// Wakes the writer: a cell was queued, or the last sender left.
    to_writer: Notify,
    /// Wakes senders waiting for room: the writer took cells, or ended.
    room: Notify,
}

/// Share of the channel's queue one circuit may fill, with fair queueing: a quarter of
/// it (256 cells with the default 1024). A circuit at its cap waits as on a full
/// channel; the rest of its window waits in its own circuit queue (sized for two windows,
/// `relay::limits::MIN_HONEST_CIRCUIT_QUEUE`). A quarter still holds several writer
/// batches (`MAX_BATCH` + 1 cells), so one circuit alone keeps the link busy, and leaves
/// three quarters for the others.
pub fn per_circuit_cap(capacity: usize) -> usize {
    (capacity / 4).max(1)
}

impl std::fmt::Debug for OutQueue {
    /// Counts only: a channel's sender in a debug line must not dump queued cells.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = lock(&self.state);
        f.debug_struct("OutQueue")
            .field("queued", &st.len())
            .field("capacity", &st.capacity)
            .field("fair", &matches!(st.cells, Discipline::Fair(_)))
            .field("senders", &st.senders)
            .finish_non_exhaustive()
    }
}

impl OutQueue {
    /// A queue of at most `capacity` cells (at least 1), fair between circuits or FIFO.
    pub(crate) fn new(capacity: usize, fair: bool) -> Self {
        let capacity = capacity.max(1);
        let cells = if fair {
            Discipline::Fair(Scheduler::new(per_circuit_cap(capacity), Instant::now()))
        } else {
            Discipline::Fifo(VecDeque::new())
        };
        OutQueue {
            state: Mutex::new(State {
                cells,
                capacity,
                senders: 1,
                writer_gone: false,
            }),
            to_writer: Notify::new(),
            room: Notify::new(),
        }
    }

    /// Queues `cell` if there is room now (in the channel, and in its circuit's share).
    pub(crate) fn try_push(&self, cell: &[u8; CELL_LEN]) -> Result<(), TrySendError> {
        {
            let mut st = lock(&self.state);
            if st.writer_gone {
                return Err(TrySendError::Closed);
            }
            if st.len() >= st.capacity {
                return Err(TrySendError::Full);
            }
            match &mut st.cells {
                Discipline::Fifo(q) => q.push_back(*cell),
                Discipline::Fair(s) => s.push(cell).map_err(|_| TrySendError::Full)?,
            }
        }
        self.to_writer.notify_one();
        Ok(())
    }

    /// Queues `cell`, waiting for room; fails once the channel closes (`close`) or the
    /// writer is gone.
    pub(crate) async fn push(
        &self,
        cell: &[u8; CELL_LEN],
        close: &CloseSignal,
    ) -> Result<(), TrySendError> {
        loop {
            // Registered before the try, so room freed in between is not missed.
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_push(cell) {
                Err(TrySendError::Full) => {}
                done => return done,
            }
            tokio::select! {
                () = room => {}
                () = close.closed() => return Err(TrySendError::Closed),
            }
        }
    }

    /// Resolves once there is a cell to take, or nothing more will come (no sender left).
    /// Cancel-safe.
    pub(crate) async fn ready(&self) {
        loop {
            let woken = self.to_writer.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            {
                let st = lock(&self.state);
                if st.len() > 0 || st.senders == 0 {
                    return;
                }
            }
            woken.await;
        }
    }

    /// Takes the next cell to send at `now`.
    pub(crate) fn pop(&self, now: Instant) -> Option<[u8; CELL_LEN]> {
        let mut st = lock(&self.state);
        match &mut st.cells {
            Discipline::Fifo(q) => {
                let cell = q.pop_front();
                // Give a burst's room back once drained (an idle channel holds none).
                if q.is_empty() && q.capacity() > 0 {
                    *q = VecDeque::new();
                }
                cell
            }
            Discipline::Fair(s) => s.pop(now),
        }
    }

    /// Wakes the senders waiting for room (the writer took cells). Once per batch.
    pub(crate) fn made_room(&self) {
        self.room.notify_waiters();
    }

    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        lock(&self.state).len() == 0
    }

    /// Whether the writer is done: nothing queued and no sender left.
    pub(crate) fn finished(&self) -> bool {
        let st = lock(&self.state);
        st.len() == 0 && st.senders == 0
    }

    /// Drops the cells queued for circuit `circ_id` (fair queueing only: in a FIFO they
    /// stay); returns how many.
    pub(crate) fn discard_circuit(&self, circ_id: u32) -> usize {
        let dropped = match &mut lock(&self.state).cells {
            Discipline::Fifo(_) => 0,
            Discipline::Fair(s) => s.discard(circ_id),
        };
        if dropped > 0 {
            self.room.notify_waiters();
        }
        dropped
    }

    /// A new sender shares the queue.
    pub(crate) fn add_sender(&self) {
        lock(&self.state).senders += 1;
    }

    /// A sender went away; the last one lets the writer finish once it has flushed.
    pub(crate) fn drop_sender(&self) {
        let last = {
            let mut st = lock(&self.state);
            st.senders = st.senders.saturating_sub(1);
            st.senders == 0
        };
        if last {
            self.to_writer.notify_one();
        }
    }

    /// The writer ended: drop what is queued, and fail every send from now on.
    pub(crate) fn writer_gone(&self) {
        {
            let mut st = lock(&self.state);
            st.writer_gone = true;
            match &mut st.cells {
                Discipline::Fifo(q) => *q = VecDeque::new(),
                Discipline::Fair(s) => s.clear(),
            }
        }
        self.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::consts::CIRC_ID_LEN;
    use crate::cell::ChanCmd;
    use std::sync::Arc;

    fn cell(circ: u32) -> [u8; CELL_LEN] {
        let mut c = [0u8; CELL_LEN];
        c[..CIRC_ID_LEN].copy_from_slice(&circ.to_be_bytes());
        c[CIRC_ID_LEN] = ChanCmd::Relay.code();
        c
    }

    /// The channel-wide bound holds across circuits, in both disciplines; a waiting
    /// sender is woken once the writer takes a cell.
    #[tokio::test]
    async fn channel_bound_and_wakeups() {
        for fair in [true, false] {
            let q = Arc::new(OutQueue::new(8, fair));
            for circ in 1..=8u32 {
                q.try_push(&cell(circ)).unwrap();
            }
            assert_eq!(q.try_push(&cell(9)), Err(TrySendError::Full));
            let close = CloseSignal::new();
            let waiter = {
                let (q, close) = (q.clone(), close.clone());
                tokio::spawn(async move { q.push(&cell(9), &close).await })
            };
            tokio::task::yield_now().await;
            assert!(!waiter.is_finished());
            assert!(q.pop(Instant::now()).is_some());
            q.made_room();
            assert_eq!(waiter.await.unwrap(), Ok(()));
            assert_eq!(q.try_push(&cell(10)), Err(TrySendError::Full));
        }
    }

    /// With fair queueing one circuit fills only its share; the FIFO lets it fill all.
    #[test]
    fn per_circuit_share() {
        let q = OutQueue::new(8, true);
        assert_eq!(per_circuit_cap(8), 2);
        q.try_push(&cell(1)).unwrap();
        q.try_push(&cell(1)).unwrap();
        assert_eq!(q.try_push(&cell(1)), Err(TrySendError::Full));
        q.try_push(&cell(2)).unwrap();
        let q = OutQueue::new(8, false);
        for _ in 0..8 {
            q.try_push(&cell(1)).unwrap();
        }
    }

    /// The last sender leaving lets the writer finish, after the queue is flushed; the
    /// writer's end fails waiting and later sends, and frees what was queued.
    #[tokio::test]
    async fn last_sender_and_writer_end() {
        let q = Arc::new(OutQueue::new(2, true));
        q.try_push(&cell(1)).unwrap();
        q.drop_sender();
        q.ready().await;
        assert!(!q.finished(), "a cell is still queued");
        assert!(q.pop(Instant::now()).is_some());
        assert!(q.finished());
        q.ready().await;

        let q = Arc::new(OutQueue::new(1, false));
        q.try_push(&cell(1)).unwrap();
        let close = CloseSignal::new();
        let waiter = {
            let (q, close) = (q.clone(), close.clone());
            tokio::spawn(async move { q.push(&cell(2), &close).await })
        };
        tokio::task::yield_now().await;
        q.writer_gone();
        assert_eq!(waiter.await.unwrap(), Err(TrySendError::Closed));
        assert!(q.is_empty());
        assert_eq!(q.try_push(&cell(3)), Err(TrySendError::Closed));
    }

    /// Debug output shows counts, never the cells.
    #[test]
    fn debug_shows_no_cells() {
        let q = OutQueue::new(8, true);
        q.try_push(&[0xab; CELL_LEN]).unwrap();
        let shown = format!("{q:?}");
        assert!(shown.contains("queued: 1"), "{shown}");
        assert!(!shown.contains("171"), "{shown}");
    }

    /// A discarded circuit's cells leave the channel bound at once.
    #[test]
    fn discard_returns_room() {
        let q = OutQueue::new(8, true);
        for circ in [1, 1, 2, 2, 3, 3, 4, 4] {
            q.try_push(&cell(circ)).unwrap();
        }
        assert_eq!(q.try_push(&cell(5)), Err(TrySendError::Full));
        assert_eq!(q.discard_circuit(3), 2);
        q.try_push(&cell(5)).unwrap();
        q.try_push(&cell(3)).unwrap();
        assert_eq!(q.try_push(&cell(6)), Err(TrySendError::Full));
    }
}
