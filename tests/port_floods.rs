//! Bad input on every listening port of real processes (issue 8, part 3).
//!
//! A multi-process test network (`allium testnet --emit-configs`) is started; then, one
//! after the other, each port is attacked with random bytes, truncated handshakes, maximal
//! length fields, slow-loris connections (one byte per second) and 10,000 half-open
//! connections:
//!
//! - the link port of an authority (which also has a metrics port, and serves the
//!   directory over BEGIN_DIR streams inside circuits: there is no separate directory TCP
//!   port, so the directory is attacked over real circuits);
//! - the proxy's SOCKS and HTTP CONNECT ports.
//!
//! During every attack an honest client (curl through the proxy's SOCKS port, to a local
//! web server, in a loop) must keep fetching; during the authority attacks an honest
//! directory client (a fresh link handshake, a one-hop circuit and a consensus fetch, in a
//! loop) must keep succeeding too. The attacked process must stay up, and its resident
//! memory (VmRSS, sampled every 100 ms) is printed before, during (peak) and after each
//! attack and bounded. Slow connections must be dropped by the server once its handshake
//! timeout (set short in the TOML files) has passed.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use allium::crypto::IdentityPublic;
use allium::dir::request::{DirRequest, DirStatus, DIR_HEADER_LEN};
use allium::proto::dirclient;
use allium::proto::{ClientChannel, ClientCircuit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

mod common;
use common::prereq;
use common::procnet::{ProcNet, Role};

/// Upper bound for the network to form (never a speed assertion).
const NO_HANG: Duration = Duration::from_secs(60);
/// Handshake timeouts set in the TOML files for the test (link and proxy), in seconds.
const HANDSHAKE_TIMEOUT_SECS: u64 = 2;
/// The metrics endpoint's request timeout, set in the authority's TOML for the test.
const METRICS_TIMEOUT_SECS: u64 = 2;
/// Resident memory the attacked process may reach at its peak, above its level before the
/// attack. Generous: a leak under 10,000 connections or megabytes of garbage would exceed it.
const MAX_RSS_GROWTH_KIB: u64 = 256 * 1024;

/// The allium binary: cargo's, unless `ALLIUM_BIN` names a copy (for a target directory
/// shared by several checkouts, where another build can replace cargo's file at any time).
fn bin() -> String {
    std::env::var("ALLIUM_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_allium").to_string())
}

fn start(args: &[&str], log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(bin())
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Free ports on 127.0.0.1 that none of `dir`'s configs names yet; each stays bound until
/// the returned listeners are dropped, so two calls never give the same port.
fn free_ports(dir: &std::path::Path, n: usize) -> (Vec<u16>, Vec<std::net::TcpListener>) {
    let taken: String = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .collect();
    let (mut ports, mut held) = (Vec::new(), Vec::new());
    while ports.len() < n {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        held.push(l);
        if !taken.contains(&format!("127.0.0.1:{port}\"")) {
            ports.push(port);
        }
    }
    (ports, held)
}

/// VmRSS of `pid` in KiB, if the process exists.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Deterministic pseudo-random bytes (xorshift): "random" input that reproduces.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Successes of an honest client, with their times.
#[derive(Default)]
struct Honest {
    ok: Mutex<Vec<Instant>>,
    fail: Mutex<Vec<Instant>>,
}

impl Honest {
    /// (successes, failures) that ended between `from` and `to`.
    fn count_between(&self, from: Instant, to: Instant) -> (usize, usize) {
        let n = |v: &Mutex<Vec<Instant>>| {
            v.lock()
                .unwrap()
                .iter()
                .filter(|t| **t >= from && **t <= to)
                .count()
        };
        (n(&self.ok), n(&self.fail))
    }
}

/// One curl through the proxy; true if the page came back.
async fn curl_once(socks: &str, web: SocketAddr) -> bool {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "--socks5-hostname", socks])
        .arg(format!("http://{web}/"))
        .kill_on_drop(true)
        .output()
        .await;
    out.is_ok_and(|o| {
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("allium test network")
    })
}

/// Fetches through the proxy in a loop until `stop`.
fn spawn_honest_curl(socks: String, web: SocketAddr, stop: Arc<AtomicBool>) -> Arc<Honest> {
    let honest = Arc::new(Honest::default());
    let h = Arc::clone(&honest);
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            if curl_once(&socks, web).await {
                h.ok.lock().unwrap().push(Instant::now());
            } else {
                h.fail.lock().unwrap().push(Instant::now());
            }
            // A steady, modest load: the attacks need the CPU more than curl does.
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    });
    honest
}

/// Fetches the consensus from the authority in a loop until `stop`, each time over a new
/// channel (a full link handshake) and a one-hop circuit.
fn spawn_honest_dir(addr: SocketAddr, id: IdentityPublic, stop: Arc<AtomicBool>) -> Arc<Honest> {
    let honest = Arc::new(Honest::default());
    let h = Arc::clone(&honest);
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let r = dirclient::one_shot(
                addr,
                &id,
                &DirRequest::GetConsensus,
                Duration::from_secs(8),
                &allium::clock::Clock::system(),
            )
            .await;
            if r.is_ok_and(|resp| resp.status == DirStatus::Ok) {
                h.ok.lock().unwrap().push(Instant::now());
            } else {
                h.fail.lock().unwrap().push(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    honest
}

/// Scrapes the metrics endpoint in a loop until `stop`.
fn spawn_honest_metrics(addr: SocketAddr, stop: Arc<AtomicBool>) -> Arc<Honest> {
    let honest = Arc::new(Honest::default());
    let h = Arc::clone(&honest);
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let scrape = async {
                let mut s = TcpStream::connect(addr).await.ok()?;
                s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                    .await
                    .ok()?;
                let mut page = Vec::new();
                s.read_to_end(&mut page).await.ok()?;
                Some(String::from_utf8_lossy(&page).contains("allium_link_handshakes_total"))
            };
            let ok = tokio::time::timeout(Duration::from_secs(5), scrape).await;
            if matches!(ok, Ok(Some(true))) {
                h.ok.lock().unwrap().push(Instant::now());
            } else {
                h.fail.lock().unwrap().push(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    honest
}

/// Samples VmRSS every 100 ms and keeps the peak.
struct RssWatch {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssWatch {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_kib(pid).unwrap_or(0)));
        let (s, p) = (Arc::clone(&stop), Arc::clone(&peak));
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                if let Some(r) = rss_kib(pid) {
                    p.fetch_max(r, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        RssWatch { stop, peak, task }
    }

    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.peak.load(Ordering::Relaxed)
    }
}

/// What the test knows about one attacked process.
struct Target<'a> {
    name: &'static str,
    child: &'a mut Child,
}

/// Honest clients watched during a phase, with the minimum successes each must have.
struct Watched<'a> {
    name: &'static str,
    honest: &'a Honest,
    min: usize,
}

/// Runs one attack against `target`, measuring its memory and the honest clients.
async fn phase<F>(target: &mut Target<'_>, attack: &str, watched: &[Watched<'_>], work: F)
where
    F: std::future::Future<Output = String>,
{
    let pid = target.child.id().expect("target process has exited");
    let before = rss_kib(pid).unwrap_or(0);
    let watch = RssWatch::start(pid);
    let t0 = Instant::now();
    // A NO_HANG bound only: every attack below ends on its own within seconds.
    let outcome = tokio::time::timeout(Duration::from_secs(60), work)
        .await
        .unwrap_or_else(|_| panic!("{}: {attack} did not finish", target.name));
    let t1 = Instant::now();
    let peak = watch.finish().await;
    // Give the process a moment to release what the attack made it allocate.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid).unwrap_or(0);
    let alive = matches!(target.child.try_wait(), Ok(None));
    let mut honest_line = String::new();
    let mut starved = Vec::new();
    for w in watched {
        let (n, failed) = w.honest.count_between(t0, t1);
        honest_line.push_str(&format!(" {} {n} ok/{failed} failed", w.name));
        if n < w.min {
            starved.push(format!("{} ({n} < {})", w.name, w.min));
        }
    }
    println!(
        "[{}] {attack}: {:.1} s; RSS before {before} KiB, peak {peak} KiB, after {after} KiB; honest during:{honest_line}; {outcome}",
        target.name,
        (t1 - t0).as_secs_f64(),
    );
    assert!(alive, "{}: process died during {attack}", target.name);
    assert!(
        peak.saturating_sub(before) <= MAX_RSS_GROWTH_KIB,
        "{}: RSS grew from {before} to {peak} KiB during {attack}",
        target.name
    );
    assert!(
        starved.is_empty(),
        "{}: honest clients starved during {attack}: {starved:?}",
        target.name
    );
}

/// Opens `n` connections at once; each sends one of `payloads` (round robin), then reads
/// until the server closes or `hold` passes. Returns a summary.
async fn garbage(
    addr: SocketAddr,
    n: usize,
    payloads: Arc<Vec<Vec<u8>>>,
    hold: Duration,
) -> String {
    let closed = Arc::new(AtomicU64::new(0));
    let connected = Arc::new(AtomicU64::new(0));
    let replied = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let payloads = Arc::clone(&payloads);
        let (closed, connected, replied) = (
            Arc::clone(&closed),
            Arc::clone(&connected),
            Arc::clone(&replied),
        );
        tasks.spawn(async move {
            let Ok(Ok(mut s)) =
                tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr)).await
            else {
                return;
            };
            connected.fetch_add(1, Ordering::Relaxed);
            let payload = &payloads[i % payloads.len()];
            let _ = s.write_all(payload).await;
            let mut buf = vec![0u8; 4096];
            let end = tokio::time::Instant::now() + hold;
            let mut got = 0usize;
            loop {
                match tokio::time::timeout_at(end, s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => {
                        closed.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Ok(Ok(k)) => got += k,
                    Err(_) => break,
                }
            }
            if got > 0 {
                replied.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    format!(
        "{} connections: {} connected, {} got a reply, {} closed by the server within {} s",
        n,
        connected.load(Ordering::Relaxed),
        replied.load(Ordering::Relaxed),
        closed.load(Ordering::Relaxed),
        hold.as_secs()
    )
}

/// `n` connections that each send one byte of `bytes` per second (cycling) for at most
/// `max`. Returns (connected, dropped by the server, latest drop in seconds).
async fn slow_loris(
    addr: SocketAddr,
    n: usize,
    bytes: Arc<Vec<u8>>,
    max: Duration,
) -> (u64, u64, f64) {
    let connected = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let latest = Arc::new(Mutex::new(0f64));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let bytes = Arc::clone(&bytes);
        let (connected, dropped, latest) = (
            Arc::clone(&connected),
            Arc::clone(&dropped),
            Arc::clone(&latest),
        );
        tasks.spawn(async move {
            let Ok(Ok(mut s)) =
                tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr)).await
            else {
                return;
            };
            connected.fetch_add(1, Ordering::Relaxed);
            let t0 = Instant::now();
            let mut buf = [0u8; 1024];
            let mut i = 0usize;
            while t0.elapsed() < max {
                let b = bytes[i % bytes.len()];
                i += 1;
                let gone = s.write_all(&[b]).await.is_err()
                    || match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => true,
                        Ok(Ok(_)) => false, // a reply (e.g. a SOCKS method choice): keep going
                        Err(_) => false,
                    };
                if gone {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    let mut l = latest.lock().unwrap();
                    *l = l.max(t0.elapsed().as_secs_f64());
                    return;
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let l = *latest.lock().unwrap();
    (
        connected.load(Ordering::Relaxed),
        dropped.load(Ordering::Relaxed),
        l,
    )
}

/// Slow-loris with the assertion that the server drops every slow connection once its
/// handshake timeout has passed.
async fn slow_loris_checked(addr: SocketAddr, bytes: Vec<u8>, timeout_secs: u64) -> String {
    let n = 200;
    // Long enough for the server's timeout plus scheduling slack on a loaded machine.
    let max = Duration::from_secs(timeout_secs + 4);
    let (connected, dropped, latest) = slow_loris(addr, n, Arc::new(bytes), max).await;
    assert!(connected > 0, "no slow connection could connect to {addr}");
    assert_eq!(
        dropped, connected,
        "the server kept {} of {connected} one-byte-per-second connections past its {timeout_secs} s handshake timeout",
        connected - dropped
    );
    format!(
        "{n} slow connections (1 byte/s): {connected} connected, {dropped} dropped by the server, the last after {latest:.1} s (handshake timeout {timeout_secs} s)"
    )
}

/// Opens `n` connections that never send anything and holds them for `hold`.
async fn half_open(addr: SocketAddr, n: usize, hold: Duration) -> String {
    let t0 = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(512));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let gate = Arc::clone(&gate);
        tasks.spawn(async move {
            let _p = gate.acquire_owned().await.ok()?;
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
                .await
                .ok()?
                .ok()
        });
    }
    let mut held = Vec::with_capacity(n);
    while let Some(r) = tasks.join_next().await {
        if let Ok(Some(s)) = r {
            held.push(s);
        }
    }
    let connect_secs = t0.elapsed().as_secs_f64();
    let connected = held.len();
    tokio::time::sleep(hold).await;
    // How many did the server close (or reset) while we held them?
    let mut closed = 0usize;
    let mut buf = [0u8; 64];
    for s in &held {
        match s.try_read(&mut buf) {
            Ok(0) => closed += 1,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => closed += 1,
        }
    }
    drop(held);
    format!(
        "{n} half-open connections: {connected} connected (in {connect_secs:.1} s; the rest timed out in the SYN/accept queue), {closed} closed by the server while held {} s",
        hold.as_secs()
    )
}

/// Directory abuse over real circuits: many BEGIN_DIR streams with garbage, truncated,
/// maximal and over-long requests. Returns a summary.
async fn dir_attack(addr: SocketAddr, id: IdentityPublic) -> String {
    let cfg = allium::link::LinkConfig::default();
    let chan = ClientChannel::connect_to(addr, &id, &cfg).await.unwrap();
    let mut circuits = Vec::new();
    for _ in 0..4 {
        let c = ClientCircuit::create_fast(&chan, id, Duration::from_secs(10))
            .await
            .unwrap();
        circuits.push(Arc::new(c.into_handle()));
    }
    let max_desc = allium::dir::descriptor::MAX_DESCRIPTOR_LEN as u32;
    let mut requests: Vec<(&'static str, Vec<u8>, bool)> = vec![
        // (what, bytes, close our side after sending)
        ("random bytes", noise(4096, 7), true),
        (
            "unknown kind",
            [&[0xEEu8, 0, 0, 0, 8][..], &[0u8; 8]].concat(),
            true,
        ),
        ("truncated header", vec![0u8, 0], true),
        ("over-long length", vec![2u8, 0xFF, 0xFF, 0xFF, 0xFF], false),
        (
            "length above the kind's bound",
            vec![1u8, 0, 0x80, 0, 0],
            false,
        ),
    ];
    // The largest descriptor upload the server accepts, full of garbage.
    let mut max = vec![2u8];
    max.extend_from_slice(&max_desc.to_be_bytes());
    max.extend_from_slice(&noise(max_desc as usize, 11));
    requests.push(("maximal descriptor of garbage", max, true));
    // A maximal upload announced, but only half of it sent (held open).
    let mut half = vec![2u8];
    half.extend_from_slice(&max_desc.to_be_bytes());
    half.extend_from_slice(&noise(max_desc as usize / 2, 13));
    requests.push(("maximal upload cut in half", half, false));
    let requests = Arc::new(requests);

    let answers = Arc::new(Mutex::new(std::collections::BTreeMap::<String, u64>::new()));
    let mut tasks = tokio::task::JoinSet::new();
    let per_circuit = 120usize;
    for c in &circuits {
        for i in 0..per_circuit {
            let c = Arc::clone(c);
            let requests = Arc::clone(&requests);
            let answers = Arc::clone(&answers);
            tasks.spawn(async move {
                let (what, bytes, close) = &requests[i % requests.len()];
                let key = |k: &str| format!("{what}: {k}");
                let mut s = match c.open_dir_stream(Duration::from_secs(10)).await {
                    Ok(s) => s,
                    Err(e) => {
                        *answers
                            .lock()
                            .unwrap()
                            .entry(key(&format!("not opened ({e})")))
                            .or_default() += 1;
                        return;
                    }
                };
                let _ = s.write_all(bytes).await;
                let _ = s.flush().await;
                if *close {
                    let _ = s.shutdown().await;
                }
                let mut header = [0u8; DIR_HEADER_LEN];
                let outcome =
                    match tokio::time::timeout(Duration::from_secs(4), s.read_exact(&mut header))
                        .await
                    {
                        Ok(Ok(_)) => format!("status {}", header[0]),
                        Ok(Err(_)) => "closed without an answer".to_string(),
                        Err(_) => "held open (no answer yet)".to_string(),
                    };
                *answers.lock().unwrap().entry(key(&outcome)).or_default() += 1;
            });
        }
    }
    while tasks.join_next().await.is_some() {}
    for c in &circuits {
        c.close().await;
    }
    chan.sender.close();
    let answers = answers.lock().unwrap();
    // Every complete malformed request is answered BadRequest (3); nothing is served.
    for (k, v) in answers.iter() {
        assert!(
            !k.contains("status 0") && !k.contains("not opened"),
            "unexpected directory outcome {k} ({v} streams)"
        );
    }
    format!(
        "{} BEGIN_DIR streams on {} circuits: {:?}",
        circuits.len() * per_circuit,
        circuits.len(),
        *answers
    )
}

/// Inserts `lines` right after the `[table]` header line of a TOML file.
fn add_to_table(path: &Path, table: &str, lines: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    let header = format!("[{table}]\n");
    assert!(
        text.contains(&header),
        "{} has no [{table}]",
        path.display()
    );
    let text = text.replacen(&header, &format!("{header}{lines}\n"), 1);
    std::fs::write(path, text).unwrap();
}

fn emit(dir: &Path) -> Vec<PathBuf> {
    let status = std::process::Command::new(bin())
        .args(["testnet", "--emit-configs"])
        .arg(dir)
        .args([
            "--authorities",
            "3",
            "--relays",
            "4",
            "--exits",
            "2",
            "--period",
            "6",
        ])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

fn toml_value(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .unwrap()
        .trim_matches('"')
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_port_survives_bad_input_and_floods() {
    if !prereq::require(&[prereq::curl()]) {
        return;
    }
    let suite = Instant::now();
    let dir = std::env::temp_dir().join(format!("allium-floods-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let files = emit(&dir);

    // The attacked authority: short link handshake timeout, metrics on.
    let auth_path = dir.join("authority-1.toml");
    let (ports, held) = free_ports(&dir, 2);
    let metrics: SocketAddr = format!("127.0.0.1:{}", ports[0]).parse().unwrap();
    let mut auth_text = std::fs::read_to_string(&auth_path).unwrap();
    auth_text.push_str(&format!(
        "\n[limits]\nlink_handshake_timeout_secs = {HANDSHAKE_TIMEOUT_SECS}\n\n[metrics]\nlisten = \"{metrics}\"\nrequest_timeout_secs = {METRICS_TIMEOUT_SECS}\n"
    ));
    std::fs::write(&auth_path, &auth_text).unwrap();
    let auth_addr: SocketAddr = toml_value(&auth_text, "listen").parse().unwrap();
    let auth_id: IdentityPublic = toml_value(&auth_text, "identity").parse().unwrap();
    // The attacked proxy: an HTTP CONNECT port too, short handshake timeout.
    let proxy_path = dir.join("proxy.toml");
    let http: SocketAddr = format!("127.0.0.1:{}", ports[1]).parse().unwrap();
    drop(held);
    add_to_table(
        &proxy_path,
        "proxy",
        &format!(
            "http_connect_listen = \"{http}\"\nhandshake_timeout_secs = {HANDSHAKE_TIMEOUT_SECS}"
        ),
    );
    let socks = toml_value(
        &std::fs::read_to_string(&proxy_path).unwrap(),
        "socks_listen",
    );
    let socks_addr: SocketAddr = socks.parse().unwrap();

    // The nodes' identities, read before any process starts (this creates the relays' keys).
    let layout = ProcNet::open(&dir);
    let mut authority = None;
    let mut others = Vec::new();
    for f in files.iter().filter(|f| !f.ends_with("proxy.toml")) {
        let name = f.file_stem().unwrap().to_string_lossy().to_string();
        let cmd = if name.starts_with("authority") {
            "authority"
        } else {
            "relay"
        };
        let child = start(
            &[cmd, "--config", f.to_str().unwrap()],
            &dir.join(format!("{name}.log")),
        );
        match name.as_str() {
            "authority-1" => authority = Some(child),
            _ => others.push(child),
        }
    }
    let mut authority = authority.unwrap();
    // Nothing is measured before every authority (the honest directory client asks
    // authority-1) and every relay's cache serve a consensus listing every relay; only
    // then does the proxy start, so it bootstraps from such a consensus.
    layout
        .wait_until_listed_by(NO_HANG, |n| n.role != Role::Proxy)
        .await;
    println!(
        "consensus lists every relay after {:.1} s",
        suite.elapsed().as_secs_f64()
    );
    let mut proxy = start(
        &["proxy", "--config", proxy_path.to_str().unwrap()],
        &dir.join("proxy.log"),
    );

    let web = allium::cli::demo_server::start().await.unwrap();
    // Wait until the proxy has bootstrapped (a bound so a broken network fails instead of
    // hanging).
    let mut ready = false;
    for _ in 0..120 {
        if curl_once(&socks, web).await {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if !ready {
        for f in &files {
            let log = f.with_extension("log");
            eprintln!(
                "--- {}:\n{}",
                log.display(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        panic!("no page through the multi-process network");
    }
    println!("network ready after {:.1} s", suite.elapsed().as_secs_f64());

    let stop = Arc::new(AtomicBool::new(false));
    let curl = spawn_honest_curl(socks.clone(), web, Arc::clone(&stop));
    let dirc = spawn_honest_dir(auth_addr, auth_id, Arc::clone(&stop));
    let scraper = spawn_honest_metrics(metrics, Arc::clone(&stop));
    tokio::time::sleep(Duration::from_secs(1)).await;

    // ---- The authority: link port, directory over BEGIN_DIR, metrics port. ----
    let mut t = Target {
        name: "authority-1",
        child: &mut authority,
    };
    // Every honest client must succeed at least this often during each authority attack.
    let both = |min: usize| {
        [
            Watched {
                name: "curl",
                honest: &curl,
                min: 2 * min,
            },
            Watched {
                name: "dir",
                honest: &dirc,
                min,
            },
            Watched {
                name: "metrics",
                honest: &scraper,
                min,
            },
        ]
    };
    // Link records: a LINK_INIT cell with the maximal length field and garbage data, and
    // one whose length field exceeds the cell (0xFFFF).
    let mut link_init_max = vec![0u8, 0, 0, 0, 16, 0x01, 0xFE];
    link_init_max.extend_from_slice(&noise(510, 3));
    link_init_max.resize(533, 0);
    let mut link_init_over = vec![0u8, 0, 0, 0, 16, 0xFF, 0xFF];
    link_init_over.extend_from_slice(&noise(510, 5));
    link_init_over.resize(533, 0);
    let link_payloads = Arc::new(vec![
        noise(64 * 1024, 1),           // random bytes
        link_init_max[..200].to_vec(), // Noise first message cut short
        vec![0u8, 0, 0, 0, 16],        // a cell header alone
        link_init_max.repeat(64),      // maximal length field, then more records
        link_init_over,                // length field larger than the cell
    ]);
    phase(
        &mut t,
        "link port: random, truncated, maximal-length records",
        &both(1),
        async {
            garbage(
                auth_addr,
                300,
                Arc::clone(&link_payloads),
                Duration::from_secs(HANDSHAKE_TIMEOUT_SECS + 2),
            )
            .await
        },
    )
    .await;
    phase(&mut t, "link port: slow-loris", &both(1), async {
        slow_loris_checked(auth_addr, link_init_max.clone(), HANDSHAKE_TIMEOUT_SECS).await
    })
    .await;
    // Half-open flood: honest link handshakes compete with 10,000 idle connections.
    phase(&mut t, "link port: 10,000 half-open", &both(1), async {
        half_open(auth_addr, 10_000, Duration::from_secs(2)).await
    })
    .await;
    phase(
        &mut t,
        "directory (BEGIN_DIR): garbage, truncated, maximal requests",
        &both(1),
        async { dir_attack(auth_addr, auth_id).await },
    )
    .await;
    let metrics_payloads = Arc::new(vec![
        noise(64 * 1024, 9),                                // random bytes
        b"GET /metr".to_vec(),                              // request line without end
        [&b"GET /"[..], &vec![b'a'; 100_000][..]].concat(), // endless request line
        b"GET / HTTP/1.1\r\n"
            .iter()
            .chain(b"X-Flood: yes\r\n".repeat(5000).iter())
            .copied()
            .collect(),
    ]);
    phase(
        &mut t,
        "metrics port: random, truncated, maximal requests",
        &both(1),
        async {
            garbage(
                metrics,
                200,
                Arc::clone(&metrics_payloads),
                Duration::from_secs(METRICS_TIMEOUT_SECS + 2),
            )
            .await
        },
    )
    .await;
    // Known weakness (closing note): 200 slow-loris clients that keep sending a byte a
    // second hold the metrics port's 16 slots until their 2 s deadline, so the honest
    // scraper may get none in; curl and the directory must still be served.
    let mut metrics_loris = both(1);
    metrics_loris[2].min = 0;
    phase(&mut t, "metrics port: slow-loris", &metrics_loris, async {
        slow_loris_checked(
            metrics,
            b"GET /metrics HTTP/1.1\r\nX: ".to_vec(),
            METRICS_TIMEOUT_SECS,
        )
        .await
    })
    .await;
    // Under 10,000 silent connections the oldest silent one is evicted for each newcomer,
    // so at thousands of connections a second the scraper's own connection may be evicted
    // before the server task has read its request: on an idle machine it usually gets one
    // in, on a loaded one (CI, 2 cores) sometimes none. The process must survive and curl
    // and the directory be served.
    phase(
        &mut t,
        "metrics port: 10,000 half-open",
        &metrics_loris,
        async { half_open(metrics, 10_000, Duration::from_secs(2)).await },
    )
    .await;

    // ---- The proxy: SOCKS and HTTP CONNECT ports. ----
    let mut t = Target {
        name: "proxy",
        child: &mut proxy,
    };
    let only_curl = [Watched {
        name: "curl",
        honest: &curl,
        min: 1,
    }];
    let mut socks5_max = vec![5u8, 255];
    socks5_max.extend(1..=255u8);
    // A SOCKS5 request for a 255-byte hostname (never completed: port missing).
    let mut socks5_req = vec![5u8, 1, 0, 3, 255];
    socks5_req.extend(std::iter::repeat_n(b'h', 255));
    let mut socks4a_long = vec![4u8, 1, 0, 80, 0, 0, 0, 1];
    socks4a_long.extend(std::iter::repeat_n(b'u', 100_000)); // userid without NUL
    let socks_payloads = Arc::new(vec![
        noise(64 * 1024, 21),                              // random bytes
        vec![5u8, 3, 0],                                   // greeting cut short
        socks5_max.clone(),                                // 255 methods
        [&[5u8, 1, 0][..], &socks5_req[..]].concat(),      // 255-byte hostname, cut before the port
        socks4a_long,                                      // very long SOCKS4a userid
        vec![5u8, 1, 0, 5, 1, 0, 0xFF, 1, 2, 3, 4, 0, 80], // bad address type
    ]);
    phase(
        &mut t,
        "SOCKS port: random, truncated, maximal-length",
        &only_curl,
        async {
            garbage(
                socks_addr,
                300,
                Arc::clone(&socks_payloads),
                Duration::from_secs(HANDSHAKE_TIMEOUT_SECS + 2),
            )
            .await
        },
    )
    .await;
    let header_flood: Vec<u8> = b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n"
        .iter()
        .chain(
            b"X-Flood: yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\r\n"
                .repeat(10_000)
                .iter(),
        )
        .copied()
        .collect();
    let http_payloads = Arc::new(vec![
        noise(64 * 1024, 31),                                  // random bytes
        b"CONNECT 127.0.0.1:80 HTT".to_vec(),                  // request line without end
        [&b"CONNECT "[..], &vec![b'h'; 100_000][..]].concat(), // endless request line
        header_flood,                                          // header flood
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),         // not a CONNECT
    ]);
    phase(
        &mut t,
        "HTTP CONNECT port: random, truncated, maximal-length",
        &only_curl,
        async {
            garbage(
                http,
                300,
                Arc::clone(&http_payloads),
                Duration::from_secs(HANDSHAKE_TIMEOUT_SECS + 2),
            )
            .await
        },
    )
    .await;
    phase(
        &mut t,
        "SOCKS and HTTP CONNECT ports: slow-loris",
        &only_curl,
        async {
            let (a, b) = tokio::join!(
                slow_loris_checked(socks_addr, socks5_max.clone(), HANDSHAKE_TIMEOUT_SECS),
                slow_loris_checked(
                    http,
                    b"CONNECT 127.0.0.1:80 HTTP/1.1\r\nX: ".to_vec(),
                    HANDSHAKE_TIMEOUT_SECS
                ),
            );
            format!("SOCKS: {a}; HTTP: {b}")
        },
    )
    .await;
    phase(&mut t, "SOCKS port: 10,000 half-open", &only_curl, async {
        half_open(socks_addr, 10_000, Duration::from_secs(2)).await
    })
    .await;
    phase(
        &mut t,
        "HTTP CONNECT port: 10,000 half-open",
        &only_curl,
        async { half_open(http, 10_000, Duration::from_secs(2)).await },
    )
    .await;

    stop.store(true, Ordering::Relaxed);
    println!(
        "honest totals: curl {} ok / {} failed, directory {} ok / {} failed, metrics {} ok / {} failed; whole test {:.1} s",
        curl.ok.lock().unwrap().len(),
        curl.fail.lock().unwrap().len(),
        dirc.ok.lock().unwrap().len(),
        dirc.fail.lock().unwrap().len(),
        scraper.ok.lock().unwrap().len(),
        scraper.fail.lock().unwrap().len(),
        suite.elapsed().as_secs_f64()
    );
    for c in others.iter_mut().chain([&mut authority, &mut proxy]) {
        let _ = c.start_kill();
    }
    for c in others.iter_mut().chain([&mut authority, &mut proxy]) {
        let _ = c.wait().await;
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
