//! The descriptor's encrypted layers (protocol.md §8.4): the first, keyed by the address,
//! holds the client-authorisation section and the inner descriptor, itself encrypted again
//! under the cookie. A service that authorises no client carries 16 random entries and
//! the known cookie [`NO_AUTH_COOKIE`], so its descriptor is the size of one that does. Works on the inner
//! descriptor's encoding, so that `descriptor.rs` (which parses it) is the only caller.

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, KeyInit as _};
use hkdf::Hkdf;
use rand::CryptoRng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::bytes::{Reader, Writer};
use crate::codec::{self, CodecError};
use crate::crypto::IdentityPublic;
use crate::dir::wire;
use crate::onion::blinding::{BlindedPublic, TimePeriod};
use crate::onion::client_auth::{
    auth_inner_key, fake_section, open_cookie, seal_cookie, ClientAuthPublic, ClientAuthSecret,
    ClientAuthSection, DescContext, NO_AUTH_COOKIE,
};

/// HKDF info prefix of the first layer's key.
pub const INNER_KEY_LABEL: &[u8] = b"allium-onion-desc-v1";
/// Largest plaintext of either layer (after padding).
pub const MAX_INNER_LEN: usize = 6 * 1024;
/// Each layer's plaintext is padded to a multiple of this, so its length reveals little
/// about the number of introduction points (or of client entries).
pub const INNER_PAD_UNIT: usize = 1024;
/// Length of the AEAD tag on each layer.
pub(crate) const AEAD_TAG_LEN: usize = 16;

/// Why a layer could not be sealed or opened (mapped to the descriptor's error).
#[derive(Debug)]
pub(crate) enum LayerError {
    Codec(CodecError),
    TooLarge(usize),
    Decrypt,
    Bad(&'static str),
    AuthRequired,
    AuthNotAccepted,
    ClientAuth(&'static str),
}

impl From<CodecError> for LayerError {
    fn from(e: CodecError) -> Self {
        LayerError::Codec(e)
    }
}

/// The first layer's plaintext (before padding). Wire order is the field order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirstLayer {
    /// The service's authorised clients' entries, or 16 random ones when it has none.
    pub client_auth: ClientAuthSection,
    /// The second layer's ciphertext and tag (the padded inner descriptor, sealed under
    /// the cookie).
    #[serde(deserialize_with = "wire::bounded_vec::<_, u8, { MAX_INNER_LEN + AEAD_TAG_LEN }>")]
    pub inner: Vec<u8>,
}

/// The first layer's AEAD key: needs `A`, which only the address gives.
fn first_key(ctx: &DescContext<'_>) -> Zeroizing<[u8; 32]> {
    let hk = Hkdf::<Sha256>::new(Some(ctx.salt), ctx.identity.as_bytes());
    let mut info = Vec::with_capacity(INNER_KEY_LABEL.len() + 48);
    info.extend_from_slice(INNER_KEY_LABEL);
    info.extend_from_slice(ctx.blinded.as_bytes());
    info.extend_from_slice(&ctx.period.length.to_be_bytes());
    info.extend_from_slice(&ctx.period.number.to_be_bytes());
    let mut key = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit.
    let _ = hk.expand(&info, &mut key[..]);
    key
}

/// Associated data of both layers: `A' | u64be(revision)`, binding the ciphertext to the
/// outer layer it was published in.
fn layer_ad(blinded: &BlindedPublic, revision: u64) -> Vec<u8> {
    [blinded.as_bytes().as_slice(), &revision.to_be_bytes()].concat()
}

fn seal(key: &[u8; 32], ad: &[u8], msg: &[u8]) -> Result<Vec<u8>, LayerError> {
    // The nonce is fixed: every key is fresh (salt and cookie are random per descriptor).
    ChaCha20Poly1305::new(key.into())
        .encrypt(&[0u8; 12].into(), Payload { msg, aad: ad })
        .map_err(|_| LayerError::Decrypt)
}

fn open(key: &[u8; 32], ad: &[u8], msg: &[u8]) -> Result<Zeroizing<Vec<u8>>, LayerError> {
    ChaCha20Poly1305::new(key.into())
        .decrypt(&[0u8; 12].into(), Payload { msg, aad: ad })
        .map(Zeroizing::new)
        .map_err(|_| LayerError::Decrypt)
}

/// `u32be(len) | body | zero padding` to the smallest multiple of [`INNER_PAD_UNIT`].
fn pad(body: &[u8]) -> Result<Zeroizing<Vec<u8>>, LayerError> {
    let len = u32::try_from(body.len()).map_err(|_| LayerError::TooLarge(body.len()))?;
    let total = (4 + body.len()).div_ceil(INNER_PAD_UNIT) * INNER_PAD_UNIT;
    if total > MAX_INNER_LEN {
        return Err(LayerError::TooLarge(total));
    }
    // A zeroed buffer of the padded size: what is not written is the zero padding.
    let mut out = Zeroizing::new(vec![0u8; total]);
    let mut w = Writer::new(&mut out);
    w.u32(len, "inner length")
        .and_then(|()| w.put(body, "inner body"))
        .map_err(|_| LayerError::TooLarge(total))?;
    Ok(out)
}

/// Inverse of [`pad`]; strict (exact length, zero padding, no spare unit).
fn unpad(padded: &[u8]) -> Result<&[u8], LayerError> {
    let bad = LayerError::Bad;
    if padded.is_empty() || padded.len() % INNER_PAD_UNIT != 0 || padded.len() > MAX_INNER_LEN {
        return Err(bad("padded length is not a multiple of 1024"));
    }
    let mut r = Reader::new(padded);
    let len = r.u32("inner length").map_err(|_| bad("truncated length"))?;
    let len = usize::try_from(len).map_err(|_| bad("length"))?;
    let body = r
        .take(len, "inner body")
        .map_err(|_| bad("length exceeds the plaintext"))?;
    r.finish_zero_padded()
        .map_err(|_| bad("non-zero padding"))?;
    if (4 + len).div_ceil(INNER_PAD_UNIT) * INNER_PAD_UNIT != padded.len() {
        return Err(bad("too much padding"));
    }
    Ok(body)
}

/// Parses a first layer's padded plaintext, strictly (padding, canonical encoding, the
/// client section's count and order).
pub(crate) fn decode_first_layer(padded: &[u8]) -> Result<FirstLayer, LayerError> {
    let first: FirstLayer = codec::decode(unpad(padded)?, MAX_INNER_LEN)?;
    first.client_auth.check().map_err(LayerError::Bad)?;
    Ok(first)
}

/// The padded plaintext of `first`, as the first layer encrypts it.
pub(crate) fn encode_first_layer(first: &FirstLayer) -> Result<Zeroizing<Vec<u8>>, LayerError> {
    pad(&Zeroizing::new(codec::encode(first)?))
}

/// Decrypts and parses the first layer only: what anyone who knows the address reads.
pub(crate) fn open_first_layer(
    ctx: &DescContext<'_>,
    revision: u64,
    encrypted: &[u8],
) -> Result<FirstLayer, LayerError> {
    decode_first_layer(&open(
        &first_key(ctx),
        &layer_ad(ctx.blinded, revision),
        encrypted,
    )?)
}

/// Encrypts the encoded inner descriptor: readable with the address, and with client
/// authorisation only by one of `clients` (when not empty). Returns the first layer's
/// ciphertext.
pub(crate) fn seal_layers<R: CryptoRng + ?Sized>(
    rng: &mut R,
    ctx: &DescContext<'_>,
    revision: u64,
    encoded_inner: &[u8],
    clients: &[ClientAuthPublic],
) -> Result<Vec<u8>, LayerError> {
    let ad = layer_ad(ctx.blinded, revision);
    let (section, cookie) = if clients.is_empty() {
        (fake_section(rng), Zeroizing::new(NO_AUTH_COOKIE))
    } else {
        seal_cookie(rng, ctx, clients).map_err(LayerError::ClientAuth)?
    };
    let first = FirstLayer {
        client_auth: section,
        inner: seal(&auth_inner_key(ctx, &cookie), &ad, &pad(encoded_inner)?)?,
    };
    seal(&first_key(ctx), &ad, &encode_first_layer(&first)?)
}

/// Decrypts the layers of a descriptor whose `A'` was already checked against the
/// address, returning the inner descriptor's encoding. `key` is the client's
/// authorisation key for this service, if it has one.
pub(crate) fn open_layers(
    ctx: &DescContext<'_>,
    revision: u64,
    encrypted: &[u8],
    key: Option<&ClientAuthSecret>,
) -> Result<Zeroizing<Vec<u8>>, LayerError> {
    let ad = layer_ad(ctx.blinded, revision);
    let first = open_first_layer(ctx, revision, encrypted)?;
    let mine = key.and_then(|k| open_cookie(ctx, &first.client_auth, k));
    let second = match &mine {
        // Our entry: the layer must open with its cookie; if not, the entry was not made
        // for this descriptor's cookie (e.g. copied from elsewhere).
        Some(cookie) => open(&auth_inner_key(ctx, cookie), &ad, &first.inner)
            .map_err(|_| LayerError::AuthNotAccepted)?,
        // No entry of ours: readable only if the service authorises no client.
        None => open(&auth_inner_key(ctx, &NO_AUTH_COOKIE), &ad, &first.inner).map_err(|_| {
            if key.is_some() {
                LayerError::AuthNotAccepted
            } else {
                LayerError::AuthRequired
            }
        })?,
    };
    Ok(Zeroizing::new(unpad(&second)?.to_vec()))
}

/// A derivation context from its parts.
pub(crate) fn context<'a>(
    identity: &'a IdentityPublic,
    blinded: &'a BlindedPublic,
    period: TimePeriod,
    salt: &'a [u8],
) -> DescContext<'a> {
    DescContext {
        identity,
        blinded,
        period,
        salt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{IdentityKeypair, OnionKeyCert, OnionKeypair};
    use crate::onion::client_auth::{expected_entry, AUTH_CLIENT_PAD, MAX_AUTH_CLIENTS};
    use crate::onion::descriptor::{InnerDescriptor, IntroPointInfo};
    use crate::onion::BlindedKeypair;

    const PERIOD: TimePeriod = TimePeriod {
        length: 86_400,
        number: 19_000,
    };

    struct Svc {
        id: IdentityKeypair,
        blinded: BlindedKeypair,
        salt: [u8; 16],
    }

    impl Svc {
        fn new() -> Self {
            let id = IdentityKeypair::generate(&mut rand::rng());
            let blinded = BlindedKeypair::derive(&id, PERIOD).unwrap();
            Svc {
                id,
                blinded,
                salt: rand::random(),
            }
        }

        fn seal(&self, clients: &[ClientAuthPublic]) -> Vec<u8> {
            let identity = self.id.public();
            let ctx = context(&identity, self.blinded.public(), PERIOD, &self.salt);
            let encoded = codec::encode(&inner()).unwrap();
            seal_layers(&mut rand::rng(), &ctx, 1, &encoded, clients).unwrap()
        }

        fn open(
            &self,
            ct: &[u8],
            key: Option<&ClientAuthSecret>,
        ) -> Result<InnerDescriptor, LayerError> {
            let identity = self.id.public();
            let ctx = context(&identity, self.blinded.public(), PERIOD, &self.salt);
            Ok(codec::decode(
                &open_layers(&ctx, 1, ct, key)?,
                MAX_INNER_LEN,
            )?)
        }

        /// What anyone knowing the address reads: the first layer.
        fn first(&self, ct: &[u8]) -> FirstLayer {
            let identity = self.id.public();
            let ctx = context(&identity, self.blinded.public(), PERIOD, &self.salt);
            let pt = open(&first_key(&ctx), &layer_ad(ctx.blinded, 1), ct).unwrap();
            decode_first_layer(&pt).unwrap()
        }

        /// Re-encrypts a (tampered) first layer, as the service would have to.
        fn reseal(&self, first: &FirstLayer) -> Vec<u8> {
            let identity = self.id.public();
            let ctx = context(&identity, self.blinded.public(), PERIOD, &self.salt);
            let pt = pad(&codec::encode(first).unwrap()).unwrap();
            seal(&first_key(&ctx), &layer_ad(ctx.blinded, 1), &pt).unwrap()
        }
    }

    fn inner() -> InnerDescriptor {
        let relay = IdentityKeypair::generate(&mut rand::rng());
        let onion = OnionKeypair::generate(&mut rand::rng());
        InnerDescriptor {
            intro_points: vec![IntroPointInfo {
                relay_identity: relay.public(),
                link_addrs: vec!["192.0.2.1:9001".parse().unwrap()],
                onion_cert: OnionKeyCert::sign(&relay, onion.public(), u64::MAX),
                auth_key: IdentityKeypair::generate(&mut rand::rng()).public(),
                enc_key: *onion.public(),
            }],
            pow: None,
        }
    }

    fn clients(n: usize) -> Vec<ClientAuthSecret> {
        (0..n)
            .map(|_| ClientAuthSecret::generate(&mut rand::rng()))
            .collect()
    }

    fn publics(c: &[ClientAuthSecret]) -> Vec<ClientAuthPublic> {
        c.iter().map(ClientAuthSecret::public).collect()
    }

    #[test]
    fn only_listed_clients_read_the_inner_layer() {
        let svc = Svc::new();
        let listed = clients(3);
        let ct = svc.seal(&publics(&listed));
        for c in &listed {
            assert_eq!(svc.open(&ct, Some(c)).unwrap().intro_points.len(), 1);
        }
        assert!(matches!(svc.open(&ct, None), Err(LayerError::AuthRequired)));
        // An attacker with its own valid key, knowing the address.
        let outsider = ClientAuthSecret::generate(&mut rand::rng());
        assert!(matches!(
            svc.open(&ct, Some(&outsider)),
            Err(LayerError::AuthNotAccepted)
        ));
        // Without client authorisation a configured key is not needed, and harmless.
        let open = svc.seal(&[]);
        assert!(svc.open(&open, None).is_ok());
        assert!(svc.open(&open, Some(&outsider)).is_ok());
    }

    #[test]
    fn entry_count_is_padded_and_hides_the_number_of_clients() {
        let svc = Svc::new();
        let mut lens = Vec::new();
        for n in [1, 2, 15, 16] {
            let ct = svc.seal(&publics(&clients(n)));
            let section = svc.first(&ct).client_auth;
            assert_eq!(section.clients.len(), AUTH_CLIENT_PAD, "{n} clients");
            lens.push(ct.len());
        }
        assert!(lens.windows(2).all(|w| w[0] == w[1]), "{lens:?}");
        for n in [17, MAX_AUTH_CLIENTS] {
            let ct = svc.seal(&publics(&clients(n)));
            assert_eq!(
                svc.first(&ct).client_auth.clients.len(),
                2 * AUTH_CLIENT_PAD
            );
        }
        let identity = svc.id.public();
        let ctx = context(&identity, svc.blinded.public(), PERIOD, &svc.salt);
        let too_many = publics(&clients(MAX_AUTH_CLIENTS + 1));
        let encoded = codec::encode(&inner()).unwrap();
        assert!(seal_layers(&mut rand::rng(), &ctx, 1, &encoded, &too_many).is_err());
        let one = ClientAuthSecret::generate(&mut rand::rng()).public();
        assert!(seal_layers(&mut rand::rng(), &ctx, 1, &encoded, &[one, one]).is_err());
    }

    #[test]
    fn an_entry_from_another_descriptor_or_client_does_not_work() {
        let svc = Svc::new();
        let (a, revoked) = (clients(1).remove(0), clients(1).remove(0));
        // The revoked client was listed in the old descriptor, not in the new one.
        let old = svc.seal(&[a.public(), revoked.public()]);
        let new = svc.seal(&[a.public()]);
        assert!(svc.open(&old, Some(&revoked)).is_ok());
        assert!(matches!(
            svc.open(&new, Some(&revoked)),
            Err(LayerError::AuthNotAccepted)
        ));
        // Every entry of the old descriptor, moved into the new one: none opens it,
        // whoever presents it (ids and cookies are bound to each descriptor's ephemeral
        // key and cookie).
        let old_entries = svc.first(&old).client_auth.clients;
        let mut first = svc.first(&new);
        first.client_auth.clients = old_entries;
        let forged = svc.reseal(&first);
        for who in [&a, &revoked] {
            assert!(matches!(
                svc.open(&forged, Some(who)),
                Err(LayerError::AuthNotAccepted)
            ));
        }
        // The listed client's entry relabelled with the revoked client's id for the new
        // descriptor: the cookie is not the revoked client's to recover.
        let mut first = svc.first(&new);
        let identity = svc.id.public();
        let ctx = context(&identity, svc.blinded.public(), PERIOD, &svc.salt);
        let section = &mut first.client_auth;
        let a_id = expected_entry(&ctx, &section.ephemeral, &a)
            .unwrap()
            .client_id;
        let r_id = expected_entry(&ctx, &section.ephemeral, &revoked)
            .unwrap()
            .client_id;
        let entry = section
            .clients
            .iter_mut()
            .find(|e| e.client_id == a_id)
            .unwrap();
        entry.client_id = r_id;
        section.clients.sort_by_key(|e| e.client_id);
        let forged = svc.reseal(&first);
        assert!(matches!(
            svc.open(&forged, Some(&revoked)),
            Err(LayerError::AuthNotAccepted)
        ));
        // A tampered first layer is refused outright.
        let mut bad = new.clone();
        bad[0] ^= 1;
        assert!(matches!(svc.open(&bad, Some(&a)), Err(LayerError::Decrypt)));
    }
}
