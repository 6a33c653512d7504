//! Onion-service messages and the end-to-end handshake: each message round-trips through a
//! relay cell and fits in one; mutations are refused or re-encode canonically; today's
//! relay and client command sets refuse them; ESTABLISH_INTRO is bound to its circuit;
//! the handshake gives both ends the same forward-secret keys and detects tampering.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

mod common;

use allium::cell::consts::RELAY_BODY_LEN;
use allium::cell::onion_msg::{
    EstablishIntro, IntroDosParams, Introduce, IntroduceAckStatus, OnionMsg, Rendezvous1,
};
use allium::cell::relay_contexts::{
    AtClient, AtIntroPoint, AtOnionClient, AtRelay, AtRendPoint, AtServiceIntro,
};
use allium::cell::relay_msg::MAX_RELAY_DATA;
use allium::cell::{CellError, RelayCell, RelayMsg};
use allium::crypto::circuit_keys::CircuitKeys;
use allium::crypto::{CellKind, ClientLayers, Recognition, RelayCrypto};
use allium::onion::handshake::{
    client_introduce, service_open_introduce, subcredential, HsHandshakeError, IntroKeys,
};
use allium::onion::intro::{
    build_establish_intro, verify_establish_intro, IntroError, IntroducePlaintext,
    INTRO_PLAINTEXT_LEN,
};
use allium::onion::BlindedKeypair;
use common::onion::*;
use proptest::prelude::*;

fn intro_keys() -> IntroKeys {
    let blinded = BlindedKeypair::derive(&service(), period()).unwrap();
    IntroKeys {
        auth_key: key(100).public(),
        enc_key: *onion_key(100).public(),
        subcred: subcredential(&service().public(), blinded.public()),
    }
}

fn plaintext(pow: bool) -> IntroducePlaintext {
    let p = intro_point(7);
    IntroducePlaintext {
        cookie: [0xc0; 20],
        rend_identity: p.relay_identity,
        rend_addr: "[2001:db8::7]:443".parse().unwrap(),
        rend_onion_cert: p.onion_cert,
        pow: pow.then_some(allium::onion::pow::PowSolution {
            nonce: [0x11; 16],
            effort: 77,
            solution: [0x22; 16],
        }),
    }
}

fn sample_msgs() -> Vec<OnionMsg> {
    let auth = key(100);
    let establish = build_establish_intro(
        &auth,
        Some(IntroDosParams {
            rate_per_sec: 25,
            burst: 200,
        }),
        &[3; 32],
    )
    .unwrap();
    let (_, x, ct) = client_introduce(
        &mut rand::rng(),
        &intro_keys(),
        &plaintext(true).encode().unwrap(),
    )
    .unwrap();
    let intro = Introduce::new(*auth.public().as_bytes(), x, ct).unwrap();
    vec![
        OnionMsg::EstablishIntro(establish),
        OnionMsg::IntroEstablished,
        OnionMsg::Introduce1(intro.clone()),
        OnionMsg::Introduce2(intro),
        OnionMsg::IntroduceAck(IntroduceAckStatus::RateLimited),
        OnionMsg::EstablishRendezvous([0xc0; 20]),
        OnionMsg::RendezvousEstablished,
        OnionMsg::Rendezvous1(Rendezvous1 {
            cookie: [0xc0; 20],
            handshake: [0x42; 64],
        }),
        OnionMsg::Rendezvous2([0x42; 64]),
    ]
}

fn body(msg: &OnionMsg) -> [u8; RELAY_BODY_LEN] {
    RelayCell::new(None, RelayMsg::Onion(msg.clone()))
        .unwrap()
        .encode()
        .unwrap()
}

#[test]
fn messages_round_trip_and_fit_one_cell() {
    for msg in sample_msgs() {
        let b = body(&msg);
        let len = usize::from(u16::from_be_bytes([b[19], b[20]]));
        println!(
            "{:?}: {len} of {MAX_RELAY_DATA} data bytes",
            RelayMsg::Onion(msg.clone()).cmd()
        );
        assert!(len <= MAX_RELAY_DATA);
        let parsed = RelayCell::<RelayMsg>::parse_typed(&b).unwrap();
        assert_eq!(parsed.msg(), &RelayMsg::Onion(msg));
        assert_eq!(parsed.encode().unwrap(), b);
    }
}

#[test]
fn current_relays_and_clients_refuse_onion_commands() {
    for msg in sample_msgs() {
        let b = body(&msg);
        assert!(matches!(
            RelayCell::<AtRelay>::parse_typed(&b),
            Err(CellError::CommandNotAllowed { .. })
        ));
        assert!(matches!(
            RelayCell::<AtClient>::parse_typed(&b),
            Err(CellError::CommandNotAllowed { .. })
        ));
    }
    // Each onion context admits only its own commands.
    assert!(AtIntroPoint::SET.contains(32) && AtIntroPoint::SET.contains(34));
    assert!(!AtIntroPoint::SET.contains(35) && !AtIntroPoint::SET.contains(39));
    assert!(AtRendPoint::SET.contains(37) && AtRendPoint::SET.contains(39));
    assert!(!AtRendPoint::SET.contains(40) && !AtRendPoint::SET.contains(34));
    assert!(AtOnionClient::SET.contains(40) && !AtOnionClient::SET.contains(39));
    assert!(AtServiceIntro::SET.contains(35) && !AtServiceIntro::SET.contains(34));
}

#[test]
fn onion_messages_refuse_stream_ids_and_bad_fields() {
    let mut b = body(&OnionMsg::EstablishRendezvous([1; 20]));
    b[18] = 1; // stream id 1
    assert_eq!(
        RelayCell::<RelayMsg>::parse_typed(&b),
        Err(CellError::UnexpectedStreamId)
    );
    // DoS parameters: rate 0, rate > burst, burst above the cap.
    for (rate, burst) in [(0, 10), (11, 10), (1, 1_000_001)] {
        let e = EstablishIntro {
            auth_key: *key(100).public().as_bytes(),
            dos: Some(IntroDosParams {
                rate_per_sec: rate,
                burst,
            }),
            mac: [0; 32],
            signature: [0; 64],
        };
        assert!(
            RelayCell::new(None, RelayMsg::Onion(OnionMsg::EstablishIntro(e)))
                .unwrap()
                .encode()
                .is_err()
        );
    }
    // INTRODUCE with a ciphertext shorter than its tag.
    assert!(Introduce::new([1; 32], [2; 32], vec![0; 15]).is_err());
}

#[test]
fn establish_intro_is_bound_to_its_circuit_and_key() {
    let auth = key(100);
    let binding = CircuitKeys::from_bytes(&[9; 192]).binding();
    let msg = build_establish_intro(&auth, None, &binding).unwrap();
    assert_eq!(
        verify_establish_intro(&msg, &binding).unwrap(),
        auth.public()
    );
    let other = CircuitKeys::from_bytes(&[8; 192]).binding();
    assert_eq!(
        verify_establish_intro(&msg, &other),
        Err(IntroError::BadMac)
    );
    let mut forged = msg.clone();
    forged.signature[0] ^= 1;
    assert_eq!(
        verify_establish_intro(&forged, &binding),
        Err(IntroError::BadSignature)
    );
    // Swapping in another auth key (with a correct MAC) fails the signature.
    let mut swapped = msg.clone();
    swapped.auth_key = *key(101).public().as_bytes();
    let redo = build_establish_intro(&key(101), None, &binding).unwrap();
    swapped.mac = redo.mac;
    assert_eq!(
        verify_establish_intro(&swapped, &binding),
        Err(IntroError::BadSignature)
    );
    // Changing the DoS parameters invalidates the MAC.
    let mut dos = msg;
    dos.dos = Some(IntroDosParams {
        rate_per_sec: 1,
        burst: 1,
    });
    assert_eq!(
        verify_establish_intro(&dos, &binding),
        Err(IntroError::BadMac)
    );
}

#[test]
fn introduce_plaintext_round_trip_and_strictness() {
    for pow in [false, true] {
        let p = plaintext(pow);
        let bytes = p.encode().unwrap();
        assert_eq!(bytes.len(), INTRO_PLAINTEXT_LEN);
        assert_eq!(IntroducePlaintext::parse(&bytes).unwrap(), p);
    }
    let bytes = plaintext(false).encode().unwrap();
    let mut padded = bytes;
    padded[INTRO_PLAINTEXT_LEN - 1] = 1;
    assert!(IntroducePlaintext::parse(&padded).is_err());
    assert!(IntroducePlaintext::parse(&bytes[1..]).is_err());
    let mut wrong = plaintext(false);
    wrong.rend_identity = key(1).public();
    assert!(wrong.encode().is_err());
}

/// The full handshake: INTRODUCE1 → service → RENDEZVOUS1 → client. Both ends get the same
/// keys, proven by passing relay cells both ways through the virtual hop.
#[test]
fn handshake_gives_both_ends_the_same_keys() {
    let keys = intro_keys();
    let pt = plaintext(true).encode().unwrap();
    let (client, x, ct) = client_introduce(&mut rand::rng(), &keys, &pt).unwrap();
    let intro = Introduce::new(*keys.auth_key.as_bytes(), x, ct).unwrap();
    // The introduction travels as INTRODUCE1, then INTRODUCE2 (same bytes).
    let at_service =
        RelayCell::<AtServiceIntro>::parse_typed(&body(&OnionMsg::Introduce2(intro))).unwrap();
    let AtServiceIntro::Introduce2(intro) = at_service.msg() else {
        panic!("not INTRODUCE2")
    };
    let (opened, state) =
        service_open_introduce(&onion_key(100), &keys, intro.client_x(), intro.encrypted())
            .unwrap();
    assert_eq!(IntroducePlaintext::parse(&opened).unwrap(), plaintext(true));
    let (service_keys, reply) = state.rendezvous(&mut rand::rng()).unwrap();
    let client_keys = client.finish(&reply).unwrap();

    let mut client_layers = ClientLayers::new();
    client_layers.push_hop(&client_keys).unwrap();
    let mut service_layer = RelayCrypto::new(&service_keys);
    let data = RelayCell::new(None, RelayMsg::Drop)
        .unwrap()
        .encode()
        .unwrap();
    let mut cell = data;
    client_layers
        .encrypt_forward(&mut cell, 0, CellKind::Relay)
        .unwrap();
    assert_ne!(cell, data);
    assert!(matches!(
        service_layer
            .decrypt_forward(CellKind::Relay, &mut cell)
            .unwrap(),
        Recognition::Recognised { .. }
    ));
    assert_eq!(cell, data);
    service_layer.originate_backward(&mut cell).unwrap();
    assert_eq!(client_layers.decrypt_backward(&mut cell).unwrap().0, 0);
}

#[test]
fn handshake_detects_tampering() {
    let keys = intro_keys();
    let pt = plaintext(false).encode().unwrap();
    // A modified ciphertext, a different X, the wrong service key: no decryption.
    let (_, x, ct) = client_introduce(&mut rand::rng(), &keys, &pt).unwrap();
    let mut bad = ct.clone();
    bad[5] ^= 1;
    assert_eq!(
        service_open_introduce(&onion_key(100), &keys, &x, &bad).unwrap_err(),
        HsHandshakeError::Decrypt
    );
    let mut other_x = x;
    other_x[0] ^= 2;
    assert!(service_open_introduce(&onion_key(100), &keys, &other_x, &ct).is_err());
    assert_eq!(
        service_open_introduce(&onion_key(101), &keys, &x, &ct).unwrap_err(),
        HsHandshakeError::Decrypt
    );
    // Another subcredential (a client who does not know the address): no decryption.
    let wrong_sub = IntroKeys {
        subcred: [0; 32],
        ..keys
    };
    assert_eq!(
        service_open_introduce(&onion_key(100), &wrong_sub, &x, &ct).unwrap_err(),
        HsHandshakeError::Decrypt
    );
    // Low-order X: refused.
    assert_eq!(
        service_open_introduce(&onion_key(100), &keys, &[0; 32], &ct).unwrap_err(),
        HsHandshakeError::NonContributory
    );
    // A modified reply (auth or Y) is detected by the client; so is a zero Y.
    for flip in [0usize, 40] {
        let (client, x, ct) = client_introduce(&mut rand::rng(), &keys, &pt).unwrap();
        let (_, state) = service_open_introduce(&onion_key(100), &keys, &x, &ct).unwrap();
        let (_, mut reply) = state.rendezvous(&mut rand::rng()).unwrap();
        reply[flip] ^= 1;
        assert!(client.finish(&reply).is_err(), "flip at {flip}");
    }
    let (client, _, _) = client_introduce(&mut rand::rng(), &keys, &pt).unwrap();
    assert_eq!(
        client.finish(&[0; 64]).unwrap_err(),
        HsHandshakeError::NonContributory
    );
    // A low-order service key in a descriptor is refused before anything is sent.
    let weak = IntroKeys {
        enc_key: allium::crypto::OnionPublic::from_bytes([0; 32]),
        ..keys
    };
    assert_eq!(
        client_introduce(&mut rand::rng(), &weak, &pt).unwrap_err(),
        HsHandshakeError::NonContributory
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A single-byte change of any onion message's relay body is refused, or parses to a
    /// message that re-encodes to exactly the mutated bytes (one encoding per value).
    #[test]
    fn mutations_are_refused_or_canonical(which in 0usize..9, pos in 16usize..RELAY_BODY_LEN, delta in 1..=255u8) {
        let msgs = sample_msgs();
        let mut b = body(&msgs[which % msgs.len()]);
        b[pos] = b[pos].wrapping_add(delta);
        if let Ok(cell) = RelayCell::<RelayMsg>::parse_typed(&b) {
            prop_assert_eq!(cell.encode().unwrap(), b);
        }
    }

    /// Any puzzle solution (effort 1 and up) encodes and parses back; effort 0 is not a
    /// solution and is refused on parse.
    #[test]
    fn introduce_plaintext_pow_round_trips(nonce in any::<[u8; 16]>(), effort in any::<u32>(), solution in any::<[u8; 16]>()) {
        let mut p = plaintext(true);
        p.pow = Some(allium::onion::pow::PowSolution { nonce, effort, solution });
        let bytes = p.encode().unwrap();
        match IntroducePlaintext::parse(&bytes) {
            Ok(back) => prop_assert_eq!(back, p),
            Err(_) => prop_assert_eq!(effort, 0),
        }
    }

    /// Arbitrary plaintexts never panic the INTRODUCE plaintext parser; accepted ones
    /// re-encode identically.
    #[test]
    fn introduce_plaintext_parser_is_total(bytes in prop::collection::vec(any::<u8>(), INTRO_PLAINTEXT_LEN..=INTRO_PLAINTEXT_LEN)) {
        if let Ok(p) = IntroducePlaintext::parse(&bytes) {
            prop_assert_eq!(p.encode().unwrap().to_vec(), bytes);
        }
    }
}

/// An introduction point replaying INTRODUCE2 is refused by the service's cache; a full
/// cache refuses rather than forgets.
#[test]
fn replayed_introductions_are_refused() {
    use allium::onion::replay::{ReplayCache, ReplayError};
    let keys = intro_keys();
    let pt = plaintext(false).encode().unwrap();
    let (_, x, ct) = client_introduce(&mut rand::rng(), &keys, &pt).unwrap();
    let mut cache = ReplayCache::new(2);
    for attempt in 0..2 {
        // The replay decrypts fine; only the cache tells it apart.
        service_open_introduce(&onion_key(100), &keys, &x, &ct).unwrap();
        let r = cache.check_and_insert(&x);
        if attempt == 0 {
            assert_eq!(r, Ok(()));
        } else {
            assert_eq!(r, Err(ReplayError::Replayed));
        }
    }
    assert_eq!(cache.check_and_insert(&[1; 32]), Ok(()));
    assert_eq!(cache.check_and_insert(&[2; 32]), Err(ReplayError::Full));
    assert_eq!(cache.len(), 2);
}
