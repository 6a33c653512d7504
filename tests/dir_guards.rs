//! The guard set: stability, failures, churn, persistence.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

mod common;

use std::os::unix::fs::PermissionsExt;

use allium::crypto::RelayId;
use allium::dir::consensus::CONSENSUS_VERSION;
use allium::dir::{
    select_path, BandwidthWeights, Consensus, ConsensusBody, GuardFileError, GuardParams, GuardSet,
    PathTarget, UncheckedConsensus,
};
use common::dir::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Re-signs `c` without the relays in `drop` (a later consensus where they left).
fn without(c: &Consensus, drop: &[RelayId]) -> Consensus {
    let mut relays = c.relays().to_vec();
    relays.retain(|r| !drop.contains(&r.identity));
    let body = ConsensusBody {
        version: CONSENSUS_VERSION,
        valid_after: c.valid_after(),
        fresh_until: c.fresh_until(),
        valid_until: c.valid_until(),
        authorities: c.body().authorities.clone(),
        weights: BandwidthWeights::compute(relays.iter().map(|r| (r.flags, r.bandwidth))),
        relays: allium::dir::split_entries(&relays).unwrap().0,
    };
    let keys = authorities(3);
    let mut s = body.to_signed().unwrap();
    for k in &keys {
        s.sign(k);
    }
    UncheckedConsensus::parse(&s.to_bytes().unwrap())
        .unwrap()
        .verify(&publics(&keys), NOW)
        .unwrap()
        .assemble_from(&c.microdescs())
}

fn ids(v: &[&allium::dir::ConsensusEntry]) -> Vec<RelayId> {
    v.iter().map(|r| r.identity).collect()
}

#[test]
fn primaries_are_stable_and_used_in_order() {
    let (c, _) = synthetic_consensus(300);
    let mut rng = StdRng::seed_from_u64(1);
    let mut g = GuardSet::new(GuardParams::default());
    g.update(&c, NOW, &mut rng);
    let primary = ids(&g.primary(&c));
    assert_eq!(primary.len(), 3);
    assert_eq!(g.sampled().count(), 3);
    let t = PathTarget {
        port: 443,
        addr: None,
        proto: allium::dir::Transport::Tcp,
    };
    let mut used = std::collections::HashMap::new();
    for _ in 0..200 {
        let p = select_path(&c, &t, &mut g, 3, NOW, &mut rng).unwrap();
        *used.entry(p[0].identity).or_insert(0) += 1;
    }
    assert_eq!(
        ids(&g.primary(&c)),
        primary,
        "primaries changed without cause"
    );
    // Only primaries are used, and the first one for nearly every path (the others only
    // when the first conflicts with the chosen exit).
    assert!(used.keys().all(|k| primary.contains(k)));
    assert!(used[&primary[0]] > 150, "{used:?}");
}

#[test]
fn failures_back_off_then_replace() {
    let (c, _) = synthetic_consensus(300);
    let mut rng = StdRng::seed_from_u64(2);
    let mut g = GuardSet::new(GuardParams::default());
    let first = g.pick(&c, &[], NOW, &mut rng).unwrap().identity;
    g.mark_failed(first, NOW);
    // Backing off: the next primary is used.
    let second = g.pick(&c, &[], NOW + 1, &mut rng).unwrap().identity;
    assert_ne!(first, second);
    // After the back-off, the first is tried again; success resets it.
    assert_eq!(
        g.pick(&c, &[], NOW + 601, &mut rng).unwrap().identity,
        first
    );
    g.mark_success(first);
    assert_eq!(
        g.pick(&c, &[], NOW + 602, &mut rng).unwrap().identity,
        first
    );
    // Three consecutive failures drop it; a replacement is sampled.
    for i in 0..3 {
        g.mark_failed(first, NOW + 700 + i);
    }
    assert!(g.sampled().all(|s| s != &first));
    g.update(&c, NOW + 800, &mut rng);
    assert_eq!(g.primary(&c).len(), 3);
    // If every primary is backing off, one is used anyway (network may have been down).
    let prim = ids(&g.primary(&c));
    for p in &prim {
        g.mark_failed(p, NOW + 900);
    }
    assert!(g.pick(&c, &[], NOW + 901, &mut rng).is_ok());
}

#[test]
fn unlisted_guards_are_skipped_then_dropped() {
    let (c, _) = synthetic_consensus(300);
    let mut rng = StdRng::seed_from_u64(3);
    let params = GuardParams::default();
    let mut g = GuardSet::new(params.clone());
    g.update(&c, NOW, &mut rng);
    let prim = ids(&g.primary(&c));
    let c2 = without(&c, &prim[..1]);
    g.update(&c2, NOW + 10, &mut rng);
    // Still sampled (it may come back) but not primary; another took its place.
    assert!(g.sampled().any(|s| s == &prim[0]));
    let prim2 = ids(&g.primary(&c2));
    assert_eq!(prim2.len(), 3);
    assert!(!prim2.contains(&prim[0]));
    assert_eq!(&prim2[..2], &prim[1..]);
    // It comes back within the grace period: primary again, in its original place.
    g.update(&c, NOW + 20, &mut rng);
    assert_eq!(ids(&g.primary(&c)), prim);
    // Gone for longer than the grace period: dropped.
    g.update(&c2, NOW + 30, &mut rng);
    g.update(&c2, NOW + 30 + params.unlisted_grace, &mut rng);
    assert!(g.sampled().all(|s| s != &prim[0]));
}

#[test]
fn save_load_round_trip_and_strictness() {
    let (c, _) = synthetic_consensus(100);
    let dir = std::env::temp_dir().join(format!("allium-dir-guards-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("guards");
    let mut rng = StdRng::seed_from_u64(4);
    let mut g = GuardSet::new(GuardParams::default());
    g.update(&c, NOW, &mut rng);
    let first = *g.sampled().next().unwrap();
    g.mark_failed(first, NOW);
    g.save(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let loaded = GuardSet::load(&path, GuardParams::default()).unwrap();
    assert_eq!(loaded, g);
    // Saving again replaces atomically.
    loaded.save(&path).unwrap();

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(
        GuardSet::load(&path, GuardParams::default()),
        Err(GuardFileError::InsecurePermissions { .. })
    ));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let good = std::fs::read(&path).unwrap();
    for (name, bytes) in [
        ("truncated", good[..good.len() - 1].to_vec()),
        ("trailing", [good.clone(), vec![0]].concat()),
        ("magic", {
            let mut b = good.clone();
            b[0] ^= 1;
            b
        }),
        ("empty", Vec::new()),
    ] {
        std::fs::write(&path, &bytes).unwrap();
        let err = GuardSet::load(&path, GuardParams::default()).unwrap_err();
        assert!(err.to_string().contains("guards"), "{name}: {err}");
    }
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        GuardSet::load(&path, GuardParams::default()),
        Err(GuardFileError::Io { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The client skips the guard-file write when the encoded state is unchanged (the usual
/// case after a successful build), so encoding must be deterministic, a success on a
/// guard without failures must change nothing, and a failure must change the bytes.
#[test]
fn encoded_state_changes_only_with_the_state() {
    let (c, _) = synthetic_consensus(100);
    let dir = std::env::temp_dir().join(format!("allium-dir-guards-enc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("guards");
    let mut rng = StdRng::seed_from_u64(5);
    let mut g = GuardSet::new(GuardParams::default());
    g.update(&c, NOW, &mut rng);
    let first = *g.sampled().next().unwrap();
    let before = g.encode_state(&path).unwrap();
    assert_eq!(g.encode_state(&path).unwrap(), before);
    g.mark_success(first);
    assert_eq!(
        g.encode_state(&path).unwrap(),
        before,
        "a no-op success changed the bytes"
    );
    g.mark_failed(first, NOW);
    let failed = g.encode_state(&path).unwrap();
    assert_ne!(failed, before);
    // What write_state puts on disk loads back as the same state.
    allium::dir::guards::write_state(&path, &failed).unwrap();
    assert_eq!(GuardSet::load(&path, GuardParams::default()).unwrap(), g);
    g.mark_success(first);
    assert_eq!(
        g.encode_state(&path).unwrap(),
        before,
        "success clears the failure"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Clock jumps (issue 17): a laptop resumed after 8 days keeps its guards while they are
/// listed (no fresh random set), and a clock set back by months does not keep them past
/// their lifetime or park them in back-off for the length of the jump.
#[test]
fn clock_jumps_keep_listed_guards_and_clamp_future_stamps() {
    let (c, _) = synthetic_consensus(300);
    let mut rng = StdRng::seed_from_u64(7);
    let mut g = GuardSet::new(GuardParams::default());
    g.update(&c, NOW, &mut rng);
    let primary = ids(&g.primary(&c));
    let eight_days = 8 * 86_400;
    g.update(&c, NOW + eight_days, &mut rng);
    assert_eq!(ids(&g.primary(&c)), primary, "+8 d replaced listed guards");

    // Back by 100 days: the guards were sampled "in the future" and one is backing off
    // until then. After clamping, the lifetime counts from the (new) now, and the
    // back-off ends within the longest one (6 h), not 100 days later.
    let back = NOW - 100 * 86_400;
    g.mark_failed(primary[0], NOW + eight_days);
    g.clamp_times(back);
    let t = PathTarget {
        port: 443,
        addr: None,
        proto: allium::dir::Transport::Tcp,
    };
    let later = back + 6 * 3600 + 1;
    let mut first_hops = std::collections::HashSet::new();
    for _ in 0..50 {
        first_hops.insert(select_path(&c, &t, &mut g, 3, later, &mut rng).unwrap()[0].identity);
    }
    assert!(first_hops.contains(&primary[0]), "still parked in back-off");
    // 120-day lifetime from `back`: still kept 119 days later, gone after 121.
    g.update(&c, back + 119 * 86_400, &mut rng);
    assert_eq!(ids(&g.primary(&c)), primary);
    g.update(&c, back + 121 * 86_400, &mut rng);
    assert!(!ids(&g.primary(&c)).contains(&primary[0]));
}
