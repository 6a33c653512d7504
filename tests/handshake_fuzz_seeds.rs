//! Fuzz seeds of the handshake targets (`ntor_client_msg`, `ntor_reply`, `fast_handshake`,
//! `hs_ntor`, `certs`): valid messages for the fixed keys and states of
//! fuzz/common/fixtures.rs, so a fuzzer starts past every layout check, at the MAC, AEAD or
//! signature. Regenerate with
//! `ALLIUM_WRITE_SEEDS=1 cargo test --test handshake_fuzz_seeds -- --ignored`; without the
//! variable the tests check that the committed seeds are still exactly these and are still
//! accepted in full (a seed that no longer gets deep would quietly weaken its fuzzer).

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

#[allow(unreachable_pub)] // shared with the fuzz crate, where these are its API
#[path = "../fuzz/common/fixtures.rs"]
mod fixtures;

use std::path::PathBuf;

use allium::cell::onion_msg::Introduce;
use allium::crypto::fast_handshake::fast_relay;
use allium::crypto::handshake::{MAX_CLIENT_EXT_LEN, MAX_REPLY_EXT_LEN};
use allium::crypto::{
    client_handshake_start_with_secret, relay_handshake_with_secret, OnionKeyCert,
};
use allium::link::LinkKeyCert;
use allium::onion::handshake::service_open_introduce;
use fixtures::*;

/// Named seed files of one target.
type Seeds = Vec<(String, Vec<u8>)>;

fn dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target)
}

/// Client messages to the fixed relay: both onion keys, extensions from empty to maximal.
fn ntor_client_msg_seeds() -> Seeds {
    let id = identity().public();
    let cases: [(&str, bool, Vec<u8>); 4] = [
        ("00-fixed-client", false, CLIENT_EXT.to_vec()),
        ("01-empty-ext", false, Vec::new()),
        ("02-previous-key", true, b"previous".to_vec()),
        ("03-max-ext", false, vec![0xa5; MAX_CLIENT_EXT_LEN]),
    ];
    cases
        .into_iter()
        .map(|(name, previous, ext)| {
            let (_, msg) =
                client_handshake_start_with_secret(&CLIENT_X, &id, &verified(previous), &ext)
                    .unwrap();
            (name.to_string(), msg)
        })
        .collect()
}

/// Replies of the fixed relay to the fixed client, with reply extensions of several lengths
/// and several `y`.
fn ntor_reply_seeds() -> Seeds {
    let (_, msg) = ntor_client();
    let cases: [(&str, [u8; 32], Vec<u8>); 3] = [
        ("00-echo", RELAY_Y, CLIENT_EXT.to_vec()),
        ("01-empty-ext", [0x45; 32], Vec::new()),
        ("02-max-ext", [0x46; 32], vec![0x5a; MAX_REPLY_EXT_LEN]),
    ];
    cases
        .into_iter()
        .map(|(name, y, ext)| {
            let (_, reply, _) =
                relay_handshake_with_secret(&y, relay_keys(), &msg, |_| ext).unwrap();
            (name.to_string(), reply)
        })
        .collect()
}

/// The fixed fast client's CREATE and the relay's CREATED for it.
fn fast_seeds() -> Seeds {
    let (_, create) = fast_client();
    let (_, created) = fast_relay(&mut CounterRng(FAST_RELAY_SEED), &create).unwrap();
    vec![
        ("00-create".to_string(), create),
        ("01-created".to_string(), created),
    ]
}

/// The fixed client's INTRODUCE data and the service's answer (`Y | auth`) to it.
fn hs_seeds() -> Seeds {
    let (_, x, ct) = hs_client();
    let intro = Introduce::new(*hs_auth().public().as_bytes(), x, ct).unwrap();
    let (_, opened) =
        service_open_introduce(hs_enc(), &hs_keys(), intro.client_x(), intro.encrypted()).unwrap();
    let (_, reply) = opened.rendezvous(&mut CounterRng(HS_SERVICE_SEED)).unwrap();
    vec![
        ("00-introduce".to_string(), intro.encode().unwrap()),
        ("01-rendezvous2".to_string(), reply.to_vec()),
    ]
}

/// The fixed relay's link-key certificate and both onion-key certificates.
fn cert_seeds() -> Seeds {
    vec![
        (
            "00-link-key-cert".to_string(),
            link_cert().encode().expect("encodes").to_vec(),
        ),
        (
            "01-onion-key-cert".to_string(),
            onion_cert(false).to_bytes().expect("encodes").to_vec(),
        ),
        (
            "02-onion-key-cert-previous".to_string(),
            onion_cert(true).to_bytes().expect("encodes").to_vec(),
        ),
    ]
}

fn all_seeds() -> Vec<(&'static str, Seeds)> {
    vec![
        ("ntor_client_msg", ntor_client_msg_seeds()),
        ("ntor_reply", ntor_reply_seeds()),
        ("fast_handshake", fast_seeds()),
        ("hs_ntor", hs_seeds()),
        ("certs", cert_seeds()),
    ]
}

#[test]
#[ignore = "writes fuzz/seeds; run with ALLIUM_WRITE_SEEDS=1"]
fn write_fuzz_seeds() {
    if std::env::var_os("ALLIUM_WRITE_SEEDS").is_none() {
        return;
    }
    for (target, seeds) in all_seeds() {
        let d = dir(target);
        std::fs::create_dir_all(&d).unwrap();
        for (name, bytes) in seeds {
            std::fs::write(d.join(name), bytes).unwrap();
        }
    }
}

fn committed(target: &str) -> Seeds {
    let mut out: Vec<_> = std::fs::read_dir(dir(target))
        .unwrap_or_else(|e| panic!("fuzz/seeds/{target}: {e}"))
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    out.sort();
    out
}

/// The committed seeds are byte for byte what the fixtures give today: a change to the
/// fixtures or to a handshake's bytes (a new key-block length, say) shows up here, and
/// `ALLIUM_WRITE_SEEDS=1` brings the seeds back in line.
#[test]
fn committed_seeds_are_current() {
    for (target, seeds) in all_seeds() {
        assert_eq!(
            committed(target),
            seeds,
            "fuzz/seeds/{target} is stale: regenerate with ALLIUM_WRITE_SEEDS=1 \
             cargo test --test handshake_fuzz_seeds -- --ignored"
        );
    }
}

/// Each seed gets through every check of its target's deepest path.
#[test]
fn seeds_are_accepted_in_full() {
    for (name, msg) in committed("ntor_client_msg") {
        relay_handshake_with_secret(&RELAY_Y, relay_keys(), &msg, reply_ext)
            .unwrap_or_else(|e| panic!("ntor_client_msg/{name}: {e}"));
    }
    for (name, reply) in committed("ntor_reply") {
        let (state, _) = ntor_client();
        state
            .finish(&reply)
            .unwrap_or_else(|e| panic!("ntor_reply/{name}: {e}"));
    }
    let fast = committed("fast_handshake");
    let (state, create) = fast_client();
    assert_eq!(fast[0].1, create);
    state.finish(&fast[1].1).expect("fast_handshake/01-created");

    let hs = committed("hs_ntor");
    let intro = Introduce::parse(&hs[0].1).expect("hs_ntor/00-introduce");
    let keys = hs_keys();
    assert_eq!(intro.auth_key(), keys.auth_key.as_bytes());
    service_open_introduce(hs_enc(), &keys, intro.client_x(), intro.encrypted())
        .expect("hs_ntor/00-introduce opens");
    let (state, _, _) = hs_client();
    let reply: [u8; 64] = hs[1].1.as_slice().try_into().unwrap();
    state.finish(&reply).expect("hs_ntor/01-rendezvous2");

    let certs = committed("certs");
    LinkKeyCert::parse(&certs[0].1)
        .unwrap()
        .verify_expecting(
            &link_static(),
            NOW,
            &identity().signing_key().verifying_key(),
        )
        .expect("certs/00-link-key-cert");
    for (name, bytes) in &certs[1..] {
        OnionKeyCert::from_bytes(bytes)
            .unwrap()
            .verify(NOW)
            .unwrap_or_else(|e| panic!("certs/{name}: {e}"));
    }
}
