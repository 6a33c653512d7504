//! Path selection over a synthetic consensus of 1,000 relays.
//!
//! Statistical checks use fixed seeds (so they are reproducible) and a chi-square test at
//! significance 0.0005 over bins of at least 100 expected selections each: a correct
//! implementation fails with probability 1/2000 for a *random* seed, and never for the
//! fixed one once it passes.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

mod common;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use allium::crypto::{KeyError, OnionKeyCert, RelayId};
use allium::dir::descriptor::MAX_BANDWIDTH;
use allium::dir::path::{
    conflicts, exit_allows, policy_for, position_weight, same_subnet, select_exit,
    select_path_avoiding, USABLE,
};
use allium::dir::{
    select_path, BandwidthWeights, Consensus, ConsensusEntry, GuardParams, GuardSet, PathError,
    PathTarget, Position, RelayFlags, Transport, UncheckedConsensus,
};
use common::dir::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn declared_family(a: &ConsensusEntry, b: &ConsensusEntry) -> bool {
    a.family.contains(&b.identity) || b.family.contains(&a.identity)
}

/// Checks every rule on one path.
fn check_path(path: &[&ConsensusEntry], target: &PathTarget, len: usize, guards: &GuardSet) {
    assert_eq!(path.len(), len);
    for (i, a) in path.iter().enumerate() {
        assert!(a.has(USABLE), "hop {i} not Running+Valid");
        for b in path.iter().skip(i + 1) {
            assert_ne!(a.identity, b.identity, "relay twice");
            for x in &a.addrs {
                for y in &b.addrs {
                    assert!(!same_subnet(x.ip(), y.ip()), "same /16: {x} {y}");
                }
            }
            assert!(!declared_family(a, b), "family pair on a path");
        }
    }
    let exit = path[len - 1];
    assert!(exit.has(RelayFlags::EXIT));
    let policy = policy_for(exit, target.proto);
    match target.addr {
        Some(ip) => assert!(policy.allows_ip(ip, target.port)),
        None => assert!(policy.might_allow_port(target.port)),
    }
    let guard = path[0];
    assert!(guard.has(RelayFlags::GUARD));
    assert!(guards.sampled().any(|g| g == &guard.identity));
}

#[test]
fn every_path_rule_holds() {
    let (c, _) = synthetic_consensus(1000);
    assert_eq!(c.relays().len(), 1000);
    let mut rng = StdRng::seed_from_u64(7);
    let mut guards = GuardSet::new(GuardParams::default());
    let targets = [
        PathTarget {
            port: 443,
            addr: None,
            proto: Transport::Tcp,
        },
        PathTarget {
            port: 80,
            addr: Some("93.184.216.34".parse().unwrap()),
            proto: Transport::Tcp,
        },
        PathTarget {
            port: 22,
            addr: None,
            proto: Transport::Tcp,
        },
        PathTarget {
            port: 6667,
            addr: Some("2001:4860::8888".parse().unwrap()),
            proto: Transport::Tcp,
        },
    ];
    let mut exits_seen = HashSet::new();
    let mut pairs_checked = 0usize;
    for i in 0..700 {
        let len = 2 + i % 7;
        let target = &targets[i % targets.len()];
        let path = select_path(&c, target, &mut guards, len, NOW, &mut rng).unwrap();
        check_path(&path, target, len, &guards);
        for hop in &path {
            assert!(hop.verified_onion_key(NOW).is_ok());
        }
        exits_seen.insert(path[len - 1].identity);
        pairs_checked += len * (len - 1) / 2;
    }
    // The web-only exits must never serve port 22.
    assert!(exits_seen.len() > 50);
    assert!(pairs_checked > 5000);
    // The fixture really contains conflicts, so the checks above are meaningful.
    let r = c.relays();
    let subnet_pairs = (0..200)
        .flat_map(|i| (i + 1..200).map(move |j| (i, j)))
        .filter(|&(i, j)| same_subnet(r[i].addrs[0].ip(), r[j].addrs[0].ip()))
        .count();
    assert!(subnet_pairs > 10, "{subnet_pairs}");
    assert!(r.iter().filter(|e| !e.family.is_empty()).count() > 100);
    // conflicts() agrees with the rule definitions.
    for i in 0..200 {
        for j in 0..200 {
            let expect = i == j
                || same_subnet(r[i].addrs[0].ip(), r[j].addrs[0].ip())
                || declared_family(&r[i], &r[j]);
            assert_eq!(conflicts(&r[i], &r[j]), expect);
        }
    }
}

#[test]
fn lengths_and_errors() {
    let (c, _) = synthetic_consensus(200);
    let mut rng = StdRng::seed_from_u64(8);
    let mut guards = GuardSet::new(GuardParams::default());
    let t = PathTarget {
        port: 443,
        addr: None,
        proto: Transport::Tcp,
    };
    for bad in [0, 1, 9, 100] {
        assert_eq!(
            select_path(&c, &t, &mut guards, bad, NOW, &mut rng).unwrap_err(),
            PathError::BadLength(bad)
        );
    }
    // Port 22 to a private address: web-only exits lack the port, full exits reject 10/8.
    let private = PathTarget {
        port: 22,
        addr: Some("10.0.0.1".parse().unwrap()),
        proto: Transport::Tcp,
    };
    assert_eq!(
        select_path(&c, &private, &mut guards, 3, NOW, &mut rng).unwrap_err(),
        PathError::NoExit { port: 22 }
    );
    let zero = PathTarget {
        port: 0,
        addr: None,
        proto: Transport::Tcp,
    };
    assert_eq!(
        select_path(&c, &zero, &mut guards, 3, NOW, &mut rng).unwrap_err(),
        PathError::BadPort
    );
}

/// NEWNYM's exclusion (docs/control.md): the exits to avoid are never chosen while another
/// exit allows the target, and are chosen rather than failing when none does.
#[test]
fn avoided_exits_are_chosen_only_when_no_other_exit_fits() {
    let (c, auths) = synthetic_consensus(400);
    let mut rng = StdRng::seed_from_u64(31);
    let mut guards = GuardSet::new(GuardParams::default());
    let web = PathTarget::tcp(443, None);
    let fitting: Vec<_> = c
        .relays()
        .iter()
        .filter(|r| exit_allows(r, &web))
        .map(|r| r.validated_identity().unwrap())
        .collect();
    assert!(fitting.len() > 10, "{}", fitting.len());
    // Every fitting exit but one avoided: that one, every time.
    let (keep, avoid) = fitting.split_last().unwrap();
    for _ in 0..100 {
        let path = select_path_avoiding(&c, &web, avoid, &mut guards, 3, NOW, &mut rng).unwrap();
        check_path(&path, &web, 3, &guards);
        assert_eq!(path[2].identity, *keep);
    }
    // All of them avoided: paths are still built, through the fitting exits, and the
    // oldest entries (last in the list) are let go first: the newest is never chosen.
    let (newest, _) = fitting.split_first().unwrap();
    for _ in 0..50 {
        let path = select_path_avoiding(&c, &web, &fitting, &mut guards, 3, NOW, &mut rng).unwrap();
        check_path(&path, &web, 3, &guards);
        assert_eq!(
            path[2].identity, *keep,
            "the oldest avoided exit goes first"
        );
        assert_ne!(path[2].identity, *newest);
    }

    // A network with a single exit, which the client avoids: it still gets paths, through it.
    let mut relays = c.relays().to_vec();
    let only = relays
        .iter()
        .find(|r| exit_allows(r, &web))
        .unwrap()
        .identity;
    for r in relays.iter_mut().filter(|r| r.identity != only) {
        r.flags.set(RelayFlags::EXIT, false);
    }
    let one = consensus_of(&relays, &auths);
    let only_id = one.relay(only).unwrap().validated_identity().unwrap();
    let mut guards = GuardSet::new(GuardParams::default());
    for _ in 0..20 {
        let path =
            select_path_avoiding(&one, &web, &[only_id], &mut guards, 3, NOW, &mut rng).unwrap();
        check_path(&path, &web, 3, &guards);
        assert_eq!(path[2].identity, only);
    }
}

#[test]
fn udp_targets_get_only_exits_whose_udp_policy_allows_them() {
    let (c, auths) = synthetic_consensus(400);
    let mut rng = StdRng::seed_from_u64(20);
    let dns = PathTarget::udp(53, None);
    // No exit of the synthetic network publishes a UDP policy: no UDP path, clearly said,
    // while TCP paths are unaffected.
    assert_eq!(
        select_exit(&c, &dns, &mut rng).unwrap_err(),
        PathError::NoUdpExit { port: 53 }
    );
    assert!(select_exit(&c, &PathTarget::tcp(53, None), &mut rng).is_ok());

    // One exit in three opts in to UDP for DNS and QUIC (carried in its microdescriptor).
    let udp =
        allium::relay::udp_policy_from_config(Some(&["accept *:53", "accept *:443"])).unwrap();
    let mut relays = c.relays().to_vec();
    let mut with_udp = HashSet::new();
    for (i, r) in relays
        .iter_mut()
        .filter(|r| r.has(RelayFlags::EXIT))
        .enumerate()
    {
        if i % 3 == 0 {
            r.udp_policy = udp.clone();
            with_udp.insert(r.identity);
        }
    }
    let c = consensus_of(&relays, &auths);
    assert_eq!(c.missing_microdescs(), 0);
    assert_eq!(
        c.relays().iter().filter(|r| r.udp_policy == udp).count(),
        with_udp.len()
    );
    let quic = PathTarget::udp(443, Some("93.184.216.34".parse().unwrap()));
    let mut guards = GuardSet::new(GuardParams::default());
    let (mut udp_exits, mut tcp_exits) = (HashSet::new(), HashSet::new());
    for i in 0..300 {
        let target = if i % 2 == 0 { &dns } else { &quic };
        let path = select_path(&c, target, &mut guards, 3, NOW, &mut rng).unwrap();
        check_path(&path, target, 3, &guards);
        assert!(with_udp.contains(&path[2].identity), "an exit without UDP");
        udp_exits.insert(path[2].identity);
        let tcp = select_exit(&c, &PathTarget::tcp(443, None), &mut rng).unwrap();
        tcp_exits.insert(tcp.identity);
    }
    // Several UDP exits share the load; TCP still uses exits without UDP.
    assert!(udp_exits.len() > 5, "{}", udp_exits.len());
    assert!(tcp_exits.iter().any(|id| !with_udp.contains(id)));
    // Every relay: a UDP target is allowed exactly by the UDP policy of a usable exit.
    for r in c.relays() {
        let allowed = exit_allows(r, &dns);
        assert_eq!(
            allowed,
            with_udp.contains(&r.identity) && r.has(USABLE) && r.flags.usable_exit()
        );
    }
    // Ports no exit opened for UDP, or special-purpose destinations: refused.
    for target in [
        PathTarget::udp(123, None),
        PathTarget::udp(53, Some("10.0.0.1".parse().unwrap())),
        PathTarget::udp(53, Some("127.0.0.1".parse().unwrap())),
    ] {
        assert_eq!(
            select_exit(&c, &target, &mut rng).unwrap_err(),
            PathError::NoUdpExit { port: target.port }
        );
    }
}

/// Wilson–Hilferty approximation of the chi-square critical value at z standard normal.
fn chi2_critical(df: f64, z: f64) -> f64 {
    let a = 2.0 / (9.0 * df);
    df * (1.0 - a + z * a.sqrt()).powi(3)
}

/// Chi-square of observed counts against expected probabilities, binning relays (in
/// decreasing probability) until each bin expects ≥ 100 selections. Returns (stat, df).
fn binned_chi2(
    expected_p: &HashMap<RelayId, f64>,
    observed: &HashMap<RelayId, u64>,
    n: u64,
) -> (f64, f64) {
    let mut items: Vec<(&RelayId, f64)> = expected_p.iter().map(|(k, v)| (k, *v)).collect();
    items.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap().then(a.0.cmp(b.0)));
    let (mut bins, mut e, mut o) = (Vec::new(), 0.0, 0.0);
    for (id, p) in items {
        e += p * n as f64;
        o += *observed.get(id).unwrap_or(&0) as f64;
        if e >= 100.0 {
            bins.push((o, e));
            e = 0.0;
            o = 0.0;
        }
    }
    if e > 0.0 {
        if let Some(last) = bins.last_mut() {
            last.0 += o;
            last.1 += e;
        }
    }
    // Nothing may be chosen outside the expected set.
    let total_observed: u64 = observed.values().sum();
    let inside: u64 = expected_p
        .keys()
        .map(|k| *observed.get(k).unwrap_or(&0))
        .sum();
    assert_eq!(
        inside, total_observed,
        "selected a relay with zero probability"
    );
    let stat = bins.iter().map(|(o, e)| (o - e) * (o - e) / e).sum();
    (stat, (bins.len() - 1) as f64)
}

fn probabilities(
    c: &Consensus,
    filter: impl Fn(&ConsensusEntry) -> bool,
    position: Position,
) -> HashMap<RelayId, f64> {
    let w: Vec<(&ConsensusEntry, u128)> = c
        .relays()
        .iter()
        .filter(|r| filter(r))
        .map(|r| (r, position_weight(c.weights(), r, position)))
        .filter(|(_, w)| *w > 0)
        .collect();
    let total: u128 = w.iter().map(|(_, w)| w).sum();
    w.into_iter()
        .map(|(r, x)| (r.identity, x as f64 / total as f64))
        .collect()
}

#[test]
fn exit_selection_follows_bandwidth_weights() {
    let (c, _) = synthetic_consensus(1000);
    let target = PathTarget {
        port: 443,
        addr: None,
        proto: Transport::Tcp,
    };
    let expected = probabilities(&c, |r| exit_allows(r, &target), Position::Exit);
    let mut rng = StdRng::seed_from_u64(9);
    let n = 10_000u64;
    let mut observed = HashMap::new();
    for _ in 0..n {
        let e = select_exit(&c, &target, &mut rng).unwrap();
        *observed.entry(e.identity).or_insert(0u64) += 1;
    }
    let (stat, df) = binned_chi2(&expected, &observed, n);
    let crit = chi2_critical(df, 3.29);
    assert!(df >= 20.0, "{df}");
    assert!(stat < crit, "chi2 {stat:.1} >= {crit:.1} (df {df})");
}

#[test]
fn guard_sampling_follows_guard_weights() {
    let (c, _) = synthetic_consensus(1000);
    let expected = probabilities(
        &c,
        |r| r.has(USABLE.union(RelayFlags::GUARD)),
        Position::Guard,
    );
    let mut rng = StdRng::seed_from_u64(10);
    let n = 8_000u64;
    let mut observed = HashMap::new();
    let params = GuardParams {
        sample_size: 1,
        primary: 1,
        ..GuardParams::default()
    };
    for _ in 0..n {
        let mut g = GuardSet::new(params.clone());
        g.update(&c, NOW, &mut rng);
        let id = RelayId::from(g.sampled().next().unwrap());
        *observed.entry(id).or_insert(0u64) += 1;
    }
    let (stat, df) = binned_chi2(&expected, &observed, n);
    let crit = chi2_critical(df, 3.29);
    assert!(stat < crit, "chi2 {stat:.1} >= {crit:.1} (df {df})");
}

#[test]
fn middle_selection_follows_weights_given_exclusions() {
    // The middle's distribution depends on the exit and guard chosen (their conflicts are
    // excluded), so the expectation is summed per path from the conditional probabilities.
    let (c, _) = synthetic_consensus(1000);
    let target = PathTarget {
        port: 443,
        addr: None,
        proto: Transport::Tcp,
    };
    let mut rng = StdRng::seed_from_u64(11);
    let mut guards = GuardSet::new(GuardParams::default());
    let n = 2_000u64;
    let mut expected: HashMap<RelayId, f64> = HashMap::new();
    let mut observed = HashMap::new();
    for _ in 0..n {
        let p = select_path(&c, &target, &mut guards, 3, NOW, &mut rng).unwrap();
        let (g, m, e) = (p[0], p[1], p[2]);
        *observed.entry(m.identity).or_insert(0u64) += 1;
        let cond = probabilities(
            &c,
            |r| r.has(USABLE) && !conflicts(r, g) && !conflicts(r, e),
            Position::Middle,
        );
        for (id, q) in cond {
            *expected.entry(id).or_insert(0.0) += q / n as f64;
        }
    }
    let (stat, df) = binned_chi2(&expected, &observed, n);
    let crit = chi2_critical(df, 3.29);
    assert!(stat < crit, "chi2 {stat:.1} >= {crit:.1} (df {df})");
}

#[test]
fn ipv6_subnet_rule() {
    let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
    let b: IpAddr = "2001:db8:ffff::1".parse().unwrap();
    let c: IpAddr = "2001:db9::1".parse().unwrap();
    assert!(same_subnet(a, b));
    assert!(!same_subnet(a, c));
    assert!(same_subnet(
        "1.2.3.4".parse().unwrap(),
        "::ffff:1.2.200.1".parse().unwrap()
    ));
    assert!(!same_subnet(
        "1.2.3.4".parse().unwrap(),
        "1.3.3.4".parse().unwrap()
    ));
}

/// 32 bytes that do not decode to an Ed25519 point (found by trial: about half of all
/// y-coordinates are not on the curve).
fn not_a_point() -> [u8; 32] {
    (2u8..=255)
        .map(|b| {
            let mut bytes = [b; 32];
            bytes[31] &= 0x7f;
            bytes
        })
        .find(|b| {
            matches!(
                RelayId::from_bytes(*b).validate(),
                Err(KeyError::InvalidIdentityKey)
            )
        })
        .unwrap()
}

/// The attack: the authorities (a bug, or a majority of them lying) sign a consensus that
/// lists relays whose identity bytes are not usable Ed25519 keys: one not a point at all,
/// one a small-order ("weak") point anyone could sign for. They are made the most
/// attractive relays there are (every flag, the largest bandwidth, exits to everything),
/// so a selection that did not skip them would pick them almost every time. The client
/// still loads the consensus (identities are validated when used, not when loaded), the
/// bad relays are in its view, yet no path, guard sample or handshake ever uses them, and
/// the rest of the network works.
#[test]
fn listed_identities_that_are_not_keys_are_never_used() {
    let (c, auths) = synthetic_consensus(300);
    let mut body = c.body().clone();
    let mut mds = c.microdescs();
    let mut weak = [0u8; 32];
    weak[0] = 1;
    let bad_ids = [
        RelayId::from_bytes(not_a_point()),
        RelayId::from_bytes(weak),
    ];
    assert!(bad_ids.iter().all(|id| id.validate().is_err()));
    let template = OnionKeyCert::sign(&key(0), onion(0).public(), NOW + 24 * HOUR)
        .to_bytes()
        .unwrap();
    for (i, id) in bad_ids.iter().enumerate() {
        // A certificate naming the bad identity (its signature cannot verify: nobody can
        // sign for a non-point, and a weak key's signatures are refused).
        let mut cert = template;
        cert[..32].copy_from_slice(id.as_bytes());
        let (listed, md) = ConsensusEntry {
            identity: *id,
            onion_cert: OnionKeyCert::from_bytes(&cert).unwrap(),
            addrs: vec![SocketAddr::from(([198, 51, 100 + i as u8, 1], 9001))],
            // Every flag but BadExit.
            flags: RelayFlags::from_bits(0x3f).unwrap(),
            bandwidth: MAX_BANDWIDTH,
            measured: true,
            exit_policy: "accept *:*".parse().unwrap(),
            udp_policy: "accept *:*".parse().unwrap(),
            family: Vec::new(),
        }
        .split()
        .unwrap();
        mds.insert(md).unwrap();
        body.relays.push(listed);
    }
    body.relays.sort_by_key(|r| r.identity);
    body.weights = BandwidthWeights::compute(body.relays.iter().map(|r| (r.flags, r.bandwidth)));
    let mut signed = body.to_signed().unwrap();
    for a in &auths {
        signed.sign(a);
    }
    let bytes = signed.to_bytes().unwrap();

    // The client loads it, and the bad relays are in its view.
    let c = UncheckedConsensus::parse(&bytes)
        .unwrap()
        .verify(&publics(&auths), NOW)
        .unwrap()
        .assemble_from(&mds);
    assert_eq!(c.missing_microdescs(), 0);
    for id in &bad_ids {
        let entry = c.relay(id).expect("listed and assembled");
        // Using one fails cleanly: its identity is not a key, its certificate never verifies.
        assert!(entry.validated_identity().is_err());
        assert!(entry.verified_onion_key(NOW).is_err());
    }

    // Paths, guard samples and single choices never include them, and never fail.
    let is_bad = |e: &ConsensusEntry| bad_ids.contains(&e.identity);
    let mut rng = StdRng::seed_from_u64(19);
    let target = PathTarget {
        port: 443,
        addr: None,
        proto: Transport::Tcp,
    };
    for _ in 0..50 {
        let mut guards = GuardSet::new(GuardParams::default());
        let path = select_path(&c, &target, &mut guards, 3, NOW, &mut rng).unwrap();
        assert!(!path.iter().any(|e| is_bad(e)), "a bad relay was chosen");
        check_path(&path, &target, 3, &guards);
        assert!(path.iter().all(|e| e.verified_onion_key(NOW).is_ok()));
        assert!(!guards.sampled().any(|g| bad_ids.iter().any(|b| b == g)));
        let exit = select_exit(&c, &target, &mut rng).unwrap();
        assert!(!is_bad(exit));
    }
}
