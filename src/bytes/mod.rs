//! Bytes in and out: the crate's one way to read and write untrusted binary input.
//!
//! - [`Reader`]: a cursor over untrusted bytes; every read is bounds-checked and returns a
//!   typed [`Error`] naming the field, never panics. A parser ends with [`Reader::finish`]
//!   (or [`Reader::finish_zero_padded`]), so every accepted input has exactly one encoding.
//! - [`Writer`]: the matching encoder, over a fixed buffer (running out of room is an
//!   error: cells have a fixed size) or a growable `Vec` (never runs out).
//! - [`Readable`] / [`Writeable`]: a wire type's decode and encode, side by side, so that
//!   messages compose (`r.extract::<T>()`, `w.write(&t)`).
//! - [`hex`]: the crate's one hexadecimal encoder and key decoder.
//!
//! Nothing here knows about sockets or any protocol; the layers above give the bytes
//! their meaning.

mod error;
pub(crate) mod hex;
mod reader;
mod writer;

pub use error::{Error, Result};
pub use reader::{Readable, Reader};
pub use writer::{Writeable, Writer};
