//! Onion-service addresses: the service's ed25519 identity key, a checksum and a version,
//! in lowercase base32, followed by `.allium`.
//!
//! ```text
//! address  = base32(PK(32) | CHECKSUM(2) | VERSION(1)) | ".allium"     (56 + 7 characters)
//! CHECKSUM = SHA-256("allium-onion-address-v1" | PK | VERSION)[0..2]
//! VERSION  = 1
//! ```
//!
//! base32 is RFC 4648's alphabet (`a-z2-7`), lowercase, without padding: 35 bytes are 280
//! bits, exactly 56 characters, so no character carries unused bits and every address has
//! one spelling. Input is folded to lowercase first (DNS names are case-insensitive, and
//! applications may upper-case them). The 16-bit checksum catches a mistyped character
//! with probability 1 − 2⁻¹⁶; the version byte lets a later format be told apart.

use core::fmt;
use core::str::FromStr;

use curve25519_dalek::edwards::CompressedEdwardsY;
use sha2::{Digest, Sha256};

use crate::bytes::{self, Readable, Reader, Writeable, Writer};
use crate::crypto::keys::IDENTITY_PUBLIC_LEN;
use crate::crypto::IdentityPublic;

/// The only address version defined.
pub const ADDRESS_VERSION: u8 = 1;
/// Domain-separation prefix of the checksum.
pub const ADDRESS_CHECKSUM_LABEL: &[u8] = b"allium-onion-address-v1";
/// The top-level suffix, including its dot.
pub const ADDRESS_SUFFIX: &str = ".allium";
/// Bytes encoded in an address: key, checksum, version.
pub const ADDRESS_BYTES: usize = IDENTITY_PUBLIC_LEN + 2 + 1;
/// Base32 characters before the suffix.
pub const ADDRESS_BASE32_LEN: usize = ADDRESS_BYTES * 8 / 5;
/// Total length of an address string.
pub const ADDRESS_LEN: usize = ADDRESS_BASE32_LEN + ADDRESS_SUFFIX.len();

/// Why a string is not an onion address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// The string does not end in `.allium`.
    #[error("an onion address ends in \".allium\"")]
    MissingSuffix,
    /// Wrong number of characters before the suffix.
    #[error(
        "an onion address has {ADDRESS_BASE32_LEN} characters before \".allium\", this one has {0}"
    )]
    BadLength(usize),
    /// A character outside `a-z2-7`.
    #[error("invalid character {0:?} in onion address (only a-z and 2-7 are used)")]
    BadCharacter(char),
    /// The version byte is not [`ADDRESS_VERSION`].
    #[error("unsupported onion address version {0}")]
    BadVersion(u8),
    /// The checksum does not match the key.
    #[error("checksum mismatch: a character is mistyped")]
    ChecksumMismatch,
    /// The key is not a valid ed25519 point, is of small order, or has a torsion component.
    #[error("the onion address does not contain a valid ed25519 key")]
    InvalidKey,
}

/// A syntactically and cryptographically valid onion-service address: the service's
/// identity key. Construction validates the key (a valid, torsion-free ed25519 point of
/// large order), so key blinding over it is always sound.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OnionAddress {
    key: IdentityPublic,
}

/// The two checksum bytes for `key`.
fn checksum(key: &[u8; IDENTITY_PUBLIC_LEN]) -> [u8; 2] {
    let digest = Sha256::new()
        .chain_update(ADDRESS_CHECKSUM_LABEL)
        .chain_update(key)
        .chain_update([ADDRESS_VERSION])
        .finalize();
    let mut out = [0u8; 2];
    for (o, d) in out.iter_mut().zip(digest.iter()) {
        *o = *d;
    }
    out
}

/// Whether the key is usable as a service identity: [`IdentityPublic`] already refused
/// invalid and small-order points; honest keys are also torsion-free (a multiple of the
/// base point), which makes the blinded key `h·A` a point of prime order.
fn torsion_free(key: &IdentityPublic) -> bool {
    CompressedEdwardsY(*key.as_bytes())
        .decompress()
        .is_some_and(|p| p.is_torsion_free())
}

impl OnionAddress {
    /// The address of a service identity key. Fails only for keys with a torsion
    /// component, which an honest key generator never produces.
    pub fn from_identity(key: IdentityPublic) -> Result<Self, AddressError> {
        if !torsion_free(&key) {
            return Err(AddressError::InvalidKey);
        }
        Ok(Self { key })
    }

    /// The service's identity key.
    pub fn identity(&self) -> &IdentityPublic {
        &self.key
    }

    /// The 35 encoded bytes `PK | CHECKSUM | VERSION`. The array is exactly the encoding's
    /// size, so this cannot fail; a failure would be returned, never padded or cut.
    fn raw(&self) -> bytes::Result<[u8; ADDRESS_BYTES]> {
        let mut raw = [0u8; ADDRESS_BYTES];
        Writer::new(&mut raw).write(&AddressBytes {
            key: *self.key.as_bytes(),
            checksum: checksum(self.key.as_bytes()),
            version: ADDRESS_VERSION,
        })?;
        Ok(raw)
    }
}

/// The bytes an address spells, `PK | CHECKSUM | VERSION`, unchecked.
struct AddressBytes {
    key: [u8; IDENTITY_PUBLIC_LEN],
    checksum: [u8; 2],
    version: u8,
}

// The three fields fill the encoded bytes exactly.
const _: () = assert!(ADDRESS_BYTES == IDENTITY_PUBLIC_LEN + 2 + 1);

impl Readable for AddressBytes {
    type Error = bytes::Error;
    fn take_from(r: &mut Reader<'_>) -> bytes::Result<Self> {
        Ok(Self {
            key: r.array("onion address key")?,
            checksum: r.array("onion address checksum")?,
            version: r.u8("onion address version")?,
        })
    }
}

impl Writeable for AddressBytes {
    type Error = bytes::Error;
    fn write_onto(&self, w: &mut Writer<'_>) -> bytes::Result<()> {
        w.put(&self.key, "onion address key")?;
        w.put(&self.checksum, "onion address checksum")?;
        w.u8(self.version, "onion address version")
    }
}

/// The base32 character (alphabet `a`-`z` then `2`-`7`, RFC 4648 in lowercase) of the
/// low five bits of `n`.
fn base32_digit(n: u32) -> char {
    let n = (n & 31) as u8;
    char::from(if n < 26 { b'a' + n } else { b'2' + (n - 26) })
}

/// Encodes 35 bytes as 56 base32 characters (exact: 280 bits, no padding).
fn base32_encode(raw: &[u8; ADDRESS_BYTES]) -> String {
    let mut out = String::with_capacity(ADDRESS_BASE32_LEN);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in raw {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(base32_digit((acc >> bits) & 31));
        }
        acc &= (1 << bits) - 1;
    }
    out
}

/// Decodes exactly 56 lowercase base32 characters into 35 bytes.
fn base32_decode(s: &str) -> Result<[u8; ADDRESS_BYTES], AddressError> {
    let mut raw = [0u8; ADDRESS_BYTES];
    let (mut acc, mut bits, mut pos) = (0u32, 0u32, 0usize);
    for c in s.chars() {
        let value = match c {
            'a'..='z' => u32::from(c) - u32::from('a'),
            '2'..='7' => u32::from(c) - u32::from('2') + 26,
            other => return Err(AddressError::BadCharacter(other)),
        };
        acc = (acc << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            let slot = raw
                .get_mut(pos)
                .ok_or(AddressError::BadLength(s.chars().count()))?;
            *slot = (acc >> bits) as u8;
            pos += 1;
            acc &= (1 << bits) - 1;
        }
    }
    // 56 characters are exactly 35 bytes: nothing left over, every byte filled.
    if pos != ADDRESS_BYTES || bits != 0 {
        return Err(AddressError::BadLength(s.chars().count()));
    }
    Ok(raw)
}

impl FromStr for OnionAddress {
    type Err = AddressError;

    /// Parses an address (either case). Checks, in order: suffix, length, alphabet,
    /// version, checksum, key validity.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        let body = lower
            .strip_suffix(ADDRESS_SUFFIX)
            .ok_or(AddressError::MissingSuffix)?;
        // Count characters, not bytes, so that the error is meaningful for any input.
        let chars = body.chars().count();
        if chars != ADDRESS_BASE32_LEN || body.len() != ADDRESS_BASE32_LEN {
            if let Some(bad) = body.chars().find(|c| !matches!(c, 'a'..='z' | '2'..='7')) {
                return Err(AddressError::BadCharacter(bad));
            }
            return Err(AddressError::BadLength(chars));
        }
        let raw = base32_decode(body)?;
        // 56 characters decode to exactly the 35 bytes read here.
        let fields = AddressBytes::parse(&raw).map_err(|_| AddressError::BadLength(chars))?;
        if fields.version != ADDRESS_VERSION {
            return Err(AddressError::BadVersion(fields.version));
        }
        if fields.checksum != checksum(&fields.key) {
            return Err(AddressError::ChecksumMismatch);
        }
        let key = IdentityPublic::from_bytes(&fields.key).map_err(|_| AddressError::InvalidKey)?;
        Self::from_identity(key)
    }
}

impl fmt::Display for OnionAddress {
    /// 56 lowercase base32 characters and `.allium`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `raw` cannot fail (see there); were it to, formatting fails rather than print a
        // wrong address.
        f.write_str(&base32_encode(&self.raw().map_err(|_| fmt::Error)?))?;
        f.write_str(ADDRESS_SUFFIX)
    }
}

impl fmt::Debug for OnionAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OnionAddress({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::IdentityKeypair;

    fn sample() -> OnionAddress {
        let key = IdentityKeypair::from_secret_bytes(&[3u8; 32]).public();
        OnionAddress::from_identity(key).unwrap()
    }

    #[test]
    fn round_trip_and_case_folding() {
        let a = sample();
        let s = a.to_string();
        assert_eq!(s.len(), ADDRESS_LEN);
        assert_eq!(s.parse::<OnionAddress>(), Ok(a));
        assert_eq!(s.to_ascii_uppercase().parse::<OnionAddress>(), Ok(a));
    }

    #[test]
    fn base32_matches_rfc4648() {
        // RFC 4648 §10 test vector "foobar" → "MZXW6YTBOI" (lowercased), via 35-byte padding:
        // check the first 10 characters of an encoding starting with "foobar".
        let mut raw = [0u8; ADDRESS_BYTES];
        raw[..6].copy_from_slice(b"foobar");
        assert!(base32_encode(&raw).starts_with("mzxw6ytboi"));
        assert_eq!(base32_decode(&base32_encode(&raw)), Ok(raw));
    }

    #[test]
    fn refuses_bad_inputs() {
        let s = sample().to_string();
        assert_eq!(
            "abc".parse::<OnionAddress>(),
            Err(AddressError::MissingSuffix)
        );
        assert_eq!(
            format!("a{s}").parse::<OnionAddress>(),
            Err(AddressError::BadLength(57))
        );
        let bad_char = format!("1{}", &s[1..]);
        assert_eq!(
            bad_char.parse::<OnionAddress>(),
            Err(AddressError::BadCharacter('1'))
        );
        let non_ascii = format!("é{}", &s[2..]);
        assert!(non_ascii.parse::<OnionAddress>().is_err());
    }

    #[test]
    fn refuses_wrong_version_and_weak_key() {
        let a = sample();
        let mut raw = a.raw().unwrap();
        raw[34] = 2;
        let s = format!("{}{ADDRESS_SUFFIX}", base32_encode(&raw));
        assert_eq!(s.parse::<OnionAddress>(), Err(AddressError::BadVersion(2)));
        // A small-order key with a correct checksum is still refused.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        let mut raw = [0u8; ADDRESS_BYTES];
        raw[..32].copy_from_slice(&weak);
        raw[32..34].copy_from_slice(&checksum(&weak));
        raw[34] = ADDRESS_VERSION;
        let s = format!("{}{ADDRESS_SUFFIX}", base32_encode(&raw));
        assert_eq!(s.parse::<OnionAddress>(), Err(AddressError::InvalidKey));
    }
}
