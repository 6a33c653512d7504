//! Fixed keys and handshake states of the handshake fuzz targets (`ntor_client_msg`,
//! `ntor_reply`, `fast_handshake`, `hs_ntor`, `certs`). The same file is compiled into
//! `tests/handshake_fuzz_seeds.rs` (by `#[path]`), which writes the seeds in
//! `fuzz/seeds/TARGET/` from these values and checks that the committed seeds are still
//! accepted in full by the fixed keys and states. Change a value here and the seeds must be
//! regenerated (the test says so).
//!
//! Everything is deterministic: a target must behave the same on every run of an input, and
//! a seed must reach the deepest check (a MAC or AEAD tag that only the fixed keys accept).
//! Never use any of this outside tests and fuzzing: the "randomness" is a counter.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::OnceLock;

use allium::crypto::fast_handshake::{fast_client_start, FastClientState};
use allium::crypto::{
    client_handshake_start_with_secret, ClientHandshakeState, IdentityKeypair, OnionKeyCert,
    OnionKeypair, RelayOnionKeys, VerifiedOnionKey,
};
use allium::link::LinkKeyCert;
use allium::onion::handshake::{client_introduce, HsClientState, IntroKeys};
use allium::onion::intro::{IntroducePlaintext, INTRO_PLAINTEXT_LEN};

/// The clock of every certificate check.
pub const NOW: u64 = 1_700_000_000;
/// Expiry of every fixed certificate (after [`NOW`]).
pub const EXPIRES: u64 = NOW + 1000;
/// The relay's ephemeral secret `y` in `allium-ntor-1`.
pub const RELAY_Y: [u8; 32] = [0x44; 32];
/// The client's ephemeral secret `x` of the fixed `allium-ntor-1` client state.
pub const CLIENT_X: [u8; 32] = [0x33; 32];
/// The client extension of the fixed `allium-ntor-1` client state.
pub const CLIENT_EXT: &[u8] = b"fuzz client extension";
/// Seed of the fixed `allium-fast-1` client's `X`.
pub const FAST_CLIENT_SEED: u8 = 0x10;
/// Seed of the `allium-fast-1` relay's `Y`.
pub const FAST_RELAY_SEED: u8 = 0x20;
/// Seed of the fixed `allium-hs-ntor-1` client's `x`.
pub const HS_CLIENT_SEED: u8 = 0x30;
/// Seed of the `allium-hs-ntor-1` service's `y`.
pub const HS_SERVICE_SEED: u8 = 0x40;
/// The subcredential of the fixed introduction point.
pub const HS_SUBCRED: [u8; 32] = [0x77; 32];

/// A deterministic byte stream posing as a `CryptoRng` (`seed, seed+1, seed+2, ...`): the
/// handshake APIs take an RNG, and the fuzz targets need the same `x`/`y` on every run.
/// Built here rather than taken from `rand` so the seeds do not depend on an RNG algorithm
/// that may change between `rand` versions.
pub struct CounterRng(pub u8);

impl rand::TryRng for CounterRng {
    type Error = core::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for b in dst {
            *b = self.0;
            self.0 = self.0.wrapping_add(1);
        }
        Ok(())
    }
}

impl rand::TryCryptoRng for CounterRng {}

/// The relay's identity key.
pub fn identity() -> &'static IdentityKeypair {
    static K: OnceLock<IdentityKeypair> = OnceLock::new();
    K.get_or_init(|| IdentityKeypair::from_secret_bytes(&[0x11; 32]))
}

fn onion_secret(previous: bool) -> [u8; 32] {
    if previous {
        [0x23; 32]
    } else {
        [0x22; 32]
    }
}

/// The relay's onion keys: a current and a previous one, both accepted.
pub fn relay_keys() -> &'static RelayOnionKeys {
    static K: OnceLock<RelayOnionKeys> = OnceLock::new();
    K.get_or_init(|| {
        RelayOnionKeys::new(
            identity().public(),
            OnionKeypair::from_secret_bytes(&onion_secret(false)),
            Some(OnionKeypair::from_secret_bytes(&onion_secret(true))),
        )
    })
}

/// The onion-key certificate of the current (`previous == false`) or previous onion key.
pub fn onion_cert(previous: bool) -> OnionKeyCert {
    let onion = OnionKeypair::from_secret_bytes(&onion_secret(previous));
    OnionKeyCert::sign(identity(), onion.public(), EXPIRES)
}

/// The client's view of the current or previous onion key.
pub fn verified(previous: bool) -> VerifiedOnionKey {
    onion_cert(previous)
        .verify(NOW)
        .expect("the fixed certificate verifies")
}

/// The relay's reply extension: the client's extension echoed (it always fits: the
/// largest client extension is smaller than the largest reply extension).
pub fn reply_ext(client_ext: &[u8]) -> Vec<u8> {
    client_ext.to_vec()
}

/// A fresh copy of the fixed `allium-ntor-1` client state (the current onion key, `x` =
/// [`CLIENT_X`], extension [`CLIENT_EXT`]) and its client message.
pub fn ntor_client() -> (ClientHandshakeState, Vec<u8>) {
    static V: OnceLock<VerifiedOnionKey> = OnceLock::new();
    let onion = V.get_or_init(|| verified(false));
    client_handshake_start_with_secret(&CLIENT_X, &identity().public(), onion, CLIENT_EXT)
        .expect("the fixed client message")
}

/// A fresh copy of the fixed `allium-fast-1` client state and its CREATE hdata.
pub fn fast_client() -> (FastClientState, Vec<u8>) {
    fast_client_start(&mut CounterRng(FAST_CLIENT_SEED))
}

/// The introduction point's auth key.
pub fn hs_auth() -> &'static IdentityKeypair {
    static K: OnceLock<IdentityKeypair> = OnceLock::new();
    K.get_or_init(|| IdentityKeypair::from_secret_bytes(&[0x55; 32]))
}

/// The service's encryption key `B` at that introduction point.
pub fn hs_enc() -> &'static OnionKeypair {
    static K: OnceLock<OnionKeypair> = OnceLock::new();
    K.get_or_init(|| OnionKeypair::from_secret_bytes(&[0x66; 32]))
}

/// What client and service know of the introduction point.
pub fn hs_keys() -> IntroKeys {
    IntroKeys {
        auth_key: hs_auth().public(),
        enc_key: *hs_enc().public(),
        subcred: HS_SUBCRED,
    }
}

/// A well-formed INTRODUCE plaintext (the fixed relay as rendezvous point, with a puzzle
/// nonce), so a seed decrypts to something the plaintext parser accepts.
pub fn hs_plaintext() -> [u8; INTRO_PLAINTEXT_LEN] {
    let addr: SocketAddr = "127.0.0.9:9001".parse().expect("address");
    IntroducePlaintext {
        cookie: [0xc0; 20],
        rend_identity: identity().public(),
        rend_addr: addr,
        rend_onion_cert: onion_cert(false),
        pow: Some(allium::onion::pow::PowSolution {
            nonce: [7; 16],
            effort: 1000,
            solution: [8; 16],
        }),
    }
    .encode()
    .expect("the fixed plaintext encodes")
}

/// A fresh copy of the fixed `allium-hs-ntor-1` client state, its `X` and its ciphertext.
pub fn hs_client() -> (HsClientState, [u8; 32], Vec<u8>) {
    static P: OnceLock<[u8; INTRO_PLAINTEXT_LEN]> = OnceLock::new();
    let plaintext = P.get_or_init(hs_plaintext);
    client_introduce(&mut CounterRng(HS_CLIENT_SEED), &hs_keys(), plaintext)
        .expect("the fixed introduction")
}

/// The link static key the fixed link-key certificate vouches for (an x25519 public key).
pub fn link_static() -> [u8; 32] {
    static K: OnceLock<[u8; 32]> = OnceLock::new();
    *K.get_or_init(|| {
        *OnionKeypair::from_secret_bytes(&[0x88; 32])
            .public()
            .as_bytes()
    })
}

/// The fixed relay's link-key certificate for [`link_static`].
pub fn link_cert() -> LinkKeyCert {
    LinkKeyCert::sign(identity().signing_key(), &link_static(), EXPIRES)
}
