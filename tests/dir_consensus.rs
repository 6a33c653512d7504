//! Votes and consensus with N = 3 authorities.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

mod common;

use allium::crypto::IdentityKeypair;
use allium::dir::consensus::DEFAULT_CONSENSUS_SKEW;
use allium::dir::flags::FlagThresholds;
use allium::dir::{
    assign_flags, compute_consensus, ConsensusBody, ConsensusError, ConsensusParams, FlagParams,
    Observation, RelayFlags, SignedDescriptor, UncheckedConsensus, UncheckedVote, Vote, VoteBody,
    VoteEntry,
};
use common::dir::*;

const RELAYS: u64 = 12;

/// Every relay's signed descriptor, relay 0..RELAYS.
fn signed_descriptors() -> Vec<(allium::dir::Descriptor, SignedDescriptor)> {
    (0..RELAYS)
        .map(|n| {
            let (id, d) = descriptor(n, n % 3 == 0);
            let s = d.sign(&id).unwrap();
            (d, s)
        })
        .collect()
}

/// Authority `a`'s vote: it sees all relays except relay `a` (so relay listing needs a
/// majority), and measures bandwidth slightly differently (below the declared value).
fn vote(a: usize, key: &IdentityKeypair, auths: &[allium::crypto::IdentityPublic]) -> Vote {
    let descs = signed_descriptors();
    let params = FlagParams::default();
    let bws: Vec<u64> = descs.iter().map(|(d, _)| d.bandwidth).collect();
    let t = FlagThresholds::compute(&params, &bws);
    let entries = descs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != a)
        .map(|(i, (d, s))| {
            let bandwidth = d.bandwidth - 1000 * a as u64;
            let obs = Observation {
                descriptor: d,
                reachable: true,
                valid: true,
                bandwidth,
                uptime: if i % 2 == 0 { 10 * 24 * HOUR } else { HOUR },
            };
            VoteEntry {
                descriptor: s.clone(),
                flags: assign_flags(&obs, &params, &t),
                measured: Some(bandwidth),
                uptime: obs.uptime,
            }
        })
        .collect();
    let body = VoteBody {
        authority: key.public(),
        valid_after: NOW,
        fresh_until: NOW + HOUR,
        valid_until: NOW + 3 * HOUR,
        entries,
    };
    let bytes = body.sign(key).unwrap().to_bytes().unwrap();
    UncheckedVote::parse(&bytes)
        .unwrap()
        .verify(auths, NOW)
        .unwrap()
}

fn setup() -> (
    Vec<IdentityKeypair>,
    Vec<allium::crypto::IdentityPublic>,
    Vec<Vote>,
) {
    let keys = authorities(3);
    let ids = publics(&keys);
    let votes = keys
        .iter()
        .enumerate()
        .map(|(a, k)| vote(a, k, &ids))
        .collect();
    (keys, ids, votes)
}

fn consensus_bytes(body: &ConsensusBody, signers: &[&IdentityKeypair]) -> Vec<u8> {
    let mut s = body.to_signed().unwrap();
    for k in signers {
        s.sign(k);
    }
    s.to_bytes().unwrap()
}

#[test]
fn all_votes_same_consensus_regardless_of_order() {
    let (_, ids, votes) = setup();
    let p = ConsensusParams::default();
    let reference = allium::codec::encode(&compute_consensus(&votes, &ids, &p).unwrap()).unwrap();
    let orders = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    for o in orders {
        let vs: Vec<Vote> = o.iter().map(|&i| votes[i].clone()).collect();
        let mut auth_order = ids.clone();
        auth_order.rotate_left(o[0]);
        let body = compute_consensus(&vs, &auth_order, &p).unwrap();
        assert_eq!(
            allium::codec::encode(&body).unwrap(),
            reference,
            "order {o:?}"
        );
    }
    let body = compute_consensus(&votes, &ids, &p).unwrap();
    // Each relay 0..3 was omitted by one authority, still listed by the other two.
    assert_eq!(body.relays.len(), RELAYS as usize);
    // Bandwidth is the low median of the measurements (a = 0, 1, 2 measure 0, 1000, 2000
    // below the declaration).
    for r in &body.relays {
        let n = (0..RELAYS)
            .find(|&n| key(n).public() == r.identity)
            .unwrap();
        let base = 1_000_000 + n * 1000;
        let expect = match n {
            // Two votes (authority n omitted it): low median = the smaller.
            0 | 1 => base - 2000,
            2 => base - 1000,
            _ => base - 1000,
        };
        assert_eq!(
            r.bandwidth,
            allium::dir::round_weight(expect).min(base),
            "relay {n}"
        );
        assert!(r.measured, "relay {n}");
        assert_eq!(r.has(RelayFlags::EXIT), n % 3 == 0, "relay {n}");
        assert_eq!(r.has(RelayFlags::STABLE), n % 2 == 0, "relay {n}");
        assert!(r.has(RelayFlags::RUNNING.union(RelayFlags::VALID)));
    }
}

#[test]
fn relay_listed_by_one_of_three_is_dropped() {
    let keys = authorities(3);
    let ids = publics(&keys);
    let votes: Vec<Vote> = keys
        .iter()
        .enumerate()
        .map(|(a, k)| vote(a, k, &ids))
        .collect();
    // Drop relay 5 from votes 1 and 2: only authority 0 lists it.
    let mut votes = votes;
    let r5 = key(5).public();
    for v in votes.iter_mut().skip(1) {
        v.entries.retain(|e| e.descriptor.identity != r5);
    }
    let body = compute_consensus(&votes, &ids, &ConsensusParams::default()).unwrap();
    assert!(body.relays.iter().all(|r| r.identity != r5));
    // With only two votes, a relay needs both (majority of the 3 configured).
    let body = compute_consensus(&votes[..2], &ids, &ConsensusParams::default()).unwrap();
    assert!(body.relays.iter().all(|r| r.identity != r5));
    assert!(body
        .relays
        .iter()
        .all(|r| r.identity != key(0).public() && r.identity != key(1).public()));
}

#[test]
fn newest_descriptor_wins() {
    let (_, ids, mut votes) = setup();
    let (id, mut d) = descriptor(7, false);
    d.published = NOW - 10;
    d.addrs[0].set_port(9999);
    let newer = d.sign(&id).unwrap();
    let verified = allium::dir::UncheckedDescriptor::parse(&newer.to_bytes().unwrap())
        .unwrap()
        .verify(NOW, 300)
        .unwrap();
    let e = votes[2]
        .entries
        .iter_mut()
        .find(|e| e.descriptor.identity == id.public())
        .unwrap();
    e.descriptor = verified;
    e.signed = newer;
    let body = compute_consensus(&votes, &ids, &ConsensusParams::default()).unwrap();
    // The newest descriptor is used even though only one authority had it.
    let entry = body
        .relays
        .iter()
        .find(|r| r.identity == id.public())
        .unwrap();
    assert_eq!(entry.addrs[0].port(), 9999);
    let body2 = compute_consensus(
        &[votes[2].clone(), votes[0].clone(), votes[1].clone()],
        &ids,
        &ConsensusParams::default(),
    )
    .unwrap();
    assert_eq!(
        allium::codec::encode(&body).unwrap(),
        allium::codec::encode(&body2).unwrap()
    );
}

#[test]
fn two_of_three_votes_signed_by_two_is_accepted() {
    let (keys, ids, votes) = setup();
    let body = compute_consensus(&votes[..2], &ids, &ConsensusParams::default()).unwrap();
    let bytes = consensus_bytes(&body, &[&keys[0], &keys[1]]);
    let c = UncheckedConsensus::parse(&bytes)
        .unwrap()
        .verify(&ids, NOW)
        .unwrap();
    assert_eq!(c.signers().len(), 2);
    assert!(c.is_fresh(NOW));
    assert_eq!(c.body(), &body);
}

#[test]
fn one_vote_is_not_enough_to_compute() {
    let (_, ids, votes) = setup();
    let err = compute_consensus(&votes[..1], &ids, &ConsensusParams::default()).unwrap_err();
    assert!(
        matches!(
            err,
            ConsensusError::NotEnoughVotes {
                got: 1,
                needed: 2,
                ..
            }
        ),
        "{err}"
    );
    let dup = [votes[0].clone(), votes[0].clone()];
    assert!(matches!(
        compute_consensus(&dup, &ids, &ConsensusParams::default()),
        Err(ConsensusError::DuplicateVote(_))
    ));
}

#[test]
fn dissenting_authority_is_outvoted() {
    let (keys, ids, votes) = setup();
    let majority = compute_consensus(&votes, &ids, &ConsensusParams::default()).unwrap();
    // Authority 2 signs a different document (it dropped a relay).
    let mut other = majority.clone();
    other.relays.pop();
    let mut signed = majority.to_signed().unwrap();
    signed.sign(&keys[0]);
    signed.sign(&keys[1]);
    // Authority 2's signature over *its* document, attached to the majority document.
    let mut theirs = other.to_signed().unwrap();
    let sig = theirs.sign(&keys[2]);
    assert!(
        !signed.add_signature(sig),
        "a signature over another body must be refused"
    );
    // Even forced in (e.g. by a malicious cache), it does not count.
    let mut forced = majority.to_signed().unwrap();
    forced.sign(&keys[0]);
    let bytes = {
        let mut b = forced.to_bytes().unwrap();
        // Rebuild with the foreign signature appended by hand: bump count, append entry.
        let body_len = u64::from_be_bytes(b[..8].try_into().unwrap()) as usize;
        let count_at = 8 + body_len;
        b[count_at..count_at + 8].copy_from_slice(&2u64.to_be_bytes());
        b.extend_from_slice(&sig.identity);
        b.extend_from_slice(&sig.signature);
        b
    };
    let err = UncheckedConsensus::parse(&bytes)
        .unwrap()
        .verify(&ids, NOW)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "consensus has valid signatures from 1 of 3 trusted authorities; need 2"
    );
    // The majority document with two good signatures is accepted.
    let ok = UncheckedConsensus::parse(&signed.to_bytes().unwrap()).unwrap();
    assert!(ok.verify(&ids, NOW).is_ok());
    // The dissenter's document, signed only by it, is refused.
    let lone = UncheckedConsensus::parse(&theirs.to_bytes().unwrap()).unwrap();
    assert!(matches!(
        lone.verify(&ids, NOW),
        Err(ConsensusError::NotEnoughSignatures {
            valid: 1,
            trusted: 3,
            needed: 2
        })
    ));
}

#[test]
fn single_signature_refused_and_unknown_signers_ignored() {
    let (keys, ids, votes) = setup();
    let body = compute_consensus(&votes, &ids, &ConsensusParams::default()).unwrap();
    let outsiders = [key(77), key(78)];
    let bytes = consensus_bytes(&body, &[&keys[0], &outsiders[0], &outsiders[1]]);
    let err = UncheckedConsensus::parse(&bytes)
        .unwrap()
        .verify(&ids, NOW)
        .unwrap_err();
    assert!(
        matches!(err, ConsensusError::NotEnoughSignatures { valid: 1, .. }),
        "{err}"
    );
}

#[test]
fn duplicate_signer_refused() {
    let (keys, ids, votes) = setup();
    let body = compute_consensus(&votes, &ids, &ConsensusParams::default()).unwrap();
    let mut s = body.to_signed().unwrap();
    let sig = s.sign(&keys[0]);
    let mut b = s.to_bytes().unwrap();
    let body_len = u64::from_be_bytes(b[..8].try_into().unwrap()) as usize;
    let count_at = 8 + body_len;
    b[count_at..count_at + 8].copy_from_slice(&2u64.to_be_bytes());
    b.extend_from_slice(&sig.identity);
    b.extend_from_slice(&sig.signature);
    assert!(matches!(
        UncheckedConsensus::parse(&b),
        Err(ConsensusError::DuplicateSigner(_))
    ));
    let _ = ids;
}

#[test]
fn expired_and_not_yet_valid() {
    let (keys, ids, votes) = setup();
    let body = compute_consensus(&votes, &ids, &ConsensusParams::default()).unwrap();
    let bytes = consensus_bytes(&body, &[&keys[0], &keys[1], &keys[2]]);
    // 5 minutes late (a twelfth of the lifetime at most), 10 minutes early, no more.
    assert_eq!(
        body.late_grace(),
        (5 * 60).min((body.valid_until - body.valid_after) / 12)
    );
    let late = body.valid_until + body.late_grace();
    let err = UncheckedConsensus::parse(&bytes)
        .unwrap()
        .verify(&ids, late)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "consensus expired: valid until {}, now {late}",
            body.valid_until
        )
    );
    assert!(err.is_time());
    let c = UncheckedConsensus::parse(&bytes)
        .unwrap()
        .verify(&ids, late - 1)
        .unwrap();
    assert!(c.is_usable(late - 1) && !c.is_usable(late));
    assert!(c.is_live(body.valid_until - 1) && !c.is_live(body.valid_until));
    let err = UncheckedConsensus::parse(&bytes)
        .unwrap()
        .verify(&ids, body.valid_after - DEFAULT_CONSENSUS_SKEW - 1)
        .unwrap_err();
    assert!(matches!(err, ConsensusError::NotYetValid { .. }), "{err}");
    assert!(err.is_time());
    let c = UncheckedConsensus::parse(&bytes)
        .unwrap()
        .verify(&ids, body.valid_after - DEFAULT_CONSENSUS_SKEW)
        .unwrap();
    assert!(!c.is_fresh(body.valid_after - 300));
    assert!(c.is_fresh(body.valid_after));
    assert!(!c.is_fresh(body.fresh_until));
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1);
    for _ in 0..100 {
        let t = c.refetch_time(&mut rng);
        assert!(t >= body.fresh_until && t < body.valid_until, "{t}");
        let t = c.cache_refetch_time(&mut rng);
        assert!(t >= body.fresh_until && t < body.valid_until, "{t}");
    }
}

#[test]
fn tampered_consensus_refused_and_times_enforced() {
    let (keys, ids, votes) = setup();
    let body = compute_consensus(&votes, &ids, &ConsensusParams::default()).unwrap();
    // Two signatures of three: breaking either one leaves too few.
    let bytes = consensus_bytes(&body, &[&keys[0], &keys[1]]);
    // Flip one bit in a sample of positions (every position would be slow in debug), and
    // in every byte of the signature section.
    let sig_start = bytes.len() - 2 * 96 - 8;
    for i in (0..bytes.len()).step_by(97).chain(sig_start..bytes.len()) {
        let mut b = bytes.clone();
        b[i] ^= 0x10;
        let r = UncheckedConsensus::parse(&b).and_then(|u| u.verify(&ids, NOW));
        assert!(r.is_err(), "flip at {i} accepted");
    }
    let mut bad = body.clone();
    bad.fresh_until = bad.valid_until;
    assert!(matches!(bad.to_signed(), Err(ConsensusError::BadTimes(..))));
    let mut bad = body.clone();
    bad.relays.swap(0, 1);
    assert!(matches!(bad.to_signed(), Err(ConsensusError::NotSorted)));
}

#[test]
fn vote_verification_refusals() {
    let keys = authorities(3);
    let ids = publics(&keys);
    let outsider = key(4242);
    let body = VoteBody {
        authority: outsider.public(),
        valid_after: NOW,
        fresh_until: NOW + HOUR,
        valid_until: NOW + 3 * HOUR,
        entries: Vec::new(),
    };
    let bytes = body.sign(&outsider).unwrap().to_bytes().unwrap();
    assert!(UncheckedVote::parse(&bytes)
        .unwrap()
        .verify(&ids, NOW)
        .is_err());
    let body = VoteBody {
        authority: keys[0].public(),
        ..body
    };
    let bytes = body.sign(&keys[0]).unwrap().to_bytes().unwrap();
    assert!(UncheckedVote::parse(&bytes)
        .unwrap()
        .verify(&ids, NOW)
        .is_ok());
    assert!(UncheckedVote::parse(&bytes)
        .unwrap()
        .verify(&ids, NOW + 3 * HOUR)
        .is_err());
    let mut t = bytes.clone();
    let last = t.len() - 1;
    t[last] ^= 1;
    assert!(UncheckedVote::parse(&t).unwrap().verify(&ids, NOW).is_err());
}
