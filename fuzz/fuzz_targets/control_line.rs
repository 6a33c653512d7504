//! Raw bytes → one control-port command line (docs/control.md). Must never panic, never
//! accept more than `MAX_LINE` bytes, and whatever parses must re-encode to a line that
//! parses to the same command.
#![no_main]

use allium::client::control::line::{parse_line, MAX_LINE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_line(data) {
        Ok(cmd) => {
            assert!(data.len() <= MAX_LINE);
            let line = cmd.encode();
            assert!(line.len() <= MAX_LINE, "encoding outgrew the limit");
            assert_eq!(parse_line(line.as_bytes()), Ok(cmd));
        }
        Err(e) => {
            let _ = (e.code(), e.to_string());
        }
    }
});
