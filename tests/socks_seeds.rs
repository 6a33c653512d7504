//! The committed `socks` fuzz seeds stay valid: after the split byte, each is a complete
//! request that one of the two parsers accepts (a seed that no longer parses would quietly
//! weaken the fuzzer).

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::path::Path;

use allium::client::socks::{HttpConnectHandshake, SocksError, SocksHandshake, Step};

/// Feeds `input` in one read, following the `Step` protocol; true if a request completes.
fn completes(mut feed: impl FnMut(&[u8]) -> Result<Step, SocksError>, input: &[u8]) -> bool {
    let mut rest = input;
    loop {
        match feed(rest) {
            Ok(Step::Reply { consumed, .. }) => rest = &rest[consumed..],
            Ok(Step::Done { .. }) => return true,
            Ok(Step::NeedMore) | Err(_) => return false,
        }
    }
}

#[test]
fn socks_seeds_are_valid_requests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/socks");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let (_, input) = bytes.split_first().expect("split byte");
        let mut socks = SocksHandshake::new();
        let mut http = HttpConnectHandshake::new();
        assert!(
            completes(|b| socks.feed(b), input) || completes(|b| http.feed(b), input),
            "{}",
            path.display()
        );
        count += 1;
    }
    assert!(count >= 10);
}

/// The committed `socks_udp` seeds: each parses, except the one that shows a fragment,
/// which is refused as one.
#[test]
fn socks_udp_seeds_parse_or_are_the_fragment() {
    use allium::client::socks::{parse_udp_datagram, UdpHeaderError};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/socks_udp");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let got = parse_udp_datagram(&bytes);
        if path.file_name().is_some_and(|n| n == "frag") {
            assert_eq!(got, Err(UdpHeaderError::Fragmented(1)));
        } else {
            assert!(got.is_ok(), "{}: {got:?}", path.display());
        }
        count += 1;
    }
    assert!(count >= 4);
}
