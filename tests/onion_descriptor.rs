//! Onion-service descriptors: build → parse → verify, and every refusal the issue asks
//! for (forged, expired, lifetime over 3 h, revision rollback, wrong service), plus a
//! mutation property: no single-byte change of a published descriptor verifies.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

mod common;

use allium::codec;
use allium::onion::descriptor::{
    DescriptorParams, OnionDescriptorBody, OnionDescriptorError as E, SignedOnionDescriptor,
    UncheckedOnionDescriptor, MAX_ONION_DESCRIPTOR_LEN,
};
use allium::onion::{BlindedKeypair, OnionAddress, PeriodParams, TimePeriod};
use common::onion::*;
use proptest::prelude::*;

const SKEW: u64 = 300;

fn verify(bytes: &[u8], now: u64, min_rev: u64) -> Result<(), E> {
    UncheckedOnionDescriptor::parse(bytes)?
        .verify_for(&address(), &PeriodParams::default(), now, SKEW, min_rev)
        .map(|_| ())
}

#[test]
fn round_trip_and_sizes() {
    for (points, pow) in [(1, false), (3, true), (10, true)] {
        let signed = descriptor(points, pow, 7);
        let bytes = signed.to_bytes().unwrap();
        println!(
            "onion descriptor with {points} introduction point(s), pow={pow}: {} bytes",
            bytes.len()
        );
        assert!(bytes.len() <= MAX_ONION_DESCRIPTOR_LEN);
        let (outer, inner) = UncheckedOnionDescriptor::parse(&bytes)
            .unwrap()
            .verify_for(&address(), &PeriodParams::default(), NOW, SKEW, 7)
            .unwrap();
        assert_eq!(inner, common::onion::inner(points, pow));
        assert_eq!(outer.body().revision, 7);
        assert_eq!(outer.signed().to_bytes().unwrap(), bytes);
    }
    // Padding hides the number of introduction points between 1 and 3.
    assert_eq!(
        descriptor(1, false, 1).to_bytes().unwrap().len(),
        descriptor(3, false, 1).to_bytes().unwrap().len()
    );
}

#[test]
fn directory_relays_verify_without_reading() {
    let bytes = descriptor(2, false, 3).to_bytes().unwrap();
    let u = UncheckedOnionDescriptor::parse(&bytes).unwrap();
    let claimed = u.claimed().clone();
    let v = u.verify_outer(NOW, SKEW, 0).unwrap();
    assert_eq!(v.body(), &claimed);
    // The intro points' keys appear nowhere in the cleartext.
    let needle = intro_point(0).auth_key;
    assert!(!bytes.windows(32).any(|w| w == needle.as_bytes()));
    // Someone who knows only A' (or another address) cannot decrypt.
    let other = OnionAddress::from_identity(key(201).public()).unwrap();
    assert!(matches!(v.decrypt(&other), Err(E::WrongService)));
    assert_eq!(v.decrypt(&address()).unwrap(), inner(2, false));
}

#[test]
fn forged_descriptors_are_refused() {
    // Signed by another service's blinded key: verifies as that service's descriptor, but
    // not as ours (its A' is not derived from our address).
    let impostor = key(201);
    let blinded = BlindedKeypair::derive(&impostor, period()).unwrap();
    let forged = SignedOnionDescriptor::build(
        &mut rand::rng(),
        &impostor,
        &blinded,
        &inner(1, false),
        &params(1),
    )
    .unwrap()
    .to_bytes()
    .unwrap();
    assert!(matches!(verify(&forged, NOW, 0), Err(E::WrongService)));

    // Our A' in the body but signed by someone else: bad signature.
    let good = descriptor(1, false, 1).to_bytes().unwrap();
    let u = UncheckedOnionDescriptor::parse(&good).unwrap();
    let body = codec::encode(u.claimed()).unwrap();
    let mut msg = b"allium-onion-descriptor-v1".to_vec();
    msg.extend_from_slice(&body);
    let sig = blinded.sign(&msg);
    let mut resigned = (body.len() as u64).to_be_bytes().to_vec();
    resigned.extend_from_slice(&body);
    resigned.extend_from_slice(&sig);
    assert!(matches!(verify(&resigned, NOW, 0), Err(E::BadSignature)));

    // Our own key, but the descriptor's body names the next period's A' while signed for
    // this one: bad signature (the key in the body is the one checked).
    let mut body_next: OnionDescriptorBody = u.claimed().clone();
    let next = TimePeriod {
        number: period().number + 1,
        ..period()
    };
    body_next.blinded_key = *BlindedKeypair::derive(&service(), next).unwrap().public();
    let body = codec::encode(&body_next).unwrap();
    let mut msg = b"allium-onion-descriptor-v1".to_vec();
    msg.extend_from_slice(&body);
    let sig = BlindedKeypair::derive(&service(), period())
        .unwrap()
        .sign(&msg);
    let mut wrong = (body.len() as u64).to_be_bytes().to_vec();
    wrong.extend_from_slice(&body);
    wrong.extend_from_slice(&sig);
    assert!(matches!(verify(&wrong, NOW, 0), Err(E::BadSignature)));
}

#[test]
fn expired_and_future_descriptors_are_refused() {
    let bytes = descriptor(1, false, 1).to_bytes().unwrap();
    let created = NOW - 60;
    let expires = created + 3 * 3600;
    assert!(verify(&bytes, expires + SKEW - 1, 0).is_ok());
    assert!(matches!(
        verify(&bytes, expires + SKEW, 0),
        Err(E::Expired { .. })
    ));
    assert!(matches!(
        verify(&bytes, created - SKEW - 1, 0),
        Err(E::FutureDated { .. })
    ));
    // A descriptor two periods old is refused even if its own times were fine.
    let far = NOW + 2 * 86_400;
    let blinded = BlindedKeypair::derive(&service(), period()).unwrap();
    let stale = SignedOnionDescriptor::build(
        &mut rand::rng(),
        &service(),
        &blinded,
        &inner(1, false),
        &DescriptorParams {
            revision: 1,
            created: far,
            lifetime: 3600,
        },
    )
    .unwrap()
    .to_bytes()
    .unwrap();
    assert!(matches!(verify(&stale, far, 0), Err(E::WrongPeriod { .. })));
}

#[test]
fn lifetime_over_three_hours_is_refused() {
    let blinded = BlindedKeypair::derive(&service(), period()).unwrap();
    for lifetime in [0, 3 * 3600 + 1, u32::MAX] {
        let built = SignedOnionDescriptor::build(
            &mut rand::rng(),
            &service(),
            &blinded,
            &inner(1, false),
            &DescriptorParams {
                revision: 1,
                created: NOW,
                lifetime,
            },
        );
        assert!(matches!(built, Err(E::BadLifetime(l)) if l == lifetime));
    }
    // A validly signed body claiming 3 h + 1 s is refused by the parser.
    let good = descriptor(1, false, 1).to_bytes().unwrap();
    let mut body = UncheckedOnionDescriptor::parse(&good)
        .unwrap()
        .claimed()
        .clone();
    body.lifetime = 3 * 3600 + 1;
    let body = codec::encode(&body).unwrap();
    let mut msg = b"allium-onion-descriptor-v1".to_vec();
    msg.extend_from_slice(&body);
    let sig = blinded.sign(&msg);
    let mut long = (body.len() as u64).to_be_bytes().to_vec();
    long.extend_from_slice(&body);
    long.extend_from_slice(&sig);
    assert!(matches!(
        UncheckedOnionDescriptor::parse(&long),
        Err(E::BadLifetime(10_801))
    ));
}

#[test]
fn revision_rollback_is_refused() {
    let bytes = descriptor(1, false, 5).to_bytes().unwrap();
    assert!(verify(&bytes, NOW, 5).is_ok());
    assert!(matches!(
        verify(&bytes, NOW, 6),
        Err(E::RevisionRollback {
            revision: 5,
            min: 6
        })
    ));
}

#[test]
fn inner_rules_are_enforced_when_building() {
    let blinded = BlindedKeypair::derive(&service(), period()).unwrap();
    let mut bad = inner(2, false);
    bad.intro_points[1].auth_key = bad.intro_points[0].auth_key;
    let mut empty = inner(1, false);
    empty.intro_points.clear();
    let mut wrong_cert = inner(1, false);
    wrong_cert.intro_points[0].relay_identity = key(50).public();
    for inner in [bad, empty, wrong_cert, common::onion::inner(11, false)] {
        assert!(matches!(
            SignedOnionDescriptor::build(
                &mut rand::rng(),
                &service(),
                &blinded,
                &inner,
                &params(1)
            ),
            Err(E::BadInner(_))
        ));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Changing any one byte of a published descriptor makes it fail to parse or verify.
    #[test]
    fn single_byte_mutations_never_verify(pos in any::<prop::sample::Index>(), delta in 1..=255u8) {
        let bytes = fixture();
        let mut m = bytes.clone();
        let i = pos.index(m.len());
        m[i] = m[i].wrapping_add(delta);
        prop_assert!(verify(&m, NOW, 0).is_err(), "mutation at {} verified", i);
    }

    /// Arbitrary bytes never panic the parser.
    #[test]
    fn parser_is_total(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = UncheckedOnionDescriptor::parse(&bytes);
    }
}

fn fixture() -> Vec<u8> {
    use std::sync::OnceLock;
    static FIXTURE: OnceLock<Vec<u8>> = OnceLock::new();
    FIXTURE
        .get_or_init(|| descriptor(2, true, 9).to_bytes().unwrap())
        .clone()
}
