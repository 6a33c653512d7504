//! The circuit scheduler of a channel's outbound queue: which queued cell the writer seals
//! next (docs/protocol.md §5.7, local behaviour).
//!
//! One FIFO per circuit (keyed by the circuit id in the cell's first bytes) and one for
//! the channel's own cells (circuit id 0, and any REKEY), which always go first. Among
//! circuits with queued cells, the one that sent the fewest cells recently goes next:
//! Tor's circuit-priority EWMA (`circuitmux_ewma.c`). Each cell sent adds 1 to its
//! circuit's count and counts decay with [`HALF_LIFE`], so an interactive circuit's
//! occasional cell overtakes a bulk circuit's backlog, and bulk circuits share the
//! channel evenly.
//!
//! Cost per cell: O(log n) in the circuits with queued cells, never a scan. Decay is
//! applied lazily, as in Tor: rather than shrinking every count as time passes, a cell
//! sent at time `t` adds `2^((t - epoch) / HALF_LIFE)`. Every count is then the decayed
//! count times the same factor, so comparisons, and the heap's order, hold without
//! touching idle entries; the counts are rescaled (one pass) when the factor gets large.
//!
//! Memory: a circuit whose queue empties gives its queue back; its count is kept in a
//! small map only while it still matters ([`REMEMBER_MIN`] cells), so an idle channel
//! holds nothing per circuit (a relay carries 10,000s of circuits).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::cell::consts::{CELL_LEN, CIRC_ID_LEN};
use crate::cell::ChanCmd;

/// How fast a circuit's count of sent cells decays. Tor's default is 30 s
/// (`CircuitPriorityHalflife`); we take 10 s: long compared with an interactive burst
/// (a page load, 1-3 s), so a bulk circuit's history still counts against it during one,
/// short enough that a circuit that went quiet gets its priority back within a minute
/// (a bulk circuit that paused 30 s weighs 1/8 of what it did).
pub(crate) const HALF_LIFE: Duration = Duration::from_secs(10);

/// A drained circuit's count is remembered while it is worth at least this many cells
/// sent now: below it, forgetting it (count 0) changes its priority by too little to
/// matter, and a relay's idle circuits then cost the scheduler nothing.
const REMEMBER_MIN: f64 = 8.0;

/// Counts are rescaled once the weight of a new cell reaches `2^RESCALE_EXP` (every 256
/// half-lives, 43 minutes), far from `f64`'s range.
const RESCALE_EXP: f64 = 256.0;

/// Why [`Scheduler::push`] refused a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The cell's circuit already has its share of the queue queued.
    CircuitFull,
}

/// One circuit with queued cells, as the heap orders it.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Its scaled count of recently sent cells: the lowest goes first.
    count: f64,
    /// Ties (circuits that sent nothing yet) go in the order they were queued.
    seq: u64,
    circ: u32,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    /// Reversed, so that `BinaryHeap` (a max-heap) yields the lowest count, then the
    /// oldest.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .count
            .total_cmp(&self.count)
            .then(other.seq.cmp(&self.seq))
    }
}

/// The circuit id of an encoded cell (0 for a channel-level cell), and whether the
/// channel's own queue takes it: circuit id 0, or a REKEY (which the writer turns into
/// a rekey now, whatever its circuit id).
fn classify(cell: &[u8; CELL_LEN]) -> Option<u32> {
    let mut id = [0u8; CIRC_ID_LEN];
    id.copy_from_slice(&cell[..CIRC_ID_LEN]);
    let id = u32::from_be_bytes(id);
    (id != 0 && cell[CIRC_ID_LEN] != ChanCmd::Rekey.code()).then_some(id)
}

/// The per-circuit queues of one channel and the EWMA order among them.
#[derive(Debug)]
pub(crate) struct Scheduler {
    /// The channel's own cells, in order, ahead of every circuit's.
    chan: VecDeque<[u8; CELL_LEN]>,
    /// Circuits with queued cells (an entry is removed as soon as its queue empties).
    circs: HashMap<u32, VecDeque<[u8; CELL_LEN]>>,
    /// Exactly one entry per key of `circs`.
    heap: BinaryHeap<Entry>,
    /// Scaled counts of circuits that drained recently (see [`REMEMBER_MIN`]).
    recent: HashMap<u32, f64>,
    /// Most cells one circuit may have queued.
    per_circuit: usize,
    /// Cells queued in all.
    len: usize,
    /// Time zero of the scale: a cell sent at `t` adds `2^((t - epoch) / HALF_LIFE)`.
    epoch: Instant,
    /// When `recent` was last swept of counts that decayed below [`REMEMBER_MIN`].
    swept: Instant,
    seq: u64,
}

impl Scheduler {
    /// An empty scheduler letting each circuit queue at most `per_circuit` cells (at
    /// least 1). `now` starts the decay scale.
    pub(crate) fn new(per_circuit: usize, now: Instant) -> Self {
        Scheduler {
            chan: VecDeque::new(),
            circs: HashMap::new(),
            heap: BinaryHeap::new(),
            recent: HashMap::new(),
            per_circuit: per_circuit.max(1),
            len: 0,
            epoch: now,
            swept: now,
            seq: 0,
        }
    }

    /// Cells queued in all.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Queues `cell` behind the earlier cells of its circuit (or of the channel).
    pub(crate) fn push(&mut self, cell: &[u8; CELL_LEN]) -> Result<(), Refused> {
        let Some(id) = classify(cell) else {
            self.chan.push_back(*cell);
            self.len += 1;
            return Ok(());
        };
        if let Some(q) = self.circs.get_mut(&id) {
            if q.len() >= self.per_circuit {
                return Err(Refused::CircuitFull);
            }
            q.push_back(*cell);
        } else {
            let mut q = VecDeque::new();
            q.push_back(*cell);
            self.circs.insert(id, q);
            let count = self.recent.remove(&id).unwrap_or(0.0);
            self.seq += 1;
            self.heap.push(Entry {
                count,
                seq: self.seq,
                circ: id,
            });
        }
        self.len += 1;
        Ok(())
    }

    /// The weight of a cell sent at `now`, rescaling every count first if it grew large.
    fn weight(&mut self, now: Instant) -> f64 {
        let exp = now.saturating_duration_since(self.epoch).as_secs_f64() / HALF_LIFE.as_secs_f64();
        if exp < RESCALE_EXP {
            return exp.exp2();
        }
        // Divide every count by the current weight and restart the scale at `now`.
        let factor = exp.exp2();
        let mut entries = std::mem::take(&mut self.heap).into_vec();
        for e in &mut entries {
            e.count /= factor;
        }
        self.heap = BinaryHeap::from(entries);
        for c in self.recent.values_mut() {
            *c /= factor;
        }
        self.epoch = now;
        self.swept = now;
        1.0
    }

    /// Takes the next cell to send at `now`: the channel's own first, then one of the
    /// circuit with the lowest count.
    pub(crate) fn pop(&mut self, now: Instant) -> Option<[u8; CELL_LEN]> {
        if now.saturating_duration_since(self.swept) >= HALF_LIFE {
            self.sweep(now);
        }
        if let Some(cell) = self.chan.pop_front() {
            self.len -= 1;
            if self.chan.is_empty() {
                self.chan = VecDeque::new();
            }
            return Some(cell);
        }
        let w = self.weight(now);
        let mut top = self.heap.peek_mut()?;
        let id = top.circ;
        let Some(q) = self.circs.get_mut(&id) else {
            // Unreachable while the heap and the map agree; drop the stray entry.
            std::collections::binary_heap::PeekMut::pop(top);
            return None;
        };
        let cell = q.pop_front();
        let count = top.count + w;
        if q.is_empty() {
            std::collections::binary_heap::PeekMut::pop(top);
            self.circs.remove(&id);
            if count >= REMEMBER_MIN * w {
                self.recent.insert(id, count);
            }
            // Give the maps' room back once nothing is queued.
            if self.circs.is_empty() {
                self.circs = HashMap::new();
                self.heap = BinaryHeap::new();
            }
        } else {
            top.count = count;
            self.seq += 1;
            top.seq = self.seq;
            // Dropping `top` moves the entry down to its place.
        }
        if cell.is_some() {
            self.len -= 1;
        }
        cell
    }

    /// Forgets the counts that decayed below [`REMEMBER_MIN`] (at most once per
    /// half-life, at a pop: a channel that still sends anything, its keepalive PADDING
    /// included, ends up holding no count of a circuit that went quiet).
    fn sweep(&mut self, now: Instant) {
        let w = self.weight(now);
        self.recent.retain(|_, c| *c >= REMEMBER_MIN * w);
        self.recent.shrink_to_fit();
        self.swept = now;
    }

    /// Drops every cell queued for circuit `id` (its slot was closed: nobody will send
    /// them); returns how many.
    pub(crate) fn discard(&mut self, id: u32) -> usize {
        self.recent.remove(&id);
        let Some(q) = self.circs.remove(&id) else {
            return 0;
        };
        self.heap.retain(|e| e.circ != id);
        self.len -= q.len();
        q.len()
    }

    /// Drops everything queued (the channel is gone).
    pub(crate) fn clear(&mut self) {
        let now = self.epoch;
        *self = Scheduler::new(self.per_circuit, now);
    }

    /// Circuits with queued cells.
    #[cfg(test)]
    fn active(&self) -> usize {
        debug_assert_eq!(self.circs.len(), self.heap.len());
        self.circs.len()
    }
}

#[cfg(test)]
mod tests;
