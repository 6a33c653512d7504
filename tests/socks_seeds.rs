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
