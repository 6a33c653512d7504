//! UIV+, the wide-block tweakable cipher under every relay-cell layer (docs/protocol.md
//! §4.5), built as Tor's Counter Galois Onion builds it (proposal 359) from AES-128 and
//! POLYVAL.
//!
//! A relay body is `L(16) | R(496)`. With keys `J = (KJ, HJ)` and `S = (KS, HS)` and a
//! tweak `(chain, ad)`:
//!
//! ```text
//! ENC:  h  = POLYVAL(HJ, chain | ad | R)         -- 33 whole blocks
//!       L' = AES(KJ, L xor h) xor h              -- LRW2 tweakable block cipher
//!       R' = R xor CTR(KS, POLYVAL(HS, L'))[0..496]
//! DEC:  the inverse: R from L' first, then L.
//! ```
//!
//! Encryption is non-malleable: a change to any input bit makes `L'` an unrelated value,
//! and `L'` selects the keystream, so the whole output is garbage. Decryption is malleable
//! (a change to `R'` passes into `R` bit for bit). Relays only ever encrypt; clients only
//! ever decrypt, which is why a relay's output can never be a marked cell repaired later.

use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use aes::{Aes128, Aes128Enc, Block};
use polyval::universal_hash::UniversalHash;
use polyval::Polyval;
use zeroize::{Zeroize, Zeroizing};

use crate::cell::consts::{RELAY_BODY_LEN, RELAY_PAYLOAD_LEN, RELAY_TAG_LEN};

/// One AES / POLYVAL block.
pub(crate) const BLOCK_LEN: usize = 16;
/// `KJ | HJ | KS | HS`.
pub(crate) const UIV_KEYS_LEN: usize = 4 * BLOCK_LEN;
/// What one key update produces: new keys, then the next nonce.
pub(crate) const UPDATE_LEN: usize = UIV_KEYS_LEN + BLOCK_LEN;
/// The payload is a whole number of blocks, so neither POLYVAL nor CTR pads.
const PAYLOAD_BLOCKS: usize = RELAY_PAYLOAD_LEN / BLOCK_LEN;
const _: () = assert!(PAYLOAD_BLOCKS * BLOCK_LEN == RELAY_PAYLOAD_LEN);
const _: () =
    assert!(RELAY_TAG_LEN == BLOCK_LEN && RELAY_TAG_LEN + RELAY_PAYLOAD_LEN == RELAY_BODY_LEN);
/// Keystream blocks `0..31` cover a payload; the update stream starts right after them.
const UPDATE_FIRST_BLOCK: u128 = PAYLOAD_BLOCKS as u128;
const UPDATE_BLOCKS: usize = UPDATE_LEN / BLOCK_LEN;

/// The keys of one UIV+ instance. The payload keystream is made on the stack and wiped
/// after each cell: kept here, it cost 496 bytes per layer, twice per hop of every open
/// circuit (docs/PERFORMANCE.md, "Memory per circuit").
pub(crate) struct Uiv {
    /// Both directions: relays encipher the tag, clients decipher it.
    kj: Aes128,
    hj: Polyval,
    /// Only ever enciphers (CTR).
    ks: Aes128Enc,
    hs: Polyval,
}

/// Fills `blocks` with `AES(KS, start + first + i)`, the counter wrapping mod 2^128.
fn keystream(ks: &Aes128Enc, start: u128, first: u128, blocks: &mut [Block]) {
    for (i, b) in (0u128..).zip(blocks.iter_mut()) {
        *b = Block::from(start.wrapping_add(first).wrapping_add(i).to_be_bytes());
    }
    ks.encrypt_blocks(blocks);
}

/// `a ^= b` for one block.
fn xor_block(a: &mut [u8; BLOCK_LEN], b: &[u8; BLOCK_LEN]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x ^= y;
    }
}

impl Uiv {
    /// Keys from `KJ | HJ | KS | HS`.
    pub(crate) fn new(keys: &[u8; UIV_KEYS_LEN]) -> Self {
        let mut parts = [[0u8; BLOCK_LEN]; 4];
        for (dst, src) in parts.iter_mut().zip(keys.chunks_exact(BLOCK_LEN)) {
            dst.copy_from_slice(src);
        }
        let [kj, hj, ks, hs] = &parts;
        let uiv = Self {
            kj: Aes128::new(kj.into()),
            hj: Polyval::new(hj.into()),
            ks: Aes128Enc::new(ks.into()),
            hs: Polyval::new(hs.into()),
        };
        parts.as_flattened_mut().zeroize();
        uiv
    }

    /// `POLYVAL(HJ, chain | ad | right)`: the LRW2 mask for this tweak.
    fn tweak_mask(
        &mut self,
        chain: &[u8; BLOCK_LEN],
        ad: &[u8; BLOCK_LEN],
        right: &[u8],
    ) -> [u8; BLOCK_LEN] {
        self.hj.update(&[Block::from(*chain), Block::from(*ad)]);
        // 31 whole blocks: `update_padded` pads nothing.
        self.hj.update_padded(right);
        self.hj.finalize_reset().into()
    }

    /// `POLYVAL(HS, v)` as a big-endian 128-bit counter: the CTR start for tweak `v`.
    fn ctr_start(&mut self, v: &[u8; BLOCK_LEN]) -> u128 {
        self.hs.update(&[Block::from(*v)]);
        u128::from_be_bytes(self.hs.finalize_reset().into())
    }

    /// `right ^= CTR(KS, POLYVAL(HS, tag))[0..496]`.
    fn xor_payload_keystream(&mut self, tag: &[u8; BLOCK_LEN], right: &mut [u8]) {
        let start = self.ctr_start(tag);
        let mut scratch = [Block::default(); PAYLOAD_BLOCKS];
        keystream(&self.ks, start, 0, &mut scratch);
        let stream = Block::cast_slice_to_core(&scratch).as_flattened();
        for (r, k) in right.iter_mut().zip(stream) {
            *r ^= k;
        }
        Block::cast_slice_to_core_mut(&mut scratch)
            .as_flattened_mut()
            .zeroize();
    }

    /// UIV+ encryption of `body` in place (the relay side of every layer).
    pub(crate) fn encrypt(
        &mut self,
        chain: &[u8; BLOCK_LEN],
        ad: &[u8; BLOCK_LEN],
        body: &mut [u8; RELAY_BODY_LEN],
    ) {
        let (left, right) = body.split_at_mut(RELAY_TAG_LEN);
        let mut tag = [0u8; BLOCK_LEN];
        tag.copy_from_slice(left);
        let mask = self.tweak_mask(chain, ad, right);
        xor_block(&mut tag, &mask);
        let mut block = Block::from(tag);
        self.kj.encrypt_block(&mut block);
        tag = block.into();
        xor_block(&mut tag, &mask);
        left.copy_from_slice(&tag);
        self.xor_payload_keystream(&tag, right);
    }

    /// UIV+ decryption of `body` in place (the client side of every layer).
    pub(crate) fn decrypt(
        &mut self,
        chain: &[u8; BLOCK_LEN],
        ad: &[u8; BLOCK_LEN],
        body: &mut [u8; RELAY_BODY_LEN],
    ) {
        let (left, right) = body.split_at_mut(RELAY_TAG_LEN);
        let mut tag = [0u8; BLOCK_LEN];
        tag.copy_from_slice(left);
        self.xor_payload_keystream(&tag, right);
        let mask = self.tweak_mask(chain, ad, right);
        xor_block(&mut tag, &mask);
        let mut block = Block::from(tag);
        self.kj.decrypt_block(&mut block);
        tag = block.into();
        xor_block(&mut tag, &mask);
        left.copy_from_slice(&tag);
    }

    /// Replaces the keys by `CTR(KS, POLYVAL(HS, nonce))` blocks 31..36 and the nonce by
    /// the last of those blocks. One-way: the old keys cannot be recomputed from the new
    /// ones, which is what makes an endpoint's earlier cells safe from a later compromise.
    pub(crate) fn update(&mut self, nonce: &mut [u8; BLOCK_LEN]) {
        let start = self.ctr_start(nonce);
        let mut stream = Zeroizing::new([[0u8; BLOCK_LEN]; UPDATE_BLOCKS]);
        keystream(
            &self.ks,
            start,
            UPDATE_FIRST_BLOCK,
            Block::cast_slice_from_core_mut(stream.as_mut_slice()),
        );
        let [kj, hj, ks, hs, next] = &*stream;
        // Assigning drops (and so wipes) the old cipher and hash states.
        self.kj = Aes128::new(kj.into());
        self.hj = Polyval::new(hj.into());
        self.ks = Aes128Enc::new(ks.into());
        self.hs = Polyval::new(hs.into());
        *nonce = *next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uiv(seed: u8) -> Uiv {
        Uiv::new(&core::array::from_fn(|i| seed.wrapping_add(i as u8)))
    }

    #[test]
    fn decrypt_inverts_encrypt() {
        let mut a = uiv(1);
        let chain = [7u8; 16];
        let ad = [3u8; 16];
        let plain: [u8; RELAY_BODY_LEN] = core::array::from_fn(|i| i as u8);
        let mut body = plain;
        a.encrypt(&chain, &ad, &mut body);
        assert_ne!(body, plain);
        a.decrypt(&chain, &ad, &mut body);
        assert_eq!(body, plain);
    }

    /// Encryption is non-malleable: one flipped input bit anywhere changes the output tag
    /// and (so) every byte region of the output.
    #[test]
    fn any_input_bit_garbles_the_whole_encryption() {
        let mut a = uiv(2);
        let chain = [0u8; 16];
        let ad = [0u8; 16];
        let plain = [0x55u8; RELAY_BODY_LEN];
        let mut reference = plain;
        a.encrypt(&chain, &ad, &mut reference);
        for pos in [0, 15, 16, 17, 300, RELAY_BODY_LEN - 1] {
            let mut body = plain;
            body[pos] ^= 1;
            a.encrypt(&chain, &ad, &mut body);
            assert_ne!(
                body[..16],
                reference[..16],
                "tag unchanged after flip at {pos}"
            );
            let same = body
                .iter()
                .zip(reference.iter())
                .filter(|(x, y)| x == y)
                .count();
            assert!(same < 20, "flip at {pos}: {same} equal bytes");
        }
        // The tweak is bound too.
        let mut body = plain;
        a.encrypt(&chain, &[1u8; 16], &mut body);
        assert_ne!(body[..16], reference[..16]);
    }

    #[test]
    fn update_changes_keys_and_nonce_deterministically() {
        let mut a = uiv(3);
        let mut b = uiv(3);
        let mut na = [9u8; 16];
        let mut nb = [9u8; 16];
        a.update(&mut na);
        b.update(&mut nb);
        assert_eq!(na, nb);
        assert_ne!(na, [9u8; 16]);
        let mut x = [1u8; RELAY_BODY_LEN];
        let mut y = x;
        a.encrypt(&[0; 16], &[0; 16], &mut x);
        b.encrypt(&[0; 16], &[0; 16], &mut y);
        assert_eq!(x, y);
        let mut z = [1u8; RELAY_BODY_LEN];
        uiv(3).encrypt(&[0; 16], &[0; 16], &mut z);
        assert_ne!(x, z, "the update must change the keys");
    }
}
