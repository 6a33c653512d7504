//! The bandwidth lie, tried by the attacker with separate processes: ten relays of equal real
//! capacity (each limited to the same `bandwidth_rate`), one of which declares 1 TB/s. Before
//! measurement a declaration bought almost every circuit; now the authority measures each
//! relay through two-hop circuits and the consensus weight is the measurement capped by the
//! declaration. The liar must get about its fair share, and when its real capacity is halved
//! it must get about half.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

mod common;

use std::path::Path;
use std::time::Duration;

use allium::crypto::{IdentityPublic, RelayId};
use std::collections::HashMap;

use allium::dir::path::{
    conflicts, position_weight, select_exit, select_middle, weighted_choice, PathTarget, USABLE,
};
use allium::dir::{Consensus, Position, RelayFlags};
use common::procnet::{self, ProcNet, Role};

/// Every relay's real capacity, bytes/s.
const RATE: u64 = 1_000_000;
/// Small bursts, so a measurement sees the sustained rate rather than a saved-up burst.
const BURST: u64 = 100_000;
const LIAR: &str = "relay-3";
const RELAYS: usize = 10;

/// Adds `lines` to the `[relay]` table of `name`.toml in `dir`.
fn add_to_relay(dir: &Path, name: &str, lines: &str) {
    let path = dir.join(format!("{name}.toml"));
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replacen("[relay]\n", &format!("[relay]\n{lines}\n"), 1);
    std::fs::write(&path, text).unwrap();
}

/// Replaces the declared bandwidth line of `name`.toml.
fn declare(dir: &Path, name: &str, bandwidth: u64) {
    let path = dir.join(format!("{name}.toml"));
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replacen(
        "bandwidth = 10000000\n",
        &format!("bandwidth = {bandwidth}\n"),
        1,
    );
    std::fs::write(&path, text).unwrap();
}

/// How often each relay appears in `n` three-hop paths drawn by the client's own
/// position weights (exit, then a guard-position relay, then a middle).
fn path_counts(c: &Consensus, n: u32) -> HashMap<RelayId, u32> {
    let mut rng = rand::rng();
    let target = PathTarget {
        port: 80,
        addr: None,
        proto: allium::dir::Transport::Tcp,
    };
    let w = c.weights();
    let mut counts = HashMap::new();
    for _ in 0..n {
        let exit = select_exit(c, &target, &mut rng).unwrap();
        let guard = weighted_choice(
            c.relays()
                .iter()
                .filter(|r| r.has(USABLE) && !conflicts(r, exit))
                .map(|r| (r, position_weight(w, r, Position::Guard))),
            &mut rng,
        )
        .unwrap();
        let middle = select_middle(c, &[exit, guard], &mut rng).unwrap();
        for r in [exit, guard, middle] {
            *counts.entry(r.identity).or_insert(0u32) += 1;
        }
    }
    counts
}

/// The class that decides a relay's position weights: (Guard, usable Exit).
fn class(c: &Consensus, id: &IdentityPublic) -> (bool, bool) {
    c.relay(id).map_or((false, false), |e| {
        (e.has(RelayFlags::GUARD), e.flags.usable_exit())
    })
}

/// The liar's share of path positions over the mean honest relay's of the same class (all
/// honest relays if none shares its class).
fn share_ratio(c: &Consensus, liar: &IdentityPublic, honest: &[IdentityPublic]) -> f64 {
    let counts = path_counts(c, 30_000);
    let same: Vec<&IdentityPublic> = honest
        .iter()
        .filter(|h| class(c, h) == class(c, liar))
        .collect();
    let peers: Vec<&IdentityPublic> = if same.is_empty() {
        honest.iter().collect()
    } else {
        same
    };
    let mean = peers
        .iter()
        .map(|h| f64::from(counts.get(&RelayId::from(*h)).copied().unwrap_or(0)))
        .sum::<f64>()
        / peers.len() as f64;
    f64::from(counts.get(&RelayId::from(liar)).copied().unwrap_or(0)) / mean.max(1.0)
}

fn all_measured(c: &Consensus, relays: &[IdentityPublic]) -> bool {
    relays
        .iter()
        .all(|id| c.relay(id).is_some_and(|e| e.measured && e.has(USABLE)))
}

fn weights(c: &Consensus, net: &ProcNet) -> String {
    net.by_role(Role::Relay)
        .map(|n| {
            let e = c.relay(n.identity.as_ref().unwrap());
            format!(
                "{}: {:?}",
                n.name,
                e.map(|e| (e.bandwidth, e.measured, e.flags))
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_lying_about_its_bandwidth_gets_its_measured_share() {
    let dir = procnet::emit("bwlies", 1, RELAYS, 2, 6);
    for i in 1..=RELAYS {
        add_to_relay(
            &dir,
            &format!("relay-{i}"),
            &format!("bandwidth_rate = {RATE}\nbandwidth_burst = {BURST}"),
        );
    }
    declare(&dir, LIAR, 1_000_000_000_000);
    let mut net = ProcNet::open(&dir);
    net.start_ready(Duration::from_secs(90)).await;
    let liar = net.node(LIAR).identity.unwrap();
    let relays: Vec<IdentityPublic> = net
        .by_role(Role::Relay)
        .map(|n| n.identity.unwrap())
        .collect();
    let honest: Vec<IdentityPublic> = relays.iter().copied().filter(|r| *r != liar).collect();

    // Phase 1: equal real capacity. The 1 TB/s declaration buys nothing beyond the share the
    // measurement gives.
    let Some(c) = net
        .wait_for_consensus_where(Duration::from_secs(120), |c| all_measured(c, &relays))
        .await
    else {
        net.dump_logs();
        panic!("the relays were not all measured within 120 s");
    };
    let ratio = share_ratio(&c, &liar, &honest);
    println!(
        "equal capacity: the liar's share of paths is {ratio:.2} x an honest relay's\n{}",
        weights(&c, &net)
    );
    assert!(
        ratio <= 1.5,
        "the liar got {ratio:.2} x an honest relay's share of paths\n{}",
        weights(&c, &net)
    );

    // Phase 2: the liar's real capacity halved. Its share follows the measurement down.
    net.terminate(LIAR, Duration::from_secs(10)).await;
    let path = dir.join(format!("{LIAR}.toml"));
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        &format!("bandwidth_rate = {RATE}\nbandwidth_burst = {BURST}"),
        &format!(
            "bandwidth_rate = {}\nbandwidth_burst = {}",
            RATE / 2,
            BURST / 2
        ),
        1,
    );
    std::fs::write(&path, text).unwrap();
    net.start(LIAR);
    let halved = |c: &Consensus| {
        let mean: f64 = honest
            .iter()
            .filter_map(|h| c.relay(h).map(|e| e.bandwidth as f64))
            .sum::<f64>()
            / honest.len() as f64;
        c.relay(liar)
            .is_some_and(|e| e.measured && e.has(USABLE) && (e.bandwidth as f64) < 0.75 * mean)
    };
    let Some(c) = net
        .wait_for_consensus_where(Duration::from_secs(120), halved)
        .await
    else {
        let c = net.consensus().await;
        net.dump_logs();
        panic!(
            "the liar's weight did not follow its halved capacity within 120 s:\n{}",
            c.map(|c| weights(&c, &net)).unwrap_or_default()
        );
    };
    let ratio = share_ratio(&c, &liar, &honest);
    println!(
        "halved capacity: the liar's share of paths is {ratio:.2} x an honest relay's\n{}",
        weights(&c, &net)
    );
    assert!(
        (0.3..=0.75).contains(&ratio),
        "halved capacity should give about half the share; got {ratio:.2}\n{}",
        weights(&c, &net)
    );
    net.finish().await;
}
