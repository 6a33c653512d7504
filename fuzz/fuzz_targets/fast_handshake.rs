//! Bytes → `allium-fast-1` CREATE hdata (the relay's processing, fixed `Y` stream) and
//! CREATED hdata (a fixed client's processing). Must never panic. Whatever parses
//! re-encodes to the input; the relay's reply parses; the fixed client accepts the relay's
//! reply exactly when the CREATE was its own `X`, and then both ends hold the same keys.
//! fuzz/common/fixtures.rs has the fixed values; the seeds are the fixed client's CREATE
//! and the relay's CREATED for it.
#![no_main]

#[path = "../common/fixtures.rs"]
mod fixtures;

use allium::crypto::fast_handshake::{fast_relay, FastCreate, FastCreated};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // As CREATE hdata, at the relay.
    let create = FastCreate::parse(data);
    if let Ok(c) = &create {
        assert_eq!(c.encode().as_deref(), Ok(data));
    }
    match fast_relay(&mut fixtures::CounterRng(fixtures::FAST_RELAY_SEED), data) {
        Ok((relay_keys, reply)) => {
            assert!(
                create.is_ok(),
                "the relay accepted a CREATE that does not parse"
            );
            let created = FastCreated::parse(&reply).expect("the relay's reply parses");
            assert_eq!(created.encode().as_ref(), Ok(&reply));
            let (state, msg) = fixtures::fast_client();
            let finished = state.finish(&reply);
            assert_eq!(finished.is_ok(), data == msg.as_slice());
            if let Ok(client_keys) = finished {
                assert_eq!(client_keys.binding(), relay_keys.binding());
            }
        }
        Err(_) => assert!(create.is_err()),
    }

    // As CREATED hdata, at the fixed client.
    let created = FastCreated::parse(data);
    if let Ok(c) = &created {
        assert_eq!(c.encode().as_deref(), Ok(data));
    }
    let (state, _) = fixtures::fast_client();
    if state.finish(data).is_ok() {
        assert!(
            created.is_ok(),
            "the client accepted a CREATED that does not parse"
        );
    }
});
