//! Circuit multiplexing: the table of circuits one channel carries.
//!
//! Each channel has one `CircMux`, shared between the task that reads the channel (which
//! looks up the destination of every inbound cell) and the circuit tasks (which add and
//! remove themselves). The lock is per channel and held only for a map operation, so
//! circuits on different channels never contend.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::cell::CircId;
use crate::sync::lock;

use super::circ_ids::CircIdAllocator;
use super::error::LinkResult;

/// The circuits of one channel: `T` is whatever the reader needs to deliver a cell
/// (typically a queue sender).
#[derive(Debug)]
pub struct CircMux<T> {
    /// Stays consistent even if a holder panicked: every operation is one insert or
    /// remove.
    inner: Mutex<MuxInner<T>>,
}

#[derive(Debug)]
struct MuxInner<T> {
    circuits: HashMap<CircId, T>,
    ids: CircIdAllocator,
    closed: bool,
}

impl<T: Clone> CircMux<T> {
    /// An empty table allocating ids with `ids` (which knows our half of the id space and
    /// the per-channel circuit limit).
    pub fn new(ids: CircIdAllocator) -> Self {
        CircMux {
            inner: Mutex::new(MuxInner {
                circuits: HashMap::new(),
                ids,
                closed: false,
            }),
        }
    }

    /// Allocates an id from our half and registers `slot` under it.
    pub fn allocate(&self, slot: T) -> LinkResult<CircId> {
        let mut g = lock(&self.inner);
        if g.closed {
            return Err(super::error::LinkError::Closed);
        }
        let id = g.ids.allocate()?;
        g.circuits.insert(id, slot);
        Ok(id)
    }

    /// Registers a circuit the peer opened under `id` (checks the id is from the peer's
    /// half, unused, and within the circuit limit).
    pub fn insert_peer(&self, id: CircId, slot: T) -> LinkResult<()> {
        let mut g = lock(&self.inner);
        if g.closed {
            return Err(super::error::LinkError::Closed);
        }
        g.ids.register_peer(id)?;
        g.circuits.insert(id, slot);
        Ok(())
    }

    /// The slot of circuit `id`.
    pub fn get(&self, id: CircId) -> Option<T> {
        lock(&self.inner).circuits.get(&id).cloned()
    }

    /// Removes circuit `id`, freeing its id.
    pub fn remove(&self, id: CircId) -> Option<T> {
        let mut g = lock(&self.inner);
        g.ids.release(id);
        g.circuits.remove(&id)
    }

    /// Number of circuits.
    pub fn len(&self) -> usize {
        lock(&self.inner).circuits.len()
    }

    /// Whether no circuit is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Marks the channel closed (no new circuits) and returns every slot, so the caller
    /// can tell each circuit its channel is gone.
    pub fn close(&self) -> Vec<(CircId, T)> {
        let mut g = lock(&self.inner);
        g.closed = true;
        let drained: Vec<_> = g.circuits.drain().collect();
        for (id, _) in &drained {
            g.ids.release(*id);
        }
        drained
    }
}
