//! Bytes → the circuit-handshake extensions (src/cell/circuit_ext.rs), as a client's request
//! (congestion control, a padding machine) and as a hop's answer. Must never panic.
//! Whatever parses re-encodes to a form that parses to the same value (unknown types are
//! skipped, so the encoding is canonical, not the input).
#![no_main]

use allium::cell::circuit_ext::{ClientExtensions, ReplyExtensions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = ClientExtensions::parse(data) {
        let bytes = c.encode().expect("a parsed request re-encodes");
        assert_eq!(ClientExtensions::parse(&bytes), Ok(c));
    }
    if let Ok(r) = ReplyExtensions::parse(data) {
        let bytes = r.encode().expect("a parsed grant re-encodes");
        assert_eq!(ReplyExtensions::parse(&bytes), Ok(r));
    }
});
