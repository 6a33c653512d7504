//! Link records: the only unit that ever crosses a link, always [`RECORD_LEN`] bytes.
//!
//! ```text
//! handshake record  = cell 517 (plaintext LINK_* cell) | 16 zero bytes
//! transport record  = ChaCha20-Poly1305(key, nonce = 0u32 | counter u64 LE, aad = "", cell 517) | tag 16
//! ```
//!
//! One [`RecordCipher`] per direction, each with its own key and counter. A counter is never
//! reused: it only moves forward, and when it would wrap the cipher refuses to work and the
//! channel closes.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};

use super::error::{LinkError, LinkResult};
use crate::cell::consts::CELL_LEN;

/// Length of the Poly1305 tag at the end of every record.
pub const RECORD_TAG_LEN: usize = 16;
/// Length of every record on the wire, handshake or transport.
pub const RECORD_LEN: usize = CELL_LEN + RECORD_TAG_LEN;

/// Splits a record into its cell and tag parts, refusing any other length.
fn split_record(record: &mut [u8]) -> LinkResult<(&mut [u8], &mut [u8])> {
    if record.len() != RECORD_LEN {
        return Err(LinkError::RecordLength(record.len()));
    }
    Ok(record.split_at_mut(CELL_LEN))
}

/// Builds a handshake record: the plaintext cell followed by 16 zero bytes, so the
/// handshake looks the same size as everything after it.
pub fn plaintext_record(cell: &[u8; CELL_LEN]) -> [u8; RECORD_LEN] {
    let mut out = [0u8; RECORD_LEN];
    out[..CELL_LEN].copy_from_slice(cell);
    out
}

/// Checks a handshake record (the 16 trailing bytes must be zero, so it has one encoding)
/// and returns its cell.
pub fn open_plaintext_record(record: &[u8]) -> LinkResult<&[u8]> {
    if record.len() != RECORD_LEN {
        return Err(LinkError::RecordLength(record.len()));
    }
    let (cell, pad) = record.split_at(CELL_LEN);
    if pad.iter().any(|&b| b != 0) {
        return Err(LinkError::Protocol("handshake record padding is not zero"));
    }
    Ok(cell)
}

/// One direction's record protection: a ChaCha20-Poly1305 key and the counter that forms
/// the nonce. The key is wiped on drop (chacha20poly1305's `zeroize` feature).
pub struct RecordCipher {
    aead: ChaCha20Poly1305,
    counter: u64,
}

impl RecordCipher {
    /// A cipher for one direction, starting at counter 0.
    pub fn new(key: &[u8; 32]) -> Self {
        Self::with_counter(key, 0)
    }

    /// A cipher whose next record uses `counter`. Only tests need a non-zero start.
    pub(crate) fn with_counter(key: &[u8; 32], counter: u64) -> Self {
        // Borrow the key as an Array without copying it, so no unwiped copy is left behind.
        let key: &Key = key.into();
        RecordCipher {
            aead: ChaCha20Poly1305::new(key),
            counter,
        }
    }

    /// The nonce for the next record, advancing the counter. Counter `u64::MAX` is never
    /// used: reaching it means the key has protected 2^64 − 1 records and must retire.
    fn next_nonce(&mut self) -> LinkResult<Nonce> {
        let current = self.counter;
        self.counter = current.checked_add(1).ok_or(LinkError::NonceExhausted)?;
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&current.to_le_bytes());
        Ok(Nonce::from(n))
    }

    /// Encrypts the record in place: `record` holds the plaintext cell in its first
    /// [`CELL_LEN`] bytes; the tag is written over the last [`RECORD_TAG_LEN`].
    pub fn seal(&mut self, record: &mut [u8]) -> LinkResult<()> {
        let (cell, tag_out) = split_record(record)?;
        let nonce = self.next_nonce()?;
        let tag = self
            .aead
            .encrypt_inout_detached(&nonce, &[], cell.into())
            // Only fails for messages longer than 2^38 bytes; a cell is 517.
            .map_err(|_| LinkError::BadRecord)?;
        tag_out.copy_from_slice(&tag);
        Ok(())
    }

    /// Authenticates and decrypts the record in place; on success its first [`CELL_LEN`]
    /// bytes are the plaintext cell. Any failure is fatal to the channel.
    pub fn open(&mut self, record: &mut [u8]) -> LinkResult<()> {
        let (cell, tag_in) = split_record(record)?;
        let nonce = self.next_nonce()?;
        let tag = Tag::try_from(&*tag_in).map_err(|_| LinkError::BadRecord)?;
        self.aead
            .decrypt_inout_detached(&nonce, &[], cell.into(), &tag)
            .map_err(|_| LinkError::BadRecord)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fill: u8) -> [u8; RECORD_LEN] {
        plaintext_record(&[fill; CELL_LEN])
    }

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let key = [3u8; 32];
        let (mut tx, mut rx) = (RecordCipher::new(&key), RecordCipher::new(&key));
        for i in 0..4u8 {
            let mut r = record(i);
            tx.seal(&mut r).unwrap();
            assert_ne!(&r[..CELL_LEN], &[i; CELL_LEN][..]);
            rx.open(&mut r).unwrap();
            assert_eq!(&r[..CELL_LEN], &[i; CELL_LEN][..]);
        }
        let mut r = record(9);
        tx.seal(&mut r).unwrap();
        r[100] ^= 1;
        assert!(matches!(rx.open(&mut r), Err(LinkError::BadRecord)));
    }

    #[test]
    fn counters_must_agree() {
        let key = [3u8; 32];
        let mut tx = RecordCipher::new(&key);
        let mut rx = RecordCipher::with_counter(&key, 1);
        let mut r = record(1);
        tx.seal(&mut r).unwrap();
        assert!(matches!(rx.open(&mut r), Err(LinkError::BadRecord)));
    }

    #[test]
    fn counter_exhaustion_is_an_error() {
        let key = [5u8; 32];
        let mut tx = RecordCipher::with_counter(&key, u64::MAX - 2);
        let mut rx = RecordCipher::with_counter(&key, u64::MAX - 2);
        for _ in 0..2 {
            let mut r = record(1);
            tx.seal(&mut r).unwrap();
            rx.open(&mut r).unwrap();
        }
        let mut r = record(1);
        assert!(matches!(tx.seal(&mut r), Err(LinkError::NonceExhausted)));
        assert!(matches!(rx.open(&mut r), Err(LinkError::NonceExhausted)));
        // And it stays exhausted.
        assert!(matches!(tx.seal(&mut r), Err(LinkError::NonceExhausted)));
    }

    #[test]
    fn wrong_lengths_are_refused() {
        let mut c = RecordCipher::new(&[0; 32]);
        let mut short = [0u8; RECORD_LEN - 1];
        assert!(matches!(
            c.seal(&mut short),
            Err(LinkError::RecordLength(_))
        ));
        assert!(matches!(
            c.open(&mut short),
            Err(LinkError::RecordLength(_))
        ));
        assert!(open_plaintext_record(&short).is_err());
        let mut r = record(0);
        r[RECORD_LEN - 1] = 1;
        assert!(open_plaintext_record(&r).is_err());
    }
}
