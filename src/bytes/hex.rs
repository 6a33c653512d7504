//! Lowercase hexadecimal: the crate's one encoder (keys in `Display`, logs and error
//! messages) and the decoder of 32-byte keys. Kept local so that key parsing has no extra
//! dependency and returns our own typed errors.

/// Why a hex string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HexError {
    /// The string does not have the required number of characters.
    Length {
        /// Required number of characters.
        expected: usize,
        /// Number of bytes given.
        got: usize,
    },
    /// A character is not a hex digit.
    Digit,
}

/// The lowercase hex digit of the low four bits of `n`.
fn encode_digit(n: u8) -> char {
    let n = n & 0x0f;
    char::from(if n < 10 { b'0' + n } else { b'a' + (n - 10) })
}

/// Encodes `bytes` as lowercase hex.
pub(crate) fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(encode_digit(b >> 4));
        out.push(encode_digit(*b));
    }
    out
}

/// Value of one hex digit (either case), or `None`.
fn digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes exactly 64 hex digits into 32 bytes; any other length or character is an error.
pub(crate) fn decode_32(s: &str) -> Result<[u8; 32], HexError> {
    let src = s.as_bytes();
    if src.len() != 64 {
        return Err(HexError::Length {
            expected: 64,
            got: src.len(),
        });
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(src.chunks_exact(2)) {
        let (hi, lo) = match pair {
            [h, l] => (digit(*h), digit(*l)),
            _ => (None, None),
        };
        match (hi, lo) {
            (Some(h), Some(l)) => *o = (h << 4) | l,
            _ => return Err(HexError::Digit),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let bytes: [u8; 32] = core::array::from_fn(|i| (i * 37) as u8);
        let s = encode(&bytes);
        assert_eq!(s.len(), 64);
        assert_eq!(decode_32(&s), Ok(bytes));
        assert_eq!(decode_32(&s.to_uppercase()), Ok(bytes));
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            decode_32("00"),
            Err(HexError::Length {
                expected: 64,
                got: 2
            })
        );
        let mut s = "0".repeat(63);
        s.push('g');
        assert_eq!(decode_32(&s), Err(HexError::Digit));
        // A multi-byte character must not cause a panic or be accepted.
        let s = format!("{}é", "0".repeat(62));
        assert!(decode_32(&s).is_err());
    }

    #[test]
    fn encodes_lowercase_two_digits_per_byte() {
        assert_eq!(encode(&[]), "");
        assert_eq!(encode(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
    }
}
