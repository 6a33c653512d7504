//! What a relay's tasks hand each other and hold of each other: the events a circuit task
//! receives, the channels and circuit slots the readers deliver through, a circuit's ends,
//! and the backward half two joined circuits share. These types refer to each other (an
//! event carries a channel, a channel's slot holds an event queue), so they live in one
//! file that imports none of the files using them.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::proto::event_queue::EventSender;

use crate::cell::chan_contexts::{FromNextHop, FromPreviousHop};
use crate::cell::CircId;
use crate::crypto::RelayCrypto;
use crate::link::mux::CircMux;
use crate::link::{ChannelSender, PeerKind, RecordStats};

use super::queue_budget::QueueTicket;

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
    /// The circuit's padding machine has a cell due (docs/protocol.md §3.6).
    PaddingDue,
    /// The channel to the next hop requested by EXTEND is ready (or could not be opened).
    NextHopReady(NextHopResult),
    /// An event from one of the circuit's exit streams.
    Stream(crate::proto::stream::pump::StreamEvent),
    /// An exit stream's connection attempt finished.
    StreamConnected {
        /// The stream.
        id: crate::cell::StreamId,
        /// The connecting task (a result for an id since ENDed and reused is stale).
        task: tokio::task::Id,
        /// The socket and the address it reached, or why not.
        result: Result<(tokio::net::TcpStream, std::net::SocketAddr), crate::cell::EndReason>,
    },
    /// INTRODUCE1 from a client's circuit, to be sent as INTRODUCE2 on this circuit (the
    /// introduction circuit of its auth key).
    Introduce2(crate::cell::onion_msg::Introduce),
    /// RENDEZVOUS1 arrived on another circuit for this circuit's cookie: from now on this
    /// circuit splices onto that one (whose backward half this is).
    Joined(SharedBackward),
    /// The circuit this one was joined with closed.
    PartnerClosed,
    /// This circuit's rendezvous cookie was dropped to make room in the relay's full
    /// cookie table (it was the oldest): the circuit can no longer be joined.
    CookieEvicted,
    /// From a UDP flow's socket.
    Flow(crate::proto::datagram::FlowEvent),
    /// A UDP flow's socket was opened (or could not be).
    FlowOpened {
        /// The flow.
        id: crate::cell::StreamId,
        /// The opening task (a result for an id since ENDed and reused is stale).
        task: tokio::task::Id,
        /// The connected socket, the address it reaches and its share of the flow limit,
        /// or why not.
        result: Result<crate::relay::exit_udp::OpenedFlow, crate::cell::EndReason>,
    },
    /// A RESOLVE finished.
    Resolved {
        /// The stream the RESOLVE came on.
        id: crate::cell::StreamId,
        /// The addresses, or why not.
        result: Result<Vec<std::net::IpAddr>, crate::cell::EndReason>,
    },
}

/// The outcome of opening (or reusing) the channel to the next hop of an EXTEND.
pub(crate) type NextHopResult = Result<Arc<RelayChannel>, crate::cell::DestroyReason>;

/// Where a channel's reader delivers the cells of one circuit.
#[derive(Debug, Clone)]
pub struct CircSlot {
    /// The circuit task's queue.
    pub tx: EventSender<CircEvent>,
    /// Which side of the circuit this channel is.
    pub side: Side,
    /// The circuit's share of the relay's queue budget.
    pub ticket: Arc<QueueTicket>,
}

/// One open channel of the relay.
#[derive(Debug)]
pub struct RelayChannel {
    /// Queues cells to the peer.
    pub sender: ChannelSender,
    /// The circuits it carries.
    pub circuits: CircMux<CircSlot>,
    /// Who the peer is.
    pub peer: PeerKind,
    /// Record counters (tests assert uniform record sizes from these).
    pub stats: Arc<RecordStats>,
    /// The peer's TCP address (reported to the observer only, never logged).
    pub remote: SocketAddr,
}

/// One end of a circuit at this relay: a channel and the circuit id on it.
#[derive(Debug, Clone)]
pub struct CircEnd {
    /// The channel.
    pub chan: Arc<RelayChannel>,
    /// The circuit's id on that channel.
    pub id: CircId,
}

/// A circuit's relay crypto and previous hop, shared with its partner once joined.
#[derive(Debug)]
pub struct BackwardHalf {
    /// The circuit's crypto (its own task uses the forward state, the partner the
    /// backward state).
    pub crypto: RelayCrypto,
    /// The circuit's previous hop.
    pub prev: CircEnd,
    /// Set when the circuit is torn down: nothing more may be sent on it.
    pub closed: bool,
    /// The partner's task, told when this circuit closes.
    pub partner: Option<EventSender<CircEvent>>,
}

/// A [`BackwardHalf`] shared by the two circuits of a rendezvous.
pub(crate) type SharedBackward = Arc<tokio::sync::Mutex<BackwardHalf>>;
