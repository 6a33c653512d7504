//! The cryptographic core of allium: long-term keys and their files, onion-key
//! certificates, the `allium-ntor-1` circuit handshake and the layered relay-cell crypto.
//!
//! Everything here is pure computation over byte buffers except [`keyfile`], which is the
//! only module that touches the file system. The byte-exact specification is in
//! `docs/protocol.md §4`.
//!
//! Typical flow:
//! 1. A relay loads its keys with [`keyfile::load_or_create_identity`] and
//!    [`keyfile::load_relay_onion_keys`], and publishes an [`OnionKeyCert`].
//! 2. A client verifies the certificate ([`OnionKeyCert::verify`]) to get a
//!    [`VerifiedOnionKey`] and runs [`client_handshake_start`] /
//!    [`ClientHandshakeState::finish`]; the relay answers with [`relay_handshake`]. Both
//!    sides obtain the same [`CircuitKeys`].
//! 3. The relay builds a [`RelayCrypto`] from its keys; the client pushes the keys of every
//!    hop into its [`ClientLayers`]. Relay bodies are then transformed in place.

pub(crate) mod cert;
pub mod circuit_keys;
pub(crate) mod client_layers;
pub mod fast_handshake;
pub mod handshake;
pub mod keyfile;
pub(crate) mod keys;
pub(crate) mod layer;
pub mod onion_key_meta;
pub(crate) mod onion_keys;
pub(crate) mod relay_layer;
mod scrub;
mod uiv;

pub use cert::{CertError, OnionKeyCert, VerifiedOnionKey};
pub use circuit_keys::CircuitKeys;
pub use client_layers::{ClientLayers, MAX_HOPS};
pub use handshake::{
    client_handshake_start, client_handshake_start_with_secret, relay_handshake,
    relay_handshake_with_secret, ClientHandshakeState, HandshakeError,
};
pub use keyfile::KeyFileError;
pub use keys::{IdentityKeypair, IdentityPublic, KeyError, OnionKeypair, OnionPublic, RelayId};
pub use layer::{CellKind, LayerError, LayerState, RelayTag, LAYER_SEED_LEN};
pub use onion_key_meta::{OnionKeyMeta, OnionKeyMetaError};
pub use onion_keys::RelayOnionKeys;
pub use relay_layer::{Recognition, RelayCrypto};
