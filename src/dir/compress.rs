//! Compression of directory documents for transfer, with a decompressor bounded by the
//! caller (no I/O).
//!
//! The format is zlib (RFC 1950: a DEFLATE stream with an Adler-32 trailer), done by
//! `flate2` on its pure-Rust backend (`miniz_oxide`): no C code ever sees peer bytes.
//! Compressed input comes from peers, so [`decompress`] is written against decompression
//! bombs: it inflates in fixed-size steps into a buffer whose capacity never exceeds the
//! caller's bound, and refuses the moment output would pass it. What it accepts is exactly
//! one complete zlib stream with nothing after it.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Output produced per inflate step (a stack buffer): the most decompressed bytes held
/// beyond what is already accepted.
const STEP: usize = 32 * 1024;

/// Why compressed bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecompressError {
    /// Decompressing would produce more than the caller's bound.
    #[error("decompressed document exceeds the {bound}-byte limit")]
    TooLarge {
        /// The caller's bound.
        bound: usize,
        /// The output buffer's capacity when refused (never above `bound`).
        buffer_capacity: usize,
    },
    /// Not a valid zlib stream (bad header, bad DEFLATE data or checksum).
    #[error("corrupt compressed data")]
    Corrupt,
    /// The stream stops before its end.
    #[error("compressed data is truncated")]
    Truncated,
    /// Bytes follow the end of the stream.
    #[error("{0} trailing byte(s) after the compressed data")]
    TrailingBytes(usize),
}

/// Why compressing failed (only an internal fault of the compressor).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("compression failed: {0}")]
pub struct CompressError(String);

/// Compresses `data` as one zlib stream at the best compression level: directory documents
/// are compressed once per period and fetched by many.
pub fn compress(data: &[u8]) -> Result<Vec<u8>, CompressError> {
    let mut c = Compress::new(Compression::best(), true);
    // Room for incompressible input plus the zlib overhead, so one call usually finishes.
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    loop {
        let consumed = usize::try_from(c.total_in()).map_err(|e| CompressError(e.to_string()))?;
        let rest = data.get(consumed..).unwrap_or_default();
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(1024));
        }
        match c
            .compress_vec(rest, &mut out, FlushCompress::Finish)
            .map_err(|e| CompressError(e.to_string()))?
        {
            Status::StreamEnd => return Ok(out),
            Status::Ok | Status::BufError => {}
        }
    }
}

/// Decompresses one zlib stream of at most `bound` decompressed bytes. The returned
/// buffer's capacity is at most `bound`, and no allocation beyond it is ever made:
/// output arrives in [`STEP`]-byte pieces and the buffer grows (at most doubling, capped
/// at `bound`) only to take a piece that fits.
pub fn decompress(input: &[u8], bound: usize) -> Result<Vec<u8>, DecompressError> {
    let mut d = Decompress::new(true);
    let mut out: Vec<u8> = Vec::new();
    let mut step = [0u8; STEP];
    loop {
        let consumed = usize::try_from(d.total_in()).map_err(|_| DecompressError::Corrupt)?;
        let rest = input.get(consumed..).unwrap_or_default();
        let before = d.total_out();
        let status = d
            .decompress(rest, &mut step, FlushDecompress::None)
            .map_err(|_| DecompressError::Corrupt)?;
        let produced = usize::try_from(d.total_out() - before)
            .map_err(|_| too_large(bound, out.capacity()))?;
        let piece = step.get(..produced).ok_or(DecompressError::Corrupt)?;
        let needed = out
            .len()
            .checked_add(produced)
            .filter(|&n| n <= bound)
            .ok_or_else(|| too_large(bound, out.capacity()))?;
        if needed > out.capacity() {
            let target = needed.max(out.capacity().saturating_mul(2)).min(bound);
            out.reserve_exact(target - out.len());
        }
        out.extend_from_slice(piece);
        let consumed_now = usize::try_from(d.total_in()).map_err(|_| DecompressError::Corrupt)?;
        match status {
            Status::StreamEnd => {
                return match input.len() - consumed_now.min(input.len()) {
                    0 => Ok(out),
                    n => Err(DecompressError::TrailingBytes(n)),
                };
            }
            // No progress with all input given: the stream is cut short.
            _ if produced == 0 && consumed_now == consumed => {
                return Err(DecompressError::Truncated)
            }
            _ => {}
        }
    }
}

fn too_large(bound: usize, buffer_capacity: usize) -> DecompressError {
    DecompressError::TooLarge {
        bound,
        buffer_capacity,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_strictness() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_be_bytes())
            .collect();
        let z = compress(&data).unwrap();
        assert!(z.len() < data.len() / 4);
        assert_eq!(decompress(&z, data.len()).unwrap(), data);
        assert!(matches!(
            decompress(&z, data.len() - 1),
            Err(DecompressError::TooLarge { .. })
        ));
        for cut in [0, 1, 2, z.len() / 2, z.len() - 1] {
            assert!(decompress(&z[..cut], data.len()).is_err(), "cut at {cut}");
        }
        let mut long = z.clone();
        long.push(0);
        assert_eq!(
            decompress(&long, data.len()),
            Err(DecompressError::TrailingBytes(1))
        );
        // A flipped byte in the middle breaks the data or the checksum.
        let mut bad = z.clone();
        bad[z.len() / 2] ^= 0x55;
        assert!(decompress(&bad, data.len()).is_err());
        assert_eq!(
            decompress(&compress(&[]).unwrap(), 0).unwrap(),
            Vec::<u8>::new()
        );
    }
}
