//! Microdescriptors and the compact consensus (docs/protocol.md §6.17): encode → parse
//! round trips, the GET_MICRODESCS framing, and attacks by a directory cache or a relay
//! that knows its own keys: a microdescriptor that does not hash to the listed digest is
//! refused (and fetched elsewhere), an oversized request is refused, and a relay cannot
//! get another microdescriptor listed than the one from the descriptor it signed.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use allium::crypto::{OnionKeyCert, RelayId};
use allium::dir::microdesc::{
    check_response, digest_of, encode_response, parse_response, MAX_MICRODESCS_PER_REQUEST,
};
use allium::dir::request::{DirProtoError, DirRequest, DirResponse, DirStatus, MAX_DIR_BODY};
use allium::dir::{
    compute_consensus_full, split_entries, ConsensusEntry, ConsensusParams, ExitPolicy, Microdesc,
    MicrodescError, MicrodescIndex, PolicyAction, PolicyRule, UncheckedConsensus, UncheckedVote,
    VoteBody, VoteEntry,
};
use allium::proto::dirclient::{fetch_microdescs, DirSession};
use allium::relay::dirserve::{DirContext, DirService};
use common::dir::*;
use proptest::prelude::*;

/// Relay `n`'s microdescriptor as its descriptor declares it.
fn md(n: u64) -> Microdesc {
    let (_, d) = descriptor(n, n % 2 == 0);
    Microdesc {
        onion_cert: d.onion_cert,
        exit_policy: d.exit_policy,
        udp_policy: d.udp_policy,
        family: Vec::new(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn microdescs_round_trip(
        n in 0u64..1000,
        rules in proptest::collection::vec((any::<bool>(), 0u16..100, 0u16..100), 0..20),
        udp_rules in proptest::collection::vec((any::<bool>(), 0u16..100, 0u16..100), 0..20),
        family in proptest::collection::btree_set(2000u64..2100, 0..8),
    ) {
        let to_rules = |rules: Vec<(bool, u16, u16)>| -> Vec<PolicyRule> {
            rules
                .into_iter()
                .map(|(accept, a, b)| {
                    let action = if accept { PolicyAction::Accept } else { PolicyAction::Reject };
                    let any = std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
                    PolicyRule::new(action, any, 0, a.min(b).max(1), a.max(b).max(1)).unwrap()
                })
                .collect()
        };
        let (rules, udp_rules) = (to_rules(rules), to_rules(udp_rules));
        let mut family: Vec<RelayId> = family.into_iter().map(|f| key(f).public().into()).collect();
        family.sort();
        let m = Microdesc {
            onion_cert: OnionKeyCert::sign(&key(n), onion(n).public(), NOW + HOUR),
            exit_policy: ExitPolicy::new(rules).unwrap(),
            udp_policy: ExitPolicy::new(udp_rules).unwrap(),
            family,
        };
        let bytes = m.to_bytes().unwrap();
        prop_assert_eq!(&Microdesc::parse(&bytes).unwrap(), &m);
        prop_assert_eq!(m.digest().unwrap(), digest_of(&bytes));
        // Indexed from its bytes (no re-encoding): the same digest, bytes and value.
        let mut index = MicrodescIndex::new();
        prop_assert_eq!(index.insert_bytes(&bytes).unwrap(), digest_of(&bytes));
        prop_assert_eq!(index.bytes(&digest_of(&bytes)).unwrap(), bytes.as_slice());
        prop_assert_eq!(index.get(&digest_of(&bytes)).unwrap(), &m);
        // A response carrying it (and others) parses back to the same bytes, in order.
        let others: Vec<Vec<u8>> = (0..3).map(|i| md(i).to_bytes().unwrap()).collect();
        let all: Vec<&[u8]> = std::iter::once(bytes.as_slice()).chain(others.iter().map(Vec::as_slice)).collect();
        let body = encode_response(&all, MAX_DIR_BODY);
        prop_assert_eq!(parse_response(&body).unwrap(), all.clone());
        let requested: Vec<[u8; 32]> = all.iter().map(|b| digest_of(b)).collect();
        let got = check_response(&body, &requested).unwrap();
        prop_assert_eq!(got.len(), 4);
        prop_assert_eq!(&got[0].1, &m);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(m) = Microdesc::parse(&bytes) {
            prop_assert_eq!(m.to_bytes().unwrap(), bytes.clone());
        }
        let mut index = MicrodescIndex::new();
        if let Ok(d) = index.insert_bytes(&bytes) {
            prop_assert_eq!(d, digest_of(&bytes));
        }
        let _ = check_response(&bytes, &[[0; 32]]);
        if let Ok(entries) = parse_response(&bytes) {
            prop_assert_eq!(encode_response(&entries, MAX_DIR_BODY), bytes);
        }
    }
}

#[test]
fn parsing_is_strict() {
    let bytes = md(1).to_bytes().unwrap();
    for cut in 0..bytes.len() {
        assert!(Microdesc::parse(&bytes[..cut]).is_err());
    }
    let mut long = bytes.clone();
    long.push(0);
    assert!(Microdesc::parse(&long).is_err());
    // A family that is not canonical, or names the relay itself.
    let mut m = md(1);
    m.family = vec![key(3).public().into(), key(2).public().into()];
    m.family.sort();
    m.family.reverse();
    assert!(matches!(m.to_bytes(), Err(MicrodescError::Invalid(_))));
    m.family = vec![key(1).public().into()];
    assert!(m.to_bytes().is_err());
    // A response with trailing bytes, or claiming more entries than allowed.
    let mut body = encode_response(&[&bytes], MAX_DIR_BODY);
    body.push(0);
    assert!(parse_response(&body).is_err());
    let mut many = (MAX_MICRODESCS_PER_REQUEST as u16 + 1)
        .to_be_bytes()
        .to_vec();
    many.extend(std::iter::repeat_n(0, 2 * (MAX_MICRODESCS_PER_REQUEST + 1)));
    assert!(matches!(
        parse_response(&many),
        Err(MicrodescError::Framing(_))
    ));
}

#[test]
fn requests_are_bounded_and_strict() {
    let digests: Vec<[u8; 32]> = (0..MAX_MICRODESCS_PER_REQUEST as u64)
        .map(|n| digest_of(&n.to_be_bytes()))
        .collect();
    let ok = DirRequest::GetMicrodescs {
        digests: digests.clone(),
    };
    assert_eq!(DirRequest::parse(&ok.encode()).unwrap(), ok);
    // One digest too many; none; a duplicate; a partial digest.
    let mut over = digests.clone();
    over.push([7; 32]);
    let over = DirRequest::GetMicrodescs { digests: over }.encode();
    assert_eq!(DirRequest::parse(&over), Err(DirProtoError::BadBody));
    let none = DirRequest::GetMicrodescs { digests: vec![] }.encode();
    assert_eq!(DirRequest::parse(&none), Err(DirProtoError::BadBody));
    let dup = DirRequest::GetMicrodescs {
        digests: vec![[1; 32], [2; 32], [1; 32]],
    };
    assert_eq!(
        DirRequest::parse(&dup.encode()),
        Err(DirProtoError::BadBody)
    );
    let mut partial = DirRequest::GetMicrodescs {
        digests: vec![[1; 32]],
    }
    .encode();
    partial.pop();
    partial[4] -= 1;
    assert_eq!(DirRequest::parse(&partial), Err(DirProtoError::BadBody));
}

/// The computed consensus lists, for each relay, the digest of the microdescriptor built
/// from the descriptor the relay signed, and assembling gives back exactly its onion key,
/// policy and family. A relay that signs itself a second onion-key certificate (its own
/// keys: a perfectly valid certificate) cannot have it taken for the listed one.
#[test]
fn a_relay_cannot_get_another_microdescriptor_listed() {
    let auths = authorities(3);
    let ids = publics(&auths);
    let votes: Vec<_> = auths
        .iter()
        .map(|a| {
            let entries = (0..6u64)
                .map(|n| {
                    let (id, d) = descriptor(n, n == 0);
                    VoteEntry {
                        descriptor: d.sign(&id).unwrap(),
                        flags: allium::dir::RelayFlags::ALL,
                        measured: Some(1000 * (n + 1)),
                        uptime: 3600,
                    }
                })
                .collect();
            let body = VoteBody {
                authority: a.public(),
                valid_after: NOW,
                fresh_until: NOW + HOUR,
                valid_until: NOW + 3 * HOUR,
                entries,
            };
            UncheckedVote::parse(&body.sign(a).unwrap().to_bytes().unwrap())
                .unwrap()
                .verify(&ids, NOW)
                .unwrap()
        })
        .collect();
    let computed = compute_consensus_full(&votes, &ids, &ConsensusParams::default()).unwrap();
    for l in &computed.body.relays {
        let n = (0..6u64).find(|&n| key(n).public() == l.identity).unwrap();
        let (_, d) = descriptor(n, n == 0);
        let published = Microdesc {
            onion_cert: d.onion_cert,
            exit_policy: d.exit_policy,
            udp_policy: d.udp_policy,
            family: d.family.into_iter().map(Into::into).collect(),
        };
        assert_eq!(l.md_digest, published.digest().unwrap(), "relay {n}");
        assert!(computed.microdescs.get(&l.md_digest).is_some());
    }
    let mut signed = computed.body.to_signed().unwrap();
    for a in &auths {
        signed.sign(a);
    }
    let bytes = signed.to_bytes().unwrap();
    let verified = UncheckedConsensus::parse(&bytes)
        .unwrap()
        .verify(&ids, NOW)
        .unwrap();

    // Relay 3 signs another certificate for a fresh onion key and offers that
    // microdescriptor in place of its listed one.
    let victim = key(3);
    let listed = verified
        .listed()
        .iter()
        .find(|l| l.identity == victim.public())
        .unwrap()
        .clone();
    let mut swapped = md(3);
    swapped.onion_cert = OnionKeyCert::sign(&victim, onion(999).public(), NOW + HOUR);
    assert!(ConsensusEntry::assemble(&listed, &swapped).is_none());
    let body = encode_response(&[&swapped.to_bytes().unwrap()], MAX_DIR_BODY);
    assert!(matches!(
        check_response(&body, &[listed.md_digest]),
        Err(MicrodescError::NotRequested)
    ));
    // Assembled only from the authorities' microdescriptors, every relay is there.
    let c = verified.clone().assemble_from(&computed.microdescs);
    assert_eq!(c.relays().len(), 6);
    assert_eq!(c.missing_microdescs(), 0);
    let mut tampered = MicrodescIndex::new();
    for l in verified.listed() {
        let real = computed.microdescs.get(&l.md_digest).unwrap().clone();
        tampered
            .insert(if l.identity == victim.public() {
                swapped.clone()
            } else {
                real
            })
            .unwrap();
    }
    // Even if an index held the swapped one under its own digest, assembling looks up
    // the listed digest: relay 3 is left out, nothing else changes.
    let c = verified.assemble_from(&tampered);
    assert_eq!(c.missing_microdescs(), 1);
    assert!(c.relay(victim.public()).is_none());
}

/// A directory cache that substitutes one relay's microdescriptor with one carrying the
/// cache's own onion key, and otherwise serves the honest ones.
#[derive(Debug)]
struct LyingCache {
    honest: MicrodescIndex,
    victim: [u8; 32],
    substitute: Vec<u8>,
}

impl DirService for LyingCache {
    fn handle(
        &self,
        req: DirRequest,
        _ctx: DirContext,
    ) -> Pin<Box<dyn Future<Output = DirResponse> + Send + '_>> {
        Box::pin(async move {
            let DirRequest::GetMicrodescs { digests } = req else {
                return DirResponse::error(DirStatus::NotFound, "no");
            };
            let found: Vec<&[u8]> = digests
                .iter()
                .filter_map(|d| {
                    if *d == self.victim {
                        Some(self.substitute.as_slice())
                    } else {
                        self.honest.bytes(d)
                    }
                })
                .collect();
            DirResponse::ok(encode_response(&found, MAX_DIR_BODY))
        })
    }
}

/// Over real TCP and a one-hop circuit: a cache that serves another relay's
/// microdescriptor with its own onion key substituted is refused (nothing of that
/// response is kept, so the victim is not assembled with the cache's key); the honest
/// cache then supplies what is missing; an oversized request is refused by the server.
#[tokio::test]
async fn a_lying_cache_is_refused_and_the_microdescriptor_fetched_elsewhere() {
    let (consensus, _) = synthetic_consensus(40);
    let honest = consensus.microdescs();
    let wanted: Vec<[u8; 32]> = consensus
        .verified()
        .listed()
        .iter()
        .map(|l| l.md_digest)
        .collect();
    let victim = consensus.verified().listed()[7].clone();
    let liar = common::start_relay_with(Default::default(), None).await;
    let good = common::start_relay_with(Default::default(), None).await;
    let mut substitute = honest.get(&victim.md_digest).unwrap().clone();
    substitute.onion_cert = liar.keys().onion_cert().clone();
    liar.set_dir_service(Arc::new(LyingCache {
        honest: honest.clone(),
        victim: victim.md_digest,
        substitute: substitute.to_bytes().unwrap(),
    }));
    good.set_dir_service(Arc::new(LyingCache {
        honest: honest.clone(),
        victim: [0; 32],
        substitute: Vec::new(),
    }));
    let clock = allium::clock::Clock::system();
    let liar_id = liar.identity();
    let session = DirSession::open(liar.local_addr(), &liar_id, common::NO_HANG, &clock)
        .await
        .unwrap();
    let mut got = MicrodescIndex::new();
    let err = fetch_microdescs(
        |r| {
            let session = &session;
            async move { session.request(&r).await }
        },
        &wanted,
        &mut got,
    )
    .await
    .unwrap_err();
    eprintln!("lying cache: {err}");
    assert!(!got.contains(&victim.md_digest));
    let partial = consensus.verified().clone().assemble_from(&got);
    assert!(
        partial.relay(victim.identity).is_none(),
        "the victim is left out"
    );

    // Too many digests in one request: refused before any lookup.
    let mut over = wanted.clone();
    over.extend((0..MAX_MICRODESCS_PER_REQUEST as u64).map(|n| digest_of(&n.to_be_bytes())));
    let resp = session
        .request(&DirRequest::GetMicrodescs { digests: over })
        .await
        .unwrap();
    assert_eq!(resp.status, DirStatus::BadRequest, "{}", resp.reason());
    session.close().await;

    let good_id = good.identity();
    let session = DirSession::open(good.local_addr(), &good_id, common::NO_HANG, &clock)
        .await
        .unwrap();
    let missing: Vec<[u8; 32]> = wanted
        .iter()
        .filter(|d| !got.contains(d))
        .copied()
        .collect();
    fetch_microdescs(
        |r| {
            let session = &session;
            async move { session.request(&r).await }
        },
        &missing,
        &mut got,
    )
    .await
    .unwrap();
    session.close().await;
    let full = consensus.verified().clone().assemble_from(&got);
    assert_eq!(full.missing_microdescs(), 0);
    assert_eq!(full.relays(), consensus.relays());
    let _ = split_entries(consensus.relays()).unwrap();
}

/// Sizes of the signed consensus before (version 2: every entry carrying its certificate,
/// policy and family) and after (compact listings), and of all microdescriptors, for a
/// synthetic network (common::dir::synthetic_consensus). A measurement, not a test: run
/// with `cargo test --release --test dir_microdesc -- --ignored --nocapture sizes`.
#[test]
#[ignore = "measurement; prints figures"]
fn consensus_sizes() {
    for n in [1_000u64, 10_000] {
        let (c, _) = synthetic_consensus(n);
        let signed = c.signed().to_bytes().unwrap().len();
        let listed: usize = c
            .verified()
            .listed()
            .iter()
            .map(|l| allium::codec::encode(l).unwrap().len())
            .sum();
        let full: usize = c
            .relays()
            .iter()
            .map(|e| allium::codec::encode(e).unwrap().len())
            .sum();
        let mds: usize = c
            .relays()
            .iter()
            .map(|e| e.microdesc().to_bytes().unwrap().len())
            .sum();
        println!(
            "relays {n}: consensus v3 {signed} bytes ({:.1} per relay); v2 would be {} bytes; \
             microdescriptors {mds} bytes ({:.1} per relay)",
            listed as f64 / n as f64,
            signed - listed + full,
            mds as f64 / n as f64,
        );
    }
}

/// Signs a consensus of `entries` (sorted) valid around NOW and verifies it.
fn signed_consensus(entries: &[ConsensusEntry]) -> allium::dir::VerifiedConsensus {
    let auths = authorities(3);
    let mut ids = publics(&auths);
    ids.sort();
    let (listed, _) = split_entries(entries).unwrap();
    let body = allium::dir::ConsensusBody {
        version: allium::dir::consensus::CONSENSUS_VERSION,
        valid_after: NOW - HOUR,
        fresh_until: NOW + HOUR,
        valid_until: NOW + 3 * HOUR,
        authorities: ids.clone(),
        weights: allium::dir::BandwidthWeights::compute(
            entries.iter().map(|e| (e.flags, e.bandwidth)),
        ),
        relays: listed,
    };
    let mut s = body.to_signed().unwrap();
    for a in &auths {
        s.sign(a);
    }
    UncheckedConsensus::parse(&s.to_bytes().unwrap())
        .unwrap()
        .verify(&ids, NOW)
        .unwrap()
}

/// From one period to the next, a client that kept the previous consensus's
/// microdescriptors needs only those of relays that changed (here one relay rotated its
/// onion key and one joined); flags or bandwidth changing needs none, and an onion-key
/// rotation changes only that relay's listed digest.
#[test]
fn only_changed_relays_are_fetched_next_period() {
    let (previous, _) = synthetic_consensus(200);
    let mut next: Vec<ConsensusEntry> = previous.relays().to_vec();
    // Relay 0 (key(0)) rotates its onion key.
    let idx = next
        .iter()
        .position(|e| e.identity == key(0).public())
        .unwrap();
    next[idx].onion_cert = OnionKeyCert::sign(&key(0), onion(4242).public(), NOW + HOUR);
    for e in next.iter_mut().step_by(3) {
        e.bandwidth += 1;
    }
    let mut newcomer = previous.relays()[0].clone();
    newcomer.identity = key(7777).public().into();
    newcomer.onion_cert = OnionKeyCert::sign(&key(7777), onion(7777).public(), NOW + HOUR);
    next.push(newcomer);
    next.sort_by_key(|e| e.identity);
    let verified = signed_consensus(&next);
    let have = previous.microdescs();
    let missing = verified.missing(|d| have.contains(d));
    assert_eq!(missing.len(), 2);
    let mut expect: Vec<[u8; 32]> = next
        .iter()
        .filter(|e| e.identity == key(0).public() || e.identity == key(7777).public())
        .map(|e| e.microdesc().digest().unwrap())
        .collect();
    // `missing` lists digests in ascending order (deduplicated).
    expect.sort_unstable();
    assert_eq!(missing, expect);
    // Assembled from the previous set plus the two fetched, the view is complete.
    let mut all = have;
    for e in &next {
        all.insert(e.microdesc()).unwrap();
    }
    assert_eq!(verified.assemble_from(&all).relays(), &next[..]);
}

/// A relay's UDP policy travels from its signed descriptor through the votes into its
/// microdescriptor, and the listed digest covers it: a directory cache that widens it (to
/// steer UDP flows to an exit that never offered them) is caught like any other
/// substitution. The listing itself stays 92 bytes (one IPv4 address) whatever the
/// policies: they live in the microdescriptor.
#[test]
fn udp_policy_is_carried_and_covered_by_the_listed_digest() {
    let auths = authorities(3);
    let ids = publics(&auths);
    let udp = allium::relay::udp_policy_from_config(Some(&["accept *:53"])).unwrap();
    let votes: Vec<_> = auths
        .iter()
        .map(|a| {
            let entries = (0..4u64)
                .map(|n| {
                    let (id, mut d) = descriptor(n, n < 2);
                    if n == 0 {
                        d.udp_policy = udp.clone();
                    }
                    VoteEntry {
                        descriptor: d.sign(&id).unwrap(),
                        flags: allium::dir::RelayFlags::ALL,
                        measured: Some(1000 * (n + 1)),
                        uptime: 3600,
                    }
                })
                .collect();
            let body = VoteBody {
                authority: a.public(),
                valid_after: NOW,
                fresh_until: NOW + HOUR,
                valid_until: NOW + 3 * HOUR,
                entries,
            };
            UncheckedVote::parse(&body.sign(a).unwrap().to_bytes().unwrap())
                .unwrap()
                .verify(&ids, NOW)
                .unwrap()
        })
        .collect();
    let computed = compute_consensus_full(&votes, &ids, &ConsensusParams::default()).unwrap();
    assert_eq!(computed.body.relays.len(), 4);
    for l in &computed.body.relays {
        assert_eq!(allium::codec::encode(l).unwrap().len(), 92);
        let md = computed.microdescs.get(&l.md_digest).unwrap();
        let want = if key(0).public() == l.identity {
            udp.clone()
        } else {
            ExitPolicy::reject_all()
        };
        assert_eq!(md.udp_policy, want);
    }
    // A cache widens exit 1's UDP policy (its TCP policy and everything else unchanged).
    let listed = computed
        .body
        .relays
        .iter()
        .find(|l| key(1).public() == l.identity)
        .unwrap();
    let mut widened = computed.microdescs.get(&listed.md_digest).unwrap().clone();
    widened.udp_policy = ExitPolicy::default_exit();
    assert!(ConsensusEntry::assemble(listed, &widened).is_none());
    let body = encode_response(&[&widened.to_bytes().unwrap()], MAX_DIR_BODY);
    assert!(matches!(
        check_response(&body, &[listed.md_digest]),
        Err(MicrodescError::NotRequested)
    ));
    // Swapping the two policies is a different microdescriptor too.
    let mut swapped = computed.microdescs.get(&listed.md_digest).unwrap().clone();
    std::mem::swap(&mut swapped.exit_policy, &mut swapped.udp_policy);
    assert!(ConsensusEntry::assemble(listed, &swapped).is_none());
}

/// The largest descriptor a relay can publish, both policies at the rule bound (IPv6
/// rules, the longest), every address and family slot used, still fits the descriptor
/// bound, and its microdescriptor fits the microdescriptor bound.
#[test]
fn both_policies_at_their_bound_fit() {
    let (id, mut d) = descriptor(1, true);
    let rule = |i: u16| {
        PolicyRule::new(
            PolicyAction::Accept,
            std::net::IpAddr::V6(std::net::Ipv6Addr::new(0x2001, i, 0, 0, 0, 0, 0, 0)),
            32,
            1,
            65535,
        )
        .unwrap()
    };
    let full = ExitPolicy::new((0..64).map(rule).collect()).unwrap();
    assert!(ExitPolicy::new((0..65).map(rule).collect()).is_err());
    d.exit_policy = full.clone();
    d.udp_policy = full;
    d.addrs = (0..16u16)
        .map(|i| {
            std::net::SocketAddr::new(
                std::net::Ipv6Addr::new(0x2a00, i, 0, 0, 0, 0, 0, 1).into(),
                9001,
            )
        })
        .collect();
    let mut family: Vec<_> = (100..132).map(|n| key(n).public()).collect();
    family.sort();
    d.family = family;
    d.version = "x".repeat(64);
    let signed = d.sign(&id).unwrap();
    assert!(signed.to_bytes().unwrap().len() <= allium::dir::descriptor::MAX_DESCRIPTOR_LEN);
    let md = Microdesc {
        onion_cert: d.onion_cert.clone(),
        exit_policy: d.exit_policy.clone(),
        udp_policy: d.udp_policy.clone(),
        family: d.family.iter().map(Into::into).collect(),
    };
    assert!(md.to_bytes().is_ok());
}
