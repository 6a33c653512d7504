//! The command byte of a link cell, and the reasons carried by DESTROY.

use super::wire_enum::wire_enum;

wire_enum! {
    /// What a link cell is. Circuit commands carry a non-zero circuit id; channel commands
    /// (PADDING, NETINFO, REKEY, PADDING_NEGOTIATE, LINK_*) carry circuit id zero.
    pub enum ChanCmd ("channel command") {
        /// Link padding; the body is all zero. Channel-level.
        Padding = 0,
        /// Open a circuit: the client half of a circuit handshake.
        Create = 1,
        /// The relay half of a circuit handshake.
        Created = 2,
        /// A relay body, one encryption layer per hop.
        Relay = 3,
        /// Tear a circuit down, with a reason.
        Destroy = 4,
        /// A relay body that may carry EXTEND; limited to 8 per circuit, which caps length.
        RelayEarly = 5,
        /// Clock and protocol information, sent once after the link handshake. Channel-level.
        Netinfo = 8,
        /// The sender's last record under its current link key in this direction; the body
        /// is all zero. Channel-level, and consumed by the link layer (docs/protocol.md §5.5.1).
        Rekey = 9,
        /// How the sender wants the receiver to pad the channel towards it (client to
        /// relay only). Channel-level (docs/protocol.md §5.10).
        PaddingNegotiate = 10,
        /// Link handshake, message 1 (initiator → responder). Channel-level.
        LinkInit = 16,
        /// Link handshake, message 2 (responder → initiator). Channel-level.
        LinkResp = 17,
        /// Link handshake, message 3 (initiator → responder). Channel-level.
        LinkFinish = 18,
    }
}

impl ChanCmd {
    /// Whether the command names a circuit (non-zero circuit id) rather than the channel.
    pub const fn is_circuit_cmd(self) -> bool {
        matches!(
            self,
            ChanCmd::Create
                | ChanCmd::Created
                | ChanCmd::Relay
                | ChanCmd::Destroy
                | ChanCmd::RelayEarly
        )
    }
}

wire_enum! {
    /// Why a circuit was destroyed (DESTROY) or truncated (TRUNCATED).
    pub enum DestroyReason ("destroy reason") {
        /// No reason given.
        None = 0,
        /// The peer violated the protocol.
        Protocol = 1,
        /// An internal error.
        Internal = 2,
        /// The client asked for it (DESTROY or TRUNCATE).
        Requested = 3,
        /// The relay is shutting down or not accepting circuits.
        Hibernating = 4,
        /// A resource limit was reached (circuits, queues, memory, handshake rate).
        ResourceLimit = 5,
        /// The relay could not connect to the next hop.
        ConnectFailed = 6,
        /// The next hop's identity did not match the one requested.
        WrongIdentity = 7,
        /// The channel carrying the circuit closed.
        ChannelClosed = 8,
        /// The circuit finished normally.
        Finished = 9,
        /// A handshake or operation timed out.
        Timeout = 10,
        /// The circuit was destroyed from the other side.
        Destroyed = 11,
        /// A cell failed relay-crypto verification at the hop that should recognise it.
        CryptoFailure = 12,
    }
}
