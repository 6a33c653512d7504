//! A cursor over untrusted bytes whose every read is bounds-checked.

use super::error::{Error, Result};

/// Reads big-endian fields from a byte slice, failing with [`Error::Truncated`] instead
/// of panicking when the input is short.
///
/// Every read names the field it reads, so that a refusal says what was expected. Parsers
/// finish with [`Reader::finish`] (the input must be exhausted) or
/// [`Reader::finish_zero_padded`] (the rest must be zero padding), so that every accepted
/// input has exactly one encoding. A failed read takes nothing.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    rest: &'a [u8],
    /// Length of the whole input, so that [`Reader::consumed`] needs no second counter.
    total: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader {
            rest: bytes,
            total: bytes.len(),
        }
    }

    /// Number of bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Number of bytes read so far.
    pub fn consumed(&self) -> usize {
        self.total - self.rest.len()
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8]> {
        let (head, tail) = self
            .rest
            .split_at_checked(n)
            .ok_or(Error::Truncated { field })?;
        self.rest = tail;
        Ok(head)
    }

    /// Takes every remaining byte.
    pub fn take_rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    /// Takes the next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N]> {
        self.array_ref(field).copied()
    }

    /// Borrows the next `N` bytes as an array without copying them (for secrets, which
    /// should be copied once, straight into a zeroizing buffer).
    pub fn array_ref<const N: usize>(&mut self, field: &'static str) -> Result<&'a [u8; N]> {
        let (head, tail) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(Error::Truncated { field })?;
        self.rest = tail;
        Ok(head)
    }

    /// Reads one byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8> {
        let [b] = self.array::<1>(field)?;
        Ok(b)
    }

    /// Reads a big-endian `u16`.
    pub fn u16(&mut self, field: &'static str) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    /// Reads a big-endian `u32`.
    pub fn u32(&mut self, field: &'static str) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    /// Reads a big-endian `u64`.
    pub fn u64(&mut self, field: &'static str) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// Reads a big-endian `u16` length and checks it against `max` before anything is
    /// taken or allocated on its account.
    pub fn len_u16(&mut self, field: &'static str, max: usize) -> Result<usize> {
        let mut probe = self.clone();
        let len = usize::from(probe.u16(field)?);
        if len > max {
            return Err(Error::LengthOutOfBounds { field, len, max });
        }
        *self = probe;
        Ok(len)
    }

    /// Takes a field preceded by its one-byte length.
    pub fn u8_prefixed(&mut self, field: &'static str) -> Result<&'a [u8]> {
        let mut probe = self.clone();
        let len = usize::from(probe.u8(field)?);
        let bytes = probe.take(len, field)?;
        *self = probe;
        Ok(bytes)
    }

    /// Takes a field preceded by its big-endian `u16` length, which must not exceed `max`.
    pub fn u16_prefixed(&mut self, field: &'static str, max: usize) -> Result<&'a [u8]> {
        let mut probe = self.clone();
        let len = probe.len_u16(field, max)?;
        let bytes = probe.take(len, field)?;
        *self = probe;
        Ok(bytes)
    }

    /// Takes a field of at most `max` bytes ended by `delimiter`, and the delimiter (which
    /// is not returned). A field already longer than `max` is refused even before its
    /// delimiter arrives, so an incremental parser can tell "too long" from "need more".
    pub fn take_until(
        &mut self,
        delimiter: u8,
        max: usize,
        field: &'static str,
    ) -> Result<&'a [u8]> {
        let found = self.rest.iter().position(|&b| b == delimiter);
        let len = found.unwrap_or(self.rest.len());
        if len > max {
            return Err(Error::LengthOutOfBounds { field, len, max });
        }
        match found {
            None => Err(Error::Truncated { field }),
            Some(len) => {
                let value = self.take(len, field)?;
                self.take(1, field)?;
                Ok(value)
            }
        }
    }

    /// Reads a whole [`Readable`] value. On error the reader may have advanced partway:
    /// a failed parse is abandoned, not resumed.
    pub fn extract<T: Readable>(&mut self) -> std::result::Result<T, T::Error> {
        T::take_from(self)
    }

    /// Succeeds only if every byte has been read.
    pub fn finish(self) -> Result<()> {
        match self.rest.len() {
            0 => Ok(()),
            n => Err(Error::TrailingBytes(n)),
        }
    }

    /// Succeeds only if every remaining byte is zero (canonical padding).
    pub fn finish_zero_padded(self) -> Result<()> {
        if self.rest.iter().all(|&b| b == 0) {
            Ok(())
        } else {
            Err(Error::NonZeroPadding)
        }
    }
}

/// A value with a binary encoding that a [`Reader`] can take (`r.extract::<T>()`). Its
/// encoder is the [`super::Writeable`] implementation next to it.
///
/// `take_from` reads exactly the value's bytes and leaves the rest to the caller; a whole
/// message is parsed with [`Readable::parse`], which also requires the input to end there.
pub trait Readable: Sized {
    /// Why the bytes were refused: [`Error`] for pure layout, or the type's own error
    /// when its values are checked too (a key that is not a curve point, an unknown code).
    type Error: From<Error>;

    /// Reads one value from the front of `r`.
    fn take_from(r: &mut Reader<'_>) -> std::result::Result<Self, Self::Error>;

    /// Parses `bytes` as exactly one value: trailing bytes are refused.
    fn parse(bytes: &[u8]) -> std::result::Result<Self, Self::Error> {
        let mut r = Reader::new(bytes);
        let value = Self::take_from(&mut r)?;
        r.finish()?;
        Ok(value)
    }
}

impl Readable for u8 {
    type Error = Error;
    fn take_from(r: &mut Reader<'_>) -> Result<Self> {
        r.u8("u8")
    }
}

impl Readable for u16 {
    type Error = Error;
    fn take_from(r: &mut Reader<'_>) -> Result<Self> {
        r.u16("u16")
    }
}

impl Readable for u32 {
    type Error = Error;
    fn take_from(r: &mut Reader<'_>) -> Result<Self> {
        r.u32("u32")
    }
}

impl Readable for u64 {
    type Error = Error;
    fn take_from(r: &mut Reader<'_>) -> Result<Self> {
        r.u64("u64")
    }
}

impl<const N: usize> Readable for [u8; N] {
    type Error = Error;
    fn take_from(r: &mut Reader<'_>) -> Result<Self> {
        r.array("byte array")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_and_refuses_short_input_without_advancing() {
        let mut r = Reader::new(&[1, 0, 2, 0, 0, 0, 3, 9]);
        assert_eq!(r.u8("a"), Ok(1));
        assert_eq!(r.u16("b"), Ok(2));
        assert_eq!(r.u32("c"), Ok(3));
        assert_eq!(r.consumed(), 7);
        assert_eq!(r.u16("d"), Err(Error::Truncated { field: "d" }));
        assert_eq!(r.remaining(), 1);
        assert_eq!(r.clone().finish(), Err(Error::TrailingBytes(1)));
        assert_eq!(r.take_rest(), &[9]);
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn length_prefixes_are_bounded_before_anything_is_taken() {
        let mut r = Reader::new(&[0, 3, b'a', b'b', b'c', 2, b'x']);
        assert_eq!(
            r.u16_prefixed("f", 2),
            Err(Error::LengthOutOfBounds {
                field: "f",
                len: 3,
                max: 2
            })
        );
        assert_eq!(r.remaining(), 7);
        assert_eq!(r.u16_prefixed("f", 3), Ok(&b"abc"[..]));
        assert_eq!(r.u8_prefixed("g"), Err(Error::Truncated { field: "g" }));
        assert_eq!(r.remaining(), 2);
        assert_eq!(
            r.take(usize::MAX, "h"),
            Err(Error::Truncated { field: "h" })
        );
    }

    #[test]
    fn delimited_fields() {
        let mut r = Reader::new(b"abc\0rest");
        assert_eq!(r.take_until(0, 3, "f"), Ok(&b"abc"[..]));
        assert_eq!(r.consumed(), 4);
        let too_long = Err(Error::LengthOutOfBounds {
            field: "f",
            len: 4,
            max: 3,
        });
        assert_eq!(Reader::new(b"abcd\0").take_until(0, 3, "f"), too_long);
        assert_eq!(Reader::new(b"abcd").take_until(0, 3, "f"), too_long);
        let short = Err(Error::Truncated { field: "f" });
        assert_eq!(Reader::new(b"abc").take_until(0, 3, "f"), short);
        assert_eq!(Reader::new(b"").take_until(0, 0, "f"), short);
    }

    #[test]
    fn padding() {
        assert_eq!(Reader::new(&[0, 0]).finish_zero_padded(), Ok(()));
        assert_eq!(
            Reader::new(&[0, 1]).finish_zero_padded(),
            Err(Error::NonZeroPadding)
        );
    }
}
