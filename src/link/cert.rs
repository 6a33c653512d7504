//! The link-key certificate: a relay's long-term ed25519 identity vouching for the x25519
//! static key it uses in the Noise link handshake.
//!
//! ```text
//! signed message  = "allium-link-key-cert-v1" | identity_pub 32 | link_static_pub 32 | expires u64
//! encoded cert    = identity_pub 32 | expires u64 | signature 64            (104 bytes)
//! ```
//!
//! The link static key is not in the encoding: the verifier takes it from the Noise
//! handshake, so a certificate can only vouch for the key the peer actually proved.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use super::error::{LinkError, LinkResult};
use crate::bytes::{self, hex, Readable, Reader, Writeable, Writer};

/// Domain separator of the signed message, so the signature cannot be replayed as any
/// other signed object of the protocol.
pub(crate) const CERT_CONTEXT: &[u8] = b"allium-link-key-cert-v1";
/// Length of an encoded certificate.
pub const CERT_LEN: usize = 32 + 8 + 64;

/// A parsed (not yet verified) link-key certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkKeyCert {
    identity: [u8; 32],
    expires: u64,
    signature: [u8; 64],
}

fn signed_message(identity: &[u8; 32], link_static: &[u8; 32], expires: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(CERT_CONTEXT.len() + 72);
    m.extend_from_slice(CERT_CONTEXT);
    m.extend_from_slice(identity);
    m.extend_from_slice(link_static);
    m.extend_from_slice(&expires.to_be_bytes());
    m
}

impl LinkKeyCert {
    /// Signs `link_static` (an x25519 public key) with `identity`, valid until `expires`
    /// (unix seconds).
    pub fn sign(identity: &SigningKey, link_static: &[u8; 32], expires: u64) -> Self {
        let id = identity.verifying_key().to_bytes();
        let sig = identity.sign(&signed_message(&id, link_static, expires));
        LinkKeyCert {
            identity: id,
            expires,
            signature: sig.to_bytes(),
        }
    }

    /// The 104-byte encoding.
    pub fn encode(&self) -> Result<[u8; CERT_LEN], bytes::Error> {
        let mut out = [0u8; CERT_LEN];
        self.write_onto(&mut Writer::new(&mut out))?;
        Ok(out)
    }

    /// Parses an encoding of exactly [`CERT_LEN`] bytes.
    pub fn parse(bytes: &[u8]) -> LinkResult<Self> {
        <Self as Readable>::parse(bytes).map_err(|_| LinkError::BadCert("wrong length"))
    }

    /// The expiry, in unix seconds.
    pub fn expires(&self) -> u64 {
        self.expires
    }

    /// Verifies the certificate against the link static key proved in the Noise handshake
    /// and the clock `now` (unix seconds); returns the identity it proves.
    ///
    /// Signature first: until it verifies, neither the identity nor the expiry means
    /// anything. `verify_strict` refuses malleable signatures and small-order keys.
    pub fn verify(&self, link_static: &[u8; 32], now: u64) -> LinkResult<VerifyingKey> {
        let key = VerifyingKey::from_bytes(&self.identity)
            .map_err(|_| LinkError::BadCert("identity is not a valid ed25519 key"))?;
        let sig = Signature::from_bytes(&self.signature);
        key.verify_strict(
            &signed_message(&self.identity, link_static, self.expires),
            &sig,
        )
        .map_err(|_| LinkError::BadCert("signature does not verify for this link key"))?;
        if now >= self.expires {
            return Err(LinkError::CertExpired {
                expires: self.expires,
                now,
            });
        }
        Ok(key)
    }

    /// Like [`verify`](Self::verify), and also requires the proved identity to be `expected`.
    pub fn verify_expecting(
        &self,
        link_static: &[u8; 32],
        now: u64,
        expected: &VerifyingKey,
    ) -> LinkResult<VerifyingKey> {
        let got = self.verify(link_static, now)?;
        if got != *expected {
            return Err(LinkError::IdentityMismatch {
                expected: hex::encode(expected.as_bytes()),
                got: hex::encode(got.as_bytes()),
            });
        }
        Ok(got)
    }
}

impl Readable for LinkKeyCert {
    type Error = bytes::Error;
    fn take_from(r: &mut Reader<'_>) -> Result<Self, bytes::Error> {
        Ok(LinkKeyCert {
            identity: r.array("identity")?,
            expires: r.u64("expiry")?,
            signature: r.array("signature")?,
        })
    }
}

impl Writeable for LinkKeyCert {
    type Error = bytes::Error;
    fn write_onto(&self, w: &mut Writer<'_>) -> Result<(), bytes::Error> {
        w.put(&self.identity, "identity")?;
        w.u64(self.expires, "expiry")?;
        w.put(&self.signature, "signature")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn round_trip_and_verify() {
        let id = key(1);
        let link = [7u8; 32];
        let cert = LinkKeyCert::sign(&id, &link, 1000);
        let parsed = LinkKeyCert::parse(&cert.encode().expect("encodes")).unwrap();
        assert_eq!(parsed, cert);
        assert_eq!(parsed.verify(&link, 999).unwrap(), id.verifying_key());
        assert!(matches!(
            parsed.verify(&link, 1000),
            Err(LinkError::CertExpired { .. })
        ));
        assert!(matches!(
            parsed.verify(&[8u8; 32], 0),
            Err(LinkError::BadCert(_))
        ));
        assert!(matches!(
            parsed.verify_expecting(&link, 0, &key(2).verifying_key()),
            Err(LinkError::IdentityMismatch { .. })
        ));
    }

    #[test]
    fn any_flipped_bit_is_refused() {
        let link = [7u8; 32];
        let enc = LinkKeyCert::sign(&key(1), &link, 1000)
            .encode()
            .expect("encodes");
        for i in 0..CERT_LEN * 8 {
            let mut bad = enc;
            bad[i / 8] ^= 1 << (i % 8);
            let ok = LinkKeyCert::parse(&bad).and_then(|c| c.verify(&link, 0));
            assert!(ok.is_err(), "bit {i}");
        }
        assert!(LinkKeyCert::parse(&enc[..CERT_LEN - 1]).is_err());
    }
}
