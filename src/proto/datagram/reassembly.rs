//! Putting a datagram back together from its DATAGRAM fragments.
//!
//! A circuit delivers cells in order and a sender emits the fragments of one datagram
//! back to back, so one partial datagram per flow is enough. Anything out of place (a new
//! datagram starting, a fragment that does not follow) discards the partial one: a lost
//! or forged fragment costs that datagram only, and a flow never holds more than
//! [`MAX_DATAGRAM_LEN`] bytes of partial data.

use crate::cell::datagram::{Datagram, MAX_DATAGRAM_LEN};

/// The partial datagram of one flow.
#[derive(Debug, Default)]
pub(crate) struct Reassembler {
    partial: Option<Partial>,
    discarded: u64,
}

#[derive(Debug)]
struct Partial {
    seq: u16,
    count: u8,
    next: u8,
    bytes: Vec<u8>,
}

impl Reassembler {
    /// Takes in one fragment; returns the datagram it completes, if any.
    pub(crate) fn push(&mut self, frag: Datagram) -> Option<Vec<u8>> {
        let (seq, index, count) = (frag.seq(), frag.index(), frag.count());
        let follows = self
            .partial
            .as_ref()
            .is_some_and(|p| p.seq == seq && p.count == count && p.next == index);
        if !follows {
            if self.partial.take().is_some() {
                self.discarded += 1;
            }
            if index != 0 {
                self.discarded += 1;
                return None;
            }
            if count == 1 {
                return Some(frag.into_bytes());
            }
            let mut bytes = Vec::with_capacity(MAX_DATAGRAM_LEN.min(usize::from(count) * 487));
            bytes.extend_from_slice(frag.bytes());
            self.partial = Some(Partial {
                seq,
                count,
                next: 1,
                bytes,
            });
            return None;
        }
        let p = self.partial.as_mut()?;
        p.bytes.extend_from_slice(frag.bytes());
        p.next += 1;
        if p.next == p.count {
            return self.partial.take().map(|p| p.bytes);
        }
        None
    }

    /// Datagrams lost to missing or misplaced fragments.
    #[cfg(test)]
    pub(crate) fn discarded(&self) -> u64 {
        self.discarded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(len: usize, salt: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_add(salt)).collect()
    }

    #[test]
    fn whole_datagrams_come_back() {
        let mut r = Reassembler::default();
        for (seq, len) in [0usize, 1, 160, 487, 488, 1000, 1472]
            .into_iter()
            .enumerate()
        {
            let p = payload(len, seq as u8);
            let frags = Datagram::split(seq as u16, &p).unwrap();
            let n = frags.len();
            let out: Vec<_> = frags.into_iter().filter_map(|f| r.push(f)).collect();
            assert_eq!(out, vec![p], "len {len}, {n} fragments");
        }
        assert_eq!(r.discarded(), 0);
    }

    #[test]
    fn a_lost_fragment_loses_only_its_datagram() {
        let mut r = Reassembler::default();
        let a = Datagram::split(1, &payload(1200, 1)).unwrap();
        let b = Datagram::split(2, &payload(1200, 2)).unwrap();
        // Fragment 1 of datagram 1 is lost.
        let mut out = Vec::new();
        for (i, f) in a.into_iter().enumerate() {
            if i != 1 {
                out.extend(r.push(f));
            }
        }
        out.extend(b.into_iter().filter_map(|f| r.push(f)));
        assert_eq!(out, vec![payload(1200, 2)]);
        assert!(r.discarded() >= 1);
    }

    proptest::proptest! {
        /// Whatever fragments arrive (from several datagrams, reordered, duplicated, some
        /// lost), every datagram that comes out is one that was sent, whole: fragments are
        /// never spliced across datagrams, and nothing is held past the bound.
        #[test]
        fn only_whole_sent_datagrams_come_out(
            payloads in proptest::collection::vec(
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..=MAX_DATAGRAM_LEN),
                1..6,
            ),
            picks in proptest::collection::vec(proptest::prelude::any::<proptest::sample::Index>(), 0..40),
        ) {
            // Every datagram of one flow uses its own seq, as a sender does.
            let frags: Vec<Datagram> = payloads
                .iter()
                .enumerate()
                .flat_map(|(i, p)| Datagram::split(i as u16, p).unwrap())
                .collect();
            let mut r = Reassembler::default();
            for pick in picks {
                let f = frags[pick.index(frags.len())].clone();
                if let Some(out) = r.push(f) {
                    proptest::prop_assert!(payloads.contains(&out));
                }
                let held = r.partial.as_ref().map_or(0, |p| p.bytes.len());
                proptest::prop_assert!(held <= MAX_DATAGRAM_LEN);
            }
        }
    }

    #[test]
    fn a_forged_fragment_cannot_splice_two_datagrams() {
        let mut r = Reassembler::default();
        let a = Datagram::split(5, &payload(1000, 5)).unwrap();
        let b = Datagram::split(6, &payload(1000, 6)).unwrap();
        assert!(r.push(a[0].clone()).is_none());
        // The second fragment of another datagram does not complete the first.
        assert!(r.push(b[1].clone()).is_none());
        assert!(r.push(a[2].clone()).is_none());
        assert_eq!(r.partial.as_ref().map(|p| p.bytes.len()), None);
    }
}
