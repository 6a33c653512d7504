//! Fault injection on a network of real processes (issue 8, part 2): relays SIGKILLed in the
//! middle of a 50 MB transfer, every authority stopped, a relay restarted with its keys.
//! Each test runs its own network from `allium testnet --emit-configs` (tests/common/procnet.rs)
//! and talks to it with curl, so what is checked is what a user of the binaries sees.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::prereq;
use common::procnet::{self, curl, curl_as, ProcNet, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Consensus period of the test networks (the shortest the authorities accept).
const PERIOD: u64 = 6;
/// Upper bound for anything that must not hang (never a speed assertion).
const NO_HANG: Duration = Duration::from_secs(60);
/// The transfer cut by a kill.
const BIG: u64 = 50_000_000;
/// curl's rate limit for the big transfer, so the kill lands in the middle of it.
const RATE: &str = "4M";

/// The byte at `offset` of every test download.
fn pattern(offset: u64) -> u8 {
    (offset % 251) as u8
}

/// A web server on 127.0.0.1 serving `/N` as N pattern bytes; it records the peer address
/// of every connection (so the test can tell which process is the exit).
async fn web_server() -> (SocketAddr, Arc<Mutex<Vec<SocketAddr>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peers = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&peers);
    tokio::spawn(async move {
        while let Ok((mut sock, peer)) = listener.accept().await {
            seen.lock().unwrap().push(peer);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let n: u64 = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|p| p.trim_start_matches('/').parse().ok())
                    .unwrap_or(0);
                let header =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n");
                if sock.write_all(header.as_bytes()).await.is_err() {
                    return;
                }
                let mut sent = 0u64;
                let mut chunk = vec![0u8; 64 * 1024];
                while sent < n {
                    let take = (n - sent).min(chunk.len() as u64) as usize;
                    for (i, b) in chunk[..take].iter_mut().enumerate() {
                        *b = pattern(sent + i as u64);
                    }
                    if sock.write_all(&chunk[..take]).await.is_err() {
                        return;
                    }
                    sent += take as u64;
                }
                let _ = sock.shutdown().await;
            });
        }
    });
    (addr, peers)
}

/// Whether `body` is exactly the first `n` pattern bytes.
fn is_pattern(body: &[u8], n: u64) -> bool {
    body.len() as u64 == n
        && body
            .iter()
            .enumerate()
            .all(|(i, b)| *b == pattern(i as u64))
}

/// A whole network with metrics on every relay, the proxy bootstrapped from a consensus
/// listing every relay.
async fn network(tag: &str, relays: usize, exits: usize, proxy_extra: &str) -> ProcNet {
    let dir = procnet::emit(tag, 3, relays, exits, PERIOD);
    procnet::enable_metrics(&dir);
    procnet::add_to_proxy(&dir, proxy_extra);
    let mut net = ProcNet::open(&dir);
    net.start_ready(NO_HANG).await;
    net
}

/// Every relay's `allium_cells_relayed_total`, by name.
async fn cells(net: &ProcNet) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for n in net.by_role(Role::Relay) {
        if let Some(v) = net.metric(&n.name, "allium_cells_relayed_total").await {
            out.push((n.name.clone(), v));
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    /// SIGKILL the middle.
    Middle,
    /// SIGKILL the exit.
    Exit,
    /// SIGSTOP the middle: its connections stay open, the circuit silently stalls.
    HungMiddle,
}

/// The proxy's `stream_idle_secs` in the hung-relay test.
const STREAM_IDLE_SECS: u64 = 5;

/// The relays (guard, middle, exit) carrying the transfer now under way, found with the
/// product's own interfaces: the three relays whose relayed-cell counters grow (metrics),
/// the exit as the process owning the connection to our web server, the guard as the one
/// the proxy holds a connection to.
async fn find_path(
    net: &ProcNet,
    web: SocketAddr,
    peers: &Mutex<Vec<SocketAddr>>,
    before: &[(String, f64)],
) -> (String, String, String) {
    let after = cells(net).await;
    let mut deltas: Vec<(String, f64)> = after
        .iter()
        .map(|(n, v)| {
            let b = before.iter().find(|(m, _)| m == n).map_or(0.0, |x| x.1);
            (n.clone(), v - b)
        })
        .collect();
    deltas.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
    eprintln!("relayed cells during the first seconds of the transfer: {deltas:?}");
    let path: Vec<String> = deltas.iter().take(3).map(|d| d.0.clone()).collect();
    assert!(
        deltas.len() > 3 && deltas[2].1 > 1000.0 && deltas[2].1 > 4.0 * deltas[3].1.max(1.0),
        "three relays should carry the transfer: {deltas:?}"
    );
    let peer = *peers
        .lock()
        .unwrap()
        .last()
        .expect("no connection to the web server");
    let exit = net
        .owner_of_connection(peer.port(), web.port())
        .expect("no process owns the exit connection")
        .name
        .clone();
    assert!(path.contains(&exit), "exit {exit} not on the path {path:?}");
    let proxy = net.by_role(Role::Proxy).next().unwrap().name.clone();
    let linked: Vec<String> = net
        .connected_to(&proxy)
        .into_iter()
        .map(|n| n.name.clone())
        .filter(|n| path.contains(n) && *n != exit)
        .collect();
    let guard = match linked.as_slice() {
        [g] => g.clone(),
        _ => {
            // The proxy also holds a channel to the middle (another of its guards): the
            // guard in use is the first sampled guard on the path.
            let dir = net
                .by_role(Role::Proxy)
                .next()
                .unwrap()
                .data_dir
                .clone()
                .unwrap();
            let set = allium::dir::GuardSet::load(&dir.join("guards"), Default::default()).unwrap();
            let first = set
                .sampled()
                .filter_map(|id| net.by_identity(id))
                .map(|n| n.name.clone())
                .find(|n| linked.contains(n))
                .expect("no guard among the proxy's links");
            first
        }
    };
    let middle = path
        .iter()
        .find(|n| **n != exit && **n != guard)
        .unwrap()
        .clone();
    (guard, middle, exit)
}

async fn kill_during_transfer(tag: &str, victim: Victim) {
    if !prereq::require(&[prereq::curl()]) {
        return;
    }
    let extra = match victim {
        Victim::HungMiddle => format!("stream_idle_secs = {STREAM_IDLE_SECS}"),
        _ => String::new(),
    };
    let mut net = network(tag, 5, 2, &extra).await;
    let socks = net.socks();
    let (web, peers) = web_server().await;

    // The proxy works (and has a circuit in use for what follows).
    let (code, body, err) = curl(socks, &format!("http://{web}/1000"), &["--max-time", "30"]).await;
    if code != 0 || !is_pattern(&body, 1000) {
        net.dump_logs();
        panic!("{tag}: first request failed ({code}): {err}");
    }

    let before = cells(&net).await;
    let out = net.dir.join("big.bin");
    let url = format!("http://{web}/{BIG}");
    let out_arg = out.to_str().unwrap().to_string();
    let started = Instant::now();
    let transfer = tokio::spawn(async move {
        let r = curl(
            socks,
            &url,
            &["--limit-rate", RATE, "--max-time", "120", "-o", &out_arg],
        )
        .await;
        (r, Instant::now())
    });
    // Let a few MB flow so the path shows in the counters.
    while std::fs::metadata(&out).map_or(0, |m| m.len()) < 4_000_000 {
        assert!(
            started.elapsed() < NO_HANG,
            "{tag}: the transfer did not start"
        );
        assert!(!transfer.is_finished(), "{tag}: curl ended early");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (guard, middle, exit) = find_path(&net, web, &peers, &before).await;
    eprintln!("{tag}: path guard={guard} middle={middle} exit={exit}");
    let target = match victim {
        Victim::Middle | Victim::HungMiddle => middle.clone(),
        Victim::Exit => exit.clone(),
    };
    let got_before = std::fs::metadata(net.dir.join("big.bin")).unwrap().len();
    let killed_at = Instant::now();
    if victim == Victim::HungMiddle {
        net.signal(&target, "STOP");
    } else {
        net.kill(&target).await;
    }
    let joined = tokio::time::timeout(NO_HANG * 2, transfer).await;
    let ((code, _, err), ended_at) = joined
        .unwrap_or_else(|_| panic!("{tag}: curl still running {NO_HANG:?} after the kill"))
        .unwrap();
    let got = std::fs::metadata(net.dir.join("big.bin")).map_or(0, |m| m.len());
    let kill_to_error = ended_at.duration_since(killed_at);
    eprintln!(
        "{tag}: {} {target} ({victim:?}) after {got_before} bytes; curl exited with {code} \
         after {got} bytes, {:.2} s after the kill: {}",
        if victim == Victim::HungMiddle {
            "SIGSTOP"
        } else {
            "SIGKILL"
        },
        kill_to_error.as_secs_f64(),
        err.trim()
    );
    assert_ne!(
        code, 0,
        "{tag}: the cut transfer must fail, not look complete"
    );
    assert!(
        (got as u64) < BIG,
        "{tag}: all bytes arrived despite the kill"
    );
    // The proxy closes the stream once the circuit is gone, or (hung relay) once it has
    // been idle for stream_idle_secs: well before curl's own 120 s.
    assert!(
        kill_to_error < Duration::from_secs(30),
        "{tag}: the stream took {kill_to_error:?} to fail"
    );
    if victim == Victim::HungMiddle {
        assert!(
            kill_to_error >= Duration::from_secs(STREAM_IDLE_SECS - 1),
            "{tag}: the stalled stream closed before the idle limit"
        );
        // The hung relay still accepts TCP connections but never answers; it is killed
        // here so the next requests do not wait out circuit build timeouts.
        net.signal(&target, "CONT");
        net.kill(&target).await;
    }

    // The next request gets a new circuit and succeeds, byte-identical.
    let t = Instant::now();
    let (code, body, err) = curl(
        socks,
        &format!("http://{web}/{}", 5_000_000),
        &["--max-time", "60"],
    )
    .await;
    eprintln!(
        "{tag}: next request: exit code {code}, {} bytes, {:.2} s",
        body.len(),
        t.elapsed().as_secs_f64()
    );
    if code != 0 || !is_pattern(&body, 5_000_000) {
        net.dump_logs();
        panic!("{tag}: the request after the kill failed ({code}): {err}");
    }
    // The dead relay stays listed in the consensus for a while: new circuits, each
    // drawn from that consensus, must still carry every request.
    for n in 0..6 {
        let (code, body, err) = curl_as(
            socks,
            Some(&format!("after{n}")),
            &format!("http://{web}/100000"),
            &["--max-time", "60"],
        )
        .await;
        if code != 0 || !is_pattern(&body, 100_000) {
            net.dump_logs();
            panic!("{tag}: request {n} on a new circuit after the kill failed ({code}): {err}");
        }
    }
    eprintln!("{tag}: 6 more requests on new circuits after the kill: all served");
    net.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn middle_killed_mid_transfer_fails_the_stream_and_next_request_works() {
    kill_during_transfer("faults-middle", Victim::Middle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_middle_stalls_the_stream_until_the_proxy_idle_limit_closes_it() {
    kill_during_transfer("faults-hung", Victim::HungMiddle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_killed_mid_transfer_fails_the_stream_and_next_request_works() {
    kill_during_transfer("faults-exit", Victim::Exit).await;
}

/// curl through the proxy on a circuit of its own: a SOCKS username never used before puts
/// the request in a new isolation class, so the proxy cannot reuse a circuit in use.
async fn curl_new_circuit(socks: SocketAddr, url: &str, n: u32) -> (i32, Vec<u8>, String) {
    curl_as(socks, Some(&format!("u{n}")), url, &["--max-time", "30"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_authorities_the_proxy_serves_until_the_consensus_expires_then_says_why() {
    if !prereq::require(&[prereq::curl()]) {
        return;
    }
    let tag = "faults-noauth";
    let mut net = network(tag, 4, 2, "").await;
    let socks = net.socks();
    let (web, _) = web_server().await;
    let url = format!("http://{web}/100000");
    let mut n = 0;
    let (code, body, err) = curl_new_circuit(socks, &url, n).await;
    if code != 0 || !is_pattern(&body, 100_000) {
        net.dump_logs();
        panic!("{tag}: request failed before any fault ({code}): {err}");
    }

    // The newest consensus any authority serves bounds what the proxy can hold.
    let latest = net.consensus().await.expect("no consensus");
    let authorities: Vec<String> = net
        .by_role(Role::Authority)
        .map(|a| a.name.clone())
        .collect();
    for a in &authorities {
        net.terminate(a, Duration::from_secs(10)).await;
    }
    // A consensus published between our fetch and the stop would be valid one period more.
    let latest_expiry = latest.valid_until() + PERIOD;
    let stopped = allium::clock::now_unix();
    eprintln!(
        "{tag}: authorities stopped at {stopped}; newest consensus valid until {} (expiry at the \
         latest {latest_expiry})",
        latest.valid_until()
    );

    // New circuits keep working from the cached consensus while it is valid.
    let mut served_without_authorities = 0;
    while allium::clock::now_unix() + 3 < latest.valid_until() {
        n += 1;
        let (code, body, err) = curl_new_circuit(socks, &url, n).await;
        if code != 0 || !is_pattern(&body, 100_000) {
            net.dump_logs();
            panic!(
                "{tag}: request {n} failed {} s after the authorities stopped, before expiry \
                 ({code}): {err}",
                allium::clock::now_unix() - stopped
            );
        }
        served_without_authorities += 1;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    eprintln!(
        "{tag}: {served_without_authorities} requests on new circuits served without \
         authorities, the last {} s after they stopped",
        allium::clock::now_unix() - stopped
    );
    assert!(
        served_without_authorities >= 2,
        "too few requests before expiry"
    );

    // After expiry: requests fail, and the proxy's log (default level) says why.
    while allium::clock::now_unix() <= latest_expiry {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Circuits built while the consensus was live (the proxy keeps two ready) may still
    // carry a request or two; no new circuit can be built, so requests soon fail.
    let mut served_by_prebuilt = 0;
    let (code, err, took) = loop {
        n += 1;
        let t = Instant::now();
        let (code, _, err) = curl_new_circuit(socks, &url, n).await;
        if code != 0 || served_by_prebuilt == 4 {
            break (code, err, t.elapsed());
        }
        served_by_prebuilt += 1;
    };
    eprintln!(
        "{tag}: after expiry: {served_by_prebuilt} requests served by circuits built before it, \
         then curl exit code {code} in {:.2} s: {}",
        took.as_secs_f64(),
        err.trim()
    );
    assert_ne!(
        code, 0,
        "{tag}: requests keep succeeding with an expired consensus"
    );
    assert!(took < Duration::from_secs(30), "the refusal must not hang");
    let log = net.log("proxy");
    let why: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("no usable consensus"))
        .collect();
    eprintln!("{tag}: proxy log lines saying why:\n{}", why.join("\n"));
    assert!(
        why.iter()
            .any(|l| l.contains("cannot open streams") && l.contains("consensus expired")),
        "{tag}: the proxy does not say why it cannot serve:\n{log}"
    );
    // What the user is told never names the destination.
    assert!(
        !log.contains(&web.to_string()),
        "{tag}: the log names the destination"
    );
    net.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_restarted_with_its_keys_rejoins_the_consensus() {
    let tag = "faults-restart";
    let dir = procnet::emit(tag, 3, 4, 2, PERIOD);
    let mut net = ProcNet::open(&dir);
    for name in net
        .nodes
        .iter()
        .filter(|n| n.role != Role::Proxy)
        .map(|n| n.name.clone())
        .collect::<Vec<_>>()
    {
        net.start(&name);
    }
    net.wait_until_all_listed(NO_HANG).await;
    let victim = "relay-4";
    let id = net.node(victim).identity.unwrap();
    let addr = net.node(victim).listen;

    let t = Instant::now();
    net.kill(victim).await;
    let gone = net
        .wait_for_consensus_where(NO_HANG, |c| c.relay(id).is_none())
        .await;
    if gone.is_none() {
        net.dump_logs();
        panic!("{tag}: the killed relay stays listed");
    }
    eprintln!(
        "{tag}: SIGKILLed {victim}; dropped from the consensus after {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    net.start(victim);
    let back = net
        .wait_for_consensus_where(NO_HANG, |c| c.relay(id).is_some())
        .await;
    let Some(back) = back else {
        net.dump_logs();
        panic!("{tag}: the restarted relay did not rejoin the consensus");
    };
    let entry = back.relay(id).unwrap();
    eprintln!(
        "{tag}: restarted {victim} (same keys and port); listed again after {:.1} s, flags {:?}",
        t.elapsed().as_secs_f64(),
        entry.flags
    );
    assert_eq!(entry.addrs.first(), Some(&addr));
    let log = net.log(victim);
    assert!(
        !log.contains("refused") && !log.contains("Refused"),
        "{tag}: an authority refused the restarted relay:\n{log}"
    );
    net.finish().await;
}
