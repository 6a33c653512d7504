//! Shared fixtures for the `dir_*` integration tests (`common::dir`).
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use allium::crypto::{IdentityKeypair, IdentityPublic, OnionKeyCert, OnionKeypair, RelayId};
use allium::dir::consensus::CONSENSUS_VERSION;
use allium::dir::{
    BandwidthWeights, Consensus, ConsensusBody, ConsensusEntry, Descriptor, ExitPolicy, RelayFlags,
    UncheckedConsensus,
};

/// The fixed "now" of the tests.
pub const NOW: u64 = 1_700_000_000;
/// One hour.
pub const HOUR: u64 = 3600;

/// A deterministic identity key from a number.
pub fn key(n: u64) -> IdentityKeypair {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&n.to_be_bytes());
    seed[8] = 0xA1;
    IdentityKeypair::from_secret_bytes(&seed)
}

/// A deterministic onion key.
pub fn onion(n: u64) -> OnionKeypair {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&n.to_be_bytes());
    seed[8] = 0xB2;
    OnionKeypair::from_secret_bytes(&seed)
}

/// A valid descriptor for relay `n`, published at `NOW - 60`.
pub fn descriptor(n: u64, exit: bool) -> (IdentityKeypair, Descriptor) {
    let id = key(n);
    let cert = OnionKeyCert::sign(&id, onion(n).public(), NOW + 28 * 24 * HOUR);
    let octets = (n as u32).to_be_bytes();
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(11, octets[2], octets[3], 1)), 9001);
    let d = Descriptor {
        identity: id.public(),
        onion_cert: cert,
        addrs: vec![addr],
        exit,
        exit_policy: if exit {
            ExitPolicy::default_exit()
        } else {
            ExitPolicy::reject_all()
        },
        udp_policy: ExitPolicy::reject_all(),
        bandwidth: 1_000_000 + n * 1000,
        family: Vec::new(),
        version: "allium 0.1.0".into(),
        published: NOW - 60,
    };
    (id, d)
}

/// `n` authority keys.
pub fn authorities(n: u64) -> Vec<IdentityKeypair> {
    (0..n).map(|i| key(1_000_000 + i)).collect()
}

/// Public halves.
pub fn publics(keys: &[IdentityKeypair]) -> Vec<IdentityPublic> {
    keys.iter().map(|k| k.public()).collect()
}

/// A tiny deterministic generator for fixtures (splitmix64).
pub struct Mix(pub u64);
impl Mix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A synthetic network of `n` relays: ~1/4 exits, ~1/3 guards, relays spread over
/// `n / 4` IPv4 /16s (so subnet conflicts occur), families of 2–3 relays (some declared
/// one-sidedly), bandwidths spread over two orders of magnitude. Signed by 3 authorities
/// and verified.
pub fn synthetic_consensus(n: u64) -> (Consensus, Vec<IdentityKeypair>) {
    let mut rng = Mix(42);
    let subnets = (n / 4).max(1);
    let mut relays: Vec<ConsensusEntry> = (0..n)
        .map(|i| {
            let id = key(i);
            let sub = rng.below(subnets) as u16;
            let addr = SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(
                    20 + (sub >> 8) as u8,
                    sub as u8,
                    rng.below(256) as u8,
                    (1 + rng.below(250)) as u8,
                )),
                9001,
            );
            let exit = rng.below(4) == 0;
            let guard = rng.below(3) == 0;
            let mut flags = RelayFlags::RUNNING
                .union(RelayFlags::VALID)
                .union(RelayFlags::FAST);
            flags.set(RelayFlags::EXIT, exit);
            flags.set(RelayFlags::GUARD, guard);
            flags.set(RelayFlags::STABLE, guard);
            // A few relays not Running or not Valid, which must never be chosen.
            if rng.below(50) == 0 {
                flags.set(RelayFlags::RUNNING, false);
            } else if rng.below(50) == 0 {
                flags.set(RelayFlags::VALID, false);
            }
            let exit_policy = if !exit {
                ExitPolicy::reject_all()
            } else if rng.below(3) == 0 {
                // Web-only exits.
                "accept *:80, accept *:443".parse().unwrap()
            } else {
                ExitPolicy::default_exit()
            };
            ConsensusEntry {
                identity: id.public().into(),
                onion_cert: OnionKeyCert::sign(&id, onion(i).public(), NOW + 28 * 24 * HOUR),
                addrs: vec![addr],
                flags,
                bandwidth: 10_000 * (1 + rng.below(100)),
                measured: true,
                exit_policy,
                udp_policy: ExitPolicy::reject_all(),
                family: Vec::new(),
            }
        })
        .collect();
    // Families: groups of consecutive relays (by index); every 3rd group declares only
    // one way (first member names the others).
    let ids: Vec<RelayId> = relays.iter().map(|r| r.identity).collect();
    let mut i = 0usize;
    let mut group = 0usize;
    while i + 3 <= ids.len() {
        let size = 2 + (group % 2);
        let members: Vec<usize> = (i..i + size).collect();
        for &m in &members {
            if group % 3 == 2 && m != i {
                continue;
            }
            let mut fam: Vec<RelayId> = members
                .iter()
                .filter(|&&o| o != m)
                .map(|&o| ids[o])
                .collect();
            fam.sort();
            relays[m].family = fam;
        }
        i += size + 5;
        group += 1;
    }
    relays.sort_by_key(|r| r.identity);
    let auths = authorities(3);
    (consensus_of(&relays, &auths), auths)
}

/// The consensus listing `relays` (sorted by identity), valid at [`NOW`], signed by
/// `auths`, as a client holds it: parsed, verified and assembled with the microdescriptors.
pub fn consensus_of(relays: &[ConsensusEntry], auths: &[IdentityKeypair]) -> Consensus {
    let mut auth_ids = publics(auths);
    auth_ids.sort();
    let weights = BandwidthWeights::compute(relays.iter().map(|r| (r.flags, r.bandwidth)));
    let (listed, mds) = allium::dir::split_entries(relays).unwrap();
    let body = ConsensusBody {
        version: CONSENSUS_VERSION,
        valid_after: NOW - HOUR,
        fresh_until: NOW + HOUR,
        valid_until: NOW + 3 * HOUR,
        authorities: auth_ids,
        relays: listed,
        weights,
    };
    let mut signed = body.to_signed().unwrap();
    for a in auths {
        signed.sign(a);
    }
    let bytes = signed.to_bytes().unwrap();
    UncheckedConsensus::parse(&bytes)
        .unwrap()
        .verify(&publics(auths), NOW)
        .unwrap()
        .assemble_from(&mds)
}

/// The consensus of the next period after `c`, signed by `auths`: the relays at the
/// positions in `removed` dropped, those in `flipped` with their Stable flag toggled and
/// bandwidth doubled, and relays `added` (numbers for [`key`], ≥ 1,000,000,000 to stay
/// apart from the synthetic ones) listed. Valid from an hour after `c`.
pub fn next_period(
    c: &Consensus,
    auths: &[IdentityKeypair],
    removed: &[usize],
    flipped: &[usize],
    added: &[u64],
) -> Consensus {
    let mut body = c.body().clone();
    let mut mds = c.microdescs();
    for &i in flipped {
        if let Some(r) = body.relays.get_mut(i) {
            let has = r.flags.contains(RelayFlags::STABLE);
            r.flags.set(RelayFlags::STABLE, !has);
            r.bandwidth = r.bandwidth * 2 + 1;
        }
    }
    let mut i = 0usize;
    body.relays.retain(|_| {
        i += 1;
        !removed.contains(&(i - 1))
    });
    for &n in added {
        let (_, d) = descriptor(n, n % 2 == 0);
        if body.relays.iter().any(|r| r.identity == d.identity) {
            continue;
        }
        let (listed, md) = ConsensusEntry {
            identity: d.identity.into(),
            onion_cert: d.onion_cert,
            addrs: d.addrs,
            flags: RelayFlags::RUNNING.union(RelayFlags::VALID),
            bandwidth: 20_000,
            measured: false,
            exit_policy: d.exit_policy,
            udp_policy: d.udp_policy,
            family: Vec::new(),
        }
        .split()
        .unwrap();
        mds.insert(md).unwrap();
        body.relays.push(listed);
    }
    body.relays.sort_by_key(|r| r.identity);
    body.valid_after += HOUR;
    body.fresh_until += HOUR;
    body.valid_until += HOUR;
    body.weights = BandwidthWeights::compute(body.relays.iter().map(|r| (r.flags, r.bandwidth)));
    let mut signed = body.to_signed().unwrap();
    for a in auths {
        signed.sign(a);
    }
    UncheckedConsensus::parse(&signed.to_bytes().unwrap())
        .unwrap()
        .verify(&publics(auths), body.valid_after)
        .unwrap()
        .assemble_from(&mds)
}
