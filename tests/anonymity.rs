//! Anonymity invariants (issue 8, part 5), asserted from what the relays themselves can
//! see ([`allium::relay::RelayObserver`]) and from what a real `allium testnet` process
//! prints:
//! (a) the guard and the middle never see the destination nor a BEGIN; only the exit does;
//! (b) the exit's inbound peer is never the client's own connection;
//! (c) every record on every link has the same size;
//! (d) no output line at the default log level contains the destination, the client's
//!     address or a key (checked against a `-v` run of the same scenario, which must show
//!     them, so the check is known to be able to fail).

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use allium::cell::consts::RELAY_BODY_LEN;
use allium::cell::{CircId, Hostname, RelayCmd, TargetAddr};
use allium::link::RECORD_LEN;
use allium::relay::{RelayHandle, RelayLimits, RelayObserver};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;

mod common;
use common::{build_through, start_relay_with, NO_HANG};

const REQUEST_MARKER: &[u8] = b"anonymity-request-marker-5c1e";
const RESPONSE_MARKER: &[u8] = b"anonymity-response-marker-9d2b";
/// The destination as the client names it (resolved by the exit, never by the client).
const DEST_HOST: &str = "localhost";

/// Everything one relay could see, as reported by its observer.
#[derive(Debug, Default)]
struct Seen {
    inbound: Mutex<Vec<SocketAddr>>,
    forward: Mutex<Vec<(Vec<u8>, bool)>>,
    backward: Mutex<Vec<Vec<u8>>>,
    recognised: Mutex<Vec<RelayCmd>>,
    connects: Mutex<Vec<(String, u16)>>,
}

impl RelayObserver for Seen {
    fn inbound_channel(&self, peer: SocketAddr) {
        self.inbound.lock().unwrap().push(peer);
    }
    fn forward_cell(&self, _: CircId, body: &[u8; RELAY_BODY_LEN], recognised: bool) {
        self.forward
            .lock()
            .unwrap()
            .push((body.to_vec(), recognised));
    }
    fn backward_cell(&self, _: CircId, body: &[u8; RELAY_BODY_LEN]) {
        self.backward.lock().unwrap().push(body.to_vec());
    }
    fn recognised(&self, _: CircId, cmd: RelayCmd) {
        self.recognised.lock().unwrap().push(cmd);
    }
    fn exit_connect(&self, _: CircId, target: &TargetAddr, port: u16) {
        let host = match target {
            TargetAddr::Hostname(h) => h.as_str().to_string(),
            TargetAddr::Ip(ip) => ip.to_string(),
        };
        self.connects.lock().unwrap().push((host, port));
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A server on 127.0.0.1 that reads one request and answers with the response marker.
async fn marker_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut req = vec![0u8; 4096];
                let _ = s.read(&mut req).await;
                let mut reply = b"HTTP/1.0 200 OK\r\n\r\n".to_vec();
                reply.extend_from_slice(RESPONSE_MARKER);
                let _ = s.write_all(&reply).await;
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

fn assert_uniform_records(relays: &[RelayHandle]) -> u64 {
    let mut records = 0;
    for r in relays {
        let shared = r.shared();
        let mut chans = shared.all_channels();
        chans.extend(shared.relay_channels.lock().unwrap().values().cloned());
        assert!(!chans.is_empty());
        for c in chans {
            let s = &c.stats;
            assert!(!s.saw_odd_size(), "a record of another size was seen");
            assert_eq!(s.bytes_read(), s.records_read() * RECORD_LEN as u64);
            assert_eq!(s.bytes_written(), s.records_written() * RECORD_LEN as u64);
            records += s.records_read() + s.records_written();
        }
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_see_only_what_their_position_allows() {
    let relays = vec![
        start_relay_with(RelayLimits::default(), None).await,
        start_relay_with(RelayLimits::default(), None).await,
        start_relay_with(
            RelayLimits::default(),
            Some(allium::dir::ExitPolicy::default_exit_allow_loopback()),
        )
        .await,
    ];
    let seen: Vec<Arc<Seen>> = relays
        .iter()
        .map(|r| {
            let s = Arc::new(Seen::default());
            r.set_observer(Arc::clone(&s) as Arc<dyn RelayObserver>)
                .unwrap();
            s
        })
        .collect();
    let (guard, middle, exit) = (&seen[0], &seen[1], &seen[2]);
    let port = marker_server().await;

    let circ = build_through(&relays).await;
    let client_stats = Arc::clone(&circ.channel().stats);
    let circ = circ.into_handle();
    let target = TargetAddr::Hostname(Hostname::new(DEST_HOST).unwrap());
    let mut stream = circ.open_stream(target, port, NO_HANG).await.unwrap();
    let mut request = b"GET / HTTP/1.0\r\nX-Marker: ".to_vec();
    request.extend_from_slice(REQUEST_MARKER);
    request.extend_from_slice(b"\r\n\r\n");
    stream.write_all(&request).await.unwrap();
    let mut page = Vec::new();
    tokio::time::timeout(NO_HANG, stream.read_to_end(&mut page))
        .await
        .expect("the page must arrive")
        .unwrap();
    assert!(contains(&page, RESPONSE_MARKER), "the fetch itself failed");

    // (a) Only the exit learns the destination, the request, or sees a BEGIN.
    for (name, s) in [("guard", guard), ("middle", middle)] {
        let forward = s.forward.lock().unwrap();
        assert!(!forward.is_empty(), "the {name} saw no cells at all");
        for (body, _) in forward.iter() {
            assert!(
                !contains(body, DEST_HOST.as_bytes()),
                "{name} saw the destination"
            );
            assert!(!contains(body, REQUEST_MARKER), "{name} saw the request");
        }
        for body in s.backward.lock().unwrap().iter() {
            assert!(!contains(body, RESPONSE_MARKER), "{name} saw the response");
        }
        let cmds = s.recognised.lock().unwrap();
        assert!(
            cmds.iter().all(|c| *c == RelayCmd::Extend),
            "the {name} recognised {cmds:?}"
        );
        assert!(s.connects.lock().unwrap().is_empty());
        eprintln!(
            "{name}: {} forward cells ({} recognised: {cmds:?}), {} backward; none with the destination",
            forward.len(),
            forward.iter().filter(|(_, r)| *r).count(),
            s.backward.lock().unwrap().len()
        );
    }
    // Control: the exit does see them (so the checks above can fail).
    let exit_forward = exit.forward.lock().unwrap();
    assert!(exit_forward
        .iter()
        .any(|(b, r)| *r && contains(b, DEST_HOST.as_bytes())));
    assert!(exit_forward
        .iter()
        .any(|(b, r)| *r && contains(b, REQUEST_MARKER)));
    let exit_cmds = exit.recognised.lock().unwrap().clone();
    assert!(exit_cmds.contains(&RelayCmd::Begin), "{exit_cmds:?}");
    assert!(exit_cmds.contains(&RelayCmd::Data), "{exit_cmds:?}");
    assert_eq!(
        *exit.connects.lock().unwrap(),
        vec![(DEST_HOST.to_string(), port)]
    );
    eprintln!("exit: recognised {exit_cmds:?}, connected to {DEST_HOST}:{port} as requested");

    // (b) The client's own connection reaches the guard only.
    let client_addrs = guard.inbound.lock().unwrap().clone();
    assert_eq!(client_addrs.len(), 1, "{client_addrs:?}");
    let middle_in = middle.inbound.lock().unwrap().clone();
    let exit_in = exit.inbound.lock().unwrap().clone();
    assert!(!exit_in.is_empty(), "the exit saw no inbound channel");
    for a in &client_addrs {
        assert!(
            !exit_in.contains(a),
            "the exit saw the client's connection {a}"
        );
        assert!(
            !middle_in.contains(a),
            "the middle saw the client's connection"
        );
    }
    eprintln!(
        "inbound peers: guard {} (the client), middle {}, exit {} (never the client's)",
        client_addrs.len(),
        middle_in.len(),
        exit_in.len()
    );

    // (c) Every record on every link, both directions, is RECORD_LEN bytes.
    let records = assert_uniform_records(&relays);
    assert!(!client_stats.saw_odd_size());
    assert_eq!(
        client_stats.bytes_written(),
        client_stats.records_written() * RECORD_LEN as u64
    );
    assert_eq!(
        client_stats.bytes_read(),
        client_stats.records_read() * RECORD_LEN as u64
    );
    eprintln!(
        "records: {records} at the relays, {} at the client, all {RECORD_LEN} bytes",
        client_stats.records_read() + client_stats.records_written()
    );
}

// ---------------------------------------------------------------------------------------
// (d) logs of a real process
// ---------------------------------------------------------------------------------------

/// A running `allium testnet` with every output line collected.
struct Testnet {
    child: tokio::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    socks: SocketAddr,
    data_dir: std::path::PathBuf,
}

async fn start_testnet(verbose: bool, tag: &str) -> Testnet {
    let data_dir = std::env::temp_dir().join(format!(
        "allium-anonymity-{tag}-{}-{}",
        std::process::id(),
        common::now()
    ));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_allium"));
    cmd.args(["testnet", "--socks-port", "0", "--period", "6"])
        .arg("--data-dir")
        .arg(&data_dir)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if verbose {
        cmd.arg("-v");
    }
    let mut child = cmd.spawn().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (socks_tx, mut socks_rx) = tokio::sync::mpsc::channel::<SocketAddr>(1);
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    {
        let lines = Arc::clone(&lines);
        tokio::spawn(async move {
            let mut r = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = r.next_line().await {
                if let Some(addr) = line.trim().strip_prefix("SOCKS5 proxy:") {
                    let _ = socks_tx.send(addr.trim().parse().unwrap()).await;
                }
                lines.lock().unwrap().push(line);
            }
        });
    }
    {
        let lines = Arc::clone(&lines);
        tokio::spawn(async move {
            let mut r = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = r.next_line().await {
                lines.lock().unwrap().push(line);
            }
        });
    }
    let socks = tokio::time::timeout(Duration::from_secs(120), socks_rx.recv())
        .await
        .expect("the test network must come up")
        .expect("testnet exited before it was ready");
    Testnet {
        child,
        lines,
        socks,
        data_dir,
    }
}

/// SOCKS5 CONNECT to `host:port` by name (socks5h), a request, the whole answer. Returns
/// the answer and the client's own address on its connection to the proxy.
async fn fetch_via_socks(proxy: SocketAddr, host: &str, port: u16) -> (Vec<u8>, SocketAddr) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let me = s.local_addr().unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut method = [0u8; 2];
    s.read_exact(&mut method).await.unwrap();
    assert_eq!(method, [5, 0]);
    let mut req = vec![5, 1, 0, 3, host.len() as u8];
    req.extend_from_slice(host.as_bytes());
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).await.unwrap();
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(head[1], 0, "SOCKS reply {head:?}");
    let addr_len = match head[3] {
        1 => 4,
        4 => 16,
        3 => {
            let mut l = [0u8; 1];
            s.read_exact(&mut l).await.unwrap();
            l[0] as usize
        }
        other => panic!("atyp {other}"),
    };
    let mut rest = vec![0u8; addr_len + 2];
    s.read_exact(&mut rest).await.unwrap();
    let mut request = b"GET / HTTP/1.0\r\nX-Marker: ".to_vec();
    request.extend_from_slice(REQUEST_MARKER);
    request.extend_from_slice(b"\r\n\r\n");
    s.write_all(&request).await.unwrap();
    let mut page = Vec::new();
    s.read_to_end(&mut page).await.unwrap();
    (page, me)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Every public key of the network, from the consensus the client cached: relay
/// identities, onion keys and authority identities. (The network's secret keys never
/// leave the process; if a public key is absent from the logs, so is anything printed
/// the same way.)
fn network_keys(data_dir: &std::path::Path) -> Vec<[u8; 32]> {
    let bytes = std::fs::read(data_dir.join("consensus")).expect("the cached consensus");
    let body_len = u64::from_be_bytes(bytes[..8].try_into().unwrap()) as usize;
    let body: allium::dir::ConsensusBody =
        allium::codec::decode(&bytes[8..8 + body_len], bytes.len()).unwrap();
    let mut keys = Vec::new();
    for r in &body.relays {
        keys.push(*r.identity.as_bytes());
    }
    let mds = std::fs::read(data_dir.join("microdescs")).expect("the cached microdescriptors");
    for md in allium::dir::MicrodescIndex::from_file_bytes(&mds)
        .unwrap()
        .iter()
    {
        keys.push(*md.onion_cert.onion_key().as_bytes());
    }
    for a in &body.authorities {
        keys.push(*a.as_bytes());
    }
    keys
}

/// What must not appear: the destination name and port, the client's address and port,
/// every key (hex, both cases, and base64 of its first 30 bytes). Returns the offending
/// lines with what they contain.
fn leaks(lines: &[String], dest_port: u16, client: SocketAddr, keys: &[[u8; 32]]) -> Vec<String> {
    let mut needles = vec![
        DEST_HOST.to_string(),
        format!(":{dest_port}"),
        format!(":{}", client.port()),
    ];
    for k in keys {
        needles.push(hex(k));
        needles.push(hex(k).to_uppercase());
        needles.push(hex(&k[..8]));
        needles.push(base64(&k[..30]));
    }
    lines
        .iter()
        .flat_map(|l| {
            needles
                .iter()
                .filter(|n| l.contains(n.as_str()))
                .map(move |n| format!("{n:?} in: {l}"))
        })
        .collect()
}

async fn run_scenario(verbose: bool) -> (Vec<String>, u16, SocketAddr, Vec<[u8; 32]>) {
    let tag = if verbose { "verbose" } else { "default" };
    let dest_port = marker_server().await;
    let mut net = start_testnet(verbose, tag).await;
    let (page, me) =
        tokio::time::timeout(NO_HANG, fetch_via_socks(net.socks, DEST_HOST, dest_port))
            .await
            .expect("the fetch must not hang");
    assert!(contains(&page, RESPONSE_MARKER), "{tag}: the fetch failed");
    // Let anything logged about the stream's end reach the pipes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let keys = network_keys(&net.data_dir);
    let pid = net.child.id().unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
    let status = tokio::time::timeout(Duration::from_secs(30), net.child.wait())
        .await
        .expect("testnet must exit after SIGINT")
        .unwrap();
    assert!(status.success(), "{tag}: exit status {status}");
    // The readers finish at EOF; a short wait for the last lines.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = net.lines.lock().unwrap().clone();
    let _ = std::fs::remove_dir_all(&net.data_dir);
    (lines, dest_port, me, keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_log_level_shows_no_destination_client_address_or_key() {
    // Both runs at once (they share nothing but the machine).
    let (quiet, loud) = tokio::join!(run_scenario(false), run_scenario(true));
    let (lines, dest_port, me, keys) = quiet;
    let found = leaks(&lines, dest_port, me, &keys);
    eprintln!(
        "default level: {} lines, {} keys checked, client {me}, destination {DEST_HOST}:{dest_port}: {} leaks",
        lines.len(),
        keys.len(),
        found.len()
    );
    assert!(
        found.is_empty(),
        "default-level output leaks:\n{}",
        found.join("\n")
    );

    // Control: at debug level the same scenario does log the destination, the client's
    // address and identities, so the search above is able to find them.
    let (lines, dest_port, me, keys) = loud;
    let found = leaks(&lines, dest_port, me, &keys);
    eprintln!(
        "debug level (control): {} lines, {} hits, e.g.:",
        lines.len(),
        found.len()
    );
    for f in found.iter().take(4) {
        eprintln!("  {f}");
    }
    // Keys too: identities are logged at debug level when the relays start.
    assert!(
        found
            .iter()
            .any(|f| keys.iter().any(|k| f.starts_with(&format!("{:?}", hex(k))))),
        "the control run should log a relay identity at debug level"
    );
    assert!(
        found
            .iter()
            .any(|f| f.starts_with(&format!("{DEST_HOST:?}"))),
        "the control run should log the destination at debug level"
    );
    assert!(
        found
            .iter()
            .any(|f| f.starts_with(&format!("\":{}\"", me.port()))),
        "the control run should log the client's address at debug level"
    );
}
