//! From what the authority knows of each relay to the entries of its vote: which relays it
//! lists, the bandwidth it measured, and the flags it assigns (docs/protocol.md §6.6).
//!
//! * Listed: reached recently (a link handshake proving the identity at the advertised
//!   address) and not on the reject list.
//! * Running and Valid are earned: reached, not failing too many probes
//!   ([`Reputation::loses_running`]) and within the Sybil limits. Relays beyond the limits
//!   are admitted in order of measured bandwidth, then uptime, then identity.
//! * Fast, Stable, Guard and Exit by [`assign_flags`] on the *effective* bandwidth: the
//!   measured figure capped by the declaration, or [`UNMEASURED_BANDWIDTH`] while
//!   unmeasured, so a declaration alone earns nothing. Probe failures cost Stable and Guard
//!   ([`Reputation::loses_stable`]); exit checks set BadExit ([`Reputation::bad_exit`]).

use std::collections::BTreeMap;

use crate::crypto::IdentityPublic;
use crate::dir::compute::UNMEASURED_BANDWIDTH;
use crate::dir::sybil::{self, SybilLimits};
use crate::dir::{
    assign_flags, Descriptor, FlagParams, FlagThresholds, Observation, RelayFlags,
    SignedDescriptor, VoteEntry,
};

use super::reject_list::RejectList;
use super::reputation::Reputation;

/// What the authority knows about one relay.
#[derive(Debug)]
pub(super) struct Known {
    pub(super) signed: SignedDescriptor,
    pub(super) descriptor: Descriptor,
    /// Since when the relay has been continuously reachable.
    pub(super) running_since: Option<u64>,
    /// Last successful reachability check.
    pub(super) last_reachable: Option<u64>,
    /// Our probes' findings.
    pub(super) reputation: Reputation,
}

impl Known {
    /// Whether the authority reached the relay within the last two periods: the relays it
    /// lists, and so the ones it probes.
    pub(super) fn reached_recently(&self, now: u64, period: u64) -> bool {
        self.last_reachable
            .is_some_and(|t| t.saturating_add(2 * period) >= now)
    }
}

/// The rules' inputs besides the relays.
#[derive(Debug, Clone, Copy)]
pub(super) struct VoteRules<'a> {
    pub(super) now: u64,
    pub(super) period: u64,
    pub(super) flags: &'a FlagParams,
    pub(super) sybil: SybilLimits,
    pub(super) reject: &'a RejectList,
    /// Measurements older than this are not voted.
    pub(super) measurement_max_age: u64,
}

/// One relay being voted on.
struct Candidate<'a> {
    known: &'a Known,
    measured: Option<u64>,
    effective: u64,
    uptime: u64,
    usable: bool,
}

/// The entries of our vote (sorted later by [`crate::dir::VoteBody::sign`]).
pub(super) fn vote_entries(
    relays: &BTreeMap<IdentityPublic, Known>,
    rules: &VoteRules<'_>,
) -> Vec<VoteEntry> {
    let now = rules.now;
    let mut candidates: Vec<Candidate<'_>> = relays
        .iter()
        .filter(|(_, k)| k.reached_recently(now, rules.period))
        .filter(|(id, k)| !rules.reject.rejects(id, &k.descriptor.addrs))
        .map(|(_, k)| {
            let declared = k.descriptor.bandwidth;
            let measured = k
                .reputation
                .measured_bandwidth(now, rules.measurement_max_age);
            Candidate {
                known: k,
                measured,
                effective: measured.unwrap_or(UNMEASURED_BANDWIDTH).min(declared),
                uptime: k.running_since.map_or(0, |s| now.saturating_sub(s)),
                usable: !k.reputation.loses_running(),
            }
        })
        .collect();

    // Sybil limits over the healthy relays, best first (the BTreeMap gave identity order,
    // and the sort is stable, so identity breaks ties).
    candidates.sort_by(|a, b| {
        b.usable
            .cmp(&a.usable)
            .then(b.effective.cmp(&a.effective))
            .then(b.uptime.cmp(&a.uptime))
    });
    // Only the preferred address, the one the authority reached the relay at: the others
    // are unverified, and counting them would let a relay fill another's limit.
    let addrs: Vec<&[std::net::SocketAddr]> = candidates
        .iter()
        .map(|c| c.known.descriptor.addrs.get(..1).unwrap_or_default())
        .collect();
    let admitted = sybil::admit(&addrs, rules.sybil);
    for (c, ok) in candidates.iter_mut().zip(admitted) {
        c.usable &= ok;
    }

    let bandwidths: Vec<u64> = candidates
        .iter()
        .filter(|c| c.usable)
        .map(|c| c.effective)
        .collect();
    let thresholds = FlagThresholds::compute(rules.flags, &bandwidths);
    candidates
        .iter()
        .map(|c| {
            let obs = Observation {
                descriptor: &c.known.descriptor,
                reachable: c.usable,
                valid: c.usable,
                bandwidth: c.effective,
                uptime: c.uptime,
            };
            let mut flags = assign_flags(&obs, rules.flags, &thresholds);
            if c.known.reputation.loses_stable() {
                flags.set(RelayFlags::STABLE.union(RelayFlags::GUARD), false);
            }
            if flags.contains(RelayFlags::EXIT) && c.known.reputation.bad_exit() {
                flags.set(RelayFlags::BAD_EXIT, true);
            }
            VoteEntry {
                descriptor: c.known.signed.clone(),
                flags,
                measured: c.measured,
                uptime: c.uptime,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::dir::sybil::SybilLimits;
    use crate::dir::{ExitPolicy, UncheckedDescriptor};
    use crate::relay::RelayKeys;
    use std::net::SocketAddr;
    use std::time::{Duration, UNIX_EPOCH};

    const NOW: u64 = 1_800_000_000;

    fn known(addrs: &[&str], measured: Option<u64>) -> (IdentityPublic, Known) {
        let clock = Clock::simulated(UNIX_EPOCH + Duration::from_secs(NOW));
        let keys = RelayKeys::generate(&clock);
        let d = Descriptor {
            identity: keys.identity(),
            onion_cert: keys.onion_cert(),
            addrs: addrs
                .iter()
                .map(|a| a.parse::<SocketAddr>().unwrap())
                .collect(),
            exit: false,
            exit_policy: ExitPolicy::reject_all(),
            udp_policy: ExitPolicy::reject_all(),
            bandwidth: 10_000_000,
            family: Vec::new(),
            version: "test".into(),
            published: NOW,
        };
        let signed = d.sign(keys.identity_keypair()).unwrap();
        let descriptor = UncheckedDescriptor::parse(&signed.to_bytes().unwrap())
            .unwrap()
            .verify(NOW, 300)
            .unwrap();
        let mut reputation = Reputation::default();
        if let Some(bw) = measured {
            reputation.measured(NOW, bw);
        }
        let k = Known {
            signed,
            descriptor,
            running_since: Some(NOW - 100),
            last_reachable: Some(NOW),
            reputation,
        };
        (keys.identity(), k)
    }

    fn usable(entries: &[VoteEntry], id: &IdentityPublic) -> bool {
        entries.iter().any(|e| {
            e.descriptor
                .parse_body()
                .is_ok_and(|u| u.claimed_identity() == id)
                && e.flags
                    .contains(RelayFlags::RUNNING.union(RelayFlags::VALID))
        })
    }

    fn vote(relays: &BTreeMap<IdentityPublic, Known>) -> Vec<VoteEntry> {
        vote_entries(
            relays,
            &VoteRules {
                now: NOW,
                period: 3600,
                flags: &FlagParams::default(),
                sybil: SybilLimits::default(),
                reject: &RejectList::default(),
                measurement_max_age: 86_400,
            },
        )
    }

    /// The attacker lists a victim's address after its own, on two relays ranked above the
    /// victim (measured faster): the victim's address must not fill up.
    #[test]
    fn a_relay_cannot_use_up_a_victims_address_by_listing_it() {
        let (victim, v) = known(&["198.51.100.7:9001"], Some(1_000_000));
        let (a1, k1) = known(&["203.0.113.1:9001", "198.51.100.7:9002"], Some(9_000_000));
        let (a2, k2) = known(&["203.0.113.2:9001", "198.51.100.7:9003"], Some(9_000_000));
        let relays: BTreeMap<_, _> = [(victim, v), (a1, k1), (a2, k2)].into_iter().collect();
        let entries = vote(&relays);
        assert!(usable(&entries, &victim));
        assert!(usable(&entries, &a1) && usable(&entries, &a2));
    }

    /// Three relays on one address: the two measured fastest are the usable ones, and a
    /// declaration alone buys no measured figure.
    #[test]
    fn the_fastest_measured_relays_of_an_address_are_usable() {
        let (slow, s) = known(&["198.51.100.9:1"], Some(100_000));
        let (fast1, f1) = known(&["198.51.100.9:2"], Some(5_000_000));
        let (fast2, f2) = known(&["198.51.100.9:3"], Some(4_000_000));
        let relays: BTreeMap<_, _> = [(slow, s), (fast1, f1), (fast2, f2)].into_iter().collect();
        let entries = vote(&relays);
        assert!(usable(&entries, &fast1) && usable(&entries, &fast2));
        assert!(!usable(&entries, &slow));
        assert!(entries.iter().all(|e| e.measured.is_some()));
    }
}
