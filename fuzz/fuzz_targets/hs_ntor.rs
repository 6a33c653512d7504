//! Bytes → `allium-hs-ntor-1` messages with fixed keys (fuzz/common/fixtures.rs):
//! - as INTRODUCE1/2 data (`AUTH | X | ciphertext`): the service's processing at the fixed
//!   introduction point (auth key check, `X25519(b, X)`, the AEAD), the plaintext parser,
//!   and the answer (`Y | auth`) it would send in RENDEZVOUS1;
//! - as the 64-byte handshake of RENDEZVOUS2 (`Y | auth`): a fixed client's processing.
//! Must never panic. Whatever parses re-encodes to the input; the service's answer parses;
//! for the fixed client's own introduction the fixed client accepts the answer and both
//! ends hold the same keys. The seeds are that introduction and a valid answer to it.
#![no_main]

#[path = "../common/fixtures.rs"]
mod fixtures;

use std::sync::OnceLock;

use allium::cell::onion_msg::Introduce;
use allium::onion::handshake::{service_open_introduce, HsReply};
use allium::onion::intro::IntroducePlaintext;
use libfuzzer_sys::fuzz_target;

fn fixed_introduce() -> &'static [u8] {
    static M: OnceLock<Vec<u8>> = OnceLock::new();
    M.get_or_init(|| {
        let (_, x, ct) = fixtures::hs_client();
        let auth = *fixtures::hs_auth().public().as_bytes();
        Introduce::new(auth, x, ct)
            .and_then(|i| i.encode())
            .expect("the fixed introduction encodes")
    })
}

fn service(data: &[u8]) {
    let Ok(intro) = Introduce::parse(data) else {
        return;
    };
    assert_eq!(intro.encode().expect("re-encode"), data);
    let keys = fixtures::hs_keys();
    // The service only opens introductions for its own auth key (client/onion_service.rs).
    if intro.auth_key() != keys.auth_key.as_bytes() {
        return;
    }
    let Ok((plaintext, opened)) = service_open_introduce(
        fixtures::hs_enc(),
        &keys,
        intro.client_x(),
        intro.encrypted(),
    ) else {
        return;
    };
    if let Ok(p) = IntroducePlaintext::parse(&plaintext) {
        assert_eq!(&p.encode().expect("re-encode")[..], &plaintext[..]);
    }
    let Ok((service_keys, reply)) =
        opened.rendezvous(&mut fixtures::CounterRng(fixtures::HS_SERVICE_SEED))
    else {
        return;
    };
    assert_eq!(
        HsReply::parse(&reply).expect("the answer parses").encode(),
        Ok(reply)
    );
    if data == fixed_introduce() {
        let (state, _, _) = fixtures::hs_client();
        let client_keys = state.finish(&reply).expect("the fixed client accepts");
        assert_eq!(client_keys.binding(), service_keys.binding());
    }
}

fn client(data: &[u8]) {
    let Ok(reply) = HsReply::parse(data) else {
        return;
    };
    let encoded = reply.encode().expect("a parsed reply re-encodes");
    assert_eq!(&encoded[..], data);
    let (state, _, _) = fixtures::hs_client();
    let _ = state.finish(&encoded);
}

fuzz_target!(|data: &[u8]| {
    service(data);
    client(data);
});
