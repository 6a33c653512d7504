//! UDP flows over circuits (docs/protocol.md §3.4), the parts shared by the client, the
//! exit and an onion service's end: fragments reassembled within a bound, datagrams
//! waiting for the circuit window in a drop-oldest queue, the local ends (a connected UDP
//! socket, or the application's [`UdpFlow`]).
//!
//! Datagrams are never retransmitted and never counted in stream windows. Each DATAGRAM
//! cell counts against the circuit window like a DATA cell (the receiver answers with
//! circuit SENDMEs), so a sender can never have more than a window's worth of cells in
//! flight; what finds the window closed waits in a short queue that drops its oldest
//! datagram rather than grow.

pub(crate) mod budget;
pub(crate) mod flows;
pub(crate) mod inbox;
pub(crate) mod reassembly;
pub(crate) mod socket;
pub(crate) mod udp_flow;

pub use udp_flow::{UdpFlow, UdpSendError};

use crate::cell::StreamId;

/// What a flow's local end hands the circuit task.
#[derive(Debug)]
pub enum FlowEvent {
    /// A datagram to send on flow `id` (at most 1,472 bytes), with what it holds while it
    /// waits in the task's queue (of the process's datagram budget for a socket's, of the
    /// flow's pending sends for an application's), given back when the event is handled
    /// or dropped, whatever becomes of it.
    Datagram(StreamId, Vec<u8>, Option<socket::Charge>),
    /// The local end is gone (socket error, idle timeout, handle dropped): END the flow.
    Closed(StreamId),
}
