//! Tests of the bandwidth scanner: the adaptive sizes, and real measurements over TCP on
//! 127.0.0.1 through relays started in this process.

use super::*;
use crate::clock::Clock;
use crate::dir::request::DirResponse;
use crate::dir::AuthorityInfo;
use crate::proto::dirclient::{dir_request, one_shot};
use crate::relay::authority::{Authority, AuthorityConfig};
use crate::relay::dircache::DirCache;
use crate::relay::{self, RelayConfig, RelayHandle, RelayKeys, RelayLimits};
use std::sync::Mutex;

fn small() -> MeasureConfig {
    MeasureConfig {
        initial_bytes: 8 * 1024,
        max_bytes: 1024 * 1024,
        ..MeasureConfig::for_test_network()
    }
}

#[test]
fn sizes_double_until_a_download_is_long_enough_or_the_next_passes_the_maximum() {
    let cfg = MeasureConfig::default();
    let short = Duration::from_millis(100);
    assert_eq!(next_size(64 * 1024, short, &cfg), Some(128 * 1024));
    assert_eq!(next_size(64 * 1024, cfg.min_duration, &cfg), None);
    assert_eq!(next_size(8 << 20, short, &cfg), Some(16 << 20));
    assert_eq!(next_size(16 << 20, short, &cfg), None);
    // Never clamped to the maximum: the next size would pass it, so this one is the last.
    assert_eq!(next_size(10 << 20, short, &cfg), None);
    assert_eq!(next_size(u64::MAX, short, &cfg), None);
}

#[test]
fn a_whole_measurement_stays_within_its_budget() {
    for cfg in [
        MeasureConfig::default(),
        MeasureConfig::for_test_network(),
        small(),
    ] {
        // The longest series: every download faster than `min_duration`.
        let mut size = cfg.initial_bytes;
        let mut total = size;
        while let Some(next) = next_size(size, Duration::ZERO, &cfg) {
            size = next;
            total += size;
        }
        assert!(size <= cfg.max_bytes);
        assert!(total <= cfg.budget(), "{total} > {}", cfg.budget());
    }
    assert_eq!(MeasureConfig::default().budget(), 32 << 20);
}

#[test]
fn rate_is_bytes_per_second() {
    assert_eq!(rate(1_000_000, Duration::from_secs(2)), 500_000);
    assert_eq!(rate(1000, Duration::ZERO), 1_000_000);
    assert_eq!(rate(u64::MAX, Duration::from_nanos(1)), u64::MAX);
}

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn start_relay(clock: &Clock) -> RelayHandle {
    relay::start(
        RelayConfig {
            listen: localhost(),
            limits: RelayLimits::default(),
            exit: None,
            clock: clock.clone(),
            bandwidth: None,
            fair_queueing: true,
        },
        RelayKeys::generate(clock),
    )
    .await
    .unwrap()
}

/// An authority (the only one of its network) and its scanner.
async fn start_authority(clock: &Clock) -> (RelayHandle, Arc<Authority>, Arc<Scanner>) {
    let r = start_relay(clock).await;
    let info = AuthorityInfo {
        identity: r.identity(),
        addr: r.local_addr(),
    };
    let auth = Authority::start(Arc::clone(r.shared()), AuthorityConfig::new(vec![info]));
    r.set_dir_service(auth.service());
    let scanner = Arc::new(Scanner::new(
        Arc::clone(r.shared()),
        Arc::clone(&auth.measure_tokens),
        r.local_addr(),
        small(),
    ));
    (r, auth, scanner)
}

fn target(r: &RelayHandle, clock: &Clock) -> RelayTarget {
    RelayTarget {
        addr: r.local_addr(),
        identity: r.identity(),
        onion: r
            .shared()
            .keys
            .onion_cert()
            .clone()
            .verify(clock.now_unix())
            .unwrap(),
    }
}

#[tokio::test]
async fn measures_a_relay_and_reports_one_that_is_down() {
    let clock = Clock::system();
    let (auth_relay, auth, scanner) = start_authority(&clock).await;
    let up = start_relay(&clock).await;
    let down = start_relay(&clock).await;
    let down_target = target(&down, &clock);
    down.shutdown().await;

    match scanner.measure(&target(&up, &clock)).await.unwrap() {
        ProbeOutcome::Measured {
            bytes_per_second,
            bytes,
        } => {
            assert!(bytes_per_second > 0);
            assert!((8 * 1024..=1024 * 1024).contains(&bytes), "{bytes}");
        }
        other => panic!("expected a measurement, got {other:?}"),
    }
    // The measurement's token is gone with it.
    assert_eq!(auth.measure_tokens.len(), 0);
    match scanner.measure(&down_target).await.unwrap() {
        ProbeOutcome::CircuitFailed(why) => assert!(why.contains("connect"), "{why}"),
        other => panic!("expected a circuit failure, got {other:?}"),
    }
    up.shutdown().await;
    auth_relay.shutdown().await;
}

#[tokio::test]
async fn a_round_measures_every_target_but_ourselves() {
    let clock = Clock::system();
    let (auth_relay, _auth, scanner) = start_authority(&clock).await;
    let a = start_relay(&clock).await;
    let b = start_relay(&clock).await;
    let mut list = vec![
        (a.identity(), target(&a, &clock)),
        (b.identity(), target(&b, &clock)),
        (auth_relay.identity(), target(&auth_relay, &clock)),
    ];
    list.push(list[0].clone());
    let seen = Mutex::new(Vec::new());
    let n = Arc::clone(&scanner)
        .run_round(list, &|id, outcome| {
            seen.lock().unwrap().push((id, outcome))
        })
        .await;
    let seen = seen.into_inner().unwrap();
    assert_eq!(n, 3);
    assert!(seen.iter().all(|(id, _)| *id != auth_relay.identity()));
    assert!(seen
        .iter()
        .all(|(_, o)| matches!(o, ProbeOutcome::Measured { .. })));
    a.shutdown().await;
    b.shutdown().await;
    auth_relay.shutdown().await;
}

/// The attacker (a client, or a relay, knowing only its own keys) asks an authority for
/// bulk data, directly or over a circuit through another relay, with a guessed token or one
/// whose measurement is over: refused every time, with no filler sent.
#[tokio::test]
async fn nobody_else_can_make_an_authority_send_bulk_data() {
    let clock = Clock::system();
    let (auth_relay, auth, _scanner) = start_authority(&clock).await;
    let middle = start_relay(&clock).await;
    let cache_relay = start_relay(&clock).await;
    cache_relay.set_dir_service(DirCache::start(Vec::new(), clock.clone()) as _);
    let step = Duration::from_secs(10);
    let refused = |resp: &DirResponse| {
        assert_eq!(resp.status, DirStatus::Refused, "{}", resp.reason());
        assert!(resp.body.len() < 100);
    };

    // Directly, over a one-hop circuit, with a guessed token.
    let guess = DirRequest::GetMeasurement {
        token: [7; 16],
        len: MAX_MEASUREMENT_CHUNK,
    };
    let resp = one_shot(
        auth_relay.local_addr(),
        &auth_relay.identity(),
        &guess,
        step,
        &clock,
    )
    .await
    .unwrap();
    refused(&resp);

    // A token that was real, once its measurement is over.
    let token = auth.measure_tokens.issue(1 << 20).unwrap();
    auth.measure_tokens.revoke(&token);
    let stale = DirRequest::GetMeasurement {
        token,
        len: MAX_MEASUREMENT_CHUNK,
    };

    // Over a two-hop circuit through another relay, as a measurement circuit looks.
    let link = LinkConfig {
        handshake_timeout: step,
        clock: clock.clone(),
        ..LinkConfig::default()
    };
    let first = target(&middle, &clock);
    let chan = ClientChannel::connect(&first, &link).await.unwrap();
    let mut circ = ClientCircuit::create(&chan, &first, step).await.unwrap();
    circ.extend(&target(&auth_relay, &clock), step)
        .await
        .unwrap();
    let handle = circ.into_handle();
    for req in [&guess, &stale] {
        refused(&dir_request(&handle, req, step).await.unwrap());
    }
    handle.close().await;
    chan.sender.close();

    // A relay's directory cache never serves it, token or not.
    let resp = one_shot(
        cache_relay.local_addr(),
        &cache_relay.identity(),
        &guess,
        step,
        &clock,
    )
    .await
    .unwrap();
    refused(&resp);

    middle.shutdown().await;
    cache_relay.shutdown().await;
    auth_relay.shutdown().await;
}

/// A scanner whose tokens the authority does not know: the authority refuses the download,
/// which is a transfer failure (the circuit was built).
#[tokio::test]
async fn a_refused_download_is_a_transfer_failure() {
    let clock = Clock::system();
    let (auth_relay, _auth, _scanner) = start_authority(&clock).await;
    let relay = start_relay(&clock).await;
    let stranger = Scanner::new(
        Arc::clone(auth_relay.shared()),
        Arc::new(MeasureTokens::new(clock.clone())),
        auth_relay.local_addr(),
        small(),
    );
    match stranger.measure(&target(&relay, &clock)).await.unwrap() {
        ProbeOutcome::TransferFailed(why) => assert!(why.contains("no such measurement"), "{why}"),
        other => panic!("expected a transfer failure, got {other:?}"),
    }
    relay.shutdown().await;
    auth_relay.shutdown().await;
}

/// Rounds repeat: every target is measured again in the next round.
#[tokio::test]
async fn rounds_repeat() {
    let clock = Clock::system();
    let (auth_relay, _auth, scanner) = start_authority(&clock).await;
    let relay = start_relay(&clock).await;
    let list = vec![(relay.identity(), target(&relay, &clock))];
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(scanner.run_rounds(
        move || list.clone(),
        move |id, outcome| {
            let _ = tx.send((id, outcome));
        },
    ));
    for _ in 0..2 {
        let (id, outcome) = rx.recv().await.unwrap();
        assert_eq!(id, relay.identity());
        assert!(
            matches!(outcome, ProbeOutcome::Measured { .. }),
            "{outcome:?}"
        );
    }
    task.abort();
    relay.shutdown().await;
    auth_relay.shutdown().await;
}

/// Downloads over 1 MiB are several requests (the last one partial), and the series runs
/// up to the largest size when every download is short of `min_duration`.
#[tokio::test]
async fn large_downloads_are_split_into_requests() {
    let clock = Clock::system();
    let (auth_relay, auth, _scanner) = start_authority(&clock).await;
    let relay = start_relay(&clock).await;
    let cfg = MeasureConfig {
        initial_bytes: 1536 * 1024,
        max_bytes: 3 * 1024 * 1024,
        min_duration: Duration::from_secs(3600),
        ..MeasureConfig::for_test_network()
    };
    let scanner = Scanner::new(
        Arc::clone(auth_relay.shared()),
        Arc::clone(&auth.measure_tokens),
        auth_relay.local_addr(),
        cfg,
    );
    match scanner.measure(&target(&relay, &clock)).await.unwrap() {
        ProbeOutcome::Measured { bytes, .. } => assert_eq!(bytes, 3 * 1024 * 1024),
        other => panic!("expected a measurement, got {other:?}"),
    }
    relay.shutdown().await;
    auth_relay.shutdown().await;
}
