//! Buffered record framing on the read side of a link.
//!
//! Reads go into one large buffer (64 KiB and more), so a busy channel costs one `read`
//! syscall per ~120 records instead of one per record; each record is then handed out in
//! place for decryption, with no allocation per record. The buffer grows only while reads
//! fill it, and goes back to its small start once the channel has been quiet for
//! [`RELEASE_AFTER`]: a channel that once carried a burst does not keep 68 KiB forever.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;

use super::bandwidth_limit::BandwidthShaper;
use super::close::CloseSignal;
use super::error::{LinkError, LinkResult};
use super::record::RECORD_LEN;
use super::stats::RecordStats;

/// Size of the read buffer: 128 records, just over 64 KiB.
pub(crate) const READ_BUF_LEN: usize = 128 * RECORD_LEN;
/// What a new channel's reader starts with: an idle channel (a relay may hold 10,000)
/// keeps 2 KiB instead of 68; a read that fills the buffer doubles it, up to
/// [`READ_BUF_LEN`], so a busy channel still reads in large batches.
const INITIAL_READ_BUF_LEN: usize = 4 * RECORD_LEN;
/// How long a reader with nothing buffered waits for data before it gives a grown buffer
/// back. A busy channel never waits this long between reads, so it keeps its buffer (no
/// allocation per read); a channel that went quiet holds [`INITIAL_READ_BUF_LEN`] again.
pub(crate) const RELEASE_AFTER: Duration = Duration::from_secs(1);

/// Splits a byte stream into records of exactly [`RECORD_LEN`] bytes.
pub(crate) struct RecordReader {
    /// `None` once the channel has failed: dropping the half lets the socket close even
    /// while the application still holds the receiver.
    stream: Option<OwnedReadHalf>,
    buf: Box<[u8]>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    stats: Arc<RecordStats>,
    /// While no record arrives for this long, give up (none during the handshake, which
    /// has its own overall deadline).
    idle: Option<Duration>,
    /// Stop reading when the channel is closed locally.
    close: Option<CloseSignal>,
    /// The node's rate limit, charged for every byte read (`None`: unlimited).
    bandwidth: Option<Arc<BandwidthShaper>>,
}

impl RecordReader {
    /// A reader over `stream`, counting into `stats`.
    pub(crate) fn new(stream: OwnedReadHalf, stats: Arc<RecordStats>) -> Self {
        RecordReader {
            stream: Some(stream),
            buf: vec![0u8; INITIAL_READ_BUF_LEN].into_boxed_slice(),
            start: 0,
            end: 0,
            stats,
            idle: None,
            close: None,
            bandwidth: None,
        }
    }

    /// Charges every later read to `shaper`'s read bucket.
    pub(crate) fn set_bandwidth(&mut self, shaper: Option<Arc<BandwidthShaper>>) {
        self.bandwidth = shaper;
    }

    /// Switches to transport mode: apply the idle timeout, and watch the close flag.
    pub(crate) fn set_open_channel(&mut self, idle: Duration, close: CloseSignal) {
        self.idle = Some(idle);
        self.close = Some(close);
    }

    /// The channel's counters.
    pub(crate) fn stats(&self) -> &Arc<RecordStats> {
        &self.stats
    }

    /// Drops the socket half; later reads fail with [`LinkError::Closed`].
    pub(crate) fn shutdown(&mut self) {
        self.stream = None;
    }

    /// The next whole record, mutable so it can be decrypted in place; `None` at a clean
    /// end of stream (on a record boundary). A stream that ends mid-record is an error.
    pub(crate) async fn next_record(&mut self) -> LinkResult<Option<&mut [u8]>> {
        loop {
            if self.end.saturating_sub(self.start) >= RECORD_LEN {
                let s = self.start;
                self.start = s + RECORD_LEN;
                self.stats.on_read(1, RECORD_LEN);
                let rec = self
                    .buf
                    .get_mut(s..s + RECORD_LEN)
                    .ok_or(LinkError::RecordLength(0))?;
                return Ok(Some(rec));
            }
            self.compact();
            let n = self.fill().await?;
            if n == 0 {
                let partial = self.end - self.start;
                if partial == 0 {
                    return Ok(None);
                }
                self.stats.on_read(0, partial);
                return Err(LinkError::Protocol(
                    "connection closed in the middle of a record",
                ));
            }
            self.end += n;
            if self.end == self.buf.len() && self.buf.len() < READ_BUF_LEN {
                self.grow();
            }
        }
    }

    /// Doubles the buffer (up to [`READ_BUF_LEN`]): the last read filled it, so more is
    /// likely waiting.
    fn grow(&mut self) {
        let len = (self.buf.len() * 2).min(READ_BUF_LEN);
        let mut bigger = vec![0u8; len].into_boxed_slice();
        if let (Some(dst), Some(src)) = (bigger.get_mut(..self.end), self.buf.get(..self.end)) {
            dst.copy_from_slice(src);
            self.buf = bigger;
        }
    }

    /// Moves the unconsumed tail (less than one record) to the front of the buffer.
    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// One `read` into the free part of the buffer. With nothing buffered and a grown
    /// buffer, a read that finds no data for [`RELEASE_AFTER`] is cancelled (reads are
    /// cancel-safe: nothing is consumed until they complete, rate-limit tokens included),
    /// the small buffer put back, and the read started again. (The idle timeout restarts
    /// then: a silent peer is given up on at most `RELEASE_AFTER` later.)
    async fn fill(&mut self) -> LinkResult<usize> {
        if self.start == self.end && self.buf.len() > INITIAL_READ_BUF_LEN {
            match tokio::time::timeout(RELEASE_AFTER, self.read_once()).await {
                Ok(read) => return read,
                Err(_quiet) => self.release(),
            }
        }
        self.read_once().await
    }

    /// Puts the small buffer back; only called with nothing buffered.
    fn release(&mut self) {
        self.buf = vec![0u8; INITIAL_READ_BUF_LEN].into_boxed_slice();
        self.start = 0;
        self.end = 0;
    }

    /// One `read` into the free part of the buffer, bounded by the idle timeout and
    /// interrupted by a local close.
    async fn read_once(&mut self) -> LinkResult<usize> {
        let stream = self.stream.as_mut().ok_or(LinkError::Closed)?;
        let space = self.buf.get_mut(self.end..).ok_or(LinkError::Closed)?;
        let idle = self.idle;
        let shaper = self.bandwidth.as_deref();
        let read = async move {
            match shaper {
                Some(shaper) => shaped_read(stream, space, idle, shaper).await,
                None => with_idle(idle, stream.read(space)).await,
            }
        };
        match &self.close {
            Some(close) => tokio::select! {
                biased;
                () = close.closed() => Err(LinkError::Closed),
                r = read => r,
            },
            None => read.await,
        }
    }
}

/// `io` bounded by the idle timeout, if any.
async fn with_idle<T>(
    idle: Option<Duration>,
    io: impl std::future::Future<Output = std::io::Result<T>>,
) -> LinkResult<T> {
    match idle {
        Some(d) => tokio::time::timeout(d, io)
            .await
            .map_err(|_| LinkError::IdleTimeout)?
            .map_err(LinkError::from),
        None => io.await.map_err(LinkError::from),
    }
}

/// A read that first waits for data (under the idle timeout: waiting for the bucket is
/// not the peer's silence), then for the bucket, and reads no more than it was granted.
/// Tokens are taken only once data is there, so idle channels hold none.
async fn shaped_read(
    stream: &mut OwnedReadHalf,
    space: &mut [u8],
    idle: Option<Duration>,
    shaper: &BandwidthShaper,
) -> LinkResult<usize> {
    loop {
        with_idle(idle, stream.readable()).await?;
        let granted = shaper.read.take(space.len()).await;
        let into = space.get_mut(..granted).ok_or(LinkError::Closed)?;
        match stream.try_read(into) {
            Ok(n) => {
                shaper.read.refund(granted.saturating_sub(n));
                return Ok(n);
            }
            // Readiness can be spurious: give the tokens back and wait again.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                shaper.read.refund(granted);
            }
            Err(e) => {
                shaper.read.refund(granted);
                return Err(e.into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A burst grows the buffer; once the channel is quiet for `RELEASE_AFTER` (virtual
    /// time: the clock is paused and jumps to the next timer), the reader holds the small
    /// buffer again, and still reads what comes next.
    #[tokio::test(start_paused = true)]
    async fn a_quiet_channel_gives_its_read_buffer_back() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (ours, theirs) = tokio::join!(TcpStream::connect(addr), l.accept());
        let (read, _our_write) = ours.unwrap().into_split();
        let mut peer = theirs.unwrap().0;
        let mut reader = RecordReader::new(read, Arc::new(RecordStats::default()));

        let burst = 128;
        peer.write_all(&vec![7u8; burst * RECORD_LEN])
            .await
            .unwrap();
        for _ in 0..burst {
            assert!(reader.next_record().await.unwrap().is_some());
        }
        assert!(reader.buf.len() > INITIAL_READ_BUF_LEN, "the burst grew it");

        // Nothing more comes: the pending read outlasts RELEASE_AFTER.
        let waited = tokio::time::timeout(RELEASE_AFTER * 3, reader.next_record()).await;
        assert!(waited.is_err(), "no record was sent");
        assert_eq!(reader.buf.len(), INITIAL_READ_BUF_LEN);

        peer.write_all(&[9u8; RECORD_LEN]).await.unwrap();
        let rec = reader.next_record().await.unwrap().unwrap();
        assert_eq!(rec, &[9u8; RECORD_LEN][..]);
    }
}
