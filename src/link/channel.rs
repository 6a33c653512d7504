//! An established channel: a sender half (cloneable, bounded queue into the writer task)
//! and a receiver half (buffered, in-place decryption), plus what the handshake proved.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::debug;

use super::circ_ids::CircIdAllocator;
use super::close::CloseSignal;
use super::error::{LinkError, LinkResult};
use super::out_queue::{OutQueue, TrySendError};
use super::peer::PeerKind;
use super::reader::RecordReader;
use super::record::RecordCipher;
use super::stats::RecordStats;
use crate::cell::chan_contexts::LinkRekey;
use crate::cell::consts::{CELL_LEN, CIRC_ID_LEN};
use crate::cell::{ChanCell, ChanCmd, CircId};

/// An open, authenticated, encrypted link to one peer.
///
/// Dropping every [`ChannelSender`] flushes the queue and closes the channel gracefully;
/// [`ChannelSender::close`], dropping the [`ChannelReceiver`], or any error closes it at once.
#[derive(Debug)]
pub struct Channel {
    /// Queues cells to the peer.
    pub sender: ChannelSender,
    /// Yields cells from the peer.
    pub receiver: ChannelReceiver,
    /// Who the peer proved to be.
    pub peer: PeerKind,
    /// Whether we opened the TCP connection (decides our circuit-id half).
    pub is_initiator: bool,
    /// The peer's clock (unix seconds) from its NETINFO, for skew checks; 0 from a client.
    pub peer_timestamp: u64,
    /// Our address as the peer sees it (its NETINFO): how a relay learns its public
    /// address from the authorities. Never logged at info or above.
    pub seen_as: std::net::SocketAddr,
    /// Our end of the TCP connection (diagnostics and tests: which connections a relay
    /// sees are ours).
    pub local_addr: Option<std::net::SocketAddr>,
    /// Circuit ids live on this channel; allocates ours from the right half.
    pub circ_ids: CircIdAllocator,
    /// Record counters of this channel.
    pub stats: Arc<RecordStats>,
}

/// The sending half of a channel. Cloneable; all clones feed one bounded queue, which
/// the writer serves fairly between circuits ([`LinkConfig::fair_queueing`]).
///
/// [`LinkConfig::fair_queueing`]: super::LinkConfig::fair_queueing
#[derive(Debug)]
pub struct ChannelSender {
    queue: Arc<OutQueue>,
    close: CloseSignal,
}

impl Clone for ChannelSender {
    fn clone(&self) -> Self {
        self.queue.add_sender();
        ChannelSender {
            queue: self.queue.clone(),
            close: self.close.clone(),
        }
    }
}

impl Drop for ChannelSender {
    fn drop(&mut self) {
        self.queue.drop_sender();
    }
}

impl ChannelSender {
    /// The first sender of `queue` (which counts it already).
    pub(crate) fn new(queue: Arc<OutQueue>, close: CloseSignal) -> Self {
        ChannelSender { queue, close }
    }

    /// Queues an encoded cell. Waits while the queue is full (backpressure); fails with
    /// [`LinkError::Closed`] once the channel is closed.
    ///
    /// A cell with the REKEY command (whatever its circuit id and body) is not sent as is:
    /// it asks the writer to replace the sending key now, which it does by sealing the
    /// canonical REKEY cell in its place (docs/protocol.md §5.5.1). The link layer rekeys
    /// on its own; a peer closes a channel that rekeys more often than the protocol allows.
    ///
    /// Order: a circuit's cells go out in the order they were queued, and so do the
    /// channel's own cells (circuit id 0, and REKEY). With fair queueing the channel's own
    /// cells go before circuits' cells queued earlier, and circuits take turns (see
    /// `link::scheduler`); without it, everything goes in the order it was queued.
    pub async fn send_raw(&self, cell: [u8; CELL_LEN]) -> LinkResult<()> {
        if self.close.is_closed() {
            return Err(LinkError::Closed);
        }
        self.queue
            .push(&cell, &self.close)
            .await
            .map_err(|_| LinkError::Closed)
    }

    /// Queues an encoded cell if there is room now, without waiting: the cheap first try
    /// of a caller that must not wait unboundedly for a peer that stopped reading (it
    /// falls back to [`Self::send_raw`] under a time bound when the queue is full). The
    /// cell is copied only on success, so on failure the caller still has it.
    pub fn try_send_raw(&self, cell: &[u8; CELL_LEN]) -> Result<(), TrySendError> {
        if self.close.is_closed() {
            return Err(TrySendError::Closed);
        }
        self.queue.try_push(cell)
    }

    /// Drops the cells of circuit `circ` still queued, when the channel
    /// queues per circuit (fair queueing); returns how many. For a circuit that is being
    /// torn down after its queue stalled: its cells would only be discarded by the peer,
    /// and the room they free lets its DESTROY through.
    pub fn discard_queued(&self, circ: CircId) -> usize {
        self.queue.discard_circuit(circ.get())
    }

    /// Encodes and queues a cell.
    pub async fn send(&self, cell: &ChanCell) -> LinkResult<()> {
        self.send_raw(cell.encode()?).await
    }

    /// Closes the channel now; cells still queued are dropped.
    pub fn close(&self) {
        self.close.close();
    }

    /// Whether the channel is closed.
    pub fn is_closed(&self) -> bool {
        self.close.is_closed()
    }

    /// Completes when the channel closes, for whatever reason.
    pub async fn closed(&self) {
        self.close.closed().await;
    }
}

/// How often the peer may rekey (docs/protocol.md §5.5.1).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RekeyFloor {
    /// A REKEY retiring a key that opened fewer records than this (the REKEY included)...
    pub(crate) min_records: u64,
    /// ...and that was installed less than this long ago closes the channel.
    pub(crate) min_interval: Duration,
}

/// Applies the peer's REKEYs to the receiving cipher, within the bound.
struct RekeyGuard {
    floor: RekeyFloor,
    /// When the current receiving key was installed.
    installed: Instant,
}

impl RekeyGuard {
    fn new(floor: RekeyFloor) -> Self {
        RekeyGuard {
            floor,
            installed: Instant::now(),
        }
    }

    /// The peer's REKEY record (already opened under the current key) retires that key:
    /// refuse it if it comes too soon, else switch `cipher` to the next key.
    fn apply(&mut self, cipher: &mut RecordCipher) -> LinkResult<()> {
        if cipher.records_under_key() < self.floor.min_records
            && self.installed.elapsed() < self.floor.min_interval
        {
            return Err(LinkError::Protocol("REKEY sooner than the protocol allows"));
        }
        cipher.rekey()?;
        self.installed = Instant::now();
        Ok(())
    }
}

/// The receiving half of a channel.
pub struct ChannelReceiver {
    reader: RecordReader,
    cipher: RecordCipher,
    rekey: RekeyGuard,
    close: CloseSignal,
    done: bool,
}

impl std::fmt::Debug for ChannelReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelReceiver")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl ChannelReceiver {
    pub(crate) fn new(
        reader: RecordReader,
        cipher: RecordCipher,
        floor: RekeyFloor,
        close: CloseSignal,
    ) -> Self {
        ChannelReceiver {
            reader,
            cipher,
            rekey: RekeyGuard::new(floor),
            close,
            done: false,
        }
    }

    /// The next decrypted cell, raw: callers parse it as the receiving context of their
    /// state (`crate::cell::chan_contexts`). `Ok(None)` once the channel is closed cleanly
    /// (by the peer or locally).
    ///
    /// The peer's REKEY cells are consumed here (the receiving key changes after each) and
    /// never returned.
    ///
    /// Any error (a record failing authentication, a counter running out, a malformed or
    /// too early REKEY, the idle timeout, an I/O error) closes the channel; later calls
    /// return `Ok(None)`.
    ///
    /// Cancel-safe: dropping the future loses no data, so it can sit in a `select!`.
    pub async fn recv(&mut self) -> LinkResult<Option<[u8; CELL_LEN]>> {
        if self.done {
            return Ok(None);
        }
        let result = match self.recv_inner().await {
            // A local close is a clean end, not a failure.
            Err(LinkError::Closed) => Ok(None),
            other => other,
        };
        if !matches!(result, Ok(Some(_))) {
            if let Err(e) = &result {
                debug!(error = e.kind(), "link: channel closed on error");
            }
            self.done = true;
            self.reader.shutdown();
            self.close.close();
        }
        result
    }

    async fn recv_inner(&mut self) -> LinkResult<Option<[u8; CELL_LEN]>> {
        loop {
            let Some(record) = self.reader.next_record().await? else {
                return Ok(None);
            };
            self.cipher.open(record)?;
            let plain = record
                .get(..CELL_LEN)
                .ok_or(LinkError::RecordLength(record.len()))?;
            // The hot path's only addition: one byte compare.
            if plain.get(CIRC_ID_LEN) != Some(&ChanCmd::Rekey.code()) {
                let mut cell = [0u8; CELL_LEN];
                cell.copy_from_slice(plain);
                return Ok(Some(cell));
            }
            // Strict: circuit id zero and an all-zero body, or the channel closes.
            ChanCell::<LinkRekey>::parse_typed(plain)
                .map_err(|_| LinkError::Protocol("malformed REKEY cell"))?;
            self.rekey.apply(&mut self.cipher)?;
            self.reader.stats().on_rekey_received();
        }
    }

    /// Closes the channel now.
    pub fn close(&self) {
        self.close.close();
    }
}

impl Drop for ChannelReceiver {
    fn drop(&mut self) {
        // Nobody will read the peer's cells any more: keeping the channel open would only
        // let them pile up in kernel buffers.
        self.close.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::record::plaintext_record;
    use crate::link::writer::REKEY_CELL;
    use tokio::io::AsyncWriteExt;
    use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
    use tokio::net::{TcpListener, TcpStream};

    const KEY: [u8; 32] = [0x24; 32];

    /// A peer that seals records by hand under [`KEY`] and writes them to a
    /// [`ChannelReceiver`] over real TCP.
    struct Peer {
        wire: OwnedWriteHalf,
        sealer: RecordCipher,
        _keep: OwnedReadHalf,
    }

    impl Peer {
        async fn send(&mut self, cell: &[u8; CELL_LEN]) {
            let mut rec = plaintext_record(cell);
            self.sealer.seal(&mut rec).unwrap();
            self.wire.write_all(&rec).await.unwrap();
        }

        /// Sends REKEY and switches its own key, as a writer does.
        async fn rekey(&mut self) {
            self.send(&REKEY_CELL).await;
            self.sealer.rekey().unwrap();
        }
    }

    async fn receiver(floor: RekeyFloor) -> (ChannelReceiver, Peer) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (ours, theirs) = tokio::join!(TcpStream::connect(addr), l.accept());
        let (read, _write) = ours.unwrap().into_split();
        let (keep, wire) = theirs.unwrap().0.into_split();
        let close = CloseSignal::new();
        let mut reader = RecordReader::new(read, Arc::new(RecordStats::default()));
        reader.set_open_channel(std::time::Duration::from_secs(30), close.clone());
        let rx = ChannelReceiver::new(reader, RecordCipher::new(&KEY), floor, close);
        let peer = Peer {
            wire,
            sealer: RecordCipher::new(&KEY),
            _keep: keep,
        };
        (rx, peer)
    }

    /// The protocol's record floor, with the time alternative pushed out of reach so no
    /// outcome depends on how fast the test runs.
    const RECORD_FLOOR: RekeyFloor = RekeyFloor {
        min_records: crate::link::REKEY_MIN_RECORDS,
        min_interval: Duration::from_secs(3600),
    };

    fn cell(n: u8) -> [u8; CELL_LEN] {
        let mut c = [n; CELL_LEN];
        c[..CIRC_ID_LEN].copy_from_slice(&[0x80, 0, 0, 1]);
        c[CIRC_ID_LEN] = ChanCmd::Relay.code();
        c
    }

    /// The peer's REKEY is consumed, not returned, and the cells after it open under the
    /// next key.
    #[tokio::test]
    async fn peer_rekeys_are_consumed_and_switch_the_receiving_key() {
        let floor = RekeyFloor {
            min_records: 2,
            min_interval: Duration::from_secs(3600),
        };
        let (mut rx, mut peer) = receiver(floor).await;
        for round in 0..20u8 {
            peer.send(&cell(round)).await;
            peer.rekey().await;
        }
        peer.send(&cell(99)).await;
        for round in 0..20u8 {
            assert_eq!(rx.recv().await.unwrap(), Some(cell(round)));
        }
        assert_eq!(rx.recv().await.unwrap(), Some(cell(99)));
        assert_eq!(rx.reader.stats().rekeys_received(), 20);
    }

    /// The protocol's floor, exactly: a key that protected 1000 records (REKEY included)
    /// may be retired at once; one that protected 999 may not (unless the interval passed).
    #[tokio::test]
    async fn rekey_floor_in_records_is_exact() {
        let (mut rx, mut peer) = receiver(RECORD_FLOOR).await;
        let feed = tokio::spawn(async move {
            for _ in 0..999 {
                peer.send(&cell(1)).await;
            }
            peer.rekey().await; // record 1000 under the first key: fine
            for _ in 0..998 {
                peer.send(&cell(2)).await;
            }
            peer.rekey().await; // record 999 under the second key: too soon
            peer
        });
        for _ in 0..999 {
            assert_eq!(rx.recv().await.unwrap(), Some(cell(1)));
        }
        for _ in 0..998 {
            assert_eq!(rx.recv().await.unwrap(), Some(cell(2)));
        }
        let err = rx.recv().await.unwrap_err();
        assert!(
            matches!(err, LinkError::Protocol(m) if m.contains("REKEY sooner")),
            "{err:?}"
        );
        assert_eq!(rx.recv().await.unwrap(), None);
        assert!(rx.close.is_closed());
        let _peer = feed.await.unwrap();
    }

    /// Two REKEYs in a row (a flood) close the channel.
    #[tokio::test]
    async fn rekey_flood_closes_the_channel() {
        let (mut rx, mut peer) = receiver(RECORD_FLOOR).await;
        peer.send(&cell(1)).await;
        for _ in 0..10 {
            peer.rekey().await;
        }
        assert_eq!(rx.recv().await.unwrap(), Some(cell(1)));
        assert!(matches!(rx.recv().await, Err(LinkError::Protocol(_))));
        assert_eq!(rx.recv().await.unwrap(), None);
    }

    /// A key installed long enough ago may be retired after few records: a quiet channel
    /// still rekeys on time.
    #[tokio::test]
    async fn rekey_after_the_interval_is_accepted() {
        let floor = RekeyFloor {
            min_records: 1000,
            min_interval: Duration::from_millis(30),
        };
        let (mut rx, mut peer) = receiver(floor).await;
        peer.send(&cell(1)).await;
        assert_eq!(rx.recv().await.unwrap(), Some(cell(1)));
        // More than the interval since the receiver installed the key (it reads the REKEY
        // after this): runtime time jumps ahead, no real waiting.
        tokio::time::pause();
        tokio::time::advance(Duration::from_millis(60)).await;
        tokio::time::resume();
        peer.rekey().await;
        peer.send(&cell(2)).await;
        assert_eq!(rx.recv().await.unwrap(), Some(cell(2)));
        assert_eq!(rx.reader.stats().rekeys_received(), 1);
    }

    /// REKEY must have circuit id zero and an all-zero body; anything else closes the
    /// channel (and does not switch keys).
    #[tokio::test]
    async fn malformed_rekey_closes_the_channel() {
        let floor = RekeyFloor {
            min_records: 1,
            min_interval: Duration::ZERO,
        };
        let mut bad_body = REKEY_CELL;
        bad_body[CELL_LEN - 1] = 1;
        let mut bad_circ = REKEY_CELL;
        bad_circ[0] = 0x80;
        let mut bad_first_body_byte = REKEY_CELL;
        bad_first_body_byte[CIRC_ID_LEN + 1] = 0xff;
        for bad in [bad_body, bad_circ, bad_first_body_byte] {
            let (mut rx, mut peer) = receiver(floor).await;
            peer.send(&cell(1)).await;
            peer.send(&bad).await;
            assert_eq!(rx.recv().await.unwrap(), Some(cell(1)));
            let err = rx.recv().await.unwrap_err();
            assert!(
                matches!(err, LinkError::Protocol("malformed REKEY cell")),
                "{err:?}"
            );
            assert_eq!(rx.recv().await.unwrap(), None);
            assert_eq!(rx.reader.stats().rekeys_received(), 0);
        }
    }

    /// The non-blocking try queues while there is room, reports a full queue without
    /// waiting (the cell stays with the caller), and reports a closed channel.
    #[tokio::test]
    async fn try_send_reports_full_and_closed_without_waiting() {
        for fair in [true, false] {
            let queue = Arc::new(OutQueue::new(1, fair));
            let sender = ChannelSender::new(queue.clone(), CloseSignal::new());
            let cell = [7u8; CELL_LEN];
            assert_eq!(sender.try_send_raw(&cell), Ok(()));
            assert_eq!(sender.try_send_raw(&cell), Err(TrySendError::Full));
            assert_eq!(queue.pop(Instant::now()), Some(cell));
            assert_eq!(sender.try_send_raw(&cell), Ok(()));
            sender.close();
            assert_eq!(sender.try_send_raw(&cell), Err(TrySendError::Closed));
            // The writer gone is a closed channel too.
            let queue = Arc::new(OutQueue::new(1, fair));
            let sender = ChannelSender::new(queue.clone(), CloseSignal::new());
            queue.writer_gone();
            assert_eq!(sender.try_send_raw(&cell), Err(TrySendError::Closed));
        }
    }

    /// Clones count as senders: the queue is finished only when the last one is gone.
    #[test]
    fn the_last_sender_finishes_the_queue() {
        let queue = Arc::new(OutQueue::new(4, true));
        let sender = ChannelSender::new(queue.clone(), CloseSignal::new());
        let other = sender.clone();
        drop(sender);
        assert!(!queue.finished());
        drop(other);
        assert!(queue.finished());
    }
}
