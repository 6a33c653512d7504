//! Bytes → onion-service relay messages (commands 32–40, in every receiving context:
//! fuzz/common/contexts.rs), the INTRODUCE plaintext and the ESTABLISH_INTRO check. Must
//! never panic; whatever parses must re-encode to the same bytes. Short inputs are
//! zero-extended to a full relay body.
#![no_main]

#[path = "../common/contexts.rs"]
mod contexts;

use allium::cell::consts::RELAY_BODY_LEN;
use allium::cell::{OnionMsg, RelayMsg};
use allium::onion::intro::{verify_establish_intro, IntroducePlaintext, INTRO_PLAINTEXT_LEN};
use libfuzzer_sys::fuzz_target;

fn check_body(body: &[u8]) {
    if let Ok(cell) = contexts::relay_cell(body) {
        if let RelayMsg::Onion(OnionMsg::EstablishIntro(e)) = cell.msg() {
            let _ = verify_establish_intro(e, &[0u8; 32]);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check_body(data);
    if data.len() <= RELAY_BODY_LEN {
        let mut body = [0u8; RELAY_BODY_LEN];
        body[..data.len()].copy_from_slice(data);
        check_body(&body);
    }
    if data.len() <= INTRO_PLAINTEXT_LEN {
        let mut pt = [0u8; INTRO_PLAINTEXT_LEN];
        pt[..data.len()].copy_from_slice(data);
        if let Ok(p) = IntroducePlaintext::parse(&pt) {
            assert_eq!(p.encode().expect("re-encode"), pt);
        }
    }
});
