//! Address prefixes as numbers: containment and coverage arithmetic, and the
//! special-purpose ranges an exit must not reach by default.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address prefix as a 128-bit value plus family, for arithmetic on prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Prefix {
    pub(super) v6: bool,
    /// Address bits, left-aligned in the family's width (IPv4 uses the low 32 bits).
    pub(super) bits: u128,
    len: u8,
}

impl Prefix {
    pub(super) fn width(v6: bool) -> u8 {
        if v6 {
            128
        } else {
            32
        }
    }

    pub(super) fn of(addr: IpAddr, len: u8) -> Self {
        match addr {
            IpAddr::V4(a) => Prefix {
                v6: false,
                bits: u128::from(u32::from(a)),
                len,
            },
            IpAddr::V6(a) => Prefix {
                v6: true,
                bits: u128::from(a),
                len,
            },
        }
    }

    /// Mask of the network bits within the family's width.
    pub(super) fn mask(v6: bool, len: u8) -> u128 {
        let width = Self::width(v6);
        let full: u128 = if v6 { u128::MAX } else { u128::from(u32::MAX) };
        if len == 0 {
            0
        } else if len >= width {
            full
        } else {
            full & !(full >> len)
        }
    }

    /// Whether `other` (a prefix of any length) lies entirely inside `self`.
    pub(super) fn contains(&self, other: &Prefix) -> bool {
        self.v6 == other.v6
            && self.len <= other.len
            && (other.bits & Self::mask(self.v6, self.len)) == self.bits
    }

    fn intersects(&self, other: &Prefix) -> bool {
        self.contains(other) || other.contains(self)
    }

    /// The two halves of this prefix (`len < width`).
    fn halves(&self) -> (Prefix, Prefix) {
        let len = self.len + 1;
        let bit = 1u128 << (Self::width(self.v6) - len);
        (
            Prefix { len, ..*self },
            Prefix {
                len,
                bits: self.bits | bit,
                ..*self
            },
        )
    }

    /// Whether every address of `self` lies in some prefix of `by`. Recurses only into
    /// halves that some smaller prefix of `by` touches, so the work is bounded by
    /// `by.len() * 128` nodes.
    pub(super) fn covered_by(&self, by: &[Prefix]) -> bool {
        if by.iter().any(|q| q.contains(self)) {
            return true;
        }
        if !by.iter().any(|q| self.intersects(q)) || self.len >= Self::width(self.v6) {
            return false;
        }
        let (a, b) = self.halves();
        a.covered_by(by) && b.covered_by(by)
    }
}

/// Special-purpose ranges an exit must not reach by default, except loopback.
pub(super) const SPECIAL_V4: &[([u8; 4], u8)] = &[
    ([0, 0, 0, 0], 8),       // "this network"
    ([10, 0, 0, 0], 8),      // private
    ([100, 64, 0, 0], 10),   // carrier-grade NAT
    ([169, 254, 0, 0], 16),  // link-local
    ([172, 16, 0, 0], 12),   // private
    ([192, 0, 0, 0], 24),    // IETF protocol assignments
    ([192, 0, 2, 0], 24),    // documentation
    ([192, 168, 0, 0], 16),  // private
    ([198, 18, 0, 0], 15),   // benchmarking
    ([198, 51, 100, 0], 24), // documentation
    ([203, 0, 113, 0], 24),  // documentation
    ([224, 0, 0, 0], 4),     // multicast
    ([240, 0, 0, 0], 4),     // reserved and broadcast
];
/// IPv4 loopback.
pub(super) const LOOPBACK_V4: ([u8; 4], u8) = ([127, 0, 0, 0], 8);

/// Special-purpose IPv6 ranges, except loopback.
pub(super) const SPECIAL_V6: &[(u128, u8)] = &[
    (0, 128),                                        // unspecified ::
    (0x0064_ff9b_0000_0000_0000_0000_0000_0000, 96), // NAT64 (reaches IPv4 space)
    (0x0064_ff9b_0001_0000_0000_0000_0000_0000, 48), // local-use NAT64
    (0x0100_0000_0000_0000_0000_0000_0000_0000, 64), // discard-only
    (0x2001_0db8_0000_0000_0000_0000_0000_0000, 32), // documentation
    (0xfc00_0000_0000_0000_0000_0000_0000_0000, 7),  // unique local
    (0xfe80_0000_0000_0000_0000_0000_0000_0000, 10), // link-local
    (0xff00_0000_0000_0000_0000_0000_0000_0000, 8),  // multicast
];
/// IPv6 loopback `::1`.
pub(super) const LOOPBACK_V6: (u128, u8) = (1, 128);

pub(super) fn special_prefixes(include_loopback: bool) -> Vec<Prefix> {
    let mut out: Vec<Prefix> = SPECIAL_V4
        .iter()
        .map(|(a, l)| Prefix::of(IpAddr::V4(Ipv4Addr::from(*a)), *l))
        .chain(
            SPECIAL_V6
                .iter()
                .map(|(a, l)| Prefix::of(IpAddr::V6(Ipv6Addr::from(*a)), *l)),
        )
        .collect();
    if include_loopback {
        out.push(Prefix::of(
            IpAddr::V4(Ipv4Addr::from(LOOPBACK_V4.0)),
            LOOPBACK_V4.1,
        ));
        out.push(Prefix::of(
            IpAddr::V6(Ipv6Addr::from(LOOPBACK_V6.0)),
            LOOPBACK_V6.1,
        ));
    }
    out
}
