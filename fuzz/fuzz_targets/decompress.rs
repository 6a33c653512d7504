//! Bytes → bounded zlib decompression (the directory's compressed transfer, §6.17). Must
//! never panic nor return more than the bound; whatever decompresses must survive
//! compress → decompress unchanged.
#![no_main]

use allium::dir::compress::{compress, decompress};
use libfuzzer_sys::fuzz_target;

const BOUND: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    if let Ok(out) = decompress(data, BOUND) {
        assert!(out.len() <= BOUND && out.capacity() <= BOUND);
        let again = compress(&out).expect("compressing cannot fail");
        assert_eq!(decompress(&again, out.len()).expect("round trip"), out);
    }
});
