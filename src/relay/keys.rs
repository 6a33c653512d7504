//! Everything secret a relay holds, loaded together.

use crate::clock::now_unix;
use std::path::Path;
use std::time::Duration;

use crate::crypto::cert::DEFAULT_ONION_KEY_LIFETIME_SECS;
use crate::crypto::keyfile::{self, KeyFileError};
use crate::crypto::{IdentityKeypair, IdentityPublic, OnionKeyCert, OnionKeypair, RelayOnionKeys};
use crate::link::LinkAuth;

/// Lifetime of the link-key certificate made at start-up. The link key is not stored: a
/// fresh one is certified every time the relay starts.
pub(crate) const LINK_CERT_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// A relay's keys: identity, onion keys (current and previous) with the current key's
/// certificate, and the link key with its certificate.
#[derive(Debug)]
pub struct RelayKeys {
    identity: IdentityKeypair,
    onion: RelayOnionKeys,
    onion_cert: OnionKeyCert,
    link: LinkAuth,
}

impl RelayKeys {
    /// Fresh keys held only in memory (tests and the single-process test network).
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let identity = IdentityKeypair::generate(&mut rng);
        let onion = RelayOnionKeys::new(identity.public(), OnionKeypair::generate(&mut rng), None);
        Self::assemble(identity, onion)
    }

    /// Loads the identity and onion keys from `dir`, creating any that are missing (files
    /// mode 0600; a file that is malformed or readable by others is an error naming it).
    pub fn load_or_create(dir: &Path) -> Result<Self, KeyFileError> {
        let mut rng = rand::rng();
        let identity = keyfile::load_or_create_identity(dir, &mut rng)?;
        let onion = keyfile::load_relay_onion_keys(dir, identity.public(), &mut rng)?;
        Ok(Self::assemble(identity, onion))
    }

    fn assemble(identity: IdentityKeypair, onion: RelayOnionKeys) -> Self {
        let onion_cert = OnionKeyCert::sign(
            &identity,
            onion.current().public(),
            now_unix().saturating_add(DEFAULT_ONION_KEY_LIFETIME_SECS),
        );
        let link = LinkAuth::generate(identity.signing_key(), &mut rand::rng(), LINK_CERT_LIFETIME);
        RelayKeys {
            identity,
            onion,
            onion_cert,
            link,
        }
    }

    /// The relay's public identity.
    pub fn identity(&self) -> IdentityPublic {
        self.identity.public()
    }

    /// The identity keypair (for signing descriptors).
    pub fn identity_keypair(&self) -> &IdentityKeypair {
        &self.identity
    }

    /// The onion keys accepted in circuit handshakes.
    pub fn onion_keys(&self) -> &RelayOnionKeys {
        &self.onion
    }

    /// The certificate of the current onion key, as published in the descriptor.
    pub fn onion_cert(&self) -> &OnionKeyCert {
        &self.onion_cert
    }

    /// The link-handshake credentials.
    pub fn link_auth(&self) -> &LinkAuth {
        &self.link
    }
}
