//! Decoding side of a wire type: how it is read from a [`Reader`].

use super::error::Error;
use super::reader::Reader;

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
    fn take_from(r: &mut Reader<'_>) -> Result<Self, Self::Error>;

    /// Parses `bytes` as exactly one value: trailing bytes are refused.
    fn parse(bytes: &[u8]) -> Result<Self, Self::Error> {
        let mut r = Reader::new(bytes);
        let value = Self::take_from(&mut r)?;
        r.finish()?;
        Ok(value)
    }
}

impl Readable for u8 {
    type Error = Error;
    fn take_from(r: &mut Reader<'_>) -> Result<Self, Error> {
        r.u8("u8")
    }
}

impl Readable for u16 {
    type Error = Error;
    fn take_from(r: &mut Reader<'_>) -> Result<Self, Error> {
        r.u16("u16")
    }
}

impl Readable for u32 {
    type Error = Error;
    fn take_from(r: &mut Reader<'_>) -> Result<Self, Error> {
        r.u32("u32")
    }
}

impl Readable for u64 {
    type Error = Error;
    fn take_from(r: &mut Reader<'_>) -> Result<Self, Error> {
        r.u64("u64")
    }
}

impl<const N: usize> Readable for [u8; N] {
    type Error = Error;
    fn take_from(r: &mut Reader<'_>) -> Result<Self, Error> {
        r.array("byte array")
    }
}
