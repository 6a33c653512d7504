//! A network of real `allium` processes started from the configuration directory that
//! `allium testnet --emit-configs DIR` writes: one child process per `*.toml` (the role comes
//! from the file name: `authority-*`, `relay-*`, `proxy`), killed when dropped. Nodes can be
//! SIGKILLed, sent any signal and restarted from the same config (hence the same keys and
//! port). Generic on purpose: config dir in, processes out, so other suites (network
//! namespaces, faults) reuse it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use allium::cli::config::{self, AuthorityFile, ProxyFile, RelayFile};
use allium::crypto::IdentityPublic;
use allium::dir::AuthorityInfo;
use allium::dir::Consensus;
use allium::relay::RelayKeys;
use allium::testnet::{wait_until_listed, DirServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// The `allium` binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_allium")
}

/// What a node is, from its config file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `authority-*.toml`
    Authority,
    /// `relay-*.toml`
    Relay,
    /// `proxy*.toml`
    Proxy,
}

impl Role {
    fn command(self) -> &'static str {
        match self {
            Role::Authority => "authority",
            Role::Relay => "relay",
            Role::Proxy => "proxy",
        }
    }
}

/// One node: its config, where it listens, and its process (if running).
#[derive(Debug)]
pub struct Node {
    /// The config file stem, e.g. `relay-3`.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its config file.
    pub config: PathBuf,
    /// stdout and stderr of every run, appended.
    pub log: PathBuf,
    /// Channel listener (authority, relay) or SOCKS listener (proxy).
    pub listen: SocketAddr,
    /// Metrics listener, if the config has a `[metrics]` table.
    pub metrics: Option<SocketAddr>,
    /// Its data directory (keys, caches).
    pub data_dir: Option<PathBuf>,
    /// Its relay identity (authorities and relays).
    pub identity: Option<IdentityPublic>,
    child: Option<Child>,
}

impl Node {
    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// Whether it is an exit (its config has an `[exit]` table).
    pub fn is_exit(&self) -> bool {
        self.role == Role::Relay
            && config::load::<RelayFile>(&self.config).is_ok_and(|f| f.exit.is_some())
    }
}

/// The network; every process still running is killed on drop. [`ProcNet::finish`] also
/// removes the directory, so a test that fails before it leaves the logs to read.
#[derive(Debug)]
pub struct ProcNet {
    /// The configuration directory.
    pub dir: PathBuf,
    /// Every node, sorted by name.
    pub nodes: Vec<Node>,
    /// The authorities (from the first authority's config).
    pub authorities: Vec<AuthorityInfo>,
}

/// A free port on 127.0.0.1 (released at once; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `allium testnet --emit-configs` into a fresh directory under the temp dir named
/// after `tag` and this process, and returns the directory.
pub fn emit(tag: &str, authorities: usize, relays: usize, exits: usize, period: u64) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("allium-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = std::process::Command::new(bin())
        .args(["testnet", "--emit-configs"])
        .arg(&dir)
        .args(["--authorities", &authorities.to_string()])
        .args(["--relays", &relays.to_string()])
        .args(["--exits", &exits.to_string()])
        .args(["--period", &period.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "emit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// Appends `[metrics]` on port 0 to every relay and authority config of `dir` that has
/// none (call before [`ProcNet::open`]). Each process binds a port the OS picks and prints
/// it; [`ProcNet::metrics`] reads it from the log. (A port picked here and released
/// before the process starts could be taken meanwhile by a parallel test's connection.)
pub fn enable_metrics(dir: &Path) {
    for f in toml_files(dir) {
        let stem = f.file_stem().unwrap().to_string_lossy().to_string();
        if stem.starts_with("proxy") {
            continue;
        }
        let mut text = std::fs::read_to_string(&f).unwrap();
        if !text.contains("[metrics]") {
            text.push_str("\n[metrics]\nlisten = \"127.0.0.1:0\"\n");
            std::fs::write(&f, text).unwrap();
        }
    }
}

/// Appends `extra` (TOML lines) to the `[proxy]` table of `dir/proxy.toml`: the table comes
/// first in the emitted file, so the lines go right after its header line.
pub fn add_to_proxy(dir: &Path, extra: &str) {
    let path = dir.join("proxy.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replacen("[proxy]\n", &format!("[proxy]\n{extra}\n"), 1);
    std::fs::write(&path, text).unwrap();
}

/// Appends `extra` (TOML lines) to the `[relay]` table of `dir/{name}.toml` (a relay's
/// config, e.g. "relay-1"); the lines go right after the table's header line.
pub fn add_to_relay(dir: &Path, name: &str, extra: &str) {
    let path = dir.join(format!("{name}.toml"));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("[relay]\n"),
        "{} has no [relay] table",
        path.display()
    );
    let text = text.replacen("[relay]\n", &format!("[relay]\n{extra}\n"), 1);
    std::fs::write(&path, text).unwrap();
}

/// Caps relay `name`'s bandwidth (call before [`ProcNet::open`]): `bandwidth_rate` bytes
/// per second each way and, if given, a `bandwidth_burst` (default: the rate).
pub fn limit_relay_bandwidth(dir: &Path, name: &str, rate: u64, burst: Option<u64>) {
    let mut extra = format!("bandwidth_rate = {rate}");
    if let Some(b) = burst {
        extra.push_str(&format!("\nbandwidth_burst = {b}"));
    }
    add_to_relay(dir, name, &extra);
}

fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

impl ProcNet {
    /// Reads every `*.toml` of `dir` with the product's own config parsers. Starts nothing.
    pub fn open(dir: &Path) -> ProcNet {
        let mut nodes = Vec::new();
        let mut authorities = Vec::new();
        for f in toml_files(dir) {
            let name = f.file_stem().unwrap().to_string_lossy().to_string();
            let log = dir.join(format!("{name}.log"));
            let (role, listen, metrics, data_dir) = if name.starts_with("authority") {
                let c: AuthorityFile = config::load(&f).unwrap();
                if authorities.is_empty() {
                    authorities = c.authority.authorities.clone();
                }
                (
                    Role::Authority,
                    c.authority.listen,
                    c.metrics.map(|m| m.listen),
                    Some(c.authority.data_dir),
                )
            } else if name.starts_with("relay") {
                let c: RelayFile = config::load(&f).unwrap();
                (
                    Role::Relay,
                    c.relay.listen,
                    c.metrics.map(|m| m.listen),
                    Some(c.relay.data_dir),
                )
            } else if name.starts_with("proxy") {
                let c: ProxyFile = config::load(&f).unwrap();
                (Role::Proxy, c.proxy.socks_listen, None, c.proxy.data_dir)
            } else {
                continue;
            };
            let identity = match role {
                Role::Proxy => None,
                _ => data_dir.as_ref().map(|d| {
                    RelayKeys::load_or_create(d, &allium::clock::Clock::system())
                        .unwrap()
                        .identity()
                }),
            };
            nodes.push(Node {
                name,
                role,
                config: f,
                log,
                listen,
                metrics,
                data_dir,
                identity,
                child: None,
            });
        }
        ProcNet {
            dir: dir.to_path_buf(),
            nodes,
            authorities,
        }
    }

    /// The node called `name` (panics if there is none).
    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    fn node_mut(&mut self, name: &str) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// The nodes of `role`.
    pub fn by_role(&self, role: Role) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(move |n| n.role == role)
    }

    /// The node with relay identity `id`.
    pub fn by_identity(&self, id: &IdentityPublic) -> Option<&Node> {
        self.nodes.iter().find(|n| n.identity.as_ref() == Some(id))
    }

    /// The proxy's SOCKS address.
    pub fn socks(&self) -> SocketAddr {
        self.by_role(Role::Proxy).next().expect("no proxy").listen
    }

    /// Starts `name` from its config (same keys, same port), appending to its log.
    pub fn start(&mut self, name: &str) {
        let node = self.node_mut(name);
        assert!(node.child.is_none(), "{name} is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        let child = Command::new(bin())
            .arg(node.role.command())
            .arg("--config")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        node.child = Some(child);
    }

    /// SIGKILL `name` and reaps it.
    pub async fn kill(&mut self, name: &str) {
        let node = self.node_mut(name);
        let mut child = node
            .child
            .take()
            .unwrap_or_else(|| panic!("{name} not running"));
        child.start_kill().unwrap();
        let _ = child.wait().await;
    }

    /// Sends `signal` (a name for kill(1) like "TERM", "STOP", "CONT", "USR1") to `name`.
    pub fn signal(&self, name: &str, signal: &str) {
        let pid = self
            .node(name)
            .pid()
            .unwrap_or_else(|| panic!("{name} not running"));
        let ok = std::process::Command::new("kill")
            .args(["-s", signal, &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -s {signal} {pid} failed");
    }

    /// SIGTERM `name` and waits (at most `bound`, then SIGKILL) for it to exit.
    pub async fn terminate(&mut self, name: &str, bound: Duration) {
        self.signal(name, "TERM");
        let node = self.node_mut(name);
        let mut child = node.child.take().unwrap();
        if tokio::time::timeout(bound, child.wait()).await.is_err() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// The consensus as one authority serves it, verified against the configured
    /// authorities (None if it cannot be fetched or verified).
    pub async fn consensus_from(&self, authority: &Node) -> Option<Consensus> {
        let id = authority.identity?;
        let trusted: Vec<IdentityPublic> = self.authorities.iter().map(|a| a.identity).collect();
        allium::proto::dirclient::fetch_consensus(
            authority.listen,
            &id,
            &trusted,
            &allium::dir::MicrodescIndex::new(),
            None,
            Duration::from_secs(10),
            &allium::clock::Clock::system(),
        )
        .await
        .ok()
        .map(|(c, _)| c)
    }

    /// The consensus from the first running authority that serves one.
    pub async fn consensus(&self) -> Option<Consensus> {
        for a in self.by_role(Role::Authority).filter(|a| a.child.is_some()) {
            if let Some(c) = self.consensus_from(a).await {
                return Some(c);
            }
        }
        None
    }

    /// Waits (at most `bound`) until every running authority and relay serves a consensus
    /// listing every running relay (`allium::testnet::wait_until_listed`, the readiness
    /// check of every test network); panics with every log if it does not happen.
    pub async fn wait_until_all_listed(&self, bound: Duration) -> Consensus {
        self.wait_until_listed_by(bound, |n| n.child.is_some())
            .await
    }

    /// The same for the nodes `started` selects, for a test that starts the processes
    /// itself (open the network before starting them: [`ProcNet::open`] creates the keys
    /// of a node that has none yet).
    pub async fn wait_until_listed_by(
        &self,
        bound: Duration,
        started: impl Fn(&Node) -> bool,
    ) -> Consensus {
        let servers: Vec<DirServer> = self
            .nodes
            .iter()
            .filter(|n| n.role != Role::Proxy && started(n))
            .filter_map(|n| {
                Some(DirServer {
                    name: n.name.clone(),
                    addr: n.listen,
                    identity: n.identity?,
                })
            })
            .collect();
        let relays: Vec<IdentityPublic> = self
            .by_role(Role::Relay)
            .filter(|n| started(n))
            .filter_map(|n| n.identity)
            .collect();
        let trusted: Vec<IdentityPublic> = self.authorities.iter().map(|a| a.identity).collect();
        match wait_until_listed(&servers, &trusted, &relays, bound).await {
            Ok(c) => c,
            Err(e) => {
                self.dump_logs();
                panic!("{}: the network did not form: {e}", self.dir.display());
            }
        }
    }

    /// Starts the network so that nothing is measured on a half-formed one: the
    /// authorities and relays first; once every one of them serves a consensus listing
    /// every relay ([`ProcNet::wait_until_all_listed`]), the proxy, which then bootstraps
    /// from such a consensus (checked in its log). Waits (at most `bound` each) until the
    /// proxy serves SOCKS. Panics with every log if any step fails.
    pub async fn start_ready(&mut self, bound: Duration) -> Consensus {
        for role in [Role::Authority, Role::Relay] {
            let names: Vec<String> = self.by_role(role).map(|n| n.name.clone()).collect();
            for n in names {
                if self.node(&n).child.is_none() {
                    self.start(&n);
                }
            }
        }
        let consensus = self.wait_until_all_listed(bound).await;
        let proxies: Vec<String> = self.by_role(Role::Proxy).map(|n| n.name.clone()).collect();
        for p in &proxies {
            self.start(p);
        }
        for p in &proxies {
            if !self.wait_for_log(p, "SOCKS proxy listening", bound).await {
                self.dump_logs();
                panic!("{p}: not serving SOCKS within {bound:?}");
            }
            // "bootstrap 40%: consensus with N relays verified" (the last one: a failed
            // bootstrap is retried).
            let log = self.log(p);
            let listed = log.lines().rev().find_map(|l| {
                let rest = l.split_once("consensus with ")?.1;
                rest.strip_suffix(" relays verified")?.parse::<usize>().ok()
            });
            let want = consensus.relays().len();
            if listed.is_some_and(|n| n < want) {
                self.dump_logs();
                panic!("{p} bootstrapped from a consensus of {listed:?} relays, not all {want}");
            }
        }
        consensus
    }

    /// Waits (at most `bound`) until a consensus satisfies `pred`.
    pub async fn wait_for_consensus_where(
        &self,
        bound: Duration,
        pred: impl Fn(&Consensus) -> bool,
    ) -> Option<Consensus> {
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            if let Some(c) = self.consensus().await {
                if pred(&c) {
                    return Some(c);
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        None
    }

    /// Waits (at most `bound`) until `name`'s log contains `text`.
    pub async fn wait_for_log(&self, name: &str, text: &str, bound: Duration) -> bool {
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            if self.log(name).contains(text) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }

    /// Everything `name` has logged so far.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(&self.node(name).log).unwrap_or_default()
    }

    /// Prints every log (call before failing).
    pub fn dump_logs(&self) {
        for n in &self.nodes {
            eprintln!("--- {}:\n{}", n.log.display(), self.log(&n.name));
        }
    }

    /// `name`'s metrics as (name, value) pairs (labels kept in the name).
    pub async fn metrics(&self, name: &str) -> Option<Vec<(String, f64)>> {
        let configured = self.node(name).metrics?;
        let addr = if configured.port() == 0 {
            self.printed_metrics_addr(name)?
        } else {
            configured
        };
        let fetch = async {
            let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.ok()?;
            let mut text = String::new();
            s.read_to_string(&mut text).await.ok()?;
            Some(text)
        };
        let text = tokio::time::timeout(Duration::from_secs(5), fetch)
            .await
            .ok()??;
        let body = text.split_once("\r\n\r\n")?.1;
        Some(
            body.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let (k, v) = l.rsplit_once(' ')?;
                    Some((k.to_string(), v.parse().ok()?))
                })
                .collect(),
        )
    }

    /// The metrics address `name` printed at startup ("metrics on http://ADDR/"; the
    /// newest, as a restarted node prints it again).
    fn printed_metrics_addr(&self, name: &str) -> Option<SocketAddr> {
        let log = self.log(name);
        let line = log
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("metrics on http://"))?;
        line.trim_end().trim_end_matches('/').parse().ok()
    }

    /// One metric of `name` (None if unreachable or absent).
    pub async fn metric(&self, name: &str, metric: &str) -> Option<f64> {
        self.metrics(name)
            .await?
            .into_iter()
            .find(|(k, _)| k == metric)
            .map(|(_, v)| v)
    }

    /// Stops every process (SIGKILL) and waits for them.
    pub async fn stop_all(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.start_kill();
                let _ = c.wait().await;
            }
        }
    }

    /// Stops everything and removes the directory.
    pub async fn finish(mut self) {
        self.stop_all().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs curl through the proxy at `socks` for `url` with `args` added; returns its exit
/// status code, stdout and stderr.
pub async fn curl(socks: SocketAddr, url: &str, args: &[&str]) -> (i32, Vec<u8>, String) {
    curl_as(socks, None, url, args).await
}

/// Like [`curl`], authenticating to the proxy as `user` (a SOCKS username is an isolation
/// class: a name never used before makes the proxy use a circuit of its own).
pub async fn curl_as(
    socks: SocketAddr,
    user: Option<&str>,
    url: &str,
    args: &[&str],
) -> (i32, Vec<u8>, String) {
    let proxy = match user {
        Some(u) => format!("socks5h://{u}:x@{socks}"),
        None => format!("socks5h://{socks}"),
    };
    let out = Command::new("curl")
        .args(["-s", "-S", "-x", &proxy])
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// One row of /proc/net/tcp: local port, remote port, state (1 = established), inode.
fn tcp_rows() -> Vec<(u16, u16, u8, u64)> {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let port = |s: &str| u16::from_str_radix(s.rsplit_once(':')?.1, 16).ok();
            Some((
                port(f.get(1)?)?,
                port(f.get(2)?)?,
                u8::from_str_radix(f.get(3)?, 16).ok()?,
                f.get(9)?.parse().ok()?,
            ))
        })
        .collect()
}

/// The socket inodes process `pid` holds open.
fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let link = std::fs::read_link(e.ok()?.path()).ok()?;
        let s = link.to_string_lossy();
        s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
    })
    .collect()
}

impl ProcNet {
    /// The running node that owns the local end of the loopback TCP connection from
    /// `local_port` to `remote_port` (e.g. the exit that connected to a test server).
    pub fn owner_of_connection(&self, local_port: u16, remote_port: u16) -> Option<&Node> {
        let inode = tcp_rows()
            .into_iter()
            .find(|r| r.0 == local_port && r.1 == remote_port)?
            .3;
        self.nodes
            .iter()
            .find(|n| n.pid().is_some_and(|p| socket_inodes(p).contains(&inode)))
    }

    /// The nodes `name` has an established TCP connection to (by their listen port).
    pub fn connected_to(&self, name: &str) -> Vec<&Node> {
        let Some(pid) = self.node(name).pid() else {
            return Vec::new();
        };
        let mine = socket_inodes(pid);
        let ports: Vec<u16> = tcp_rows()
            .into_iter()
            .filter(|r| r.2 == 1 && mine.contains(&r.3))
            .map(|r| r.1)
            .collect();
        self.nodes
            .iter()
            .filter(|n| n.name != name && ports.contains(&n.listen.port()))
            .collect()
    }
}
