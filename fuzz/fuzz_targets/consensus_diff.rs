//! Bytes → consensus diff (format version 2: base indexes, field masks) → applied to a
//! fixed base consensus (§6.18). Must never panic; whatever parses must re-encode to the
//! same bytes, and whatever applies and verifies must have the announced digest.
#![no_main]

use std::sync::OnceLock;

use allium::crypto::{IdentityKeypair, OnionKeyCert, OnionKeypair};
use allium::dir::consensus::CONSENSUS_VERSION;
use allium::dir::diff::{body_digest, ConsensusDiff};
use allium::dir::{
    split_entries, BandwidthWeights, ConsensusBody, ConsensusEntry, ExitPolicy, RelayFlags,
};
use allium::dir::{Consensus, UncheckedConsensus};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_700_000_000;

fn key(n: u64, tag: u8) -> [u8; 32] {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&n.to_be_bytes());
    seed[8] = tag;
    seed
}

/// Four relays signed by the seeds' three authorities (tests/common/dir.rs derivation).
fn base() -> &'static Consensus {
    static BASE: OnceLock<Consensus> = OnceLock::new();
    BASE.get_or_init(|| {
        let auths: Vec<IdentityKeypair> = (0..3u64)
            .map(|i| IdentityKeypair::from_secret_bytes(&key(1_000_000 + i, 0xA1)))
            .collect();
        let mut relays: Vec<ConsensusEntry> = (0..4u64)
            .map(|n| {
                let id = IdentityKeypair::from_secret_bytes(&key(n, 0xA1));
                let onion = OnionKeypair::from_secret_bytes(&key(n, 0xB2));
                ConsensusEntry {
                    identity: id.public().into(),
                    onion_cert: OnionKeyCert::sign(&id, onion.public(), u64::MAX),
                    addrs: vec![std::net::SocketAddr::from(([11, 0, n as u8, 1], 9001))],
                    flags: RelayFlags::RUNNING.union(RelayFlags::VALID),
                    bandwidth: 1000 * (n + 1),
                    measured: true,
                    exit_policy: ExitPolicy::reject_all(),
                    udp_policy: ExitPolicy::reject_all(),
                    family: Vec::new(),
                }
            })
            .collect();
        relays.sort_by_key(|r| r.identity);
        let (listed, mds) = split_entries(&relays).expect("valid entries");
        let mut ids: Vec<_> = auths.iter().map(|a| a.public()).collect();
        ids.sort();
        let body = ConsensusBody {
            version: CONSENSUS_VERSION,
            valid_after: NOW - 3600,
            fresh_until: NOW + 3600,
            valid_until: NOW + 3 * 3600,
            authorities: ids.clone(),
            weights: BandwidthWeights::compute(relays.iter().map(|r| (r.flags, r.bandwidth))),
            relays: listed,
        };
        let mut signed = body.to_signed().expect("valid body");
        for a in &auths {
            signed.sign(a);
        }
        UncheckedConsensus::parse(&signed.to_bytes().expect("encodes"))
            .and_then(|u| u.verify(&ids, NOW))
            .expect("the base verifies")
            .assemble_from(&mds)
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(diff) = ConsensusDiff::parse(data) {
        let again = diff.to_bytes();
        assert_eq!(&again[..], data, "parse→encode must reproduce the input");
        let b = base();
        if let Ok(u) = diff.apply(b.signed().body(), b.body()) {
            if let Ok(c) = u.verify(b.signers(), NOW) {
                assert_eq!(body_digest(c.signed().body()), diff.result);
            }
        }
    }
});
