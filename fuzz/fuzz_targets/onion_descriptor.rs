//! Bytes → onion-service descriptor → verify (outer layer, then for the seeds' address at
//! a fixed time). Must never panic; whatever parses must re-encode to the same bytes.
#![no_main]

use allium::onion::descriptor::UncheckedOnionDescriptor;
use allium::onion::{OnionAddress, PeriodParams};
use libfuzzer_sys::fuzz_target;

/// The time the seeds were generated for (tests/onion_fuzz_seeds.rs).
const NOW: u64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
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
        if let Ok(address) = OnionAddress::from_identity(key) {
            if let Ok((_, inner)) = u.verify_for(&address, &PeriodParams::default(), NOW, 300, 0) {
                assert!(inner.check().is_ok());
            }
        }
    }
});
