//! Sybil limits: how many relays on one address, and in one subnet, an authority lets be
//! usable. Addresses cost an attacker far more than identities (which are free), so relays
//! beyond the limits are still listed (operators see why) but without Running and Valid.
//!
//! An IPv4 address counts as itself and its subnet is its /24; an IPv6 address counts as
//! its /64 (one customer's allocation: 2^64 addresses cost nothing more than one) and its
//! subnet is its /48.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// The limits; 0 means unlimited (a local test network where every relay is on loopback).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SybilLimits {
    /// Most usable relays per address (IPv6: per /64).
    pub per_address: usize,
    /// Most usable relays per IPv4 /24 (IPv6: per /48).
    pub per_subnet: usize,
}

impl Default for SybilLimits {
    /// Two relays per address (Tor's `AuthDirMaxServersPerAddr`), four per /24.
    fn default() -> Self {
        SybilLimits {
            per_address: 2,
            per_subnet: 4,
        }
    }
}

impl SybilLimits {
    /// No limits.
    pub const UNLIMITED: SybilLimits = SybilLimits {
        per_address: 0,
        per_subnet: 0,
    };
}

/// The key an address is counted under, at the address and subnet granularity.
fn keys(ip: IpAddr) -> (u128, u128) {
    match ip {
        IpAddr::V4(a) => {
            let bits = u128::from(u32::from(a));
            (bits, (bits >> 8) | (1 << 127))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            // A distinct tag bit keeps IPv6 keys apart from the IPv4 ones above.
            ((bits >> 64) | (1 << 126), (bits >> 80) | (3 << 125))
        }
    }
}

fn under(limit: usize, count: usize) -> bool {
    limit == 0 || count < limit
}

/// Which relays are admitted as usable. `candidates` are the relays' addresses **in
/// priority order** (the caller puts the relays it prefers first: higher measured bandwidth,
/// then longer uptime, then identity, so the choice is the same on every authority with
/// the same view). A relay is admitted iff every one of its addresses and subnets is still
/// under its limit; admitting it counts it against all of them. Returns one bool per
/// candidate, in order.
pub fn admit(candidates: &[&[SocketAddr]], limits: SybilLimits) -> Vec<bool> {
    let mut per_address: HashMap<u128, usize> = HashMap::new();
    let mut per_subnet: HashMap<u128, usize> = HashMap::new();
    let mut out = Vec::with_capacity(candidates.len());
    for addrs in candidates {
        // One relay listing one address twice (or two addresses of one /64) counts once.
        let mut addr_keys: Vec<u128> = Vec::new();
        let mut net_keys: Vec<u128> = Vec::new();
        for a in addrs.iter() {
            let (k, n) = keys(a.ip());
            if !addr_keys.contains(&k) {
                addr_keys.push(k);
            }
            if !net_keys.contains(&n) {
                net_keys.push(n);
            }
        }
        let ok = addr_keys
            .iter()
            .all(|k| under(limits.per_address, per_address.get(k).copied().unwrap_or(0)))
            && net_keys
                .iter()
                .all(|n| under(limits.per_subnet, per_subnet.get(n).copied().unwrap_or(0)));
        if ok {
            for k in addr_keys {
                *per_address.entry(k).or_default() += 1;
            }
            for n in net_keys {
                *per_subnet.entry(n).or_default() += 1;
            }
        }
        out.push(ok);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ten_relays_on_one_address_admit_two() {
        let addrs: Vec<[SocketAddr; 1]> = (0..10)
            .map(|i| [a(&format!("198.51.100.7:{}", 9000 + i))])
            .collect();
        let refs: Vec<&[SocketAddr]> = addrs.iter().map(|x| &x[..]).collect();
        let got = admit(&refs, SybilLimits::default());
        assert_eq!(got.iter().filter(|x| **x).count(), 2);
        // Priority order decides which: the first two.
        assert!(got[0] && got[1] && !got[2]);
    }

    #[test]
    fn a_subnet_admits_four_and_other_subnets_are_independent() {
        let addrs: Vec<[SocketAddr; 1]> = (1..=6)
            .map(|i| [a(&format!("203.0.113.{i}:9001"))])
            .chain((1..=3).map(|i| [a(&format!("192.0.2.{i}:9001"))]))
            .collect();
        let refs: Vec<&[SocketAddr]> = addrs.iter().map(|x| &x[..]).collect();
        let got = admit(&refs, SybilLimits::default());
        assert_eq!(got[..6].iter().filter(|x| **x).count(), 4);
        assert!(got[6..].iter().all(|x| *x));
    }

    #[test]
    fn ipv6_counts_per_64_and_a_second_address_cannot_dodge_the_limit() {
        // Three relays in one /64 on different addresses: the /64 is "one address".
        let v6: Vec<[SocketAddr; 1]> = (1..=3)
            .map(|i| [a(&format!("[2001:db8:1:2::{i}]:9001"))])
            .collect();
        let refs: Vec<&[SocketAddr]> = v6.iter().map(|x| &x[..]).collect();
        assert_eq!(
            admit(&refs, SybilLimits::default()),
            vec![true, true, false]
        );
        // A relay that adds a fresh IPv6 address to a full IPv4 address is still refused.
        let full = [a("198.51.100.9:1"), a("198.51.100.9:2")];
        let dodge = [a("198.51.100.9:3"), a("[2001:db8:9::1]:1")];
        let refs: Vec<&[SocketAddr]> = vec![&full[..1], &full[1..], &dodge[..]];
        assert_eq!(
            admit(&refs, SybilLimits::default()),
            vec![true, true, false]
        );
    }

    #[test]
    fn zero_means_unlimited() {
        let addrs: Vec<[SocketAddr; 1]> = (0..20)
            .map(|i| [a(&format!("127.0.0.1:{}", 9000 + i))])
            .collect();
        let refs: Vec<&[SocketAddr]> = addrs.iter().map(|x| &x[..]).collect();
        assert!(admit(&refs, SybilLimits::UNLIMITED).iter().all(|x| *x));
    }
}
