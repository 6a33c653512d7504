//! Property tests of the control port's command grammar (src/client/control/line.rs):
//! any command encodes to a line that parses back to it; whatever parses re-encodes to a
//! line that parses to the same command; arbitrary bytes never panic and never parse past
//! the length limit. The committed `control_line` fuzz seeds parse.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use allium::client::control::line::{
    parse_line, AddOnion, Command, Credential, EventKind, KeySpec, Signal, MAX_LINE,
};
use proptest::prelude::*;
use zeroize::Zeroizing;

fn credential() -> impl Strategy<Value = Credential> {
    prop_oneof![
        Just(Credential::None),
        prop::collection::vec(any::<u8>(), 1..64).prop_map(|v| Credential::Hex(Zeroizing::new(v))),
        prop::collection::vec(0x20u8..0x7f, 0..64)
            .prop_map(|v| Credential::Quoted(Zeroizing::new(v))),
    ]
}

fn target() -> impl Strategy<Value = SocketAddr> {
    let ip = prop_oneof![
        any::<u32>().prop_map(|v| IpAddr::V4(Ipv4Addr::from(v))),
        any::<u128>().prop_map(|v| IpAddr::V6(Ipv6Addr::from(v))),
    ];
    (ip, 1u16..).prop_map(|(ip, port)| SocketAddr::new(ip, port))
}

fn add_onion() -> impl Strategy<Value = AddOnion> {
    let key = prop_oneof![
        Just(KeySpec::New),
        any::<[u8; 32]>().prop_map(|k| KeySpec::Given(Zeroizing::new(k))),
    ];
    (
        key,
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec((1u16.., target()), 1..32),
    )
        .prop_map(|(key, discard_pk, detach, ports)| AddOnion {
            key,
            discard_pk,
            detach,
            ports,
        })
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        Just(Command::ProtocolInfo),
        Just(Command::Quit),
        credential().prop_map(Command::Authenticate),
        prop::collection::vec("[A-Za-z0-9/_.-]{1,64}", 1..32).prop_map(Command::GetInfo),
        Just(Command::Signal(Signal::NewNym)),
        prop::sample::subsequence(vec![EventKind::Circ, EventKind::Stream], 0..=2)
            .prop_map(Command::SetEvents),
        add_onion().prop_map(Command::AddOnion),
        "[a-z2-7]{56}".prop_map(Command::DelOnion),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn encode_then_parse_is_identity(cmd in command()) {
        let line = cmd.encode();
        prop_assert!(line.len() <= MAX_LINE);
        prop_assert_eq!(parse_line(line.as_bytes()), Ok(cmd));
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_parse_canonically(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(cmd) = parse_line(&bytes) {
            prop_assert_eq!(parse_line(cmd.encode().as_bytes()), Ok(cmd));
        }
    }

    #[test]
    fn near_valid_lines_parse_canonically(
        kw in prop::sample::select(vec!["AUTHENTICATE", "GETINFO", "SETEVENTS", "ADD_ONION", "DEL_ONION", "SIGNAL", "PROTOCOLINFO"]),
        rest in "[ -~]{0,120}",
    ) {
        let line = format!("{kw} {rest}");
        if let Ok(cmd) = parse_line(line.as_bytes()) {
            prop_assert_eq!(parse_line(cmd.encode().as_bytes()), Ok(cmd));
        }
    }
}

#[test]
fn over_long_lines_are_refused() {
    let line = format!("GETINFO {}", "a".repeat(MAX_LINE));
    assert!(parse_line(line.as_bytes()).is_err());
}

/// Every committed seed of the `control_line` fuzz target parses and re-encodes to a
/// line that parses to the same command.
#[test]
fn control_line_seeds_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/control_line");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let cmd = parse_line(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(parse_line(cmd.encode().as_bytes()), Ok(cmd));
        n += 1;
    }
    assert!(n >= 8);
}
