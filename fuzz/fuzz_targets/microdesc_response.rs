//! Bytes → GET_MICRODESCS response (docs/protocol.md §6.17), checked against requested
//! digests taken from the input's first bytes; and bytes → GET_MICRODESCS request. Must
//! never panic; whatever parses must re-encode to the same bytes, and every accepted
//! microdescriptor must hash to a requested digest.
#![no_main]

use allium::dir::microdesc::{check_response, digest_of, encode_response, parse_response};
use allium::dir::request::{DirRequest, MAX_DIR_BODY};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte says how many 32-byte digests follow as the "request".
    let (n, rest) = match data.split_first() {
        Some((n, rest)) => (usize::from(*n % 8), rest),
        None => return,
    };
    let cut = (n * 32).min(rest.len());
    let (head, body) = rest.split_at(cut);
    let mut requested: Vec<[u8; 32]> = head
        .chunks_exact(32)
        .filter_map(|c| <[u8; 32]>::try_from(c).ok())
        .collect();
    if let Ok(entries) = parse_response(body) {
        assert_eq!(encode_response(&entries, MAX_DIR_BODY), body);
        // Also request exactly what came, so the digest path is reached.
        requested.extend(entries.iter().map(|e| digest_of(e)));
    }
    if let Ok(got) = check_response(body, &requested) {
        for (digest, md) in got {
            assert!(requested.contains(&digest));
            assert_eq!(md.digest().expect("digest"), digest);
        }
    }
    if let Ok(req @ DirRequest::GetMicrodescs { .. }) = DirRequest::parse(data) {
        assert_eq!(req.encode(), data);
    }
});
