//! How many inbound connections (channels and link handshakes) a relay holds at once, and
//! what it does at that limit or when the process runs out of file descriptors: new
//! connections are refused cleanly (closed at once, or left in the listen backlog while
//! it backs off), never in a busy loop; each refusal is counted, and the log says so once
//! per burst rather than once per connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

/// Descriptors kept for everything but inbound channels (outbound channels to other
/// relays, exit streams, files), as a share of the soft limit: a quarter.
const RESERVED_SHARE: u64 = 4;

/// Longest pause between accepts while descriptors are exhausted.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// First pause after an accept error.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Pause after closing a connection refused at the limit: what arrives meanwhile waits in
/// the backlog instead of costing a wake-up each.
pub(crate) const REFUSAL_PAUSE: Duration = Duration::from_millis(10);

/// The inbound connections open now and the most allowed.
#[derive(Debug)]
pub struct ChannelSlots {
    open: AtomicUsize,
    max: usize,
}

/// One inbound connection's place; given back on drop.
#[derive(Debug)]
pub struct ChannelSlot(Arc<ChannelSlots>);

impl ChannelSlots {
    /// At most `configured`, and at most three quarters of the soft descriptor limit
    /// (`fd_limit`; `None`: unlimited).
    pub fn new(configured: usize, fd_limit: Option<u64>) -> Arc<Self> {
        let by_fds = fd_limit.map_or(usize::MAX, |n| {
            usize::try_from(n - n / RESERVED_SHARE).unwrap_or(usize::MAX)
        });
        Arc::new(ChannelSlots {
            open: AtomicUsize::new(0),
            max: configured.min(by_fds).max(1),
        })
    }

    /// A place for one more connection, unless the limit is reached.
    pub fn try_take(self: &Arc<Self>) -> Option<ChannelSlot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| ChannelSlot(Arc::clone(self)))
    }

    /// Inbound connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// The limit in force.
    pub fn max(&self) -> usize {
        self.max
    }
}

impl Drop for ChannelSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why the accept loop is refusing connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// At the configured (or descriptor-derived) channel limit.
    ChannelLimit,
    /// accept() failed with EMFILE or ENFILE.
    OutOfDescriptors,
    /// accept() failed otherwise.
    AcceptError,
}

/// The accept loop's refusal state: logs the start and end of each burst of refusals,
/// and the back-off after accept errors.
#[derive(Debug, Default)]
pub(crate) struct RefusalBurst {
    current: Option<Refusal>,
    refused: u64,
    backoff: Option<Duration>,
}

impl RefusalBurst {
    /// Records a refusal; logs it if it starts a burst (or changes its cause).
    pub(crate) fn refused(&mut self, why: Refusal, slots: &ChannelSlots) {
        self.refused += 1;
        if self.current != Some(why) {
            self.current = Some(why);
            match why {
                Refusal::ChannelLimit => warn!(
                    limit = slots.max(),
                    "relay: at the channel limit; refusing new connections until channels close"
                ),
                Refusal::OutOfDescriptors => warn!(
                    open = slots.open(),
                    "relay: out of file descriptors; not accepting for a moment"
                ),
                Refusal::AcceptError => warn!("relay: accept failing; backing off"),
            }
        }
    }

    /// The pause after a failed accept: doubling up to a second.
    pub(crate) fn next_backoff(&mut self) -> Duration {
        let next = self
            .backoff
            .map_or(FIRST_BACKOFF, |b| (b * 2).min(MAX_BACKOFF));
        self.backoff = Some(next);
        next
    }

    /// A connection was taken: ends a burst (logged with its count).
    pub(crate) fn accepted(&mut self) {
        self.backoff = None;
        if self.current.take().is_some() {
            info!(refused = self.refused, "relay: accepting connections again");
            self.refused = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn slots_are_bounded_and_given_back() {
        let slots = ChannelSlots::new(2, Some(1000));
        let a = slots.try_take().unwrap();
        let _b = slots.try_take().unwrap();
        assert!(slots.try_take().is_none());
        drop(a);
        assert!(slots.try_take().is_some());
        // The descriptor limit caps the configured one (a quarter kept for the rest).
        assert_eq!(ChannelSlots::new(50_000, Some(1024)).max(), 768);
        assert_eq!(ChannelSlots::new(50_000, None).max(), 50_000);
    }

    #[test]
    fn backoff_doubles_to_a_second_and_resets() {
        let mut b = RefusalBurst::default();
        assert_eq!(b.next_backoff(), FIRST_BACKOFF);
        assert_eq!(b.next_backoff(), FIRST_BACKOFF * 2);
        for _ in 0..10 {
            b.next_backoff();
        }
        assert_eq!(b.next_backoff(), MAX_BACKOFF);
        b.accepted();
        assert_eq!(b.next_backoff(), FIRST_BACKOFF);
    }
}
