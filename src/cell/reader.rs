//! A cursor over untrusted bytes whose every read is bounds-checked.

use super::error::{CellError, CellResult};

/// Reads big-endian fields from a byte slice, failing with [`CellError::Truncated`] instead
/// of panicking when the input is short.
///
/// Parsers finish with [`Reader::finish`] (the input must be exhausted) or
/// [`Reader::finish_zero_padded`] (the rest must be zero padding), so that every accepted
/// input has exactly one encoding.
#[derive(Debug)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    /// Number of bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize, field: &'static str) -> CellResult<&'a [u8]> {
        if n > self.rest.len() {
            return Err(CellError::Truncated { field });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// Takes every remaining byte.
    pub fn take_rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    /// Takes the next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self, field: &'static str) -> CellResult<[u8; N]> {
        let bytes = self.take(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// Reads one byte.
    pub fn u8(&mut self, field: &'static str) -> CellResult<u8> {
        Ok(self.array::<1>(field)?[0])
    }

    /// Reads a big-endian `u16`.
    pub fn u16(&mut self, field: &'static str) -> CellResult<u16> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    /// Reads a big-endian `u32`.
    pub fn u32(&mut self, field: &'static str) -> CellResult<u32> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    /// Reads a big-endian `u64`.
    pub fn u64(&mut self, field: &'static str) -> CellResult<u64> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// Reads a big-endian `u16` length and checks it against `max` before anything is
    /// taken or allocated on its account.
    pub fn len_u16(&mut self, field: &'static str, max: usize) -> CellResult<usize> {
        let len = usize::from(self.u16(field)?);
        if len > max {
            return Err(CellError::LengthOutOfBounds { field, len, max });
        }
        Ok(len)
    }

    /// Succeeds only if every byte has been read.
    pub fn finish(self) -> CellResult<()> {
        match self.rest.len() {
            0 => Ok(()),
            n => Err(CellError::TrailingBytes(n)),
        }
    }

    /// Succeeds only if every remaining byte is zero (canonical padding).
    pub fn finish_zero_padded(self) -> CellResult<()> {
        if self.rest.iter().all(|&b| b == 0) {
            Ok(())
        } else {
            Err(CellError::NonZeroPadding)
        }
    }
}
