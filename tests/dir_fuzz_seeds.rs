//! Regenerates the fuzz seeds for the `descriptor`, `consensus` and `consensus_diff` targets:
//! `ALLIUM_WRITE_SEEDS=1 cargo test --test dir_fuzz_seeds -- --ignored`.
//! Without the variable the test only checks that the committed seeds still verify.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

mod common;

use std::path::PathBuf;

use allium::dir::{
    compute_consensus, ConsensusParams, ExitPolicy, UncheckedConsensus, UncheckedDescriptor,
    UncheckedVote, VoteBody, VoteEntry,
};
use common::dir::*;

fn seeds_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target)
}

fn descriptor_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, n, exit) in [("exit", 1, true), ("non-exit", 2, false)] {
        let (id, mut d) = descriptor(n, exit);
        if exit {
            // The exit opts in to UDP for DNS and QUIC (behind the special-range rejects).
            d.udp_policy =
                allium::relay::udp_policy_from_config(Some(&["accept *:53", "accept *:443"]))
                    .unwrap();
        }
        if n == 2 {
            d.family = vec![key(3).public()];
            d.addrs.push("[2001:db8::1]:443".parse().unwrap());
            d.exit_policy = "reject 10.0.0.0/8:*, accept *:80-443"
                .parse::<ExitPolicy>()
                .unwrap();
        }
        out.push((name.to_string(), d.sign(&id).unwrap().to_bytes().unwrap()));
    }
    out
}

fn consensus_seeds() -> Vec<(String, Vec<u8>)> {
    let auths = authorities(3);
    let ids = publics(&auths);
    let votes: Vec<_> = auths
        .iter()
        .map(|a| {
            let entries = (0..6u64)
                .map(|n| {
                    let (id, d) = descriptor(n, n % 2 == 0);
                    VoteEntry {
                        descriptor: d.sign(&id).unwrap(),
                        flags: allium::dir::RelayFlags::ALL,
                        measured: (n % 2 == 0).then_some(1000 * (n + 1)),
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
            let bytes = body.sign(a).unwrap().to_bytes().unwrap();
            UncheckedVote::parse(&bytes)
                .unwrap()
                .verify(&ids, NOW)
                .unwrap()
        })
        .collect();
    let body = compute_consensus(&votes, &ids, &ConsensusParams::default()).unwrap();
    let mut all = body.to_signed().unwrap();
    let mut two = body.to_signed().unwrap();
    for a in &auths {
        all.sign(a);
    }
    two.sign(&auths[0]);
    two.sign(&auths[1]);
    vec![
        ("three-signatures".into(), all.to_bytes().unwrap()),
        ("two-signatures".into(), two.to_bytes().unwrap()),
    ]
}

/// Microdescriptors of the descriptor seeds' relays (an exit, a non-exit with family).
fn microdesc_seeds() -> Vec<(String, Vec<u8>)> {
    descriptor_seeds()
        .into_iter()
        .map(|(name, bytes)| {
            let d = UncheckedDescriptor::parse(&bytes)
                .unwrap()
                .verify(NOW, 300)
                .unwrap();
            let md = allium::dir::Microdesc {
                onion_cert: d.onion_cert.clone(),
                exit_policy: d.exit_policy.clone(),
                udp_policy: d.udp_policy.clone(),
                family: d.family.iter().map(Into::into).collect(),
            };
            (name, md.to_bytes().unwrap())
        })
        .collect()
}

/// A response carrying both microdescriptor seeds, preceded by the target's request
/// prefix (a count byte and that many digests).
fn microdesc_response_seeds() -> Vec<(String, Vec<u8>)> {
    let mds: Vec<Vec<u8>> = microdesc_seeds().into_iter().map(|(_, b)| b).collect();
    let refs: Vec<&[u8]> = mds.iter().map(Vec::as_slice).collect();
    let mut seed = vec![2u8];
    for m in &mds {
        seed.extend_from_slice(&allium::dir::microdesc::digest_of(m));
    }
    seed.extend(allium::dir::microdesc::encode_response(
        &refs,
        allium::dir::request::MAX_DIR_BODY,
    ));
    vec![("two".into(), seed)]
}

/// The `consensus_diff` target's fixed base (the same four relays, built the same way),
/// signed by the three authorities.
fn diff_fuzz_base(relays: &[u64], stable: &[u64], valid_after: u64) -> allium::dir::Consensus {
    use allium::crypto::OnionKeyCert;
    use allium::dir::{BandwidthWeights, ConsensusBody, ConsensusEntry, RelayFlags};
    let auths = authorities(3);
    let mut entries: Vec<ConsensusEntry> = relays
        .iter()
        .map(|&n| {
            let mut flags = RelayFlags::RUNNING.union(RelayFlags::VALID);
            flags.set(RelayFlags::STABLE, stable.contains(&n));
            ConsensusEntry {
                identity: key(n).public().into(),
                onion_cert: OnionKeyCert::sign(&key(n), onion(n).public(), u64::MAX),
                addrs: vec![std::net::SocketAddr::from(([11, 0, n as u8, 1], 9001))],
                flags,
                bandwidth: 1000 * (n + 1),
                measured: true,
                exit_policy: ExitPolicy::reject_all(),
                udp_policy: ExitPolicy::reject_all(),
                family: Vec::new(),
            }
        })
        .collect();
    entries.sort_by_key(|r| r.identity);
    let (listed, mds) = allium::dir::split_entries(&entries).unwrap();
    let mut ids = publics(&auths);
    ids.sort();
    let body = ConsensusBody {
        version: allium::dir::consensus::CONSENSUS_VERSION,
        valid_after,
        fresh_until: valid_after + 2 * HOUR,
        valid_until: valid_after + 4 * HOUR,
        authorities: ids.clone(),
        weights: BandwidthWeights::compute(entries.iter().map(|r| (r.flags, r.bandwidth))),
        relays: listed,
    };
    let mut signed = body.to_signed().unwrap();
    for a in &auths {
        signed.sign(a);
    }
    UncheckedConsensus::parse(&signed.to_bytes().unwrap())
        .unwrap()
        .verify(&ids, NOW)
        .unwrap()
        .assemble_from(&mds)
}

/// A diff from the fuzz target's base: relay 0 removed, relay 1 changed, relay 7 added.
fn consensus_diff_seeds() -> Vec<(String, Vec<u8>)> {
    use allium::dir::diff::ConsensusDiff;
    let base = diff_fuzz_base(&[0, 1, 2, 3], &[], NOW - HOUR);
    let next = diff_fuzz_base(&[1, 2, 3, 7], &[1], NOW);
    let diff =
        ConsensusDiff::between(base.signed(), base.body(), next.signed(), next.body()).unwrap();
    vec![("diff".into(), diff.to_bytes())]
}

#[test]
#[ignore = "writes files; run with ALLIUM_WRITE_SEEDS=1 -- --ignored"]
fn write_fuzz_seeds() {
    if std::env::var_os("ALLIUM_WRITE_SEEDS").is_none() {
        return;
    }
    for (target, seeds) in [
        ("descriptor", descriptor_seeds()),
        ("consensus", consensus_seeds()),
        ("microdesc", microdesc_seeds()),
        ("microdesc_response", microdesc_response_seeds()),
        ("consensus_diff", consensus_diff_seeds()),
    ] {
        let dir = seeds_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

#[test]
fn committed_seeds_verify() {
    let ids = publics(&authorities(3));
    for (name, bytes) in descriptor_seeds() {
        let committed = std::fs::read(seeds_dir("descriptor").join(&name)).unwrap();
        assert_eq!(committed, bytes, "descriptor seed {name} is stale");
        UncheckedDescriptor::parse(&committed)
            .unwrap()
            .verify(NOW, 300)
            .unwrap();
    }
    for (name, bytes) in microdesc_seeds() {
        let committed = std::fs::read(seeds_dir("microdesc").join(&name)).unwrap();
        assert_eq!(committed, bytes, "microdesc seed {name} is stale");
        allium::dir::Microdesc::parse(&committed).unwrap();
    }
    for (name, bytes) in microdesc_response_seeds() {
        let committed = std::fs::read(seeds_dir("microdesc_response").join(&name)).unwrap();
        assert_eq!(committed, bytes, "microdesc_response seed {name} is stale");
    }
    let base = diff_fuzz_base(&[0, 1, 2, 3], &[], NOW - HOUR);
    for (name, bytes) in consensus_diff_seeds() {
        let committed = std::fs::read(seeds_dir("consensus_diff").join(&name)).unwrap();
        assert_eq!(committed, bytes, "consensus_diff seed {name} is stale");
        allium::dir::diff::ConsensusDiff::parse(&committed)
            .unwrap()
            .apply(base.signed().body(), base.body())
            .unwrap()
            .verify(&ids, NOW)
            .unwrap();
    }
    for (name, bytes) in consensus_seeds() {
        let committed = std::fs::read(seeds_dir("consensus").join(&name)).unwrap();
        assert_eq!(committed, bytes, "consensus seed {name} is stale");
        UncheckedConsensus::parse(&committed)
            .unwrap()
            .verify(&ids, NOW)
            .unwrap();
    }
}
