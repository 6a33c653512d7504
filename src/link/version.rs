//! What names this link protocol and its version on the wire. Its own file so that the
//! handshake and the errors that mention the version do not import each other.

/// The Noise protocol name.
pub(crate) const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_SHA256";
/// The Noise prologue: both sides must agree on it, so it pins the protocol and version.
pub(crate) const PROLOGUE: &[u8] = b"allium-link-v2";
/// The link protocol version in the first byte of LINK_INIT. Version 2: relay crypto v2
/// (UIV+ layers, docs/protocol.md §4.5) and link rekeying; version 1 peers are refused.
pub(crate) const LINK_VERSION: u8 = 2;
