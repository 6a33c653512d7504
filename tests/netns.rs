//! Several hosts: every authority, relay, the client (proxy) and the web server run as
//! separate processes, each in its own Linux network namespace with its own address, all
//! joined by one bridge. A large download goes through the proxy; mid-transfer one relay of
//! its circuit is cut off (its link set down, like a pulled cable). The client must notice
//! (the download fails within a bound instead of stalling for TCP's retransmission
//! timeout), and new streams must succeed on rebuilt circuits.
//!
//! Needs root, iproute2 (`ip netns`, `ss`) and curl: without them the test fails under CI
//! and elsewhere prints one `SKIPPED` line (tests/common/prereq.rs). The namespaces are
//! created and removed by the test itself.
//!
//! Topology: a dedicated "switch" namespace holds the bridge, so the host's own network is
//! never touched (no interface, route or address is added to the root namespace). Each
//! node namespace has `eth0`, a veth whose peer `pN` is a port of the bridge. Interface
//! names live inside namespaces, so only the namespace names need to be unique: they carry
//! the test's PID (parallel runs do not clash, and namespaces left by an aborted run are
//! recognised by their dead PID and removed).
//!
//! Addresses: node N gets 10.(70+N).0.1/8. Path selection refuses two relays in the same
//! IPv4 /16 (except loopback, src/dir/path.rs), so every node has its own /16; the /8
//! netmask puts them all on one link, so no router is needed. Since everything lives in
//! private namespaces, 10/8 cannot clash with the host's networks.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

mod common;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use allium::crypto::IdentityPublic;
use allium::testnet::{wait_until_listed, DirServer};
use common::{documented, prereq};
use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};
use std::os::fd::AsFd;

/// Namespace names start with this, then the PID of the test process.
const PREFIX: &str = "allium-nt";
/// Every relay and authority listens on this port of its own address.
const NODE_PORT: u16 = 9001;
/// The web server's port.
const WEB_PORT: u16 = 8080;
const AUTHORITIES: usize = 3;
const RELAYS: usize = 5;
const EXITS: usize = 2;
/// How long the in-flight download may take to fail after the cut. Every node runs with
/// the default timeouts: the relays' dead-peer timeout (`[limits]
/// dead_peer_timeout_secs`, 20 s: TCP keepalive + TCP_USER_TIMEOUT) must close the guard's
/// channel to the vanished middle well within this. Without it the guard would wait for
/// the link idle timeout (5 min) or TCP's retransmission give-up (~15 min).
const NOTICE_BOUND: Duration = Duration::from_secs(60);
/// Size of the download that is interrupted, and its rate limit: large and slow enough to
/// still be running when the relay is cut.
const BIG_BYTES: u64 = 512 * 1024 * 1024;
const BIG_RATE: &str = "2M";
/// Bound for the network to form, and then for the proxy to carry a first fetch (never a
/// speed assertion).
const FORM_BOUND: Duration = Duration::from_secs(90);

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_allium")
}

fn run(cmd: &mut Command) -> std::io::Result<Output> {
    cmd.stdin(Stdio::null()).output()
}

/// Runs `ip ARGS`; Err with its stderr if it fails.
fn ip(args: &[&str]) -> Result<String, String> {
    let out = run(Command::new("ip").args(args)).map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `ip ARGS` that must succeed (set-up steps).
fn ip_ok(args: &[&str]) {
    if let Err(e) = ip(args) {
        panic!("{e}");
    }
}

/// `allium keygen --data-dir DIR`: the node's keys, made before it starts; its identity.
fn keygen(data: &Path) -> IdentityPublic {
    let out = run(Command::new(bin()).args(["keygen", "--data-dir"]).arg(data)).unwrap();
    assert!(out.status.success(), "keygen failed");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// [`wait_until_listed`] run from inside `node`'s namespace (the nodes' addresses are
/// reachable only from the namespaces): a thread of its own enters it (setns) and runs
/// the check on a runtime of its own; the test's other threads stay where they are.
fn wait_until_listed_from(
    node: &Node,
    servers: Vec<DirServer>,
    trusted: Vec<IdentityPublic>,
    relays: Vec<IdentityPublic>,
    bound: Duration,
) -> Result<allium::dir::Consensus, String> {
    let path = format!("/run/netns/{}", node.ns);
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network))
            .map_err(|e| format!("cannot enter the namespace {path}: {e}"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(wait_until_listed(&servers, &trusted, &relays, bound))
    })
    .join()
    .unwrap()
}

/// Removes namespaces of earlier runs whose test process is gone (an aborted run cannot
/// clean up after itself), killing the node processes still inside them.
fn remove_stale() {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue; // a run in progress
        }
        eprintln!("removing stale namespace {name} (its test process {pid} is gone)");
        kill_inside(name);
        let _ = ip(&["netns", "del", name]);
    }
}

/// Kills the processes running in namespace `ns` (only ever our own nodes: the names are
/// this test's).
fn kill_inside(ns: &str) {
    if let Ok(pids) = ip(&["netns", "pids", ns]) {
        for pid in pids.split_whitespace() {
            let _ = run(Command::new("kill").args(["-9", pid]));
        }
    }
}

/// One node: its namespace, bridge port and address.
#[derive(Clone)]
struct Node {
    name: String,
    ns: String,
    port: String,
    addr: String,
}

/// The namespaces, their processes and files. Drop stops the processes, then deletes the
/// namespaces (which deletes their veths and the bridge) and the files, even on panic.
struct Lab {
    switch: String,
    nodes: Vec<Node>,
    children: Vec<(String, Child)>,
    dir: PathBuf,
}

impl Lab {
    /// Creates the switch namespace and bridge. Err if `ip netns add` is refused (the
    /// caller skips the test).
    fn new() -> Result<Lab, String> {
        let pid = std::process::id();
        let switch = format!("{PREFIX}{pid}-sw");
        ip(&["netns", "add", &switch])?;
        let dir = std::env::temp_dir().join(format!("allium-netns-{pid}"));
        let lab = Lab {
            switch,
            nodes: Vec::new(),
            children: Vec::new(),
            dir,
        };
        let _ = std::fs::remove_dir_all(&lab.dir);
        std::fs::create_dir_all(&lab.dir).map_err(|e| e.to_string())?;
        let sw = lab.switch.as_str();
        ip_ok(&["-n", sw, "link", "add", "br0", "type", "bridge"]);
        ip_ok(&["-n", sw, "link", "set", "br0", "up"]);
        Ok(lab)
    }

    /// Adds a node namespace with `eth0` = 10.(70+index).0.1/8, plugged into the bridge.
    fn add_node(&mut self, name: &str) -> Node {
        let index = self.nodes.len();
        let ns = format!("{PREFIX}{}-{name}", std::process::id());
        let port = format!("p{index}");
        let addr = format!("10.{}.0.1", 70 + index);
        ip_ok(&["netns", "add", &ns]);
        let node = Node {
            name: name.into(),
            ns: ns.clone(),
            port: port.clone(),
            addr: addr.clone(),
        };
        // Recorded before anything else can fail, so Drop removes it.
        self.nodes.push(node.clone());
        let sw = self.switch.clone();
        ip_ok(&[
            "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        ip_ok(&["-n", &sw, "link", "set", &port, "master", "br0"]);
        ip_ok(&["-n", &sw, "link", "set", &port, "up"]);
        ip_ok(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/8"),
            "dev",
            "eth0",
        ]);
        ip_ok(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip_ok(&["-n", &ns, "link", "set", "lo", "up"]);
        node
    }

    /// Starts `allium ARGS` inside `node`'s namespace, its output in `<name>.log`.
    fn spawn(&mut self, node: &Node, args: &[&str]) {
        let log = self.dir.join(format!("{}.log", node.name));
        let log = std::fs::File::create(&log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &node.ns, bin()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.push((node.name.clone(), child));
    }

    /// Waits (at most `bound`) until `name`'s log contains `text`.
    fn wait_for_log(&self, name: &str, text: &str, bound: Duration) -> bool {
        let log = self.dir.join(format!("{name}.log"));
        let start = Instant::now();
        while start.elapsed() < bound {
            if std::fs::read_to_string(&log).is_ok_and(|l| l.contains(text)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        false
    }

    /// Prints every node's log (on failure).
    fn dump_logs(&self) {
        for (name, _) in &self.children {
            let log = self.dir.join(format!("{name}.log"));
            eprintln!(
                "--- {name}.log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
    }

    /// Bytes the bridge has sent out of `node`'s port so far (= bytes towards the node).
    fn tx_bytes(&self, node: &Node) -> u64 {
        let out = run(Command::new("ip").args([
            "netns",
            "exec",
            &self.switch,
            "cat",
            &format!("/sys/class/net/{}/statistics/tx_bytes", node.port),
        ]))
        .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
        }
        for (_, c) in &mut self.children {
            let _ = c.wait();
        }
        for n in &self.nodes {
            kill_inside(&n.ns);
            let _ = ip(&["netns", "del", &n.ns]);
        }
        kill_inside(&self.switch);
        let _ = ip(&["netns", "del", &self.switch]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An established TCP connection seen by `ss`.
struct Conn {
    local: String,
    peer: String,
    /// Payload bytes sent plus received on it so far.
    bytes: u64,
}

/// Established TCP connections in `node`'s namespace.
fn connections(node: &Node) -> Vec<Conn> {
    let out = run(Command::new("ip").args([
        "netns",
        "exec",
        &node.ns,
        "ss",
        "-Htni",
        "state",
        "established",
    ]))
    .unwrap();
    let mut conns: Vec<Conn> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.starts_with(char::is_whitespace) {
            // The info line of the connection above: add its byte counters.
            if let Some(c) = conns.last_mut() {
                for field in line.split_whitespace() {
                    if let Some((key, value)) = field.split_once(':') {
                        if key == "bytes_sent" || key == "bytes_received" {
                            c.bytes += value.parse::<u64>().unwrap_or(0);
                        }
                    }
                }
            }
            continue;
        }
        // Recv-Q Send-Q Local Peer (no state column with a state filter).
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 4 {
            conns.push(Conn {
                local: f[2].to_string(),
                peer: f[3].to_string(),
                bytes: 0,
            });
        }
    }
    conns
}

/// Bytes carried by the connections between this node and `addr` (either side).
/// The most bytes on a connection with host `ip`, whichever side opened it (a channel
/// between two relays is opened by either one: the middle extends to the exit, or reuses
/// the channel the exit opened to it earlier for another circuit).
fn bytes_with_host(conns: &[Conn], ip: &str) -> Option<u64> {
    let prefix = format!("{ip}:");
    conns
        .iter()
        .filter(|c| c.peer.starts_with(&prefix))
        .map(|c| c.bytes)
        .max()
}

fn bytes_with(conns: &[Conn], addr: &str) -> Option<u64> {
    conns
        .iter()
        .filter(|c| c.local == addr || c.peer == addr)
        .map(|c| c.bytes)
        .max()
}

/// curl inside the client namespace through the proxy, printing the bytes it received.
fn curl_cmd(client: &Node, url: &str, extra: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args([
        "netns",
        "exec",
        &client.ns,
        "curl",
        "-s",
        "-S",
        "-o",
        "/dev/null",
    ])
    .args(["-w", "%{size_download}"])
    .args(["--socks5-hostname", "127.0.0.1:9050"])
    .args(extra)
    .arg(url)
    .stdin(Stdio::null());
    c
}

/// A fetch of `bytes` bytes with a bound; Ok(bytes received) only if curl succeeded.
fn fetch(client: &Node, web: &str, bytes: u64, max_secs: u64) -> Result<u64, String> {
    let url = format!("http://{web}/bytes/{bytes}");
    let out = run(&mut curl_cmd(
        client,
        &url,
        &["--max-time", &max_secs.to_string()],
    ))
    .map_err(|e| e.to_string())?;
    let got: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    if out.status.success() {
        Ok(got)
    } else {
        Err(format!(
            "curl {}: {} ({got} bytes)",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Every authority as the configs list it: identity and `address:9001`.
type AuthorityList = [(IdentityPublic, std::net::SocketAddr)];

/// docs/examples/authority.toml (listen stays on 0.0.0.0:9001), without the authorities'
/// probes: the test tells the circuit's relays apart by the bytes each carries, and
/// measurement downloads would outweigh the rate-limited transfer it watches.
fn authority_toml(data: &Path, auths: &AuthorityList) -> String {
    let text = documented::authority(NODE_PORT, data, auths, 6);
    let text = documented::set(&text, "measure_bandwidth", "false");
    documented::set(&text, "check_exits", "false")
}

/// docs/examples/relay.toml (listen stays on 0.0.0.0:9001 and `advertise` unset: each
/// relay learns its address from the authorities, as a relay set up by the guide does).
fn relay_toml(data: &Path, auths: &AuthorityList, exit: bool) -> String {
    let text = documented::relay(NODE_PORT, data, auths);
    if !exit {
        return text;
    }
    // The example's commented [exit] table, enabled; the default exit policy refuses
    // private destinations, and the web server here is one.
    let text = documented::replace_line(&text, "# [exit]", "[exit]");
    let policy = text
        .lines()
        .find(|l| l.starts_with("# policy = "))
        .expect("the example has a commented exit policy")
        .to_string();
    documented::replace_line(&text, &policy, "policy = [\"accept *:*\"]")
}

#[test]
fn relay_cut_off_mid_transfer_is_noticed_and_circuits_rebuilt() {
    if !prereq::require(&[prereq::root(), prereq::ip(), prereq::ss(), prereq::curl()]) {
        return;
    }
    remove_stale();
    let mut lab = match Lab::new() {
        Ok(lab) => lab,
        Err(e) => {
            prereq::missing_prerequisite(&format!("cannot create a network namespace ({e})"));
            return;
        }
    };
    let t0 = Instant::now();

    // Namespaces and addresses.
    let auths: Vec<Node> = (1..=AUTHORITIES)
        .map(|i| lab.add_node(&format!("a{i}")))
        .collect();
    let relays: Vec<Node> = (1..=RELAYS)
        .map(|i| lab.add_node(&format!("r{i}")))
        .collect();
    let client = lab.add_node("client");
    let server = lab.add_node("web");

    // Configuration files from docs/examples/*.toml, with identities, addresses and paths
    // substituted (docs/operating.md's steps: keygen, then the files).
    let mut auth_list = Vec::new();
    let mut auth_ids = Vec::new();
    for a in &auths {
        let id = keygen(&lab.dir.join(&a.name));
        auth_list.push((id, format!("{}:{NODE_PORT}", a.addr).parse().unwrap()));
        auth_ids.push(id);
    }
    for a in &auths {
        let cfg = lab.dir.join(format!("{}.toml", a.name));
        std::fs::write(&cfg, authority_toml(&lab.dir.join(&a.name), &auth_list)).unwrap();
        lab.spawn(a, &["authority", "--config", cfg.to_str().unwrap()]);
    }
    let mut relay_ids = Vec::new();
    for (i, r) in relays.iter().enumerate() {
        // The relay's keys made beforehand, so the test knows its identity.
        relay_ids.push(keygen(&lab.dir.join(&r.name)));
        let cfg = lab.dir.join(format!("{}.toml", r.name));
        std::fs::write(
            &cfg,
            relay_toml(&lab.dir.join(&r.name), &auth_list, i < EXITS),
        )
        .unwrap();
        lab.spawn(r, &["relay", "--config", cfg.to_str().unwrap()]);
    }

    // Nothing is measured before every authority and every relay's cache serve a
    // consensus listing every relay; only then does the proxy start, so it bootstraps from
    // such a consensus.
    let servers: Vec<DirServer> = auths
        .iter()
        .zip(&auth_ids)
        .chain(relays.iter().zip(&relay_ids))
        .map(|(n, id)| DirServer {
            name: n.name.clone(),
            addr: format!("{}:{NODE_PORT}", n.addr).parse().unwrap(),
            identity: *id,
        })
        .collect();
    let consensus =
        match wait_until_listed_from(&client, servers, auth_ids, relay_ids.clone(), FORM_BOUND) {
            Ok(c) => c,
            Err(e) => {
                lab.dump_logs();
                panic!("the network did not form: {e}");
            }
        };
    println!(
        "every authority and relay serves a consensus listing every relay after {:.1?}",
        t0.elapsed()
    );
    // Listening on 0.0.0.0 with no `advertise`, each relay learned its address from the
    // authorities: the consensus lists it at its host's address, and its self-test says so.
    for (r, id) in relays.iter().zip(&relay_ids) {
        let want: std::net::SocketAddr = format!("{}:{NODE_PORT}", r.addr).parse().unwrap();
        let listed = consensus.relay(id).map(|e| e.addrs.clone());
        if listed != Some(vec![want]) {
            lab.dump_logs();
            panic!("{} is listed at {listed:?}, not {want}", r.name);
        }
        let line = format!("relay: self-test: reachable at {want} and listed in the consensus");
        if !lab.wait_for_log(&r.name, &line, FORM_BOUND) {
            lab.dump_logs();
            panic!("{}: no self-test line {line:?}", r.name);
        }
    }
    println!("every relay is listed at its own address and its self-test says so");
    let proxy_cfg = lab.dir.join("client.toml");
    std::fs::write(
        &proxy_cfg,
        documented::proxy(&lab.dir.join("client"), &auth_list),
    )
    .unwrap();
    lab.spawn(&client, &["proxy", "--config", proxy_cfg.to_str().unwrap()]);
    let web = format!("{}:{WEB_PORT}", server.addr);
    lab.spawn(&server, &["demo-server", "--listen", &web]);

    // Wait for the proxy: the first fetch through it that succeeds. Generous bound only so
    // a broken network fails instead of hanging.
    let mut formed = false;
    let proxy_started = Instant::now();
    while proxy_started.elapsed() < FORM_BOUND {
        if fetch(&client, &web, 1000, 10) == Ok(1000) {
            formed = true;
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    if !formed {
        lab.dump_logs();
        panic!("no fetch through the proxy within the bound");
    }
    let formed_at = t0.elapsed();
    println!("network formed; first fetch through the proxy after {formed_at:.1?}");

    // The big download.
    let url = format!("http://{web}/bytes/{BIG_BYTES}");
    let mut big = curl_cmd(
        &client,
        &url,
        &["--limit-rate", BIG_RATE, "--max-time", "120"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();

    // Which relays carry it: the three the bridge sends by far the most bytes to, over
    // two seconds. Measured again until the download is flowing (opening its stream may
    // take a circuit build or a retry); bounded so a download that never starts fails.
    let started = Instant::now();
    let rates = loop {
        let before: Vec<u64> = relays.iter().map(|r| lab.tx_bytes(r)).collect();
        std::thread::sleep(Duration::from_secs(2));
        let mut rates: Vec<(u64, usize)> = relays
            .iter()
            .enumerate()
            .map(|(i, r)| (lab.tx_bytes(r).saturating_sub(before[i]) / 2, i))
            .collect();
        rates.sort_unstable_by(|a, b| b.cmp(a));
        if let Some(s) = big.try_wait().unwrap() {
            lab.dump_logs();
            panic!("the big download ended before the cut: {s}");
        }
        if rates[2].0 > 100_000 && rates[3].0 < rates[2].0 / 4 {
            break rates;
        }
        if started.elapsed() > Duration::from_secs(40) {
            lab.dump_logs();
            panic!("cannot tell the three relays of the circuit from the others: {rates:?}");
        }
        println!("  download not flowing yet (B/s per relay index: {rates:?})");
    };
    for (rate, i) in &rates {
        println!(
            "  {} ({}): {rate} B/s towards it",
            relays[*i].name, relays[*i].addr
        );
    }
    let path: Vec<usize> = rates.iter().take(3).map(|&(_, i)| i).collect();
    // The download has only just started flowing: wait (bounded) until one channel of the
    // path carries a megabyte, rather than judging from the first snapshot.
    let waited = Instant::now();
    let conns: Vec<Vec<Conn>> = loop {
        let conns: Vec<Vec<Conn>> = relays.iter().map(connections).collect();
        let flowing = path.iter().any(|&e| {
            let exit_ip = relays[e].addr.to_string();
            bytes_with(&conns[e], &web).is_some()
                && path.iter().any(|&i| {
                    i != e && bytes_with_host(&conns[i], &exit_ip).unwrap_or(0) > 1_000_000
                })
        });
        if flowing || waited.elapsed() > Duration::from_secs(20) {
            break conns;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    // The exit is the one connected to the web server; the middle is the other one whose
    // connection with the exit carries the download (the guard may have a channel to the
    // exit too, for other circuits, but not with megabytes on it).
    let exit = *path
        .iter()
        .find(|&&i| bytes_with(&conns[i], &web).is_some())
        .expect("no relay of the path is connected to the web server");
    let exit_ip = relays[exit].addr.to_string();
    let others: Vec<usize> = path.iter().copied().filter(|&i| i != exit).collect();
    let middle = *others
        .iter()
        .max_by_key(|&&i| bytes_with_host(&conns[i], &exit_ip).unwrap_or(0))
        .unwrap();
    assert!(
        bytes_with_host(&conns[middle], &exit_ip).unwrap_or(0) > 1_000_000,
        "no relay of the path carries the download from the exit"
    );
    let guard = others.iter().copied().find(|&i| i != middle).unwrap();
    println!(
        "circuit: guard {}, middle {}, exit {}; cutting the middle off",
        relays[guard].name, relays[middle].name, relays[exit].name
    );

    // Cut: the middle's bridge port goes down, like a pulled cable: no FIN, no RST.
    ip_ok(&[
        "-n",
        &lab.switch,
        "link",
        "set",
        &relays[middle].port,
        "down",
    ]);
    let cut = Instant::now();

    // The in-flight download must fail within a bound (not after TCP's ~15 min
    // retransmission give-up): the guard's channel to the middle stops being acknowledged,
    // the guard's kernel drops it after the dead-peer timeout, and the guard destroys the
    // circuit towards the client.
    let bound = NOTICE_BOUND;
    let status = loop {
        if let Some(s) = big.try_wait().unwrap() {
            break Some(s);
        }
        if cut.elapsed() > bound {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let noticed = cut.elapsed();
    let Some(status) = status else {
        let _ = big.kill();
        let _ = big.wait();
        lab.dump_logs();
        panic!("the download through the cut relay still hangs {bound:?} after the cut");
    };
    let mut got = String::new();
    let mut err = String::new();
    let _ = big.stdout.take().unwrap().read_to_string(&mut got);
    let _ = big.stderr.take().unwrap().read_to_string(&mut err);
    println!(
        "cut -> in-flight download ended: {noticed:.1?} ({status}; {} of {BIG_BYTES} bytes; curl: {})",
        got.trim(),
        err.trim()
    );
    assert!(
        !status.success(),
        "the download claims success after the cut"
    );
    assert!(
        got.trim().parse::<u64>().unwrap_or(0) < BIG_BYTES,
        "all bytes arrived despite the cut"
    );

    // New streams succeed on rebuilt circuits (retrying: the consensus may still list the
    // cut relay for a period, and a circuit through it fails to build).
    let mut first_ok = None;
    let mut failures = Vec::new();
    while cut.elapsed() < Duration::from_secs(90) {
        match fetch(&client, &web, 1_000_000, 20) {
            Ok(1_000_000) => {
                first_ok = Some(cut.elapsed());
                break;
            }
            Ok(n) => failures.push(format!("short: {n} bytes")),
            Err(e) => failures.push(e),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let Some(first_ok) = first_ok else {
        lab.dump_logs();
        panic!("no new stream succeeded after the cut: {failures:?}");
    };
    println!(
        "cut -> first new stream succeeded: {first_ok:.1?} (after {} failed attempts: {failures:?})",
        failures.len()
    );
    // And more new streams (several circuits' worth of isolation is not needed: the same
    // proxy, fresh connections).
    for i in 0..3 {
        let r = fetch(&client, &web, 2_000_000, 30);
        assert_eq!(r, Ok(2_000_000), "new stream {i} after the cut");
    }
    println!(
        "3 more new streams of 2 MB succeeded; whole test {:.1?}",
        t0.elapsed()
    );
}
