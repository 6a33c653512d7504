//! The crate-wide byte reader and writer (src/bytes/): random read scripts over random
//! input never panic, a failed read does not advance, and what was read writes back to
//! exactly the bytes consumed (the same check as the `bytes` fuzz target, whose committed
//! seeds are replayed here); `Readable`/`Writeable` round-trip.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

#[allow(unreachable_pub)] // shared with the fuzz crate, where these are its API
#[path = "../fuzz/common/bytes_script.rs"]
mod bytes_script;

use allium::bytes::{Error, Readable, Reader, Writeable, Writer};
use proptest::collection::vec;
use proptest::prelude::*;

proptest! {
    #[test]
    fn read_scripts_write_back_what_they_consumed(
        script in vec(any::<u8>(), 0..40),
        input in vec(any::<u8>(), 0..600),
    ) {
        bytes_script::check(&script, &input);
    }

    #[test]
    fn integers_and_arrays_round_trip(
        a in any::<u8>(),
        b in any::<u16>(),
        c in any::<u32>(),
        d in any::<u64>(),
        e in any::<[u8; 7]>(),
    ) {
        let mut out = Vec::new();
        let mut w = Writer::growable(&mut out);
        w.write(&a).unwrap();
        w.write(&b).unwrap();
        w.write(&c).unwrap();
        w.write(&d).unwrap();
        w.write(&e).unwrap();
        prop_assert_eq!(out.len(), 1 + 2 + 4 + 8 + 7);
        let mut r = Reader::new(&out);
        prop_assert_eq!(r.extract::<u8>(), Ok(a));
        prop_assert_eq!(r.extract::<u16>(), Ok(b));
        prop_assert_eq!(r.extract::<u32>(), Ok(c));
        prop_assert_eq!(r.extract::<u64>(), Ok(d));
        prop_assert_eq!(r.extract::<[u8; 7]>(), Ok(e));
        prop_assert_eq!(r.finish(), Ok(()));
        prop_assert_eq!(u64::parse(&d.encode().unwrap()), Ok(d));
    }

    #[test]
    fn parse_refuses_short_and_long_input(bytes in vec(any::<u8>(), 0..16)) {
        let parsed = <[u8; 8]>::parse(&bytes);
        match bytes.len() {
            8 => prop_assert_eq!(parsed.map(|a| a.to_vec()), Ok(bytes.clone())),
            n if n < 8 => prop_assert!(matches!(parsed, Err(Error::Truncated { .. })), "{:?}", parsed),
            n => prop_assert_eq!(parsed, Err(Error::TrailingBytes(n - 8))),
        }
    }
}

#[test]
fn committed_fuzz_seeds_pass_the_check() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/bytes");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("seed directory") {
        let data = std::fs::read(entry.expect("entry").path()).expect("seed");
        let (&len, rest) = data.split_first().expect("non-empty seed");
        let (script, input) = rest.split_at(usize::from(len).min(rest.len()));
        bytes_script::check(script, input);
        n += 1;
    }
    assert!(n > 0, "no seeds in {dir}");
}
