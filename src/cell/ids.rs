//! Circuit and stream identifiers. Zero is reserved on the wire ("the channel itself",
//! "the circuit itself"), so the types that name a circuit or a stream cannot hold it.

use std::fmt;
use std::num::{NonZeroU16, NonZeroU32};

use super::error::{CellError, CellResult};

/// Identifies a circuit on one channel. Never zero.
///
/// The two ends of a channel allocate from disjoint halves: the side that opened the TCP
/// connection sets the top bit ([`CircId::INITIATOR_BIT`]), the side that accepted it
/// leaves it clear, so simultaneous allocations can never collide.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CircId(NonZeroU32);

impl CircId {
    /// The bit set in every circuit id allocated by a channel's initiator.
    pub const INITIATOR_BIT: u32 = 0x8000_0000;

    /// Wraps a raw id; `None` for zero.
    pub fn new(raw: u32) -> Option<Self> {
        NonZeroU32::new(raw).map(CircId)
    }

    /// Decodes a circuit id from the wire, refusing zero.
    pub fn from_wire(raw: u32) -> CellResult<Self> {
        Self::new(raw).ok_or(CellError::ZeroCircId)
    }

    /// The value on the wire.
    pub fn get(self) -> u32 {
        self.0.get()
    }

    /// Whether a channel's initiator allocated this id.
    pub fn is_initiator_allocated(self) -> bool {
        self.get() & Self::INITIATOR_BIT != 0
    }
}

impl fmt::Debug for CircId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CircId({:#010x})", self.get())
    }
}

impl fmt::Display for CircId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.get())
    }
}

/// Identifies a stream within one circuit. Never zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct StreamId(NonZeroU16);

impl StreamId {
    /// Wraps a raw id; `None` for zero.
    pub fn new(raw: u16) -> Option<Self> {
        NonZeroU16::new(raw).map(StreamId)
    }

    /// The value on the wire.
    pub fn get(self) -> u16 {
        self.0.get()
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.get())
    }
}
