//! The destinations of one UDP association, each with its own flow, and the limits on
//! what a client can make the proxy do with them.
//!
//! A destination's flow is opened on its first datagram, in the background; what the
//! client sends meanwhile waits in a short drop-oldest queue. A destination whose flow
//! failed to open is held back for [`RETRY_AFTER`] (its datagrams dropped), so a client
//! cannot make the proxy build circuits in a tight loop. At most [`MAX_DESTINATIONS`]
//! destinations are kept, at most [`MAX_OPENING`] of them opening at once; a new
//! destination beyond the limit takes the place of the least recently used one if that
//! one has been idle for [`EVICT_IDLE`], else its datagram is dropped (so a client cycling
//! through many destinations cannot churn flows either).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::cell::TargetAddr;
use crate::proto::{UdpFlow, UdpSendError};

/// Destinations kept per association.
pub const MAX_DESTINATIONS: usize = 64;

/// Destinations whose flow is being opened at once, per association. Also bounds the
/// datagrams queued: `MAX_OPENING × OPENING_QUEUE` of at most 1,472 bytes.
pub const MAX_OPENING: usize = 8;

/// Datagrams kept per destination while its flow opens; the oldest is dropped beyond.
pub const OPENING_QUEUE: usize = 8;

/// How long a destination whose flow failed to open is held back.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// How long a destination must have been idle to give its place to a new one.
pub const EVICT_IDLE: Duration = Duration::from_secs(30);

/// Flows an association may start in a burst; beyond, [`OPENS_PER_SECOND`]. Each open
/// may build a circuit: a client sending to ever new destinations (or ones whose flows the
/// exit keeps closing) must not make the proxy build circuits in a tight loop.
pub const OPEN_BURST: u32 = 8;
/// Flows an association may start per second, sustained.
pub const OPENS_PER_SECOND: u32 = 1;

/// Where a datagram goes, as the client addressed it (a name stays a name).
pub(super) type Dest = (TargetAddr, u16);

/// What takes a datagram for an open destination: a [`UdpFlow`] (a trait so the table's
/// rules can be tested without circuits).
pub(super) trait FlowSend {
    /// Sends without waiting.
    fn send_datagram(&self, data: &[u8]) -> Result<(), UdpSendError>;
}

impl FlowSend for UdpFlow {
    fn send_datagram(&self, data: &[u8]) -> Result<(), UdpSendError> {
        self.send(data)
    }
}

/// What became of a datagram from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Handed to the destination's flow.
    Sent,
    /// Queued while the flow opens (perhaps dropping an older one: see the count).
    Queued {
        /// Older datagrams dropped to make room (0 or 1).
        dropped: usize,
    },
    /// A new destination: queued; the caller must open its flow and report the result
    /// with [`Destinations::opened`] or [`Destinations::failed`].
    Open,
    /// Dropped, and why.
    Dropped(DropReason),
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DropReason {
    /// The destination's flow failed to open less than [`RETRY_AFTER`] ago.
    HeldBack,
    /// [`MAX_DESTINATIONS`] are in use and none has been idle for [`EVICT_IDLE`].
    TooManyDestinations,
    /// [`MAX_OPENING`] flows are being opened already, or the association started
    /// [`OPEN_BURST`] flows and may start only [`OPENS_PER_SECOND`] more.
    TooManyOpening,
    /// The circuit's queue is full.
    QueueFull,
}

/// An open flow and the task relaying its replies, stopped when the entry goes (which
/// drops the last handle on the flow and ENDs it at the exit).
struct Open<F> {
    flow: Arc<F>,
    replies: Option<AbortHandle>,
    since: Instant,
}

impl<F> Drop for Open<F> {
    fn drop(&mut self) {
        if let Some(h) = &self.replies {
            h.abort();
        }
    }
}

enum State<F> {
    /// Being opened; the datagrams waiting for it.
    Opening(VecDeque<Vec<u8>>),
    Open(Open<F>),
    /// Failed to open; held back until then.
    Failed(Instant),
}

struct Entry<F> {
    state: State<F>,
    last_used: Instant,
}

/// One association's destinations.
pub(super) struct Destinations<F> {
    entries: HashMap<Dest, Entry<F>>,
    /// Opens left in the burst, and when it was last refilled.
    opens: (f64, Option<Instant>),
    /// The burst ([`OPEN_BURST`]; tests of other rules lift it).
    burst: f64,
}

impl<F: FlowSend> Destinations<F> {
    pub(super) fn new() -> Self {
        Destinations {
            entries: HashMap::new(),
            opens: (f64::from(OPEN_BURST), None),
            burst: f64::from(OPEN_BURST),
        }
    }

    /// Routes a datagram for `dest` received at `now`.
    pub(super) fn send(&mut self, dest: &Dest, data: &[u8], now: Instant) -> Outcome {
        if let Some(entry) = self.entries.get_mut(dest) {
            entry.last_used = now;
            match &mut entry.state {
                State::Open(open) => match open.flow.send_datagram(data) {
                    Ok(()) => return Outcome::Sent,
                    // Too long cannot happen (the header parser bounds the payload to the
                    // flow's limit); treat it like a full queue rather than reopen.
                    Err(UdpSendError::QueueFull | UdpSendError::TooLong(_)) => {
                        return Outcome::Dropped(DropReason::QueueFull)
                    }
                    // Closed by the exit (idle) or its circuit gone: open a new one,
                    // unless it closed soon after opening (a destination or exit that
                    // keeps closing flows is held back like one that fails to open).
                    Err(UdpSendError::Closed) if now.duration_since(open.since) < RETRY_AFTER => {
                        entry.state = State::Failed(now + RETRY_AFTER);
                        return Outcome::Dropped(DropReason::HeldBack);
                    }
                    Err(UdpSendError::Closed) => {}
                },
                State::Opening(queue) => {
                    let dropped = usize::from(queue.len() >= OPENING_QUEUE);
                    if dropped > 0 {
                        queue.pop_front();
                    }
                    queue.push_back(data.to_vec());
                    return Outcome::Queued { dropped };
                }
                State::Failed(until) => {
                    if now < *until {
                        return Outcome::Dropped(DropReason::HeldBack);
                    }
                }
            }
            self.entries.remove(dest);
        }
        if self.opening() >= MAX_OPENING || !self.may_open(now) {
            return Outcome::Dropped(DropReason::TooManyOpening);
        }
        if self.entries.len() >= MAX_DESTINATIONS && !self.make_room(now) {
            return Outcome::Dropped(DropReason::TooManyDestinations);
        }
        self.entries.insert(
            dest.clone(),
            Entry {
                state: State::Opening(VecDeque::from([data.to_vec()])),
                last_used: now,
            },
        );
        Outcome::Open
    }

    /// Takes one open from the association's bucket ([`OPEN_BURST`], refilled at
    /// [`OPENS_PER_SECOND`]), if there is one.
    fn may_open(&mut self, now: Instant) -> bool {
        let (tokens, last) = &mut self.opens;
        if let Some(last) = *last {
            let refill = now.duration_since(last).as_secs_f64() * f64::from(OPENS_PER_SECOND);
            *tokens = (*tokens + refill).min(self.burst);
        }
        *last = Some(now);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// `dest`'s flow is open: the datagrams that waited for it are sent (returned: how
    /// many were dropped because the circuit's queue was full). `replies` is the task
    /// relaying the flow's replies, aborted when the destination goes.
    pub(super) fn opened(
        &mut self,
        dest: &Dest,
        flow: Arc<F>,
        replies: Option<AbortHandle>,
        now: Instant,
    ) -> usize {
        let open = Open {
            flow,
            replies,
            since: now,
        };
        let Some(entry) = self.entries.get_mut(dest) else {
            // Not expected (an opening entry is never evicted): drop the flow.
            return 0;
        };
        let waiting = match std::mem::replace(&mut entry.state, State::Open(open)) {
            State::Opening(q) => q,
            State::Open(_) | State::Failed(_) => VecDeque::new(),
        };
        let State::Open(open) = &entry.state else {
            return 0;
        };
        waiting
            .iter()
            .filter(|d| open.flow.send_datagram(d).is_err())
            .count()
    }

    /// `dest`'s flow failed to open at `now`: it is held back for [`RETRY_AFTER`]; the
    /// datagrams that waited are dropped (returned: how many).
    pub(super) fn failed(&mut self, dest: &Dest, now: Instant) -> usize {
        let Some(entry) = self.entries.get_mut(dest) else {
            return 0;
        };
        match std::mem::replace(&mut entry.state, State::Failed(now + RETRY_AFTER)) {
            State::Opening(q) => q.len(),
            State::Open(_) | State::Failed(_) => 0,
        }
    }

    /// Destinations kept (open, opening or held back).
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    fn opening(&self) -> usize {
        self.entries
            .values()
            .filter(|e| matches!(e.state, State::Opening(_)))
            .count()
    }

    /// Frees one place: the held-back destinations whose time is up, else the least
    /// recently used one if idle for [`EVICT_IDLE`] (never one being opened).
    fn make_room(&mut self, now: Instant) -> bool {
        let before = self.entries.len();
        self.entries
            .retain(|_, e| !matches!(e.state, State::Failed(until) if until <= now));
        if self.entries.len() < before {
            return true;
        }
        let lru = self
            .entries
            .iter()
            .filter(|(_, e)| !matches!(e.state, State::Opening(_)))
            .filter(|(_, e)| now.saturating_duration_since(e.last_used) >= EVICT_IDLE)
            .min_by_key(|(_, e)| e.last_used)
            .map(|(d, _)| d.clone());
        match lru {
            Some(d) => self.entries.remove(&d).is_some(),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Mutex;

    /// A flow that records what it was given, or refuses with a fixed error.
    #[derive(Default)]
    struct Sink {
        got: Mutex<Vec<Vec<u8>>>,
        refuse: Option<UdpSendError>,
    }

    impl FlowSend for Sink {
        fn send_datagram(&self, data: &[u8]) -> Result<(), UdpSendError> {
            match self.refuse {
                Some(e) => Err(e),
                None => {
                    self.got.lock().unwrap().push(data.to_vec());
                    Ok(())
                }
            }
        }
    }

    /// A table whose open rate is not limited (for the other rules' tests).
    fn unlimited() -> Destinations<Sink> {
        let mut t = Destinations::<Sink>::new();
        t.burst = 1e9;
        t.opens.0 = 1e9;
        t
    }

    fn dest(i: u16) -> Dest {
        (
            TargetAddr::Ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
            1000 + i,
        )
    }

    #[test]
    fn datagrams_wait_drop_oldest_then_go_in_order() {
        let now = Instant::now();
        let mut t = unlimited();
        assert_eq!(t.send(&dest(0), &[0], now), Outcome::Open);
        for i in 1..OPENING_QUEUE as u8 {
            assert_eq!(t.send(&dest(0), &[i], now), Outcome::Queued { dropped: 0 });
        }
        assert_eq!(t.send(&dest(0), &[99], now), Outcome::Queued { dropped: 1 });
        let sink = Arc::new(Sink::default());
        assert_eq!(t.opened(&dest(0), Arc::clone(&sink), None, now), 0);
        let mut want: Vec<Vec<u8>> = (1..OPENING_QUEUE as u8).map(|i| vec![i]).collect();
        want.push(vec![99]);
        assert_eq!(*sink.got.lock().unwrap(), want);
        assert_eq!(t.send(&dest(0), b"x", now), Outcome::Sent);
    }

    #[test]
    fn a_failed_destination_is_held_back_then_retried() {
        let now = Instant::now();
        let mut t = unlimited();
        assert_eq!(t.send(&dest(0), b"a", now), Outcome::Open);
        t.send(&dest(0), b"b", now);
        assert_eq!(t.failed(&dest(0), now), 2);
        // A client retrying in a tight loop opens nothing.
        for _ in 0..1000 {
            assert_eq!(
                t.send(&dest(0), b"c", now + RETRY_AFTER / 2),
                Outcome::Dropped(DropReason::HeldBack)
            );
        }
        assert_eq!(t.send(&dest(0), b"d", now + RETRY_AFTER), Outcome::Open);
    }

    #[test]
    fn a_closed_flow_is_reopened_and_a_full_queue_drops() {
        let now = Instant::now();
        let mut t = unlimited();
        t.send(&dest(0), b"a", now);
        let closed = Sink {
            refuse: Some(UdpSendError::Closed),
            ..Sink::default()
        };
        assert_eq!(t.opened(&dest(0), Arc::new(closed), None, now), 1);
        // Closed soon after opening: held back like a failure, not reopened at once.
        assert_eq!(
            t.send(&dest(0), b"b", now + RETRY_AFTER / 2),
            Outcome::Dropped(DropReason::HeldBack)
        );
        let now = now + RETRY_AFTER / 2 + RETRY_AFTER;
        assert_eq!(t.send(&dest(0), b"b", now), Outcome::Open);
        let closed = Sink {
            refuse: Some(UdpSendError::Closed),
            ..Sink::default()
        };
        t.opened(&dest(0), Arc::new(closed), None, now);
        // Closed after living long enough: reopened at once.
        let now = now + RETRY_AFTER;
        assert_eq!(t.send(&dest(0), b"b", now), Outcome::Open);
        let full = Sink {
            refuse: Some(UdpSendError::QueueFull),
            ..Sink::default()
        };
        t.opened(&dest(0), Arc::new(full), None, now);
        assert_eq!(
            t.send(&dest(0), b"c", now),
            Outcome::Dropped(DropReason::QueueFull)
        );
    }

    #[test]
    fn an_association_opens_a_burst_then_one_per_second() {
        let now = Instant::now();
        let mut t = Destinations::<Sink>::new();
        for i in 0..OPEN_BURST as u16 {
            assert_eq!(t.send(&dest(i), b"a", now), Outcome::Open);
            t.opened(&dest(i), Arc::new(Sink::default()), None, now);
        }
        assert_eq!(
            t.send(&dest(100), b"a", now),
            Outcome::Dropped(DropReason::TooManyOpening)
        );
        let later = now + Duration::from_secs(1);
        assert_eq!(t.send(&dest(100), b"a", later), Outcome::Open);
        assert_eq!(
            t.send(&dest(101), b"a", later),
            Outcome::Dropped(DropReason::TooManyOpening)
        );
    }

    #[test]
    fn opening_at_once_is_bounded() {
        let now = Instant::now();
        let mut t = unlimited();
        for i in 0..MAX_OPENING as u16 {
            assert_eq!(t.send(&dest(i), b"a", now), Outcome::Open);
        }
        assert_eq!(
            t.send(&dest(100), b"a", now),
            Outcome::Dropped(DropReason::TooManyOpening)
        );
        // Datagrams to destinations already opening still queue.
        assert_eq!(t.send(&dest(0), b"b", now), Outcome::Queued { dropped: 0 });
        t.failed(&dest(0), now);
        assert_eq!(t.send(&dest(100), b"a", now), Outcome::Open);
    }

    /// Fills the table with open destinations used at `now`.
    fn full_table(now: Instant) -> Destinations<Sink> {
        let mut t = unlimited();
        for i in 0..MAX_DESTINATIONS as u16 {
            assert_eq!(t.send(&dest(i), b"a", now), Outcome::Open);
            t.opened(&dest(i), Arc::new(Sink::default()), None, now);
        }
        t
    }

    #[test]
    fn beyond_the_limit_only_an_idle_destination_gives_way() {
        let start = Instant::now();
        let mut t = full_table(start);
        // All busy: a client cycling through new destinations opens nothing more.
        let soon = start + EVICT_IDLE / 2;
        for i in 0..MAX_DESTINATIONS as u16 {
            t.send(&dest(i), b"b", soon);
        }
        assert_eq!(
            t.send(&dest(500), b"x", soon),
            Outcome::Dropped(DropReason::TooManyDestinations)
        );
        assert_eq!(t.len(), MAX_DESTINATIONS);
        // Keep all but destination 7 busy; once 7 has been idle long enough, it gives way.
        let later = soon + EVICT_IDLE;
        for i in (0..MAX_DESTINATIONS as u16).filter(|&i| i != 7) {
            t.send(&dest(i), b"c", later);
        }
        assert_eq!(t.send(&dest(500), b"x", later), Outcome::Open);
        assert_eq!(t.len(), MAX_DESTINATIONS);
        assert!(!t.entries.contains_key(&dest(7)));
    }

    #[test]
    fn held_back_destinations_whose_time_is_up_make_room_first() {
        let start = Instant::now();
        let mut t = unlimited();
        for i in 0..MAX_DESTINATIONS as u16 {
            t.send(&dest(i), b"a", start);
            if i == 3 {
                t.failed(&dest(i), start);
            } else {
                t.opened(&dest(i), Arc::new(Sink::default()), None, start);
            }
        }
        let t1 = start + RETRY_AFTER;
        for i in 0..MAX_DESTINATIONS as u16 {
            if i != 3 {
                t.send(&dest(i), b"b", t1);
            }
        }
        assert_eq!(t.send(&dest(500), b"x", t1), Outcome::Open);
        assert!(!t.entries.contains_key(&dest(3)));
    }
}
