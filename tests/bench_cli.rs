//! `allium bench` and `allium bench-client` as real processes: a small run of the whole
//! benchmark (authority and relays as child processes) must produce every figure, and
//! `bench-client` must measure through the proxy of an `allium testnet`.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Hang guard only: the run takes ~35 s on the loaded CI machine.
const NO_HANG: Duration = Duration::from_secs(150);

/// The value of numeric field `name` in a flat JSON object printed by the bench.
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

fn run_with_timeout(mut cmd: Command) -> (bool, String, String) {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id = child.id();
    let killer = std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < NO_HANG {
            std::thread::sleep(Duration::from_millis(200));
            if std::fs::metadata(format!("/proc/{id}")).is_err() {
                return;
            }
        }
        let _ = Command::new("kill").arg(id.to_string()).status();
    });
    let out = child.wait_with_output().unwrap();
    let _ = killer.join();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bench_reports_every_figure() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_allium"));
    cmd.args([
        "bench",
        "--bulk-mib",
        "4",
        "--concurrent-mib",
        "4",
        "--streams",
        "8",
        "--samples",
        "3",
        "--builds",
        "3",
        "--circuits",
        "300",
        "--data-circuits",
        "20",
        "--carried-kib",
        "64",
        "--client-circuits",
        // Enough that their growth stands out of what the allocator already holds
        // after the transfers (20 sometimes measured 0).
        "300",
        "--idle-channels",
        "20",
        "--json",
    ]);
    let (ok, stdout, stderr) = run_with_timeout(cmd);
    assert!(ok, "allium bench failed: {stderr}");
    let json = stdout.lines().last().unwrap_or_default();
    println!("{json}");
    assert_eq!(field(json, "bulk_bytes"), 4.0 * 1048576.0);
    assert_eq!(field(json, "streams"), 8.0);
    assert_eq!(field(json, "relay_open_circuits"), 300.0);
    assert_eq!(field(json, "handshakes_refused"), 0.0);
    for name in [
        "bulk_mb_s",
        "concurrent_mb_s",
        "ttfb_ms_median",
        "rtt_ms_median",
        "build_ms_median",
        "handshakes_per_s",
        "relay_rss_idle_bytes",
        "relay_bytes_per_carried_circuit",
        "client_bytes_per_circuit",
        "relay_rss_channels_bytes",
        "guard",
        "middle",
        "exit",
    ] {
        assert!(field(json, name) > 0.0, "{name} not positive in {json}");
    }
    assert_eq!(field(json, "relay_carried_circuits"), 20.0);
    assert_eq!(field(json, "relay_idle_channels"), 20.0);
    assert!(
        json.contains("\"relay_serves_with_channels\": true"),
        "{json}"
    );
    // 300 open circuits cost memory: the loaded figure is above the idle one.
    assert!(field(json, "relay_rss_circuits_bytes") > field(json, "relay_rss_idle_bytes"));
}

#[test]
fn bench_client_measures_through_a_testnet_proxy() {
    let mut net = Command::new(env!("CARGO_BIN_EXE_allium"))
        .args([
            "testnet",
            "--socks-port",
            "0",
            "--authorities",
            "1",
            "--period",
            "6",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(net.stdout.take().unwrap()).lines();
    let start = Instant::now();
    let mut socks = None;
    while start.elapsed() < NO_HANG {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(addr) = line.trim().strip_prefix("SOCKS5 proxy:") {
            socks = Some(addr.trim().to_string());
            break;
        }
    }
    let Some(socks) = socks else {
        let _ = net.kill();
        panic!("the test network did not come up");
    };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_allium"));
    cmd.args([
        "bench-client",
        "--socks",
        &socks,
        "--bulk-mib",
        "2",
        "--streams",
        "5",
        "--samples",
        "3",
        "--json",
    ]);
    let (ok, stdout, stderr) = run_with_timeout(cmd);
    // Ctrl-C, so the test network removes its temporary directory.
    let _ = Command::new("kill")
        .args(["-INT", &net.id().to_string()])
        .status();
    let _ = net.wait();
    assert!(ok, "bench-client failed: {stderr}");
    let json = stdout.trim();
    println!("{json}");
    assert_eq!(field(json, "bulk_bytes"), 2.0 * 1048576.0);
    // 2 MiB over 5 streams: 419430 bytes each, exactly.
    assert_eq!(field(json, "concurrent_bytes"), 5.0 * 419430.0);
    assert!(field(json, "bulk_mb_s") > 0.0);
    assert!(field(json, "ttfb_ms_median") > 0.0);

    // A proxy that is not there is a clean failure, not a hang or a zero figure.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_allium"));
    cmd.args([
        "bench-client",
        "--socks",
        &addr,
        "--bulk-mib",
        "1",
        "--json",
    ]);
    let (ok, _, stderr) = run_with_timeout(cmd);
    assert!(!ok);
    assert!(stderr.contains("warm-up"), "{stderr}");
}

/// `allium bench dir` at 50 relays through the real CLI (its authority and client sides
/// are child processes of it): every key of the JSON object, with plausible values.
#[test]
fn bench_dir_reports_every_key() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_allium"));
    cmd.args(["bench", "dir", "--relays", "50", "--periods", "2", "--json"]);
    let (ok, stdout, stderr) = run_with_timeout(cmd);
    assert!(ok, "bench dir failed: {stderr}");
    let json = stdout.trim();
    assert!(json.starts_with('{') && json.ends_with('}'), "{json}");
    for key in [
        "consensus_bytes",
        "consensus_compressed_bytes",
        "diff_bytes",
        "diff_compressed_bytes",
        "client_dir_bytes_per_day",
        "authority_cpu_s_per_period",
        "client_verify_ms",
        "authority_peak_rss_bytes",
        "client_peak_rss_bytes",
    ] {
        assert!(field(json, key) >= 0.0, "{key} in {json}");
    }
    assert_eq!(json.matches(':').count(), 9, "exactly nine keys: {json}");
    assert!(field(json, "consensus_bytes") > field(json, "consensus_compressed_bytes"));
    assert!(field(json, "consensus_bytes") > field(json, "diff_bytes"));
    assert!(field(json, "authority_peak_rss_bytes") > 0.0);
    assert!(field(json, "client_peak_rss_bytes") > 0.0);
}

/// `allium bench udp` (the command docs/PERFORMANCE.md's UDP figures come from), short:
/// both paths' voice runs come back and each rate run has echoes.
#[test]
fn bench_udp_reports_both_paths() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_allium"));
    cmd.args([
        "bench",
        "udp",
        "--count",
        "20",
        "--rate",
        "50",
        "--seconds",
        "1",
        "--json",
    ]);
    let (ok, stdout, stderr) = run_with_timeout(cmd);
    assert!(ok, "bench udp failed: {stderr}");
    let json = stdout.trim();
    assert!(
        json.starts_with("{\"voice\":[") && json.ends_with("]}"),
        "{json}"
    );
    let values = |key: &str| -> Vec<f64> {
        json.split(&format!("\"{key}\":"))
            .skip(1)
            .map(|rest| {
                let end = rest.find([',', '}']).unwrap();
                rest[..end].parse().unwrap()
            })
            .collect()
    };
    assert_eq!(json.matches("\"path\":\"3 hops\"").count(), 3, "{json}");
    assert_eq!(json.matches("\"path\":\"6 hops\"").count(), 2, "{json}");
    for received in values("received") {
        assert!(received >= 18.0, "{json}");
    }
    for echoed in values("echoed_per_s") {
        assert!(echoed > 0.0, "{json}");
    }
    assert_eq!(values("median_ms").len(), 2, "{json}");
}

/// `allium bench fingerprint` (docs/PERFORMANCE.md, "Circuit fingerprinting"), short: one
/// run without padding, half the fetches uploads, gives every pair and classifier an
/// accuracy and an interval (the run fails if more than a tenth of the fetches fail).
#[test]
fn bench_fingerprint_reports_every_pair_and_classifier() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_allium"));
    cmd.args([
        "bench",
        "fingerprint",
        "--circuits",
        "20",
        "--window-secs",
        "2",
        "--padding",
        "off",
        "--upload-percent",
        "50",
        "--json",
    ]);
    let (ok, stdout, stderr) = run_with_timeout(cmd);
    assert!(ok, "bench fingerprint failed: {stderr}");
    let json = stdout.trim();
    assert!(
        json.starts_with("{\"rows\":[") && json.ends_with("]}"),
        "{json}"
    );
    let rows: Vec<&str> = json.split("{\"padding\":").skip(1).collect();
    assert_eq!(rows.len(), 4 * 4, "4 pairs, 4 classifiers: {json}");
    for row in rows {
        assert!(row.starts_with("\"off\""), "{row}");
        let (acc, lo, hi) = (
            field(row, "accuracy"),
            field(row, "ci_low"),
            field(row, "ci_high"),
        );
        assert!(
            (0.0..=1.0).contains(&acc) && lo <= acc && acc <= hi,
            "{row}"
        );
        assert!(field(row, "per_class") > 0.0, "{row}");
    }
}
