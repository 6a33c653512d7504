//! The guard's view of each circuit: a [`RelayObserver`] that keeps, per circuit id, the
//! direction and time of every relay cell within a window after the circuit's first one,
//! and a [`ClientObserver`] that keeps what each client circuit was for (the labels).
//! Both are bounded: past their caps they count what they drop instead of keeping it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::classifier::Cell;
use crate::cell::consts::RELAY_BODY_LEN;
use crate::cell::CircId;
use crate::client::{CircPurpose, ClientObserver};
use crate::relay::RelayObserver;
use crate::sync::lock;

/// What a [`GuardRecorder`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecorderLimits {
    /// Cells are kept for this long after a circuit's first cell.
    pub window: Duration,
    /// Circuits kept at most; cells of further circuits are counted, not kept.
    pub max_circuits: usize,
    /// Cells kept per circuit at most.
    pub max_cells: usize,
}

impl Default for RecorderLimits {
    /// A 10-second window, 100,000 circuits of at most 5,000 cells.
    fn default() -> Self {
        RecorderLimits {
            window: Duration::from_secs(10),
            max_circuits: 100_000,
            max_cells: 5_000,
        }
    }
}

#[derive(Debug)]
struct Trace {
    first: Instant,
    cells: Vec<Cell>,
}

/// Records, per circuit id (on the previous hop's channel), the relay cells a relay sees.
/// Installed on every relay: at a circuit's guard, the id is the one its client knows.
#[derive(Debug)]
pub struct GuardRecorder {
    limits: RecorderLimits,
    circuits: Mutex<HashMap<u32, Trace>>,
    /// Cells not kept because a cap was reached.
    dropped: AtomicU64,
}

impl GuardRecorder {
    /// An empty recorder.
    pub fn new(limits: RecorderLimits) -> Self {
        GuardRecorder {
            limits,
            circuits: Mutex::new(HashMap::new()),
            dropped: AtomicU64::new(0),
        }
    }

    fn record(&self, circ: CircId, forward: bool) {
        let now = Instant::now();
        let mut map = lock(&self.circuits);
        let full = map.len() >= self.limits.max_circuits;
        let trace = match map.get_mut(&circ.get()) {
            Some(t) => t,
            None if full => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            None => map.entry(circ.get()).or_insert(Trace {
                first: now,
                cells: Vec::new(),
            }),
        };
        let at = now.saturating_duration_since(trace.first);
        if at > self.limits.window {
            return;
        }
        if trace.cells.len() >= self.limits.max_cells {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        trace.cells.push(Cell { forward, at });
    }

    /// Takes every trace recorded so far (by circuit id), leaving the recorder empty.
    pub fn take(&self) -> HashMap<u32, Vec<Cell>> {
        std::mem::take(&mut *lock(&self.circuits))
            .into_iter()
            .map(|(id, t)| (id, t.cells))
            .collect()
    }

    /// Cells not kept because a cap was reached, since the start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl RelayObserver for GuardRecorder {
    fn forward_cell(&self, circ: CircId, _: &[u8; RELAY_BODY_LEN], _: bool) {
        self.record(circ, true);
    }

    fn backward_cell(&self, circ: CircId, _: &[u8; RELAY_BODY_LEN]) {
        self.record(circ, false);
    }
}

/// Most labels a [`Labels`] keeps.
const MAX_LABELS: usize = 1_000_000;

/// The ground truth: each circuit a client built (its first-hop id) and its purpose.
#[derive(Debug, Default)]
pub struct Labels {
    seen: Mutex<Vec<(u32, CircPurpose)>>,
}

impl Labels {
    /// Every label so far, in the order the circuits were built.
    pub fn all(&self) -> Vec<(u32, CircPurpose)> {
        lock(&self.seen).clone()
    }
}

impl ClientObserver for Labels {
    fn circuit_built(&self, first_hop_id: CircId, purpose: CircPurpose) {
        let mut seen = lock(&self.seen);
        if seen.len() < MAX_LABELS {
            seen.push((first_hop_id.get(), purpose));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> CircId {
        CircId::new(n).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn keeps_the_window_and_the_caps() {
        let r = GuardRecorder::new(RecorderLimits {
            window: Duration::from_secs(10),
            max_circuits: 2,
            max_cells: 3,
        });
        let body = [0u8; RELAY_BODY_LEN];
        r.forward_cell(id(1), &body, true);
        tokio::time::advance(Duration::from_secs(2)).await;
        r.backward_cell(id(1), &body);
        r.forward_cell(id(2), &body, false);
        r.forward_cell(id(3), &body, false); // a third circuit: over the cap
        tokio::time::advance(Duration::from_secs(9)).await;
        r.backward_cell(id(1), &body); // 11 s after circuit 1's first cell: outside
        r.backward_cell(id(2), &body); // 9 s after circuit 2's first: inside
        r.backward_cell(id(2), &body);
        r.backward_cell(id(2), &body); // a fourth cell: over the cap
        assert_eq!(r.dropped(), 2);
        let t = r.take();
        assert_eq!(t.len(), 2);
        let one = &t[&1];
        assert_eq!(one.len(), 2);
        assert!(one[0].forward && !one[1].forward);
        assert_eq!(one[1].at, Duration::from_secs(2));
        assert_eq!(t[&2].len(), 3);
        assert!(r.take().is_empty());
    }
}
