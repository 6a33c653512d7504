//! What a channel's reader hands to a circuit task.

use crate::cell::chan_contexts::{FromNextHop, FromPreviousHop};

/// Which neighbour of a circuit a cell came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Towards the client.
    Prev,
    /// Away from the client.
    Next,
}

/// An event for a relay circuit task.
// Cells travel by value through bounded queues: boxing them would cost a heap
// allocation per cell on the hot path, and the queue bound caps the memory anyway.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum CircEvent {
    /// A cell from the previous hop (towards the client).
    FromPrev(FromPreviousHop),
    /// A cell from the next hop.
    FromNext(FromNextHop),
    /// The channel on that side closed.
    ChannelClosed(Side),
    /// The neighbour on that side sent something illegal on this circuit.
    Violation(Side),
    /// The channel to the next hop requested by EXTEND is ready (or could not be opened).
    NextHopReady(NextHopResult),
    /// An event from one of the circuit's exit streams.
    Stream(crate::proto::stream::pump::StreamEvent),
    /// An exit stream's connection attempt finished.
    StreamConnected {
        /// The stream.
        id: crate::cell::StreamId,
        /// The socket and the address it reached, or why not.
        result: Result<(tokio::net::TcpStream, std::net::SocketAddr), crate::cell::EndReason>,
    },
    /// INTRODUCE1 from a client's circuit, to be sent as INTRODUCE2 on this circuit (the
    /// introduction circuit of its auth key).
    Introduce2(crate::cell::onion_msg::Introduce),
    /// RENDEZVOUS1 arrived on another circuit for this circuit's cookie: from now on this
    /// circuit splices onto that one (whose backward half this is).
    Joined(super::splice::SharedBackward),
    /// The circuit this one was joined with closed.
    PartnerClosed,
    /// This circuit's rendezvous cookie was dropped to make room in the relay's full
    /// cookie table (it was the oldest): the circuit can no longer be joined.
    CookieEvicted,
    /// A RESOLVE finished.
    Resolved {
        /// The stream the RESOLVE came on.
        id: crate::cell::StreamId,
        /// The addresses, or why not.
        result: Result<Vec<std::net::IpAddr>, crate::cell::EndReason>,
    },
}

/// The outcome of opening (or reusing) the channel to the next hop of an EXTEND.
pub(crate) type NextHopResult =
    Result<std::sync::Arc<super::shared::RelayChannel>, crate::cell::DestroyReason>;
