//! The receiving contexts of link cells: a channel in each state, and each side of a
//! relay's circuit, the commands legal there as one enum each (see [`super::restricted`]).

use super::chan_cmd::DestroyReason;
use super::chan_msg::{Create, Created, LinkHandshake, Netinfo, RelayBody};
use super::padding_negotiate::PaddingNegotiate;
use super::restricted::restricted_msg;

restricted_msg! {
    /// During the link handshake: only handshake messages and NETINFO.
    pub enum DuringLinkHandshake: ChanMsg ("during the link handshake") {
        LinkInit(LinkHandshake), LinkResp(LinkHandshake), LinkFinish(LinkHandshake),
        Netinfo(Netinfo);
    }
}

restricted_msg! {
    /// A client's open channel to its first hop. Clients never accept CREATE, and
    /// RELAY_EARLY only flows away from the client. REKEY is legal on every open channel;
    /// the link layer consumes it (see [`LinkRekey`]), so upper layers never see one.
    pub enum OnClientChannel: ChanMsg ("on a client's channel") {
        Created(Created), Relay(RelayBody), Destroy(DestroyReason);
        Padding, Rekey
    }
}

restricted_msg! {
    /// A relay's open channel: circuits may run in either direction over it. REKEY as on
    /// a client's channel. PADDING_NEGOTIATE comes from clients (a relay ignores one from
    /// a relay); relays never send it, so it is not legal on a client's channel.
    pub enum OnRelayChannel: ChanMsg ("on a relay's channel") {
        Create(Create), Created(Created), Relay(RelayBody), RelayEarly(RelayBody),
        Destroy(DestroyReason), PaddingNegotiate(PaddingNegotiate);
        Padding, Rekey
    }
}

restricted_msg! {
    /// What the link layer parses when an open channel's record carries the REKEY command:
    /// only REKEY, so its circuit id (zero) and body (all zero) are checked strictly.
    pub enum LinkRekey: ChanMsg ("as a link rekey") {
        ;
        Rekey
    }
}

restricted_msg! {
    /// On a circuit id a relay has not seen before: only CREATE opens one.
    pub enum NewCircuit: ChanMsg ("on an unknown circuit") {
        Create(Create);
    }
}

restricted_msg! {
    /// At a relay, from the previous hop (towards the client) of an open circuit.
    pub enum FromPreviousHop: ChanMsg ("from the previous hop of a circuit") {
        Relay(RelayBody), RelayEarly(RelayBody), Destroy(DestroyReason);
    }
}

restricted_msg! {
    /// At a relay or client, from the next hop of a circuit. CREATED is legal only once,
    /// while the circuit awaits it: the circuit, which knows its state, enforces that.
    pub enum FromNextHop: ChanMsg ("from the next hop of a circuit") {
        Created(Created), Relay(RelayBody), Destroy(DestroyReason);
    }
}
