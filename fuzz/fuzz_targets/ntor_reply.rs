//! Bytes → `allium-ntor-1` reply (CREATED/EXTENDED hdata) → the client's processing of it,
//! from a fixed client state (fuzz/common/fixtures.rs: fixed `x`, onion key and extension).
//! Must never panic. Whatever parses re-encodes to the input. `finish` is parse-then-check,
//! so inputs that do not parse skip building a client state (two X25519 operations). The
//! seeds are valid replies to the fixed client, so mutations start at the MAC check.
#![no_main]

#[path = "../common/fixtures.rs"]
mod fixtures;

use allium::crypto::handshake::{NtorReply, MAX_REPLY_EXT_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(reply) = NtorReply::parse(data) else {
        return;
    };
    assert_eq!(reply.encode().expect("re-encode"), data);
    let (state, _) = fixtures::ntor_client();
    if let Ok((_keys, reply_ext)) = state.finish(data) {
        assert!(reply_ext.len() <= MAX_REPLY_EXT_LEN);
        assert_eq!(reply_ext.len() + 16, reply.ext_ciphertext().len());
    }
});
