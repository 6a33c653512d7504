//! The command byte of a relay message, and the reasons carried by END.

use super::error::{CellError, CellResult};
use super::wire_enum::wire_enum;

wire_enum! {
    /// What a relay message is.
    pub enum RelayCmd ("relay command") {
        /// Open a stream to a host and port (at the exit).
        Begin = 1,
        /// Stream data.
        Data = 2,
        /// Close a stream, with a reason.
        End = 3,
        /// The exit connected a stream.
        Connected = 4,
        /// Flow control: the receiver acknowledges a window's worth of cells.
        Sendme = 5,
        /// Extend the circuit by one hop. Must ride in RELAY_EARLY.
        Extend = 6,
        /// The circuit was extended: carries the new hop's handshake reply.
        Extended = 7,
        /// Drop every hop after the recognising one.
        Truncate = 8,
        /// Hops after the sender were dropped.
        Truncated = 9,
        /// Long-range padding; ignored by the recognising hop.
        Drop = 10,
        /// Resolve a hostname at the exit.
        Resolve = 11,
        /// Answers to RESOLVE.
        Resolved = 12,
        /// Open a stream to the relay's own directory cache.
        BeginDir = 13,
        /// Stream flow control under congestion control: stop sending on this stream, my
        /// buffer towards the application is full (§3.5). Empty.
        Xoff = 43,
        /// Stream flow control under congestion control: resume sending. Empty.
        Xon = 44,
        /// Onion service → relay: become my introduction point (§8).
        EstablishIntro = 32,
        /// Introduction point → service: ESTABLISH_INTRO accepted.
        IntroEstablished = 33,
        /// Client → introduction point: introduce me to the service.
        Introduce1 = 34,
        /// Introduction point → service: the client's INTRODUCE1, forwarded.
        Introduce2 = 35,
        /// Introduction point → client: INTRODUCE1 forwarded or refused.
        IntroduceAck = 36,
        /// Client → rendezvous point: register a cookie.
        EstablishRendezvous = 37,
        /// Rendezvous point → client: cookie registered.
        RendezvousEstablished = 38,
        /// Service → rendezvous point: join the client's circuit, with the handshake reply.
        Rendezvous1 = 39,
        /// Rendezvous point → client: the service's handshake reply.
        Rendezvous2 = 40,
        /// Open a UDP flow to a host and port (at the exit, or at an onion service).
        BeginUdp = 48,
        /// One fragment of a UDP datagram on a flow.
        Datagram = 49,
    }
}

/// Relay command numbers reserved for further UDP messages.
pub const RESERVED_UDP: std::ops::RangeInclusive<u8> = 50..=50;

impl RelayCmd {
    /// Decodes a command byte, distinguishing reserved numbers from unknown ones.
    pub fn from_wire(code: u8) -> CellResult<Self> {
        if RESERVED_UDP.contains(&code) {
            return Err(CellError::ReservedCommand(code));
        }
        RelayCmd::from_code(code).map_err(|_| CellError::UnknownCommand(code))
    }

    /// Whether the command belongs to a stream (non-zero stream id), to the circuit (zero),
    /// or may be either (SENDME: zero for the circuit window, non-zero for a stream's).
    pub const fn stream_rule(self) -> StreamRule {
        match self {
            RelayCmd::Begin
            | RelayCmd::Data
            | RelayCmd::End
            | RelayCmd::Connected
            | RelayCmd::Resolve
            | RelayCmd::Resolved
            | RelayCmd::BeginDir
            | RelayCmd::BeginUdp
            | RelayCmd::Datagram
            | RelayCmd::Xoff
            | RelayCmd::Xon => StreamRule::Stream,
            RelayCmd::Sendme => StreamRule::Either,
            RelayCmd::Extend
            | RelayCmd::Extended
            | RelayCmd::Truncate
            | RelayCmd::Truncated
            | RelayCmd::Drop
            | RelayCmd::EstablishIntro
            | RelayCmd::IntroEstablished
            | RelayCmd::Introduce1
            | RelayCmd::Introduce2
            | RelayCmd::IntroduceAck
            | RelayCmd::EstablishRendezvous
            | RelayCmd::RendezvousEstablished
            | RelayCmd::Rendezvous1
            | RelayCmd::Rendezvous2 => StreamRule::Circuit,
        }
    }
}

/// Which stream ids a relay command accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamRule {
    /// Non-zero stream id required.
    Stream,
    /// Stream id must be zero.
    Circuit,
    /// Either.
    Either,
}

wire_enum! {
    /// Why a stream ended (END). Mapped to SOCKS reply codes by the client.
    pub enum EndReason ("end reason") {
        /// Unspecified failure.
        Misc = 1,
        /// The exit could not resolve the hostname.
        ResolveFailed = 2,
        /// The destination refused the connection.
        ConnectRefused = 3,
        /// The exit's policy does not allow this destination.
        ExitPolicy = 4,
        /// The circuit is being destroyed.
        Destroyed = 5,
        /// The stream finished normally (both directions closed).
        Done = 6,
        /// Connecting or resolving timed out.
        Timeout = 7,
        /// No route to the destination host or network.
        NoRoute = 8,
        /// The relay hit an internal error.
        Internal = 9,
        /// A resource limit was reached (streams per circuit, sockets).
        ResourceLimit = 10,
        /// The destination reset the connection.
        ConnectionReset = 11,
        /// The peer violated the stream protocol.
        Protocol = 12,
        /// BEGIN_DIR to a relay that serves no directory.
        NotDirectory = 13,
    }
}
