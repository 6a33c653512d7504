//! Bytes → directory request and response (the BEGIN_DIR protocol, docs/protocol.md §6.12).
//! Must never panic; whatever parses must re-encode to the same bytes.
#![no_main]

use allium::dir::request::{parse_header, DirRequest, DirResponse, DIR_HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(header) = data.get(..DIR_HEADER_LEN) {
        if let Ok(header) = <&[u8; DIR_HEADER_LEN]>::try_from(header) {
            let _ = parse_header(header);
        }
    }
    if let Ok(req) = DirRequest::parse(data) {
        assert_eq!(req.encode(), data);
    }
    if let Ok(resp) = DirResponse::parse(data) {
        assert_eq!(resp.encode(), data);
    }
});
