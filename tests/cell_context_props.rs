//! Property tests for the receiving contexts (`allium::cell::relay_contexts`,
//! `allium::cell::chan_contexts`): for every context and every message, a typed cell
//! encodes and parses back to itself, a message of a command the context does not hold is
//! refused with `CommandNotAllowed` (the same error as the context's check, so before its
//! body is read), and the typed value converts back to the message it came from.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::fmt::Debug;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use allium::cell::chan_contexts::{
    DuringLinkHandshake, FromNextHop, FromPreviousHop, LinkRekey, NewCircuit, OnClientChannel,
    OnRelayChannel,
};
use allium::cell::chan_msg::{BoundedBytes, MAX_CREATED_DATA, MAX_LINK_HANDSHAKE_DATA};
use allium::cell::consts::{CELL_LEN, RELAY_BODY_LEN};
use allium::cell::onion_msg::{
    EstablishIntro, IntroDosParams, Introduce, IntroduceAckStatus, Rendezvous1, INTRODUCE_TAG_LEN,
    MAX_INTRODUCE_ENCRYPTED,
};
use allium::cell::padding_negotiate::{PADDING_MAX_MS, PADDING_MIN_MS};
use allium::cell::relay_cmd::StreamRule;
use allium::cell::relay_contexts::{
    AtClient, AtIntroPoint, AtIntroducingClient, AtOnionClient, AtOnionRole, AtRelay, AtRelayOnion,
    AtRendPoint, AtServiceIntro,
};
use allium::cell::relay_msg::{
    Begin, Connected, Data, Extend, Extended, Resolved, ResolvedAnswer, Sendme,
    MAX_EXTEND_HANDSHAKE, MAX_RELAY_DATA,
};
use allium::cell::{
    CellError, ChanCell, ChanMessage, ChanMsg, CircId, Create, Created, DestroyReason, EndReason,
    HandshakeType, Hostname, LinkHandshake, Netinfo, OnionMsg, PaddingBounds, PaddingNegotiate,
    RelayBody, RelayCell, RelayMessage, RelayMsg, StreamId, TargetAddr,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        any::<[u8; 16]>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
    ]
}

fn hostname() -> impl Strategy<Value = Hostname> {
    "[a-z][a-z0-9_.-]{0,62}".prop_filter_map("valid hostname", |s| Hostname::new(&s).ok())
}

fn bytes(range: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), range)
}

/// 64 bytes from two 32-byte halves (proptest arrays stop at 32).
fn bytes64() -> impl Strategy<Value = [u8; 64]> {
    (any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(a, b)| {
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&a);
        out[32..].copy_from_slice(&b);
        out
    })
}

fn cookie() -> impl Strategy<Value = [u8; 20]> {
    any::<[u8; 32]>().prop_map(|b| {
        let mut out = [0u8; 20];
        out.copy_from_slice(&b[..20]);
        out
    })
}

fn introduce() -> impl Strategy<Value = Introduce> {
    (
        any::<[u8; 32]>(),
        any::<[u8; 32]>(),
        bytes(INTRODUCE_TAG_LEN..=MAX_INTRODUCE_ENCRYPTED),
    )
        .prop_map(|(key, x, ct)| Introduce::new(key, x, ct).unwrap())
}

/// Every relay message, onion-service ones included.
fn relay_msg() -> impl Strategy<Value = RelayMsg> {
    let onion = prop_oneof![
        (
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
            bytes64(),
            prop::option::of((1..=100u32, 100..=1000u32))
        )
            .prop_map(|(auth_key, mac, signature, dos)| OnionMsg::EstablishIntro(
                EstablishIntro {
                    auth_key,
                    dos: dos.map(|(rate_per_sec, burst)| IntroDosParams {
                        rate_per_sec,
                        burst
                    }),
                    mac,
                    signature,
                }
            )),
        Just(OnionMsg::IntroEstablished),
        introduce().prop_map(OnionMsg::Introduce1),
        introduce().prop_map(OnionMsg::Introduce2),
        prop::sample::select(IntroduceAckStatus::ALL).prop_map(OnionMsg::IntroduceAck),
        cookie().prop_map(OnionMsg::EstablishRendezvous),
        Just(OnionMsg::RendezvousEstablished),
        (cookie(), bytes64()).prop_map(|(cookie, handshake)| OnionMsg::Rendezvous1(Rendezvous1 {
            cookie,
            handshake
        })),
        bytes64().prop_map(OnionMsg::Rendezvous2),
    ];
    prop_oneof![
        (
            prop_oneof![
                ip().prop_map(TargetAddr::Ip),
                hostname().prop_map(TargetAddr::Hostname)
            ],
            1..=u16::MAX
        )
            .prop_map(|(t, p)| RelayMsg::Begin(Begin::new(t, p).unwrap())),
        bytes(1..=MAX_RELAY_DATA).prop_map(|d| RelayMsg::Data(Data::new(d).unwrap())),
        prop::sample::select(EndReason::ALL).prop_map(RelayMsg::End),
        prop::option::of((ip(), any::<u32>()))
            .prop_map(|resolved| RelayMsg::Connected(Connected { resolved })),
        any::<[u8; 16]>().prop_map(|tag| RelayMsg::Sendme(Sendme { tag })),
        (
            ip(),
            1..=u16::MAX,
            any::<[u8; 32]>(),
            bytes(1..=MAX_EXTEND_HANDSHAKE)
        )
            .prop_map(|(ip, port, id, hs)| RelayMsg::Extend(
                Extend::new(SocketAddr::new(ip, port), id, HandshakeType::Ntor1, hs).unwrap()
            )),
        bytes(1..=MAX_RELAY_DATA).prop_map(|hs| RelayMsg::Extended(Extended::new(hs).unwrap())),
        Just(RelayMsg::Truncate),
        prop::sample::select(DestroyReason::ALL).prop_map(RelayMsg::Truncated),
        Just(RelayMsg::Drop),
        hostname().prop_map(RelayMsg::Resolve),
        prop::collection::vec(
            (ip(), any::<u32>()).prop_map(|(addr, ttl)| ResolvedAnswer::Ip { addr, ttl }),
            1..=16
        )
        .prop_map(|a| RelayMsg::Resolved(Resolved::new(a).unwrap())),
        Just(RelayMsg::BeginDir),
        (
            prop_oneof![
                ip().prop_map(TargetAddr::Ip),
                hostname().prop_map(TargetAddr::Hostname)
            ],
            1..=u16::MAX
        )
            .prop_map(|(t, p)| RelayMsg::BeginUdp(Begin::new(t, p).unwrap())),
        (
            any::<u16>(),
            prop::collection::vec(any::<u8>(), 0..=allium::cell::datagram::MAX_DATAGRAM_LEN),
            any::<prop::sample::Index>()
        )
            .prop_map(|(seq, payload, i)| {
                let frags = allium::cell::datagram::Datagram::split(seq, &payload).unwrap();
                RelayMsg::Datagram(frags[i.index(frags.len())].clone())
            }),
        onion.prop_map(RelayMsg::Onion),
    ]
}

fn relay_cell() -> impl Strategy<Value = RelayCell> {
    (1..=u16::MAX, relay_msg()).prop_map(|(sid, msg)| {
        let stream = match msg.cmd().stream_rule() {
            StreamRule::Circuit => None,
            _ => StreamId::new(sid),
        };
        RelayCell::new(stream, msg).unwrap()
    })
}

/// A full 512-byte relay body from a seed.
fn expand(seed: [u8; 32]) -> [u8; RELAY_BODY_LEN] {
    let mut out = [0u8; RELAY_BODY_LEN];
    for (i, b) in out.iter_mut().enumerate() {
        *b = seed[i % 32].wrapping_mul(i as u8 | 1).wrapping_add(i as u8);
    }
    out
}

fn padding_negotiate() -> impl Strategy<Value = PaddingNegotiate> {
    prop_oneof![
        Just(PaddingNegotiate::Stop),
        (
            PADDING_MIN_MS..=PADDING_MAX_MS,
            PADDING_MIN_MS..=PADDING_MAX_MS
        )
            .prop_map(|(a, b)| {
                PaddingNegotiate::Start(PaddingBounds::new(a.min(b), a.max(b)).unwrap())
            }),
    ]
}

fn chan_cell() -> impl Strategy<Value = ChanCell> {
    let msg = prop_oneof![
        Just(ChanMsg::Padding),
        Just(ChanMsg::Rekey),
        padding_negotiate().prop_map(ChanMsg::PaddingNegotiate),
        bytes(0..=508).prop_map(|d| ChanMsg::Create(Create {
            htype: HandshakeType::Ntor1,
            data: BoundedBytes::new(d, "t").unwrap()
        })),
        bytes(0..=MAX_CREATED_DATA).prop_map(|d| ChanMsg::Created(Created {
            data: BoundedBytes::new(d, "t").unwrap()
        })),
        any::<[u8; 32]>().prop_map(|seed| ChanMsg::Relay(RelayBody(expand(seed)))),
        any::<[u8; 32]>().prop_map(|seed| ChanMsg::RelayEarly(RelayBody(expand(seed)))),
        prop::sample::select(DestroyReason::ALL).prop_map(ChanMsg::Destroy),
        (any::<u64>(), ip(), 1..=u16::MAX).prop_map(|(timestamp, ip, port)| {
            ChanMsg::Netinfo(Netinfo {
                timestamp,
                other_addr: SocketAddr::new(ip, port),
            })
        }),
        (0..3u8, bytes(0..=MAX_LINK_HANDSHAKE_DATA)).prop_map(|(k, d)| {
            let hs = LinkHandshake {
                data: BoundedBytes::new(d, "t").unwrap(),
            };
            match k {
                0 => ChanMsg::LinkInit(hs),
                1 => ChanMsg::LinkResp(hs),
                _ => ChanMsg::LinkFinish(hs),
            }
        }),
    ];
    (1..=u32::MAX, msg).prop_map(|(id, msg)| {
        let circ = msg.cmd().is_circuit_cmd().then(|| CircId::new(id).unwrap());
        ChanCell::new(circ, msg).unwrap()
    })
}

/// One relay context `M` against one cell (see the module comment).
fn relay_context<M>(cell: &RelayCell) -> Result<(), TestCaseError>
where
    M: RelayMessage + TryFrom<RelayMsg, Error = CellError> + Clone + Debug + PartialEq,
{
    let body = cell.encode().unwrap();
    let cmd = cell.msg().cmd();
    match M::try_from(cell.msg().clone()) {
        Ok(typed) => {
            prop_assert!(M::check(cmd).is_ok());
            let typed = RelayCell::new(cell.stream(), typed).unwrap();
            prop_assert_eq!(typed.encode().unwrap(), body);
            let parsed = RelayCell::<M>::parse_typed(&body).unwrap();
            prop_assert_eq!(&parsed, &typed);
            prop_assert_eq!(&parsed.into_any(), cell);
        }
        Err(refused) => {
            prop_assert_eq!(M::check(cmd).unwrap_err(), refused.clone());
            prop_assert_eq!(RelayCell::<M>::parse_typed(&body).unwrap_err(), refused);
        }
    }
    Ok(())
}

/// One link context `M` against one cell.
fn chan_context<M>(cell: &ChanCell) -> Result<(), TestCaseError>
where
    M: ChanMessage + TryFrom<ChanMsg, Error = CellError> + Clone + Debug + PartialEq,
{
    let bytes = cell.encode().unwrap();
    prop_assert_eq!(bytes.len(), CELL_LEN);
    let cmd = cell.msg().cmd();
    match M::try_from(cell.msg().clone()) {
        Ok(typed) => {
            prop_assert!(M::check(cmd).is_ok());
            let typed = ChanCell::new(cell.circ_id(), typed).unwrap();
            prop_assert_eq!(typed.encode().unwrap(), bytes);
            let parsed = ChanCell::<M>::parse_typed(&bytes).unwrap();
            prop_assert_eq!(&parsed, &typed);
            prop_assert_eq!(&parsed.into_any(), cell);
        }
        Err(refused) => {
            prop_assert_eq!(M::check(cmd).unwrap_err(), refused.clone());
            prop_assert_eq!(ChanCell::<M>::parse_typed(&bytes).unwrap_err(), refused);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn relay_contexts_encode_parse_and_refuse(cell in relay_cell()) {
        relay_context::<AtRelay>(&cell)?;
        relay_context::<AtClient>(&cell)?;
        relay_context::<AtRelayOnion>(&cell)?;
        relay_context::<AtIntroducingClient>(&cell)?;
        relay_context::<AtOnionRole>(&cell)?;
        relay_context::<AtIntroPoint>(&cell)?;
        relay_context::<AtRendPoint>(&cell)?;
        relay_context::<AtServiceIntro>(&cell)?;
        relay_context::<AtOnionClient>(&cell)?;
    }

    #[test]
    fn chan_contexts_encode_parse_and_refuse(cell in chan_cell()) {
        chan_context::<DuringLinkHandshake>(&cell)?;
        chan_context::<OnClientChannel>(&cell)?;
        chan_context::<OnRelayChannel>(&cell)?;
        chan_context::<LinkRekey>(&cell)?;
        chan_context::<NewCircuit>(&cell)?;
        chan_context::<FromPreviousHop>(&cell)?;
        chan_context::<FromNextHop>(&cell)?;
    }
}

/// The contexts hold exactly the commands the hand-written sets held before them (same
/// lists, same context names), so the typed parsers accept and refuse what they did; the
/// only additions since are UDP's BEGIN_UDP (48) and DATAGRAM (49) (issue 20) and
/// congestion control's XOFF (43) and XON (44) (issue 21), and PADDING_NEGOTIATE (10) on a
/// relay's channel (issue 22).
#[test]
fn contexts_hold_the_historical_command_lists() {
    use allium::cell::CmdSet;
    let relay: [(CmdSet, &[u8], &str); 9] = [
        (
            AtRelay::SET,
            &[1, 2, 3, 5, 6, 8, 10, 11, 13, 43, 44, 48, 49],
            "at a relay",
        ),
        (
            AtClient::SET,
            &[2, 3, 4, 5, 7, 9, 10, 12, 43, 44, 49],
            "at a client",
        ),
        (
            AtRelayOnion::SET,
            &[1, 2, 3, 5, 6, 8, 10, 11, 13, 32, 34, 37, 39, 43, 44, 48, 49],
            "at a relay",
        ),
        (AtIntroPoint::SET, &[10, 32, 34], "at an introduction point"),
        (AtRendPoint::SET, &[10, 37, 39], "at a rendezvous point"),
        (
            AtServiceIntro::SET,
            &[10, 33, 35],
            "at a service, from its introduction point",
        ),
        (
            AtOnionClient::SET,
            &[10, 36, 38, 40],
            "at a client connecting to an onion service",
        ),
        (
            AtIntroducingClient::SET,
            &[10, 34],
            "on a client's circuit at an introduction point",
        ),
        (
            AtOnionRole::SET,
            &[10],
            "on a circuit with an onion-service role",
        ),
    ];
    let chan: [(CmdSet, &[u8], &str); 7] = [
        (
            DuringLinkHandshake::SET,
            &[8, 16, 17, 18],
            "during the link handshake",
        ),
        (
            OnClientChannel::SET,
            &[0, 2, 3, 4, 9],
            "on a client's channel",
        ),
        (
            OnRelayChannel::SET,
            &[0, 1, 2, 3, 4, 5, 9, 10],
            "on a relay's channel",
        ),
        (LinkRekey::SET, &[9], "as a link rekey"),
        (NewCircuit::SET, &[1], "on an unknown circuit"),
        (
            FromPreviousHop::SET,
            &[3, 4, 5],
            "from the previous hop of a circuit",
        ),
        (
            FromNextHop::SET,
            &[2, 3, 4],
            "from the next hop of a circuit",
        ),
    ];
    for (set, codes, context) in relay.iter().chain(chan.iter()) {
        assert_eq!(*set, CmdSet::new(codes, context), "{context}");
    }
    // A role narrows what the relay parses, never widens it.
    for code in 0..=255u8 {
        for role in [AtIntroducingClient::SET, AtOnionRole::SET] {
            assert!(!role.contains(code) || AtRelayOnion::SET.contains(code));
        }
    }
}
