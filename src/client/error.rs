//! Why the client could not do what was asked.

use thiserror::Error;

use crate::cell::EndReason;
use crate::onion::AddressError;
use crate::proto::StreamOpenError;

/// Why the client could not do what was asked.
#[derive(Debug, Error)]
pub enum ClientError {
    /// No usable consensus: the authorities are unreachable and there is no live cache.
    #[error("no usable consensus: {0}")]
    NoConsensus(String),
    /// No circuit could be built.
    #[error("cannot build a circuit: {0}")]
    Circuit(String),
    /// The stream failed to open.
    #[error("{0}")]
    Stream(#[from] StreamOpenError),
    /// The address was not `host:port`.
    #[error("bad address {0:?}: expected host:port")]
    BadAddress(String),
    /// An onion service could not be reached (the message names no address).
    #[error("onion service: {0}")]
    Onion(#[from] OnionConnectError),
}

/// Why a connection to an onion service failed. No variant contains the address.
#[derive(Debug, Error)]
pub enum OnionConnectError {
    /// The address does not parse (a mistyped character, a wrong length).
    #[error("bad onion address: {0}")]
    BadAddress(#[from] AddressError),
    /// No descriptor directory answered with a valid descriptor.
    #[error("no valid descriptor found: {0}")]
    NoDescriptor(String),
    /// Every introduction attempt failed.
    #[error("the service could not be reached: {0}")]
    Unreachable(String),
    /// The service requires client authorisation and no key is configured for it.
    #[error("this onion service requires client authorisation; no key configured for it")]
    ClientAuthMissing,
    /// The service requires client authorisation and the configured key is not listed.
    #[error("client authorisation key not accepted by this service")]
    ClientAuthRejected,
    /// The whole connection took too long.
    #[error("timed out connecting to the service")]
    Timeout,
    /// A new identity (NEWNYM) was asked for while the connection was being made: its
    /// circuit belonged to the old one and was closed.
    #[error("a new identity was asked for while connecting; try again")]
    NewIdentity,
}

impl OnionConnectError {
    /// The stream error a SOCKS client sees: a bad address or an unreachable service is
    /// "host unreachable" (END reason RESOLVE_FAILED / NO_ROUTE), a timeout "TTL expired",
    /// client authorisation failures their own codes (Tor's extended SOCKS5 0xF4, 0xF5).
    pub fn stream_error(&self) -> StreamOpenError {
        match self {
            Self::BadAddress(_) => StreamOpenError::Refused(EndReason::ResolveFailed),
            Self::NoDescriptor(_) | Self::Unreachable(_) => {
                StreamOpenError::Refused(EndReason::NoRoute)
            }
            Self::Timeout => StreamOpenError::Timeout,
            Self::NewIdentity => StreamOpenError::CircuitClosed,
            Self::ClientAuthMissing => StreamOpenError::OnionAuthMissing,
            Self::ClientAuthRejected => StreamOpenError::OnionAuthRejected,
        }
    }
}
