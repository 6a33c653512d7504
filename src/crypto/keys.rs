//! Long-term relay keys: the ed25519 identity key and the x25519 onion (circuit-handshake)
//! key.
//!
//! Public keys display as 64 lowercase hex characters (parsing accepts either case); hex
//! was chosen over base64 because it is unambiguous in file names, logs and URLs.

use core::fmt;
use core::str::FromStr;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand::CryptoRng;
use x25519_dalek::{PublicKey, SharedSecret, StaticSecret};
use zeroize::Zeroizing;

use crate::bytes::hex::{self, HexError};

/// Length of an encoded ed25519 identity public key.
pub(crate) const IDENTITY_PUBLIC_LEN: usize = 32;
/// Length of an encoded x25519 onion public key.
pub(crate) const ONION_PUBLIC_LEN: usize = 32;
/// Length of an ed25519 signature.
pub(crate) const SIGNATURE_LEN: usize = 64;
/// Length of a secret key (ed25519 seed or x25519 scalar) as stored in a key file.
pub(crate) const SECRET_KEY_LEN: usize = 32;

/// Errors from parsing or using public keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The bytes do not decode to an ed25519 curve point.
    #[error("identity key is not a valid ed25519 public key")]
    InvalidIdentityKey,
    /// The key is a small-order point: anyone could forge signatures for it.
    #[error("identity key is a weak (small-order) ed25519 key")]
    WeakIdentityKey,
    /// A byte slice had the wrong length for a key.
    #[error("expected a {expected}-byte key, got {got} bytes")]
    BadLength {
        /// Required length.
        expected: usize,
        /// Length given.
        got: usize,
    },
    /// A hex string had the wrong length.
    #[error("expected {expected} hex characters, got {got}")]
    BadHexLength {
        /// Required number of characters.
        expected: usize,
        /// Number of bytes given.
        got: usize,
    },
    /// A hex string contained a character that is not a hex digit.
    #[error("invalid hex character in key")]
    BadHex,
    /// A signature did not verify under this identity key.
    #[error("signature does not verify")]
    BadSignature,
}

impl From<HexError> for KeyError {
    fn from(e: HexError) -> Self {
        match e {
            HexError::Length { expected, got } => KeyError::BadHexLength { expected, got },
            HexError::Digit => KeyError::BadHex,
        }
    }
}

/// A relay's long-term ed25519 identity keypair. The secret is zeroized on drop (by
/// `ed25519-dalek`'s `zeroize` feature).
pub struct IdentityKeypair {
    signing: SigningKey,
}

impl IdentityKeypair {
    /// Generates a fresh identity keypair.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self {
            signing: SigningKey::generate(rng),
        }
    }

    /// Rebuilds a keypair from its 32-byte secret seed (as stored in the key file).
    pub fn from_secret_bytes(seed: &[u8; SECRET_KEY_LEN]) -> Self {
        Self {
            signing: SigningKey::from_bytes(seed),
        }
    }

    /// The secret seed, for writing the key file. Wrapped so the copy is wiped.
    pub(crate) fn secret_bytes(&self) -> Zeroizing<[u8; SECRET_KEY_LEN]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// The public half.
    pub fn public(&self) -> IdentityPublic {
        IdentityPublic(self.signing.verifying_key().to_bytes())
    }

    /// The underlying ed25519 key, for the link handshake's link-key certificate.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// Signs `message` with the identity key.
    ///
    /// Callers must prefix `message` with a domain-separation label unique to the purpose
    /// (as [`crate::crypto::OnionKeyCert`] does) so that a signature for one purpose can
    /// never be replayed as another.
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.signing.sign(message).to_bytes()
    }
}

impl fmt::Debug for IdentityKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print secret material, only the public half.
        f.debug_struct("IdentityKeypair")
            .field("public", &self.public())
            .finish_non_exhaustive()
    }
}

/// A relay's ed25519 identity public key (32 bytes). Construction validates the key, so
/// every value of this type is a usable, non-weak ed25519 key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentityPublic([u8; IDENTITY_PUBLIC_LEN]);

impl IdentityPublic {
    /// Parses and validates a 32-byte ed25519 public key.
    pub fn from_bytes(bytes: &[u8; IDENTITY_PUBLIC_LEN]) -> Result<Self, KeyError> {
        let vk = VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::InvalidIdentityKey)?;
        if vk.is_weak() {
            return Err(KeyError::WeakIdentityKey);
        }
        Ok(Self(*bytes))
    }

    /// Like [`Self::from_bytes`] but from a slice, which must be exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        let arr: &[u8; IDENTITY_PUBLIC_LEN] =
            bytes.try_into().map_err(|_| KeyError::BadLength {
                expected: IDENTITY_PUBLIC_LEN,
                got: bytes.len(),
            })?;
        Self::from_bytes(arr)
    }

    /// The encoded key.
    pub fn as_bytes(&self) -> &[u8; IDENTITY_PUBLIC_LEN] {
        &self.0
    }

    /// The key as an `ed25519-dalek` verifying key (valid by construction).
    pub fn to_verifying_key(&self) -> Result<VerifyingKey, KeyError> {
        VerifyingKey::from_bytes(&self.0).map_err(|_| KeyError::InvalidIdentityKey)
    }

    /// Verifies an ed25519 signature over `message` with this key.
    ///
    /// Uses `verify_strict`, which rejects non-canonical signatures, so a valid signature
    /// cannot be mauled into a second valid encoding.
    pub fn verify(&self, message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> Result<(), KeyError> {
        let vk = VerifyingKey::from_bytes(&self.0).map_err(|_| KeyError::InvalidIdentityKey)?;
        let sig = Signature::from_bytes(signature);
        vk.verify_strict(message, &sig)
            .map_err(|_| KeyError::BadSignature)
    }
}

impl fmt::Display for IdentityPublic {
    /// 64 lowercase hex characters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Debug for IdentityPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityPublic({self})")
    }
}

impl FromStr for IdentityPublic {
    type Err = KeyError;

    /// Parses 64 hex characters (either case) and validates the key.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_bytes(&hex::decode_32(s)?)
    }
}

/// A relay identity key as a directory document lists it: 32 bytes that the authorities'
/// signatures (or a microdescriptor digest they signed) vouch for, **not yet validated**
/// as an ed25519 point. Clients keep listed identities in this form so that loading a
/// consensus of 10,000 relays does not decompress 10,000 points; a relay's identity is
/// validated ([`Self::validate`]) only when the client uses that relay (path selection
/// skips a relay whose listed bytes are not a usable key), and its link handshake then
/// authenticates it. Authorities validate every identity when they accept a descriptor,
/// so an honest consensus only lists valid keys. Compares and sorts as its bytes, like
/// [`IdentityPublic`], and compares equal to the [`IdentityPublic`] of the same bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayId([u8; IDENTITY_PUBLIC_LEN]);

impl RelayId {
    /// Wraps 32 listed bytes (no validation).
    pub const fn from_bytes(bytes: [u8; IDENTITY_PUBLIC_LEN]) -> Self {
        Self(bytes)
    }

    /// The listed bytes.
    pub fn as_bytes(&self) -> &[u8; IDENTITY_PUBLIC_LEN] {
        &self.0
    }

    /// Validates the bytes as a usable (decodable, non-weak) ed25519 key: what a client
    /// does before using the relay.
    pub fn validate(&self) -> Result<IdentityPublic, KeyError> {
        IdentityPublic::from_bytes(&self.0)
    }
}

impl From<IdentityPublic> for RelayId {
    fn from(id: IdentityPublic) -> Self {
        Self(id.0)
    }
}

impl From<&IdentityPublic> for RelayId {
    fn from(id: &IdentityPublic) -> Self {
        Self(id.0)
    }
}

impl From<&RelayId> for RelayId {
    fn from(id: &RelayId) -> Self {
        *id
    }
}

impl PartialEq<IdentityPublic> for RelayId {
    fn eq(&self, other: &IdentityPublic) -> bool {
        self.0 == other.0
    }
}

impl PartialEq<RelayId> for IdentityPublic {
    fn eq(&self, other: &RelayId) -> bool {
        self.0 == other.0
    }
}

impl fmt::Display for RelayId {
    /// 64 lowercase hex characters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Debug for RelayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelayId({self})")
    }
}

/// A relay's x25519 onion key, used in the circuit handshake. The secret is zeroized on
/// drop (by `x25519-dalek`'s `zeroize` feature).
pub struct OnionKeypair {
    secret: StaticSecret,
    public: OnionPublic,
}

impl OnionKeypair {
    /// Generates a fresh onion keypair.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self::from_static(StaticSecret::random_from_rng(rng))
    }

    /// Rebuilds a keypair from its 32-byte secret scalar (as stored in the key file).
    pub fn from_secret_bytes(secret: &[u8; SECRET_KEY_LEN]) -> Self {
        Self::from_static(StaticSecret::from(*secret))
    }

    fn from_static(secret: StaticSecret) -> Self {
        let public = OnionPublic(PublicKey::from(&secret).to_bytes());
        Self { secret, public }
    }

    /// The secret scalar, for writing the key file. Wrapped so the copy is wiped.
    pub(crate) fn secret_bytes(&self) -> Zeroizing<[u8; SECRET_KEY_LEN]> {
        Zeroizing::new(self.secret.to_bytes())
    }

    /// The public half.
    pub fn public(&self) -> &OnionPublic {
        &self.public
    }

    /// X25519 with a peer's public key. The caller must check
    /// [`SharedSecret::was_contributory`].
    pub(crate) fn diffie_hellman(&self, peer: &[u8; 32]) -> SharedSecret {
        self.secret.diffie_hellman(&PublicKey::from(*peer))
    }
}

impl fmt::Debug for OnionKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print secret material, only the public half.
        f.debug_struct("OnionKeypair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// An x25519 onion public key (32 bytes). Any 32 bytes are accepted here; low-order points
/// are rejected when used, by checking that the Diffie-Hellman output is contributory.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OnionPublic([u8; ONION_PUBLIC_LEN]);

impl OnionPublic {
    /// Wraps 32 encoded bytes.
    pub fn from_bytes(bytes: [u8; ONION_PUBLIC_LEN]) -> Self {
        Self(bytes)
    }

    /// The encoded key.
    pub fn as_bytes(&self) -> &[u8; ONION_PUBLIC_LEN] {
        &self.0
    }
}

impl fmt::Display for OnionPublic {
    /// 64 lowercase hex characters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Debug for OnionPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OnionPublic({self})")
    }
}

impl FromStr for OnionPublic {
    type Err = KeyError;

    /// Parses 64 hex characters (either case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(hex::decode_32(s)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_sign_verify_and_display() {
        let kp = IdentityKeypair::from_secret_bytes(&[7u8; 32]);
        let public = kp.public();
        let sig = kp.sign(b"hello");
        assert_eq!(public.verify(b"hello", &sig), Ok(()));
        assert_eq!(public.verify(b"hellp", &sig), Err(KeyError::BadSignature));
        let s = public.to_string();
        assert_eq!(s.len(), 64);
        assert_eq!(s.parse::<IdentityPublic>(), Ok(public));
        assert!(!format!("{kp:?}").contains(&hex::encode(&[7u8; 32])));
    }

    #[test]
    fn identity_rejects_weak_and_bad_length() {
        // The identity point (0, 1) encodes as 1 followed by zeros: small order.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        assert_eq!(
            IdentityPublic::from_bytes(&weak),
            Err(KeyError::WeakIdentityKey)
        );
        assert!(matches!(
            IdentityPublic::from_slice(&[0u8; 31]),
            Err(KeyError::BadLength { .. })
        ));
    }

    #[test]
    fn relay_id_validates_only_on_demand() {
        let id = IdentityKeypair::from_secret_bytes(&[7u8; 32]).public();
        let listed = RelayId::from(id);
        assert_eq!(listed, id);
        assert_eq!(id, listed);
        assert_eq!(listed.validate(), Ok(id));
        assert_eq!(listed.to_string(), id.to_string());
        // Any 32 bytes can be listed; only validation refuses a weak or invalid key.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        assert_eq!(
            RelayId::from_bytes(weak).validate(),
            Err(KeyError::WeakIdentityKey)
        );
        let not_a_point = (0u8..=255)
            .map(|b| [b; 32])
            .find(|b| VerifyingKey::from_bytes(b).is_err())
            .unwrap();
        assert_eq!(
            RelayId::from_bytes(not_a_point).validate(),
            Err(KeyError::InvalidIdentityKey)
        );
        assert!(RelayId::from_bytes(weak) < RelayId::from_bytes([2u8; 32]));
    }

    #[test]
    fn onion_round_trip() {
        let kp = OnionKeypair::from_secret_bytes(&[9u8; 32]);
        let again = OnionKeypair::from_secret_bytes(&kp.secret_bytes());
        assert_eq!(kp.public(), again.public());
        assert_eq!(
            kp.public().to_string().parse::<OnionPublic>(),
            Ok(*kp.public())
        );
    }
}
