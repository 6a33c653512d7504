//! Bytes → `allium-ntor-1` client message (CREATE/EXTEND hdata) → the relay's processing of
//! it with fixed keys (fuzz/common/fixtures.rs: a current and a previous onion key, a fixed
//! `y`). Must never panic. Whatever parses re-encodes to the input; the relay accepts
//! nothing that does not parse; a reply it sends parses; and for the fixed client's own
//! message the fixed client accepts the reply and both ends hold the same keys. The seeds
//! are valid messages to the fixed relay, so mutations start past the identity, onion-key
//! and length checks.
#![no_main]

#[path = "../common/fixtures.rs"]
mod fixtures;

use std::sync::OnceLock;

use allium::crypto::handshake::{NtorClientMsg, NtorReply};
use allium::crypto::relay_handshake_with_secret;
use libfuzzer_sys::fuzz_target;

fn fixed_client_msg() -> &'static [u8] {
    static M: OnceLock<Vec<u8>> = OnceLock::new();
    M.get_or_init(|| fixtures::ntor_client().1)
}

fuzz_target!(|data: &[u8]| {
    let parsed = NtorClientMsg::parse(data);
    if let Ok(msg) = &parsed {
        assert_eq!(msg.encode().expect("re-encode"), data);
    }
    let answer = relay_handshake_with_secret(
        &fixtures::RELAY_Y,
        fixtures::relay_keys(),
        data,
        fixtures::reply_ext,
    );
    let Ok((relay_keys, reply, client_ext)) = answer else {
        return;
    };
    let msg = parsed.expect("the relay accepted a message that does not parse");
    assert!(client_ext.len() + 16 == msg.ext_ciphertext().len());
    let parsed_reply = NtorReply::parse(&reply).expect("the relay's reply parses");
    assert_eq!(parsed_reply.encode().expect("re-encode"), reply);
    if data == fixed_client_msg() {
        let (state, _) = fixtures::ntor_client();
        let (client_keys, reply_ext) = state.finish(&reply).expect("the fixed client accepts");
        assert_eq!(client_keys.binding(), relay_keys.binding());
        assert_eq!(reply_ext, fixtures::reply_ext(fixtures::CLIENT_EXT));
    }
});
