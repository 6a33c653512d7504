//! The handshake through the public API, feeding the layered crypto.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use allium::cell::consts::{RELAY_BODY_LEN, RELAY_TAG_LEN};
use allium::crypto::{
    client_handshake_start, relay_handshake, CellKind, CertError, ClientLayers, HandshakeError,
    IdentityKeypair, OnionKeyCert, OnionKeypair, Recognition, RelayCrypto, RelayOnionKeys,
};

const NOW: u64 = 1_700_000_000;

struct Relay {
    keys: RelayOnionKeys,
    cert: Vec<u8>,
}

fn relay() -> Relay {
    let mut rng = rand::rng();
    let id = IdentityKeypair::generate(&mut rng);
    let onion = OnionKeypair::generate(&mut rng);
    let cert = OnionKeyCert::sign(&id, onion.public(), NOW + 3600)
        .to_bytes()
        .expect("encodes")
        .to_vec();
    Relay {
        keys: RelayOnionKeys::new(id.public(), onion, None),
        cert,
    }
}

#[test]
fn three_hop_circuit_end_to_end() {
    let mut rng = rand::rng();
    let relays: Vec<Relay> = (0..3).map(|_| relay()).collect();
    let mut client = ClientLayers::new();
    let mut relay_states = Vec::new();
    for r in &relays {
        // The client only gets a handshake-able key out of a verified certificate.
        let verified = OnionKeyCert::from_bytes(&r.cert)
            .and_then(|c| c.verify(NOW))
            .expect("cert");
        let (state, msg) =
            client_handshake_start(&mut rng, r.keys.identity(), &verified, b"hi").expect("start");
        let (rkeys, reply, ext) =
            relay_handshake(&mut rng, &r.keys, &msg, |e| e.to_vec()).expect("relay");
        assert_eq!(ext, b"hi");
        let (ckeys, rext) = state.finish(&reply).expect("finish");
        assert_eq!(rext, b"hi");
        client.push_hop(&ckeys).expect("push");
        relay_states.push(RelayCrypto::new(&rkeys));
    }
    let mut body = [0u8; RELAY_BODY_LEN];
    body[RELAY_TAG_LEN..].fill(0xab);
    client
        .encrypt_forward(&mut body, 2, CellKind::Relay)
        .expect("enc");
    let mut recognised_at = None;
    for (i, r) in relay_states.iter_mut().enumerate() {
        if let Recognition::Recognised { .. } =
            r.decrypt_forward(CellKind::Relay, &mut body).expect("dec")
        {
            recognised_at = Some(i);
            break;
        }
    }
    assert_eq!(recognised_at, Some(2));
    assert!(body[RELAY_TAG_LEN..].iter().all(|&b| b == 0xab));
}

#[test]
fn expired_or_forged_certificate_cannot_be_used() {
    let r = relay();
    let cert = OnionKeyCert::from_bytes(&r.cert).expect("parse");
    assert!(matches!(
        cert.verify(NOW + 3600),
        Err(CertError::Expired { .. })
    ));
    let mut forged = r.cert.clone();
    forged[40] ^= 1; // change the onion key
    let forged = OnionKeyCert::from_bytes(&forged).expect("parse");
    assert_eq!(forged.verify(NOW), Err(CertError::BadSignature));
}

#[test]
fn handshake_to_wrong_relay_fails() {
    let mut rng = rand::rng();
    let a = relay();
    let b = relay();
    let verified = OnionKeyCert::from_bytes(&a.cert)
        .and_then(|c| c.verify(NOW))
        .expect("cert");
    let (_, msg) =
        client_handshake_start(&mut rng, a.keys.identity(), &verified, &[]).expect("start");
    assert_eq!(
        relay_handshake(&mut rng, &b.keys, &msg, |_| Vec::new()).map(|_| ()),
        Err(HandshakeError::WrongIdentity)
    );
}

#[test]
fn reply_from_impostor_rejected() {
    // An impostor without the onion secret answers with its own key material.
    let mut rng = rand::rng();
    let real = relay();
    let verified = OnionKeyCert::from_bytes(&real.cert)
        .and_then(|c| c.verify(NOW))
        .expect("cert");
    let (state, msg) =
        client_handshake_start(&mut rng, real.keys.identity(), &verified, &[]).expect("start");
    // The impostor claims the real identity and onion public key but holds another secret.
    let impostor = RelayOnionKeys::new(
        *real.keys.identity(),
        OnionKeypair::generate(&mut rng),
        None,
    );
    assert!(relay_handshake(&mut rng, &impostor, &msg, |_| Vec::new()).is_err());
    // Forge a syntactically valid reply anyway.
    let mut reply = vec![9u8; 64];
    reply.extend_from_slice(&16u16.to_be_bytes());
    reply.extend_from_slice(&[0u8; 16]);
    assert_eq!(
        state.finish(&reply).map(|_| ()),
        Err(HandshakeError::ReplyAuth)
    );
}
