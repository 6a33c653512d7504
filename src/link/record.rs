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
//!
//! A direction's key is replaced in place by [`RecordCipher::rekey`] (Noise's `REKEY()`):
//!
//! ```text
//! k' = first 32 bytes of ChaCha20-Poly1305(key = k, nonce = 0u32 | (2^64 - 1) u64 LE, aad = "", 32 zero bytes)
//! ```
//!
//! The counter carries on across a rekey (it is never reset), so a nonce is never repeated
//! on a channel even across keys; the counter value 2^64 − 1 that the derivation uses is
//! never a record's.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use zeroize::{Zeroize, Zeroizing};

use super::error::{LinkError, LinkResult};
use crate::bytes::Reader;
use crate::cell::consts::CELL_LEN;

/// Length of the Poly1305 tag at the end of every record.
pub(crate) const RECORD_TAG_LEN: usize = 16;
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
pub(crate) fn plaintext_record(cell: &[u8; CELL_LEN]) -> [u8; RECORD_LEN] {
    let mut out = [0u8; RECORD_LEN];
    out[..CELL_LEN].copy_from_slice(cell);
    out
}

/// Checks a handshake record (the 16 trailing bytes must be zero, so it has one encoding)
/// and returns its cell.
pub(crate) fn open_plaintext_record(record: &[u8]) -> LinkResult<&[u8]> {
    if record.len() != RECORD_LEN {
        return Err(LinkError::RecordLength(record.len()));
    }
    let mut r = Reader::new(record);
    // The length was checked above, so the cell is there.
    let cell = r
        .take(CELL_LEN, "handshake cell")
        .map_err(|_| LinkError::RecordLength(record.len()))?;
    r.finish_zero_padded()
        .map_err(|_| LinkError::Protocol("handshake record padding is not zero"))?;
    Ok(cell)
}

/// The nonce of counter value `counter`: four zero bytes, then the counter little-endian.
fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::from(n)
}

/// One direction's record protection: a ChaCha20-Poly1305 key and the counter that forms
/// the nonce. The key is wiped on drop (chacha20poly1305's `zeroize` feature: its `Drop`
/// zeroes the key it holds), and so is a key replaced by [`Self::rekey`], since replacing
/// the AEAD value drops the old one.
pub struct RecordCipher {
    aead: ChaCha20Poly1305,
    /// The counter of the next record.
    counter: u64,
    /// The counter of the first record under the current key.
    key_first: u64,
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
            key_first: counter,
        }
    }

    /// The nonce for the next record, advancing the counter. Counter `u64::MAX` is never
    /// used: it is the rekey nonce, and reaching it means the channel has carried 2^64 − 1
    /// records in this direction and must close.
    fn next_nonce(&mut self) -> LinkResult<Nonce> {
        let current = self.counter;
        self.counter = current.checked_add(1).ok_or(LinkError::NonceExhausted)?;
        Ok(nonce(current))
    }

    /// The counter of the next record in this direction (records sealed or opened so far,
    /// across every key).
    pub fn counter(&self) -> u64 {
        self.counter
    }

    /// How many records the current key has sealed or opened.
    pub fn records_under_key(&self) -> u64 {
        self.counter.wrapping_sub(self.key_first)
    }

    /// Replaces the key with a one-way function of itself (Noise `REKEY()`, see the module
    /// docs) and erases the old one. The counter is unchanged: the next record uses the new
    /// key with the next counter value. Both ends of a direction must call this after the
    /// same record (the REKEY cell, docs/protocol.md §5.5.1).
    pub fn rekey(&mut self) -> LinkResult<()> {
        let mut next = Zeroizing::new([0u8; 32]);
        let mut tag = self
            .aead
            .encrypt_inout_detached(&nonce(u64::MAX), &[], next.as_mut_slice().into())
            // Only fails for messages longer than 2^38 bytes; this one is 32.
            .map_err(|_| LinkError::BadRecord)?;
        // The tag is not part of the new key; wipe it anyway, it was computed from it.
        tag.as_mut_slice().zeroize();
        let key: &Key = (&*next).into();
        // Dropping the previous AEAD wipes the previous key.
        self.aead = ChaCha20Poly1305::new(key);
        self.key_first = self.counter;
        Ok(())
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

    /// Rekey test vector (docs/protocol.md §5.5.1): k = 00 01 .. 1f. The expected values
    /// were also computed with an independent ChaCha20 (RFC 8439 §2.3) written for the
    /// purpose: keystream block 1 under nonce 00000000 ffffffffffffffff.
    const VECTOR_KEY: [u8; 32] = {
        let mut k = [0u8; 32];
        let mut i = 0;
        while i < 32 {
            k[i] = i as u8;
            i += 1;
        }
        k
    };

    /// The new key, computed independently of `rekey`: ChaCha20-Poly1305 encryption of 32
    /// zero bytes under the old key at nonce counter 2^64 − 1, first 32 bytes.
    fn derived_by_hand(key: &[u8; 32]) -> [u8; 32] {
        let aead = ChaCha20Poly1305::new(key.into());
        let mut out = [0u8; 32];
        let _tag = aead
            .encrypt_inout_detached(&nonce(u64::MAX), &[], out.as_mut_slice().into())
            .unwrap();
        out
    }

    #[test]
    fn rekey_is_deterministic_one_way_and_changes_the_key() {
        let k1 = derived_by_hand(&VECTOR_KEY);
        assert_ne!(k1, VECTOR_KEY);
        assert_eq!(
            crate::bytes::hex::encode(&k1),
            "50835543a205b22c9323f2022bc4f67d838f90e61d5ccf33c4513e01f85b5042"
        );
        let k2 = derived_by_hand(&k1);
        assert_eq!(
            crate::bytes::hex::encode(&k2),
            "30fe3726fa0f864af01d15663c77f95e490e30143788af57e90d56fb9aa71609"
        );

        // `rekey` computes exactly that: a cipher rekeyed once seals like a fresh cipher
        // under k1, at the same counter; twice, like one under k2.
        let mut a = RecordCipher::with_counter(&VECTOR_KEY, 7);
        a.rekey().unwrap();
        let mut b = RecordCipher::with_counter(&k1, 7);
        let (mut ra, mut rb) = (record(4), record(4));
        a.seal(&mut ra).unwrap();
        b.seal(&mut rb).unwrap();
        assert_eq!(ra, rb);
        a.rekey().unwrap();
        let mut c = RecordCipher::with_counter(&k2, 8);
        let (mut ra, mut rc) = (record(5), record(5));
        a.seal(&mut ra).unwrap();
        c.seal(&mut rc).unwrap();
        assert_eq!(ra, rc);

        // Two ends that rekey after the same record stay in step.
        let (mut tx, mut rx) = (RecordCipher::new(&[9; 32]), RecordCipher::new(&[9; 32]));
        for round in 0..50u8 {
            for _ in 0..3 {
                let mut r = record(round);
                tx.seal(&mut r).unwrap();
                rx.open(&mut r).unwrap();
                assert_eq!(&r[..CELL_LEN], &[round; CELL_LEN][..]);
            }
            tx.rekey().unwrap();
            rx.rekey().unwrap();
        }
    }

    #[test]
    fn records_from_before_a_rekey_are_refused_after_it() {
        let key = [6u8; 32];
        let (mut tx, mut rx) = (RecordCipher::new(&key), RecordCipher::new(&key));
        let mut before = record(1);
        tx.seal(&mut before).unwrap();
        let captured = before;
        rx.open(&mut before).unwrap();
        tx.rekey().unwrap();
        rx.rekey().unwrap();

        // A replay of the captured record: wrong key and wrong counter.
        let mut replay = captured;
        assert!(matches!(rx.open(&mut replay), Err(LinkError::BadRecord)));

        // Even a record sealed under the old key at exactly the counter the receiver now
        // expects is refused: only the key differs.
        let (mut tx, mut rx) = (RecordCipher::new(&key), RecordCipher::new(&key));
        let mut first = record(1);
        tx.seal(&mut first).unwrap();
        rx.open(&mut first).unwrap();
        rx.rekey().unwrap();
        let mut old_key_record = record(2);
        tx.seal(&mut old_key_record).unwrap(); // counter 1, old key
        assert_eq!(rx.counter(), 1);
        assert!(matches!(
            rx.open(&mut old_key_record),
            Err(LinkError::BadRecord)
        ));
    }

    #[test]
    fn counters_carry_on_across_rekeys() {
        let mut c = RecordCipher::new(&[1; 32]);
        assert_eq!((c.counter(), c.records_under_key()), (0, 0));
        for _ in 0..3 {
            c.seal(&mut record(0)).unwrap();
        }
        assert_eq!((c.counter(), c.records_under_key()), (3, 3));
        c.rekey().unwrap();
        // The counter is not reset and the rekey uses no counter value.
        assert_eq!((c.counter(), c.records_under_key()), (3, 0));
        c.seal(&mut record(0)).unwrap();
        assert_eq!((c.counter(), c.records_under_key()), (4, 1));

        // A rekey next to exhaustion does not help a counter that has run out: the limit
        // is per direction, across keys.
        let mut c = RecordCipher::with_counter(&[1; 32], u64::MAX - 1);
        c.seal(&mut record(0)).unwrap();
        c.rekey().unwrap();
        assert!(matches!(
            c.seal(&mut record(0)),
            Err(LinkError::NonceExhausted)
        ));
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
