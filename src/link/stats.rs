//! Per-channel record counters, so tests (and metrics) can check that every record on the
//! wire had the one fixed size.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::record::RECORD_LEN;

/// Counters of one channel, shared between its reader and writer. Relaxed atomics: these
/// are statistics, not synchronisation, and are updated once per batch, not per cell.
#[derive(Debug)]
pub struct RecordStats {
    records_read: AtomicU64,
    records_written: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    odd_size: AtomicBool,
    rekeys_sent: AtomicU64,
    rekeys_received: AtomicU64,
    padding_sent: AtomicU64,
    padding_received: AtomicU64,
    /// When these counters started: `last_write_us` counts from here.
    epoch: Instant,
    /// Microseconds from `epoch` to just after the last write (0: none yet): link padding
    /// waits for a quiet period measured from it (docs/protocol.md §5.10).
    last_write_us: AtomicU64,
}

impl Default for RecordStats {
    fn default() -> Self {
        RecordStats {
            records_read: AtomicU64::new(0),
            records_written: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            odd_size: AtomicBool::new(false),
            rekeys_sent: AtomicU64::new(0),
            rekeys_received: AtomicU64::new(0),
            padding_sent: AtomicU64::new(0),
            padding_received: AtomicU64::new(0),
            epoch: Instant::now(),
            last_write_us: AtomicU64::new(0),
        }
    }
}

impl RecordStats {
    /// Counts `bytes` just read off the wire as `records` records.
    pub(crate) fn on_read(&self, records: u64, bytes: usize) {
        self.account(&self.records_read, &self.bytes_read, records, bytes);
    }

    /// Counts `bytes` just written to the wire as `records` records.
    pub(crate) fn on_write(&self, records: u64, bytes: usize) {
        self.account(&self.records_written, &self.bytes_written, records, bytes);
        // One clock read per batch (a batch costs a syscall anyway). Rounded up, so a
        // write is never dated before a moment that came earlier than it.
        let us = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX - 1);
        self.last_write_us.store(us + 1, Ordering::Relaxed);
    }

    /// When the last write ended (the counters' start if nothing was written yet).
    pub fn last_write(&self) -> Instant {
        let us = self.last_write_us.load(Ordering::Relaxed);
        self.epoch + Duration::from_micros(us)
    }

    /// Counts a PADDING cell we queued (link padding or keep-alive).
    pub(crate) fn on_padding_sent(&self) {
        self.padding_sent.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a PADDING cell the peer sent (counted by the channel's reader above the link
    /// layer, which parses cells).
    pub fn on_padding_received(&self) {
        self.padding_received.fetch_add(1, Ordering::Relaxed);
    }

    /// PADDING cells we queued.
    pub fn padding_sent(&self) -> u64 {
        self.padding_sent.load(Ordering::Relaxed)
    }

    /// PADDING cells the peer sent.
    pub fn padding_received(&self) -> u64 {
        self.padding_received.load(Ordering::Relaxed)
    }

    /// Counts a REKEY we sent (our sending key changed).
    pub(crate) fn on_rekey_sent(&self) {
        self.rekeys_sent.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a REKEY the peer sent (our receiving key changed).
    pub(crate) fn on_rekey_received(&self) {
        self.rekeys_received.fetch_add(1, Ordering::Relaxed);
    }

    fn account(&self, recs: &AtomicU64, byts: &AtomicU64, records: u64, bytes: usize) {
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        // RECORD_LEN is a small constant, so the product cannot overflow for any real batch;
        // saturate anyway rather than trust that.
        let expected = records.saturating_mul(RECORD_LEN as u64);
        if bytes != expected {
            self.odd_size.store(true, Ordering::Relaxed);
        }
        recs.fetch_add(records, Ordering::Relaxed);
        byts.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Records read and authenticated (including handshake records).
    pub fn records_read(&self) -> u64 {
        self.records_read.load(Ordering::Relaxed)
    }

    /// Records written (including handshake records).
    pub fn records_written(&self) -> u64 {
        self.records_written.load(Ordering::Relaxed)
    }

    /// Bytes of whole records read.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// Bytes written.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written.load(Ordering::Relaxed)
    }

    /// How many times our sending key has been replaced (REKEY records written or about
    /// to be: counted when sealed).
    pub fn rekeys_sent(&self) -> u64 {
        self.rekeys_sent.load(Ordering::Relaxed)
    }

    /// How many times our receiving key has been replaced (valid REKEY records read).
    pub fn rekeys_received(&self) -> u64 {
        self.rekeys_received.load(Ordering::Relaxed)
    }

    /// Whether any record read or written ever had a length other than [`RECORD_LEN`].
    pub fn saw_odd_size(&self) -> bool {
        self.odd_size.load(Ordering::Relaxed)
    }
}
