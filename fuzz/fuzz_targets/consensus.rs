//! Bytes → consensus → verify against three fixed trusted authorities at a fixed time.
//! Must never panic; whatever parses must re-encode to the same bytes.
#![no_main]

use std::sync::OnceLock;

use allium::crypto::{IdentityKeypair, IdentityPublic};
use allium::dir::UncheckedConsensus;
use libfuzzer_sys::fuzz_target;

/// The time the seeds were generated for (tests/dir_fuzz_seeds.rs).
const NOW: u64 = 1_700_000_000;

/// The seeds' three authorities (the same derivation as tests/common/dir.rs `key`).
fn trusted() -> &'static [IdentityPublic] {
    static KEYS: OnceLock<Vec<IdentityPublic>> = OnceLock::new();
    KEYS.get_or_init(|| {
        (0..3u64)
            .map(|i| {
                let mut seed = [0u8; 32];
                seed[..8].copy_from_slice(&(1_000_000 + i).to_be_bytes());
                seed[8] = 0xA1;
                IdentityKeypair::from_secret_bytes(&seed).public()
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(u) = UncheckedConsensus::parse(data) {
        if let Ok(c) = u.verify(trusted(), NOW) {
            let again = c.signed().to_bytes().expect("a consensus must re-encode");
            assert_eq!(&again[..], data, "parse→encode must reproduce the input");
            assert!(c.body().check().is_ok());
            // Nothing to assemble with: every relay is left out, none invented.
            let listed = c.listed().len();
            let c = c.assemble(&[]);
            assert_eq!(c.missing_microdescs(), listed);
            assert!(c.relays().is_empty());
        }
    }
});
