//! Relay reputation, tried by the attacker (issue 18), in one test binary: exits that
//! tamper with traffic get BadExit (`bad_exits`), ten relays on one address yield two
//! usable ones (`sybil_limits`), and a relay that refuses circuits loses Running
//! (`unreliable_relays`). The lying-bandwidth attack with separate processes is
//! `tests/bandwidth_lies.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

#[path = "../common/mod.rs"]
mod common;

mod bad_exits;
mod sybil_limits;
mod unreliable_relays;
