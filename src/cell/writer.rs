//! A bounds-checked cursor that encodes fields into a fixed-size buffer.

use super::error::{CellError, CellResult};

/// Writes big-endian fields into a caller-provided buffer. Writing past the end is an
/// error ([`CellError::TooLarge`]), never a panic; bytes not written keep their value
/// (callers start from a zeroed buffer, which yields canonical zero padding).
#[derive(Debug)]
pub struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    /// Starts writing at the beginning of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, pos: 0 }
    }

    /// Number of bytes written so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Appends `bytes`.
    pub fn put(&mut self, bytes: &[u8], field: &'static str) -> CellResult<()> {
        let end = self
            .pos
            .checked_add(bytes.len())
            .ok_or(CellError::TooLarge { field })?;
        let dst = self
            .buf
            .get_mut(self.pos..end)
            .ok_or(CellError::TooLarge { field })?;
        dst.copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    /// Appends one byte.
    pub fn u8(&mut self, v: u8, field: &'static str) -> CellResult<()> {
        self.put(&[v], field)
    }

    /// Appends a big-endian `u16`.
    pub fn u16(&mut self, v: u16, field: &'static str) -> CellResult<()> {
        self.put(&v.to_be_bytes(), field)
    }

    /// Appends a big-endian `u32`.
    pub fn u32(&mut self, v: u32, field: &'static str) -> CellResult<()> {
        self.put(&v.to_be_bytes(), field)
    }

    /// Appends a big-endian `u64`.
    pub fn u64(&mut self, v: u64, field: &'static str) -> CellResult<()> {
        self.put(&v.to_be_bytes(), field)
    }

    /// Appends a `u16` length prefix followed by `bytes`.
    pub fn u16_prefixed(&mut self, bytes: &[u8], field: &'static str) -> CellResult<()> {
        let len = u16::try_from(bytes.len()).map_err(|_| CellError::TooLarge { field })?;
        self.u16(len, field)?;
        self.put(bytes, field)
    }
}
