//! The synthetic network `allium bench dir` runs (`super::dir`): relays with signed
//! descriptors that churn from hour to hour as the module comment there describes, and the
//! votes three authorities build over them.

use crate::crypto::{IdentityKeypair, OnionKeyCert, OnionKeypair};
use crate::dir::descriptor::SignedDescriptor;
use crate::dir::{Descriptor, ExitPolicy, RelayFlags, VoteBody, VoteEntry};

pub(super) const HOUR: u64 = 3600;
/// The first period's start (an hour boundary).
pub(super) const START: u64 = 1_700_002_800;
pub(super) const AUTHORITIES: u64 = 3;

/// A deterministic generator (splitmix64): the same network for every run.
struct Mix(u64);

impl Mix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `num / den`.
    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
}

fn seed(n: u64, tag: u8) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&n.to_be_bytes());
    s[8] = tag;
    s
}

pub(super) fn authority_key(i: u64) -> IdentityKeypair {
    IdentityKeypair::from_secret_bytes(&seed(1_000_000_000 + i, 0xA1))
}

/// One synthetic relay.
struct SimRelay {
    key: IdentityKeypair,
    serial: u64,
    onion_generation: u64,
    descriptor: Descriptor,
    signed: SignedDescriptor,
    flags: RelayFlags,
    /// Each authority's last measurement.
    measured: [Option<u64>; AUTHORITIES as usize],
    true_bandwidth: u64,
    /// Hour offset of this relay's daily re-measurement.
    slot: u64,
    joined: u64,
}

impl SimRelay {
    fn new(serial: u64, now: u64, rng: &mut Mix) -> Result<Self, String> {
        let key = IdentityKeypair::from_secret_bytes(&seed(serial, 0xA1));
        let exit = rng.chance(1, 5);
        let ip = std::net::Ipv4Addr::from(0x1400_0000u32 + (rng.next_u64() as u32 & 0x3fff_ffff));
        // Relay capacities span three orders of magnitude, as in Tor.
        let true_bandwidth = 50_000u64 << rng.below(11);
        let onion = OnionKeypair::from_secret_bytes(&seed(serial << 16, 0xB2));
        let descriptor = Descriptor {
            identity: key.public(),
            onion_cert: OnionKeyCert::sign(&key, onion.public(), now + 28 * 24 * HOUR),
            addrs: vec![std::net::SocketAddr::from((ip, 9001))],
            exit,
            exit_policy: if exit {
                ExitPolicy::default_exit()
            } else {
                ExitPolicy::reject_all()
            },
            // UDP is opt-in: the simulated exits, like a fresh network's, carry none.
            udp_policy: ExitPolicy::reject_all(),
            bandwidth: true_bandwidth * 2,
            family: Vec::new(),
            version: "allium 0.1.0".into(),
            published: now.saturating_sub(rng.below(18 * HOUR)),
        };
        let signed = descriptor.sign(&key).map_err(|e| e.to_string())?;
        let mut flags = RelayFlags::RUNNING.union(RelayFlags::VALID);
        flags.set(RelayFlags::EXIT, exit);
        flags.set(RelayFlags::FAST, rng.chance(9, 10));
        let guard = rng.chance(1, 3);
        flags.set(RelayFlags::GUARD, guard);
        flags.set(RelayFlags::STABLE, guard || rng.chance(1, 3));
        Ok(SimRelay {
            key,
            serial,
            onion_generation: 0,
            descriptor,
            signed,
            flags,
            measured: [None; AUTHORITIES as usize],
            true_bandwidth,
            slot: rng.below(24),
            joined: now,
        })
    }

    fn resign(&mut self, now: u64) -> Result<(), String> {
        self.descriptor.published = now;
        self.signed = self.descriptor.sign(&self.key).map_err(|e| e.to_string())?;
        Ok(())
    }

    fn rotate_onion_key(&mut self, now: u64) -> Result<(), String> {
        self.onion_generation += 1;
        let onion = OnionKeypair::from_secret_bytes(&seed(
            (self.serial << 16) + self.onion_generation,
            0xB2,
        ));
        self.descriptor.onion_cert =
            OnionKeyCert::sign(&self.key, onion.public(), now + 28 * 24 * HOUR);
        self.resign(now)
    }

    /// Authority `a`'s measurement at hour `h`: daily, at the relay's slot (shifted per
    /// authority), with ±10 % noise; new relays are measured from their second hour on.
    fn remeasure(&mut self, a: usize, h: u64, now: u64, rng: &mut Mix) {
        let due = (self.slot + 8 * a as u64) % 24 == h % 24;
        let first = self.measured.get(a).is_some_and(|m| m.is_none()) && now >= self.joined + HOUR;
        if due || first {
            let noise = 90 + rng.below(21);
            if let Some(m) = self.measured.get_mut(a) {
                *m = Some(self.true_bandwidth * noise / 100);
            }
        }
    }
}

/// The synthetic network and its churn.
pub(super) struct SimNetwork {
    relays: Vec<SimRelay>,
    next_serial: u64,
    rng: Mix,
}

impl SimNetwork {
    pub(super) fn new(n: usize) -> Result<Self, String> {
        let mut rng = Mix(0x5eed);
        let relays = (0..n as u64)
            .map(|i| SimRelay::new(i, START - HOUR, &mut rng))
            .collect::<Result<Vec<_>, _>>()?;
        let mut net = SimNetwork {
            relays,
            next_serial: n as u64,
            rng,
        };
        for r in &mut net.relays {
            r.joined = START - 2 * HOUR;
        }
        Ok(net)
    }

    /// One hour of churn before the period starting at `now` (hour `h`).
    pub(super) fn churn(&mut self, h: u64, now: u64) -> Result<(), String> {
        let n = self.relays.len() as u64;
        let rng = &mut self.rng;
        if h > 0 {
            // 1 % leave, as many join.
            let leave = (n / 100).max(1);
            for _ in 0..leave {
                let i = rng.below(self.relays.len() as u64) as usize;
                if i < self.relays.len() {
                    self.relays.swap_remove(i);
                }
            }
            for _ in 0..leave {
                let r = SimRelay::new(self.next_serial, now - HOUR / 2, rng)?;
                self.next_serial += 1;
                self.relays.push(r);
            }
            for r in &mut self.relays {
                if rng.chance(1, 168) {
                    r.rotate_onion_key(now - HOUR / 2)?;
                } else if r.descriptor.published + 18 * HOUR < now {
                    r.resign(now - rng.below(HOUR))?;
                }
                if rng.chance(2, 100) {
                    let flag = match rng.below(3) {
                        0 => RelayFlags::STABLE,
                        1 => RelayFlags::GUARD,
                        _ => RelayFlags::FAST,
                    };
                    let has = r.flags.contains(flag);
                    r.flags.set(flag, !has);
                }
            }
        }
        for r in &mut self.relays {
            for a in 0..AUTHORITIES as usize {
                r.remeasure(a, h, now, rng);
            }
        }
        Ok(())
    }

    /// Authority `a`'s vote body for the period starting at `va`.
    pub(super) fn vote(&self, a: usize, va: u64) -> VoteBody {
        VoteBody {
            authority: authority_key(a as u64).public(),
            valid_after: va,
            fresh_until: va + HOUR,
            valid_until: va + 3 * HOUR,
            entries: self
                .relays
                .iter()
                .map(|r| VoteEntry {
                    descriptor: r.signed.clone(),
                    flags: r.flags,
                    measured: r.measured.get(a).copied().flatten(),
                    uptime: va.saturating_sub(r.joined),
                })
                .collect(),
        }
    }
}
