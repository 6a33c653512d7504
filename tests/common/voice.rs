//! Runs the independent RFC 1928 UDP client (tests/udp/voice_client.py, Python standard
//! library only) against a SOCKS5 proxy and reads its one JSON line of figures.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

/// `count` datagrams of 160 bytes at `rate` per second from the proxy at `proxy` to the
/// UDP echo server `echo` (`host:port`; a name is sent to the proxy unresolved). The
/// caller checks python3 first (`prereq::python3`). Returns sent, received, loss_pct,
/// median_ms and p99_ms (null when nothing came back); all five must be there.
pub async fn run(
    proxy: SocketAddr,
    echo: &str,
    count: u32,
    rate: u32,
) -> HashMap<String, Option<f64>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/udp/voice_client.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .args(["--proxy", &proxy.to_string()])
        .args(["--echo", echo])
        .args(["--count", &count.to_string(), "--size", "160"])
        .args(["--rate", &rate.to_string(), "--wait", "2"])
        .kill_on_drop(true)
        .output();
    let limit = Duration::from_secs(60 + u64::from(count / rate.max(1)));
    let out = tokio::time::timeout(limit, out)
        .await
        .expect("voice_client.py hung")
        .expect("python3 did not start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "voice_client.py failed: {stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let line = stdout.trim();
    println!("voice_client.py to {echo}: {line}");
    let figures = flat_json(line);
    for key in ["sent", "received", "loss_pct", "median_ms", "p99_ms"] {
        assert!(figures.contains_key(key), "{key} missing in {line}");
    }
    assert_eq!(figures.len(), 5, "{line}");
    figures
}

/// Figure `k`, which must be a number.
pub fn number(figures: &HashMap<String, Option<f64>>, k: &str) -> f64 {
    figures
        .get(k)
        .copied()
        .flatten()
        .unwrap_or_else(|| panic!("{k} is not a number in {figures:?}"))
}

/// A one-level JSON object of numbers and nulls (what voice_client.py prints), strictly:
/// anything else fails the test. (No JSON crate in the tree.)
fn flat_json(line: &str) -> std::collections::HashMap<String, Option<f64>> {
    let body = line
        .strip_prefix('{')
        .and_then(|l| l.strip_suffix('}'))
        .unwrap_or_else(|| panic!("not a JSON object: {line}"));
    body.split(',')
        .map(|pair| {
            let (k, v) = pair
                .split_once(':')
                .unwrap_or_else(|| panic!("bad member {pair:?} in {line}"));
            let k = k.trim();
            let k = k
                .strip_prefix('"')
                .and_then(|k| k.strip_suffix('"'))
                .unwrap_or_else(|| panic!("bad key {k:?} in {line}"));
            let v = match v.trim() {
                "null" => None,
                n => Some(
                    n.parse::<f64>()
                        .unwrap_or_else(|_| panic!("bad number {n:?}")),
                ),
            };
            (k.to_string(), v)
        })
        .collect()
}
