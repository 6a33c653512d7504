//! Bytes sized to a relay body → relay message. Whatever parses must re-encode to the
//! same bytes. Short inputs are zero-extended to a full body so the fuzzer reaches the
//! message parsers without having to discover the 512-byte length first.
#![no_main]

use allium::cell::consts::RELAY_BODY_LEN;
use allium::cell::{CmdSet, RelayCell};
use libfuzzer_sys::fuzz_target;

/// Every relay command, so every message parser is reachable.
const ALL: CmdSet = CmdSet::new(
    &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13],
    "anywhere (fuzz)",
);

fuzz_target!(|data: &[u8]| {
    // Raw input first (exercises the length check), then the zero-extended body.
    if let Ok(cell) = RelayCell::parse(data, &ALL) {
        assert_eq!(&cell.encode().expect("re-encode")[..], data);
    }
    if data.len() <= RELAY_BODY_LEN {
        let mut body = [0u8; RELAY_BODY_LEN];
        body[..data.len()].copy_from_slice(data);
        if let Ok(cell) = RelayCell::parse(&body, &ALL) {
            assert_eq!(cell.encode().expect("re-encode"), body);
        }
    }
});
