//! A relay's link credentials: its identity, its x25519 link (Noise static) key, and the
//! certificate binding the two.

use std::time::{Duration, SystemTime};

use crate::clock::to_unix;

use ed25519_dalek::{SigningKey, VerifyingKey};
use rand::CryptoRng;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::cert::LinkKeyCert;

/// What a relay proves in every link handshake. A relay renews its link key by building a
/// new one (`relay/key_schedule.rs` says when); channels keep the one they were made with.
///
/// Holds only the identity's *public* key: the link layer never signs after the certificate
/// exists, so the identity secret need not live in every connection task. The static secret
/// is zeroized on drop (`StaticSecret` does it).
pub struct LinkAuth {
    identity: VerifyingKey,
    static_secret: StaticSecret,
    static_public: PublicKey,
    cert: LinkKeyCert,
}

impl LinkAuth {
    /// Generates a fresh link key and certifies it with `identity` for `lifetime` from
    /// `issued` (Unix seconds, read by the caller from its node's clock).
    pub fn generate<R: CryptoRng + ?Sized>(
        identity: &SigningKey,
        rng: &mut R,
        issued: u64,
        lifetime: Duration,
    ) -> Self {
        Self::generate_until_unix(identity, rng, issued.saturating_add(lifetime.as_secs()))
    }

    /// Generates a fresh link key certified until `expires` (which may lie in the past, for
    /// tests of expiry handling; a peer refuses such a certificate).
    pub fn generate_until<R: CryptoRng + ?Sized>(
        identity: &SigningKey,
        rng: &mut R,
        expires: SystemTime,
    ) -> Self {
        Self::generate_until_unix(identity, rng, to_unix(expires))
    }

    fn generate_until_unix<R: CryptoRng + ?Sized>(
        identity: &SigningKey,
        rng: &mut R,
        expires: u64,
    ) -> Self {
        let static_secret = StaticSecret::random_from_rng(rng);
        let static_public = PublicKey::from(&static_secret);
        let cert = LinkKeyCert::sign(identity, static_public.as_bytes(), expires);
        LinkAuth {
            identity: identity.verifying_key(),
            static_secret,
            static_public,
            cert,
        }
    }

    /// The relay identity this proves.
    pub fn identity(&self) -> &VerifyingKey {
        &self.identity
    }

    /// The x25519 link static public key.
    pub fn static_public(&self) -> &PublicKey {
        &self.static_public
    }

    /// The certificate sent in the handshake.
    pub fn cert(&self) -> &LinkKeyCert {
        &self.cert
    }

    /// The static secret as bytes for the Noise builder, wiped when dropped.
    pub(crate) fn static_secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.static_secret.to_bytes())
    }
}

impl std::fmt::Debug for LinkAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkAuth")
            .field(
                "identity",
                &crate::bytes::hex::encode(self.identity.as_bytes()),
            )
            .field("expires", &self.cert.expires())
            .finish_non_exhaustive()
    }
}
