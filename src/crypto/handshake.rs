//! The `allium-ntor-1` circuit handshake: one-way authenticated (the client authenticates
//! the relay, never the reverse) and forward secret, shaped like Tor's ntor v3.
//!
//! Notation: `ID` relay identity (ed25519, 32 bytes), `b`/`B` relay onion key (x25519),
//! `x`/`X` client ephemeral, `y`/`Y` relay ephemeral, `|` concatenation.
//!
//! ```text
//! client -> relay:  ID(32) | B(32) | X(32) | ext_len(u16 BE) | ext_ct(ext_len)
//!     secret_xb  = X25519(x, B)                       (rejected if all-zero)
//!     client_key = HKDF-SHA256(salt=PROTOID, ikm=secret_xb,
//!                              info="allium-ntor-1:client-msg" | ID | B | X)[0..32]
//!     ext_ct     = ChaCha20-Poly1305(client_key, nonce=0^12, ad=ID | B | X, client_ext)
//! relay -> client:  Y(32) | auth(32) | ext_len(u16 BE) | ext_ct(ext_len)
//!     secret_xy  = X25519(y, X)                       (rejected if all-zero)
//!     key_seed   = HKDF-Extract(salt=PROTOID,
//!                  ikm=secret_xy | secret_xb | ID | B | X | Y | client_ext_ct)
//!     reply_key  = HKDF-Expand(key_seed, "allium-ntor-1:reply-msg", 32)
//!     ext_ct     = ChaCha20-Poly1305(reply_key, nonce=0^12, ad=ID | B | X | Y, reply_ext)
//!     auth_key   = HKDF-Expand(key_seed, "allium-ntor-1:auth", 32)
//!     auth       = HMAC-SHA256(auth_key, "allium-ntor-1:server" | ID | B | X | Y
//!                  | u16(len client_ext_ct) | client_ext_ct | u16(len reply_ext_ct) | reply_ext_ct)
//!     keys       = HKDF-Expand(key_seed, "allium-ntor-1:circuit-keys", 192)
//!                = Kf_enc | Kf_mac | Kb_enc | Kb_mac
//! ```
//!
//! The extension ciphertexts always carry a 16-byte AEAD tag, even for an empty extension,
//! so `ext_len >= 16`. Both messages are at most [`MAX_HANDSHAKE_LEN`] bytes so they fit
//! in a CREATE/CREATED cell.
//!
//! Parsing and checking are separate: [`NtorClientMsg::parse`] and [`NtorReply::parse`]
//! only split the layout (exact lengths, no trailing bytes) and touch no key;
//! [`relay_handshake`] and [`ClientHandshakeState::finish`] parse, then check identity,
//! onion key, Diffie-Hellman outputs, MAC and AEAD tags.

use crate::cell::consts::CELL_BODY_LEN;

mod client;
mod kdf;
mod relay;
mod wire;

pub use client::{
    client_handshake_start, client_handshake_start_with_secret, ClientHandshakeState,
};
pub(crate) use kdf::hkdf_extract;
pub use relay::{relay_handshake, relay_handshake_with_secret};
pub use wire::{NtorClientMsg, NtorReply};

/// Protocol identifier; the HKDF salt and the prefix of every label.
pub const PROTOID: &[u8] = b"allium-ntor-1";
const LABEL_CLIENT_MSG: &[u8] = b"allium-ntor-1:client-msg";
const LABEL_REPLY_MSG: &[u8] = b"allium-ntor-1:reply-msg";
const LABEL_AUTH: &[u8] = b"allium-ntor-1:auth";
const LABEL_CIRCUIT_KEYS: &[u8] = b"allium-ntor-1:circuit-keys";
const AUTH_PREFIX: &[u8] = b"allium-ntor-1:server";

/// Maximum length of either handshake message: a cell body minus a 2-byte handshake type
/// and a 2-byte length, as in a CREATE2-style cell.
pub const MAX_HANDSHAKE_LEN: usize = CELL_BODY_LEN - 4;
/// Length of the ChaCha20-Poly1305 tag inside every extension ciphertext.
pub const AEAD_TAG_LEN: usize = 16;
/// Fixed part of the client message: `ID | B | X | ext_len`.
pub const CLIENT_MSG_HEADER_LEN: usize = 32 + 32 + 32 + 2;
/// Fixed part of the reply: `Y | auth | ext_len`.
pub const REPLY_HEADER_LEN: usize = 32 + 32 + 2;
/// Largest client extension plaintext that fits.
pub const MAX_CLIENT_EXT_LEN: usize = MAX_HANDSHAKE_LEN - CLIENT_MSG_HEADER_LEN - AEAD_TAG_LEN;
/// Largest reply extension plaintext that fits.
pub const MAX_REPLY_EXT_LEN: usize = MAX_HANDSHAKE_LEN - REPLY_HEADER_LEN - AEAD_TAG_LEN;

/// Why a handshake failed. The caller answers every one of them by refusing/closing the
/// circuit; the variants exist for logging and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The message is shorter than its fixed header.
    #[error("handshake message too short ({got} bytes)")]
    TooShort {
        /// Length received.
        got: usize,
    },
    /// The message is longer than [`MAX_HANDSHAKE_LEN`].
    #[error("handshake message too long ({got} bytes, max {max})")]
    TooLong {
        /// Length received.
        got: usize,
        /// Limit.
        max: usize,
    },
    /// The extension length field disagrees with the bytes that follow it.
    #[error("extension length field says {declared} bytes but {actual} follow")]
    LengthMismatch {
        /// Value of the length field.
        declared: usize,
        /// Bytes actually present.
        actual: usize,
    },
    /// The extension ciphertext is shorter than its AEAD tag.
    #[error("extension ciphertext shorter than its AEAD tag")]
    ExtensionTooShort,
    /// A caller-supplied extension is too long to fit in a cell.
    #[error("extension of {len} bytes exceeds the maximum of {max}")]
    ExtensionTooLong {
        /// Length given.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The verified onion key was certified by a different identity than the one given.
    #[error("onion key is certified by a different identity")]
    CertIdentityMismatch,
    /// The client named a different relay identity.
    #[error("handshake is for a different relay identity")]
    WrongIdentity,
    /// The client used an onion key that is neither our current nor previous one.
    #[error("handshake uses an unknown onion key")]
    UnknownOnionKey,
    /// A Diffie-Hellman output was all-zero: the peer sent a low-order point.
    #[error("peer sent a low-order (non-contributory) x25519 point")]
    NonContributory,
    /// The client extension failed to decrypt (wrong key or modified).
    #[error("client extension failed authentication")]
    ClientExtensionAuth,
    /// The reply's `auth` did not match: not from the relay holding the onion key, or
    /// modified.
    #[error("handshake reply failed authentication")]
    ReplyAuth,
    /// The reply extension failed to decrypt.
    #[error("reply extension failed authentication")]
    ReplyExtensionAuth,
    /// Internal KDF/AEAD failure (cannot happen with the fixed sizes used here).
    #[error("internal key-derivation failure")]
    Internal,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bytes::hex;
    use crate::crypto::cert::{OnionKeyCert, VerifiedOnionKey};
    use crate::crypto::keys::{IdentityKeypair, OnionKeypair, OnionPublic};
    use crate::crypto::onion_keys::RelayOnionKeys;

    const NOW: u64 = 1_700_000_000;

    /// The fixed inputs of the test vectors (also documented in docs/protocol.md §4).
    fn vector_inputs() -> (RelayOnionKeys, VerifiedOnionKey) {
        let id = IdentityKeypair::from_secret_bytes(&[0x11; 32]);
        let onion = OnionKeypair::from_secret_bytes(&[0x22; 32]);
        let cert = OnionKeyCert::sign(&id, onion.public(), NOW + 1000);
        let verified = cert.verify(NOW).expect("valid cert");
        (RelayOnionKeys::new(id.public(), onion, None), verified)
    }

    /// Expected outputs for the fixed inputs: identity seed 0x11*32, onion secret 0x22*32,
    /// x = 0x33*32, y = 0x44*32, client ext "client-ext", reply ext "reply-ext".
    const VEC_ID: &str = "d04ab232742bb4ab3a1368bd4615e4e6d0224ab71a016baf8520a332c9778737";
    const VEC_B: &str = "0faa684ed28867b97f4a6a2dee5df8ce974e76b7018e3f22a1c4cf2678570f20";
    const VEC_CLIENT_MSG: &str = concat!(
        "d04ab232742bb4ab3a1368bd4615e4e6d0224ab71a016baf8520a332c9778737",
        "0faa684ed28867b97f4a6a2dee5df8ce974e76b7018e3f22a1c4cf2678570f20",
        "7b0d47d93427f8311160781c7c733fd89f88970aef490d8aa0ee19a4cb8a1b14",
        "001a",
        "cef53b13c9b4c2e154b79662c661d7974f84c082e905ccadbf4e",
    );
    const VEC_REPLY: &str = concat!(
        "ff2ee45601ec1b67310c7790404585ae697331eee1c1f8cf2419731c1fff3e6b",
        "9e144814751c2c3955e48035d75d480c0f35b32121736c28c64dc5964a850de4",
        "0019",
        "1714d81ac8115418b0a591e51995204d29bc687017c112a17b",
    );
    const VEC_KEYS: &str = concat!(
        "d2dc64361d1c8b2cb313551f973d65e0e41d53a2371720c8b2294cd80acf9855",
        "81c9bcf399a7ec92702858ef61a6506584852432bbfca458dad1bd928db96047",
        "4ee7331316bb3de8daff0511dbc1ce25083ad692249cd3df6bcf2327fddc7aa4",
        "e026c5813e79fa702533ec44ffc810d42b4afba1151662922acca5916d4d1cb5",
        "726f8a26040ae642cf672a4409379d24f15cb6ae9e2e28a925d8095bbc83d9e4",
        "bc885c6bed0f535e14a25af931363da513b0010294d9d39c77683ba0f9dd9d24",
    );

    fn reply_ext(_: &[u8]) -> Vec<u8> {
        b"reply-ext".to_vec()
    }

    #[test]
    fn fixed_test_vectors() {
        let (relay, verified) = vector_inputs();
        assert_eq!(relay.identity().to_string(), VEC_ID);
        assert_eq!(relay.current().public().to_string(), VEC_B);
        let (state, msg) = client_handshake_start_with_secret(
            &[0x33; 32],
            relay.identity(),
            &verified,
            b"client-ext",
        )
        .expect("start");
        assert_eq!(hex::encode(&msg), VEC_CLIENT_MSG);
        let (rkeys, reply, cext) =
            relay_handshake_with_secret(&[0x44; 32], &relay, &msg, reply_ext).expect("relay");
        assert_eq!(hex::encode(&reply), VEC_REPLY);
        assert_eq!(cext, b"client-ext");
        let (ckeys, rext) = state.finish(&reply).expect("finish");
        assert_eq!(rext, b"reply-ext");
        assert_eq!(hex::encode(&*ckeys.to_bytes()), VEC_KEYS);
        assert_eq!(hex::encode(&*rkeys.to_bytes()), VEC_KEYS);
    }

    #[test]
    fn round_trip_random_and_previous_key() {
        let mut rng = rand::rng();
        let id = IdentityKeypair::generate(&mut rng);
        let old = OnionKeypair::generate(&mut rng);
        let old_cert = OnionKeyCert::sign(&id, old.public(), NOW + 10);
        let mut relay = RelayOnionKeys::new(id.public(), old, None);
        relay.rotate(OnionKeypair::generate(&mut rng));
        // A client still holding the previous certificate succeeds.
        let verified = old_cert.verify(NOW).expect("valid");
        let ext = vec![0xa5; MAX_CLIENT_EXT_LEN];
        let (state, msg) =
            client_handshake_start(&mut rng, &id.public(), &verified, &ext).expect("start");
        assert_eq!(msg.len(), MAX_HANDSHAKE_LEN);
        let big_reply = vec![0x5a; MAX_REPLY_EXT_LEN];
        let (rkeys, reply, cext) =
            relay_handshake(&mut rng, &relay, &msg, |_| big_reply.clone()).expect("relay");
        assert_eq!(reply.len(), MAX_HANDSHAKE_LEN);
        assert_eq!(cext, ext);
        let (ckeys, rext) = state.finish(&reply).expect("finish");
        assert_eq!(rext, big_reply);
        assert_eq!(*rkeys.to_bytes(), *ckeys.to_bytes());
        // Empty extensions work too (ciphertext is the bare 16-byte tag).
        let (state, msg) =
            client_handshake_start(&mut rng, &id.public(), &verified, &[]).expect("start");
        assert_eq!(msg.len(), CLIENT_MSG_HEADER_LEN + AEAD_TAG_LEN);
        let (_, reply, cext) =
            relay_handshake(&mut rng, &relay, &msg, |_| Vec::new()).expect("relay");
        assert!(cext.is_empty());
        assert!(state.finish(&reply).is_ok());
    }

    #[test]
    fn oversized_extensions_rejected() {
        let (relay, verified) = vector_inputs();
        let ext = vec![0; MAX_CLIENT_EXT_LEN + 1];
        assert!(matches!(
            client_handshake_start_with_secret(&[0x33; 32], relay.identity(), &verified, &ext),
            Err(HandshakeError::ExtensionTooLong { .. })
        ));
        let (_, msg) =
            client_handshake_start_with_secret(&[0x33; 32], relay.identity(), &verified, &[])
                .expect("start");
        let res = relay_handshake_with_secret(&[0x44; 32], &relay, &msg, |_| {
            vec![0; MAX_REPLY_EXT_LEN + 1]
        });
        assert!(matches!(res, Err(HandshakeError::ExtensionTooLong { .. })));
    }

    #[test]
    fn wrong_identity_and_unknown_onion_key() {
        let (relay, verified) = vector_inputs();
        let (_, msg) =
            client_handshake_start_with_secret(&[0x33; 32], relay.identity(), &verified, &[])
                .expect("start");
        // Same onion key, different identity on the relay side.
        let other_id = IdentityKeypair::from_secret_bytes(&[0x55; 32]).public();
        let other =
            RelayOnionKeys::new(other_id, OnionKeypair::from_secret_bytes(&[0x22; 32]), None);
        assert_eq!(
            relay_handshake_with_secret(&[0x44; 32], &other, &msg, reply_ext).map(|_| ()),
            Err(HandshakeError::WrongIdentity)
        );
        // Right identity, but the relay no longer has that onion key.
        let rotated = RelayOnionKeys::new(
            *relay.identity(),
            OnionKeypair::from_secret_bytes(&[0x66; 32]),
            Some(OnionKeypair::from_secret_bytes(&[0x77; 32])),
        );
        assert_eq!(
            relay_handshake_with_secret(&[0x44; 32], &rotated, &msg, reply_ext).map(|_| ()),
            Err(HandshakeError::UnknownOnionKey)
        );
        // A verified key from another identity is refused client-side.
        assert_eq!(
            client_handshake_start_with_secret(&[0x33; 32], &other_id, &verified, &[]).map(|_| ()),
            Err(HandshakeError::CertIdentityMismatch)
        );
    }

    #[test]
    fn expired_certificate_yields_no_verified_key() {
        let id = IdentityKeypair::from_secret_bytes(&[0x11; 32]);
        let onion = OnionKeypair::from_secret_bytes(&[0x22; 32]);
        let cert = OnionKeyCert::sign(&id, onion.public(), NOW);
        // The client API only accepts a VerifiedOnionKey, which an expired cert cannot give.
        assert!(matches!(
            cert.verify(NOW + 1),
            Err(crate::crypto::CertError::Expired { .. })
        ));
    }

    #[test]
    fn every_reply_bit_flip_fails() {
        let (relay, verified) = vector_inputs();
        let (_, msg) = client_handshake_start_with_secret(
            &[0x33; 32],
            relay.identity(),
            &verified,
            b"client-ext",
        )
        .expect("start");
        let (_, reply, _) =
            relay_handshake_with_secret(&[0x44; 32], &relay, &msg, reply_ext).expect("relay");
        for bit in 0..reply.len() * 8 {
            let mut bad = reply.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let (state, _) = client_handshake_start_with_secret(
                &[0x33; 32],
                relay.identity(),
                &verified,
                b"client-ext",
            )
            .expect("start");
            assert!(state.finish(&bad).is_err(), "reply bit {bit} flip accepted");
        }
        // Truncated or extended replies are rejected too.
        for len in 0..reply.len() {
            let (state, _) = client_handshake_start_with_secret(
                &[0x33; 32],
                relay.identity(),
                &verified,
                b"client-ext",
            )
            .expect("start");
            assert!(state.finish(&reply[..len]).is_err());
        }
        let mut long = reply.clone();
        long.push(0);
        let (state, _) = client_handshake_start_with_secret(
            &[0x33; 32],
            relay.identity(),
            &verified,
            b"client-ext",
        )
        .expect("start");
        assert!(state.finish(&long).is_err());
    }

    #[test]
    fn every_client_msg_bit_flip_fails() {
        let (relay, verified) = vector_inputs();
        let (_, msg) =
            client_handshake_start_with_secret(&[0x33; 32], relay.identity(), &verified, b"e")
                .expect("start");
        for bit in 0..msg.len() * 8 {
            let mut bad = msg.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                relay_handshake_with_secret(&[0x44; 32], &relay, &bad, reply_ext).is_err(),
                "client msg bit {bit} flip accepted"
            );
        }
        for len in 0..msg.len() {
            assert!(
                relay_handshake_with_secret(&[0x44; 32], &relay, &msg[..len], reply_ext).is_err()
            );
        }
    }

    /// Low-order points of Curve25519 (Montgomery u-coordinates), incl. non-canonical ones.
    fn low_order_points() -> Vec<[u8; 32]> {
        let mut pts = vec![[0u8; 32]];
        let mut one = [0u8; 32];
        one[0] = 1;
        pts.push(one);
        pts.push(
            hex::decode_32("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")
                .expect("hex"),
        );
        pts.push(
            hex::decode_32("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157")
                .expect("hex"),
        );
        // p - 1 (order 2) and p, p + 1 (non-canonical encodings of 0 and 1).
        pts.push(
            hex::decode_32("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")
                .expect("hex"),
        );
        pts.push(
            hex::decode_32("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")
                .expect("hex"),
        );
        pts.push(
            hex::decode_32("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")
                .expect("hex"),
        );
        pts
    }

    #[test]
    fn low_order_x_rejected_by_relay() {
        let (relay, _) = vector_inputs();
        for point in low_order_points() {
            let mut msg = Vec::new();
            msg.extend_from_slice(relay.identity().as_bytes());
            msg.extend_from_slice(relay.current().public().as_bytes());
            msg.extend_from_slice(&point);
            msg.extend_from_slice(&16u16.to_be_bytes());
            msg.extend_from_slice(&[0u8; 16]);
            assert_eq!(
                relay_handshake_with_secret(&[0x44; 32], &relay, &msg, reply_ext).map(|_| ()),
                Err(HandshakeError::NonContributory),
                "low-order X {} accepted",
                hex::encode(&point)
            );
        }
    }

    #[test]
    fn low_order_y_and_b_rejected_by_client() {
        let (relay, verified) = vector_inputs();
        for point in low_order_points() {
            let (state, _) =
                client_handshake_start_with_secret(&[0x33; 32], relay.identity(), &verified, &[])
                    .expect("start");
            let mut reply = point.to_vec();
            reply.extend_from_slice(&[0u8; 32]);
            reply.extend_from_slice(&16u16.to_be_bytes());
            reply.extend_from_slice(&[0u8; 16]);
            assert_eq!(
                state.finish(&reply).map(|_| ()),
                Err(HandshakeError::NonContributory)
            );
            // A relay certifying a low-order onion key is refused too.
            let id = IdentityKeypair::from_secret_bytes(&[0x11; 32]);
            let cert = OnionKeyCert::sign(&id, &OnionPublic::from_bytes(point), NOW + 1);
            let bad = cert.verify(NOW).expect("signature is fine");
            assert_eq!(
                client_handshake_start_with_secret(&[0x33; 32], &id.public(), &bad, &[])
                    .map(|_| ()),
                Err(HandshakeError::NonContributory)
            );
        }
    }

    #[test]
    fn length_field_mismatch() {
        let (relay, verified) = vector_inputs();
        let (_, msg) =
            client_handshake_start_with_secret(&[0x33; 32], relay.identity(), &verified, b"abc")
                .expect("start");
        let mut bad = msg.clone();
        bad[97] = bad[97].wrapping_add(1);
        assert!(matches!(
            relay_handshake_with_secret(&[0x44; 32], &relay, &bad, reply_ext),
            Err(HandshakeError::LengthMismatch { .. })
        ));
        let too_long = vec![0u8; MAX_HANDSHAKE_LEN + 1];
        assert!(matches!(
            relay_handshake_with_secret(&[0x44; 32], &relay, &too_long, reply_ext),
            Err(HandshakeError::TooLong { .. })
        ));
    }
}
