//! An established channel: a sender half (cloneable, bounded queue into the writer task)
//! and a receiver half (buffered, in-place decryption), plus what the handshake proved.

use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::debug;

use super::circ_ids::CircIdAllocator;
use super::close::CloseSignal;
use super::error::{LinkError, LinkResult};
use super::peer::PeerKind;
use super::reader::RecordReader;
use super::record::RecordCipher;
use super::stats::RecordStats;
use crate::cell::consts::CELL_LEN;
use crate::cell::ChanCell;

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
    /// The peer's clock (unix seconds) from its NETINFO, for skew checks.
    pub peer_timestamp: u64,
    /// Our end of the TCP connection (diagnostics and tests: which connections a relay
    /// sees are ours).
    pub local_addr: Option<std::net::SocketAddr>,
    /// Circuit ids live on this channel; allocates ours from the right half.
    pub circ_ids: CircIdAllocator,
    /// Record counters of this channel.
    pub stats: Arc<RecordStats>,
}

/// The sending half of a channel. Cloneable; all clones feed one bounded queue.
#[derive(Debug, Clone)]
pub struct ChannelSender {
    tx: mpsc::Sender<[u8; CELL_LEN]>,
    close: CloseSignal,
}

impl ChannelSender {
    pub(crate) fn new(tx: mpsc::Sender<[u8; CELL_LEN]>, close: CloseSignal) -> Self {
        ChannelSender { tx, close }
    }

    /// Queues an encoded cell. Waits while the queue is full (backpressure); fails with
    /// [`LinkError::Closed`] once the channel is closed.
    pub async fn send_raw(&self, cell: [u8; CELL_LEN]) -> LinkResult<()> {
        if self.close.is_closed() {
            return Err(LinkError::Closed);
        }
        self.tx.send(cell).await.map_err(|_| LinkError::Closed)
    }

    /// Queues an encoded cell if there is room now, without waiting: the cheap first try
    /// of a caller that must not wait unboundedly for a peer that stopped reading (it
    /// falls back to [`Self::send_raw`] under a time bound when the queue is full). The
    /// cell is copied only on success, so on failure the caller still has it.
    pub fn try_send_raw(&self, cell: &[u8; CELL_LEN]) -> Result<(), TrySendError> {
        if self.close.is_closed() {
            return Err(TrySendError::Closed);
        }
        match self.tx.try_reserve() {
            Ok(permit) => {
                permit.send(*cell);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(())) => Err(TrySendError::Full),
            Err(mpsc::error::TrySendError::Closed(())) => Err(TrySendError::Closed),
        }
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

/// Why [`ChannelSender::try_send_raw`] did not queue a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrySendError {
    /// The queue is full (the peer is not taking cells as fast as they come).
    Full,
    /// The channel is closed.
    Closed,
}

/// The receiving half of a channel.
pub struct ChannelReceiver {
    reader: RecordReader,
    cipher: RecordCipher,
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
    pub(crate) fn new(reader: RecordReader, cipher: RecordCipher, close: CloseSignal) -> Self {
        ChannelReceiver {
            reader,
            cipher,
            close,
            done: false,
        }
    }

    /// The next decrypted cell, raw: callers parse it with the command set legal in their
    /// state. `Ok(None)` once the channel is closed cleanly (by the peer or locally).
    ///
    /// Any error (a record failing authentication, a counter running out, the idle timeout,
    /// an I/O error) closes the channel; later calls return `Ok(None)`.
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
        let Some(record) = self.reader.next_record().await? else {
            return Ok(None);
        };
        self.cipher.open(record)?;
        let mut cell = [0u8; CELL_LEN];
        cell.copy_from_slice(
            record
                .get(..CELL_LEN)
                .ok_or(LinkError::RecordLength(record.len()))?,
        );
        Ok(Some(cell))
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

    /// The non-blocking try queues while there is room, reports a full queue without
    /// waiting (the cell stays with the caller), and reports a closed channel.
    #[tokio::test]
    async fn try_send_reports_full_and_closed_without_waiting() {
        let (tx, mut rx) = mpsc::channel(1);
        let sender = ChannelSender::new(tx, CloseSignal::new());
        let cell = [7u8; CELL_LEN];
        assert_eq!(sender.try_send_raw(&cell), Ok(()));
        assert_eq!(sender.try_send_raw(&cell), Err(TrySendError::Full));
        assert_eq!(rx.recv().await, Some(cell));
        assert_eq!(sender.try_send_raw(&cell), Ok(()));
        sender.close();
        assert_eq!(sender.try_send_raw(&cell), Err(TrySendError::Closed));
        // The writer gone (queue receiver dropped) is a closed channel too.
        let (tx, rx) = mpsc::channel(1);
        let sender = ChannelSender::new(tx, CloseSignal::new());
        drop(rx);
        assert_eq!(sender.try_send_raw(&cell), Err(TrySendError::Closed));
    }
}
