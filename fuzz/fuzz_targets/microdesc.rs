//! Bytes → microdescriptor (docs/protocol.md §6.17). Must never panic; whatever parses must
//! re-encode to the same bytes and hash to the digest of those bytes.
#![no_main]

use allium::dir::microdesc::{digest_of, Microdesc};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(md) = Microdesc::parse(data) {
        let again = md
            .to_bytes()
            .expect("a parsed microdescriptor must re-encode");
        assert_eq!(&again[..], data, "parse→encode must reproduce the input");
        assert_eq!(md.digest().expect("digest"), digest_of(data));
    }
});
