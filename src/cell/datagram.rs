//! DATAGRAM: one fragment of a UDP datagram on a flow (docs/protocol.md §3.4).
//!
//! A datagram of up to [`MAX_DATAGRAM_LEN`] bytes is cut into at most
//! [`MAX_FRAGMENTS`] fragments of [`FRAGMENT_LEN`] bytes, the last one shorter. The
//! layout is fixed by the first fragment's position, so a parser can refuse any fragment
//! that could not belong to a datagram within the bound: every fragment but the last is
//! full, and the last one does not take the datagram past [`MAX_DATAGRAM_LEN`].

use super::consts::MAX_RELAY_DATA;
use super::error::{CellError, CellResult};
use crate::bytes::{Reader, Writer};

/// Largest UDP payload a flow carries: an Ethernet MTU of 1,500 bytes less the IPv4 and
/// UDP headers (what is sure to cross the Internet unfragmented).
pub const MAX_DATAGRAM_LEN: usize = 1472;
/// Bytes of the fragment header: `seq u16 | index u8 | count u8`.
pub const FRAGMENT_HEADER_LEN: usize = 4;
/// Payload bytes of every fragment but the last.
pub const FRAGMENT_LEN: usize = MAX_RELAY_DATA - FRAGMENT_HEADER_LEN;
/// Most fragments of one datagram.
pub const MAX_FRAGMENTS: u8 = MAX_DATAGRAM_LEN.div_ceil(FRAGMENT_LEN) as u8;

/// One fragment: `seq u16 | index u8 | count u8 | bytes`.
#[derive(Clone, PartialEq, Eq)]
pub struct Datagram {
    seq: u16,
    index: u8,
    count: u8,
    bytes: Vec<u8>,
}

// Datagram contents are user traffic: never in logs.
impl std::fmt::Debug for Datagram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datagram")
            .field("seq", &self.seq)
            .field("index", &self.index)
            .field("count", &self.count)
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl Datagram {
    /// Fragment `index` of `count` of datagram `seq`, checked against the layout rules.
    pub fn new(seq: u16, index: u8, count: u8, bytes: Vec<u8>) -> CellResult<Self> {
        if count == 0 || count > MAX_FRAGMENTS {
            return Err(CellError::BadValue {
                field: "fragment count",
                value: u64::from(count),
            });
        }
        if index >= count {
            return Err(CellError::BadValue {
                field: "fragment index",
                value: u64::from(index),
            });
        }
        let last = index + 1 == count;
        let before = usize::from(index) * FRAGMENT_LEN;
        let fits = if last {
            // Only a datagram of one fragment may be empty (UDP allows empty payloads).
            (count == 1 || !bytes.is_empty()) && before + bytes.len() <= MAX_DATAGRAM_LEN
        } else {
            bytes.len() == FRAGMENT_LEN
        };
        if !fits || bytes.len() > FRAGMENT_LEN {
            return Err(CellError::BadValue {
                field: "fragment length",
                value: bytes.len() as u64,
            });
        }
        Ok(Datagram {
            seq,
            index,
            count,
            bytes,
        })
    }

    /// Cuts a whole datagram into its fragments.
    pub fn split(seq: u16, payload: &[u8]) -> CellResult<Vec<Datagram>> {
        if payload.len() > MAX_DATAGRAM_LEN {
            return Err(CellError::LengthOutOfBounds {
                field: "datagram",
                len: payload.len(),
                max: MAX_DATAGRAM_LEN,
            });
        }
        if payload.is_empty() {
            return Ok(vec![Datagram::new(seq, 0, 1, Vec::new())?]);
        }
        let chunks: Vec<&[u8]> = payload.chunks(FRAGMENT_LEN).collect();
        let count = u8::try_from(chunks.len()).map_err(|_| CellError::BadValue {
            field: "fragment count",
            value: chunks.len() as u64,
        })?;
        chunks
            .into_iter()
            .zip(0u8..)
            .map(|(c, i)| Datagram::new(seq, i, count, c.to_vec()))
            .collect()
    }

    /// Which datagram of the flow this fragment belongs to (wraps at 2^16).
    pub fn seq(&self) -> u16 {
        self.seq
    }
    /// Position of this fragment, from 0.
    pub fn index(&self) -> u8 {
        self.index
    }
    /// Fragments in the datagram.
    pub fn count(&self) -> u8 {
        self.count
    }
    /// The fragment's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// Unwraps into the fragment's bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    pub(super) fn parse(r: &mut Reader<'_>) -> CellResult<Self> {
        let seq = r.u16("datagram seq")?;
        let index = r.u8("fragment index")?;
        let count = r.u8("fragment count")?;
        Datagram::new(seq, index, count, r.take_rest().to_vec())
    }

    pub(super) fn encode(&self, w: &mut Writer<'_>) -> CellResult<()> {
        w.u16(self.seq, "datagram seq")?;
        w.u8(self.index, "fragment index")?;
        w.u8(self.count, "fragment count")?;
        Ok(w.put(&self.bytes, "datagram")?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_constants() {
        assert_eq!(FRAGMENT_LEN, 487);
        assert_eq!(MAX_FRAGMENTS, 4);
    }

    #[test]
    fn split_sizes() {
        for len in [0usize, 1, 160, 487, 488, 974, 975, 1461, 1462, 1472] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let frags = Datagram::split(9, &payload).unwrap();
            assert_eq!(frags.len(), len.div_ceil(FRAGMENT_LEN).max(1), "{len}");
            let joined: Vec<u8> = frags.iter().flat_map(|f| f.bytes().to_vec()).collect();
            assert_eq!(joined, payload);
        }
        assert!(Datagram::split(1, &[0; 1473]).is_err());
    }

    #[test]
    fn layout_rules_are_enforced() {
        assert!(Datagram::new(0, 0, 0, vec![1]).is_err(), "no fragments");
        assert!(
            Datagram::new(0, 0, 5, vec![1; FRAGMENT_LEN]).is_err(),
            "too many"
        );
        assert!(Datagram::new(0, 2, 2, vec![1]).is_err(), "index past count");
        assert!(Datagram::new(0, 0, 2, vec![1; 10]).is_err(), "short middle");
        assert!(Datagram::new(0, 1, 2, vec![]).is_err(), "empty last of two");
        assert!(Datagram::new(0, 3, 4, vec![1; 12]).is_err(), "past 1472");
        assert!(Datagram::new(0, 3, 4, vec![1; 11]).is_ok());
        assert!(Datagram::new(0, 0, 1, vec![]).is_ok(), "empty datagram");
        assert!(Datagram::new(0, 0, 1, vec![1; FRAGMENT_LEN + 1]).is_err());
        assert!(
            !format!("{:?}", Datagram::new(0, 0, 1, b"secret".to_vec()).unwrap())
                .contains("secret")
        );
    }
}
