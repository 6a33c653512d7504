//! What a client must know about a relay to build a circuit through it.

use std::net::SocketAddr;

use crate::crypto::{IdentityPublic, VerifiedOnionKey};

/// A relay as a circuit hop: where it listens, the identity its link handshake must prove,
/// and its onion key (from a certificate already verified against that identity).
#[derive(Debug, Clone)]
pub struct RelayTarget {
    /// Link address.
    pub addr: SocketAddr,
    /// ed25519 identity.
    pub identity: IdentityPublic,
    /// Verified onion key for the circuit handshake.
    pub onion: VerifiedOnionKey,
}
