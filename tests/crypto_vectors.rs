//! The relay-cell crypto test vectors of docs/protocol.md §4.7: the Rust implementation
//! reproduces them, and so does an independent Python implementation written from the
//! spec (tests/vectors/relay_crypto.py), which this test runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

mod common;

use std::process::Command;

use allium::cell::consts::{RELAY_BODY_LEN, RELAY_TAG_LEN};
use allium::crypto::circuit_keys::CIRCUIT_KEYS_LEN;
use allium::crypto::{CellKind, CircuitKeys, ClientLayers, Recognition, RelayCrypto};
use common::prereq;
use sha2::{Digest, Sha256};

/// The vectors as printed in docs/protocol.md §4.7.
const SPEC: &str = "\
fwd1_cell0_tag 8ce6df1f4cb286b387b5105e1785b3a0
fwd1_cell0_sha256 7051a9e3919b5ced93edfae4809fa7ecbb61dbe30e6824e59b3b3fd06326f947
fwd1_cell0_sendme 8ce6df1f4cb286b387b5105e1785b3a0
fwd1_cell1_tag 8ede552cb1cc18fa3dbd7aa2fdbf1734
fwd1_cell1_sha256 5c3dcd657f27ae41b35b8bbee77745a014a1854996569a30a0799b5f60d638c8
fwd1_cell1_sendme 8ede552cb1cc18fa3dbd7aa2fdbf1734
bwd1_cell0_tag dfa42a1cdcc44d23b0caef4488644e6d
bwd1_cell0_sha256 a41efb8b66103b39e2a09e9658825ceb4ecfd66f794ad957a68632f5dce705ef
bwd1_cell1_tag 8b41d936dd387fe25945b6e7db7a6300
bwd1_cell1_sha256 db1947e93c358cf57845feca0468b0c8b63261f4a579f2a7b5f40ab5c906ca63
fwd3_early_tag 37d6d0a2637541b681f24e04c1cb69ea
fwd3_early_sha256 f75a6930194005b7da22050666bba68ea4fb391c3853f8ac02b90cb5bc27c08f
fwd3_early_sendme df8452834343b6989eb39c61be496537
";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn keys(offset: u8) -> CircuitKeys {
    let block: [u8; CIRCUIT_KEYS_LEN] = core::array::from_fn(|i| (i as u8).wrapping_add(offset));
    CircuitKeys::from_bytes(&block)
}

fn body(c: u8) -> [u8; RELAY_BODY_LEN] {
    let mut b = [0u8; RELAY_BODY_LEN];
    for (i, x) in b[RELAY_TAG_LEN..].iter_mut().enumerate() {
        *x = (i as u8).wrapping_add(c);
    }
    b
}

/// The vectors computed by this implementation, in the order the spec lists them.
fn rust_vectors() -> String {
    let mut out = String::new();
    let mut line = |name: &str, value: &[u8]| out.push_str(&format!("{name} {}\n", hex(value)));

    let mut client = ClientLayers::new();
    client.push_hop(&keys(0)).unwrap();
    let mut relay = RelayCrypto::new(&keys(0));
    for c in 0..2u8 {
        let mut b = body(c);
        let sendme = client.encrypt_forward(&mut b, 0, CellKind::Relay).unwrap();
        line(&format!("fwd1_cell{c}_tag"), &b[..RELAY_TAG_LEN]);
        line(&format!("fwd1_cell{c}_sha256"), &Sha256::digest(b));
        line(&format!("fwd1_cell{c}_sendme"), &sendme);
        assert_eq!(
            relay.decrypt_forward(CellKind::Relay, &mut b).unwrap(),
            Recognition::Recognised { tag: sendme }
        );
        assert_eq!(b, body(c), "recognised: zero tag, the payload");
    }
    let mut client = ClientLayers::new();
    client.push_hop(&keys(0)).unwrap();
    let mut relay = RelayCrypto::new(&keys(0));
    for c in 0..2u8 {
        let mut b = body(c);
        let sent = relay.originate_backward(&mut b).unwrap();
        line(&format!("bwd1_cell{c}_tag"), &b[..RELAY_TAG_LEN]);
        line(&format!("bwd1_cell{c}_sha256"), &Sha256::digest(b));
        assert_eq!(client.decrypt_backward(&mut b).unwrap(), (0, sent));
    }
    let mut client = ClientLayers::new();
    for h in 0..3 {
        client.push_hop(&keys(h)).unwrap();
    }
    let mut b = body(7);
    let sendme = client
        .encrypt_forward(&mut b, 2, CellKind::RelayEarly)
        .unwrap();
    line("fwd3_early_tag", &b[..RELAY_TAG_LEN]);
    line("fwd3_early_sha256", &Sha256::digest(b));
    line("fwd3_early_sendme", &sendme);
    out
}

#[test]
fn rust_reproduces_the_spec_vectors() {
    assert_eq!(rust_vectors(), SPEC);
}

#[test]
fn independent_python_implementation_agrees() {
    if !prereq::require(&[prereq::python_cryptography()]) {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/relay_crypto.py");
    let o = Command::new("python3").arg(script).output().unwrap();
    assert!(
        o.status.success(),
        "python3 {script} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let python = String::from_utf8_lossy(&o.stdout);
    assert_eq!(python, rust_vectors());
    assert_eq!(python, SPEC);
}
