//! Per-period blinded keys (like Tor's rend-spec-v3 §A.2), so that the relays storing a
//! service's descriptors see a key that changes every time period and cannot be linked to
//! the service's address (or to the previous period's key) without knowing the address.
//!
//! ```text
//! N  = floor((now − offset) / length)                     time-period number
//! h  = SHA-512("allium-blind-v1" | A | u64be(length) | u64be(N)) mod ℓ   (refused if 0)
//! A' = h·A                     anyone who knows the address A can compute it
//! a' = h·a mod ℓ               only the service (who holds a) can
//! prefix' = SHA-512("allium-blind-prefix-v1" | prefix | A')[0..32]
//! ```
//!
//! `a` and `prefix` are the two halves of SHA-512(seed) of the service's ed25519 key, as in
//! RFC 8032 (`a` clamped and reduced mod ℓ). A signature by `(a', prefix')` is an ordinary
//! ed25519 signature under `A'`: `A' = h·A = h·a·B = a'·B`. Verification is standard
//! (`verify_strict`). Since `A` is torsion-free and `h ≠ 0 mod ℓ`, `A'` has prime order ℓ.
//!
//! Unlinkability: `h` is a hash of `A`, so without `A`, the keys of two periods are two
//! independent-looking multiples of the base point.

use core::fmt;

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::hazmat::{raw_sign, ExpandedSecretKey};
use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha512};
use zeroize::{Zeroize, Zeroizing};

use crate::crypto::keys::SIGNATURE_LEN;
use crate::crypto::{IdentityKeypair, IdentityPublic, KeyError};
use crate::onion::address::OnionAddress;

/// Domain-separation prefix of the blinding factor.
pub const BLIND_LABEL: &[u8] = b"allium-blind-v1";
/// Domain-separation prefix of the blinded nonce prefix.
pub const BLIND_PREFIX_LABEL: &[u8] = b"allium-blind-prefix-v1";
/// Default time-period length: one day.
pub const DEFAULT_PERIOD_LENGTH: u64 = 24 * 60 * 60;
/// Default offset of period boundaries from the Unix epoch: 12 hours, so periods turn over
/// at 12:00 UTC (as in Tor, away from midnight when many clocks and jobs change).
pub const DEFAULT_PERIOD_OFFSET: u64 = 12 * 60 * 60;

/// Why a key could not be blinded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BlindingError {
    /// The time-period length is zero.
    #[error("time-period length must be positive")]
    ZeroPeriodLength,
    /// The blinding factor reduced to zero (probability 2⁻²⁵²; refused rather than
    /// producing the identity point).
    #[error("blinding factor is zero")]
    ZeroFactor,
    /// The key is not usable (cannot happen for a validated [`OnionAddress`]).
    #[error("invalid key: {0}")]
    Key(#[from] KeyError),
}

/// How time is cut into periods: `length` seconds, boundaries at `offset + k·length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeriodParams {
    /// Period length in seconds (> 0).
    pub length: u64,
    /// Offset of the boundaries from the Unix epoch, seconds.
    pub offset: u64,
}

impl Default for PeriodParams {
    fn default() -> Self {
        Self {
            length: DEFAULT_PERIOD_LENGTH,
            offset: DEFAULT_PERIOD_OFFSET,
        }
    }
}

impl PeriodParams {
    /// The period containing `now` (Unix seconds). Times before the first boundary belong
    /// to period 0.
    pub fn period_at(&self, now: u64) -> Result<TimePeriod, BlindingError> {
        if self.length == 0 {
            return Err(BlindingError::ZeroPeriodLength);
        }
        Ok(TimePeriod {
            length: self.length,
            number: now.saturating_sub(self.offset) / self.length,
        })
    }
}

/// One time period: its length (part of every derivation, so networks with different
/// lengths never share keys) and its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimePeriod {
    /// Length in seconds.
    pub length: u64,
    /// Period number `N`.
    pub number: u64,
}

/// The blinding factor `h` for `key` in `period`.
fn blinding_factor(key: &IdentityPublic, period: TimePeriod) -> Result<Scalar, BlindingError> {
    if period.length == 0 {
        return Err(BlindingError::ZeroPeriodLength);
    }
    let digest = Sha512::new()
        .chain_update(BLIND_LABEL)
        .chain_update(key.as_bytes())
        .chain_update(period.length.to_be_bytes())
        .chain_update(period.number.to_be_bytes())
        .finalize();
    let mut wide = [0u8; 64];
    wide.copy_from_slice(&digest);
    let h = Scalar::from_bytes_mod_order_wide(&wide);
    if h == Scalar::ZERO {
        return Err(BlindingError::ZeroFactor);
    }
    Ok(h)
}

/// A blinded public key `A'`: a valid ed25519 key of prime order. Relays index and verify
/// descriptors by it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlindedPublic(IdentityPublic);

impl BlindedPublic {
    /// Derives `A' = h·A` for the service at `address` in `period`.
    pub fn derive(address: &OnionAddress, period: TimePeriod) -> Result<Self, BlindingError> {
        let key = address.identity();
        let h = blinding_factor(key, period)?;
        let point = CompressedEdwardsY(*key.as_bytes())
            .decompress()
            .ok_or(BlindingError::Key(KeyError::InvalidIdentityKey))?;
        Self::from_point(&(point * h))
    }

    fn from_point(point: &EdwardsPoint) -> Result<Self, BlindingError> {
        Ok(Self(IdentityPublic::from_bytes(
            &point.compress().to_bytes(),
        )?))
    }

    /// Wraps 32 received bytes, validating the point (valid, not of small order).
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        Ok(Self(IdentityPublic::from_bytes(bytes)?))
    }

    /// The encoded key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// The key as an ed25519 public key.
    pub fn as_identity(&self) -> &IdentityPublic {
        &self.0
    }

    /// Verifies a signature (strictly, §4.1 of the protocol).
    pub fn verify(&self, message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> Result<(), KeyError> {
        self.0.verify(message, signature)
    }
}

impl fmt::Display for BlindedPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for BlindedPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlindedPublic({self})")
    }
}

/// The service's blinded signing key for one period. The secret scalar and prefix are
/// zeroized on drop (ed25519-dalek's `ExpandedSecretKey`).
///
/// Note: `a = a'·h⁻¹`, so this key is as sensitive as the identity key itself; it is not
/// a delegation mechanism.
pub struct BlindedKeypair {
    secret: ExpandedSecretKey,
    public: BlindedPublic,
    verifying: VerifyingKey,
    period: TimePeriod,
}

impl BlindedKeypair {
    /// Blinds the service identity `identity` for `period`.
    pub fn derive(identity: &IdentityKeypair, period: TimePeriod) -> Result<Self, BlindingError> {
        let h = blinding_factor(&identity.public(), period)?;
        let seed = identity.secret_bytes();
        let mut expanded = Zeroizing::new([0u8; 64]);
        let mut digest = Sha512::digest(seed.as_slice());
        expanded.copy_from_slice(&digest);
        digest.as_mut_slice().zeroize();
        let unblinded = ExpandedSecretKey::from_bytes(&expanded);
        let scalar = h * unblinded.scalar;
        let point = EdwardsPoint::mul_base(&scalar);
        let public = BlindedPublic::from_point(&point)?;
        let mut prefix_digest = Sha512::new()
            .chain_update(BLIND_PREFIX_LABEL)
            .chain_update(unblinded.hash_prefix)
            .chain_update(public.as_bytes())
            .finalize();
        let mut hash_prefix = [0u8; 32];
        for (dst, src) in hash_prefix.iter_mut().zip(prefix_digest.iter()) {
            *dst = *src;
        }
        prefix_digest.as_mut_slice().zeroize();
        let verifying = public.0.to_verifying_key()?;
        Ok(Self {
            secret: ExpandedSecretKey {
                scalar,
                hash_prefix,
            },
            public,
            verifying,
            period,
        })
    }

    /// The blinded public key `A'`.
    pub fn public(&self) -> &BlindedPublic {
        &self.public
    }

    /// The period this key is for.
    pub fn period(&self) -> TimePeriod {
        self.period
    }

    /// Signs `message` (which the caller prefixes with a unique domain-separation label).
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        raw_sign::<Sha512>(&self.secret, message, &self.verifying).to_bytes()
    }
}

impl fmt::Debug for BlindedKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlindedKeypair")
            .field("public", &self.public)
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}
