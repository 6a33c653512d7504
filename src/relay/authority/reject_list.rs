//! The authority's reject list: relays it will not list at all, by identity or by address
//! (a single address or a prefix). Entries are written in authority.toml as
//! `reject = ["<64 hex digits>", "192.0.2.7", "198.51.100.0/24", "2001:db8::/32"]`.

use std::net::{IpAddr, SocketAddr};

use crate::crypto::IdentityPublic;

/// One rejected identity or address range.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Identity(IdentityPublic),
    Prefix { net: IpAddr, len: u8 },
}

/// The list; empty by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RejectList(Vec<Entry>);

/// A reject-list entry that is neither an identity nor an address (prefix).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("reject entry {0:?} is neither a relay identity (64 hex digits) nor an address or prefix like 192.0.2.0/24")]
pub struct BadRejectEntry(pub String);

/// The bits of `ip` as a number, with its width.
fn bits(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

fn same_prefix(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    let ((n, width), (x, w2)) = (bits(net), bits(ip));
    if width != w2 {
        return false;
    }
    let shift = u32::from(width.saturating_sub(len));
    // A /0 matches everything of the family; checked_shr covers shift = 128.
    n.checked_shr(shift).unwrap_or(0) == x.checked_shr(shift).unwrap_or(0)
}

impl RejectList {
    /// Parses the entries, refusing anything that is not an identity, address or prefix
    /// (and prefixes with host bits set, which are usually a typo).
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, BadRejectEntry> {
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let s = e.as_ref().trim();
            let bad = || BadRejectEntry(s.to_string());
            if let Ok(id) = s.parse::<IdentityPublic>() {
                out.push(Entry::Identity(id));
                continue;
            }
            let (addr, len) = match s.split_once('/') {
                Some((a, l)) => (a, Some(l.parse::<u8>().map_err(|_| bad())?)),
                None => (s, None),
            };
            let net: IpAddr = addr.parse().map_err(|_| bad())?;
            // Descriptors never carry IPv4-mapped addresses: such an entry would match
            // nothing. Write the IPv4 address instead.
            if matches!(net, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some()) {
                return Err(bad());
            }
            let (value, width) = bits(net);
            let len = len.unwrap_or(width);
            let host_bits = u32::from(width.saturating_sub(len));
            let network = value
                .checked_shr(host_bits)
                .and_then(|v| v.checked_shl(host_bits))
                .unwrap_or(0);
            if len > width || network != value {
                return Err(bad());
            }
            out.push(Entry::Prefix { net, len });
        }
        Ok(RejectList(out))
    }

    /// Whether a relay with this identity and these addresses is rejected.
    pub fn rejects(&self, identity: &IdentityPublic, addrs: &[SocketAddr]) -> bool {
        self.0.iter().any(|e| match e {
            Entry::Identity(id) => id == identity,
            Entry::Prefix { net, len } => addrs.iter().any(|a| same_prefix(*net, *len, a.ip())),
        })
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::IdentityKeypair;

    #[test]
    fn identities_addresses_and_prefixes_match_as_written() {
        let id = IdentityKeypair::generate(&mut rand::rng()).public();
        let other = IdentityKeypair::generate(&mut rand::rng()).public();
        let list = RejectList::parse(&[
            id.to_string(),
            "192.0.2.7".into(),
            "198.51.100.0/24".into(),
            "2001:db8::/32".into(),
        ])
        .unwrap();
        let a = |s: &str| -> SocketAddr { s.parse().unwrap() };
        assert!(list.rejects(&id, &[a("203.0.113.1:9001")]));
        assert!(list.rejects(&other, &[a("192.0.2.7:443")]));
        assert!(!list.rejects(&other, &[a("192.0.2.8:443")]));
        assert!(list.rejects(&other, &[a("198.51.100.200:1")]));
        assert!(!list.rejects(&other, &[a("198.51.101.1:1")]));
        assert!(list.rejects(&other, &[a("203.0.113.1:1"), a("[2001:db8:5::1]:1")]));
        assert!(!list.rejects(&other, &[a("[2001:db9::1]:1")]));
    }

    #[test]
    fn nonsense_and_host_bits_are_refused() {
        for bad in [
            "",
            "relay1",
            "192.0.2.1/33",
            "192.0.2.1/24",
            "::1/129",
            "10.0.0.0/x",
            "::ffff:192.0.2.7",
        ] {
            assert!(RejectList::parse(&[bad]).is_err(), "{bad:?}");
        }
        assert!(RejectList::parse(&["0.0.0.0/0"]).is_ok());
    }
}
