//! allium: an anonymous onion-routed overlay.
#![forbid(unsafe_code)]

pub mod cell;
pub mod crypto;
