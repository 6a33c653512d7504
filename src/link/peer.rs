//! Who is at the other end of a channel.

use ed25519_dalek::VerifyingKey;

/// What the peer proved in the link handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    /// An anonymous client: it proved only a fresh, per-connection Noise key.
    Client,
    /// A relay with this long-term identity (its link-key certificate verified).
    Relay(VerifyingKey),
}

impl PeerKind {
    /// The relay identity, if the peer is a relay.
    pub fn relay_identity(&self) -> Option<&VerifyingKey> {
        match self {
            PeerKind::Client => None,
            PeerKind::Relay(k) => Some(k),
        }
    }
}
