//! The write side of a channel: one task per channel that batches queued cells into a
//! single `write_all`.
//!
//! Syscalls dominate link cost (one write per cell caps a relay at ~1/4 of what batched
//! writes allow, ../shared/reference/machine-limits.md), so the task waits for one cell,
//! then takes whatever else is already queued (up to [`MAX_BATCH`] more), seals them all
//! into one reused buffer and writes once.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tracing::debug;

use super::close::CloseSignal;
use super::error::{LinkError, LinkResult};
use super::record::{RecordCipher, RECORD_LEN, RECORD_TAG_LEN};
use super::stats::RecordStats;
use crate::cell::consts::CELL_LEN;

/// Most cells taken from the queue after the first one, per write.
pub const MAX_BATCH: usize = 64;

/// Everything the writer task owns.
pub(crate) struct RecordWriter {
    pub(crate) rx: mpsc::Receiver<[u8; CELL_LEN]>,
    pub(crate) stream: OwnedWriteHalf,
    pub(crate) cipher: RecordCipher,
    pub(crate) close: CloseSignal,
    pub(crate) stats: Arc<RecordStats>,
}

/// Appends `cell` to `buf` as an unsealed record (cell, then room for the tag).
fn push_cell(buf: &mut Vec<u8>, cell: &[u8; CELL_LEN]) {
    buf.extend_from_slice(cell);
    buf.extend_from_slice(&[0u8; RECORD_TAG_LEN]);
}

/// Seals every record in `buf` in place, in order, so counters match the wire order.
fn seal_all(buf: &mut [u8], cipher: &mut RecordCipher) -> LinkResult<()> {
    let mut chunks = buf.chunks_exact_mut(RECORD_LEN);
    for rec in &mut chunks {
        cipher.seal(rec)?;
    }
    if !chunks.into_remainder().is_empty() {
        return Err(LinkError::RecordLength(buf.len() % RECORD_LEN));
    }
    Ok(())
}

impl RecordWriter {
    /// Runs until the channel closes, every sender is gone, or a write fails; then shuts
    /// the TCP write half down and marks the channel closed.
    pub(crate) async fn run(mut self) {
        let result = self.pump().await;
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
        let mut buf: Vec<u8> = Vec::with_capacity((MAX_BATCH + 1) * RECORD_LEN);
        loop {
            let first = tokio::select! {
                biased;
                () = self.close.closed() => return Ok(()),
                c = self.rx.recv() => c,
            };
            let Some(first) = first else {
                return Ok(());
            };
            buf.clear();
            push_cell(&mut buf, &first);
            let mut n: u64 = 1;
            for _ in 0..MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(cell) => {
                        push_cell(&mut buf, &cell);
                        n += 1;
                    }
                    Err(_) => break,
                }
            }
            seal_all(&mut buf, &mut self.cipher)?;
            tokio::select! {
                biased;
                () = self.close.closed() => return Ok(()),
                r = self.stream.write_all(&buf) => r?,
            }
            self.stats.on_write(n, buf.len());
        }
    }
}
