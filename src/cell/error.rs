//! The one error type of the wire-format layer.

use thiserror::Error;

/// Why a cell or relay message was refused.
///
/// Every parser in `cell` is total: on any input it returns a value or one of these, never
/// panics. A peer that sends a refused cell has violated the protocol; callers close the
/// circuit or channel.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CellError {
    /// A field ran past the end of its enclosing buffer.
    #[error("truncated: {field} needs more bytes than remain")]
    Truncated {
        /// The field that was being read.
        field: &'static str,
    },
    /// A fixed-size unit had the wrong length.
    #[error("wrong length: expected {expected} bytes, got {got}")]
    WrongLength {
        /// The only accepted length.
        expected: usize,
        /// The length received.
        got: usize,
    },
    /// A length field exceeds its bound.
    #[error("length field {field} = {len} exceeds the maximum {max}")]
    LengthOutOfBounds {
        /// The length field.
        field: &'static str,
        /// The value on the wire.
        len: usize,
        /// The largest value accepted.
        max: usize,
    },
    /// Bytes were left over after a message that must exhaust its container.
    #[error("{0} trailing byte(s) after the message")]
    TrailingBytes(usize),
    /// Padding that must be zero was not.
    #[error("non-zero padding")]
    NonZeroPadding,
    /// A command byte this protocol does not define.
    #[error("unknown command {0}")]
    UnknownCommand(u8),
    /// A command number reserved for a future message (UDP, [`super::relay_cmd::RESERVED_UDP`]).
    #[error("reserved command {0} is not implemented")]
    ReservedCommand(u8),
    /// A known command that is not legal in the current context.
    #[error("command {command} is not allowed {context}")]
    CommandNotAllowed {
        /// The command byte.
        command: u8,
        /// Where it was received, e.g. "on a client's channel".
        context: &'static str,
    },
    /// A circuit command arrived with circuit id zero.
    #[error("circuit id 0 on a circuit command")]
    ZeroCircId,
    /// A channel-level command arrived with a non-zero circuit id.
    #[error("non-zero circuit id on a channel-level command")]
    UnexpectedCircId,
    /// A stream command arrived with stream id zero.
    #[error("stream id 0 on a stream command")]
    ZeroStreamId,
    /// A circuit-level relay command arrived with a non-zero stream id.
    #[error("non-zero stream id on a circuit-level relay command")]
    UnexpectedStreamId,
    /// A field held a value outside its enumeration or range.
    #[error("invalid value {value} for {field}")]
    BadValue {
        /// The field.
        field: &'static str,
        /// The value on the wire (widened).
        value: u64,
    },
    /// A hostname that is empty, too long, contains bytes outside `[A-Za-z0-9._-]`,
    /// or is an IP literal (which must be sent as an address instead).
    #[error("invalid hostname")]
    InvalidHostname,
    /// The integrity/recognition field of a relay body was not all zero: the body was not
    /// fully decrypted, or not meant for this hop.
    #[error("relay body is not recognised (non-zero tag)")]
    Unrecognized,
    /// An encoder was given a message that cannot fit its fixed-size container.
    #[error("message does not fit: {field}")]
    TooLarge {
        /// The field that overflowed.
        field: &'static str,
    },
}

/// Result alias for the wire-format layer.
pub type CellResult<T> = Result<T, CellError>;

impl From<crate::bytes::Error> for CellError {
    fn from(e: crate::bytes::Error) -> Self {
        use crate::bytes::Error as E;
        match e {
            E::Truncated { field } => CellError::Truncated { field },
            E::LengthOutOfBounds { field, len, max } => {
                CellError::LengthOutOfBounds { field, len, max }
            }
            E::TrailingBytes(n) => CellError::TrailingBytes(n),
            E::NonZeroPadding => CellError::NonZeroPadding,
            E::TooLarge { field } => CellError::TooLarge { field },
        }
    }
}
