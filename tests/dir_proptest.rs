//! Property tests: descriptors and consensuses survive encode → parse → verify unchanged,
//! and arbitrary bytes never panic the parsers.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use allium::crypto::{IdentityPublic, OnionKeyCert};
use allium::dir::consensus::CONSENSUS_VERSION;
use allium::dir::{
    BandwidthWeights, ConsensusBody, ConsensusEntry, Descriptor, ExitPolicy, PolicyAction,
    PolicyRule, RelayFlags, UncheckedConsensus, UncheckedDescriptor,
};
use common::dir::*;
use proptest::prelude::*;

fn addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (1u8..=223, any::<[u8; 3]>(), 1u16..).prop_filter_map("not special", |(a, r, p)| {
            let ip = Ipv4Addr::new(a, r[0], r[1], r[2]);
            (!ip.is_unspecified()).then(|| SocketAddr::new(IpAddr::V4(ip), p))
        }),
        (0x2000u16..0x3fff, any::<[u16; 7]>(), 1u16..).prop_map(|(h, r, p)| {
            let ip = Ipv6Addr::new(h, r[0], r[1], r[2], r[3], r[4], r[5], r[6]);
            SocketAddr::new(IpAddr::V6(ip), p)
        }),
    ]
}

fn rule() -> impl Strategy<Value = PolicyRule> {
    (any::<bool>(), any::<u32>(), 0u8..=32, 1u16.., any::<u16>()).prop_map(
        |(accept, bits, len, lo, span)| {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            let action = if accept {
                PolicyAction::Accept
            } else {
                PolicyAction::Reject
            };
            let hi = lo.saturating_add(span % 1000);
            PolicyRule::new(action, IpAddr::V4(Ipv4Addr::from(bits & mask)), len, lo, hi).unwrap()
        },
    )
}

fn family(me: u64) -> impl Strategy<Value = Vec<IdentityPublic>> {
    proptest::collection::btree_set(0u64..40, 0..5).prop_map(move |s| {
        let mut v: Vec<IdentityPublic> = s
            .into_iter()
            .filter(|&n| n != me)
            .map(|n| key(n).public())
            .collect();
        v.sort();
        v
    })
}

fn descriptor_strategy() -> impl Strategy<Value = (u64, Descriptor)> {
    (0u64..40).prop_flat_map(|n| {
        (
            proptest::collection::btree_set(addr(), 1..4),
            any::<bool>(),
            (
                proptest::collection::vec(rule(), 0..8),
                proptest::collection::vec(rule(), 0..8),
            ),
            0u64..=(1 << 40),
            family(n),
            "[ -~]{0,64}",
            0u64..2_000_000_000,
        )
            .prop_map(
                move |(addrs, exit, (rules, udp_rules), bandwidth, family, version, published)| {
                    let id = key(n);
                    (
                        n,
                        Descriptor {
                            identity: id.public(),
                            onion_cert: OnionKeyCert::sign(&id, onion(n).public(), u64::MAX),
                            addrs: addrs.into_iter().collect(),
                            exit,
                            exit_policy: ExitPolicy::new(rules).unwrap(),
                            udp_policy: ExitPolicy::new(udp_rules).unwrap(),
                            bandwidth,
                            family,
                            version,
                            published,
                        },
                    )
                },
            )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn descriptor_round_trip((n, d) in descriptor_strategy()) {
        let bytes = d.sign(&key(n)).unwrap().to_bytes().unwrap();
        let u = UncheckedDescriptor::parse(&bytes).unwrap();
        prop_assert_eq!(u.signed().to_bytes().unwrap(), bytes.clone());
        let back = u.verify(d.published, 0).unwrap();
        prop_assert_eq!(&back, &d);
        // Text form of the policies round-trips too.
        for policy in [&d.exit_policy, &d.udp_policy] {
            let reparsed: ExitPolicy = policy.to_string().parse().unwrap();
            for port in [1u16, 80, 443, 999, 65535] {
                for ip in ["1.2.3.4", "10.0.0.1", "200.1.1.1"] {
                    let ip: IpAddr = ip.parse().unwrap();
                    prop_assert_eq!(reparsed.allows_ip(ip, port), policy.allows_ip(ip, port));
                }
            }
        }
        // The two policies are separate fields: swapping them changes the signed bytes
        // unless they are equal.
        let mut swapped = d.clone();
        std::mem::swap(&mut swapped.exit_policy, &mut swapped.udp_policy);
        let swapped_bytes = swapped.sign(&key(n)).unwrap().to_bytes().unwrap();
        prop_assert_eq!(swapped_bytes == bytes, d.exit_policy == d.udp_policy);
    }

    #[test]
    fn consensus_round_trip(
        entries in proptest::collection::vec(
            ((0u64..40).prop_flat_map(|n| (Just(n), family(n))), addr(), 0u8..64, 0u64..=(1 << 40),
             proptest::collection::vec(rule(), 0..4), proptest::collection::vec(rule(), 0..4)),
            0..12),
        times in (0u64..1_000_000, 1u64..10_000, 1u64..10_000),
    ) {
        let mut relays: Vec<ConsensusEntry> = entries
            .into_iter()
            .map(|((n, family), a, flags, bandwidth, rules, udp_rules)| {
                let id = key(n);
                ConsensusEntry {
                    identity: id.public().into(),
                    onion_cert: OnionKeyCert::sign(&id, onion(n).public(), u64::MAX),
                    addrs: vec![a],
                    flags: RelayFlags::from_bits(flags & 0x3f).unwrap(),
                    bandwidth,
                    measured: true,
                    exit_policy: ExitPolicy::new(rules).unwrap(),
                    udp_policy: ExitPolicy::new(udp_rules).unwrap(),
                    family: family.into_iter().map(Into::into).collect(),
                }
            })
            .collect();
        relays.sort_by_key(|r| r.identity);
        relays.dedup_by_key(|r| r.identity);
        let auths = authorities(3);
        let mut auth_ids = publics(&auths);
        auth_ids.sort();
        let (va, f, v) = times;
        let body = ConsensusBody {
            version: CONSENSUS_VERSION,
            valid_after: va,
            fresh_until: va + f,
            valid_until: va + f + v,
            authorities: auth_ids,
            weights: BandwidthWeights::compute(relays.iter().map(|r| (r.flags, r.bandwidth))),
            relays: allium::dir::split_entries(&relays).unwrap().0,
        };
        let mds = allium::dir::split_entries(&relays).unwrap().1;
        let mut s = body.to_signed().unwrap();
        s.sign(&auths[2]);
        s.sign(&auths[0]);
        let bytes = s.to_bytes().unwrap();
        let c = UncheckedConsensus::parse(&bytes).unwrap().verify(&publics(&auths), va).unwrap();
        prop_assert_eq!(c.body(), &body);
        prop_assert_eq!(c.signed().to_bytes().unwrap(), bytes);
        // Assembled with its microdescriptors, the consensus is the full entries again.
        let full = c.assemble_from(&mds);
        prop_assert_eq!(full.relays(), &relays[..]);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = UncheckedDescriptor::parse(&bytes).and_then(|u| u.verify(NOW, 300));
        let _ = UncheckedConsensus::parse(&bytes).and_then(|u| u.verify(&publics(&authorities(3)), NOW));
        let _ = allium::dir::UncheckedVote::parse(&bytes);
    }
}

/// The synthetic consensus the diff properties start from (built once).
fn diff_base() -> &'static (allium::dir::Consensus, Vec<allium::crypto::IdentityKeypair>) {
    static BASE: std::sync::OnceLock<(
        allium::dir::Consensus,
        Vec<allium::crypto::IdentityKeypair>,
    )> = std::sync::OnceLock::new();
    BASE.get_or_init(|| synthetic_consensus(24))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// compress → decompress is the identity, and a bound below the size is refused.
    #[test]
    fn compress_round_trip(data in proptest::collection::vec(any::<u8>(), 0..4000), rep in 1usize..50) {
        use allium::dir::compress::{compress, decompress};
        let data: Vec<u8> = data.iter().copied().cycle().take(data.len() * rep).collect();
        let z = compress(&data).unwrap();
        prop_assert_eq!(decompress(&z, data.len()).unwrap(), data.clone());
        if !data.is_empty() {
            prop_assert!(decompress(&z, data.len() - 1).is_err());
        }
    }

    /// diff(a, b) applied to a rebuilds b exactly (and verifies); the diff survives
    /// encode → parse unchanged; applied to another base it is refused.
    #[test]
    fn diff_applies_to_its_base_only(
        removed in proptest::collection::btree_set(0usize..24, 0..6),
        flipped in proptest::collection::btree_set(0usize..24, 0..6),
        added in proptest::collection::btree_set(1_000_000_000u64..1_000_000_050, 0..6),
    ) {
        use allium::dir::diff::ConsensusDiff;
        let (a, auths) = diff_base();
        let removed: Vec<usize> = removed.into_iter().collect();
        let flipped: Vec<usize> = flipped.into_iter().filter(|i| !removed.contains(i)).collect();
        let added: Vec<u64> = added.into_iter().collect();
        let b = next_period(a, auths, &removed, &flipped, &added);
        let diff = ConsensusDiff::between(a.signed(), a.body(), b.signed(), b.body()).unwrap();
        prop_assert_eq!(diff.removed.len(), removed.len());
        prop_assert_eq!(diff.modified.len(), flipped.len());
        prop_assert_eq!(diff.added.len(), added.len());
        let bytes = diff.to_bytes();
        let parsed = ConsensusDiff::parse(&bytes).unwrap();
        prop_assert_eq!(&parsed, &diff);
        let rebuilt = parsed
            .apply(a.signed().body(), a.body())
            .unwrap()
            .verify(&publics(auths), b.valid_after())
            .unwrap();
        prop_assert_eq!(rebuilt.signed().to_bytes().unwrap(), b.signed().to_bytes().unwrap());
        // From b to b is empty, and does not apply to a.
        let none = ConsensusDiff::between(b.signed(), b.body(), b.signed(), b.body()).unwrap();
        prop_assert!(none.removed.is_empty() && none.modified.is_empty() && none.added.is_empty());
        prop_assert!(none.apply(a.signed().body(), a.body()).is_err());
    }

    /// Any diff keeping the format's rules (strictly ascending disjoint indexes, masks with
    /// at least one field, added relays ascending) survives encode → parse unchanged, and
    /// every strict prefix of its encoding is refused.
    #[test]
    fn diff_encode_parse_round_trip(
        indexes in proptest::collection::btree_map(0u32..20_000, any::<Option<(u8, [u8; 32], u64)>>(), 0..40),
        addrs in proptest::collection::vec(addr(), 1..4),
        added in proptest::collection::btree_set(0u64..64, 0..4),
        header in any::<(u32, u64, u64, [u8; 32], [u8; 32])>(),
        signers in 0usize..4,
    ) {
        use allium::dir::diff::{ConsensusDiff, Modified, DIFF_VERSION};
        let mut removed = Vec::new();
        let mut modified = Vec::new();
        for (index, m) in indexes {
            match m {
                None => removed.push(index),
                Some((mask, md, bw)) => {
                    let mask = if mask & 0x1f == 0 { 0x10 } else { mask & 0x1f };
                    modified.push(Modified {
                        index,
                        md_digest: (mask & 1 != 0).then_some(md),
                        addrs: (mask & 2 != 0).then(|| addrs.clone()),
                        flags: (mask & 4 != 0).then(|| RelayFlags::from_bits(md[0] & 0x7f).unwrap()),
                        bandwidth: (mask & 8 != 0).then_some(bw % (1 << 40)),
                        toggle_measured: mask & 0x10 != 0,
                    });
                }
            }
        }
        let mut added: Vec<_> = added
            .into_iter()
            .map(|n| allium::dir::consensus::ListedRelay {
                identity: key(n).public().into(),
                md_digest: [n as u8; 32],
                addrs: addrs.clone(),
                flags: RelayFlags::RUNNING,
                bandwidth: n * 1000,
                measured: n % 2 == 0,
            })
            .collect();
        added.sort_by_key(|r| r.identity);
        let auths = publics(&authorities(signers.max(1) as u64));
        let diff = ConsensusDiff {
            diff_version: DIFF_VERSION,
            base: header.3,
            result: header.4,
            version: header.0,
            valid_after: header.1,
            fresh_until: header.2,
            valid_until: header.1 ^ header.2,
            authorities: auths.clone(),
            weights: BandwidthWeights::default(),
            signatures: auths
                .iter()
                .take(signers)
                .map(|a| allium::dir::consensus::AuthoritySignature {
                    identity: *a.as_bytes(),
                    signature: [7; 64],
                })
                .collect(),
            removed,
            modified,
            added,
        };
        let bytes = diff.to_bytes();
        prop_assert_eq!(&ConsensusDiff::parse(&bytes).unwrap(), &diff);
        for cut in [bytes.len() - 1, bytes.len() / 2, 0] {
            prop_assert!(ConsensusDiff::parse(&bytes[..cut]).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert!(ConsensusDiff::parse(&longer).is_err());
    }

    /// An honest diff from the base with bytes overwritten, a cut and a tail: parsing and
    /// applying never panic, and whatever applies is refused unless it is the honest
    /// result (random bytes alone would almost never get past the version field).
    #[test]
    fn mutated_diff_bytes_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        tail in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        use allium::dir::diff::ConsensusDiff;
        let (a, auths) = diff_base();
        let b = next_period(a, auths, &[1, 7], &[3, 9, 20], &[1_000_000_001]);
        let honest = ConsensusDiff::between(a.signed(), a.body(), b.signed(), b.body()).unwrap();
        let mut bytes = honest.to_bytes();
        for (at, v) in edits {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        bytes.extend_from_slice(&tail);
        if let Ok(d) = ConsensusDiff::parse(&bytes) {
            if let Ok(u) = d.apply(a.signed().body(), a.body()) {
                if let Ok(c) = u.verify(&publics(auths), b.valid_after()) {
                    prop_assert_eq!(c.signed().body(), b.signed().body());
                }
            }
        }
        let _ = allium::dir::compress::decompress(&bytes, 1 << 16);
    }
}
