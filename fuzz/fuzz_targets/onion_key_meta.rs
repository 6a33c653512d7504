//! Bytes → the onion-key record of a relay's data directory (`onion_key.created`,
//! src/crypto/onion_key_meta.rs, 48 bytes). Must never panic; whatever parses re-encodes to
//! the input. The seed is a valid record.
#![no_main]

use allium::crypto::OnionKeyMeta;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(meta) = OnionKeyMeta::parse(data) {
        assert_eq!(&meta.encode()[..], data);
    }
});
