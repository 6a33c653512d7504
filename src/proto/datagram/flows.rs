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

use crate::cell::datagram::Datagram;
use crate::cell::StreamId;

use super::budget::DatagramBudget;
use super::inbox::DatagramInbox;
use super::reassembly::Reassembler;
use super::socket::SocketFlow;
use crate::proto::stream::set::StreamSet;

/// Most datagrams of one circuit waiting for its window.
pub(crate) const MAX_WAITING: usize = 32;

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
    /// Datagrams dropped from the waiting queue (window closed too long, budget full).
    pub dropped_waiting: u64,
    /// Datagrams the local socket would not take.
    pub dropped_local: u64,
    /// Datagrams delivered locally.
    pub delivered: u64,
}

/// All flows of a circuit.
#[derive(Debug)]
pub(crate) struct FlowSet {
    flows: HashMap<StreamId, Flow>,
    waiting: VecDeque<(StreamId, Vec<Datagram>, usize)>,
    budget: Arc<DatagramBudget>,
    stats: FlowStats,
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

    /// Forgets a flow and closes its local end. True if it existed.
    pub(crate) fn remove(&mut self, id: StreamId) -> bool {
        match self.flows.remove(&id) {
            Some(f) => {
                if let Some(s) = f.sink {
                    s.close();
                }
                true
            }
            None => false,
        }
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

    /// Queues a datagram from the local end for sending on flow `id`. False if there is
    /// no such open flow (it is dropped).
    pub(crate) fn enqueue(&mut self, id: StreamId, payload: &[u8]) -> bool {
        let Some(f) = self.flows.get_mut(&id).filter(|f| f.open) else {
            return false;
        };
        let seq = f.next_seq;
        let Ok(frags) = Datagram::split(seq, payload) else {
            return false;
        };
        f.next_seq = seq.wrapping_add(1);
        let cost = payload.len().max(1);
        while self.waiting.len() >= MAX_WAITING || !self.budget.take(cost) {
            if !self.drop_oldest() {
                self.stats.dropped_waiting += 1;
                return true;
            }
        }
        self.waiting.push_back((id, frags, cost));
        true
    }

    fn drop_oldest(&mut self) -> bool {
        match self.waiting.pop_front() {
            Some((_, _, cost)) => {
                self.budget.release(cost);
                self.stats.dropped_waiting += 1;
                true
            }
            None => false,
        }
    }

    /// The next waiting datagram the circuit window lets through now, paid first from
    /// `credit` (a circuit SENDME's increment the owner has not yet handed to the stream
    /// readers, so datagrams go ahead of bulk data), then from the window's free permits.
    /// Datagrams of flows closed meanwhile are discarded.
    pub(crate) fn next_sendable(
        &mut self,
        credit: &mut u32,
        streams: &StreamSet,
    ) -> Option<(StreamId, Vec<Datagram>)> {
        loop {
            let (id, frags, _) = self.waiting.front()?;
            if !self.flows.contains_key(id) {
                self.drop_oldest();
                continue;
            }
            let n = frags.len() as u32;
            if *credit >= n {
                *credit -= n;
            } else if !streams.try_take_circuit_permits(n) {
                return None;
            }
            let (id, frags, cost) = self.waiting.pop_front()?;
            self.budget.release(cost);
            return Some((id, frags));
        }
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

    #[test]
    fn waiting_queue_drops_oldest_within_its_bounds() {
        let budget = DatagramBudget::new(10 * 1472);
        let mut set = FlowSet::new(Arc::clone(&budget));
        let inbox = Arc::new(DatagramInbox::default());
        set.reserve(sid(1), Some(Sink::App(Arc::clone(&inbox))));
        assert!(!set.enqueue(sid(1), b"not open"));
        assert!(set.open(sid(1), None));
        for i in 0..20u8 {
            assert!(set.enqueue(sid(1), &[i; 1472]));
        }
        // The budget holds ten: the ten oldest were dropped.
        assert_eq!(set.waiting.len(), 10);
        assert_eq!(set.stats().dropped_waiting, 10);
        assert_eq!(budget.used(), 10 * 1472);
        let streams = StreamSet::new();
        let mut credit = 8;
        let (_, frags) = set.next_sendable(&mut credit, &streams).unwrap();
        assert_eq!((frags.len(), frags[0].seq(), credit), (4, 10, 4));
        drop(set);
        assert_eq!(budget.used(), 0, "a closed circuit gives its budget back");
        assert!(inbox.is_closed());
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
