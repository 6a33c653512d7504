//! Onion-service keys: addresses (typo detection), per-period blinded keys, the HSDir hash
//! ring and the client puzzle. Pure computation; figures print with `--nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::collections::{BTreeSet, HashMap};

use allium::crypto::{IdentityKeypair, OnionKeyCert, OnionKeypair};
use allium::dir::{ConsensusEntry, ExitPolicy, RelayFlags};
use allium::onion::address::{AddressError, ADDRESS_BASE32_LEN, ADDRESS_LEN};
use allium::onion::blinding::{BlindingError, DEFAULT_PERIOD_LENGTH, DEFAULT_PERIOD_OFFSET};
use allium::onion::hashring::{responsible_hsdirs, HsDirParams};
use allium::onion::pow;
use allium::onion::{BlindedKeypair, BlindedPublic, OnionAddress, PeriodParams, TimePeriod};
use proptest::prelude::*;

fn service(n: u8) -> IdentityKeypair {
    let mut seed = [0u8; 32];
    seed[0] = n;
    seed[1] = 0x5a;
    IdentityKeypair::from_secret_bytes(&seed)
}

fn address(kp: &IdentityKeypair) -> OnionAddress {
    OnionAddress::from_identity(kp.public()).unwrap()
}

const PERIOD: TimePeriod = TimePeriod {
    length: DEFAULT_PERIOD_LENGTH,
    number: 20_000,
};

#[test]
fn address_round_trip_and_format() {
    let a = address(&service(1));
    let s = a.to_string();
    assert_eq!(s.len(), ADDRESS_LEN);
    assert!(s.ends_with(".allium"));
    assert!(s[..ADDRESS_BASE32_LEN]
        .bytes()
        .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)));
    assert_eq!(s.parse::<OnionAddress>().unwrap(), a);
    assert_eq!(s.to_uppercase().parse::<OnionAddress>().unwrap(), a);
    assert_eq!(a.identity(), &service(1).public());
}

/// Every single-character substitution in a sample of addresses: the checksum (or the key
/// check) must catch at least 99.9% of them; a 16-bit checksum misses about 1 in 65,536.
#[test]
fn address_typos_are_caught() {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let (mut total, mut caught, mut by_checksum) = (0u64, 0u64, 0u64);
    for n in 0..24u8 {
        let s = address(&service(n)).to_string();
        for pos in 0..ADDRESS_BASE32_LEN {
            for &c in ALPHABET {
                if s.as_bytes()[pos] == c {
                    continue;
                }
                let mut typo = s.clone().into_bytes();
                typo[pos] = c;
                let typo = String::from_utf8(typo).unwrap();
                total += 1;
                match typo.parse::<OnionAddress>() {
                    Ok(_) => {}
                    Err(AddressError::ChecksumMismatch) => {
                        caught += 1;
                        by_checksum += 1;
                    }
                    Err(_) => caught += 1,
                }
            }
        }
    }
    let fraction = caught as f64 / total as f64;
    println!(
        "address typos: {caught}/{total} single-character substitutions caught ({:.4}%), {by_checksum} by the checksum",
        fraction * 100.0
    );
    assert!(fraction >= 0.999, "only {fraction} of typos caught");
}

/// A key with a small-order component added (not small order itself, so a plain identity
/// key check passes) is refused as a service key: blinding it would not give a point of
/// prime order.
#[test]
fn address_refuses_keys_with_torsion() {
    use curve25519_dalek::constants::EIGHT_TORSION;
    use curve25519_dalek::edwards::CompressedEdwardsY;
    let a = CompressedEdwardsY(*service(9).public().as_bytes())
        .decompress()
        .unwrap();
    let torsioned = (a + EIGHT_TORSION[1]).compress().to_bytes();
    let key = allium::crypto::IdentityPublic::from_bytes(&torsioned).unwrap();
    assert_eq!(
        OnionAddress::from_identity(key),
        Err(AddressError::InvalidKey)
    );
    assert!(OnionAddress::from_identity(service(9).public()).is_ok());
}

#[test]
fn address_refuses_wrong_suffix_length_and_characters() {
    let s = address(&service(2)).to_string();
    let body = &s[..ADDRESS_BASE32_LEN];
    assert_eq!(
        format!("{body}.onion").parse::<OnionAddress>(),
        Err(AddressError::MissingSuffix)
    );
    assert_eq!(
        format!("{}.allium", &body[1..]).parse::<OnionAddress>(),
        Err(AddressError::BadLength(55))
    );
    assert_eq!(
        format!("{}8.allium", &body[1..]).parse::<OnionAddress>(),
        Err(AddressError::BadCharacter('8'))
    );
    assert_eq!(
        format!("{}=.allium", &body[1..]).parse::<OnionAddress>(),
        Err(AddressError::BadCharacter('='))
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary text never panics the parser, and anything accepted prints back the same
    /// (lowercased).
    #[test]
    fn address_parser_is_total(s in "[a-z2-7A-Z=.]{0,70}") {
        if let Ok(a) = s.parse::<OnionAddress>() {
            prop_assert_eq!(a.to_string(), s.to_ascii_lowercase());
        }
    }

    /// Every valid key round-trips through its address.
    #[test]
    fn address_round_trips_for_any_key(seed in any::<[u8; 32]>()) {
        let a = OnionAddress::from_identity(IdentityKeypair::from_secret_bytes(&seed).public()).unwrap();
        prop_assert_eq!(a.to_string().parse::<OnionAddress>().unwrap(), a);
    }
}

#[test]
fn blinded_key_signs_and_verifies_under_public_derivation() {
    let kp = service(3);
    let blinded = BlindedKeypair::derive(&kp, PERIOD).unwrap();
    let derived = BlindedPublic::derive(&address(&kp), PERIOD).unwrap();
    assert_eq!(
        blinded.public(),
        &derived,
        "client and service derive the same A'"
    );
    assert_ne!(derived.as_bytes(), kp.public().as_bytes());
    let sig = blinded.sign(b"message");
    derived.verify(b"message", &sig).unwrap();
    assert!(derived.verify(b"messagf", &sig).is_err());
    // A signature by the unblinded key does not verify under A'.
    let plain = kp.sign(b"message");
    assert!(derived.verify(b"message", &plain).is_err());
    // A signature by A' does not verify under A either.
    assert!(kp.public().verify(b"message", &sig).is_err());
    // Signatures are deterministic (RFC 8032 style nonce from prefix').
    assert_eq!(blinded.sign(b"message"), sig);
}

#[test]
fn blinded_keys_differ_per_period_and_service() {
    let mut seen = BTreeSet::new();
    for n in 0..4u8 {
        let a = address(&service(n));
        for number in 0..8u64 {
            for length in [DEFAULT_PERIOD_LENGTH, 3600] {
                let key = BlindedPublic::derive(&a, TimePeriod { length, number }).unwrap();
                assert!(seen.insert(*key.as_bytes()), "a blinded key repeated");
            }
        }
    }
    assert_eq!(seen.len(), 4 * 8 * 2);
}

#[test]
fn signature_from_one_period_does_not_verify_in_the_next() {
    let kp = service(4);
    let now = BlindedKeypair::derive(&kp, PERIOD).unwrap();
    let next = BlindedPublic::derive(
        &address(&kp),
        TimePeriod {
            number: PERIOD.number + 1,
            ..PERIOD
        },
    )
    .unwrap();
    assert!(next.verify(b"x", &now.sign(b"x")).is_err());
}

#[test]
fn period_arithmetic() {
    let p = PeriodParams::default();
    assert_eq!(p.offset, DEFAULT_PERIOD_OFFSET);
    let first = p.period_at(DEFAULT_PERIOD_OFFSET).unwrap();
    assert_eq!(first.number, 0);
    assert_eq!(p.period_at(0).unwrap().number, 0);
    let t = 1_700_000_000;
    let n = p.period_at(t).unwrap().number;
    assert_eq!(n, (t - DEFAULT_PERIOD_OFFSET) / DEFAULT_PERIOD_LENGTH);
    let boundary = DEFAULT_PERIOD_OFFSET + (n + 1) * DEFAULT_PERIOD_LENGTH;
    assert_eq!(p.period_at(boundary - 1).unwrap().number, n);
    assert_eq!(p.period_at(boundary).unwrap().number, n + 1);
    let zero = PeriodParams {
        length: 0,
        offset: 0,
    };
    assert_eq!(zero.period_at(t), Err(BlindingError::ZeroPeriodLength));
}

fn relay(n: u16, flags: RelayFlags) -> ConsensusEntry {
    let mut seed = [0u8; 32];
    seed[..2].copy_from_slice(&n.to_be_bytes());
    seed[2] = 0xee;
    let id = IdentityKeypair::from_secret_bytes(&seed);
    let onion = OnionKeypair::from_secret_bytes(&seed);
    ConsensusEntry {
        identity: id.public().into(),
        onion_cert: OnionKeyCert::sign(&id, onion.public(), u64::MAX),
        addrs: vec![format!("127.0.0.1:{}", 1000 + n).parse().unwrap()],
        flags,
        bandwidth: 1000,
        measured: true,
        exit_policy: ExitPolicy::reject_all(),
        udp_policy: ExitPolicy::reject_all(),
        family: vec![],
    }
}

#[test]
fn hashring_is_deterministic_order_independent_and_flag_filtered() {
    let params = HsDirParams::default();
    let mut relays: Vec<_> = (0..40).map(|n| relay(n, RelayFlags::ALL)).collect();
    // Relays without Stable are never chosen.
    relays.extend((40..60).map(|n| relay(n, RelayFlags::RUNNING.union(RelayFlags::VALID))));
    let unstable: BTreeSet<_> = relays[40..].iter().map(|r| r.identity).collect();
    let kp = service(5);
    // The service derives A' from its secret key, the client from the address.
    let service_view = *BlindedKeypair::derive(&kp, PERIOD).unwrap().public();
    let client_view = BlindedPublic::derive(&address(&kp), PERIOD).unwrap();
    let chosen = responsible_hsdirs(&relays, &service_view, PERIOD, &params);
    assert_eq!(chosen.len(), 6);
    assert_eq!(chosen.iter().collect::<BTreeSet<_>>().len(), 6, "distinct");
    assert!(chosen.iter().all(|id| !unstable.contains(id)));
    let mut shuffled = relays.clone();
    shuffled.reverse();
    shuffled.rotate_left(17);
    assert_eq!(
        responsible_hsdirs(&shuffled, &client_view, PERIOD, &params),
        chosen
    );
    // Another period moves the descriptor elsewhere (with overwhelming probability).
    let next = TimePeriod {
        number: PERIOD.number + 1,
        ..PERIOD
    };
    let later = responsible_hsdirs(
        &relays,
        &BlindedPublic::derive(&address(&kp), next).unwrap(),
        next,
        &params,
    );
    assert_ne!(later, chosen);
}

#[test]
fn hashring_small_networks() {
    let params = HsDirParams::default();
    let key = BlindedPublic::derive(&address(&service(6)), PERIOD).unwrap();
    assert!(responsible_hsdirs(&[], &key, PERIOD, &params).is_empty());
    let four: Vec<_> = (0..4).map(|n| relay(n, RelayFlags::ALL)).collect();
    let chosen = responsible_hsdirs(&four, &key, PERIOD, &params);
    assert_eq!(chosen.len(), 4, "every relay, each once");
    assert_eq!(chosen.iter().collect::<BTreeSet<_>>().len(), 4);
}

/// Over many services, descriptors spread over the relays: every relay holds some, and no
/// relay holds more than half. (Each copy lands on a relay with probability ≈ 6/50 = 12%;
/// a relay after a large gap on the ring gets more, ~30% at most with 50 relays.)
#[test]
fn hashring_spreads_descriptors() {
    let params = HsDirParams::default();
    let relays: Vec<_> = (0..50).map(|n| relay(n, RelayFlags::ALL)).collect();
    let services = 400u32;
    let mut load: HashMap<_, u32> = HashMap::new();
    for n in 0..services {
        let mut seed = [0u8; 32];
        seed[..4].copy_from_slice(&n.to_be_bytes());
        let a = OnionAddress::from_identity(IdentityKeypair::from_secret_bytes(&seed).public())
            .unwrap();
        let key = BlindedPublic::derive(&a, PERIOD).unwrap();
        for id in responsible_hsdirs(&relays, &key, PERIOD, &params) {
            *load.entry(id).or_default() += 1;
        }
    }
    let max = load.values().copied().max().unwrap();
    let min = relays
        .iter()
        .map(|r| load.get(&r.identity).copied().unwrap_or(0))
        .min()
        .unwrap();
    let mean = f64::from(services * 6) / 50.0;
    println!(
        "hash ring: {services} services x 6 copies over 50 relays: per-relay min {min}, mean {mean:.1}, max {max} ({:.1}% of services on the busiest relay)",
        f64::from(max) * 100.0 / f64::from(services)
    );
    assert!(min > 0, "some relay holds no descriptor");
    assert!(
        f64::from(max) < 0.5 * f64::from(services),
        "one relay holds {max} of {services} services"
    );
}

#[test]
fn pow_solves_and_verifies() {
    let key = BlindedPublic::derive(&address(&service(7)), PERIOD).unwrap();
    let (seed, auth, enc, x) = ([7u8; 32], [1u8; 32], [2u8; 32], [9u8; 32]);
    let input = pow::PowInput {
        seed: &seed,
        blinded: &key,
        auth_key: &auth,
        enc_key: &enc,
        client_x: &x,
    };
    let sol = pow::solve(&input, 16, [0u8; 16], 1000, &|| false).unwrap();
    pow::verify(&input, &sol).unwrap();
    // The solution is bound to X, the seed and the introduction point's keys.
    let other = [10u8; 32];
    for changed in [
        pow::PowInput {
            client_x: &other,
            ..input
        },
        pow::PowInput {
            seed: &other,
            ..input
        },
        pow::PowInput {
            enc_key: &other,
            ..input
        },
    ] {
        assert!(pow::verify(&changed, &sol).is_err());
    }
    assert_eq!(
        pow::solve(&input, u32::MAX, [0u8; 16], 3, &|| false),
        Err(pow::PowError::Exhausted)
    );
    // A made-up solution claiming a huge effort is refused.
    let forged = pow::PowSolution {
        nonce: [0x42; 16],
        effort: 1 << 20,
        solution: [0x42; 16],
    };
    assert!(pow::verify(&input, &forged).is_err());
}
