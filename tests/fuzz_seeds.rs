//! The committed fuzz seed corpus stays valid as the format evolves: every seed parses and
//! re-encodes to itself (a seed that no longer parses would quietly weaken the fuzzers).

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::path::Path;

#[allow(unreachable_pub)] // shared with the fuzz crate, where these are its API
#[path = "../fuzz/common/contexts.rs"]
mod contexts;

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path.display().to_string(), bytes)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn cell_seeds_parse_and_reencode() {
    let seeds = seeds("cell");
    assert!(seeds.len() >= 11);
    for (name, bytes) in seeds {
        // Re-encoding, and every context's agreement, are checked inside.
        contexts::chan_cell(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn relay_msg_seeds_parse_and_reencode() {
    let seeds = seeds("relay_msg");
    assert!(seeds.len() >= 13);
    for (name, bytes) in seeds {
        contexts::relay_cell(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
