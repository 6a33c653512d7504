//! Shared fixtures for the onion-service tests and fuzz seeds: fixed keys, a descriptor.
#![allow(dead_code)]

use allium::crypto::{IdentityKeypair, OnionKeyCert, OnionKeypair};
use allium::onion::descriptor::{
    DescriptorParams, InnerDescriptor, IntroPointInfo, PowParams, SignedOnionDescriptor,
};
use allium::onion::{BlindedKeypair, OnionAddress, PeriodParams, TimePeriod};

/// The time the fixtures (and fuzz seeds) are made for.
pub const NOW: u64 = 1_700_000_000;

pub fn key(n: u8) -> IdentityKeypair {
    let mut seed = [0u8; 32];
    seed[0] = n;
    seed[1] = 0x77;
    IdentityKeypair::from_secret_bytes(&seed)
}

pub fn onion_key(n: u8) -> OnionKeypair {
    // Byte 0 is clamped by X25519 (its low 3 bits ignored), so vary byte 2.
    let mut seed = [0u8; 32];
    seed[2] = n;
    seed[1] = 0x99;
    OnionKeypair::from_secret_bytes(&seed)
}

pub fn service() -> IdentityKeypair {
    key(200)
}

pub fn address() -> OnionAddress {
    OnionAddress::from_identity(service().public()).unwrap()
}

pub fn period() -> TimePeriod {
    PeriodParams::default().period_at(NOW).unwrap()
}

pub fn intro_point(n: u8) -> IntroPointInfo {
    let relay = key(n);
    IntroPointInfo {
        relay_identity: relay.public(),
        link_addrs: vec![format!("127.0.0.{}:9001", n + 1).parse().unwrap()],
        onion_cert: OnionKeyCert::sign(&relay, onion_key(n).public(), NOW + 86_400),
        auth_key: key(100 + n).public(),
        enc_key: *onion_key(100 + n).public(),
    }
}

pub fn inner(points: u8, pow: bool) -> InnerDescriptor {
    InnerDescriptor {
        intro_points: (0..points).map(intro_point).collect(),
        pow: pow.then_some(PowParams {
            suggested_effort: 120,
            seed: [5; 32],
            expires: NOW + 3600,
        }),
    }
}

pub fn params(revision: u64) -> DescriptorParams {
    DescriptorParams {
        revision,
        created: NOW - 60,
        lifetime: 3 * 3600,
    }
}

/// A fixed client-authorisation key (the fuzz target's is `client_auth_key(0)`).
pub fn client_auth_key(n: u8) -> allium::onion::ClientAuthSecret {
    let mut s = [0u8; 32];
    s[3] = n;
    s[4] = 0x42;
    allium::onion::ClientAuthSecret::from_secret_bytes(&s)
}

pub fn descriptor_for_clients(
    points: u8,
    pow: bool,
    revision: u64,
    clients: &[allium::onion::ClientAuthPublic],
) -> SignedOnionDescriptor {
    let blinded = BlindedKeypair::derive(&service(), period()).unwrap();
    SignedOnionDescriptor::build_for_clients(
        &mut rand::rng(),
        &service(),
        &blinded,
        &inner(points, pow),
        &params(revision),
        clients,
    )
    .unwrap()
}

pub fn descriptor(points: u8, pow: bool, revision: u64) -> SignedOnionDescriptor {
    let blinded = BlindedKeypair::derive(&service(), period()).unwrap();
    SignedOnionDescriptor::build(
        &mut rand::rng(),
        &service(),
        &blinded,
        &inner(points, pow),
        &params(revision),
    )
    .unwrap()
}
