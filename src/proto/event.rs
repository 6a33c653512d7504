//! What a client circuit's task receives. Everything reaches the task through one queue
//! (cells from the channel reader, stream task events, requests from handles, answers to
//! incoming streams), so it never races futures against each other.

use tokio::sync::oneshot;

use crate::cell::chan_contexts::FromNextHop;
use crate::cell::{EndReason, StreamId, TargetAddr};

use super::stream::pump::{LocalSocket, StreamEvent};
use super::stream::{DataStream, StreamOpenError};

/// What the reader, the stream tasks and the handles hand a client circuit.
// Cells travel by value through bounded queues: boxing them would cost a heap
// allocation per cell on the hot path, and the queue bound caps the memory anyway.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum ClientCircEvent {
    /// A cell for the circuit: the circuit-level commands of a client's channel.
    Cell(FromNextHop),
    /// The channel closed.
    ChannelClosed,
    /// The relay sent something illegal on this circuit.
    Violation,
    /// An event from one of the circuit's stream tasks.
    Stream(StreamEvent),
    /// A request from a handle on the circuit.
    Request(CircuitRequest),
    /// The owner's answer to a stream the far end opened (see
    /// [`super::incoming::IncomingStream`]).
    Incoming(IncomingAnswer),
    /// From a UDP flow's local end.
    Flow(super::datagram::FlowEvent),
    /// The circuit's padding machine has a cell due (docs/protocol.md §3.6).
    PaddingDue,
}

/// A request to the circuit task.
#[derive(Debug)]
pub enum CircuitRequest {
    /// Open a stream: to `target:port` at the exit, or (with `None`) to the last hop's
    /// directory service (BEGIN_DIR).
    Open {
        /// Destination (names are resolved by the exit) and port.
        to: Option<(TargetAddr, u16)>,
        /// Where to send the outcome.
        reply: oneshot::Sender<Result<DataStream, StreamOpenError>>,
    },
    /// Open a UDP flow to `target:port` at the last hop.
    OpenUdp {
        /// Destination (names are resolved by the exit).
        target: TargetAddr,
        /// Port.
        port: u16,
        /// Where to send the outcome.
        reply: oneshot::Sender<Result<super::datagram::UdpFlow, StreamOpenError>>,
    },
    /// Close the circuit.
    Close,
    /// Take no new streams; close once the open ones have finished.
    Retire,
}

/// How the circuit's owner answered a stream the far end opened.
pub enum IncomingAnswer {
    /// Connect the stream to this socket and tell the far end CONNECTED.
    Accept {
        /// The stream.
        id: StreamId,
        /// The local end the stream's pump drives.
        socket: Box<dyn LocalSocket>,
    },
    /// Refuse the stream with END(`reason`).
    Reject {
        /// The stream.
        id: StreamId,
        /// Sent to the far end.
        reason: EndReason,
    },
}

impl std::fmt::Debug for IncomingAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Accept { id, .. } => write!(f, "Accept({id:?})"),
            Self::Reject { id, reason } => write!(f, "Reject({id:?}, {reason:?})"),
        }
    }
}
