//! allium: an anonymous onion-routed overlay.
#![forbid(unsafe_code)]

pub mod cell;
pub mod cli;
pub mod client;
pub mod codec;
pub mod crypto;
