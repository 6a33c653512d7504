//! Errors of the client's circuits.

use thiserror::Error;

use crate::cell::{CellError, DestroyReason};
use crate::crypto::{HandshakeError, KeyError, LayerError};
use crate::link::LinkError;

/// Why a circuit operation failed. Every variant except `Timeout` leaves the circuit
/// unusable.
#[derive(Debug, Error)]
pub enum CircuitError {
    /// The channel to the first hop failed.
    #[error("link: {0}")]
    Link(#[from] LinkError),
    /// A circuit handshake failed (the relay did not prove its onion key).
    #[error("circuit handshake: {0}")]
    Handshake(#[from] HandshakeError),
    /// A relay destroyed the circuit.
    #[error("circuit destroyed by the network (reason {0:?})")]
    Destroyed(DestroyReason),
    /// A hop answered something that is not legal here.
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// A cell did not parse.
    #[error("bad cell: {0}")]
    Cell(#[from] CellError),
    /// The relay crypto refused (unrecognised cell, counters exhausted).
    #[error("relay crypto: {0}")]
    Crypto(#[from] LayerError),
    /// A key in the request was invalid.
    #[error("key: {0}")]
    Key(#[from] KeyError),
    /// The operation did not complete in time.
    #[error("timed out")]
    Timeout,
    /// The channel carrying the circuit closed.
    #[error("channel closed")]
    ChannelClosed,
}
