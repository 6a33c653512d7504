//! The encoder matching [`super::Reader`]: big-endian fields into a fixed buffer or a `Vec`.

use super::error::{Error, Result};

/// Where a [`Writer`]'s bytes go.
#[derive(Debug)]
enum Sink<'a> {
    /// A caller-provided buffer of fixed size (a cell): running out of room is an error.
    Fixed { buf: &'a mut [u8], pos: usize },
    /// A growable buffer (documents, replies, keys): appends never run out of room.
    Growable { vec: &'a mut Vec<u8>, start: usize },
}

/// Writes big-endian fields. Writing past the end of a fixed buffer is an error
/// ([`Error::TooLarge`]), never a panic; bytes of a fixed buffer not written keep their
/// value (callers start from a zeroed buffer, which yields canonical zero padding).
///
/// One type with two sinks rather than a trait with two implementations: every encoder
/// takes `&mut Writer<'_>` and is compiled once, and the sinks differ only in whether
/// running out of room can happen.
#[derive(Debug)]
pub struct Writer<'a> {
    sink: Sink<'a>,
}

impl<'a> Writer<'a> {
    /// Starts writing at the beginning of the fixed buffer `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Writer {
            sink: Sink::Fixed { buf, pos: 0 },
        }
    }

    /// Appends to `vec`, growing it as needed.
    pub fn growable(vec: &'a mut Vec<u8>) -> Self {
        let start = vec.len();
        Writer {
            sink: Sink::Growable { vec, start },
        }
    }

    /// Number of bytes written so far.
    pub fn position(&self) -> usize {
        match &self.sink {
            Sink::Fixed { pos, .. } => *pos,
            Sink::Growable { vec, start } => vec.len().saturating_sub(*start),
        }
    }

    /// Appends `bytes`.
    pub fn put(&mut self, bytes: &[u8], field: &'static str) -> Result<()> {
        match &mut self.sink {
            Sink::Fixed { buf, pos } => {
                let end = pos
                    .checked_add(bytes.len())
                    .ok_or(Error::TooLarge { field })?;
                let dst = buf.get_mut(*pos..end).ok_or(Error::TooLarge { field })?;
                dst.copy_from_slice(bytes);
                *pos = end;
            }
            Sink::Growable { vec, .. } => vec.extend_from_slice(bytes),
        }
        Ok(())
    }

    /// Appends one byte.
    pub fn u8(&mut self, v: u8, field: &'static str) -> Result<()> {
        self.put(&[v], field)
    }

    /// Appends a big-endian `u16`.
    pub fn u16(&mut self, v: u16, field: &'static str) -> Result<()> {
        self.put(&v.to_be_bytes(), field)
    }

    /// Appends a big-endian `u32`.
    pub fn u32(&mut self, v: u32, field: &'static str) -> Result<()> {
        self.put(&v.to_be_bytes(), field)
    }

    /// Appends a big-endian `u64`.
    pub fn u64(&mut self, v: u64, field: &'static str) -> Result<()> {
        self.put(&v.to_be_bytes(), field)
    }

    /// Appends a one-byte length followed by `bytes` (read by [`super::Reader::u8_prefixed`]).
    pub fn u8_prefixed(&mut self, bytes: &[u8], field: &'static str) -> Result<()> {
        let len = u8::try_from(bytes.len()).map_err(|_| Error::TooLarge { field })?;
        self.u8(len, field)?;
        self.put(bytes, field)
    }

    /// Appends a big-endian `u16` length followed by `bytes` (read by
    /// [`super::Reader::u16_prefixed`]).
    pub fn u16_prefixed(&mut self, bytes: &[u8], field: &'static str) -> Result<()> {
        let len = u16::try_from(bytes.len()).map_err(|_| Error::TooLarge { field })?;
        self.u16(len, field)?;
        self.put(bytes, field)
    }

    /// Appends a whole [`Writeable`] value.
    pub fn write<T: Writeable + ?Sized>(&mut self, value: &T) -> std::result::Result<(), T::Error> {
        value.write_onto(self)
    }
}

/// A value with a binary encoding that a [`Writer`] can append (`w.write(&t)`). Its decoder
/// is the [`super::Readable`] implementation next to it; the two must round-trip.
pub trait Writeable {
    /// Why the value could not be encoded: [`Error`] when a fixed buffer runs out of room
    /// or a length does not fit its prefix, or the type's own error when a value built
    /// from public fields breaks the type's rules.
    type Error: From<Error>;

    /// Appends the value's encoding.
    fn write_onto(&self, w: &mut Writer<'_>) -> std::result::Result<(), Self::Error>;

    /// The value's encoding as a new vector.
    fn encode(&self) -> std::result::Result<Vec<u8>, Self::Error> {
        let mut out = Vec::new();
        self.write_onto(&mut Writer::growable(&mut out))?;
        Ok(out)
    }
}

impl Writeable for u8 {
    type Error = Error;
    fn write_onto(&self, w: &mut Writer<'_>) -> Result<()> {
        w.u8(*self, "u8")
    }
}

impl Writeable for u16 {
    type Error = Error;
    fn write_onto(&self, w: &mut Writer<'_>) -> Result<()> {
        w.u16(*self, "u16")
    }
}

impl Writeable for u32 {
    type Error = Error;
    fn write_onto(&self, w: &mut Writer<'_>) -> Result<()> {
        w.u32(*self, "u32")
    }
}

impl Writeable for u64 {
    type Error = Error;
    fn write_onto(&self, w: &mut Writer<'_>) -> Result<()> {
        w.u64(*self, "u64")
    }
}

impl Writeable for [u8] {
    type Error = Error;
    fn write_onto(&self, w: &mut Writer<'_>) -> Result<()> {
        w.put(self, "bytes")
    }
}

impl<const N: usize> Writeable for [u8; N] {
    type Error = Error;
    fn write_onto(&self, w: &mut Writer<'_>) -> Result<()> {
        w.put(self, "byte array")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_buffer_refuses_overflow_and_keeps_unwritten_bytes() {
        let mut buf = [0xAAu8; 4];
        let mut w = Writer::new(&mut buf);
        assert_eq!(w.u16(0x0102, "a"), Ok(()));
        assert_eq!(w.u32(7, "b"), Err(Error::TooLarge { field: "b" }));
        assert_eq!(w.position(), 2);
        assert_eq!(w.u8(3, "c"), Ok(()));
        assert_eq!(buf, [1, 2, 3, 0xAA]);
    }

    #[test]
    fn growable_appends_after_existing_bytes() {
        let mut vec = vec![9];
        let mut w = Writer::growable(&mut vec);
        assert_eq!(w.u8_prefixed(b"ab", "a"), Ok(()));
        assert_eq!(w.u16_prefixed(b"c", "b"), Ok(()));
        assert_eq!(w.u64(1, "c"), Ok(()));
        assert_eq!(w.position(), 14);
        assert_eq!(
            w.u8_prefixed(&[0; 256], "d"),
            Err(Error::TooLarge { field: "d" })
        );
        assert_eq!(vec, [9, 2, b'a', b'b', 0, 1, b'c', 0, 0, 0, 0, 0, 0, 0, 1]);
    }
}
