//! Property tests for the wire format: encode→parse is the identity, parse→encode
//! reproduces canonical input, and random bytes never make a parser panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use allium::cell::chan_contexts::{
    DuringLinkHandshake, FromNextHop, FromPreviousHop, LinkRekey, NewCircuit, OnClientChannel,
    OnRelayChannel,
};
use allium::cell::chan_msg::{BoundedBytes, MAX_CREATED_DATA, MAX_LINK_HANDSHAKE_DATA};
use allium::cell::consts::{CELL_LEN, RELAY_BODY_LEN};
use allium::cell::relay_contexts::{AtClient, AtRelay};
use allium::cell::relay_msg::{
    Begin, Connected, Data, Extend, Extended, Resolved, ResolvedAnswer, Sendme,
    MAX_EXTEND_HANDSHAKE, MAX_RELAY_DATA,
};
use allium::cell::{
    CellError, ChanCell, ChanCmd, ChanMsg, CircId, Create, Created, DestroyReason, EndReason,
    HandshakeType, Hostname, LinkHandshake, Netinfo, PaddingBounds, PaddingNegotiate, RelayBody,
    RelayCell, RelayCmd, RelayMsg, StreamId, TargetAddr,
};
use proptest::prelude::*;

fn bytes_upto(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..=max)
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        any::<[u8; 16]>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
    ]
}

fn hostname() -> impl Strategy<Value = Hostname> {
    "[a-z][a-z0-9_.-]{0,254}".prop_filter_map("valid hostname", |s| Hostname::new(&s).ok())
}

fn padding_negotiate() -> impl Strategy<Value = PaddingNegotiate> {
    prop_oneof![
        Just(PaddingNegotiate::Stop),
        (100..=60_000u16, 100..=60_000u16).prop_map(|(a, b)| {
            PaddingNegotiate::Start(PaddingBounds::new(a.min(b), a.max(b)).unwrap())
        }),
    ]
}

fn chan_msg() -> impl Strategy<Value = ChanMsg> {
    prop_oneof![
        Just(ChanMsg::Padding),
        Just(ChanMsg::Rekey),
        padding_negotiate().prop_map(ChanMsg::PaddingNegotiate),
        bytes_upto(508).prop_map(|d| ChanMsg::Create(Create {
            htype: HandshakeType::Ntor1,
            data: BoundedBytes::new(d, "t").unwrap()
        })),
        bytes_upto(MAX_CREATED_DATA).prop_map(|d| ChanMsg::Created(Created {
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
        (0..3u8, bytes_upto(MAX_LINK_HANDSHAKE_DATA)).prop_map(|(k, d)| {
            let hs = LinkHandshake {
                data: BoundedBytes::new(d, "t").unwrap(),
            };
            match k {
                0 => ChanMsg::LinkInit(hs),
                1 => ChanMsg::LinkResp(hs),
                _ => ChanMsg::LinkFinish(hs),
            }
        }),
    ]
}

/// A full 512-byte relay body from a seed (proptest arrays stop at 32).
fn expand(seed: [u8; 32]) -> [u8; RELAY_BODY_LEN] {
    let mut out = [0u8; RELAY_BODY_LEN];
    for (i, b) in out.iter_mut().enumerate() {
        *b = seed[i % 32].wrapping_mul(i as u8 | 1).wrapping_add(i as u8);
    }
    out
}

fn chan_cell() -> impl Strategy<Value = ChanCell> {
    (1..=u32::MAX, chan_msg()).prop_map(|(id, msg)| {
        let circ = msg.cmd().is_circuit_cmd().then(|| CircId::new(id).unwrap());
        ChanCell::new(circ, msg).unwrap()
    })
}

fn relay_msg() -> impl Strategy<Value = RelayMsg> {
    prop_oneof![
        (
            prop_oneof![
                ip().prop_map(TargetAddr::Ip),
                hostname().prop_map(TargetAddr::Hostname)
            ],
            1..=u16::MAX
        )
            .prop_map(|(t, p)| RelayMsg::Begin(Begin::new(t, p).unwrap())),
        prop::collection::vec(any::<u8>(), 1..=MAX_RELAY_DATA)
            .prop_map(|d| RelayMsg::Data(Data::new(d).unwrap())),
        prop::sample::select(EndReason::ALL).prop_map(RelayMsg::End),
        prop::option::of((ip(), any::<u32>()))
            .prop_map(|resolved| RelayMsg::Connected(Connected { resolved })),
        any::<[u8; 16]>().prop_map(|tag| RelayMsg::Sendme(Sendme { tag })),
        (
            ip(),
            1..=u16::MAX,
            any::<[u8; 32]>(),
            prop::collection::vec(any::<u8>(), 1..=MAX_EXTEND_HANDSHAKE)
        )
            .prop_map(|(ip, port, id, hs)| RelayMsg::Extend(
                Extend::new(SocketAddr::new(ip, port), id, HandshakeType::Ntor1, hs).unwrap()
            )),
        prop::collection::vec(any::<u8>(), 1..=MAX_RELAY_DATA)
            .prop_map(|hs| RelayMsg::Extended(Extended::new(hs).unwrap())),
        Just(RelayMsg::Truncate),
        prop::sample::select(DestroyReason::ALL).prop_map(RelayMsg::Truncated),
        Just(RelayMsg::Drop),
        hostname().prop_map(RelayMsg::Resolve),
        prop::collection::vec(
            prop_oneof![
                (ip(), any::<u32>()).prop_map(|(addr, ttl)| ResolvedAnswer::Ip { addr, ttl }),
                any::<u32>().prop_map(|ttl| ResolvedAnswer::TransientError { ttl }),
                any::<u32>().prop_map(|ttl| ResolvedAnswer::PermanentError { ttl }),
            ],
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
    ]
}

fn relay_cell() -> impl Strategy<Value = RelayCell> {
    (1..=u16::MAX, relay_msg()).prop_map(|(sid, msg)| {
        let stream = match msg.cmd().stream_rule() {
            allium::cell::relay_cmd::StreamRule::Circuit => None,
            _ => StreamId::new(sid),
        };
        RelayCell::new(stream, msg).unwrap()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn chan_cell_encode_parse_identity(cell in chan_cell()) {
        let bytes = cell.encode().unwrap();
        prop_assert_eq!(bytes.len(), CELL_LEN);
        prop_assert_eq!(ChanCell::<ChanMsg>::parse_typed(&bytes).unwrap(), cell);
    }

    #[test]
    fn relay_cell_encode_parse_identity(cell in relay_cell()) {
        let body = cell.encode().unwrap();
        prop_assert_eq!(RelayCell::<RelayMsg>::parse_typed(&body).unwrap(), cell);
    }

    /// A datagram cut into fragments, each carried in its own cell, comes back whole: the
    /// fragments parse, are in order, and join to the payload.
    #[test]
    fn datagram_split_encode_parse_join_identity(
        seq in any::<u16>(),
        payload in prop::collection::vec(any::<u8>(), 0..=allium::cell::datagram::MAX_DATAGRAM_LEN),
    ) {
        let frags = allium::cell::datagram::Datagram::split(seq, &payload).unwrap();
        let mut joined = Vec::new();
        for (i, f) in frags.iter().enumerate() {
            let cell = RelayCell::new(StreamId::new(1), RelayMsg::Datagram(f.clone())).unwrap();
            let parsed = RelayCell::<RelayMsg>::parse_typed(&cell.encode().unwrap()).unwrap();
            let RelayMsg::Datagram(d) = parsed.msg() else { panic!("not a datagram") };
            prop_assert_eq!((d.seq(), usize::from(d.index()), usize::from(d.count())), (seq, i, frags.len()));
            joined.extend_from_slice(d.bytes());
        }
        prop_assert_eq!(joined, payload);
    }

    /// PADDING_NEGOTIATE's fields, any bytes: accepted exactly when version 0 and either a
    /// start with 100 ≤ low ≤ high ≤ 60,000 or a stop with zero bounds; what is accepted
    /// re-encodes to the same bytes.
    #[test]
    fn padding_negotiate_accepts_exactly_the_valid_fields(fields in any::<[u8; 6]>()) {
        let mut bytes = [0u8; CELL_LEN];
        bytes[4] = ChanCmd::PaddingNegotiate.code();
        bytes[5..11].copy_from_slice(&fields);
        let low = u16::from_be_bytes([fields[2], fields[3]]);
        let high = u16::from_be_bytes([fields[4], fields[5]]);
        let valid = fields[0] == 0
            && match fields[1] {
                1 => 100 <= low && low <= high && high <= 60_000,
                2 => low == 0 && high == 0,
                _ => false,
            };
        match ChanCell::<ChanMsg>::parse_typed(&bytes) {
            Ok(cell) => {
                prop_assert!(valid, "{fields:?} accepted");
                prop_assert_eq!(cell.encode().unwrap(), bytes);
            }
            Err(e) => {
                prop_assert!(!valid, "{fields:?} refused: {e}");
                prop_assert!(matches!(e, CellError::BadValue { .. }), "{e}");
            }
        }
    }

    #[test]
    fn chan_cell_parse_encode_reproduces_input(bytes in prop::collection::vec(any::<u8>(), CELL_LEN)) {
        if let Ok(cell) = ChanCell::<ChanMsg>::parse_typed(&bytes) {
            prop_assert_eq!(cell.encode().unwrap().to_vec(), bytes);
        }
    }

    /// Mutating one byte of a valid encoding either fails to parse or re-encodes to the
    /// mutated bytes: no two encodings of one value.
    #[test]
    fn relay_cell_mutations_stay_canonical(cell in relay_cell(), pos in 0..RELAY_BODY_LEN, v in any::<u8>()) {
        let mut body = cell.encode().unwrap();
        body[pos] = v;
        if let Ok(parsed) = RelayCell::<RelayMsg>::parse_typed(&body) {
            prop_assert_eq!(parsed.encode().unwrap(), body);
        }
    }

    #[test]
    fn chan_cell_mutations_stay_canonical(cell in chan_cell(), pos in 0..CELL_LEN, v in any::<u8>()) {
        let mut bytes = cell.encode().unwrap();
        bytes[pos] = v;
        if let Ok(parsed) = ChanCell::<ChanMsg>::parse_typed(&bytes) {
            prop_assert_eq!(parsed.encode().unwrap(), bytes);
        }
    }
}

fn valid_relay_body(msg: RelayMsg, stream: Option<u16>) -> [u8; RELAY_BODY_LEN] {
    RelayCell::new(stream.and_then(StreamId::new), msg)
        .unwrap()
        .encode()
        .unwrap()
}

#[test]
fn zero_circuit_id_is_refused_on_circuit_commands() {
    let cell = ChanCell::circuit(
        CircId::new(7).unwrap(),
        ChanMsg::Destroy(DestroyReason::Requested),
    )
    .unwrap();
    let mut bytes = cell.encode().unwrap();
    bytes[..4].copy_from_slice(&[0; 4]);
    assert_eq!(
        ChanCell::<ChanMsg>::parse_typed(&bytes),
        Err(CellError::ZeroCircId)
    );
    assert_eq!(
        ChanCell::channel(ChanMsg::Destroy(DestroyReason::None)),
        Err(CellError::ZeroCircId)
    );
    assert!(CircId::new(0).is_none());
}

#[test]
fn nonzero_circuit_id_is_refused_on_channel_commands() {
    let mut bytes = ChanCell::channel(ChanMsg::Padding)
        .unwrap()
        .encode()
        .unwrap();
    bytes[3] = 1;
    assert_eq!(
        ChanCell::<ChanMsg>::parse_typed(&bytes),
        Err(CellError::UnexpectedCircId)
    );
}

#[test]
fn unknown_commands_are_refused() {
    let mut bytes = ChanCell::channel(ChanMsg::Padding)
        .unwrap()
        .encode()
        .unwrap();
    for code in 0..=255u8 {
        if ChanCmd::from_code(code).is_ok() {
            continue;
        }
        bytes[4] = code;
        assert_eq!(
            ChanCell::<ChanMsg>::parse_typed(&bytes),
            Err(CellError::UnknownCommand(code))
        );
    }
    let mut body = valid_relay_body(RelayMsg::Drop, None);
    for code in 0..=255u8 {
        if RelayCmd::from_code(code).is_ok() {
            continue;
        }
        body[16] = code;
        let err = RelayCell::<RelayMsg>::parse_typed(&body).unwrap_err();
        let reserved = (48..=50).contains(&code);
        if reserved {
            assert_eq!(err, CellError::ReservedCommand(code));
        } else {
            assert_eq!(err, CellError::UnknownCommand(code));
        }
    }
}

/// REKEY: circuit id zero, body all zero, legal on open channels only (and parsed by the
/// link layer with its own one-command context).
#[test]
fn rekey_is_strict_and_legal_only_on_open_channels() {
    let rekey = ChanCell::channel(ChanMsg::Rekey).unwrap().encode().unwrap();
    let mut expected = [0u8; CELL_LEN];
    expected[4] = 9;
    assert_eq!(rekey, expected);
    let accepted = [
        ChanCell::<OnClientChannel>::parse_typed(&rekey).map(ChanCell::into_any),
        ChanCell::<OnRelayChannel>::parse_typed(&rekey).map(ChanCell::into_any),
        ChanCell::<LinkRekey>::parse_typed(&rekey).map(ChanCell::into_any),
    ];
    for cell in accepted {
        assert_eq!(cell.unwrap().msg(), &ChanMsg::Rekey);
    }
    let refused = [
        ChanCell::<DuringLinkHandshake>::parse_typed(&rekey).map(ChanCell::into_any),
        ChanCell::<NewCircuit>::parse_typed(&rekey).map(ChanCell::into_any),
        ChanCell::<FromPreviousHop>::parse_typed(&rekey).map(ChanCell::into_any),
        ChanCell::<FromNextHop>::parse_typed(&rekey).map(ChanCell::into_any),
    ];
    for cell in refused {
        assert!(matches!(
            cell,
            Err(CellError::CommandNotAllowed { command: 9, .. })
        ));
    }
    // The link layer's context admits nothing else.
    let padding = ChanCell::channel(ChanMsg::Padding)
        .unwrap()
        .encode()
        .unwrap();
    assert!(ChanCell::<LinkRekey>::parse_typed(&padding).is_err());
    for pos in 5..CELL_LEN {
        let mut b = rekey;
        b[pos] = 1;
        assert_eq!(
            ChanCell::<LinkRekey>::parse_typed(&b),
            Err(CellError::NonZeroPadding),
            "body byte {pos}"
        );
    }
    let mut b = rekey;
    b[3] = 1;
    assert_eq!(
        ChanCell::<LinkRekey>::parse_typed(&b),
        Err(CellError::UnexpectedCircId)
    );
}

#[test]
fn contexts_keep_peers_away_from_other_parsers() {
    let create = ChanCell::circuit(
        CircId::new(1).unwrap(),
        ChanMsg::Create(Create {
            htype: HandshakeType::Ntor1,
            data: BoundedBytes::new(vec![1; 100], "t").unwrap(),
        }),
    )
    .unwrap()
    .encode()
    .unwrap();
    assert!(matches!(
        ChanCell::<OnClientChannel>::parse_typed(&create),
        Err(CellError::CommandNotAllowed { command: 1, .. })
    ));
    assert!(ChanCell::<OnRelayChannel>::parse_typed(&create).is_ok());
    assert!(ChanCell::<DuringLinkHandshake>::parse_typed(&create).is_err());

    let connected = valid_relay_body(RelayMsg::Connected(Connected { resolved: None }), Some(3));
    assert!(RelayCell::<AtClient>::parse_typed(&connected).is_ok());
    assert!(matches!(
        RelayCell::<AtRelay>::parse_typed(&connected),
        Err(CellError::CommandNotAllowed { command: 4, .. })
    ));
    let begin = valid_relay_body(RelayMsg::BeginDir, Some(3));
    assert!(RelayCell::<AtRelay>::parse_typed(&begin).is_ok());
    assert!(RelayCell::<AtClient>::parse_typed(&begin).is_err());
}

#[test]
fn relay_body_strictness() {
    let good = valid_relay_body(RelayMsg::End(EndReason::Done), Some(9));
    assert!(RelayCell::<RelayMsg>::parse_typed(&good).is_ok());

    // Non-zero tag: not recognised.
    let mut b = good;
    b[5] = 1;
    assert_eq!(
        RelayCell::<RelayMsg>::parse_typed(&b),
        Err(CellError::Unrecognized)
    );
    // Non-zero padding.
    let mut b = good;
    b[511] = 1;
    assert_eq!(
        RelayCell::<RelayMsg>::parse_typed(&b),
        Err(CellError::NonZeroPadding)
    );
    // Length past the maximum.
    let mut b = good;
    b[19..21].copy_from_slice(&492u16.to_be_bytes());
    assert!(matches!(
        RelayCell::<RelayMsg>::parse_typed(&b),
        Err(CellError::LengthOutOfBounds { .. })
    ));
    // Length one longer than the message: trailing byte inside data.
    let mut b = good;
    b[19..21].copy_from_slice(&2u16.to_be_bytes());
    assert_eq!(
        RelayCell::<RelayMsg>::parse_typed(&b),
        Err(CellError::TrailingBytes(1))
    );
    // Stream id zero on a stream command.
    let mut b = good;
    b[17..19].copy_from_slice(&[0, 0]);
    assert_eq!(
        RelayCell::<RelayMsg>::parse_typed(&b),
        Err(CellError::ZeroStreamId)
    );
    // Stream id on a circuit command.
    let mut b = valid_relay_body(RelayMsg::Truncate, None);
    b[18] = 1;
    assert_eq!(
        RelayCell::<RelayMsg>::parse_typed(&b),
        Err(CellError::UnexpectedStreamId)
    );
    // Unknown END reason.
    let mut b = good;
    b[21] = 200;
    assert!(matches!(
        RelayCell::<RelayMsg>::parse_typed(&b),
        Err(CellError::BadValue { .. })
    ));
    // Wrong body length.
    assert!(matches!(
        RelayCell::<RelayMsg>::parse_typed(&good[..511]),
        Err(CellError::WrongLength { .. })
    ));
}

#[test]
fn hostnames_are_canonical() {
    for bad in ["", "a b", "exa\0mple", "10.0.0.1", "::1", "ex/ample", "ünï"] {
        assert!(Hostname::new(bad).is_err(), "{bad:?}");
    }
    assert!(Hostname::new(&"a".repeat(256)).is_err());
    assert!(Hostname::new(&"a".repeat(255)).is_ok());
    assert!(Hostname::new("example.com").is_ok());
    // Debug output never shows the destination.
    let h = Hostname::new("secret.example").unwrap();
    assert!(!format!("{h:?}").contains("secret"));
}

#[test]
fn channel_body_strictness() {
    let created = ChanCell::circuit(
        CircId::new(5).unwrap(),
        ChanMsg::Created(Created {
            data: BoundedBytes::new(vec![7; 64], "t").unwrap(),
        }),
    )
    .unwrap()
    .encode()
    .unwrap();
    // hlen past the bound.
    let mut b = created;
    b[5..7].copy_from_slice(&511u16.to_be_bytes());
    assert!(matches!(
        ChanCell::<ChanMsg>::parse_typed(&b),
        Err(CellError::LengthOutOfBounds { .. })
    ));
    // Padding not zero.
    let mut b = created;
    b[CELL_LEN - 1] = 1;
    assert_eq!(
        ChanCell::<ChanMsg>::parse_typed(&b),
        Err(CellError::NonZeroPadding)
    );
    // Unknown handshake type in CREATE.
    let mut create = ChanCell::circuit(
        CircId::new(5).unwrap(),
        ChanMsg::Create(Create {
            htype: HandshakeType::Ntor1,
            data: BoundedBytes::new(vec![7; 64], "t").unwrap(),
        }),
    )
    .unwrap()
    .encode()
    .unwrap();
    create[6] = 3;
    assert!(matches!(
        ChanCell::<ChanMsg>::parse_typed(&create),
        Err(CellError::BadValue {
            field: "handshake type",
            ..
        })
    ));
    // Wrong length.
    assert!(matches!(
        ChanCell::<ChanMsg>::parse_typed(&created[..CELL_LEN - 1]),
        Err(CellError::WrongLength { .. })
    ));
    let mut long = created.to_vec();
    long.push(0);
    assert!(matches!(
        ChanCell::<ChanMsg>::parse_typed(&long),
        Err(CellError::WrongLength { .. })
    ));
}

/// 1 MB of random bytes, cut into chunks of assorted sizes (and exact cell sizes), fed to
/// both parsers: nothing panics, and whatever parses re-encodes to the same bytes.
#[test]
fn one_megabyte_of_random_bytes_never_panics() {
    use rand::RngExt;
    let mut rng = rand::rng();
    let mut data = vec![0u8; 1 << 20];
    rng.fill(&mut data[..]);
    let mut pos = 0;
    let mut parsed = 0usize;
    while pos < data.len() {
        let size = match rng.random_range(0..4) {
            0 => CELL_LEN,
            1 => RELAY_BODY_LEN,
            _ => rng.random_range(0..1100),
        };
        let end = (pos + size).min(data.len());
        let chunk = &data[pos..end];
        if let Ok(cell) = ChanCell::<ChanMsg>::parse_typed(chunk) {
            assert_eq!(cell.encode().unwrap().as_slice(), chunk);
            parsed += 1;
        }
        if let Ok(cell) = RelayCell::<RelayMsg>::parse_typed(chunk) {
            assert_eq!(cell.encode().unwrap().as_slice(), chunk);
            parsed += 1;
        }
        pos = end;
    }
    // Random bytes essentially never form a valid cell (zero padding is required), so
    // this mostly exercises the refusal paths.
    assert!(parsed < 10, "{parsed} random chunks parsed");
}
