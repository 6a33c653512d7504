//! `allium-hs-ntor-1`: the end-to-end handshake between a client and an onion service.
//!
//! The service publishes, per introduction point, an auth key `AUTH` (ed25519) and an
//! encryption key `B` (x25519, secret `b`). `subcred = SHA-256("allium-hs-subcred-v1" | A |
//! A')` binds everything to the service identity `A` and the period's blinded key `A'`.
//!
//! ```text
//! client:   x, X = X25519(x, 9)
//!           secret_xb = X25519(x, B)                         (refused if all-zero)
//!           intro_key = HKDF-SHA256(salt = PROTOID, ikm = secret_xb,
//!                       info = "allium-hs-ntor-1:intro" | AUTH | B | subcred | X)[0..32]
//!           ct = ChaCha20-Poly1305(intro_key, nonce 0^12, ad = AUTH | X, plaintext)
//!           INTRODUCE1 = AUTH | X | ct
//! service:  secret_xb = X25519(b, X)                         (refused if all-zero)
//!           decrypts ct; y, Y = X25519(y, 9); secret_xy = X25519(y, X)   (refused if 0)
//!           seed = HKDF-Extract(salt = PROTOID,
//!                  ikm = secret_xy | secret_xb | AUTH | B | subcred | X | Y)
//!           auth = HMAC-SHA256(HKDF-Expand(seed, "allium-hs-ntor-1:auth", 32),
//!                  "allium-hs-ntor-1:server" | AUTH | B | subcred | X | Y | SHA-256(ct))
//!           keys = HKDF-Expand(seed, "allium-hs-ntor-1:e2e-keys", 192)
//!                = Kf_enc | Kf_mac | Kb_enc | Kb_mac    (forward = client → service)
//!           RENDEZVOUS1 = cookie | Y | auth
//! client:   secret_xy = X25519(x, Y); checks auth; derives the same keys.
//! ```
//!
//! Only the holder of `b` can read the introduction; only someone who also chose `y` can
//! answer with a valid `auth`. The session keys depend on `X·Y`, so once both ephemerals
//! are erased, even `b` does not recover them (forward secrecy). The keys are
//! [`CircuitKeys`]: the client pushes them as one more (virtual) hop of its rendezvous
//! circuit, the service uses them as a relay uses its hop's keys.

use core::fmt;

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, KeyInit as _};
use hmac::{Hmac, Mac};
use rand::CryptoRng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::bytes::{self, Readable, Reader, Writeable, Writer};
use crate::crypto::circuit_keys::{CircuitKeys, CIRCUIT_KEYS_LEN};
use crate::crypto::handshake::hkdf_extract;
use crate::crypto::{IdentityPublic, OnionKeypair, OnionPublic};
use crate::onion::blinding::BlindedPublic;

/// Protocol identifier; the HKDF salt.
pub const HS_PROTOID: &[u8] = b"allium-hs-ntor-1";
/// Domain-separation label of the subcredential.
pub const SUBCRED_LABEL: &[u8] = b"allium-hs-subcred-v1";
const LABEL_INTRO: &[u8] = b"allium-hs-ntor-1:intro";
const LABEL_AUTH: &[u8] = b"allium-hs-ntor-1:auth";
const LABEL_KEYS: &[u8] = b"allium-hs-ntor-1:e2e-keys";
const AUTH_PREFIX: &[u8] = b"allium-hs-ntor-1:server";
/// Length of `Y | auth`.
pub const HS_REPLY_LEN: usize = 64;

/// Why the handshake failed. Every case ends the attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HsHandshakeError {
    /// A Diffie-Hellman output was all zero (a low-order public key).
    #[error("non-contributory Diffie-Hellman output")]
    NonContributory,
    /// The introduction did not decrypt (wrong key, or modified).
    #[error("introduction does not decrypt")]
    Decrypt,
    /// The service's `auth` did not verify.
    #[error("service authentication failed")]
    BadAuth,
    /// A primitive refused its input (cannot happen with the fixed sizes used).
    #[error("internal error")]
    Internal,
    /// A handshake reply that is not exactly [`HS_REPLY_LEN`] bytes.
    #[error("handshake reply must be {HS_REPLY_LEN} bytes, got {got}")]
    BadLength {
        /// Length received.
        got: usize,
    },
}

/// The service's reply `Y | auth` (RENDEZVOUS1/2's handshake field), split but not checked:
/// [`HsClientState::finish`] checks `auth`. The INTRODUCE side's layout, `AUTH | X | ct`, is
/// [`crate::cell::onion_msg::Introduce`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HsReply {
    y: [u8; 32],
    auth: [u8; 32],
}

// `Y | auth` fills the reply exactly: the fixed-size encoder leaves no byte unwritten.
const _: () = assert!(HS_REPLY_LEN == 32 + 32);

impl HsReply {
    /// Parses exactly [`HS_REPLY_LEN`] bytes; any value is well formed.
    pub fn parse(bytes: &[u8]) -> Result<Self, HsHandshakeError> {
        <Self as Readable>::parse(bytes)
            .map_err(|_| HsHandshakeError::BadLength { got: bytes.len() })
    }

    /// The wire encoding (the inverse of [`Self::parse`]). The array's size is the
    /// encoding's, so this cannot fail; a failure would be reported as
    /// [`HsHandshakeError::Internal`], never padded or cut.
    pub fn encode(&self) -> Result<[u8; HS_REPLY_LEN], HsHandshakeError> {
        let mut out = [0u8; HS_REPLY_LEN];
        Writer::new(&mut out)
            .write(self)
            .map_err(|_| HsHandshakeError::Internal)?;
        Ok(out)
    }

    /// `Y`: the service's ephemeral key.
    pub fn service_key(&self) -> &[u8; 32] {
        &self.y
    }

    /// `auth`: the MAC over the transcript.
    pub fn auth(&self) -> &[u8; 32] {
        &self.auth
    }
}

impl Readable for HsReply {
    type Error = bytes::Error;
    fn take_from(r: &mut Reader<'_>) -> bytes::Result<Self> {
        Ok(Self {
            y: r.array("service key")?,
            auth: r.array("auth")?,
        })
    }
}

impl Writeable for HsReply {
    type Error = bytes::Error;
    fn write_onto(&self, w: &mut Writer<'_>) -> bytes::Result<()> {
        w.put(&self.y, "service key")?;
        w.put(&self.auth, "auth")
    }
}

/// `SHA-256("allium-hs-subcred-v1" | A | A')`.
pub fn subcredential(identity: &IdentityPublic, blinded: &BlindedPublic) -> [u8; 32] {
    Sha256::new()
        .chain_update(SUBCRED_LABEL)
        .chain_update(identity.as_bytes())
        .chain_update(blinded.as_bytes())
        .finalize()
        .into()
}

/// What both sides know about the introduction point being used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntroKeys {
    /// The introduction point's auth key `AUTH`.
    pub auth_key: IdentityPublic,
    /// The service's encryption key `B` at that point.
    pub enc_key: OnionPublic,
    /// The subcredential.
    pub subcred: [u8; 32],
}

impl IntroKeys {
    /// `AUTH | B | subcred`, the head of every transcript, as its parts.
    fn transcript_head(&self) -> [&[u8]; 3] {
        [
            self.auth_key.as_bytes(),
            self.enc_key.as_bytes(),
            &self.subcred,
        ]
    }
}

fn intro_cipher(keys: &IntroKeys, secret_xb: &[u8; 32], x_pub: &[u8; 32]) -> ChaCha20Poly1305 {
    let hk = hkdf_extract(HS_PROTOID, &[secret_xb]);
    let [auth, b, subcred] = keys.transcript_head();
    let mut key = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's output limit.
    let _ = hk.expand_multi_info(&[LABEL_INTRO, auth, b, subcred, x_pub], &mut key[..]);
    ChaCha20Poly1305::new((&*key).into())
}

/// `AUTH | X`, the introduction's associated data.
fn intro_ad(keys: &IntroKeys, x_pub: &[u8; 32]) -> Vec<u8> {
    [keys.auth_key.as_bytes().as_slice(), x_pub].concat()
}

/// Key schedule after both DH outputs are known: (auth, keys).
fn finish_keys(
    keys: &IntroKeys,
    secret_xy: &[u8; 32],
    secret_xb: &[u8; 32],
    x_pub: &[u8; 32],
    y_pub: &[u8; 32],
    intro_ct: &[u8],
) -> Result<([u8; 32], CircuitKeys), HsHandshakeError> {
    let [auth, b, subcred] = keys.transcript_head();
    // hkdf_extract wipes the pseudorandom key (Hkdf::new and a bare finalize do not).
    let hk = hkdf_extract(
        HS_PROTOID,
        &[secret_xy, secret_xb, auth, b, subcred, x_pub, y_pub],
    );
    let mut auth_key = Zeroizing::new([0u8; 32]);
    let _ = hk.expand(LABEL_AUTH, &mut auth_key[..]);
    let mut block = Zeroizing::new([0u8; CIRCUIT_KEYS_LEN]);
    let _ = hk.expand(LABEL_KEYS, &mut block[..]);
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&auth_key[..]).map_err(|_| HsHandshakeError::Internal)?;
    for part in [AUTH_PREFIX, auth, b, subcred, x_pub, y_pub] {
        mac.update(part);
    }
    mac.update(&Sha256::digest(intro_ct));
    Ok((
        mac.finalize().into_bytes().into(),
        CircuitKeys::from_bytes(&block),
    ))
}

/// The client's state between INTRODUCE1 and RENDEZVOUS2. Secrets zeroized on drop.
pub struct HsClientState {
    x: StaticSecret,
    x_pub: [u8; 32],
    secret_xb: Zeroizing<[u8; 32]>,
    keys: IntroKeys,
    intro_ct: Vec<u8>,
}

impl fmt::Debug for HsClientState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HsClientState { .. }")
    }
}

/// Client: encrypts the introduction `plaintext` to the service. Returns the state to keep,
/// `X` and the ciphertext (with its 16-byte tag) for INTRODUCE1.
pub fn client_introduce<R: CryptoRng + ?Sized>(
    rng: &mut R,
    keys: &IntroKeys,
    plaintext: &[u8],
) -> Result<(HsClientState, [u8; 32], Vec<u8>), HsHandshakeError> {
    client_introduce_with(rng, keys, |_| Ok(plaintext.to_vec()))
}

/// Client: as [`client_introduce`], but the plaintext is made by `plaintext_for` from the
/// ephemeral key `X` it is encrypted under: the client puzzle (§8.8) binds `X`, so its
/// solution can only be found once `X` is known.
pub fn client_introduce_with<R, F>(
    rng: &mut R,
    keys: &IntroKeys,
    plaintext_for: F,
) -> Result<(HsClientState, [u8; 32], Vec<u8>), HsHandshakeError>
where
    R: CryptoRng + ?Sized,
    F: FnOnce(&[u8; 32]) -> Result<Vec<u8>, HsHandshakeError>,
{
    let x = StaticSecret::random_from_rng(rng);
    let x_pub = PublicKey::from(&x).to_bytes();
    let plaintext = Zeroizing::new(plaintext_for(&x_pub)?);
    let plaintext: &[u8] = &plaintext;
    let shared = x.diffie_hellman(&PublicKey::from(*keys.enc_key.as_bytes()));
    if !shared.was_contributory() {
        return Err(HsHandshakeError::NonContributory);
    }
    let secret_xb = Zeroizing::new(shared.to_bytes());
    let ct = intro_cipher(keys, &secret_xb, &x_pub)
        .encrypt(
            &[0u8; 12].into(),
            Payload {
                msg: plaintext,
                aad: &intro_ad(keys, &x_pub),
            },
        )
        .map_err(|_| HsHandshakeError::Decrypt)?;
    let state = HsClientState {
        x,
        x_pub,
        secret_xb,
        keys: *keys,
        intro_ct: ct.clone(),
    };
    Ok((state, x_pub, ct))
}

impl HsClientState {
    /// Client: checks RENDEZVOUS2's `Y | auth` and derives the end-to-end keys.
    pub fn finish(self, reply: &[u8; HS_REPLY_LEN]) -> Result<CircuitKeys, HsHandshakeError> {
        // The array is the reply's exact size, so this parse cannot fail; were it to, the
        // error is returned, not papered over.
        self.finish_parsed(&HsReply::parse(reply)?)
    }

    /// The checks of [`Self::finish`]: `X25519(x, Y)` contributory, then `auth` (constant
    /// time).
    fn finish_parsed(self, reply: &HsReply) -> Result<CircuitKeys, HsHandshakeError> {
        let y_pub = reply.y;
        let shared = self.x.diffie_hellman(&PublicKey::from(y_pub));
        if !shared.was_contributory() {
            return Err(HsHandshakeError::NonContributory);
        }
        let secret_xy = Zeroizing::new(shared.to_bytes());
        let (auth, keys) = finish_keys(
            &self.keys,
            &secret_xy,
            &self.secret_xb,
            &self.x_pub,
            &y_pub,
            &self.intro_ct,
        )?;
        if !bool::from(auth.ct_eq(&reply.auth)) {
            return Err(HsHandshakeError::BadAuth);
        }
        Ok(keys)
    }
}

/// The service's view of an introduction it decrypted.
pub struct HsServiceIntro {
    secret_xb: Zeroizing<[u8; 32]>,
    x_pub: [u8; 32],
    keys: IntroKeys,
    intro_ct: Vec<u8>,
}

impl fmt::Debug for HsServiceIntro {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HsServiceIntro { .. }")
    }
}

/// Service: decrypts INTRODUCE2's ciphertext with the introduction point's secret `b`.
/// Returns the plaintext and the state for [`HsServiceIntro::rendezvous`].
pub fn service_open_introduce(
    enc_secret: &OnionKeypair,
    keys: &IntroKeys,
    client_x: &[u8; 32],
    ciphertext: &[u8],
) -> Result<(Zeroizing<Vec<u8>>, HsServiceIntro), HsHandshakeError> {
    let shared = enc_secret.diffie_hellman(client_x);
    if !shared.was_contributory() {
        return Err(HsHandshakeError::NonContributory);
    }
    let secret_xb = Zeroizing::new(shared.to_bytes());
    let plaintext = intro_cipher(keys, &secret_xb, client_x)
        .decrypt(
            &[0u8; 12].into(),
            Payload {
                msg: ciphertext,
                aad: &intro_ad(keys, client_x),
            },
        )
        .map_err(|_| HsHandshakeError::Decrypt)?;
    Ok((
        Zeroizing::new(plaintext),
        HsServiceIntro {
            secret_xb,
            x_pub: *client_x,
            keys: *keys,
            intro_ct: ciphertext.to_vec(),
        },
    ))
}

impl HsServiceIntro {
    /// Service: picks `y`, derives the end-to-end keys and the `Y | auth` reply for
    /// RENDEZVOUS1.
    pub fn rendezvous<R: CryptoRng + ?Sized>(
        self,
        rng: &mut R,
    ) -> Result<(CircuitKeys, [u8; HS_REPLY_LEN]), HsHandshakeError> {
        let y = StaticSecret::random_from_rng(rng);
        let y_pub = PublicKey::from(&y).to_bytes();
        let shared = y.diffie_hellman(&PublicKey::from(self.x_pub));
        if !shared.was_contributory() {
            return Err(HsHandshakeError::NonContributory);
        }
        let secret_xy = Zeroizing::new(shared.to_bytes());
        let (auth, keys) = finish_keys(
            &self.keys,
            &secret_xy,
            &self.secret_xb,
            &self.x_pub,
            &y_pub,
            &self.intro_ct,
        )?;
        let reply = HsReply { y: y_pub, auth }.encode()?;
        Ok((keys, reply))
    }
}
