//! Bytes → relay descriptor → verify at a fixed time. Must never panic; whatever parses
//! must re-encode to the same bytes.
#![no_main]

use allium::dir::UncheckedDescriptor;
use libfuzzer_sys::fuzz_target;

/// The time the seeds were generated for (tests/dir_fuzz_seeds.rs).
const NOW: u64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    if let Ok(u) = UncheckedDescriptor::parse(data) {
        let again = u
            .signed()
            .to_bytes()
            .expect("a parsed descriptor must re-encode");
        assert_eq!(&again[..], data, "parse→encode must reproduce the input");
        if let Ok(d) = u.verify(NOW, 300) {
            // A verified descriptor satisfies every field bound.
            assert!(d.check_fields().is_ok());
            let _ = d.exit_policy.might_allow_port(443);
            let _ = d.udp_policy.might_allow_port(53);
        }
    }
});
