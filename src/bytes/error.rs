//! The one error type of byte-level reading and writing.

use thiserror::Error as ThisError;

/// Why bytes could not be read or written. Each variant names the field that was being
/// handled, so a refusal says what was expected; protocol layers convert it into their
/// own error with `From` (e.g. [`crate::cell::CellError`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ThisError)]
#[non_exhaustive]
pub enum Error {
    /// A field ran past the end of the input.
    #[error("truncated: {field} needs more bytes than remain")]
    Truncated {
        /// The field that was being read.
        field: &'static str,
    },
    /// A length (a length field, or a delimited field) exceeds its bound.
    #[error("length of {field} = {len} exceeds the maximum {max}")]
    LengthOutOfBounds {
        /// The field.
        field: &'static str,
        /// The length found (for a delimited field: at least this long).
        len: usize,
        /// The largest length accepted.
        max: usize,
    },
    /// Bytes were left over after a message that must exhaust its input.
    #[error("{0} trailing byte(s) after the message")]
    TrailingBytes(usize),
    /// Padding that must be zero was not.
    #[error("non-zero padding")]
    NonZeroPadding,
    /// A field does not fit the writer's fixed buffer, or its length its length prefix.
    #[error("does not fit: {field}")]
    TooLarge {
        /// The field that overflowed.
        field: &'static str,
    },
}

/// Result alias for byte-level reading and writing.
pub type Result<T> = std::result::Result<T, Error>;
