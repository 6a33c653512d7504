//! The key schedule and AEAD shared by both sides of `allium-ntor-1`: Diffie-Hellman with
//! the contributory check, HKDF, the transcript MAC and the extension ciphertexts.

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, KeyInit as _};
use hkdf::{Hkdf, HkdfExtract};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use x25519_dalek::{PublicKey, SharedSecret, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

use super::{
    HandshakeError, AUTH_PREFIX, LABEL_AUTH, LABEL_CIRCUIT_KEYS, LABEL_CLIENT_MSG, LABEL_REPLY_MSG,
    PROTOID,
};
use crate::crypto::circuit_keys::CIRCUIT_KEYS_LEN;

pub(super) type HmacSha256 = Hmac<Sha256>;

/// X25519, rejecting an all-zero (non-contributory) result.
pub(super) fn dh(
    secret: &StaticSecret,
    peer: &[u8; 32],
) -> Result<Zeroizing<[u8; 32]>, HandshakeError> {
    check_contributory(secret.diffie_hellman(&PublicKey::from(*peer)))
}

pub(super) fn check_contributory(
    shared: SharedSecret,
) -> Result<Zeroizing<[u8; 32]>, HandshakeError> {
    if !shared.was_contributory() {
        return Err(HandshakeError::NonContributory);
    }
    Ok(Zeroizing::new(shared.to_bytes()))
}

/// HKDF-Extract of the concatenated `ikm_parts`, ready for Expand. The pseudorandom key
/// that `Hkdf::new` would drop without wiping is zeroized here. (The HMAC state kept in the
/// returned value is wiped on drop: `hmac` and `sha2` are built with `zeroize`.)
pub(crate) fn hkdf_extract(salt: &[u8], ikm_parts: &[&[u8]]) -> Hkdf<Sha256> {
    let mut extract = HkdfExtract::<Sha256>::new(Some(salt));
    for part in ikm_parts {
        extract.input_ikm(part);
    }
    let (mut prk, hk) = extract.finalize();
    prk.as_mut_slice().zeroize();
    hk
}

/// Key for the client extension.
pub(super) fn client_msg_key(
    secret_xb: &[u8; 32],
    id: &[u8; 32],
    b: &[u8; 32],
    x: &[u8; 32],
) -> Result<Zeroizing<[u8; 32]>, HandshakeError> {
    let hk = hkdf_extract(PROTOID, &[secret_xb]);
    let mut key = Zeroizing::new([0u8; 32]);
    hk.expand_multi_info(&[LABEL_CLIENT_MSG, id, b, x], &mut key[..])
        .map_err(|_| HandshakeError::Internal)?;
    Ok(key)
}

/// Everything derived from `key_seed`.
pub(super) struct SessionKeys {
    pub(super) reply_key: Zeroizing<[u8; 32]>,
    pub(super) auth_key: Zeroizing<[u8; 32]>,
    pub(super) circuit: Zeroizing<[u8; CIRCUIT_KEYS_LEN]>,
}

/// The public transcript values bound into the key seed and the auth MAC.
pub(super) struct Transcript<'a> {
    pub(super) id: &'a [u8; 32],
    pub(super) b: &'a [u8; 32],
    pub(super) x: &'a [u8; 32],
    pub(super) y: &'a [u8; 32],
    pub(super) client_ext_ct: &'a [u8],
}

impl Transcript<'_> {
    /// `ID | B | X | Y`, the reply extension's associated data.
    pub(super) fn reply_ad(&self) -> Vec<u8> {
        [self.id.as_slice(), self.b, self.x, self.y].concat()
    }

    pub(super) fn session_keys(
        &self,
        secret_xy: &[u8; 32],
        secret_xb: &[u8; 32],
    ) -> Result<SessionKeys, HandshakeError> {
        let mut extract = HkdfExtract::<Sha256>::new(Some(PROTOID));
        for part in [
            secret_xy.as_slice(),
            secret_xb,
            self.id,
            self.b,
            self.x,
            self.y,
            self.client_ext_ct,
        ] {
            extract.input_ikm(part);
        }
        let (mut prk, hk) = extract.finalize();
        prk.as_mut_slice().zeroize();
        let mut keys = SessionKeys {
            reply_key: Zeroizing::new([0; 32]),
            auth_key: Zeroizing::new([0; 32]),
            circuit: Zeroizing::new([0; CIRCUIT_KEYS_LEN]),
        };
        let outputs: [(&[u8], &mut [u8]); 3] = [
            (LABEL_REPLY_MSG, &mut keys.reply_key[..]),
            (LABEL_AUTH, &mut keys.auth_key[..]),
            (LABEL_CIRCUIT_KEYS, &mut keys.circuit[..]),
        ];
        for (label, out) in outputs {
            hk.expand(label, out)
                .map_err(|_| HandshakeError::Internal)?;
        }
        Ok(keys)
    }

    /// `auth` over the whole transcript including the reply extension ciphertext.
    pub(super) fn auth(
        &self,
        auth_key: &[u8; 32],
        reply_ext_ct: &[u8],
    ) -> Result<[u8; 32], HandshakeError> {
        let mut mac = HmacSha256::new_from_slice(auth_key).map_err(|_| HandshakeError::Internal)?;
        // Both lengths fit in u16 because both messages were bounded before this point.
        let client_len =
            u16::try_from(self.client_ext_ct.len()).map_err(|_| HandshakeError::Internal)?;
        let reply_len = u16::try_from(reply_ext_ct.len()).map_err(|_| HandshakeError::Internal)?;
        for part in [
            AUTH_PREFIX,
            self.id,
            self.b,
            self.x,
            self.y,
            &client_len.to_be_bytes(),
            self.client_ext_ct,
            &reply_len.to_be_bytes(),
            reply_ext_ct,
        ] {
            mac.update(part);
        }
        Ok(mac.finalize().into_bytes().into())
    }
}

/// ChaCha20-Poly1305 with a single-use key and the zero nonce.
pub(super) fn seal(key: &[u8; 32], ad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, HandshakeError> {
    ChaCha20Poly1305::new(key.into())
        .encrypt(
            &[0u8; 12].into(),
            Payload {
                msg: plaintext,
                aad: ad,
            },
        )
        .map_err(|_| HandshakeError::Internal)
}

/// Inverse of [`seal`]; `None` if the ciphertext or AD were modified.
pub(super) fn open(key: &[u8; 32], ad: &[u8], ciphertext: &[u8]) -> Option<Vec<u8>> {
    ChaCha20Poly1305::new(key.into())
        .decrypt(
            &[0u8; 12].into(),
            Payload {
                msg: ciphertext,
                aad: ad,
            },
        )
        .ok()
}
