//! Bytes → a script of `Reader` reads (the first byte says how many of the following bytes
//! are the script), then the fields written back with a `Writer` (src/bytes/). Must never
//! panic; a failed read must not advance; what was read re-encodes to the bytes consumed,
//! into a growable buffer and into a fixed one of exactly that size.
#![no_main]

#[path = "../common/bytes_script.rs"]
mod bytes_script;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (script, input) = rest.split_at(usize::from(n).min(rest.len()));
    bytes_script::check(script, input);
});
