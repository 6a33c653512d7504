//! Tests of the onion-service directory store and its answers.

use super::*;
use crate::crypto::{IdentityKeypair, OnionKeyCert, OnionKeypair};
use crate::dir::consensus::CONSENSUS_VERSION;
use crate::dir::{
    BandwidthWeights, ConsensusBody, ConsensusEntry, ExitPolicy, RelayFlags, UncheckedConsensus,
};
use crate::onion::descriptor::{
    DescriptorParams, InnerDescriptor, IntroPointInfo, SignedOnionDescriptor,
};
use crate::onion::{BlindedKeypair, PeriodParams};

const NOW: u64 = 1_700_000_000;

fn key(n: u8) -> IdentityKeypair {
    let mut seed = [0u8; 32];
    seed[0] = n;
    seed[1] = 0x55;
    IdentityKeypair::from_secret_bytes(&seed)
}

/// A descriptor of service `n`, with `revision`, created at `created`, for the period
/// of `NOW`.
fn descriptor(n: u8, revision: u64, created: u64) -> (Vec<u8>, [u8; 32]) {
    let period = PeriodParams::default().period_at(NOW).unwrap();
    descriptor_for(n, revision, created, period)
}

/// The same, for `period`.
fn descriptor_for(n: u8, revision: u64, created: u64, period: TimePeriod) -> (Vec<u8>, [u8; 32]) {
    let service = key(n);
    let blinded = BlindedKeypair::derive(&service, period).unwrap();
    let relay = key(200);
    let onion = OnionKeypair::from_secret_bytes(&[7; 32]);
    let inner = InnerDescriptor {
        intro_points: vec![IntroPointInfo {
            relay_identity: relay.public(),
            link_addrs: vec!["127.0.0.2:9001".parse().unwrap()],
            onion_cert: OnionKeyCert::sign(&relay, onion.public(), NOW + 86_400),
            auth_key: key(201).public(),
            enc_key: *onion.public(),
        }],
        pow: None,
    };
    let params = DescriptorParams {
        revision,
        created,
        lifetime: 3600,
    };
    let d = SignedOnionDescriptor::build(&mut rand::rng(), &service, &blinded, &inner, &params)
        .unwrap();
    (d.to_bytes().unwrap(), *blinded.public().as_bytes())
}

/// The relay answering in these tests.
fn me() -> IdentityKeypair {
    key(100)
}

/// A fresh circuit of [`me`].
fn ctx() -> DirContext {
    DirContext::new(me().public())
}

/// A consensus listing `relays` as HSDirs, valid from `valid_after` for three days.
fn consensus_at(relays: &[IdentityKeypair], valid_after: u64) -> Arc<Consensus> {
    consensus_with(relays, valid_after, 3600, 3 * 86_400)
}

/// A consensus listing `relays` as HSDirs, valid from `valid_after`, fresh for
/// `fresh_for` and valid for `valid_for` seconds.
fn consensus_with(
    relays: &[IdentityKeypair],
    valid_after: u64,
    fresh_for: u64,
    valid_for: u64,
) -> Arc<Consensus> {
    let auth = key(250);
    let onion = OnionKeypair::from_secret_bytes(&[9; 32]);
    let mut entries: Vec<ConsensusEntry> = relays
        .iter()
        .zip(1u8..)
        .map(|(k, i)| ConsensusEntry {
            identity: k.public().into(),
            onion_cert: OnionKeyCert::sign(k, onion.public(), NOW + 30 * 86_400),
            addrs: vec![std::net::SocketAddr::from(([10, 0, 0, i], 9001))],
            flags: RelayFlags::RUNNING
                .union(RelayFlags::VALID)
                .union(RelayFlags::STABLE),
            bandwidth: 1000,
            measured: true,
            exit_policy: ExitPolicy::reject_all(),
            udp_policy: ExitPolicy::reject_all(),
            family: Vec::new(),
        })
        .collect();
    entries.sort_by_key(|e| e.identity);
    let (listed, mds) = crate::dir::split_entries(&entries).unwrap();
    let body = ConsensusBody {
        version: CONSENSUS_VERSION,
        valid_after,
        fresh_until: valid_after + fresh_for,
        valid_until: valid_after + valid_for,
        authorities: vec![auth.public()],
        weights: BandwidthWeights::compute(entries.iter().map(|e| (e.flags, e.bandwidth))),
        relays: listed,
    };
    let mut signed = body.to_signed().unwrap();
    signed.sign(&auth);
    let bytes = signed.to_bytes().unwrap();
    let c = UncheckedConsensus::parse(&bytes)
        .unwrap()
        .verify(&[auth.public()], valid_after)
        .unwrap()
        .assemble_from(&mds);
    Arc::new(c)
}

fn consensus(relays: &[IdentityKeypair]) -> Arc<Consensus> {
    consensus_at(relays, NOW - 3600)
}

/// A store whose consensus lists only [`me`] (so it is responsible for every key).
fn store_with(limits: HsDirLimits) -> HsDirStore {
    let store = HsDirStore::new(limits);
    store.set_consensus(consensus(&[me()]));
    store
}

fn store() -> HsDirStore {
    store_with(HsDirLimits::default())
}

/// The ring of `relays` for the period of `NOW`.
fn ring_of(relays: &[IdentityKeypair]) -> HsDirRing {
    let period = PeriodParams::default().period_at(NOW).unwrap();
    HsDirRing::new(consensus(relays).relays(), period, &HsDirParams::default())
}

/// Service `n`'s blinded key for the period of `NOW`.
fn blinded_of(n: u8) -> BlindedPublic {
    let period = PeriodParams::default().period_at(NOW).unwrap();
    *BlindedKeypair::derive(&key(n), period).unwrap().public()
}

/// A service number whose blinded key (this period) the ring of `relays` makes [`me`]
/// responsible for (`on` true), or places too far off for [`me`] to accept even with
/// the slack (`on` false).
fn service_where(relays: &[IdentityKeypair], on: bool) -> u8 {
    let ring = ring_of(relays);
    (1..=255u8)
        .find(|&n| {
            let b = blinded_of(n);
            if on {
                ring.is_responsible(&b, me().public())
            } else {
                !ring.accepts(&b, me().public())
            }
        })
        .unwrap()
}

/// The key numbers of me and 19 others: 6 of 20 relays are responsible for each key,
/// 10 accept it.
fn twenty_numbers() -> Vec<u8> {
    std::iter::once(100).chain(110..129).collect()
}

fn keys(numbers: &[u8]) -> Vec<IdentityKeypair> {
    numbers.iter().map(|&n| key(n)).collect()
}

fn twenty() -> Vec<IdentityKeypair> {
    keys(&twenty_numbers())
}

#[test]
fn put_get_replace_and_rollback() {
    let store = store();
    let (d1, k) = descriptor(1, 5, NOW - 10);
    assert_eq!(store.get_at(&k, NOW).status, DirStatus::NotFound);
    assert_eq!(store.put_at(&d1, NOW, &ctx()).status, DirStatus::Ok);
    assert_eq!(store.get_at(&k, NOW).body, d1);
    // Same revision again, and an older one: refused, the stored one stays.
    assert_eq!(store.put_at(&d1, NOW, &ctx()).status, DirStatus::Refused);
    let (d0, _) = descriptor(1, 4, NOW - 5);
    let r = store.put_at(&d0, NOW, &ctx());
    assert_eq!(r.status, DirStatus::Refused);
    assert!(r.reason().contains("revision"), "{}", r.reason());
    let (d2, _) = descriptor(1, 6, NOW - 5);
    assert_eq!(store.put_at(&d2, NOW, &ctx()).status, DirStatus::Ok);
    assert_eq!(store.get_at(&k, NOW).body, d2);
    assert_eq!(store.len(), 1);
    assert_eq!(store.bytes(), d2.len());
}

#[test]
fn forged_malformed_and_stale_are_refused() {
    let store = store();
    let (mut d, k) = descriptor(2, 1, NOW - 10);
    let last = d.len() - 1;
    d[last] ^= 1; // in the signature
    assert_eq!(store.put_at(&d, NOW, &ctx()).status, DirStatus::Refused);
    assert_eq!(
        store.put_at(b"junk", NOW, &ctx()).status,
        DirStatus::BadRequest
    );
    let (future, _) = descriptor(2, 1, NOW + 3600);
    assert_eq!(
        store.put_at(&future, NOW, &ctx()).status,
        DirStatus::Refused
    );
    let (old, _) = descriptor(2, 1, NOW - 2 * 3600);
    assert_eq!(store.put_at(&old, NOW, &ctx()).status, DirStatus::Refused);
    assert!(store.is_empty());
    assert_eq!(store.get_at(&k, NOW).status, DirStatus::NotFound);
}

#[test]
fn expired_entries_are_dropped_and_then_any_revision_is_accepted() {
    let store = store();
    let (d, k) = descriptor(3, 9, NOW);
    assert_eq!(store.put_at(&d, NOW, &ctx()).status, DirStatus::Ok);
    let skew = HsDirLimits::default().max_skew_secs;
    assert_eq!(
        store.get_at(&k, NOW + 3600 + skew - 1).status,
        DirStatus::Ok
    );
    assert_eq!(
        store.get_at(&k, NOW + 3600 + skew).status,
        DirStatus::NotFound
    );
    assert!(store.is_empty());
    assert_eq!(store.bytes(), 0);
    let later = NOW + 3600 + skew;
    let (d1, _) = descriptor(3, 1, later);
    assert_eq!(store.put_at(&d1, later, &ctx()).status, DirStatus::Ok);
}

#[test]
fn full_store_answers_busy_until_entries_expire() {
    let (a, _) = descriptor(4, 1, NOW);
    let limits = HsDirLimits {
        max_entries: 2,
        max_bytes: 3 * a.len(),
        ..HsDirLimits::default()
    };
    let store = store_with(limits);
    assert_eq!(store.put_at(&a, NOW, &ctx()).status, DirStatus::Ok);
    let (b, _) = descriptor(5, 1, NOW);
    assert_eq!(store.put_at(&b, NOW, &ctx()).status, DirStatus::Ok);
    let (c, kc) = descriptor(6, 1, NOW + 100);
    assert_eq!(store.put_at(&c, NOW + 100, &ctx()).status, DirStatus::Busy);
    // Replacing an existing key never needs a new slot.
    let (a2, _) = descriptor(4, 2, NOW);
    assert_eq!(store.put_at(&a2, NOW, &ctx()).status, DirStatus::Ok);
    // Once the first two expired, the purge makes room.
    let later = NOW + 3600 + HsDirLimits::default().max_skew_secs;
    let (c2, _) = descriptor(6, 1, later);
    assert_eq!(store.put_at(&c2, later, &ctx()).status, DirStatus::Ok);
    assert_eq!(store.len(), 1);
    assert_eq!(store.get_at(&kc, later).body, c2);
}

#[test]
fn byte_bound_is_enforced() {
    let (a, _) = descriptor(7, 1, NOW);
    let store = store_with(HsDirLimits {
        max_bytes: a.len() + 10,
        ..HsDirLimits::default()
    });
    assert_eq!(store.put_at(&a, NOW, &ctx()).status, DirStatus::Ok);
    let (b, _) = descriptor(8, 1, NOW);
    assert_eq!(store.put_at(&b, NOW, &ctx()).status, DirStatus::Busy);
    assert!(store.bytes() <= a.len() + 10);
}

#[test]
fn upload_rate_is_bounded() {
    let store = store_with(HsDirLimits {
        puts_per_second: 1,
        put_burst: 3,
        ..HsDirLimits::default()
    });
    let mut busy = 0;
    for rev in 0..6 {
        let (d, _) = descriptor(9, rev, NOW);
        if store.put_at(&d, NOW, &ctx()).status == DirStatus::Busy {
            busy += 1;
        }
    }
    assert!(busy >= 2, "{busy} of 6 uploads refused as BUSY");
}

#[test]
fn other_requests_are_refused() {
    let store = store();
    assert_eq!(
        store.answer(&DirRequest::GetConsensus, 0, &ctx()).status,
        DirStatus::Refused
    );
}

#[test]
fn only_a_relay_on_the_ring_stores() {
    let relays = twenty();
    let store = HsDirStore::default();
    store.set_consensus(consensus(&relays));
    let (off, k_off) = descriptor(service_where(&relays, false), 1, NOW);
    let r = store.put_at(&off, NOW, &ctx());
    assert_eq!(r.status, DirStatus::Refused);
    assert!(r.reason().contains("not responsible"), "{}", r.reason());
    assert_eq!(store.get_at(&k_off, NOW).status, DirStatus::NotFound);
    let (on, k_on) = descriptor(service_where(&relays, true), 1, NOW);
    assert_eq!(store.put_at(&on, NOW, &ctx()).status, DirStatus::Ok);
    assert_eq!(store.get_at(&k_on, NOW).body, on);
    // Another relay asked the same: refused (it is not `me`, and the key is beyond its
    // slack).
    let ring = ring_of(&relays);
    let blinded = BlindedPublic::from_bytes(&k_on).unwrap();
    let other = DirContext::new(
        relays
            .iter()
            .map(|k| k.public())
            .find(|id| !ring.accepts(&blinded, id))
            .unwrap(),
    );
    let (on2, _) = descriptor(service_where(&relays, true), 2, NOW);
    assert_eq!(store.put_at(&on2, NOW, &other).status, DirStatus::Refused);
    assert_eq!(store.len(), 1);
}

/// A consensus listing `relays`, valid from `valid_after` for `valid_for` seconds.
fn consensus_for(relays: &[IdentityKeypair], valid_after: u64, valid_for: u64) -> Arc<Consensus> {
    consensus_with(relays, valid_after, 60, valid_for)
}

#[test]
fn every_live_consensus_seen_counts() {
    // The newer consensuses have me beyond the slack for this key; the oldest has me
    // alone. All four are live, so the oldest still counts (it used to be dropped as
    // soon as two newer ones arrived).
    let relays = twenty();
    let n = service_where(&relays, false);
    let store = HsDirStore::default();
    store.set_consensus(consensus_at(&[me()], NOW - 4 * 3600));
    store.set_consensus(consensus_at(&relays, NOW - 3600));
    store.set_consensus(consensus_at(&relays, NOW - 2 * 3600));
    let (d, _) = descriptor(n, 1, NOW);
    assert_eq!(store.put_at(&d, NOW, &ctx()).status, DirStatus::Ok);
    // One seen out of order (older than the newest) is kept too.
    store.set_consensus(consensus_at(&relays, NOW - 3 * 3600));
    let (d, _) = descriptor(n, 2, NOW);
    assert_eq!(store.put_at(&d, NOW, &ctx()).status, DirStatus::Ok);
    // A fifth, newer, one pushes the oldest out: at most RING_CONSENSUSES are kept.
    store.set_consensus(consensus_at(&relays, NOW - 1800));
    let (d, _) = descriptor(n, 3, NOW);
    let r = store.put_at(&d, NOW, &ctx());
    assert_eq!(r.status, DirStatus::Refused);
    assert!(r.reason().contains("not responsible"), "{}", r.reason());
    // Offered again, the oldest is older than all four kept and stays out.
    store.set_consensus(consensus_at(&[me()], NOW - 4 * 3600));
    assert_eq!(store.put_at(&d, NOW, &ctx()).status, DirStatus::Refused);
}

#[test]
fn an_expired_consensus_does_not_count() {
    let relays = twenty();
    let n = service_where(&relays, false);
    let store = HsDirStore::default();
    // Me alone, but expired 100 s ago (still after the newer one began, so kept).
    store.set_consensus(consensus_for(&[me()], NOW - 7200, 7100));
    store.set_consensus(consensus_for(&relays, NOW - 3600, 3 * 3600));
    let (d, _) = descriptor(n, 1, NOW);
    assert_eq!(store.put_at(&d, NOW, &ctx()).status, DirStatus::Refused);
    // A moment earlier it was live, and counted.
    let (d, _) = descriptor(n, 1, NOW - 200);
    assert_eq!(store.put_at(&d, NOW - 200, &ctx()).status, DirStatus::Ok);
    // One that expired before the newest began is not even kept.
    let store = HsDirStore::default();
    store.set_consensus(consensus_for(&relays, NOW - 3600, 3 * 3600));
    store.set_consensus(consensus_for(&[me()], NOW - 7200, 3600));
    assert_eq!(lock(&store.views).len(), 1);
}

#[test]
fn a_newer_consensus_within_the_slack_is_accepted() {
    // The service's consensus is newer than the relay's: two relays lost Stable (or
    // left) in between, which moves me into the service's set while the relay's own
    // ring places me just beyond `spread`.
    let relays = twenty();
    let ring = ring_of(&relays);
    let me_id = me().public();
    let (n, newer) = (1..=255u8)
        .filter(|&n| {
            let b = blinded_of(n);
            !ring.is_responsible(&b, me_id) && ring.accepts(&b, me_id)
        })
        .find_map(|n| {
            let b = blinded_of(n);
            let chosen = ring.responsible(&b);
            // Drop one or two of the chosen relays: the newer consensus's view.
            let pairs = chosen
                .iter()
                .enumerate()
                .flat_map(|(i, x)| chosen.iter().skip(i).map(move |y| [*x, *y]));
            pairs
                .map(|gone| {
                    let left: Vec<u8> = twenty_numbers()
                        .into_iter()
                        .filter(|&m| !gone.contains(&key(m).public().into()))
                        .collect();
                    keys(&left)
                })
                .find(|newer| ring_of(newer).is_responsible(&b, me_id))
                .map(|newer| (n, newer))
        })
        .unwrap();
    assert!(newer.len() >= relays.len() - 2);
    let store = HsDirStore::default();
    store.set_consensus(consensus(&relays));
    let (d, _) = descriptor(n, 1, NOW);
    assert_eq!(store.put_at(&d, NOW, &ctx()).status, DirStatus::Ok);
}

#[test]
fn a_relay_not_yet_eligible_in_its_consensus_accepts_its_keys() {
    // The relay just gained Stable: the service's consensus lists it, the relay's own
    // (older) one does not. Keys the service's ring gives it are accepted.
    let relays = twenty();
    let n = service_where(&relays, true);
    let others = keys(&twenty_numbers()[1..]);
    let store = HsDirStore::default();
    store.set_consensus(consensus(&others));
    let (d, _) = descriptor(n, 1, NOW);
    assert_eq!(store.put_at(&d, NOW, &ctx()).status, DirStatus::Ok);
    // Keys far from it are still refused.
    let far = (1..=255u8)
        .find(|&m| !ring_of(&relays).accepts(&blinded_of(m), me().public()))
        .unwrap();
    let (d, _) = descriptor(far, 1, NOW);
    assert_eq!(store.put_at(&d, NOW, &ctx()).status, DirStatus::Refused);
}

#[test]
fn a_busy_relay_does_not_spend_the_circuits_upload_budget() {
    let store = store_with(HsDirLimits {
        puts_per_second: 0,
        put_burst: 1,
        circuit_puts_per_second: 0,
        circuit_put_burst: 2,
        ..HsDirLimits::default()
    });
    let circuit = ctx();
    // The relay-wide budget (1) is used by another circuit.
    assert_eq!(
        store.put_at(&descriptor(13, 1, NOW).0, NOW, &ctx()).status,
        DirStatus::Ok
    );
    // This circuit is refused relay-wide, repeatedly, and keeps its own two tokens.
    for rev in 2..6 {
        let r = store.put_at(&descriptor(13, rev, NOW).0, NOW, &circuit);
        assert_eq!(r.status, DirStatus::Busy);
        assert!(!r.reason().contains("circuit"), "{}", r.reason());
    }
    let bucket = circuit.circuit.upload_bucket(0, 2);
    assert!(bucket.try_take());
    assert!(bucket.try_take());
    assert!(!bucket.try_take());
}

#[test]
fn no_consensus_means_no_uploads() {
    let store = HsDirStore::default();
    let (d, k) = descriptor(10, 1, NOW);
    let r = store.put_at(&d, NOW, &ctx());
    assert_eq!(r.status, DirStatus::Busy);
    assert!(r.reason().contains("no consensus"), "{}", r.reason());
    assert!(!store.has_consensus(NOW));
    // An expired consensus is no consensus.
    store.set_consensus(consensus(&[me()]));
    assert!(store.has_consensus(NOW));
    let after = NOW - 3600 + 3 * 86_400;
    assert!(!store.has_consensus(after));
    assert_eq!(store.get_at(&k, NOW).status, DirStatus::NotFound);
}

#[test]
fn a_period_too_far_off_is_refused() {
    let store = store();
    let length = PeriodParams::default().length;
    // Created (and so valid) now, but blinded for a period two away.
    let current = PeriodParams::default().period_at(NOW).unwrap();
    for number in [current.number + 2, current.number - 2] {
        let (d, _) = descriptor_for(11, 1, NOW, TimePeriod { length, number });
        let r = store.put_at(&d, NOW, &ctx());
        assert_eq!(r.status, DirStatus::Refused);
        assert!(r.reason().contains("period"), "{}", r.reason());
    }
    // One either side is served.
    for number in [current.number + 1, current.number - 1] {
        let (d, _) = descriptor_for(11, 1, NOW, TimePeriod { length, number });
        assert_eq!(store.put_at(&d, NOW, &ctx()).status, DirStatus::Ok);
    }
    assert_eq!(store.len(), 2);
    // Another period length is not.
    let other = TimePeriod {
        length: length / 2,
        number: NOW / (length / 2),
    };
    let (d, _) = descriptor_for(11, 1, NOW, other);
    assert_eq!(store.put_at(&d, NOW, &ctx()).status, DirStatus::Refused);
}

#[test]
fn one_circuit_cannot_take_the_relay_wide_upload_budget() {
    let store = store_with(HsDirLimits {
        circuit_puts_per_second: 0,
        circuit_put_burst: 2,
        ..HsDirLimits::default()
    });
    let circuit = ctx();
    let statuses: Vec<DirStatus> = (0..4)
        .map(|rev| {
            store
                .put_at(&descriptor(12, rev, NOW).0, NOW, &circuit)
                .status
        })
        .collect();
    assert_eq!(
        statuses,
        [
            DirStatus::Ok,
            DirStatus::Ok,
            DirStatus::Busy,
            DirStatus::Busy
        ]
    );
    // Another circuit still has its own budget (and the relay-wide one is intact).
    assert_eq!(
        store.put_at(&descriptor(12, 4, NOW).0, NOW, &ctx()).status,
        DirStatus::Ok
    );
    // The two BEGIN_DIR streams of one circuit share its budget.
    let again = circuit.clone();
    assert_eq!(
        store.put_at(&descriptor(12, 5, NOW).0, NOW, &again).status,
        DirStatus::Busy
    );
}
