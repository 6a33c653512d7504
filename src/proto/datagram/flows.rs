//! The UDP flows of one circuit, at whichever end it runs (client, exit, onion service):
//! which flows are open, their reassembly, where their datagrams go, and the datagrams
//! waiting for the circuit window.
//!
//! Flows share the circuit's stream-id space and its circuit window with streams (the
//! owner checks both sets before taking an id). The waiting queue holds at most
//! [`MAX_WAITING`] datagrams and draws on a process-wide [`DatagramBudget`]; when either
//! is full the oldest waiting datagram is dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use std::time::Duration;

use tokio::time::Instant;

use crate::cell::datagram::{Datagram, FRAGMENT_LEN, MAX_DATAGRAM_LEN};
use crate::cell::StreamId;

use super::budget::DatagramBudget;
use super::inbox::DatagramInbox;
use super::reassembly::Reassembler;
use super::socket::SocketFlow;
use crate::proto::stream::set::StreamSet;

/// Most datagrams of one circuit waiting for its window.
pub(crate) const MAX_WAITING: usize = 32;
/// A datagram that waited this long for the window is dropped: for voice or games it is
/// stale, and a circuit whose window stays shut must not keep holding the relay's budget.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(2);

/// Where a flow's received datagrams go.
#[derive(Debug)]
pub(crate) enum Sink {
    /// A connected UDP socket (exit, onion service).
    Socket(SocketFlow),
    /// The application's [`super::UdpFlow`].
    App(Arc<DatagramInbox>),
}

impl Sink {
    fn close(&self) {
        match self {
            Sink::Socket(s) => s.stop(),
            Sink::App(inbox) => inbox.close(),
        }
    }
}

/// A peer broke the flow protocol; the circuit must close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FlowError {
    /// DATAGRAM on a flow that is not open yet.
    #[error("DATAGRAM on a flow that is not open")]
    NotOpen,
}

#[derive(Debug)]
struct Flow {
    open: bool,
    sink: Option<Sink>,
    reassembly: Reassembler,
    next_seq: u16,
}

/// Counters of a circuit's flows.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FlowStats {
    /// Datagrams dropped from the waiting queue (window closed too long, queue or budget
    /// full).
    pub dropped_waiting: u64,
    /// Datagrams the local socket would not take.
    pub dropped_local: u64,
    /// Datagrams delivered locally.
    pub delivered: u64,
}

/// A datagram waiting for the circuit window. Its `seq` is given when it is sent, so
/// datagrams dropped here leave no gap the far end could count.
#[derive(Debug)]
struct Waiting {
    id: StreamId,
    payload: Vec<u8>,
    cost: usize,
    since: Instant,
}

/// All flows of a circuit.
#[derive(Debug)]
pub(crate) struct FlowSet {
    flows: HashMap<StreamId, Flow>,
    waiting: VecDeque<Waiting>,
    budget: Arc<DatagramBudget>,
    stats: FlowStats,
}

/// Cells a datagram of `len` bytes takes.
fn cells(len: usize) -> u32 {
    u32::try_from(len.div_ceil(FRAGMENT_LEN).max(1)).unwrap_or(u32::MAX)
}

impl FlowSet {
    /// No flows; waiting datagrams draw on `budget`.
    pub(crate) fn new(budget: Arc<DatagramBudget>) -> Self {
        FlowSet {
            flows: HashMap::new(),
            waiting: VecDeque::new(),
            budget,
            stats: FlowStats::default(),
        }
    }

    /// The budget its waiting datagrams draw on.
    pub(crate) fn budget(&self) -> Arc<DatagramBudget> {
        Arc::clone(&self.budget)
    }

    /// Flows open or being opened.
    pub(crate) fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether `id` is a flow.
    pub(crate) fn contains(&self, id: StreamId) -> bool {
        self.flows.contains_key(&id)
    }

    /// The counters.
    #[cfg(test)]
    pub(crate) fn stats(&self) -> FlowStats {
        self.stats
    }

    /// Reserves `id` for a flow being opened, with its sink if already known.
    pub(crate) fn reserve(&mut self, id: StreamId, sink: Option<Sink>) {
        self.flows.insert(
            id,
            Flow {
                open: false,
                sink,
                reassembly: Reassembler::default(),
                next_seq: 0,
            },
        );
    }

    /// The flow is open (CONNECTED sent or received); `sink` replaces the reserved one.
    pub(crate) fn open(&mut self, id: StreamId, sink: Option<Sink>) -> bool {
        let Some(f) = self.flows.get_mut(&id) else {
            if let Some(s) = sink {
                s.close();
            }
            return false;
        };
        f.open = true;
        if let Some(s) = sink {
            if let Some(old) = f.sink.replace(s) {
                old.close();
            }
        }
        true
    }

    /// Forgets a flow, closes its local end and drops its waiting datagrams (an id used
    /// again later must not carry them). True if it existed.
    pub(crate) fn remove(&mut self, id: StreamId) -> bool {
        let Some(f) = self.flows.remove(&id) else {
            return false;
        };
        if let Some(s) = f.sink {
            s.close();
        }
        let budget = &self.budget;
        self.waiting.retain(|w| {
            if w.id == id {
                budget.release(w.cost);
            }
            w.id != id
        });
        true
    }

    /// A DATAGRAM fragment from the peer.
    pub(crate) fn on_datagram(&mut self, id: StreamId, frag: Datagram) -> Result<(), FlowError> {
        // A flow we closed: fragments crossing our END are dropped.
        let Some(f) = self.flows.get_mut(&id) else {
            return Ok(());
        };
        if !f.open {
            return Err(FlowError::NotOpen);
        }
        let Some(datagram) = f.reassembly.push(frag) else {
            return Ok(());
        };
        let delivered = match &f.sink {
            Some(Sink::Socket(s)) => s.send(&datagram),
            Some(Sink::App(inbox)) => inbox.push(datagram),
            None => false,
        };
        if delivered {
            self.stats.delivered += 1;
        } else {
            self.stats.dropped_local += 1;
        }
        Ok(())
    }

    /// A datagram from flow `id`'s local end. Sent at once (returned as its fragments) if
    /// nothing waits and the circuit window has room; otherwise it waits, within
    /// [`MAX_WAITING`], [`MAX_WAIT`] and the budget, dropping the oldest. Dropped if there
    /// is no such open flow.
    pub(crate) fn submit(
        &mut self,
        id: StreamId,
        payload: Vec<u8>,
        streams: &StreamSet,
    ) -> Option<(StreamId, Vec<Datagram>)> {
        self.flows.get(&id).filter(|f| f.open)?;
        if payload.len() > MAX_DATAGRAM_LEN {
            return None;
        }
        self.expire();
        if self.waiting.is_empty() && streams.try_take_circuit_permits(cells(payload.len())) {
            return self.fragments(id, &payload);
        }
        let cost = payload.len().max(1);
        while self.waiting.len() >= MAX_WAITING || !self.budget.take(cost) {
            if !self.drop_oldest() {
                self.stats.dropped_waiting += 1;
                return None;
            }
        }
        self.waiting.push_back(Waiting {
            id,
            payload,
            cost,
            since: Instant::now(),
        });
        None
    }

    /// The fragments of `payload` as flow `id`'s next datagram.
    fn fragments(&mut self, id: StreamId, payload: &[u8]) -> Option<(StreamId, Vec<Datagram>)> {
        let f = self.flows.get_mut(&id)?;
        let seq = f.next_seq;
        f.next_seq = seq.wrapping_add(1);
        Datagram::split(seq, payload).ok().map(|frags| (id, frags))
    }

    fn drop_oldest(&mut self) -> bool {
        match self.waiting.pop_front() {
            Some(w) => {
                self.budget.release(w.cost);
                self.stats.dropped_waiting += 1;
                true
            }
            None => false,
        }
    }

    /// Drops the datagrams that waited past [`MAX_WAIT`].
    fn expire(&mut self) {
        while self
            .waiting
            .front()
            .is_some_and(|w| w.since.elapsed() > MAX_WAIT)
        {
            self.drop_oldest();
        }
    }

    /// The next waiting datagram the circuit window lets through now, paid first from
    /// `credit` (part of a circuit SENDME's increment the owner kept back from the stream
    /// readers), then from the window's free permits.
    pub(crate) fn next_sendable(
        &mut self,
        credit: &mut u32,
        streams: &StreamSet,
    ) -> Option<(StreamId, Vec<Datagram>)> {
        self.expire();
        let n = cells(self.waiting.front()?.payload.len());
        if *credit >= n {
            *credit -= n;
        } else if !streams.try_take_circuit_permits(n) {
            return None;
        }
        let w = self.waiting.pop_front()?;
        self.budget.release(w.cost);
        self.fragments(w.id, &w.payload)
    }

    /// Closes every flow (the circuit is closing) and empties the queue.
    pub(crate) fn clear(&mut self) {
        for (_, f) in self.flows.drain() {
            if let Some(s) = f.sink {
                s.close();
            }
        }
        while self.drop_oldest() {}
    }
}

impl Drop for FlowSet {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(n: u16) -> StreamId {
        StreamId::new(n).unwrap()
    }

    /// A circuit whose window is shut (every permit taken).
    fn shut() -> StreamSet {
        let streams = StreamSet::default();
        assert!(streams.try_take_circuit_permits(1000));
        streams
    }

    #[test]
    fn waiting_queue_drops_oldest_within_its_bounds() {
        let budget = DatagramBudget::new(10 * 1472);
        let mut set = FlowSet::new(Arc::clone(&budget));
        let inbox = Arc::new(DatagramInbox::default());
        let streams = shut();
        set.reserve(sid(1), Some(Sink::App(Arc::clone(&inbox))));
        assert!(set.submit(sid(1), b"not open".to_vec(), &streams).is_none());
        assert!(set.waiting.is_empty());
        assert!(set.open(sid(1), None));
        for i in 0..20u8 {
            assert!(set.submit(sid(1), vec![i; 1472], &streams).is_none());
        }
        // The budget holds ten: the ten oldest were dropped.
        assert_eq!(set.waiting.len(), 10);
        assert_eq!(set.stats().dropped_waiting, 10);
        assert_eq!(budget.used(), 10 * 1472);
        let mut credit = 8;
        let (_, frags) = set.next_sendable(&mut credit, &streams).unwrap();
        // The first datagram sent gets seq 0: drops leave no gap the far end sees.
        assert_eq!((frags.len(), frags[0].seq(), credit), (4, 0, 4));
        assert_eq!(frags[0].bytes()[0], 10);
        drop(set);
        assert_eq!(budget.used(), 0, "a closed circuit gives its budget back");
        assert!(inbox.is_closed());
    }

    #[test]
    fn with_the_window_open_a_datagram_goes_at_once_without_budget() {
        let budget = DatagramBudget::new(0);
        let mut set = FlowSet::new(Arc::clone(&budget));
        set.reserve(sid(1), Some(Sink::App(Arc::default())));
        set.open(sid(1), None);
        let streams = StreamSet::default();
        let (id, frags) = set.submit(sid(1), vec![1; 1000], &streams).unwrap();
        assert_eq!((id, frags.len()), (sid(1), 3));
        // The budget (empty here) is only for datagrams that wait.
        let streams = shut();
        assert!(set.submit(sid(1), vec![1; 10], &streams).is_none());
        assert!(set.waiting.is_empty());
        assert_eq!(set.stats().dropped_waiting, 1);
    }

    #[test]
    fn a_removed_flow_takes_its_waiting_datagrams_along() {
        let budget = DatagramBudget::new(1 << 20);
        let mut set = FlowSet::new(Arc::clone(&budget));
        let streams = shut();
        for id in [1, 2] {
            set.reserve(sid(id), Some(Sink::App(Arc::default())));
            set.open(sid(id), None);
            set.submit(sid(id), vec![id as u8; 100], &streams);
        }
        assert!(set.remove(sid(1)));
        assert_eq!(budget.used(), 100);
        // The id used again does not carry the old flow's datagram.
        set.reserve(sid(1), Some(Sink::App(Arc::default())));
        set.open(sid(1), None);
        let mut credit = 10;
        let (id, frags) = set.next_sendable(&mut credit, &streams).unwrap();
        assert_eq!((id, frags[0].bytes()[0]), (sid(2), 2));
        assert!(set.next_sendable(&mut credit, &streams).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn stale_datagrams_are_dropped_and_give_their_budget_back() {
        let budget = DatagramBudget::new(1 << 20);
        let mut set = FlowSet::new(Arc::clone(&budget));
        let streams = shut();
        set.reserve(sid(1), Some(Sink::App(Arc::default())));
        set.open(sid(1), None);
        set.submit(sid(1), vec![0; 1472], &streams);
        tokio::time::advance(MAX_WAIT + Duration::from_millis(1)).await;
        let mut credit = 100;
        assert!(set.next_sendable(&mut credit, &streams).is_none());
        assert_eq!((budget.used(), credit), (0, 100));
    }

    #[test]
    fn datagrams_reach_the_sink_and_not_before_open() {
        let mut set = FlowSet::new(DatagramBudget::new(1 << 20));
        let inbox = Arc::new(DatagramInbox::default());
        set.reserve(sid(2), Some(Sink::App(Arc::clone(&inbox))));
        let frag = Datagram::split(0, b"hi").unwrap().remove(0);
        assert_eq!(
            set.on_datagram(sid(2), frag.clone()),
            Err(FlowError::NotOpen)
        );
        set.open(sid(2), None);
        assert_eq!(set.on_datagram(sid(2), frag.clone()), Ok(()));
        assert_eq!(set.on_datagram(sid(9), frag), Ok(()), "closed flow");
        assert_eq!(set.stats().delivered, 1);
        assert!(set.remove(sid(2)));
        assert!(inbox.is_closed());
    }
}
