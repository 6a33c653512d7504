//! Issue 23, vanguards-lite (docs/protocol.md §8.10): the second hop of every
//! onion-service circuit comes from a set of 4 relays kept 1 to 12 days; members are
//! replaced when they expire, leave the consensus or the clock is set back. Simulated
//! months on a synthetic consensus, then a real test network on 127.0.0.1 (client and
//! service).

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use allium::cell::CircId;
use allium::client::onion_service::{launch, ServiceConfig};
use allium::client::{CircPurpose, Client, ClientConfig, ClientObserver, Isolation};
use allium::crypto::IdentityPublic;
use allium::dir::path::conflicts;
use allium::dir::vanguards::{select_vanguard_prefix, VanguardParams, VanguardSet};
use allium::dir::{GuardParams, GuardSet};
use common::dir::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

const DAY: u64 = 24 * 3600;

#[test]
fn vanguards_rotate_within_their_lifetimes_over_months() {
    let (consensus, _) = synthetic_consensus(60);
    let mut rng = StdRng::seed_from_u64(23);
    let mut set = VanguardSet::new(VanguardParams::default());
    // Each membership (relay, expiry) and when it was first seen, over 120 simulated
    // days, hour by hour (a relay may be drawn again later: a new membership).
    let mut seen: HashMap<([u8; 32], u64), u64> = HashMap::new();
    for hour in 0..120 * 24 {
        let now = NOW + hour * 3600;
        set.maintain(&consensus, now, &mut rng);
        assert_eq!(set.members().len(), 4);
        let ids: HashSet<_> = set.members().iter().map(|v| v.identity).collect();
        assert_eq!(ids.len(), 4, "a relay twice in the set");
        for v in set.members() {
            let first = *seen
                .entry((*v.identity.as_bytes(), v.expires))
                .or_insert(now);
            assert!(v.expires > now);
            let life = v.expires - first;
            assert!((DAY - 3600..=12 * DAY).contains(&life), "lifetime {life} s");
        }
    }
    // 120 days of members living 1-12 days (mean about 8): dozens of rotations.
    assert!(set.replaced() >= 40, "{} replaced", set.replaced());
    assert!(seen.len() >= 44);
}

#[test]
fn unlisted_members_and_a_clock_set_back_are_replaced() {
    let (consensus, auths) = synthetic_consensus(60);
    let mut rng = StdRng::seed_from_u64(7);
    let mut set = VanguardSet::new(VanguardParams::default());
    set.maintain(&consensus, NOW, &mut rng);
    let gone = set.members()[0].identity;
    let kept: Vec<_> = consensus
        .relays()
        .iter()
        .filter(|r| r.identity != gone)
        .cloned()
        .collect();
    let without = consensus_of(&kept, &auths);
    set.maintain(&without, NOW + 60, &mut rng);
    assert!(set.members().iter().all(|v| v.identity != gone));
    assert_eq!(set.members().len(), 4);
    assert_eq!(set.replaced(), 1);
    // The clock jumps back 30 days: every member would otherwise live 30 days longer.
    let before: Vec<_> = set.members().to_vec();
    set.maintain(&without, NOW - 30 * DAY, &mut rng);
    for v in set.members() {
        assert!(v.expires <= NOW - 30 * DAY + 12 * DAY);
    }
    assert!(set.members().iter().all(|v| !before.contains(v)));
}

#[test]
fn second_hop_is_a_vanguard_free_of_conflicts() {
    let (consensus, _) = synthetic_consensus(60);
    let mut rng = StdRng::seed_from_u64(5);
    let mut guards = GuardSet::new(GuardParams::default());
    let mut set = VanguardSet::new(VanguardParams::default());
    for i in 0..200 {
        let last = &consensus.relays()[i % consensus.relays().len()];
        let len = 3 + i % 3;
        let path = select_vanguard_prefix(
            &consensus,
            Some(last),
            &mut guards,
            &mut set,
            len,
            NOW,
            &mut rng,
        )
        .unwrap();
        assert_eq!(path.len(), len - 1);
        assert!(set.members().iter().any(|v| v.identity == path[1].identity));
        let mut all = path.clone();
        all.push(last);
        for (a, x) in all.iter().enumerate() {
            for y in all.iter().skip(a + 1) {
                assert!(!conflicts(x, y), "conflicting hops in {i}");
            }
        }
    }
    assert!(
        select_vanguard_prefix(&consensus, None, &mut guards, &mut set, 2, NOW, &mut rng).is_err()
    );
}

/// Records each circuit's purpose and relays.
#[derive(Debug, Default)]
struct Paths(Mutex<Vec<(CircPurpose, Vec<IdentityPublic>)>>);

impl ClientObserver for Paths {
    fn circuit_path(&self, _: CircId, purpose: CircPurpose, hops: &[IdentityPublic]) {
        self.0.lock().unwrap().push((purpose, hops.to_vec()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onion_circuits_of_client_and_service_go_through_their_vanguards() {
    let net = common::net::small_net(8, 1).await;
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_addr = target.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = target.accept().await {
            held.push(s);
        }
    });
    let dir = std::env::temp_dir().join(format!("allium-vanguards-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let observed = |paths: &Arc<Paths>| {
        let mut c = ClientConfig::new(net.authority_info.clone());
        c.observer = Some(Arc::clone(paths) as _);
        c
    };
    let (svc_paths, visitor_paths) = (Arc::new(Paths::default()), Arc::new(Paths::default()));
    let service_client = Client::bootstrap(observed(&svc_paths)).await.unwrap();
    let service = launch(
        service_client.clone(),
        ServiceConfig::new(dir.join("v.key"), vec![(80, target_addr)]),
    )
    .await
    .unwrap();
    assert!(service.wait_published(Duration::from_secs(90)).await);
    let visitor = Client::bootstrap(observed(&visitor_paths)).await.unwrap();
    let host = allium::cell::Hostname::new(&service.address().to_string()).unwrap();
    for i in 0..3 {
        let iso = Isolation(format!("v{i}").into_bytes());
        tokio::time::timeout(
            Duration::from_secs(90),
            visitor.connect_target(allium::cell::TargetAddr::Hostname(host.clone()), 80, &iso),
        )
        .await
        .unwrap()
        .unwrap();
    }
    for (who, client, paths) in [
        ("service", &service_client, &svc_paths),
        ("client", &visitor, &visitor_paths),
    ] {
        let (members, _) = client.vanguards();
        assert_eq!(members.len(), 4, "{who}");
        let members: HashSet<[u8; 32]> = members.iter().map(|v| *v.identity.as_bytes()).collect();
        let paths = paths.0.lock().unwrap();
        let onion: Vec<_> = paths
            .iter()
            .filter(|(p, _)| *p != CircPurpose::Exit)
            .collect();
        assert!(onion.len() >= 3, "{who}: {} onion circuits", onion.len());
        for (purpose, hops) in &onion {
            assert!(
                members.contains(hops[1].as_bytes()),
                "{who}: a {purpose:?} circuit's second hop is not a vanguard"
            );
        }
        let second: HashSet<_> = onion.iter().map(|(_, h)| *h[1].as_bytes()).collect();
        eprintln!(
            "{who}: {} onion-service circuits, second hops among {} of its 4 vanguards",
            onion.len(),
            second.len()
        );
    }
    service.stop();
    net.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
