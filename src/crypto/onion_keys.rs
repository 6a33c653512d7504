//! The relay's set of onion keys it will accept in handshakes: the current key and, during
//! a rotation grace period, the previous one.
//!
//! Why two: clients learn the onion key from a certificate they fetched earlier. After the
//! relay rotates, clients holding the old certificate must still be able to extend to it
//! until that certificate expires.

use std::sync::Arc;

use crate::crypto::keys::{IdentityPublic, OnionKeypair, OnionPublic};

/// The identity public key plus the current and (optionally) previous onion keypairs that
/// [`crate::crypto::relay_handshake`] accepts.
///
/// Cheap to clone (the keypairs are shared, never copied): a running relay rotates by
/// building the next set from a clone while handshakes in progress keep their snapshot.
#[derive(Debug, Clone)]
pub struct RelayOnionKeys {
    identity: IdentityPublic,
    current: Arc<OnionKeypair>,
    previous: Option<Arc<OnionKeypair>>,
}

impl RelayOnionKeys {
    /// A key set with a current key and an optional previous key.
    pub fn new(
        identity: IdentityPublic,
        current: OnionKeypair,
        previous: Option<OnionKeypair>,
    ) -> Self {
        Self {
            identity,
            current: Arc::new(current),
            previous: previous.map(Arc::new),
        }
    }

    /// The relay's identity public key (the `ID` handshakes must name).
    pub fn identity(&self) -> &IdentityPublic {
        &self.identity
    }

    /// The key to certify and advertise now.
    pub fn current(&self) -> &OnionKeypair {
        &self.current
    }

    /// The key still accepted from clients with an older certificate, if any.
    pub fn previous(&self) -> Option<&OnionKeypair> {
        self.previous.as_deref()
    }

    /// Makes `next` current and the current key previous. The old previous key is dropped
    /// (and thereby zeroized once no snapshot holds it): at most two keys are ever accepted.
    pub fn rotate(&mut self, next: OnionKeypair) {
        let old_current = core::mem::replace(&mut self.current, Arc::new(next));
        self.previous = Some(old_current);
    }

    /// Stops accepting the previous key (call once its certificate has expired), so a
    /// later compromise of the process cannot expose it.
    pub fn drop_previous(&mut self) {
        self.previous = None;
    }

    /// The keypair whose public key is `onion`, if it is the current or previous key.
    pub fn find(&self, onion: &OnionPublic) -> Option<&OnionKeypair> {
        // Public keys are not secret, so an ordinary comparison is fine here.
        if self.current.public() == onion {
            return Some(&self.current);
        }
        self.previous.as_deref().filter(|p| p.public() == onion)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::IdentityKeypair;

    #[test]
    fn rotation_keeps_one_previous() {
        let id = IdentityKeypair::from_secret_bytes(&[1u8; 32]).public();
        let k1 = OnionKeypair::from_secret_bytes(&[1u8; 32]);
        let k2 = OnionKeypair::from_secret_bytes(&[2u8; 32]);
        let k3 = OnionKeypair::from_secret_bytes(&[3u8; 32]);
        let (p1, p2, p3) = (*k1.public(), *k2.public(), *k3.public());
        let mut keys = RelayOnionKeys::new(id, k1, None);
        assert!(keys.find(&p1).is_some());
        assert!(keys.find(&p2).is_none());
        keys.rotate(k2);
        assert!(keys.find(&p1).is_some());
        assert!(keys.find(&p2).is_some());
        keys.rotate(k3);
        assert!(keys.find(&p1).is_none());
        assert!(keys.find(&p2).is_some());
        assert!(keys.find(&p3).is_some());
        keys.drop_previous();
        assert!(keys.find(&p2).is_none());
        assert_eq!(keys.current().public(), &p3);
    }
}
