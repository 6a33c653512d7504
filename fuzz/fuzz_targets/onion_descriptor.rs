//! Bytes → onion-service descriptor → verify (outer layer, then for the seeds' address at
//! a fixed time, with the seeds' client-authorisation key); and the same bytes as a
//! decrypted first layer (client-authorisation section, entries). Must never panic;
//! whatever parses must re-encode to the same bytes.
#![no_main]

use allium::onion::descriptor::{encode_first_layer, parse_first_layer, UncheckedOnionDescriptor};
use allium::onion::{ClientAuthSecret, OnionAddress, PeriodParams};
use libfuzzer_sys::fuzz_target;

/// The time the seeds were generated for (tests/onion_fuzz_seeds.rs).
const NOW: u64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    if let Ok(first) = parse_first_layer(data) {
        let again = encode_first_layer(&first).expect("a parsed first layer must re-encode");
        assert_eq!(
            &again[..],
            data,
            "first layer parse→encode must reproduce the input"
        );
    }
    if let Ok(u) = UncheckedOnionDescriptor::parse(data) {
        let again = u
            .signed()
            .to_bytes()
            .expect("a parsed descriptor must re-encode");
        assert_eq!(&again[..], data, "parse→encode must reproduce the input");
        // The seeds' service address (tests/common/onion.rs: key(200)).
        let mut seed = [0u8; 32];
        seed[0] = 200;
        seed[1] = 0x77;
        let key = allium::crypto::IdentityKeypair::from_secret_bytes(&seed).public();
        // The seeds' client key (tests/common/onion.rs: client_auth_key(0)).
        let mut secret = [0u8; 32];
        secret[4] = 0x42;
        let client = ClientAuthSecret::from_secret_bytes(&secret);
        if let Ok(address) = OnionAddress::from_identity(key) {
            let periods = PeriodParams::default();
            if let Ok((_, inner)) =
                u.verify_for_client(&address, Some(&client), &periods, NOW, 300, 0)
            {
                assert!(inner.check().is_ok());
            }
        }
    }
});
