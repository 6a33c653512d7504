//! Raw bytes → link cell. Whatever parses must re-encode to the same bytes.
#![no_main]

use allium::cell::{ChanCell, CmdSet};
use libfuzzer_sys::fuzz_target;

/// Every channel command, so every body parser is reachable.
const ALL: CmdSet = CmdSet::new(&[0, 1, 2, 3, 4, 5, 8, 9, 16, 17, 18], "anywhere (fuzz)");

fuzz_target!(|data: &[u8]| {
    if let Ok(cell) = ChanCell::parse(data, &ALL) {
        let encoded = cell.encode().expect("a parsed cell must re-encode");
        assert_eq!(&encoded[..], data, "parse→encode must reproduce the input");
    }
});
