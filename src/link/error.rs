//! The one error type of the link layer.

use thiserror::Error;

use crate::cell::CellError;

/// Why a link handshake failed or a channel closed.
///
/// Every error on an established channel is fatal to it: the link layer never skips a bad
/// record, because a silently dropped cell is a side channel (docs/protocol.md §5.8).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The TCP connection failed.
    #[error("I/O error on the link: {0}")]
    Io(#[from] std::io::Error),
    /// The handshake did not complete within `LinkConfig::handshake_timeout`.
    #[error("link handshake timed out")]
    HandshakeTimeout,
    /// The peer closed the connection before the handshake finished.
    #[error("connection closed during the link handshake")]
    HandshakeEof,
    /// The Noise handshake itself failed (bad key, bad MAC, malformed message).
    #[error("noise handshake failed: {0}")]
    Noise(#[from] snow::Error),
    /// The initiator asked for a link protocol version we do not speak.
    #[error("the peer asked for link protocol version {0}, this node speaks only {LINK_VERSION}: one side must be upgraded", LINK_VERSION = super::version::LINK_VERSION)]
    UnsupportedVersion(u8),
    /// The responder refused our link protocol version and named its own.
    #[error("the peer speaks link protocol version {theirs}, this node speaks {ours}: one side must be upgraded")]
    VersionRefused {
        /// Our version.
        ours: u8,
        /// The version the responder speaks.
        theirs: u8,
    },
    /// One of our own link messages (a certificate) did not fit its encoding.
    #[error("link message does not encode: {0}")]
    Encode(#[from] crate::bytes::Error),
    /// A cell during the handshake was malformed or illegal there.
    #[error("bad handshake cell: {0}")]
    Cell(#[from] CellError),
    /// The peer sent something the protocol does not allow at this point.
    #[error("link protocol violation: {0}")]
    Protocol(&'static str),
    /// A link-key certificate was malformed or its signature did not verify.
    #[error("bad link-key certificate: {0}")]
    BadCert(&'static str),
    /// A link-key certificate has expired.
    #[error("link-key certificate expired at {expires} (unix seconds), now {now}")]
    CertExpired {
        /// The certificate's expiry.
        expires: u64,
        /// Our clock when we checked.
        now: u64,
    },
    /// The relay we reached is not the one we meant to reach. Both are relay public
    /// identities (hex), never client data, so they may appear in logs.
    #[error("relay identity mismatch: expected {expected}, but the peer proved {got}")]
    IdentityMismatch {
        /// The identity we asked for.
        expected: String,
        /// The identity the peer's certificate proved.
        got: String,
    },
    /// A record failed authentication (tampering or desynchronisation); the channel closes.
    #[error("link record failed authentication")]
    BadRecord,
    /// A record had a length other than `RECORD_LEN` (an internal invariant; never expected).
    #[error("record of {0} bytes, expected the fixed record length")]
    RecordLength(usize),
    /// A record counter reached its limit; the channel must close rather than reuse a nonce.
    #[error("link record counter exhausted")]
    NonceExhausted,
    /// The peer sent nothing for `LinkConfig::idle_timeout`.
    #[error("link idle timeout")]
    IdleTimeout,
    /// The channel is closed (locally or after an earlier error).
    #[error("channel closed")]
    Closed,
    /// Every circuit slot on this channel is taken (`LinkConfig::max_circuits_per_channel`).
    #[error("too many circuits on this channel (limit {max})")]
    TooManyCircuits {
        /// The configured limit.
        max: usize,
    },
    /// A circuit id is already in use on this channel.
    #[error("circuit id {0:#010x} already in use on this channel")]
    CircIdInUse(u32),
    /// The peer used a circuit id from our half of the id space (docs/protocol.md §2.2).
    #[error("circuit id {0:#010x} has the wrong top bit for its sender")]
    WrongCircIdHalf(u32),
}

impl LinkError {
    /// A short label naming the kind of failure and nothing else (no keys, no addresses),
    /// for logs at default level; the full `Display` may name relay identities.
    pub fn kind(&self) -> &'static str {
        match self {
            LinkError::Io(_) => "i/o error",
            LinkError::HandshakeTimeout => "handshake timeout",
            LinkError::HandshakeEof => "closed during handshake",
            LinkError::Noise(_) => "noise failure",
            LinkError::UnsupportedVersion(_) => "unsupported version",
            LinkError::VersionRefused { .. } => "version refused by peer",
            LinkError::Encode(_) => "encoding failure",
            LinkError::Cell(_) => "bad handshake cell",
            LinkError::Protocol(_) => "protocol violation",
            LinkError::BadCert(_) => "bad certificate",
            LinkError::CertExpired { .. } => "expired certificate",
            LinkError::IdentityMismatch { .. } => "identity mismatch",
            LinkError::BadRecord => "bad record",
            LinkError::RecordLength(_) => "bad record length",
            LinkError::NonceExhausted => "record counter exhausted",
            LinkError::IdleTimeout => "idle timeout",
            LinkError::Closed => "closed",
            LinkError::TooManyCircuits { .. } => "too many circuits",
            LinkError::CircIdInUse(_) => "circuit id in use",
            LinkError::WrongCircIdHalf(_) => "circuit id from the wrong half",
        }
    }
}

/// Result with a [`LinkError`].
pub type LinkResult<T> = Result<T, LinkError>;
