//! allium: an anonymous onion-routed overlay.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub(crate) mod admission;
pub(crate) mod bench;
pub mod bytes;
pub mod cell;
pub mod cli;
pub mod client;
pub mod clock;
pub mod codec;
pub mod crypto;
pub mod dir;
pub mod fd_limit;
pub mod link;
pub mod onion;
pub mod proto;
pub mod relay;
mod sync;
pub mod testnet;

// The README's Rust examples are compiled and type-checked as doc tests: a stale example
// fails `cargo test`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;
