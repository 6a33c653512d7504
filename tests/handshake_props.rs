//! Property tests of the handshake messages (`allium-ntor-1` client message and reply,
//! `allium-fast-1` CREATE/CREATED, `allium-hs-ntor-1` INTRODUCE data and `Y | auth` reply,
//! link-key and onion-key certificates):
//! - encode→parse is the identity, and whatever parses re-encodes to its input (one
//!   encoding per value); arbitrary bytes never make a parser panic;
//! - any single-byte change of a valid message is refused, by the parser or by the check
//!   that follows it (MAC, AEAD tag, signature, key match): never accepted as another valid
//!   message. `allium-fast-1`'s CREATE is not authenticated by design (the link protects
//!   it): a changed one is accepted by the relay, and then the client refuses the answer.
//!
//! Keys come from fuzz/common/fixtures.rs (the fuzz targets' fixed keys); the ephemeral
//! secrets, extensions, positions and changes are the properties' inputs.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

#[allow(unreachable_pub)] // shared with the fuzz crate, where these are its API
#[path = "../fuzz/common/fixtures.rs"]
mod fixtures;

use allium::cell::onion_msg::{Introduce, MAX_INTRODUCE_ENCRYPTED};
use allium::crypto::fast_handshake::{
    fast_client_start, fast_relay, FastCreate, FastCreated, FAST_CLIENT_LEN, FAST_REPLY_LEN,
};
use allium::crypto::handshake::{
    NtorClientMsg, NtorReply, AEAD_TAG_LEN, CLIENT_MSG_HEADER_LEN, MAX_CLIENT_EXT_LEN,
    MAX_HANDSHAKE_LEN, MAX_REPLY_EXT_LEN, REPLY_HEADER_LEN,
};
use allium::crypto::{
    client_handshake_start_with_secret, relay_handshake_with_secret, IdentityKeypair,
    IdentityPublic, OnionKeyCert, OnionPublic,
};
use allium::link::{LinkKeyCert, CERT_LEN};
use allium::onion::handshake::{
    client_introduce, service_open_introduce, HsReply, IntroKeys, HS_REPLY_LEN,
};
use proptest::prelude::*;

/// Replays the given bytes as "randomness" (cyclically), so a property controls the
/// ephemeral secrets of the handshake APIs that take an RNG.
struct ReplayRng {
    bytes: [u8; 32],
    pos: usize,
}

impl ReplayRng {
    fn new(bytes: [u8; 32]) -> Self {
        Self { bytes, pos: 0 }
    }
}

impl rand::TryRng for ReplayRng {
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
        for d in dst {
            *d = self.bytes[self.pos % 32];
            self.pos += 1;
        }
        Ok(())
    }
}

impl rand::TryCryptoRng for ReplayRng {}

fn bytes(len: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), len)
}

/// `msg` with byte `pos % len` changed by xor with `delta` (never 0).
fn changed(msg: &[u8], pos: usize, delta: u8) -> Vec<u8> {
    let mut bad = msg.to_vec();
    let i = pos % bad.len();
    bad[i] ^= delta;
    bad
}

/// A valid ntor client message to the fixed relay (current or previous onion key).
fn ntor_msg(x: &[u8; 32], previous: bool, ext: &[u8]) -> Vec<u8> {
    let id = fixtures::identity().public();
    client_handshake_start_with_secret(x, &id, &fixtures::verified(previous), ext)
        .unwrap()
        .1
}

/// The relay's check of an INTRODUCE data field at the fixed introduction point: the
/// service's auth-key match (client/onion_service/intro_task.rs), then the handshake.
fn service_accepts(data: &[u8], keys: &IntroKeys) -> bool {
    let Ok(intro) = Introduce::parse(data) else {
        return false;
    };
    intro.auth_key() == keys.auth_key.as_bytes()
        && service_open_introduce(
            fixtures::hs_enc(),
            keys,
            intro.client_x(),
            intro.encrypted(),
        )
        .is_ok()
}

proptest! {
    // Every case of the tamper properties runs a handshake or a signature check.
    #![proptest_config(ProptestConfig::with_cases(128))]

    // ---- allium-ntor-1 ----

    #[test]
    fn ntor_client_msg_encode_parse_round_trip(
        id in any::<[u8; 32]>(),
        b in any::<[u8; 32]>(),
        x in any::<[u8; 32]>(),
        ct in bytes(AEAD_TAG_LEN..=MAX_CLIENT_EXT_LEN + AEAD_TAG_LEN),
    ) {
        let msg = NtorClientMsg::new(&id, &b, &x, &ct).unwrap();
        let enc = msg.encode().unwrap();
        prop_assert_eq!(enc.len(), CLIENT_MSG_HEADER_LEN + ct.len());
        prop_assert!(enc.len() <= MAX_HANDSHAKE_LEN);
        let parsed = NtorClientMsg::parse(&enc).unwrap();
        prop_assert_eq!(parsed, msg);
        prop_assert_eq!(parsed.identity(), &id);
        prop_assert_eq!(parsed.onion_key(), OnionPublic::from_bytes(b));
        prop_assert_eq!(parsed.client_key(), &x);
        prop_assert_eq!(parsed.ext_ciphertext(), &ct[..]);
    }

    #[test]
    fn ntor_client_msg_constructor_enforces_the_parse_rules(
        ct in bytes(0..=MAX_HANDSHAKE_LEN),
    ) {
        let ok = NtorClientMsg::new(&[1; 32], &[2; 32], &[3; 32], &ct).is_ok();
        prop_assert_eq!(
            ok,
            ct.len() >= AEAD_TAG_LEN && CLIENT_MSG_HEADER_LEN + ct.len() <= MAX_HANDSHAKE_LEN
        );
    }

    #[test]
    fn ntor_client_msg_parse_is_total_and_canonical(data in bytes(0..=MAX_HANDSHAKE_LEN + 8)) {
        if let Ok(msg) = NtorClientMsg::parse(&data) {
            prop_assert_eq!(msg.encode().unwrap(), data);
        }
    }

    /// The length field must equal the number of bytes that follow, exactly.
    #[test]
    fn ntor_client_msg_length_field_is_exact(
        ct in bytes(AEAD_TAG_LEN..=64),
        declared in 0u16..=600,
    ) {
        let mut enc = NtorClientMsg::new(&[1; 32], &[2; 32], &[3; 32], &ct)
            .unwrap()
            .encode()
            .unwrap();
        enc[96..98].copy_from_slice(&declared.to_be_bytes());
        prop_assert_eq!(NtorClientMsg::parse(&enc).is_ok(), usize::from(declared) == ct.len());
    }

    #[test]
    fn ntor_reply_encode_parse_round_trip(
        y in any::<[u8; 32]>(),
        auth in any::<[u8; 32]>(),
        ct in bytes(AEAD_TAG_LEN..=MAX_REPLY_EXT_LEN + AEAD_TAG_LEN),
    ) {
        let reply = NtorReply::new(&y, &auth, &ct).unwrap();
        let enc = reply.encode().unwrap();
        prop_assert_eq!(enc.len(), REPLY_HEADER_LEN + ct.len());
        prop_assert!(enc.len() <= MAX_HANDSHAKE_LEN);
        let parsed = NtorReply::parse(&enc).unwrap();
        prop_assert_eq!(parsed, reply);
        prop_assert_eq!(parsed.relay_key(), &y);
        prop_assert_eq!(parsed.auth(), &auth);
        prop_assert_eq!(parsed.ext_ciphertext(), &ct[..]);
    }

    #[test]
    fn ntor_reply_parse_is_total_and_canonical(data in bytes(0..=MAX_HANDSHAKE_LEN + 8)) {
        if let Ok(reply) = NtorReply::parse(&data) {
            prop_assert_eq!(reply.encode().unwrap(), data);
        }
    }

    /// A full handshake with arbitrary secrets and extensions: both ends agree, and the
    /// messages on the wire are what the parsers accept.
    #[test]
    fn ntor_handshake_agrees(
        x in any::<[u8; 32]>(),
        y in any::<[u8; 32]>(),
        previous in any::<bool>(),
        ext in bytes(0..=MAX_CLIENT_EXT_LEN),
        reply_ext in bytes(0..=MAX_REPLY_EXT_LEN),
    ) {
        let id = fixtures::identity().public();
        let (state, msg) =
            client_handshake_start_with_secret(&x, &id, &fixtures::verified(previous), &ext)
                .unwrap();
        prop_assert!(NtorClientMsg::parse(&msg).is_ok());
        let (relay_keys, reply, got_ext) =
            relay_handshake_with_secret(&y, fixtures::relay_keys(), &msg, |_| reply_ext.clone())
                .unwrap();
        prop_assert_eq!(got_ext, ext);
        prop_assert!(NtorReply::parse(&reply).is_ok());
        let (client_keys, got_reply_ext) = state.finish(&reply).unwrap();
        prop_assert_eq!(got_reply_ext, reply_ext);
        prop_assert_eq!(client_keys.binding(), relay_keys.binding());
    }

    #[test]
    fn ntor_client_msg_single_byte_change_is_refused(
        x in any::<[u8; 32]>(),
        previous in any::<bool>(),
        ext in bytes(0..=64),
        pos in any::<usize>(),
        delta in 1u8..=255,
    ) {
        let msg = ntor_msg(&x, previous, &ext);
        let keys = fixtures::relay_keys();
        let y = fixtures::RELAY_Y;
        prop_assert!(relay_handshake_with_secret(&y, keys, &msg, fixtures::reply_ext).is_ok());
        let bad = changed(&msg, pos, delta);
        prop_assert!(relay_handshake_with_secret(&y, keys, &bad, fixtures::reply_ext).is_err());
    }

    #[test]
    fn ntor_reply_single_byte_change_is_refused(
        x in any::<[u8; 32]>(),
        y in any::<[u8; 32]>(),
        reply_ext in bytes(0..=64),
        pos in any::<usize>(),
        delta in 1u8..=255,
    ) {
        let id = fixtures::identity().public();
        let onion = fixtures::verified(false);
        let (state, msg) = client_handshake_start_with_secret(&x, &id, &onion, b"ext").unwrap();
        let (_, reply, _) =
            relay_handshake_with_secret(&y, fixtures::relay_keys(), &msg, |_| reply_ext)
                .unwrap();
        let (again, _) = client_handshake_start_with_secret(&x, &id, &onion, b"ext").unwrap();
        prop_assert!(again.finish(&reply).is_ok());
        prop_assert!(state.finish(&changed(&reply, pos, delta)).is_err());
    }

    // ---- allium-fast-1 ----

    #[test]
    fn fast_messages_encode_parse_round_trip(
        x in any::<[u8; 32]>(),
        y in any::<[u8; 32]>(),
        auth in any::<[u8; 32]>(),
    ) {
        let create = FastCreate::parse(&x).unwrap();
        prop_assert_eq!(create.encode(), Ok(x.to_vec()));
        let mut created = y.to_vec();
        created.extend_from_slice(&auth);
        prop_assert_eq!(FastCreated::parse(&created).unwrap().encode(), Ok(created));
    }

    #[test]
    fn fast_parse_is_total_and_exact(data in bytes(0..=FAST_REPLY_LEN + 8)) {
        match FastCreate::parse(&data) {
            Ok(c) => prop_assert_eq!(c.encode(), Ok(data.clone())),
            Err(_) => prop_assert_ne!(data.len(), FAST_CLIENT_LEN),
        }
        match FastCreated::parse(&data) {
            Ok(c) => prop_assert_eq!(c.encode(), Ok(data)),
            Err(_) => prop_assert_ne!(data.len(), FAST_REPLY_LEN),
        }
    }

    #[test]
    fn fast_created_single_byte_change_is_refused(
        x in any::<[u8; 32]>(),
        y in any::<[u8; 32]>(),
        pos in any::<usize>(),
        delta in 1u8..=255,
    ) {
        let (state, msg) = fast_client_start(&mut ReplayRng::new(x));
        let (relay_keys, reply) = fast_relay(&mut ReplayRng::new(y), &msg).unwrap();
        let (again, _) = fast_client_start(&mut ReplayRng::new(x));
        prop_assert_eq!(again.finish(&reply).unwrap().binding(), relay_keys.binding());
        prop_assert!(state.finish(&changed(&reply, pos, delta)).is_err());
    }

    /// CREATE_FAST carries no authenticator: the relay takes a changed `X`, and the client,
    /// whose `X` it no longer is, refuses the relay's answer.
    #[test]
    fn fast_create_change_makes_the_client_refuse(
        x in any::<[u8; 32]>(),
        y in any::<[u8; 32]>(),
        pos in any::<usize>(),
        delta in 1u8..=255,
    ) {
        let (state, msg) = fast_client_start(&mut ReplayRng::new(x));
        let (_, reply) = fast_relay(&mut ReplayRng::new(y), &changed(&msg, pos, delta)).unwrap();
        prop_assert!(state.finish(&reply).is_err());
    }

    // ---- allium-hs-ntor-1 ----

    #[test]
    fn hs_introduce_encode_parse_round_trip(
        auth in any::<[u8; 32]>(),
        x in any::<[u8; 32]>(),
        ct in bytes(16..=MAX_INTRODUCE_ENCRYPTED),
    ) {
        let intro = Introduce::new(auth, x, ct.clone()).unwrap();
        let enc = intro.encode().unwrap();
        prop_assert_eq!(enc.len(), 64 + ct.len());
        prop_assert_eq!(Introduce::parse(&enc).unwrap(), intro);
    }

    #[test]
    fn hs_parsers_are_total_and_canonical(data in bytes(0..=MAX_INTRODUCE_ENCRYPTED + 72)) {
        if let Ok(intro) = Introduce::parse(&data) {
            prop_assert_eq!(&intro.encode().unwrap(), &data);
        }
        match HsReply::parse(&data) {
            Ok(r) => prop_assert_eq!(r.encode().unwrap().to_vec(), data),
            Err(_) => prop_assert_ne!(data.len(), HS_REPLY_LEN),
        }
    }

    #[test]
    fn hs_reply_encode_parse_round_trip(y in any::<[u8; 32]>(), auth in any::<[u8; 32]>()) {
        let mut enc = [0u8; HS_REPLY_LEN];
        enc[..32].copy_from_slice(&y);
        enc[32..].copy_from_slice(&auth);
        let reply = HsReply::parse(&enc).unwrap();
        prop_assert_eq!(reply.service_key(), &y);
        prop_assert_eq!(reply.auth(), &auth);
        prop_assert_eq!(reply.encode(), Ok(enc));
    }

    #[test]
    fn hs_introduce_single_byte_change_is_refused(
        x in any::<[u8; 32]>(),
        plaintext in bytes(0..=64),
        pos in any::<usize>(),
        delta in 1u8..=255,
    ) {
        let keys = fixtures::hs_keys();
        let (_, x_pub, ct) = client_introduce(&mut ReplayRng::new(x), &keys, &plaintext).unwrap();
        let data = Introduce::new(*keys.auth_key.as_bytes(), x_pub, ct)
            .unwrap()
            .encode()
            .unwrap();
        prop_assert!(service_accepts(&data, &keys));
        prop_assert!(!service_accepts(&changed(&data, pos, delta), &keys));
    }

    #[test]
    fn hs_reply_single_byte_change_is_refused(
        x in any::<[u8; 32]>(),
        y in any::<[u8; 32]>(),
        pos in any::<usize>(),
        delta in 1u8..=255,
    ) {
        let keys = fixtures::hs_keys();
        let (state, x_pub, ct) = client_introduce(&mut ReplayRng::new(x), &keys, b"pt").unwrap();
        let (_, opened) = service_open_introduce(fixtures::hs_enc(), &keys, &x_pub, &ct).unwrap();
        let (service_keys, reply) = opened.rendezvous(&mut ReplayRng::new(y)).unwrap();
        let (again, _, _) = client_introduce(&mut ReplayRng::new(x), &keys, b"pt").unwrap();
        prop_assert_eq!(again.finish(&reply).unwrap().binding(), service_keys.binding());
        let bad: [u8; HS_REPLY_LEN] = changed(&reply, pos, delta).try_into().unwrap();
        prop_assert!(state.finish(&bad).is_err());
    }

    // ---- certificates ----

    #[test]
    fn link_cert_encode_parse_round_trip(
        seed in any::<[u8; 32]>(),
        link in any::<[u8; 32]>(),
        expires in any::<u64>(),
    ) {
        let id = IdentityKeypair::from_secret_bytes(&seed);
        let cert = LinkKeyCert::sign(id.signing_key(), &link, expires);
        let enc = cert.encode().expect("encodes");
        let parsed = LinkKeyCert::parse(&enc).unwrap();
        prop_assert_eq!(&parsed, &cert);
        prop_assert_eq!(parsed.expires(), expires);
        prop_assert_eq!(parsed.encode().expect("encodes"), enc);
    }

    #[test]
    fn link_cert_parse_is_total_and_exact(data in bytes(0..=CERT_LEN + 8)) {
        match LinkKeyCert::parse(&data) {
            Ok(c) => prop_assert_eq!(c.encode().expect("encodes").to_vec(), data),
            Err(_) => prop_assert_ne!(data.len(), CERT_LEN),
        }
    }

    #[test]
    fn link_cert_single_byte_change_is_refused(
        seed in any::<[u8; 32]>(),
        link in any::<[u8; 32]>(),
        lifetime in 1u64..=1 << 40,
        pos in any::<usize>(),
        delta in 1u8..=255,
    ) {
        let id = IdentityKeypair::from_secret_bytes(&seed);
        let enc = LinkKeyCert::sign(id.signing_key(), &link, fixtures::NOW + lifetime).encode().expect("encodes");
        prop_assert!(LinkKeyCert::parse(&enc).unwrap().verify(&link, fixtures::NOW).is_ok());
        let bad = changed(&enc, pos, delta);
        let refused = LinkKeyCert::parse(&bad).and_then(|c| c.verify(&link, fixtures::NOW));
        prop_assert!(refused.is_err());
    }

    #[test]
    fn onion_cert_encode_parse_round_trip(
        seed in any::<[u8; 32]>(),
        onion in any::<[u8; 32]>(),
        expires in any::<u64>(),
    ) {
        let id = IdentityKeypair::from_secret_bytes(&seed);
        let cert = OnionKeyCert::sign(&id, &OnionPublic::from_bytes(onion), expires);
        let enc = cert.to_bytes().expect("encodes");
        let parsed = OnionKeyCert::from_bytes(&enc).unwrap();
        prop_assert_eq!(&parsed, &cert);
        prop_assert_eq!(parsed.identity(), &id.public());
        prop_assert_eq!(parsed.onion_key().as_bytes(), &onion);
        prop_assert_eq!(parsed.expires_unix(), expires);
    }

    #[test]
    fn onion_cert_parse_is_total_and_canonical(
        exact in bytes(136..=136),
        any_len in bytes(0..=144),
    ) {
        // An arbitrary identity field is a valid ed25519 key about half the time. The
        // parser refuses only a wrong length or an invalid or weak identity key.
        for data in [exact, any_len] {
            match OnionKeyCert::from_bytes(&data) {
                Ok(c) => prop_assert_eq!(c.to_bytes().expect("encodes").to_vec(), data),
                Err(_) => prop_assert!(
                    data.len() != 136 || IdentityPublic::from_slice(&data[..32]).is_err()
                ),
            }
        }
    }

    #[test]
    fn onion_cert_single_byte_change_is_refused(
        seed in any::<[u8; 32]>(),
        onion in any::<[u8; 32]>(),
        lifetime in 1u64..=1 << 40,
        pos in any::<usize>(),
        delta in 1u8..=255,
    ) {
        let id = IdentityKeypair::from_secret_bytes(&seed);
        let onion = OnionPublic::from_bytes(onion);
        let enc = OnionKeyCert::sign(&id, &onion, fixtures::NOW + lifetime).to_bytes().expect("encodes");
        prop_assert!(OnionKeyCert::from_bytes(&enc).unwrap().verify(fixtures::NOW).is_ok());
        let bad = changed(&enc, pos, delta);
        let refused = OnionKeyCert::from_bytes(&bad).and_then(|c| c.verify(fixtures::NOW));
        prop_assert!(refused.is_err());
    }
}

// The extensions inside the handshake (src/cell/circuit_ext.rs).
fn arb_next(states: usize) -> impl Strategy<Value = allium::cell::padding_machine::Next> {
    use allium::cell::padding_machine::Next;
    prop_oneof![
        (0..states as u8).prop_map(Next::State),
        Just(Next::Stay),
        Just(Next::End),
    ]
}

fn arb_machine() -> impl Strategy<Value = allium::cell::padding_machine::PaddingMachine> {
    use allium::cell::padding_machine::{
        DelayKind, PaddingMachine, PaddingState, MAX_DELAY_MS, MAX_STATES,
    };
    (1usize..=MAX_STATES, any::<u16>()).prop_flat_map(|(n, cap)| {
        let state = (
            any::<bool>(),
            0..=MAX_DELAY_MS,
            0..=MAX_DELAY_MS,
            any::<u8>(),
            any::<u8>(),
            arb_next(n),
            arb_next(n),
            arb_next(n),
            arb_next(n),
        )
            .prop_map(|(log, a, b, c, d, s, r, p, done)| PaddingState {
                delay_kind: if log {
                    DelayKind::LogUniform
                } else {
                    DelayKind::Uniform
                },
                delay_min_ms: a.min(b),
                delay_max_ms: a.max(b),
                burst_min: c.min(d),
                burst_max: c.max(d),
                on_sent: s,
                on_received: r,
                on_padding: p,
                on_burst_done: done,
            });
        proptest::collection::vec(state, n).prop_map(move |states| PaddingMachine {
            max_padding: cap,
            states,
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn circuit_extensions_encode_parse_and_never_panic(
        ask in any::<bool>(),
        inc in 16u8..=128,
        machine in proptest::option::of(arb_machine()),
        status in 0u8..3,
        unknown in proptest::collection::vec((3u8..=255, proptest::collection::vec(any::<u8>(), 0..8)), 0..4),
        junk in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        use allium::cell::circuit_ext::{
            ClientExtensions, PaddingStatus, ReplyExtensions, CLIENT_EXT_LEN, REPLY_EXT_LEN,
        };
        let c = ClientExtensions { congestion_control: ask, padding: machine };
        let enc = c.encode().expect("encodes");
        // Every client list has the same length, whatever it asks for.
        prop_assert_eq!(enc.len(), CLIENT_EXT_LEN);
        prop_assert_eq!(ClientExtensions::parse(&enc), Ok(c));
        let padding = [PaddingStatus::Accepted, PaddingStatus::OverBudget, PaddingStatus::Disabled]
            .get(usize::from(status))
            .copied();
        let r = ReplyExtensions { congestion_control: Some(inc), padding };
        let enc = r.encode().expect("encodes");
        prop_assert_eq!(enc.len(), REPLY_EXT_LEN);
        prop_assert_eq!(ReplyExtensions::parse(&enc), Ok(r));
        // Unknown entries around a known one are skipped; the known one still counts.
        let mut with_unknown = Vec::new();
        for (kind, body) in &unknown {
            with_unknown.push(*kind);
            with_unknown.push(body.len() as u8);
            with_unknown.extend_from_slice(body);
        }
        with_unknown.extend_from_slice(&enc);
        prop_assert_eq!(ReplyExtensions::parse(&with_unknown), Ok(r));
        // Anything at all: no panic, and what parses re-encodes to the same value.
        if let Ok(v) = ClientExtensions::parse(&junk) {
            prop_assert_eq!(ClientExtensions::parse(&v.encode().expect("encodes")), Ok(v));
        }
        if let Ok(v) = ReplyExtensions::parse(&junk) {
            prop_assert_eq!(ReplyExtensions::parse(&v.encode().expect("encodes")), Ok(v));
        }
    }

    /// A padding machine survives encode → parse, and any bytes parse or fail cleanly;
    /// what parses re-encodes to the same bytes.
    #[test]
    fn padding_machines_encode_parse_and_never_panic(
        m in arb_machine(),
        junk in proptest::collection::vec(any::<u8>(), 0..120),
    ) {
        use allium::cell::padding_machine::PaddingMachine;
        let enc = m.encode().expect("encodes");
        prop_assert_eq!(PaddingMachine::parse(&enc), Ok(m));
        if let Ok(v) = PaddingMachine::parse(&junk) {
            prop_assert_eq!(v.encode().expect("encodes"), junk);
        }
    }
}
