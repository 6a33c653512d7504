//! Raw bytes → link cell, in every receiving context (fuzz/common/contexts.rs). Whatever
//! parses must re-encode to the same bytes, and each context must agree with the full
//! parser.
#![no_main]

#[path = "../common/contexts.rs"]
mod contexts;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = contexts::chan_cell(data);
});
