//! Fuzz seeds of the `onion_descriptor` and `onion_intro` targets. Regenerate with
//! `ALLIUM_WRITE_SEEDS=1 cargo test --test onion_fuzz_seeds -- --ignored`; without the
//! variable the test checks that the committed seeds still parse, re-encode and (for
//! descriptors) verify at the seeds' time.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

mod common;

use std::path::PathBuf;

use allium::cell::onion_msg::{
    EstablishIntro, IntroDosParams, Introduce, IntroduceAckStatus, OnionMsg, Rendezvous1,
};
use allium::cell::{RelayCell, RelayMsg};
use allium::onion::descriptor::{encode_first_layer, parse_first_layer, UncheckedOnionDescriptor};
use allium::onion::intro::{build_establish_intro, IntroducePlaintext};
use allium::onion::PeriodParams;
use common::onion::*;

fn dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target)
}

fn descriptor_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = [(1, false), (4, true), (10, true)]
        .into_iter()
        .map(|(n, pow)| {
            (
                format!("{n:02}-intro-points{}", if pow { "-pow" } else { "" }),
                descriptor(n, pow, u64::from(n)).to_bytes().unwrap(),
            )
        })
        .collect();
    // Client authorisation: the fuzz target decrypts it with client_auth_key(0).
    let clients: Vec<_> = (0..3).map(|i| client_auth_key(i).public()).collect();
    let signed = descriptor_for_clients(3, false, 4, &clients);
    out.push(("auth-3-clients".into(), signed.to_bytes().unwrap()));
    // First-layer plaintexts (the target parses every input as one too).
    let verified = UncheckedOnionDescriptor::parse(&signed.to_bytes().unwrap())
        .unwrap()
        .verify_outer(NOW, 300, 0)
        .unwrap();
    let first = verified.first_layer(&address()).unwrap();
    out.push(("layer-auth".into(), encode_first_layer(&first).unwrap()));
    let open = descriptor(2, true, 1).to_bytes().unwrap();
    let verified = UncheckedOnionDescriptor::parse(&open)
        .unwrap()
        .verify_outer(NOW, 300, 0)
        .unwrap();
    let first = verified.first_layer(&address()).unwrap();
    out.push(("layer-open".into(), encode_first_layer(&first).unwrap()));
    out
}

fn intro_seeds() -> Vec<(String, Vec<u8>)> {
    let p = intro_point(3);
    let plaintext = IntroducePlaintext {
        cookie: [0xc0; 20],
        rend_identity: p.relay_identity,
        rend_addr: "127.0.0.9:9001".parse().unwrap(),
        rend_onion_cert: p.onion_cert,
        pow: Some(allium::onion::pow::PowSolution {
            nonce: [7; 16],
            effort: 1000,
            solution: [8; 16],
        }),
    };
    let establish: EstablishIntro = build_establish_intro(
        &key(100),
        Some(IntroDosParams {
            rate_per_sec: 10,
            burst: 100,
        }),
        &[0; 32],
    )
    .unwrap();
    let intro = Introduce::new([1; 32], [2; 32], vec![3; 272]).unwrap();
    let msgs = [
        ("32-establish-intro", OnionMsg::EstablishIntro(establish)),
        ("33-intro-established", OnionMsg::IntroEstablished),
        ("34-introduce1", OnionMsg::Introduce1(intro.clone())),
        ("35-introduce2", OnionMsg::Introduce2(intro)),
        (
            "36-introduce-ack",
            OnionMsg::IntroduceAck(IntroduceAckStatus::Success),
        ),
        (
            "37-establish-rendezvous",
            OnionMsg::EstablishRendezvous([9; 20]),
        ),
        ("38-rendezvous-established", OnionMsg::RendezvousEstablished),
        (
            "39-rendezvous1",
            OnionMsg::Rendezvous1(Rendezvous1 {
                cookie: [9; 20],
                handshake: [4; 64],
            }),
        ),
        ("40-rendezvous2", OnionMsg::Rendezvous2([4; 64])),
    ];
    let mut out: Vec<_> = msgs
        .into_iter()
        .map(|(name, m)| {
            let body = RelayCell::new(None, RelayMsg::Onion(m))
                .unwrap()
                .encode()
                .unwrap();
            (name.to_string(), body.to_vec())
        })
        .collect();
    out.push((
        "plaintext-introduce".to_string(),
        plaintext.encode().unwrap().to_vec(),
    ));
    out
}

#[test]
#[ignore = "writes fuzz/seeds; run with ALLIUM_WRITE_SEEDS=1"]
fn write_fuzz_seeds() {
    if std::env::var_os("ALLIUM_WRITE_SEEDS").is_none() {
        return;
    }
    for (target, seeds) in [
        ("onion_descriptor", descriptor_seeds()),
        ("onion_intro", intro_seeds()),
    ] {
        let d = dir(target);
        std::fs::create_dir_all(&d).unwrap();
        for (name, bytes) in seeds {
            std::fs::write(d.join(name), bytes).unwrap();
        }
    }
}

fn committed(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir(target))
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            (path.display().to_string(), std::fs::read(&path).unwrap())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn committed_descriptor_seeds_verify() {
    let seeds = committed("onion_descriptor");
    assert_eq!(seeds.len(), 6);
    for (name, bytes) in seeds {
        if name.contains("layer-") {
            let first = parse_first_layer(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(encode_first_layer(&first).unwrap(), bytes, "{name}");
            continue;
        }
        let u = UncheckedOnionDescriptor::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(u.signed().to_bytes().unwrap(), bytes, "{name}");
        let key = client_auth_key(0);
        u.verify_for_client(
            &address(),
            Some(&key),
            &PeriodParams::default(),
            NOW,
            300,
            0,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn committed_intro_seeds_parse_and_reencode() {
    let seeds = committed("onion_intro");
    assert_eq!(seeds.len(), 10);
    for (name, bytes) in seeds {
        if name.ends_with("plaintext-introduce") {
            let p = IntroducePlaintext::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(p.encode().unwrap().to_vec(), bytes);
        } else {
            let cell = RelayCell::<RelayMsg>::parse_typed(&bytes)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(matches!(cell.msg(), RelayMsg::Onion(_)), "{name}");
            assert_eq!(cell.encode().unwrap().to_vec(), bytes, "{name}");
        }
    }
}
