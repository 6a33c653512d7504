//! Encoding side of a wire type: how it is written onto a [`Writer`].

use super::error::Error;
use super::writer::Writer;

/// A value with a binary encoding that a [`Writer`] can append (`w.write(&t)`). Its decoder
/// is the [`super::Readable`] implementation next to it; the two must round-trip.
pub trait Writeable {
    /// Why the value could not be encoded: [`Error`] when a fixed buffer runs out of room
    /// or a length does not fit its prefix, or the type's own error when a value built
    /// from public fields breaks the type's rules.
    type Error: From<Error>;

    /// Appends the value's encoding.
    fn write_onto(&self, w: &mut Writer<'_>) -> Result<(), Self::Error>;

    /// The value's encoding as a new vector.
    fn encode(&self) -> Result<Vec<u8>, Self::Error> {
        let mut out = Vec::new();
        self.write_onto(&mut Writer::growable(&mut out))?;
        Ok(out)
    }
}

impl Writeable for u8 {
    type Error = Error;
    fn write_onto(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        w.u8(*self, "u8")
    }
}

impl Writeable for u16 {
    type Error = Error;
    fn write_onto(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        w.u16(*self, "u16")
    }
}

impl Writeable for u32 {
    type Error = Error;
    fn write_onto(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        w.u32(*self, "u32")
    }
}

impl Writeable for u64 {
    type Error = Error;
    fn write_onto(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        w.u64(*self, "u64")
    }
}

impl Writeable for [u8] {
    type Error = Error;
    fn write_onto(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        w.put(self, "bytes")
    }
}

impl<const N: usize> Writeable for [u8; N] {
    type Error = Error;
    fn write_onto(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        w.put(self, "byte array")
    }
}
