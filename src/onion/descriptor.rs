//! Onion-service descriptors: where a service can be introduced to, signed with the
//! period's blinded key and encrypted so that only those who know the address can read it.
//!
//! Two layers:
//!
//! * the **outer** layer ([`OnionDescriptorBody`]), cleartext and signed by `A'` over
//!   `"allium-onion-descriptor-v1" | body`: version, `A'`, the time period, a revision
//!   counter, creation time, lifetime (≤ 3 h), a salt and the encrypted inner layer.
//!   Directory relays (who see only `A'`) verify the signature, the times and the revision;
//! * the **inner** layer ([`InnerDescriptor`]): 1 to 10 introduction points and optional
//!   proof-of-work parameters, encrypted with ChaCha20-Poly1305 under
//!   `HKDF-SHA256(salt, ikm = A, info = "allium-onion-desc-v1" | A' | u64be(length) |
//!   u64be(N))`. `A` (the unblinded key) is in the address and nowhere else, so directory
//!   relays cannot read the introduction points. A service that authorises clients
//!   encrypts it once more under a per-descriptor cookie only listed clients recover
//!   ([`crate::onion::client_auth`]; the layers are in `descriptor_layers.rs`).
//!
//! Receivers parse into [`UncheckedOnionDescriptor`] and get at the contents only through
//! `verify_*`, as with relay descriptors.

use std::net::SocketAddr;

use rand::CryptoRng;
use serde::de::{self, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::crypto::keys::SIGNATURE_LEN;
use crate::crypto::{IdentityKeypair, IdentityPublic, OnionKeyCert, OnionPublic};
use crate::dir::descriptor::check_addrs;
use crate::dir::wire;
use crate::onion::address::OnionAddress;
use crate::onion::blinding::{
    BlindedKeypair, BlindedPublic, BlindingError, PeriodParams, TimePeriod,
};
use crate::onion::client_auth::{ClientAuthPublic, ClientAuthSecret};
use crate::onion::descriptor_layers::{self as layers, LayerError, AEAD_TAG_LEN};
pub use crate::onion::descriptor_layers::{
    FirstLayer, INNER_KEY_LABEL, INNER_PAD_UNIT, MAX_INNER_LEN,
};
use crate::onion::pow::MAX_SUGGESTED_EFFORT;

/// The only descriptor version accepted. 2: the client-authorisation section is always
/// present (version 1's was optional), so a client of one form refuses the other's
/// descriptors as an unknown version instead of misreading them.
pub const ONION_DESCRIPTOR_VERSION: u8 = 2;
/// Domain-separation label of the blinded key's signature.
pub const ONION_DESCRIPTOR_LABEL: &[u8] = b"allium-onion-descriptor-v1";
/// Longest lifetime a descriptor may claim: 3 hours.
pub const MAX_DESCRIPTOR_LIFETIME: u32 = 3 * 60 * 60;
/// Largest encoded signed descriptor accepted or produced.
pub const MAX_ONION_DESCRIPTOR_LEN: usize = 8 * 1024;
/// Most introduction points in one descriptor.
pub const MAX_INTRO_POINTS: usize = 10;
/// Most link addresses per introduction point.
pub const MAX_INTRO_LINK_ADDRS: usize = 4;
/// Length of the salt in the outer layer.
pub const SALT_LEN: usize = 16;

/// Why a descriptor was refused or could not be built.
#[derive(Debug, thiserror::Error)]
pub enum OnionDescriptorError {
    /// Not a canonical encoding (or over a size bound).
    #[error("malformed onion descriptor: {0}")]
    Codec(#[from] CodecError),
    /// The encoded descriptor would exceed [`MAX_ONION_DESCRIPTOR_LEN`].
    #[error("onion descriptor is {0} bytes; at most {MAX_ONION_DESCRIPTOR_LEN} are allowed")]
    TooLarge(usize),
    /// A version other than [`ONION_DESCRIPTOR_VERSION`].
    #[error("unsupported onion descriptor version {0}")]
    UnsupportedVersion(u8),
    /// Lifetime zero or above [`MAX_DESCRIPTOR_LIFETIME`].
    #[error("onion descriptor lifetime {0}s is not within 1..={MAX_DESCRIPTOR_LIFETIME}")]
    BadLifetime(u32),
    /// The signature does not verify under the descriptor's blinded key.
    #[error("onion descriptor signature does not verify under its blinded key")]
    BadSignature,
    /// `now` is past `created + lifetime` (plus the allowed skew).
    #[error("onion descriptor expired at {expires} (now {now})")]
    Expired {
        /// `created + lifetime`.
        expires: u64,
        /// Time checked against.
        now: u64,
    },
    /// Created further in the future than the allowed skew.
    #[error("onion descriptor created at {created}, after now ({now}) plus the skew")]
    FutureDated {
        /// Claimed creation time.
        created: u64,
        /// Time checked against.
        now: u64,
    },
    /// The revision is older than one already seen.
    #[error("onion descriptor revision {revision} is older than the required {min}")]
    RevisionRollback {
        /// Revision in the descriptor.
        revision: u64,
        /// Smallest acceptable revision.
        min: u64,
    },
    /// The descriptor's time period is not the caller's (length) or not within one period
    /// of the current one.
    #[error("onion descriptor is for period {number} (length {length}s), not a current one")]
    WrongPeriod {
        /// Period number in the descriptor.
        number: u64,
        /// Period length in the descriptor.
        length: u64,
    },
    /// The blinded key is not the one derived from the address for the period: the
    /// descriptor is for another service (or forged).
    #[error("onion descriptor is not for this address")]
    WrongService,
    /// The inner layer did not decrypt (wrong address, or modified).
    #[error("onion descriptor inner layer does not decrypt")]
    Decrypt,
    /// The inner layer decrypted but breaks a rule.
    #[error("onion descriptor inner layer is invalid: {0}")]
    BadInner(&'static str),
    /// The service authorises clients and the caller has no key for it.
    #[error("this onion service requires client authorisation; no key configured for it")]
    AuthRequired,
    /// The service authorises clients, and not the caller's key.
    #[error("client authorisation key not accepted by this service")]
    AuthNotAccepted,
    /// The service's list of authorised clients cannot be used (count, duplicate, key).
    #[error("client authorisation: {0}")]
    ClientAuth(&'static str),
    /// Key blinding failed.
    #[error("key blinding: {0}")]
    Blinding(#[from] BlindingError),
}

impl From<LayerError> for OnionDescriptorError {
    fn from(e: LayerError) -> Self {
        match e {
            LayerError::Codec(e) => Self::Codec(e),
            LayerError::TooLarge(n) => Self::TooLarge(n),
            LayerError::Decrypt => Self::Decrypt,
            LayerError::Bad(why) => Self::BadInner(why),
            LayerError::AuthRequired => Self::AuthRequired,
            LayerError::AuthNotAccepted => Self::AuthNotAccepted,
            LayerError::ClientAuth(why) => Self::ClientAuth(why),
        }
    }
}

/// Parses a decrypted first layer (padded plaintext), as a client does after decryption;
/// public so the fuzz target reaches the client-authorisation fields.
pub fn parse_first_layer(padded: &[u8]) -> Result<FirstLayer, OnionDescriptorError> {
    Ok(layers::decode_first_layer(padded)?)
}

/// The padded plaintext of a first layer (inverse of [`parse_first_layer`]; for seeds).
pub fn encode_first_layer(first: &FirstLayer) -> Result<Vec<u8>, OnionDescriptorError> {
    Ok(layers::encode_first_layer(first)?.to_vec())
}

/// serde adapter: a blinded key as 32 bytes, validated on decode.
mod blinded_wire {
    use super::*;

    pub(super) fn serialize<S: Serializer>(
        key: &BlindedPublic,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        wire::fixed::serialize(key.as_bytes(), serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BlindedPublic, D::Error> {
        let bytes: [u8; 32] = wire::fixed::deserialize(deserializer)?;
        BlindedPublic::from_bytes(&bytes).map_err(de::Error::custom)
    }
}

/// serde adapter: an x25519 public key as 32 bytes.
mod onion_wire {
    use super::*;

    pub(super) fn serialize<S: Serializer>(
        key: &OnionPublic,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        wire::fixed::serialize(key.as_bytes(), serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<OnionPublic, D::Error> {
        Ok(OnionPublic::from_bytes(wire::fixed::deserialize(
            deserializer,
        )?))
    }
}

/// The signed outer layer. Wire order is the field order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnionDescriptorBody {
    /// [`ONION_DESCRIPTOR_VERSION`].
    pub version: u8,
    /// The period's blinded key `A'`; it signs the descriptor.
    #[serde(with = "blinded_wire")]
    pub blinded_key: BlindedPublic,
    /// Time-period length, seconds.
    pub period_length: u64,
    /// Time-period number `N`.
    pub period_number: u64,
    /// Revision counter; a newer descriptor for the same `A'` has a larger one.
    pub revision: u64,
    /// Creation time, Unix seconds.
    pub created: u64,
    /// Seconds after `created` the descriptor stays valid, 1 to [`MAX_DESCRIPTOR_LIFETIME`].
    pub lifetime: u32,
    /// Random salt of the inner layer's key.
    #[serde(with = "wire::fixed")]
    pub salt: [u8; SALT_LEN],
    /// The encrypted inner layer (ciphertext and 16-byte tag).
    #[serde(deserialize_with = "wire::bounded_vec::<_, u8, { MAX_INNER_LEN + AEAD_TAG_LEN }>")]
    pub encrypted: Vec<u8>,
}

impl OnionDescriptorBody {
    /// The time period the descriptor is for.
    pub fn period(&self) -> TimePeriod {
        TimePeriod {
            length: self.period_length,
            number: self.period_number,
        }
    }

    /// `created + lifetime`.
    pub fn expires(&self) -> u64 {
        self.created.saturating_add(u64::from(self.lifetime))
    }

    fn check_fields(&self) -> Result<(), OnionDescriptorError> {
        if self.version != ONION_DESCRIPTOR_VERSION {
            return Err(OnionDescriptorError::UnsupportedVersion(self.version));
        }
        if self.lifetime == 0 || self.lifetime > MAX_DESCRIPTOR_LIFETIME {
            return Err(OnionDescriptorError::BadLifetime(self.lifetime));
        }
        if self.period_length == 0 {
            return Err(OnionDescriptorError::WrongPeriod {
                number: self.period_number,
                length: 0,
            });
        }
        if self.encrypted.len() < AEAD_TAG_LEN {
            return Err(OnionDescriptorError::Decrypt);
        }
        Ok(())
    }
}

/// One introduction point, as the client needs it: how to reach the relay, and the
/// service's keys at that point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntroPointInfo {
    /// The introduction point relay's identity.
    #[serde(with = "wire::identity")]
    pub relay_identity: IdentityPublic,
    /// Its link addresses, 1 to [`MAX_INTRO_LINK_ADDRS`].
    #[serde(deserialize_with = "wire::bounded_vec::<_, SocketAddr, MAX_INTRO_LINK_ADDRS>")]
    pub link_addrs: Vec<SocketAddr>,
    /// Its onion-key certificate (must name `relay_identity`; verified before use).
    #[serde(with = "wire::cert")]
    pub onion_cert: OnionKeyCert,
    /// The service's per-introduction-point authentication key (ESTABLISH_INTRO).
    #[serde(with = "wire::identity")]
    pub auth_key: IdentityPublic,
    /// The service's per-introduction-point x25519 key for INTRODUCE (`B`).
    #[serde(with = "onion_wire")]
    pub enc_key: OnionPublic,
}

/// Proof-of-work parameters of a service that orders its introductions by effort
/// (docs/protocol.md §8.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowParams {
    /// The effort the service suggests, 0 to [`MAX_SUGGESTED_EFFORT`]: under load it
    /// serves introductions of this effort or more first; 0 while it is not loaded.
    pub suggested_effort: u32,
    /// The puzzle seed.
    #[serde(with = "wire::fixed")]
    pub seed: [u8; 32],
    /// When the seed stops being accepted, Unix seconds.
    pub expires: u64,
}

/// The encrypted inner layer. Wire order is the field order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InnerDescriptor {
    /// 1 to [`MAX_INTRO_POINTS`] introduction points, distinct auth keys.
    #[serde(deserialize_with = "wire::bounded_vec::<_, IntroPointInfo, MAX_INTRO_POINTS>")]
    pub intro_points: Vec<IntroPointInfo>,
    /// Present when the service requires a proof of work with INTRODUCE.
    pub pow: Option<PowParams>,
}

impl InnerDescriptor {
    /// Checks every bound that needs no clock.
    pub fn check(&self) -> Result<(), OnionDescriptorError> {
        let bad = OnionDescriptorError::BadInner;
        if self.intro_points.is_empty() || self.intro_points.len() > MAX_INTRO_POINTS {
            return Err(bad("needs 1 to 10 introduction points"));
        }
        for (i, ip) in self.intro_points.iter().enumerate() {
            if ip.link_addrs.len() > MAX_INTRO_LINK_ADDRS {
                return Err(bad("too many link addresses"));
            }
            check_addrs(&ip.link_addrs).map_err(|_| bad("invalid link address"))?;
            if ip.onion_cert.identity() != &ip.relay_identity {
                return Err(bad("onion-key certificate names another relay"));
            }
            let mut earlier = self.intro_points.iter().take(i);
            if earlier.any(|e| e.auth_key == ip.auth_key) {
                return Err(bad("two introduction points share an auth key"));
            }
        }
        if let Some(pow) = &self.pow {
            if pow.suggested_effort > MAX_SUGGESTED_EFFORT {
                return Err(bad("suggested proof-of-work effort out of range"));
            }
        }
        Ok(())
    }
}

/// Everything a service chooses for one descriptor besides its keys.
#[derive(Debug, Clone)]
pub struct DescriptorParams {
    /// Revision counter (strictly larger than the previous descriptor's for this `A'`).
    pub revision: u64,
    /// Creation time, Unix seconds.
    pub created: u64,
    /// Lifetime in seconds, 1 to [`MAX_DESCRIPTOR_LIFETIME`].
    pub lifetime: u32,
}

/// A descriptor as published: the canonical outer body and the blinded key's signature.
///
/// Wire form: `body_len u64 | body | signature[64]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedOnionDescriptor {
    #[serde(deserialize_with = "wire::bounded_vec::<_, u8, MAX_ONION_DESCRIPTOR_LEN>")]
    body: Vec<u8>,
    #[serde(with = "wire::fixed")]
    signature: [u8; SIGNATURE_LEN],
}

impl SignedOnionDescriptor {
    /// Builds, encrypts and signs a descriptor. `identity` is the service key `A` and
    /// `blinded` its blinded key for the period the descriptor is for.
    pub fn build<R: CryptoRng + ?Sized>(
        rng: &mut R,
        identity: &IdentityKeypair,
        blinded: &BlindedKeypair,
        inner: &InnerDescriptor,
        params: &DescriptorParams,
    ) -> Result<Self, OnionDescriptorError> {
        Self::build_for_clients(rng, identity, blinded, inner, params, &[])
    }

    /// [`Self::build`] with client authorisation when `clients` is not empty: only those
    /// clients can read the inner layer (protocol.md §8.4.1).
    pub fn build_for_clients<R: CryptoRng + ?Sized>(
        rng: &mut R,
        identity: &IdentityKeypair,
        blinded: &BlindedKeypair,
        inner: &InnerDescriptor,
        params: &DescriptorParams,
        clients: &[ClientAuthPublic],
    ) -> Result<Self, OnionDescriptorError> {
        inner.check()?;
        let period = blinded.period();
        let mut salt = [0u8; SALT_LEN];
        rng.fill_bytes(&mut salt);
        let identity = identity.public();
        let ctx = layers::context(&identity, blinded.public(), period, &salt);
        let encoded = zeroize::Zeroizing::new(codec::encode(inner)?);
        let encrypted = layers::seal_layers(rng, &ctx, params.revision, &encoded, clients)?;
        let body = OnionDescriptorBody {
            version: ONION_DESCRIPTOR_VERSION,
            blinded_key: *blinded.public(),
            period_length: period.length,
            period_number: period.number,
            revision: params.revision,
            created: params.created,
            lifetime: params.lifetime,
            salt,
            encrypted,
        };
        body.check_fields()?;
        let body = codec::encode(&body)?;
        let signature = blinded.sign(&wire::signed_message(ONION_DESCRIPTOR_LABEL, &body));
        let signed = Self { body, signature };
        let len = signed.to_bytes()?.len();
        if len > MAX_ONION_DESCRIPTOR_LEN {
            return Err(OnionDescriptorError::TooLarge(len));
        }
        Ok(signed)
    }

    /// The canonical encoding, as published.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self)
    }
}

/// A parsed, unverified descriptor.
#[derive(Debug, Clone)]
pub struct UncheckedOnionDescriptor {
    signed: SignedOnionDescriptor,
    body: OnionDescriptorBody,
}

/// A descriptor whose outer layer verified: signature, times, revision. This is all a
/// directory relay can check; the inner layer needs the address.
#[derive(Debug, Clone)]
pub struct VerifiedOnionDescriptor {
    signed: SignedOnionDescriptor,
    body: OnionDescriptorBody,
}

impl UncheckedOnionDescriptor {
    /// Parses a published descriptor (canonical, at most [`MAX_ONION_DESCRIPTOR_LEN`]).
    pub fn parse(bytes: &[u8]) -> Result<Self, OnionDescriptorError> {
        let signed: SignedOnionDescriptor = codec::decode(bytes, MAX_ONION_DESCRIPTOR_LEN)?;
        let body: OnionDescriptorBody = codec::decode(&signed.body, MAX_ONION_DESCRIPTOR_LEN)?;
        body.check_fields()?;
        Ok(Self { signed, body })
    }

    /// The claimed (unverified) outer layer, e.g. to index by blinded key.
    pub fn claimed(&self) -> &OnionDescriptorBody {
        &self.body
    }

    /// The signed form.
    pub fn signed(&self) -> &SignedOnionDescriptor {
        &self.signed
    }

    /// Checks, in order: field bounds; the signature by the embedded blinded key;
    /// `created ≤ now + max_skew`; `now < created + lifetime + max_skew`;
    /// `revision ≥ min_revision` (directory relays pass the stored revision + 1, clients
    /// the last revision they accepted for this `A'`).
    pub fn verify_outer(
        self,
        now: u64,
        max_skew: u64,
        min_revision: u64,
    ) -> Result<VerifiedOnionDescriptor, OnionDescriptorError> {
        let b = &self.body;
        b.check_fields()?;
        b.blinded_key
            .verify(
                &wire::signed_message(ONION_DESCRIPTOR_LABEL, &self.signed.body),
                &self.signed.signature,
            )
            .map_err(|_| OnionDescriptorError::BadSignature)?;
        if b.created > now.saturating_add(max_skew) {
            return Err(OnionDescriptorError::FutureDated {
                created: b.created,
                now,
            });
        }
        if now >= b.expires().saturating_add(max_skew) {
            return Err(OnionDescriptorError::Expired {
                expires: b.expires(),
                now,
            });
        }
        if b.revision < min_revision {
            return Err(OnionDescriptorError::RevisionRollback {
                revision: b.revision,
                min: min_revision,
            });
        }
        Ok(VerifiedOnionDescriptor {
            signed: self.signed,
            body: self.body,
        })
    }

    /// A client's full check: [`Self::verify_outer`], then the period (same length as
    /// `periods`, number within one of the current period at `now`), then that `A'` is the
    /// key blinded from `address` for that period, then decryption and the inner rules.
    pub fn verify_for(
        self,
        address: &OnionAddress,
        periods: &PeriodParams,
        now: u64,
        max_skew: u64,
        min_revision: u64,
    ) -> Result<(VerifiedOnionDescriptor, InnerDescriptor), OnionDescriptorError> {
        self.verify_for_client(address, None, periods, now, max_skew, min_revision)
    }

    /// [`Self::verify_for`], decrypting with the client's authorisation key, if any.
    pub fn verify_for_client(
        self,
        address: &OnionAddress,
        key: Option<&ClientAuthSecret>,
        periods: &PeriodParams,
        now: u64,
        max_skew: u64,
        min_revision: u64,
    ) -> Result<(VerifiedOnionDescriptor, InnerDescriptor), OnionDescriptorError> {
        let verified = self.verify_outer(now, max_skew, min_revision)?;
        let current = periods.period_at(now)?;
        let claimed = verified.body.period();
        if claimed.length != current.length || claimed.number.abs_diff(current.number) > 1 {
            return Err(OnionDescriptorError::WrongPeriod {
                number: claimed.number,
                length: claimed.length,
            });
        }
        let inner = verified.decrypt_with(address, key)?;
        Ok((verified, inner))
    }
}

impl VerifiedOnionDescriptor {
    /// The verified outer layer.
    pub fn body(&self) -> &OnionDescriptorBody {
        &self.body
    }

    /// The signed form, for storing and serving.
    pub fn signed(&self) -> &SignedOnionDescriptor {
        &self.signed
    }

    /// Checks that the descriptor belongs to `address` (its `A'` is the address's key
    /// blinded for the descriptor's period), then decrypts and parses the inner layer.
    pub fn decrypt(&self, address: &OnionAddress) -> Result<InnerDescriptor, OnionDescriptorError> {
        self.decrypt_with(address, None)
    }

    /// The decrypted first layer: what anyone who knows the address can read (whether
    /// clients are authorised, and the padded client entries).
    pub fn first_layer(&self, address: &OnionAddress) -> Result<FirstLayer, OnionDescriptorError> {
        let b = &self.body;
        if BlindedPublic::derive(address, b.period())? != b.blinded_key {
            return Err(OnionDescriptorError::WrongService);
        }
        let ctx = layers::context(address.identity(), &b.blinded_key, b.period(), &b.salt);
        Ok(layers::open_first_layer(&ctx, b.revision, &b.encrypted)?)
    }

    /// [`Self::decrypt`] with the client's authorisation key for this service, if any:
    /// a service that authorises clients gives [`OnionDescriptorError::AuthRequired`]
    /// without one and [`OnionDescriptorError::AuthNotAccepted`] if it is not listed.
    pub fn decrypt_with(
        &self,
        address: &OnionAddress,
        key: Option<&ClientAuthSecret>,
    ) -> Result<InnerDescriptor, OnionDescriptorError> {
        let b = &self.body;
        let period = b.period();
        if BlindedPublic::derive(address, period)? != b.blinded_key {
            return Err(OnionDescriptorError::WrongService);
        }
        let ctx = layers::context(address.identity(), &b.blinded_key, period, &b.salt);
        let encoded = layers::open_layers(&ctx, b.revision, &b.encrypted, key)?;
        let inner: InnerDescriptor = codec::decode(&encoded, MAX_INNER_LEN)?;
        inner.check()?;
        Ok(inner)
    }
}
