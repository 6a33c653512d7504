//! Client authorisation (protocol.md §8.4.1): a service that lists its clients' x25519
//! keys encrypts its descriptor's inner layer under a random per-descriptor *cookie* as
//! well as the address, and gives each listed client the cookie in an entry only that
//! client can find and open. Those who know only the address (and directory relays, who
//! do not even know that) cannot read the introduction points.
//!
//! Entries are padded with random fake ones to a multiple of [`AUTH_CLIENT_PAD`], so a
//! descriptor shows how many clients are listed only to within that multiple.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use hkdf::Hkdf;
use rand::CryptoRng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::crypto::{IdentityPublic, OnionKeypair, OnionPublic};
use crate::dir::wire;
use crate::onion::blinding::{BlindedPublic, TimePeriod};

/// Client entries come in multiples of this (Tor's choice), fakes filling the rest.
pub const AUTH_CLIENT_PAD: usize = 16;
/// Most entries (and so most authorised clients) in one descriptor: keeps the largest
/// descriptor within its size bound.
pub const MAX_AUTH_CLIENTS: usize = 2 * AUTH_CLIENT_PAD;
/// Length of a client id in an entry.
pub const CLIENT_ID_LEN: usize = 8;
/// Length of the descriptor cookie.
pub const COOKIE_LEN: usize = 32;
/// HKDF info prefix of an entry's client id and cookie pad.
pub const CLIENT_AUTH_LABEL: &[u8] = b"allium-onion-client-auth-v1";
/// HKDF info prefix of the inner layer's key when clients are authorised.
pub const AUTH_INNER_KEY_LABEL: &[u8] = b"allium-onion-desc-auth-v1";
/// Prefix of a client public key's textual form (`<name>.auth` files).
pub const AUTH_PUBLIC_PREFIX: &str = "x25519:";

/// A client's authorisation key: an x25519 secret (cheap to clone; never printed).
#[derive(Clone)]
pub struct ClientAuthSecret(Arc<OnionKeypair>);

impl ClientAuthSecret {
    /// A fresh key.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self(Arc::new(OnionKeypair::generate(rng)))
    }

    /// Rebuilds a key from its 32-byte secret (as stored in its key file).
    pub fn from_secret_bytes(secret: &[u8; 32]) -> Self {
        Self(Arc::new(OnionKeypair::from_secret_bytes(secret)))
    }

    /// The secret, for writing the key file.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        self.0.secret_bytes()
    }

    /// The public half, which the service lists.
    pub fn public(&self) -> ClientAuthPublic {
        ClientAuthPublic(*self.0.public())
    }
}

impl fmt::Debug for ClientAuthSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientAuthSecret(public {})", self.public())
    }
}

/// A client's authorisation public key, as a service lists it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientAuthPublic(OnionPublic);

impl ClientAuthPublic {
    /// Wraps 32 bytes, refusing a key no Diffie-Hellman with it can be contributory for
    /// (a low-order point: every client "holding" it would share the same secret).
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, ClientAuthKeyError> {
        let probe = OnionKeypair::from_secret_bytes(&[0x55; 32]);
        if !probe.diffie_hellman(&bytes).was_contributory() {
            return Err(ClientAuthKeyError::LowOrder);
        }
        Ok(Self(OnionPublic::from_bytes(bytes)))
    }

    /// The encoded key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }
}

impl fmt::Display for ClientAuthPublic {
    /// `x25519:` and 64 lowercase hex characters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{AUTH_PUBLIC_PREFIX}{}", self.0)
    }
}

impl fmt::Debug for ClientAuthPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientAuthPublic({self})")
    }
}

/// A client public key's text did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientAuthKeyError {
    /// Not `x25519:` followed by exactly 64 lowercase hex characters.
    #[error("expected \"x25519:\" followed by 64 lowercase hex characters")]
    Format,
    /// A point of small order, never an honest key.
    #[error("the key is a low-order point, not a usable x25519 key")]
    LowOrder,
}

impl FromStr for ClientAuthPublic {
    type Err = ClientAuthKeyError;

    /// Strict: `x25519:<64 lowercase hex>`, nothing before or after (one canonical
    /// spelling per key, so a listed key is recognised whoever typed it).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s
            .strip_prefix(AUTH_PUBLIC_PREFIX)
            .filter(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .ok_or(ClientAuthKeyError::Format)?;
        let bytes =
            crate::crypto::OnionPublic::from_str(hex).map_err(|_| ClientAuthKeyError::Format)?;
        Self::from_bytes(*bytes.as_bytes())
    }
}

/// One client entry: who it is for (only that client can compute the id) and the cookie
/// encrypted for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthClientEntry {
    /// First 8 bytes of the client's derived keys.
    #[serde(with = "wire::fixed")]
    pub client_id: [u8; CLIENT_ID_LEN],
    /// The cookie XOR the client's derived pad.
    #[serde(with = "wire::fixed")]
    pub encrypted_cookie: [u8; COOKIE_LEN],
}

/// The client-authorisation part of the descriptor's first layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientAuthSection {
    /// The service's x25519 key for this descriptor only.
    #[serde(with = "wire::fixed")]
    pub ephemeral: [u8; 32],
    /// A multiple of [`AUTH_CLIENT_PAD`] entries, at most [`MAX_AUTH_CLIENTS`], client
    /// ids strictly ascending.
    #[serde(deserialize_with = "wire::bounded_vec::<_, AuthClientEntry, MAX_AUTH_CLIENTS>")]
    pub clients: Vec<AuthClientEntry>,
}

impl ClientAuthSection {
    /// Checks the count and the order (strict ascending: canonical, and no duplicates).
    pub fn check(&self) -> Result<(), &'static str> {
        let n = self.clients.len();
        if n == 0 || n % AUTH_CLIENT_PAD != 0 || n > MAX_AUTH_CLIENTS {
            return Err("client entries are not a non-zero multiple of 16, at most 32");
        }
        if self
            .clients
            .windows(2)
            .any(|w| matches!(w, [a, b] if a.client_id >= b.client_id))
        {
            return Err("client ids are not strictly ascending");
        }
        Ok(())
    }
}

/// What every derivation is bound to: the service (`A`), the period's key (`A'`), the
/// period and this descriptor's salt.
#[derive(Clone, Copy)]
pub(crate) struct DescContext<'a> {
    pub(crate) identity: &'a IdentityPublic,
    pub(crate) blinded: &'a BlindedPublic,
    pub(crate) period: TimePeriod,
    pub(crate) salt: &'a [u8],
}

impl DescContext<'_> {
    /// `label | A | A' | u64be(length) | u64be(N)`.
    fn info(&self, label: &[u8]) -> Vec<u8> {
        let mut info = Vec::with_capacity(label.len() + 80);
        info.extend_from_slice(label);
        info.extend_from_slice(self.identity.as_bytes());
        info.extend_from_slice(self.blinded.as_bytes());
        info.extend_from_slice(&self.period.length.to_be_bytes());
        info.extend_from_slice(&self.period.number.to_be_bytes());
        info
    }
}

/// `client_id | cookie_pad` for one (ephemeral, client) pair and its shared secret.
fn entry_keys(
    ctx: &DescContext<'_>,
    shared: &[u8; 32],
    ephemeral: &[u8; 32],
    client: &[u8; 32],
) -> Zeroizing<[u8; CLIENT_ID_LEN + COOKIE_LEN]> {
    let hk = Hkdf::<Sha256>::new(Some(ctx.salt), shared);
    let mut info = ctx.info(CLIENT_AUTH_LABEL);
    info.extend_from_slice(ephemeral);
    info.extend_from_slice(client);
    let mut out = Zeroizing::new([0u8; CLIENT_ID_LEN + COOKIE_LEN]);
    // 40 bytes is far below HKDF-SHA256's limit.
    let _ = hk.expand(&info, &mut out[..]);
    out
}

/// Splits derived keys into the id and the cookie XOR pad-applied value.
fn split_entry(
    keys: &[u8; CLIENT_ID_LEN + COOKIE_LEN],
    cookie: &[u8; COOKIE_LEN],
) -> AuthClientEntry {
    let mut client_id = [0u8; CLIENT_ID_LEN];
    let mut encrypted_cookie = [0u8; COOKIE_LEN];
    for (o, k) in client_id.iter_mut().zip(keys.iter()) {
        *o = *k;
    }
    for ((o, k), c) in encrypted_cookie
        .iter_mut()
        .zip(keys.iter().skip(CLIENT_ID_LEN))
        .zip(cookie.iter())
    {
        *o = k ^ c;
    }
    AuthClientEntry {
        client_id,
        encrypted_cookie,
    }
}

/// The service's side: a fresh cookie and a section giving it to each of `clients`
/// (distinct, at most [`MAX_AUTH_CLIENTS`]), padded with fake entries. The error says
/// what is wrong with the list.
pub(crate) fn seal_cookie<R: CryptoRng + ?Sized>(
    rng: &mut R,
    ctx: &DescContext<'_>,
    clients: &[ClientAuthPublic],
) -> Result<(ClientAuthSection, Zeroizing<[u8; COOKIE_LEN]>), &'static str> {
    if clients.is_empty() || clients.len() > MAX_AUTH_CLIENTS {
        return Err("1 to 32 authorised clients");
    }
    let ephemeral = OnionKeypair::generate(rng);
    let eph = *ephemeral.public().as_bytes();
    let mut cookie = Zeroizing::new([0u8; COOKIE_LEN]);
    rng.fill_bytes(&mut cookie[..]);
    let mut entries = Vec::with_capacity(MAX_AUTH_CLIENTS);
    for c in clients {
        let shared = ephemeral.diffie_hellman(c.as_bytes());
        if !shared.was_contributory() {
            return Err("an authorised client key is a low-order point");
        }
        let keys = entry_keys(ctx, shared.as_bytes(), &eph, c.as_bytes());
        entries.push(split_entry(&keys, &cookie));
    }
    let total = clients.len().div_ceil(AUTH_CLIENT_PAD) * AUTH_CLIENT_PAD;
    add_fakes(rng, &mut entries, total);
    let n = entries.len();
    entries.dedup_by(|a, b| a.client_id == b.client_id);
    if entries.len() != n {
        // Two equal ids: the same client listed twice (or a 2^-64 accident).
        return Err("an authorised client is listed twice");
    }
    let section = ClientAuthSection {
        ephemeral: eph,
        clients: entries,
    };
    section.check()?;
    Ok((section, cookie))
}

/// Fills `entries` up to `total` with uniformly random entries (as real ones look to
/// anyone else) and sorts them by id.
fn add_fakes<R: CryptoRng + ?Sized>(rng: &mut R, entries: &mut Vec<AuthClientEntry>, total: usize) {
    while entries.len() < total {
        let mut fake = AuthClientEntry {
            client_id: [0; CLIENT_ID_LEN],
            encrypted_cookie: [0; COOKIE_LEN],
        };
        rng.fill_bytes(&mut fake.client_id);
        rng.fill_bytes(&mut fake.encrypted_cookie);
        entries.push(fake);
    }
    entries.sort_by_key(|e| e.client_id);
}

/// The section of a service that authorises no client: 16 random entries under a fresh
/// ephemeral key, so its descriptor has the shape and size of one listing 1 to 16
/// clients (its inner layer is then sealed under [`NO_AUTH_COOKIE`]).
pub(crate) fn fake_section<R: CryptoRng + ?Sized>(rng: &mut R) -> ClientAuthSection {
    let mut entries = Vec::with_capacity(AUTH_CLIENT_PAD);
    add_fakes(rng, &mut entries, AUTH_CLIENT_PAD);
    // Two equal random ids (2^-64): drop one and draw again until 16 distinct.
    entries.dedup_by(|a, b| a.client_id == b.client_id);
    while entries.len() < AUTH_CLIENT_PAD {
        add_fakes(rng, &mut entries, AUTH_CLIENT_PAD);
        entries.dedup_by(|a, b| a.client_id == b.client_id);
    }
    ClientAuthSection {
        ephemeral: *OnionKeypair::generate(rng).public().as_bytes(),
        clients: entries,
    }
}

/// The entry `key` would have under `ephemeral`: its id, and (in `encrypted_cookie`) the
/// pad its cookie is XORed with. `None` if the exchange is not contributory.
pub(crate) fn expected_entry(
    ctx: &DescContext<'_>,
    ephemeral: &[u8; 32],
    key: &ClientAuthSecret,
) -> Option<AuthClientEntry> {
    let shared = key.0.diffie_hellman(ephemeral);
    if !shared.was_contributory() {
        return None;
    }
    let keys = entry_keys(ctx, shared.as_bytes(), ephemeral, key.0.public().as_bytes());
    Some(split_entry(&keys, &[0u8; COOKIE_LEN]))
}

/// The client's side: finds its entry and recovers the cookie; `None` if the key is not
/// listed.
pub(crate) fn open_cookie(
    ctx: &DescContext<'_>,
    section: &ClientAuthSection,
    key: &ClientAuthSecret,
) -> Option<Zeroizing<[u8; COOKIE_LEN]>> {
    let mine = expected_entry(ctx, &section.ephemeral, key)?;
    let entry = section
        .clients
        .iter()
        .find(|e| e.client_id == mine.client_id)?;
    let mut cookie = Zeroizing::new([0u8; COOKIE_LEN]);
    for ((o, e), p) in cookie
        .iter_mut()
        .zip(entry.encrypted_cookie.iter())
        .zip(mine.encrypted_cookie.iter())
    {
        *o = e ^ p;
    }
    Some(cookie)
}

/// The cookie of a descriptor whose service authorises no client: known to all, so the
/// inner layer is then as readable as the first (by anyone who knows the address). A real
/// cookie is 32 random bytes.
pub const NO_AUTH_COOKIE: [u8; COOKIE_LEN] = [0; COOKIE_LEN];

/// The inner layer's key: needs both `A` and the cookie.
pub(crate) fn auth_inner_key(
    ctx: &DescContext<'_>,
    cookie: &[u8; COOKIE_LEN],
) -> Zeroizing<[u8; 32]> {
    let mut ikm = Zeroizing::new([0u8; 32 + COOKIE_LEN]);
    for (o, b) in ikm
        .iter_mut()
        .zip(ctx.identity.as_bytes().iter().chain(cookie.iter()))
    {
        *o = *b;
    }
    let hk = Hkdf::<Sha256>::new(Some(ctx.salt), &ikm[..]);
    let mut key = Zeroizing::new([0u8; 32]);
    let _ = hk.expand(&ctx.info(AUTH_INNER_KEY_LABEL), &mut key[..]);
    key
}
