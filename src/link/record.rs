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

use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::ChaCha20;
use poly1305::universal_hash::KeyInit;
use poly1305::Poly1305;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

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

/// Whole 64-byte ChaCha20 blocks covering the cell.
const CELL_BLOCKS: usize = CELL_LEN.div_ceil(64);
/// Keystream generated per record: block 0 (the one-time Poly1305 key) and the blocks
/// that encrypt the cell (counter 1 onwards), all whole blocks.
const KEYSTREAM_LEN: usize = 64 * (1 + CELL_BLOCKS);
/// Poly1305 input of RFC 8439 with empty AAD: ciphertext, zero padding to 16 bytes, then
/// `le64(0) | le64(CELL_LEN)`.
const MAC_INPUT_LEN: usize = CELL_LEN.div_ceil(16) * 16 + 16;

/// One direction's record protection: ChaCha20-Poly1305 (RFC 8439) under a key, with the
/// counter that forms the nonce.
///
/// The AEAD is composed here from the `chacha20` and `poly1305` primitives rather than
/// called through the `chacha20poly1305` crate, with byte-identical output (checked in
/// the tests): the keystream is generated in whole blocks into a scratch buffer and the
/// MAC runs over one contiguous buffer. For a 517-byte cell this is markedly cheaper
/// than the generic path, which works on a partial last block
/// (docs/PERFORMANCE.md). Key and scratch are wiped on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct RecordCipher {
    key: [u8; 32],
    counter: u64,
    keystream: [u8; KEYSTREAM_LEN],
    mac_input: [u8; MAC_INPUT_LEN],
}

impl RecordCipher {
    /// A cipher for one direction, starting at counter 0.
    pub fn new(key: &[u8; 32]) -> Self {
        Self::with_counter(key, 0)
    }

    /// A cipher whose next record uses `counter`. Only tests need a non-zero start.
    pub(crate) fn with_counter(key: &[u8; 32], counter: u64) -> Self {
        let mut mac_input = [0u8; MAC_INPUT_LEN];
        // The length block never changes: le64(aad_len = 0) | le64(CELL_LEN).
        mac_input[MAC_INPUT_LEN - 8..].copy_from_slice(&(CELL_LEN as u64).to_le_bytes());
        RecordCipher {
            key: *key,
            counter,
            keystream: [0; KEYSTREAM_LEN],
            mac_input,
        }
    }

    /// The nonce for the next record, advancing the counter. Counter `u64::MAX` is never
    /// used: reaching it means the key has protected 2^64 − 1 records and must retire.
    fn next_nonce(&mut self) -> LinkResult<[u8; 12]> {
        let current = self.counter;
        self.counter = current.checked_add(1).ok_or(LinkError::NonceExhausted)?;
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&current.to_le_bytes());
        Ok(n)
    }

    /// Fills the keystream scratch for `nonce`: block 0 (Poly1305 key), then the cell's.
    fn keystream(&mut self, nonce: &[u8; 12]) {
        ChaCha20::new((&self.key).into(), nonce.into()).write_keystream(&mut self.keystream);
    }

    /// XORs the cell with the keystream from block 1 on.
    fn xor_cell(&self, cell: &mut [u8]) {
        for (c, k) in cell.iter_mut().zip(self.keystream.iter().skip(64)) {
            *c ^= k;
        }
    }

    /// The RFC 8439 tag of ciphertext `cell` (empty AAD).
    fn tag(&mut self, cell: &[u8]) -> [u8; RECORD_TAG_LEN] {
        if let Some(dst) = self.mac_input.get_mut(..CELL_LEN) {
            dst.copy_from_slice(cell);
        }
        let mut polykey = [0u8; 32];
        polykey.copy_from_slice(self.keystream.get(..32).unwrap_or(&[0u8; 32]));
        // A whole number of 16-byte blocks (the padding is part of the buffer), so the
        // unpadded MAC equals the RFC's padded construction.
        let tag: [u8; RECORD_TAG_LEN] = Poly1305::new((&polykey).into())
            .compute_unpadded(&self.mac_input)
            .into();
        polykey.zeroize();
        tag
    }

    /// Encrypts the record in place: `record` holds the plaintext cell in its first
    /// [`CELL_LEN`] bytes; the tag is written over the last [`RECORD_TAG_LEN`].
    pub fn seal(&mut self, record: &mut [u8]) -> LinkResult<()> {
        let (cell, tag_out) = split_record(record)?;
        let nonce = self.next_nonce()?;
        self.keystream(&nonce);
        self.xor_cell(cell);
        let tag = self.tag(cell);
        tag_out.copy_from_slice(&tag);
        Ok(())
    }

    /// Authenticates and decrypts the record in place; on success its first [`CELL_LEN`]
    /// bytes are the plaintext cell. Any failure is fatal to the channel (and leaves the
    /// record undecrypted).
    pub fn open(&mut self, record: &mut [u8]) -> LinkResult<()> {
        let (cell, tag_in) = split_record(record)?;
        let nonce = self.next_nonce()?;
        self.keystream(&nonce);
        let tag = self.tag(cell);
        if !bool::from(tag.ct_eq(&*tag_in)) {
            return Err(LinkError::BadRecord);
        }
        self.xor_cell(cell);
        Ok(())
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

    /// Byte-identical to the `chacha20poly1305` crate (the wire format is RFC 8439).
    #[test]
    fn matches_the_reference_aead() {
        use chacha20poly1305::aead::{AeadInOut, KeyInit as _};
        use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
        for (k, start) in [(7u8, 0u64), (0xa5, 12_345), (1, u64::MAX - 5)] {
            let key = [k; 32];
            let reference = ChaCha20Poly1305::new((&key).into());
            let mut ours = RecordCipher::with_counter(&key, start);
            let mut rx = RecordCipher::with_counter(&key, start);
            for i in 0..3u64 {
                let n = start + i;
                let mut cell = [0u8; CELL_LEN];
                for (j, b) in cell.iter_mut().enumerate() {
                    *b = (j as u64).wrapping_mul(31).wrapping_add(n.wrapping_mul(7)) as u8 ^ k;
                }
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&n.to_le_bytes());
                let mut expect = cell;
                let tag = reference
                    .encrypt_inout_detached(&Nonce::from(nonce), &[], (&mut expect[..]).into())
                    .unwrap();
                let mut r = plaintext_record(&cell);
                ours.seal(&mut r).unwrap();
                assert_eq!(&r[..CELL_LEN], &expect[..]);
                assert_eq!(&r[CELL_LEN..], tag.as_slice());
                // And the reference opens ours, and we open ours.
                let mut back = expect;
                reference
                    .decrypt_inout_detached(
                        &Nonce::from(nonce),
                        &[],
                        (&mut back[..]).into(),
                        &Tag::try_from(&r[CELL_LEN..]).unwrap(),
                    )
                    .unwrap();
                assert_eq!(back, cell);
                rx.open(&mut r).unwrap();
                assert_eq!(&r[..CELL_LEN], &cell[..]);
            }
        }
    }

    #[test]
    fn tampered_tag_or_cell_leaves_the_record_unopened() {
        let key = [9u8; 32];
        let mut tx = RecordCipher::new(&key);
        let mut r = record(4);
        tx.seal(&mut r).unwrap();
        for pos in [0, CELL_LEN - 1, CELL_LEN, RECORD_LEN - 1] {
            let mut bad = r;
            bad[pos] ^= 0x80;
            let mut rx = RecordCipher::new(&key);
            assert!(matches!(rx.open(&mut bad), Err(LinkError::BadRecord)));
            // Not decrypted: the ciphertext is still there.
            assert_eq!(&bad[..CELL_LEN.min(pos)], &r[..CELL_LEN.min(pos)]);
        }
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
