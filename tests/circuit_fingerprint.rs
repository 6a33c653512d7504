//! Circuit fingerprinting at the guard (issue 22): on an in-process test network over real
//! TCP, a client fetches small objects through exits and from an onion service, every
//! relay records each circuit's cells (directions and times, first 10 s), and classifiers
//! try to tell onion-service circuits from exit circuits. Run with circuit padding off
//! and on; prints every classifier's accuracy with its 95% interval.
//!
//! Without padding the attack must work (best classifier ≥ 0.8): otherwise this
//! measurement could not show what padding hides. With padding, the goal is ≤ 0.60.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use allium::testnet::fingerprint::report::{measure, MeasureConfig, Report};

/// The rows the "with padding, accuracy ≤ 0.60" goal is asserted on: a client's onion
/// circuits (introduction and rendezvous together) against exit circuits, as the client's
/// guard sees them. The rows of one kind alone (half the circuits, wider intervals) and
/// the service's circuits (whose rendezvous circuits carry the replies outwards, which
/// padding does not hide: docs/protocol.md §3.6.1) are printed, not asserted; nor is the
/// tree given timing features, which the machines are not built against.
const PADDING_ASSERTED: &str = "client intro+rend";

/// The attack must reach this without padding.
const ATTACK_WORKS: f64 = 0.8;
/// The goal with padding (chance is 0.5).
const PADDING_GOAL: f64 = 0.60;

fn print(report: &Report) {
    for n in report.notes() {
        eprintln!("{n}");
    }
    for row in report.table() {
        eprintln!("{}", row.join(" | "));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_tells_onion_circuits_from_exit_circuits_unless_padded() {
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("allium-fingerprint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = MeasureConfig {
        circuits: 100,
        window: Duration::from_secs(10),
        padding: vec![false, true],
        concurrency: 24,
        ..MeasureConfig::default()
    };
    let report = measure(&cfg, &dir, &|m: &str| {
        eprintln!("[{:>5.1} s] {m}", started.elapsed().as_secs_f64())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_dir_all(&dir);
    print(&report);
    eprintln!("measured in {:?}", started.elapsed());

    for row in &report.rows {
        assert!(
            row.per_class >= 40,
            "too few circuits for {} (padding {}): {}",
            row.pair,
            row.padding,
            row.per_class
        );
        let best = row.best().unwrap();
        if !row.padding && row.pair.starts_with("client intro+rend") {
            assert!(
                best.accuracy() >= ATTACK_WORKS,
                "without padding the attack should work: {best:?}"
            );
        }
        if row.padding && row.pair.starts_with(PADDING_ASSERTED) {
            let (lo, hi) = best.wilson95();
            assert!(
                best.accuracy() <= PADDING_GOAL,
                "{}: with padding the best classifier reaches {:.3} [{lo:.3}, {hi:.3}] ({})",
                row.pair,
                best.accuracy(),
                best.name
            );
        }
    }
}
