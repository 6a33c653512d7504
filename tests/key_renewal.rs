//! A running relay renews its keys by itself (src/relay/key_schedule.rs): relays on real
//! TCP sockets (127.0.0.1) whose simulated wall clock is jumped forward by days while
//! real time runs, as after a suspend; the maintenance task notices within about 10 s (it watches for jumps).
//!
//! Checked: after 8 days a new channel handshakes (fresh link certificate) and a channel
//! and circuit opened on day 0 still work; after the onion-key rotation CREATE to the new
//! key and (within the grace) to the previous key both work, and after the grace a client
//! holding the old key is refused; a relay restarted from its key files on day 13 rotates
//! on day 14; one restarted after losing its onion key files works at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use allium::cell::DestroyReason;
use allium::clock::Clock;
use allium::crypto::keyfile::read_onion_key_meta;
use allium::crypto::keyfile::{ONION_KEY_FILE, PREVIOUS_ONION_KEY_FILE};
use allium::link::LinkConfig;
use allium::proto::{CircuitError, ClientChannel, ClientCircuit, RelayTarget};
use allium::relay::{self, RelayConfig, RelayHandle, RelayKeys, RelayLimits};

mod common;
use common::NO_HANG;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn sim_clock() -> Clock {
    Clock::simulated(SystemTime::now())
}

async fn start(clock: &Clock, keys: RelayKeys) -> RelayHandle {
    let config = RelayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        limits: RelayLimits::default(),
        exit: None,
        clock: clock.clone(),
        bandwidth: None,
        fair_queueing: true,
    };
    relay::start(config, keys).await.unwrap()
}

fn link_cfg(clock: &Clock) -> LinkConfig {
    LinkConfig {
        clock: clock.clone(),
        ..LinkConfig::default()
    }
}

/// `r` as a hop, from the certificate it publishes now (as a fresh consensus would give).
fn target_now(r: &RelayHandle, clock: &Clock) -> RelayTarget {
    RelayTarget {
        addr: r.local_addr(),
        identity: r.identity(),
        onion: r.keys().onion_cert().verify(clock.now_unix()).unwrap(),
    }
}

/// Polls `done` until it holds (the maintenance task notices a jump within about 10 s).
async fn wait_for(what: &str, done: impl Fn() -> bool) {
    let t0 = tokio::time::Instant::now();
    while !done() {
        assert!(t0.elapsed() < NO_HANG, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A one-hop circuit to `t` over a new channel.
async fn create_new(t: &RelayTarget, clock: &Clock) -> Result<ClientCircuit, CircuitError> {
    let chan = ClientChannel::connect(t, &link_cfg(clock))
        .await
        .unwrap_or_else(|e| panic!("link handshake to the relay failed: {e}"));
    ClientCircuit::create(&chan, t, NO_HANG).await
}

/// A CREATE naming an onion key the relay no longer holds is refused.
async fn assert_refused(r: &RelayHandle, stale: &RelayTarget, clock: &Clock) {
    let before = r
        .shared()
        .counters
        .protocol_violations
        .load(Ordering::Relaxed);
    let stale = RelayTarget {
        addr: r.local_addr(),
        ..stale.clone()
    };
    match create_new(&stale, clock).await {
        Err(CircuitError::Destroyed(DestroyReason::Protocol)) => {}
        other => panic!("a CREATE to a dropped onion key must be refused, got {other:?}"),
    }
    let after = r
        .shared()
        .counters
        .protocol_violations
        .load(Ordering::Relaxed);
    assert_eq!(after, before + 1, "refused by the relay's handshake");
}

/// A data directory of its own under the temp dir (removed on drop).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p =
            std::env::temp_dir().join(format!("allium-key-renewal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_eight_days_new_channels_get_a_fresh_link_cert_and_old_ones_keep_working() {
    let clock = sim_clock();
    let a = start(&clock, RelayKeys::generate(&clock)).await;
    let b = start(&clock, RelayKeys::generate(&clock)).await;
    let (ta, tb) = (target_now(&a, &clock), target_now(&b, &clock));
    let day0_cert = a.keys().link_auth().cert().expires();

    // Day 0: a channel and a one-hop circuit on it.
    let old_chan = ClientChannel::connect(&ta, &link_cfg(&clock))
        .await
        .unwrap();
    let mut old_circ = ClientCircuit::create(&old_chan, &ta, NO_HANG)
        .await
        .unwrap();

    clock.jump_forward(8 * DAY);
    assert!(
        clock.now_unix() >= day0_cert,
        "the day-0 link certificate has expired"
    );
    wait_for("the link certificates to be renewed", || {
        let now = clock.now_unix();
        [&a, &b]
            .iter()
            .all(|r| r.keys().link_auth().cert().expires() > now)
    })
    .await;
    assert!(a.keys().link_cert_renewals() >= 1);
    let metrics = relay::metrics::render(a.shared());
    assert!(
        metrics.contains("allium_relay_link_cert_renewals_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("allium_relay_link_cert_expires_in_seconds"));

    // A new channel handshakes against the fresh certificate, and A reaches B with it.
    let mut fresh = create_new(&ta, &clock).await.unwrap();
    fresh.extend(&tb, NO_HANG).await.unwrap();
    // The day-0 channel and circuit still carry cells: the old circuit extends to B, and
    // a new circuit is made on the old channel.
    old_circ.extend(&tb, NO_HANG).await.unwrap();
    let mut again = ClientCircuit::create(&old_chan, &ta, NO_HANG)
        .await
        .unwrap();
    again.extend(&tb, NO_HANG).await.unwrap();
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_onion_key_works_during_the_grace_and_is_refused_after_it() {
    let clock = sim_clock();
    let a = start(&clock, RelayKeys::generate(&clock)).await;
    let old = target_now(&a, &clock);
    let old_key = *old.onion.onion_key();

    clock.jump_forward(14 * DAY + Duration::from_secs(60));
    wait_for("the onion key to rotate", || {
        a.keys().onion_key_rotations() == 1
            && a.keys().link_auth().cert().expires() > clock.now_unix()
    })
    .await;
    let new = target_now(&a, &clock);
    assert_ne!(new.onion.onion_key(), &old_key);
    assert_eq!(
        a.keys().onion_keys().previous().map(|k| *k.public()),
        Some(old_key)
    );
    create_new(&new, &clock)
        .await
        .expect("CREATE to the new key");
    // A client whose consensus predates the rotation still gets through.
    create_new(&old, &clock)
        .await
        .expect("CREATE to the previous key within the grace");

    clock.jump_forward(7 * DAY);
    wait_for("the previous onion key to be dropped", || {
        a.keys().onion_keys().previous().is_none()
    })
    .await;
    // The attacker (or a client with a stale descriptor) holding the old key is refused;
    // its certificate alone (valid 28 days) is not enough.
    assert!(old.onion.expires_unix() > clock.now_unix());
    assert_refused(&a, &old, &clock).await;
    create_new(&new, &clock)
        .await
        .expect("the current key works");
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_restarted_on_day_13_rotates_on_day_14_and_drops_the_old_file_a_week_later() {
    let dir = TempDir::new("restart13");
    let clock = sim_clock();
    let a = start(&clock, RelayKeys::load_or_create(&dir.0, &clock).unwrap()).await;
    let old = target_now(&a, &clock);
    let created = a.keys().onion_key_created();
    a.shutdown().await;

    clock.jump_forward(13 * DAY);
    let a = start(&clock, RelayKeys::load_or_create(&dir.0, &clock).unwrap()).await;
    // The same relay on a new port, as its next descriptor would say.
    let old = RelayTarget {
        addr: a.local_addr(),
        ..old
    };
    assert_eq!(
        a.keys().onion_key_created(),
        created,
        "age kept across the restart"
    );
    assert_eq!(a.keys().onion_cert().onion_key(), old.onion.onion_key());
    assert_eq!(a.keys().onion_key_rotations(), 0, "not due on day 13");
    create_new(&target_now(&a, &clock), &clock)
        .await
        .expect("works after the restart");

    clock.jump_forward(DAY + Duration::from_secs(60));
    wait_for("the onion key to rotate on day 14", || {
        a.keys().onion_key_rotations() == 1
    })
    .await;
    let new = target_now(&a, &clock);
    let meta = read_onion_key_meta(&dir.0).unwrap().unwrap();
    assert_eq!(
        &meta.onion,
        new.onion.onion_key(),
        "the record follows the key"
    );
    assert!(dir.0.join(PREVIOUS_ONION_KEY_FILE).exists());
    create_new(&new, &clock).await.expect("new key");
    create_new(&old, &clock)
        .await
        .expect("previous key, in grace");

    clock.jump_forward(7 * DAY);
    wait_for("the previous onion key to be dropped", || {
        a.keys().onion_keys().previous().is_none()
    })
    .await;
    assert!(
        !dir.0.join(PREVIOUS_ONION_KEY_FILE).exists(),
        "file removed"
    );
    assert_refused(&a, &old, &clock).await;
    a.shutdown().await;

    // Restarted again: the rotated key is loaded, the dropped one is gone for good.
    let a = start(&clock, RelayKeys::load_or_create(&dir.0, &clock).unwrap()).await;
    assert_eq!(a.keys().onion_cert().onion_key(), new.onion.onion_key());
    assert!(a.keys().onion_keys().previous().is_none());
    assert_refused(&a, &old, &clock).await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_restarted_without_its_onion_key_files_makes_a_new_key_and_works_at_once() {
    let dir = TempDir::new("lost-onion");
    let clock = sim_clock();
    let a = start(&clock, RelayKeys::load_or_create(&dir.0, &clock).unwrap()).await;
    let identity = a.identity();
    let old = target_now(&a, &clock);
    a.shutdown().await;

    clock.jump_forward(5 * DAY);
    std::fs::remove_file(dir.0.join(ONION_KEY_FILE)).unwrap();
    let _ = std::fs::remove_file(dir.0.join(PREVIOUS_ONION_KEY_FILE));
    let restarted_at = clock.now_unix();
    let a = start(&clock, RelayKeys::load_or_create(&dir.0, &clock).unwrap()).await;
    assert_eq!(a.identity(), identity, "the identity survives");
    let new = target_now(&a, &clock);
    assert_ne!(new.onion.onion_key(), old.onion.onion_key());
    // The leftover record names the lost key, so the new one counts as made now.
    assert!(a.keys().onion_key_created() >= restarted_at);
    create_new(&new, &clock).await.expect("works at once");
    assert_refused(&a, &old, &clock).await;
    a.shutdown().await;
}
