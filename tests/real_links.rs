//! `allium bench real-links` end to end, short: relays in network namespaces behind delay
//! lines, the middle one rate-limited, measured through a proxy in a namespace of its own
//! (src/bench/real_links.rs). Checks that it works, never how fast: the run succeeds, every
//! figure is printed, each interactive round trip took at least the three links' delays
//! both ways (no stream bypassed a delay line), and no namespace of the run is left.
//!
//! Needs root, `ip` and `tc` (iproute2): without them it fails under CI and elsewhere
//! prints one `SKIPPED` line (tests/common/prereq.rs).

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::prereq;

/// Hang guard only (the run takes about a minute).
const NO_HANG: Duration = Duration::from_secs(240);
/// One-way delay per link in this run, ms.
const DELAY_MS: f64 = 20.0;

/// The value of numeric field `name` in the flat JSON object the bench prints.
fn field(json: &str, name: &str) -> f64 {
    let key = format!("\"{name}\": ");
    let start = json
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {json}"))
        + key.len();
    let rest = &json[start..];
    let end = rest.find([',', '}']).unwrap();
    rest[..end].trim().parse().unwrap()
}

/// Namespaces whose name carries `pid` (the bed names its namespaces after its process).
fn namespaces_of(pid: u32) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let tag = format!("allium-rl{pid}-");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&tag))
        .map(str::to_string)
        .collect()
}

fn tc() -> Result<(), String> {
    match Command::new("tc").arg("-V").stdout(Stdio::null()).status() {
        Ok(s) if s.success() => Ok(()),
        _ => Err("tc cannot be run; install iproute2".into()),
    }
}

#[test]
fn real_links_bench_runs_end_to_end_and_cleans_up() {
    if !prereq::require(&[prereq::root(), prereq::ip(), tc()]) {
        return;
    }
    // A namespace as a killed run leaves it (its PID can never be a live process's: above
    // the kernel's PID limit): the bench removes it.
    let stale = "allium-rl4000000000-sw";
    let made = Command::new("ip").args(["netns", "add", stale]).status();
    if !made.is_ok_and(|s| s.success()) {
        prereq::missing_prerequisite("cannot create a network namespace");
        return;
    }
    let child = Command::new(env!("CARGO_BIN_EXE_allium"))
        .args([
            "bench",
            "real-links",
            "--delay-ms",
            "20",
            "--bulk-mib",
            "1",
            "--bulk-circuits",
            "3",
            "--samples",
            "5",
            "--interval-ms",
            "50",
            "--settle-secs",
            "2",
            "--json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let killer = std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < NO_HANG {
            std::thread::sleep(Duration::from_millis(200));
            if std::fs::metadata(format!("/proc/{pid}")).is_err() {
                return;
            }
        }
        let _ = Command::new("kill").arg(pid.to_string()).status();
    });
    let out = child.wait_with_output().unwrap();
    let _ = killer.join();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the bench failed: {stderr}");
    let json = stdout.lines().last().unwrap_or_default();
    println!("{json}");

    assert_eq!(field(json, "delay_ms"), DELAY_MS);
    assert_eq!(field(json, "long_path_mib"), 1.0);
    assert_eq!(field(json, "bottleneck_bulk_circuits"), 3.0);
    for name in [
        "long_path_fixed_mib_s",
        "long_path_cc_mib_s",
        "long_path_ratio",
    ] {
        assert!(field(json, name) > 0.0, "{name} not positive in {json}");
    }
    for config in ["off", "on"] {
        for phase in ["unloaded", "loaded"] {
            assert_eq!(field(json, &format!("{config}_{phase}_samples")), 5.0);
            // Three links, each delayed both ways: a round trip can be no shorter (a
            // correctness property of the bed, not a speed figure).
            let p50 = field(json, &format!("{config}_{phase}_p50_ms"));
            assert!(
                p50 >= 6.0 * DELAY_MS,
                "{config} {phase} p50 {p50} ms in {json}"
            );
            assert!(field(json, &format!("{config}_{phase}_p99_ms")) >= p50);
        }
        assert!(field(json, &format!("{config}_bulk_mib_s")) > 0.0, "{json}");
        assert!(
            field(json, &format!("{config}_bulk_flowing")) >= 1.0,
            "{json}"
        );
    }
    // The rate-limited relay is a non-exit relay of the bed.
    assert!(
        json.contains("\"bottleneck_relay\": \"r1\"")
            || json.contains("\"bottleneck_relay\": \"r2\""),
        "{json}"
    );
    let left = namespaces_of(pid);
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert!(
        namespaces_of(4_000_000_000).is_empty(),
        "the stale namespace {stale} was not removed"
    );
}

/// Without root, `ip` or `tc`, the bench says what is missing instead of failing later.
#[test]
fn real_links_bench_names_a_missing_prerequisite() {
    // Only checkable where a prerequisite is missing: as root with iproute2 the bench
    // would run; the check is then the end-to-end test above.
    if prereq::root().is_ok() && prereq::ip().is_ok() && tc().is_ok() {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_allium"))
        .args(["bench", "real-links"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the real-links bed needs"),
        "no clear error: {stderr}"
    );
}
