//! The write side of a channel: one task per channel that batches queued cells into a
//! single `write_all`.
//!
//! Syscalls dominate link cost (one write per cell caps a relay at ~1/4 of what batched
//! writes allow, ../shared/reference/machine-limits.md), so the task waits for one cell,
//! then takes whatever else is already queued (up to [`MAX_BATCH`] more), seals them all
//! into one reused buffer and writes once. Which queued cell comes next is the queue's
//! choice ([`OutQueue`]: fair between circuits, or FIFO).
//!
//! The writer also replaces the sending key (docs/protocol.md §5.5.1): when the key has
//! sealed its budget of records, or a while after its first record, it seals a REKEY cell
//! as the key's last record, in order with the cells around it, and switches to the next
//! key. The per-cell cost is two compares (the record budget, and the command byte for a
//! REKEY queued by the owner); the timer is a `select!` branch and a check per batch.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::time::Instant;
use tracing::debug;

use super::bandwidth_limit::BandwidthShaper;
use super::close::CloseSignal;
use super::error::{LinkError, LinkResult};
use super::out_queue::OutQueue;
use super::record::{RecordCipher, RECORD_LEN, RECORD_TAG_LEN};
use super::stats::RecordStats;
use crate::cell::consts::{CELL_LEN, CIRC_ID_LEN};
use crate::cell::ChanCmd;

/// Most cells taken from the queue after the first one, per write.
pub(crate) const MAX_BATCH: usize = 64;

/// The REKEY cell, the only one the writer makes itself: circuit id 0, command REKEY, body
/// all zero (docs/protocol.md §2).
pub(crate) const REKEY_CELL: [u8; CELL_LEN] = {
    let mut cell = [0u8; CELL_LEN];
    cell[CIRC_ID_LEN] = ChanCmd::Rekey.code();
    cell
};

/// When the writer replaces its sending key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RekeyPolicy {
    /// A key seals at most this many records, its REKEY included (read as at least 3, so
    /// that every key, the first one with NETINFO included, carries a cell).
    pub(crate) after_records: u64,
    /// A key is replaced this long after the batch holding its first record.
    pub(crate) after: Duration,
}

/// Everything the writer task owns.
pub(crate) struct RecordWriter {
    pub(crate) queue: Arc<OutQueue>,
    pub(crate) stream: OwnedWriteHalf,
    pub(crate) cipher: RecordCipher,
    pub(crate) close: CloseSignal,
    pub(crate) stats: Arc<RecordStats>,
    pub(crate) rekey: RekeyPolicy,
    /// The node's rate limit, charged for every byte written (`None`: unlimited).
    pub(crate) bandwidth: Option<Arc<BandwidthShaper>>,
}

/// Appends `cell` to `buf` as a record sealed under `cipher`'s current key and counter.
fn push_sealed(
    buf: &mut Vec<u8>,
    cell: &[u8; CELL_LEN],
    cipher: &mut RecordCipher,
) -> LinkResult<()> {
    let start = buf.len();
    buf.extend_from_slice(cell);
    buf.extend_from_slice(&[0u8; RECORD_TAG_LEN]);
    let record = buf.get_mut(start..).ok_or(LinkError::RecordLength(start))?;
    cipher.seal(record)
}

/// Seals cells into a batch, in order, with a REKEY record wherever one is due.
struct Sealer<'a> {
    cipher: &'a mut RecordCipher,
    stats: &'a RecordStats,
    /// Data records a key may seal before its REKEY: `after_records - 1`.
    budget: u64,
    /// Records appended to the current batch.
    records: u64,
    /// Whether the key changed during the current batch.
    rekeyed: bool,
}

impl Sealer<'_> {
    /// Appends one queued cell. A REKEY cell queued by the owner is not sent as is: it
    /// asks for a rekey now, which seals the canonical REKEY.
    fn push(&mut self, buf: &mut Vec<u8>, cell: &[u8; CELL_LEN]) -> LinkResult<()> {
        if cell[CIRC_ID_LEN] == ChanCmd::Rekey.code() {
            return self.push_rekey(buf);
        }
        push_sealed(buf, cell, self.cipher)?;
        self.records += 1;
        // The hot path's addition: this compare, and the command byte's above.
        if self.cipher.records_under_key() >= self.budget {
            self.push_rekey(buf)?;
        }
        Ok(())
    }

    /// Appends a REKEY record, the last under the current key, then switches keys: every
    /// record after it in `buf` and in later batches is sealed under the next key.
    fn push_rekey(&mut self, buf: &mut Vec<u8>) -> LinkResult<()> {
        push_sealed(buf, &REKEY_CELL, self.cipher)?;
        self.cipher.rekey()?;
        self.records += 1;
        self.rekeyed = true;
        self.stats.on_rekey_sent();
        Ok(())
    }
}

impl RecordWriter {
    /// Runs until the channel closes, every sender is gone, or a write fails; then shuts
    /// the TCP write half down and marks the channel closed.
    pub(crate) async fn run(mut self) {
        let result = self.pump().await;
        // Senders must not wait for a writer that is gone, nor cells stay queued for it.
        self.queue.writer_gone();
        // Dropping every sender is the graceful close: the queue has been flushed. Any
        // other exit also closes the channel, since a channel that cannot send is dead.
        let _ = self.stream.shutdown().await;
        self.close.close();
        match result {
            Ok(()) => debug!("link: channel writer finished"),
            Err(e) => {
                debug!("link: channel writer stopped: {e}");
                debug!(error = e.kind(), "link: channel writer stopped");
            }
        }
    }

    async fn pump(&mut self) -> LinkResult<()> {
        // Grows with the batches it carries (at most MAX_BATCH + 2 records): an idle
        // channel holds none of it.
        let mut buf: Vec<u8> = Vec::new();
        let budget = self.rekey.after_records.max(3) - 1;
        // The timer runs while the current key has sealed a record that a REKEY has not
        // yet retired: the handshake's NETINFO, at first. A key that has sealed nothing
        // protects nothing, so an idle channel rekeys once after its last traffic and
        // then stays silent (and can reach the peer's idle timeout).
        let timer = tokio::time::sleep(self.rekey.after);
        tokio::pin!(timer);
        let mut timer_armed = self.cipher.records_under_key() > 0;
        loop {
            let timer_fired = tokio::select! {
                biased;
                () = self.close.closed() => return Ok(()),
                // Before the queue, so a busy channel cannot starve the timer.
                () = &mut timer, if timer_armed => true,
                () = self.queue.ready() => false,
            };
            // Every sender is gone and everything they queued is written.
            if !timer_fired && self.queue.finished() {
                return Ok(());
            }
            // One clock read per batch: the scheduler's decay needs no finer time.
            let now = Instant::now();
            buf.clear();
            let mut sealer = Sealer {
                cipher: &mut self.cipher,
                stats: &self.stats,
                budget,
                records: 0,
                rekeyed: false,
            };
            if timer_fired {
                sealer.push_rekey(&mut buf)?;
            }
            let mut taken = 0;
            while taken <= MAX_BATCH {
                let Some(cell) = self.queue.pop(now) else {
                    break;
                };
                sealer.push(&mut buf, &cell)?;
                taken += 1;
            }
            let (records, rekeyed) = (sealer.records, sealer.rekeyed);
            if taken > 0 {
                self.queue.made_room();
            }
            if buf.is_empty() {
                continue;
            }
            // Once per batch: a new key's timer starts with the batch of its first record.
            if rekeyed {
                timer_armed = false;
            }
            if !timer_armed && self.cipher.records_under_key() > 0 {
                // An interval too long to represent never fires (and is retried per batch).
                if let Some(at) = Instant::now().checked_add(self.rekey.after) {
                    timer.as_mut().reset(at);
                    timer_armed = true;
                }
            }
            tokio::select! {
                biased;
                () = self.close.closed() => return Ok(()),
                r = write_shaped(&mut self.stream, &buf, self.bandwidth.as_deref()) => r?,
            }
            self.stats.on_write(records, buf.len());
            release_if_drained(&mut buf, self.queue.is_empty());
        }
    }
}

/// Largest batch buffer kept while the queue is empty (a few records): a channel that
/// carried a burst gives its up-to-35 KiB buffer back once it has written everything,
/// instead of keeping the high-water capacity while idle.
const KEEP_BATCH_BUF: usize = 4 * RECORD_LEN;

/// Releases `buf`'s capacity when nothing is queued and it grew past [`KEEP_BATCH_BUF`].
/// A busy channel (cells already waiting) keeps it; one that drained allocates again on
/// its next batch, a cost per write syscall at most, never per cell.
fn release_if_drained(buf: &mut Vec<u8>, queue_empty: bool) {
    if queue_empty && buf.capacity() > KEEP_BATCH_BUF {
        *buf = Vec::new();
    }
}

/// Writes all of `buf`, in pieces no larger than the rate limit's bucket grants.
async fn write_shaped(
    stream: &mut OwnedWriteHalf,
    buf: &[u8],
    shaper: Option<&BandwidthShaper>,
) -> std::io::Result<()> {
    let Some(shaper) = shaper else {
        return stream.write_all(buf).await;
    };
    let mut rest = buf;
    while !rest.is_empty() {
        let granted = shaper.write.take(rest.len()).await;
        let (piece, tail) = rest.split_at(granted.min(rest.len()));
        stream.write_all(piece).await?;
        rest = tail;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::ChannelSender;
    use tokio::io::AsyncReadExt;
    use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
    use tokio::net::{TcpListener, TcpStream};

    const KEY: [u8; 32] = [0x42; 32];
    const HOUR: Duration = Duration::from_secs(3600);

    /// A started writer over a fresh TCP connection, sealing under [`KEY`] from counter 0.
    struct Harness {
        tx: ChannelSender,
        stats: Arc<RecordStats>,
        /// The peer's end: raw records arrive here.
        wire: OwnedReadHalf,
        /// The peer's view of our sending key.
        opener: RecordCipher,
        _unused: (OwnedReadHalf, OwnedWriteHalf),
    }

    /// `queued` cells are in the queue before the writer starts, so they form one batch.
    /// The queue is fair between circuits.
    async fn start(policy: RekeyPolicy, queued: &[[u8; CELL_LEN]]) -> Harness {
        start_with(policy, queued, true).await
    }

    async fn start_with(policy: RekeyPolicy, queued: &[[u8; CELL_LEN]], fair: bool) -> Harness {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (ours, theirs) = tokio::join!(TcpStream::connect(addr), l.accept());
        let (our_read, our_write) = ours.unwrap().into_split();
        let (wire, their_write) = theirs.unwrap().0.into_split();
        let queue = Arc::new(OutQueue::new(256, fair));
        let close = CloseSignal::new();
        let tx = ChannelSender::new(queue.clone(), close.clone());
        for cell in queued {
            tx.try_send_raw(cell).unwrap();
        }
        let stats = Arc::new(RecordStats::default());
        let w = RecordWriter {
            queue,
            stream: our_write,
            cipher: RecordCipher::new(&KEY),
            close,
            stats: stats.clone(),
            rekey: policy,
            bandwidth: None,
        };
        tokio::spawn(w.run());
        Harness {
            tx,
            stats,
            wire,
            opener: RecordCipher::new(&KEY),
            _unused: (our_read, their_write),
        }
    }

    impl Harness {
        /// The next cell on the wire; the opener follows REKEYs as a receiver would.
        async fn next(&mut self) -> [u8; CELL_LEN] {
            let mut rec = [0u8; RECORD_LEN];
            self.wire.read_exact(&mut rec).await.unwrap();
            self.opener.open(&mut rec).unwrap();
            let mut cell = [0u8; CELL_LEN];
            cell.copy_from_slice(&rec[..CELL_LEN]);
            if cell == REKEY_CELL {
                self.opener.rekey().unwrap();
            }
            cell
        }
    }

    fn cell(n: u8) -> [u8; CELL_LEN] {
        let mut c = [n; CELL_LEN];
        c[..4].copy_from_slice(&[0x80, 0, 0, 1]);
        c[CIRC_ID_LEN] = ChanCmd::Relay.code();
        c
    }

    /// A drained queue's batch buffer is released; a busy one, or a small one, is kept.
    #[test]
    fn a_drained_writer_releases_its_batch_buffer() {
        let mut buf: Vec<u8> = Vec::with_capacity((MAX_BATCH + 2) * RECORD_LEN);
        release_if_drained(&mut buf, false);
        assert_eq!(
            buf.capacity(),
            (MAX_BATCH + 2) * RECORD_LEN,
            "cells still queued"
        );
        release_if_drained(&mut buf, true);
        assert_eq!(buf.capacity(), 0);
        let mut small: Vec<u8> = Vec::with_capacity(RECORD_LEN);
        release_if_drained(&mut small, true);
        assert_eq!(small.capacity(), RECORD_LEN);
    }

    #[test]
    fn rekey_cell_is_the_canonical_encoding() {
        let encoded = crate::cell::ChanCell::channel(crate::cell::ChanMsg::Rekey)
            .unwrap()
            .encode()
            .unwrap();
        assert_eq!(encoded, REKEY_CELL);
    }

    /// With a budget of 4 records per key, a batch of 10 cells goes out as
    /// c0 c1 c2 REKEY c3 c4 c5 REKEY c6 c7 c8 REKEY c9, each REKEY sealed in order under
    /// the key it retires.
    #[tokio::test]
    async fn record_budget_seals_rekeys_in_order_within_a_batch() {
        let cells: Vec<_> = (0..10).map(cell).collect();
        let policy = RekeyPolicy {
            after_records: 4,
            after: HOUR,
        };
        let mut h = start(policy, &cells).await;
        let mut expected = Vec::new();
        for (i, c) in cells.iter().enumerate() {
            expected.push(*c);
            if i % 3 == 2 {
                expected.push(REKEY_CELL);
            }
        }
        assert_eq!(expected.len(), 13);
        for (i, want) in expected.iter().enumerate() {
            assert_eq!(&h.next().await, want, "record {i}");
        }
        assert_eq!(h.stats.rekeys_sent(), 3);
        assert_eq!(h.stats.records_written(), 13);
        assert!(!h.stats.saw_odd_size());
    }

    /// A REKEY cell queued by the owner (with junk in it) is a rekey now: the canonical
    /// REKEY goes out and the key changes after it. In a FIFO queue it keeps its place
    /// among all cells; with fair queueing it is one of the channel's own cells, which go
    /// before the circuits' (in their own order).
    #[tokio::test]
    async fn queued_rekey_is_a_rekey_now() {
        let mut junk = [7u8; CELL_LEN];
        junk[CIRC_ID_LEN] = ChanCmd::Rekey.code();
        let mut padding = [0u8; CELL_LEN];
        padding[CIRC_ID_LEN] = ChanCmd::Padding.code();
        let policy = RekeyPolicy {
            after_records: 1 << 20,
            after: HOUR,
        };
        let queued = [cell(1), padding, junk, cell(2)];
        let mut h = start_with(policy, &queued, false).await;
        for want in [cell(1), padding, REKEY_CELL, cell(2)] {
            assert_eq!(h.next().await, want);
        }
        assert_eq!(h.stats.rekeys_sent(), 1);
        let mut h = start_with(policy, &queued, true).await;
        for want in [padding, REKEY_CELL, cell(1), cell(2)] {
            assert_eq!(h.next().await, want);
        }
        assert_eq!(h.stats.rekeys_sent(), 1);
    }

    /// The timer rekeys a key that has sealed something, once; a key that has sealed
    /// nothing is left alone, so an idle channel goes quiet. (A tiny interval, and no
    /// assertion about how long anything took.)
    #[tokio::test]
    async fn timer_rekeys_a_used_key_once_then_stays_quiet() {
        let after = Duration::from_millis(20);
        let policy = RekeyPolicy {
            after_records: 1 << 20,
            after,
        };
        let mut h = start(policy, &[cell(1)]).await;
        assert_eq!(h.next().await, cell(1));
        assert_eq!(h.next().await, REKEY_CELL);
        assert_eq!(h.stats.rekeys_sent(), 1);
        // Many intervals idle: the new key protects nothing, so no REKEY (if one were
        // sent, it would be read below instead of cell 2).
        tokio::time::pause();
        tokio::time::advance(10 * after).await;
        tokio::time::resume();
        h.tx.send_raw(cell(2)).await.unwrap();
        assert_eq!(h.next().await, cell(2));
        // ...and now the timer runs again.
        assert_eq!(h.next().await, REKEY_CELL);
        assert_eq!(h.stats.rekeys_sent(), 2);
    }

    /// The timer also fires on a channel that is busy all the time (the feeder keeps the
    /// queue full, waiting only for room), not just on one that pauses.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn timer_rekeys_a_busy_channel() {
        let policy = RekeyPolicy {
            after_records: 1 << 40,
            after: Duration::from_millis(5),
        };
        let mut h = start(policy, &[]).await;
        let tx = h.tx.clone();
        let feeder = tokio::spawn(async move {
            let mut i = 0u8;
            while tx.send_raw(cell(i)).await.is_ok() {
                i = i.wrapping_add(1);
            }
        });
        let mut rekeys = 0;
        let mut records = 0u64;
        while rekeys < 3 {
            if h.next().await == REKEY_CELL {
                rekeys += 1;
            }
            records += 1;
            assert!(records < 2_000_000, "no timed rekey in {records} records");
        }
        feeder.abort();
    }
}
