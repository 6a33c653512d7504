//! The cryptographic content of the introduction messages: building and checking
//! ESTABLISH_INTRO, and the plaintext a client encrypts into INTRODUCE1.
//!
//! ESTABLISH_INTRO (layout in [`crate::cell::onion_msg`]):
//!
//! ```text
//! mac = HMAC-SHA256(key = circuit binding (CircuitKeys::binding of the service's hop
//!                   at the introduction point), "allium-establish-intro-mac-v1" | head)
//! sig = Ed25519-Sign(auth key, "allium-establish-intro-sig-v1" | head | mac)
//! head = auth_key | dos fields
//! ```
//!
//! The MAC ties the message to the one circuit whose keys produced the binding (it cannot
//! be replayed onto another circuit); the signature proves the sender holds the auth key.
//!
//! INTRODUCE plaintext (before encryption by [`crate::onion::handshake`]), always
//! [`INTRO_PLAINTEXT_LEN`] bytes so every INTRODUCE1 has the same size:
//!
//! ```text
//! cookie 20 | rend identity 32 | rend link address (atype u8 | addr 4/16 | port u16)
//! | rend onion-key certificate 136 | pow u8 (0|1)
//! | [nonce 16 | u32be(effort ≥ 1) | Equi-X solution 16] | zero padding
//! ```

use std::net::SocketAddr;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::bytes::{Reader, Writer};
use crate::cell::address;
use crate::cell::onion_msg::{EstablishIntro, IntroDosParams, REND_COOKIE_LEN};
use crate::cell::CellError;
use crate::crypto::{IdentityKeypair, IdentityPublic, OnionKeyCert};
use crate::dir::descriptor::check_addrs;
use crate::onion::pow::PowSolution;

/// Domain-separation label of the ESTABLISH_INTRO MAC.
pub const ESTABLISH_INTRO_MAC_LABEL: &[u8] = b"allium-establish-intro-mac-v1";
/// Domain-separation label of the ESTABLISH_INTRO signature.
pub const ESTABLISH_INTRO_SIG_LABEL: &[u8] = b"allium-establish-intro-sig-v1";
/// Length of the INTRODUCE plaintext (padded).
pub const INTRO_PLAINTEXT_LEN: usize = 256;

/// Why an introduction message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntroError {
    /// The layout is wrong.
    #[error("malformed introduction message: {0}")]
    Malformed(#[from] CellError),
    /// The auth key is not a valid ed25519 key.
    #[error("invalid auth key")]
    BadAuthKey,
    /// The circuit-binding MAC does not match: the message was made for another circuit.
    #[error("ESTABLISH_INTRO MAC does not match this circuit")]
    BadMac,
    /// The signature does not verify under the auth key.
    #[error("ESTABLISH_INTRO signature does not verify")]
    BadSignature,
    /// The rendezvous point's description is invalid.
    #[error("invalid rendezvous point: {0}")]
    BadRendezvous(&'static str),
}

impl From<crate::bytes::Error> for IntroError {
    fn from(e: crate::bytes::Error) -> Self {
        IntroError::Malformed(e.into())
    }
}

fn establish_mac(binding: &[u8; 32], head: &[u8]) -> Result<[u8; 32], IntroError> {
    let mut mac = Hmac::<Sha256>::new_from_slice(binding).map_err(|_| IntroError::BadMac)?;
    mac.update(ESTABLISH_INTRO_MAC_LABEL);
    mac.update(head);
    Ok(mac.finalize().into_bytes().into())
}

fn sig_message(signed_input: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(ESTABLISH_INTRO_SIG_LABEL.len() + signed_input.len());
    msg.extend_from_slice(ESTABLISH_INTRO_SIG_LABEL);
    msg.extend_from_slice(signed_input);
    msg
}

/// Service: builds ESTABLISH_INTRO for `auth`, bound to the circuit whose binding value
/// (`CircuitKeys::binding` of the introduction point hop) is `binding`.
pub fn build_establish_intro(
    auth: &IdentityKeypair,
    dos: Option<IntroDosParams>,
    binding: &[u8; 32],
) -> Result<EstablishIntro, IntroError> {
    let mut msg = EstablishIntro {
        auth_key: *auth.public().as_bytes(),
        dos,
        mac: [0; 32],
        signature: [0; 64],
    };
    msg.mac = establish_mac(binding, &msg.mac_input()?)?;
    msg.signature = auth.sign(&sig_message(&msg.signed_input()?));
    Ok(msg)
}

/// Introduction point: checks ESTABLISH_INTRO received on the circuit whose binding value
/// is `binding`. Returns the auth key to register. Order: key validity, MAC, signature.
pub fn verify_establish_intro(
    msg: &EstablishIntro,
    binding: &[u8; 32],
) -> Result<IdentityPublic, IntroError> {
    let key = IdentityPublic::from_bytes(&msg.auth_key).map_err(|_| IntroError::BadAuthKey)?;
    let expected = establish_mac(binding, &msg.mac_input()?)?;
    if !bool::from(expected.ct_eq(&msg.mac)) {
        return Err(IntroError::BadMac);
    }
    key.verify(&sig_message(&msg.signed_input()?), &msg.signature)
        .map_err(|_| IntroError::BadSignature)?;
    Ok(key)
}

/// What the client tells the service inside INTRODUCE: where to meet it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntroducePlaintext {
    /// The one-time cookie registered at the rendezvous point.
    pub cookie: [u8; REND_COOKIE_LEN],
    /// The rendezvous point's identity.
    pub rend_identity: IdentityPublic,
    /// The rendezvous point's link address.
    pub rend_addr: SocketAddr,
    /// Its onion-key certificate (must name `rend_identity`; the service verifies it
    /// before extending).
    pub rend_onion_cert: OnionKeyCert,
    /// The client's puzzle solution (docs/protocol.md §8.8), if it solved one.
    pub pow: Option<PowSolution>,
}

impl IntroducePlaintext {
    fn check(&self) -> Result<(), IntroError> {
        check_addrs(&[self.rend_addr]).map_err(|_| IntroError::BadRendezvous("link address"))?;
        if self.rend_onion_cert.identity() != &self.rend_identity {
            return Err(IntroError::BadRendezvous(
                "onion-key certificate names another relay",
            ));
        }
        Ok(())
    }

    /// Encodes into exactly [`INTRO_PLAINTEXT_LEN`] bytes (zero padded).
    pub fn encode(&self) -> Result<[u8; INTRO_PLAINTEXT_LEN], IntroError> {
        self.check()?;
        let mut out = [0u8; INTRO_PLAINTEXT_LEN];
        let mut w = Writer::new(&mut out);
        w.put(&self.cookie, "cookie")?;
        w.put(self.rend_identity.as_bytes(), "rendezvous identity")?;
        address::write_socket_addr(&self.rend_addr, &mut w)?;
        w.write(&self.rend_onion_cert)?;
        match &self.pow {
            None => w.u8(0, "pow flag")?,
            Some(sol) => {
                w.u8(1, "pow flag")?;
                w.put(&sol.nonce, "pow nonce")?;
                w.u32(sol.effort, "pow effort")?;
                w.put(&sol.solution, "pow solution")?;
            }
        }
        Ok(out)
    }

    /// Parses a decrypted plaintext: exact length, strict fields, zero padding.
    pub fn parse(bytes: &[u8]) -> Result<Self, IntroError> {
        if bytes.len() != INTRO_PLAINTEXT_LEN {
            return Err(CellError::WrongLength {
                expected: INTRO_PLAINTEXT_LEN,
                got: bytes.len(),
            }
            .into());
        }
        let mut r = Reader::new(bytes);
        let cookie = r.array("cookie")?;
        let rend_identity = IdentityPublic::from_bytes(&r.array("rendezvous identity")?)
            .map_err(|_| IntroError::BadRendezvous("identity key"))?;
        let rend_addr = address::read_socket_addr(&mut r)?;
        let rend_onion_cert = r
            .extract::<OnionKeyCert>()
            .map_err(|_| IntroError::BadRendezvous("onion-key certificate"))?;
        let pow = match r.u8("pow flag")? {
            0 => None,
            1 => {
                let nonce = r.array("pow nonce")?;
                let effort = r.u32("pow effort")?;
                if effort == 0 {
                    return Err(CellError::BadValue {
                        field: "pow effort",
                        value: 0,
                    }
                    .into());
                }
                let solution = r.array("pow solution")?;
                Some(PowSolution {
                    nonce,
                    effort,
                    solution,
                })
            }
            other => {
                return Err(CellError::BadValue {
                    field: "pow flag",
                    value: u64::from(other),
                }
                .into())
            }
        };
        r.finish_zero_padded()?;
        let p = Self {
            cookie,
            rend_identity,
            rend_addr,
            rend_onion_cert,
            pow,
        };
        p.check()?;
        Ok(p)
    }
}
