//! The receiving contexts of relay messages: at each end of a circuit, and at each
//! onion-service role (docs/protocol.md §8.6), the commands legal there as one enum each
//! (see [`super::restricted`]).

use super::address::Hostname;
use super::chan_cmd::DestroyReason;
use super::datagram::Datagram;
use super::onion_msg::{
    EstablishIntro, Introduce, IntroduceAckStatus, Rendezvous1, REND_COOKIE_LEN, REND_HANDSHAKE_LEN,
};
use super::relay_cmd::EndReason;
use super::relay_msg::{Begin, Connected, Data, Extend, Extended, Resolved, Sendme};
use super::restricted::restricted_msg;

restricted_msg! {
    /// What the recognising hop accepts from the client on an ordinary circuit: streams,
    /// extension, truncation, padding. (An onion service's end of a rendezvous circuit
    /// plays this part too.)
    pub enum AtRelay: RelayMsg ("at a relay") {
        Begin(Begin), Data(Data), End(EndReason), Sendme(Sendme), Extend(Extend),
        Resolve(Hostname), BeginUdp(Begin), Datagram(Datagram);
        Truncate, Drop, BeginDir, Xoff, Xon
    }
}

restricted_msg! {
    /// What a client accepts from a hop of its circuit.
    pub enum AtClient: RelayMsg ("at a client") {
        Connected(Connected), Data(Data), End(EndReason), Sendme(Sendme), Extended(Extended),
        Truncated(DestroyReason), Resolved(Resolved), Datagram(Datagram);
        Drop, Xoff, Xon
    }
}

restricted_msg! {
    /// What a relay parses in a cell it recognised: [`AtRelay`] plus the commands that give
    /// a circuit an onion-service role at its last hop (§8.6). Once a circuit has a role it
    /// accepts only that role's context ([`AtIntroducingClient`], [`AtOnionRole`]): the
    /// relay narrows into it after parsing.
    pub enum AtRelayOnion: RelayMsg ("at a relay") {
        Begin(Begin), Data(Data), End(EndReason), Sendme(Sendme), Extend(Extend),
        Resolve(Hostname), BeginUdp(Begin), Datagram(Datagram),
        EstablishIntro(EstablishIntro), Introduce1(Introduce),
        EstablishRendezvous([u8; REND_COOKIE_LEN]), Rendezvous1(Rendezvous1);
        Truncate, Drop, BeginDir, Xoff, Xon
    }
}

restricted_msg! {
    /// At a relay, on a client's circuit that sent INTRODUCE1 there: more introductions
    /// and padding, nothing else.
    pub enum AtIntroducingClient: RelayMsg ("on a client's circuit at an introduction point") {
        Introduce1(Introduce);
        Drop
    }
}

restricted_msg! {
    /// At a relay, on a circuit that is a service's introduction circuit, waits at a
    /// rendezvous point, or was joined there: only padding is addressed to the relay (a
    /// joined circuit's traffic is not recognised here, it is spliced).
    pub enum AtOnionRole: RelayMsg ("on a circuit with an onion-service role") {
        ;
        Drop
    }
}

restricted_msg! {
    /// What an introduction point accepts from a service or client, beyond [`AtRelay`].
    pub enum AtIntroPoint: RelayMsg ("at an introduction point") {
        EstablishIntro(EstablishIntro), Introduce1(Introduce);
        Drop
    }
}

restricted_msg! {
    /// What a rendezvous point accepts from a client or service, beyond [`AtRelay`].
    pub enum AtRendPoint: RelayMsg ("at a rendezvous point") {
        EstablishRendezvous([u8; REND_COOKIE_LEN]), Rendezvous1(Rendezvous1);
        Drop
    }
}

restricted_msg! {
    /// What a service accepts on its circuit to an introduction point.
    pub enum AtServiceIntro: RelayMsg ("at a service, from its introduction point") {
        Introduce2(Introduce);
        IntroEstablished, Drop
    }
}

restricted_msg! {
    /// What a client accepts from an introduction point or rendezvous point while
    /// connecting to a service.
    pub enum AtOnionClient: RelayMsg ("at a client connecting to an onion service") {
        IntroduceAck(IntroduceAckStatus), Rendezvous2([u8; REND_HANDSHAKE_LEN]);
        RendezvousEstablished, Drop
    }
}
