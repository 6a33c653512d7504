//! Bytes → the link-key certificate (src/link/cert.rs, 104 bytes) and the onion-key
//! certificate (src/crypto/cert.rs, 136 bytes), each parsed and then verified against fixed
//! values (fuzz/common/fixtures.rs: the link static key, the clock). Must never panic.
//! Whatever parses re-encodes to the input; a certificate that verifies proves the identity
//! it names. The seeds are valid certificates of the fixed relay.
#![no_main]

#[path = "../common/fixtures.rs"]
mod fixtures;

use allium::crypto::OnionKeyCert;
use allium::link::LinkKeyCert;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cert) = LinkKeyCert::parse(data) {
        assert_eq!(&cert.encode().expect("re-encode")[..], data);
        let link = fixtures::link_static();
        if let Ok(identity) = cert.verify(&link, fixtures::NOW) {
            assert!(fixtures::NOW < cert.expires());
            assert_eq!(
                identity.as_bytes().as_slice(),
                data.get(..32).expect("length")
            );
        }
        let fixed = fixtures::identity().signing_key().verifying_key();
        if cert.verify_expecting(&link, fixtures::NOW, &fixed).is_ok() {
            assert!(cert.verify(&link, fixtures::NOW).is_ok());
        }
    }
    if let Ok(cert) = OnionKeyCert::from_bytes(data) {
        assert_eq!(&cert.to_bytes().expect("re-encode")[..], data);
        if let Ok(verified) = cert.verify(fixtures::NOW) {
            assert_eq!(verified.identity(), cert.identity());
            assert_eq!(verified.onion_key(), cert.onion_key());
            assert!(fixtures::NOW < verified.expires_unix());
        }
    }
});
