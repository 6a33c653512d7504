//! Onion-key certificates: a relay's identity key vouches for its current onion key until
//! an expiry time, so the onion key can rotate while the identity stays fixed.
//!
//! Encoding (136 bytes): `identity(32) | onion(32) | expires_unix_secs(u64 BE) | sig(64)`,
//! where `sig` is an ed25519 signature by `identity` over
//! `"allium-onion-key-cert-v1" | identity | onion | expires`.

use crate::bytes::{self, Readable, Reader, Writeable, Writer};
use crate::crypto::keys::{
    IdentityKeypair, IdentityPublic, KeyError, OnionPublic, RelayId, IDENTITY_PUBLIC_LEN,
    ONION_PUBLIC_LEN, SIGNATURE_LEN,
};

/// Domain-separation prefix of the signed message.
pub(crate) const ONION_CERT_DOMAIN: &[u8] = b"allium-onion-key-cert-v1";
/// Length of an encoded certificate.
pub(crate) const ONION_CERT_LEN: usize = IDENTITY_PUBLIC_LEN + ONION_PUBLIC_LEN + 8 + SIGNATURE_LEN;
/// Default validity of a certificate. A relay should rotate its onion key at the latest
/// halfway through this, keeping the previous key (see [`crate::crypto::RelayOnionKeys`])
/// until the previous certificate expires, so clients holding an older certificate still
/// succeed.
pub(crate) const DEFAULT_ONION_KEY_LIFETIME_SECS: u64 = 28 * 24 * 60 * 60;

/// Length of the signed message.
const SIGNED_LEN: usize = ONION_CERT_DOMAIN.len() + IDENTITY_PUBLIC_LEN + ONION_PUBLIC_LEN + 8;

/// Why a certificate was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// The encoding is not exactly [`ONION_CERT_LEN`] bytes.
    #[error("onion-key certificate must be {expected} bytes, got {got}")]
    BadLength {
        /// Required length.
        expected: usize,
        /// Length given.
        got: usize,
    },
    /// The identity field is not a valid, non-weak ed25519 key.
    #[error("onion-key certificate has an invalid identity key: {0}")]
    InvalidIdentityKey(KeyError),
    /// A certificate read as part of a larger message ran past its end.
    #[error("malformed onion-key certificate: {0}")]
    Malformed(#[from] bytes::Error),
    /// The signature does not verify under the certificate's identity key.
    #[error("onion-key certificate signature does not verify")]
    BadSignature,
    /// The certificate is validly signed but its expiry time has passed.
    #[error("onion-key certificate expired at {expires_unix} (now {now_unix})")]
    Expired {
        /// Expiry time in the certificate (Unix seconds).
        expires_unix: u64,
        /// The time it was checked against.
        now_unix: u64,
    },
}

/// An identity-signed statement "this onion key belongs to me until `expires`". Not yet
/// trusted: call [`OnionKeyCert::verify`] to get a [`VerifiedOnionKey`]. The identity it
/// names is kept as parsed ([`RelayId`]): verification validates it as an ed25519 key, so a
/// client holding thousands of certificates (one per microdescriptor) pays that only for
/// the relays it uses.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct OnionKeyCert {
    identity: RelayId,
    onion: OnionPublic,
    expires_unix: u64,
    signature: [u8; SIGNATURE_LEN],
}

/// The exact bytes the identity key signs.
fn signed_message(
    identity: &[u8; IDENTITY_PUBLIC_LEN],
    onion: &OnionPublic,
    expires_unix: u64,
) -> Vec<u8> {
    let mut msg = Vec::with_capacity(SIGNED_LEN);
    msg.extend_from_slice(ONION_CERT_DOMAIN);
    msg.extend_from_slice(identity);
    msg.extend_from_slice(onion.as_bytes());
    msg.extend_from_slice(&expires_unix.to_be_bytes());
    msg
}

impl OnionKeyCert {
    /// Certifies `onion` as belonging to `identity` until `expires_unix` (exclusive).
    pub fn sign(identity: &IdentityKeypair, onion: &OnionPublic, expires_unix: u64) -> Self {
        let identity_pub = identity.public();
        let signature = identity.sign(&signed_message(
            identity_pub.as_bytes(),
            onion,
            expires_unix,
        ));
        Self {
            identity: identity_pub.into(),
            onion: *onion,
            expires_unix,
            signature,
        }
    }

    /// Parses the 136-byte encoding. Only the length is checked here; the identity key
    /// (a valid, non-weak ed25519 point) and the signature are checked by [`Self::verify`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CertError> {
        if bytes.len() != ONION_CERT_LEN {
            return Err(CertError::BadLength {
                expected: ONION_CERT_LEN,
                got: bytes.len(),
            });
        }
        Self::parse(bytes)
    }

    /// The 136-byte encoding.
    pub fn to_bytes(&self) -> Result<[u8; ONION_CERT_LEN], bytes::Error> {
        let mut out = [0u8; ONION_CERT_LEN];
        self.write_onto(&mut Writer::new(&mut out))?;
        Ok(out)
    }

    /// Checks the identity key (a valid, non-weak ed25519 key), the signature, then that
    /// `now_unix < expires`. The signature is checked before the time so that `Expired` is
    /// only ever reported for a genuine (but stale) certificate.
    pub fn verify(&self, now_unix: u64) -> Result<VerifiedOnionKey, CertError> {
        let identity = self
            .identity
            .validate()
            .map_err(CertError::InvalidIdentityKey)?;
        let msg = signed_message(identity.as_bytes(), &self.onion, self.expires_unix);
        identity
            .verify(&msg, &self.signature)
            .map_err(|_| CertError::BadSignature)?;
        if now_unix >= self.expires_unix {
            return Err(CertError::Expired {
                expires_unix: self.expires_unix,
                now_unix,
            });
        }
        Ok(VerifiedOnionKey {
            identity,
            onion: self.onion,
            expires_unix: self.expires_unix,
        })
    }

    /// The identity key that (claims to have) signed this certificate, not yet validated.
    pub fn identity(&self) -> &RelayId {
        &self.identity
    }

    /// The certified onion key (not yet verified).
    pub fn onion_key(&self) -> &OnionPublic {
        &self.onion
    }

    /// Expiry time (Unix seconds, exclusive).
    pub fn expires_unix(&self) -> u64 {
        self.expires_unix
    }
}

impl Readable for OnionKeyCert {
    type Error = CertError;
    fn take_from(r: &mut Reader<'_>) -> Result<Self, CertError> {
        let identity = r.array::<IDENTITY_PUBLIC_LEN>("identity")?;
        let onion = r.array::<ONION_PUBLIC_LEN>("onion key")?;
        Ok(Self {
            identity: RelayId::from_bytes(identity),
            onion: OnionPublic::from_bytes(onion),
            expires_unix: r.u64("expiry")?,
            signature: r.array("signature")?,
        })
    }
}

impl Writeable for OnionKeyCert {
    type Error = bytes::Error;
    fn write_onto(&self, w: &mut Writer<'_>) -> Result<(), bytes::Error> {
        w.put(self.identity.as_bytes(), "identity")?;
        w.put(self.onion.as_bytes(), "onion key")?;
        w.u64(self.expires_unix, "expiry")?;
        w.put(&self.signature, "signature")
    }
}

/// An onion key whose certificate verified at some time before its expiry. Only
/// [`OnionKeyCert::verify`] creates these, so the client handshake (which requires one)
/// cannot be run against an unverified or expired key.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct VerifiedOnionKey {
    identity: IdentityPublic,
    onion: OnionPublic,
    expires_unix: u64,
}

impl VerifiedOnionKey {
    /// The identity that certified the key.
    pub fn identity(&self) -> &IdentityPublic {
        &self.identity
    }

    /// The onion key.
    pub fn onion_key(&self) -> &OnionPublic {
        &self.onion
    }

    /// When the certificate expires (Unix seconds, exclusive). Callers caching a verified
    /// key must re-check this before use.
    pub fn expires_unix(&self) -> u64 {
        self.expires_unix
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::OnionKeypair;

    fn fixture() -> (IdentityKeypair, OnionKeypair) {
        (
            IdentityKeypair::from_secret_bytes(&[1u8; 32]),
            OnionKeypair::from_secret_bytes(&[2u8; 32]),
        )
    }

    #[test]
    fn sign_encode_parse_verify() {
        let (id, onion) = fixture();
        let cert = OnionKeyCert::sign(&id, onion.public(), 1000);
        let bytes = cert.to_bytes().expect("encodes");
        assert_eq!(bytes.len(), 136);
        let parsed = OnionKeyCert::from_bytes(&bytes).expect("parses");
        assert_eq!(parsed, cert);
        let v = parsed.verify(999).expect("valid");
        assert_eq!(v.identity(), &id.public());
        assert_eq!(v.onion_key(), onion.public());
        assert_eq!(v.expires_unix(), 1000);
    }

    #[test]
    fn expired() {
        let (id, onion) = fixture();
        let cert = OnionKeyCert::sign(&id, onion.public(), 1000);
        assert_eq!(
            cert.verify(1000),
            Err(CertError::Expired {
                expires_unix: 1000,
                now_unix: 1000
            })
        );
    }

    #[test]
    fn every_bit_flip_rejected() {
        let (id, onion) = fixture();
        let bytes = OnionKeyCert::sign(&id, onion.public(), 1000)
            .to_bytes()
            .expect("encodes");
        for i in 0..bytes.len() * 8 {
            let mut b = bytes;
            b[i / 8] ^= 1 << (i % 8);
            let ok = OnionKeyCert::from_bytes(&b).and_then(|c| c.verify(0));
            assert!(ok.is_err(), "bit {i} flip accepted");
        }
    }

    #[test]
    fn an_invalid_identity_parses_but_never_verifies() {
        let (id, onion) = fixture();
        let mut bytes = OnionKeyCert::sign(&id, onion.public(), 1000)
            .to_bytes()
            .expect("encodes");
        // The identity point (0, 1): small order, so anyone could sign for it.
        bytes[..32].copy_from_slice(&[0u8; 32]);
        bytes[0] = 1;
        let cert = OnionKeyCert::from_bytes(&bytes).expect("parses");
        assert_eq!(
            cert.verify(0),
            Err(CertError::InvalidIdentityKey(KeyError::WeakIdentityKey))
        );
    }

    #[test]
    fn exact_length() {
        let (id, onion) = fixture();
        let bytes = OnionKeyCert::sign(&id, onion.public(), 1000)
            .to_bytes()
            .expect("encodes");
        assert!(matches!(
            OnionKeyCert::from_bytes(&bytes[..135]),
            Err(CertError::BadLength { .. })
        ));
        let mut long = bytes.to_vec();
        long.push(0);
        assert!(matches!(
            OnionKeyCert::from_bytes(&long),
            Err(CertError::BadLength { .. })
        ));
        assert!(OnionKeyCert::from_bytes(&[]).is_err());
    }
}

#[cfg(test)]
mod vectors {
    use super::*;
    use crate::bytes::hex;
    use crate::crypto::keys::OnionKeypair;

    /// Identity seed 0x11*32, onion secret 0x22*32, expires 1_700_001_000. Cross-checked
    /// against an independent implementation written from docs/protocol.md §4.
    const VEC_CERT: &str = concat!(
        "d04ab232742bb4ab3a1368bd4615e4e6d0224ab71a016baf8520a332c9778737",
        "0faa684ed28867b97f4a6a2dee5df8ce974e76b7018e3f22a1c4cf2678570f20",
        "000000006553f4e8",
        "c06c85ac7fe8574133eca4e24c04e2aaf78122aa00afe16aecc96da7023e9185",
        "3a3153d4f1958c0fe0ae919756e95fc5f712aeb5c41b813a7dd728fd1fb48400",
    );

    #[test]
    fn fixed_cert_vector() {
        let id = IdentityKeypair::from_secret_bytes(&[0x11; 32]);
        let onion = OnionKeypair::from_secret_bytes(&[0x22; 32]);
        let cert = OnionKeyCert::sign(&id, onion.public(), 1_700_001_000);
        assert_eq!(hex::encode(&cert.to_bytes().expect("encodes")), VEC_CERT);
        assert!(cert.verify(1_700_000_999).is_ok());
    }
}
