//! Bytes sized to a relay body → relay message, in every receiving context
//! (fuzz/common/contexts.rs). Whatever parses must re-encode to the same bytes, and each
//! context must agree with the full parser. Short inputs are zero-extended to a full body
//! so the fuzzer reaches the message parsers without having to discover the 512-byte
//! length first.
#![no_main]

#[path = "../common/contexts.rs"]
mod contexts;

use allium::cell::consts::RELAY_BODY_LEN;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Raw input first (exercises the length check), then the zero-extended body.
    let _ = contexts::relay_cell(data);
    if data.len() <= RELAY_BODY_LEN {
        let mut body = [0u8; RELAY_BODY_LEN];
        body[..data.len()].copy_from_slice(data);
        let _ = contexts::relay_cell(&body);
    }
});
