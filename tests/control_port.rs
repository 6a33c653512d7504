//! The control port (docs/control.md) on real TCP on 127.0.0.1:
//! - an independent Python client (tests/control_port.py, the socket module only) drives a
//!   real `allium proxy` process whose `[control]` table is the one of
//!   docs/examples/proxy.toml: cookie authentication, bootstrap status, ADD_ONION (the
//!   service is reached through SOCKS), events, DEL_ONION (then it is not); then SIGUSR1
//!   on that process closes the circuits (new ones are built, seen as CIRC events);
//! - NEWNYM closes exit circuits and cached rendezvous circuits: the next stream on the
//!   same isolation class uses another circuit, the next onion stream a new rendezvous;
//!   the next exit stream leaves from another exit, NEWNYM after NEWNYM, as the exits
//!   themselves record (the Python script's streams before and after its NEWNYM too);
//! - attackers: a wrong cookie, an over-long line, commands before AUTHENTICATE, too many
//!   connections and a connection that never authenticates are refused and closed, and an unauthenticated
//!   connection never receives an event; ephemeral services belong to their connection.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use allium::cell::{Hostname, TargetAddr};
use allium::client::control::{serve_tcp, Control, ControlConfig, Events};
use allium::client::onion_service::{launch, ServiceConfig};
use allium::client::{Client, ClientConfig, Isolation, ProxyConfig};
use allium::relay::ExitConnector;
use allium::testnet::{TestNet, TestNetConfig};
use common::{prereq, NO_HANG};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("allium-control-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Which exit (relay index) opened each exit connection, in order: ground truth from the
/// exits themselves.
#[derive(Debug, Default)]
struct ExitLog(Mutex<Vec<(usize, SocketAddr)>>);

impl ExitLog {
    /// The exits that connected to `to`, in order.
    fn exits_to(&self, to: SocketAddr) -> Vec<usize> {
        let log = self.0.lock().unwrap();
        log.iter()
            .filter(|(_, a)| *a == to)
            .map(|(i, _)| *i)
            .collect()
    }
}

/// An exit's connector that records the connection in the log, then makes it.
#[derive(Debug)]
struct Recorded {
    exit: usize,
    log: Arc<ExitLog>,
}

impl ExitConnector for Recorded {
    fn connect(
        &self,
        addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<TcpStream>> + Send + '_>> {
        self.log.0.lock().unwrap().push((self.exit, addr));
        Box::pin(TcpStream::connect(addr))
    }
}

/// A test network with two exits, whose connections are logged.
async fn start_net() -> (TestNet, Arc<ExitLog>) {
    let log = Arc::new(ExitLog::default());
    let recorded = |exit| -> (usize, Arc<dyn ExitConnector>) {
        let log = Arc::clone(&log);
        (exit, Arc::new(Recorded { exit, log }))
    };
    let net = common::net::started(TestNetConfig {
        authorities: 1,
        relays: 5,
        exits: 2,
        period: Duration::from_secs(6),
        exit_connectors: vec![recorded(0), recorded(1)],
        ..TestNetConfig::default()
    })
    .await;
    (net, log)
}

/// A control connection read line by line.
struct Ctl {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
    /// Events read while waiting for a reply.
    events: Vec<String>,
}

impl Ctl {
    async fn connect(addr: SocketAddr) -> Ctl {
        let (r, w) = TcpStream::connect(addr).await.unwrap().into_split();
        Ctl {
            r: BufReader::new(r),
            w,
            events: Vec::new(),
        }
    }

    /// The next line (without CRLF), `None` at the end of the stream.
    async fn line(&mut self) -> Option<String> {
        let mut l = String::new();
        let n = tokio::time::timeout(NO_HANG, self.r.read_line(&mut l))
            .await
            .expect("control connection hung")
            .ok()?;
        (n > 0).then(|| l.trim_end_matches("\r\n").to_string())
    }

    async fn send(&mut self, line: &str) {
        self.w
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
    }

    /// Sends `line` and returns the reply's lines (events are kept apart).
    async fn cmd(&mut self, line: &str) -> Vec<String> {
        self.send(line).await;
        let mut out = Vec::new();
        loop {
            let l = self.line().await.expect("closed before the reply ended");
            if l.starts_with("650 ") {
                self.events.push(l);
                continue;
            }
            let end = l.as_bytes().get(3) == Some(&b' ');
            out.push(l);
            if end {
                return out;
            }
        }
    }

    async fn authenticate(&mut self, cookie: &Path) {
        let hex: String = std::fs::read(cookie)
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(self.cmd(&format!("AUTHENTICATE {hex}")).await, ["250 OK"]);
    }

    /// The next event whose line contains `needle` (others are skipped).
    async fn event_containing(&mut self, needle: &str) -> String {
        if let Some(e) = self.events.iter().find(|e| e.contains(needle)) {
            return e.clone();
        }
        loop {
            let l = self
                .line()
                .await
                .expect("closed while waiting for an event");
            if l.starts_with("650 ") && l.contains(needle) {
                return l;
            }
        }
    }

    /// Asserts the peer closed the connection (after any lines it still had to send).
    async fn assert_closed(&mut self) {
        let mut rest = Vec::new();
        tokio::time::timeout(NO_HANG, self.r.read_to_end(&mut rest))
            .await
            .expect("the connection was not closed")
            .ok();
        assert!(
            rest.is_empty(),
            "unexpected bytes before the close: {rest:?}"
        );
    }
}

/// An in-process client with the control port and a SOCKS port on 127.0.0.1.
struct InProcess {
    net: TestNet,
    exits: Arc<ExitLog>,
    client: Client,
    control: SocketAddr,
    socks: SocketAddr,
    cookie: PathBuf,
    dir: PathBuf,
}

async fn in_process(tag: &str) -> InProcess {
    in_process_with(tag, |_| {}).await
}

async fn in_process_with(tag: &str, tweak: impl FnOnce(&mut ClientConfig)) -> InProcess {
    let (net, exits) = start_net().await;
    let dir = temp_dir(tag);
    let events = Arc::new(Events::default());
    let mut cfg = ClientConfig::new(net.authority_info.clone());
    cfg.observer = Some(events.clone());
    tweak(&mut cfg);
    let client = Client::bootstrap(cfg).await.unwrap();
    let socks_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let socks = socks_l.local_addr().unwrap();
    tokio::spawn(allium::client::socks_server::serve_socks(
        socks_l,
        0,
        events.observe(Arc::new(client.clone())),
        ProxyConfig::default(),
        std::future::pending(),
    ));
    let cookie = dir.join("control_auth_cookie");
    let mut ccfg = ControlConfig::with_cookie(cookie.clone());
    ccfg.socks = Some(socks);
    let ctl = Control::new(client.clone(), events, &ccfg).unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let control = l.local_addr().unwrap();
    tokio::spawn(serve_tcp(l, ctl, std::future::pending()));
    InProcess {
        net,
        exits,
        client,
        control,
        socks,
        cookie,
        dir,
    }
}

/// A SOCKS5 CONNECT to `target` (an IP address) through `socks`.
async fn socks_connect(socks: SocketAddr, target: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(socks).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut b = [0u8; 2];
    s.read_exact(&mut b).await.unwrap();
    let SocketAddr::V4(t) = target else {
        panic!("IPv4 only")
    };
    let mut req = vec![5, 1, 0, 1];
    req.extend_from_slice(&t.ip().octets());
    req.extend_from_slice(&t.port().to_be_bytes());
    s.write_all(&req).await.unwrap();
    let mut reply = [0u8; 10];
    tokio::time::timeout(NO_HANG, s.read_exact(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply[1], 0, "SOCKS CONNECT refused");
    s
}

async fn echo_check<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(s: &mut S) {
    s.write_all(b"ping").await.unwrap();
    let mut b = [0u8; 4];
    tokio::time::timeout(NO_HANG, s.read_exact(&mut b))
        .await
        .expect("echo hung")
        .unwrap();
    assert_eq!(&b, b"ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attackers_get_nothing_before_authenticating() {
    let t = in_process("attack").await;

    // A wrong cookie: 515, closed.
    let mut c = Ctl::connect(t.control).await;
    assert_eq!(
        c.cmd(&format!("AUTHENTICATE {}", "00".repeat(32))).await,
        ["515 Authentication failed: wrong cookie or password"]
    );
    c.assert_closed().await;
    // A password where there is none: refused too.
    let mut c = Ctl::connect(t.control).await;
    assert!(c.cmd("AUTHENTICATE \"guess\"").await[0].starts_with("515 "));
    c.assert_closed().await;

    // Every command but PROTOCOLINFO/AUTHENTICATE/QUIT: 514, closed, nothing else said.
    for cmd in [
        "GETINFO status/bootstrap-phase",
        "GETINFO onions/current",
        "SETEVENTS CIRC STREAM",
        "SIGNAL NEWNYM",
        "ADD_ONION NEW:BEST Port=80",
        "DEL_ONION aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "NOSUCHCOMMAND",
        "GETINFO \u{1}",
    ] {
        let mut c = Ctl::connect(t.control).await;
        assert_eq!(c.cmd(cmd).await, ["514 Authentication required."], "{cmd}");
        c.assert_closed().await;
    }
    // PROTOCOLINFO once only before authenticating.
    let mut c = Ctl::connect(t.control).await;
    assert_eq!(c.cmd("PROTOCOLINFO 1").await.last().unwrap(), "250 OK");
    assert_eq!(
        c.cmd("PROTOCOLINFO 1").await,
        ["514 Authentication required."]
    );
    c.assert_closed().await;

    // An over-long line, before and after authenticating: refused, closed.
    for authenticated in [false, true] {
        let mut c = Ctl::connect(t.control).await;
        if authenticated {
            c.authenticate(&t.cookie).await;
        }
        let long = format!("GETINFO {}", "a".repeat(5000));
        let reply = c.cmd(&long).await;
        assert!(reply[0].starts_with("512 Line too long"), "{reply:?}");
        c.assert_closed().await;
    }

    // Events go only to the authenticated: while `watcher` receives circuit and stream
    // events, `idle` (connected, not authenticated) receives none: its first bytes are
    // the reply to its own PROTOCOLINFO.
    let mut idle = Ctl::connect(t.control).await;
    let mut watcher = Ctl::connect(t.control).await;
    watcher.authenticate(&t.cookie).await;
    assert_eq!(watcher.cmd("SETEVENTS CIRC STREAM").await, ["250 OK"]);
    assert_eq!(watcher.cmd("SIGNAL NEWNYM").await, ["250 OK"]);
    let echo = common::tcp_echo().await;
    let mut s = socks_connect(t.socks, echo).await;
    echo_check(&mut s).await;
    watcher.event_containing(" BUILT PURPOSE=GENERAL").await;
    let ev = watcher.event_containing(" SUCCEEDED ").await;
    assert!(ev.ends_with(&format!(" SUCCEEDED 0 {echo}")), "{ev}");
    idle.send("PROTOCOLINFO 1").await;
    assert_eq!(idle.line().await.unwrap(), "250-PROTOCOLINFO 1");

    // Ephemeral services belong to the connection that made them: another connection
    // cannot remove them, and they stop when it closes; a detached one is listed to and
    // removable by any connection. A returned key makes the same service again.
    let mut a = Ctl::connect(t.control).await;
    a.authenticate(&t.cookie).await;
    let added = a.cmd("ADD_ONION NEW:BEST Port=80,127.0.0.1:9").await;
    let id = added[0].strip_prefix("250-ServiceID=").unwrap().to_string();
    let key = added[1]
        .strip_prefix("250-PrivateKey=")
        .unwrap()
        .to_string();
    assert!(key.starts_with("ALLIUM-ED25519:"), "{added:?}");
    let mut b = Ctl::connect(t.control).await;
    b.authenticate(&t.cookie).await;
    assert_eq!(
        b.cmd(&format!("DEL_ONION {id}")).await,
        ["552 Unknown Onion Service id"]
    );
    assert_eq!(
        b.cmd("GETINFO onions/current").await,
        ["250-onions/current=", "250 OK"]
    );
    assert_eq!(
        a.cmd(&format!("ADD_ONION {key} Port=80")).await,
        ["550 Onion address collision"]
    );
    drop(a);
    let again = tokio::time::timeout(NO_HANG, async {
        loop {
            let r = b
                .cmd(&format!("ADD_ONION {key} Flags=Detach,DiscardPK Port=80"))
                .await;
            if r[0] != "550 Onion address collision" {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the closed connection's service never stopped");
    assert_eq!(again, [format!("250-ServiceID={id}"), "250 OK".to_string()]);
    drop(b);
    let mut c = Ctl::connect(t.control).await;
    c.authenticate(&t.cookie).await;
    assert_eq!(
        c.cmd("GETINFO onions/detached").await,
        [format!("250-onions/detached={id}"), "250 OK".to_string()]
    );
    assert_eq!(c.cmd(&format!("DEL_ONION {id}")).await, ["250 OK"]);
    drop(c);

    // Connection limit (2 on this second control port): two authenticated connections
    // fit, the next is told so and closed.
    let mut cfg = ControlConfig::with_cookie(t.dir.join("cookie3"));
    cfg.max_connections = 2;
    let ctl = Control::new(t.client.clone(), Arc::new(Events::default()), &cfg).unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(serve_tcp(l, ctl, std::future::pending()));
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = Ctl::connect(addr).await;
        c.authenticate(&t.dir.join("cookie3")).await;
        held.push(c);
    }
    let mut over = Ctl::connect(addr).await;
    assert_eq!(
        over.line().await.unwrap(),
        "551 Too many control connections"
    );
    over.assert_closed().await;
    drop(held);

    // A connection that says nothing is closed once its time to authenticate is over.
    let mut cfg = ControlConfig::with_cookie(t.dir.join("cookie2"));
    cfg.auth_timeout = Duration::from_secs(1);
    let ctl = Control::new(t.client.clone(), Arc::new(Events::default()), &cfg).unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(serve_tcp(l, ctl, std::future::pending()));
    Ctl::connect(addr).await.assert_closed().await;

    t.net.shutdown().await;
    let _ = std::fs::remove_dir_all(&t.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newnym_closes_exit_and_rendezvous_circuits() {
    let t = in_process("newnym").await;
    let echo = common::tcp_echo().await;
    // The service runs on its own client, so NEWNYM on the visitor leaves it alone.
    let svc_client = Client::bootstrap(ClientConfig::new(t.net.authority_info.clone()))
        .await
        .unwrap();
    let service = launch(
        svc_client,
        ServiceConfig::new(t.dir.join("svc.key"), vec![(80, echo)]),
    )
    .await
    .unwrap();
    assert!(service.wait_published(NO_HANG).await, "not published");
    let onion = TargetAddr::Hostname(Hostname::new(&service.address().to_string()).unwrap());
    let iso = Isolation(b"one user".to_vec());
    let ids = |c: &Client| {
        c.circuits_by_isolation()
            .into_iter()
            .find(|(i, _)| *i == iso)
            .map(|(_, ids)| ids)
            .unwrap_or_default()
    };

    let mut rend = tokio::time::timeout(NO_HANG, t.client.connect_target(onion.clone(), 80, &iso))
        .await
        .unwrap()
        .unwrap();
    echo_check(&mut rend).await;
    assert_eq!(t.client.rendezvous_circuits_held(), 1);
    let ip = TargetAddr::Ip(echo.ip());
    let mut exit = t
        .client
        .connect_target(ip.clone(), echo.port(), &iso)
        .await
        .unwrap();
    echo_check(&mut exit).await;
    let before = ids(&t.client);
    assert!(!before.is_empty());
    assert_eq!(t.exits.exits_to(echo).len(), 1);

    let mut c = Ctl::connect(t.control).await;
    c.authenticate(&t.cookie).await;
    assert_eq!(c.cmd("SIGNAL NEWNYM").await, ["250 OK"]);

    // The cached rendezvous circuit is gone and its stream ended, as the exit stream did.
    assert_eq!(t.client.rendezvous_circuits_held(), 0);
    for s in [&mut rend, &mut exit] {
        let mut buf = [0u8; 16];
        let r = tokio::time::timeout(NO_HANG, s.read(&mut buf))
            .await
            .expect("a stream on a closed circuit must end");
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    }
    // The next stream of the same class uses another circuit.
    let mut exit = t
        .client
        .connect_target(ip, echo.port(), &iso)
        .await
        .unwrap();
    echo_check(&mut exit).await;
    let after = ids(&t.client);
    assert!(!after.is_empty());
    assert!(
        after.iter().all(|id| !before.contains(id)),
        "{before:?} → {after:?}"
    );
    // ... leaving from the other exit.
    let exits = t.exits.exits_to(echo);
    assert!(exits.len() == 2 && exits[0] != exits[1], "{exits:?}");
    // And the service is reached again, over a new rendezvous.
    let mut rend = tokio::time::timeout(NO_HANG, t.client.connect_target(onion, 80, &iso))
        .await
        .unwrap()
        .unwrap();
    echo_check(&mut rend).await;
    assert_eq!(t.client.rendezvous_circuits_held(), 1);

    service.stop();
    t.net.shutdown().await;
    let _ = std::fs::remove_dir_all(&t.dir);
}

/// NEWNYM after NEWNYM (the call the control port makes), each next stream leaves from
/// another exit than the stream before it: with two exits, they alternate. Without the
/// exclusion each round would repeat the exit with probability about 1/2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newnym_moves_the_next_stream_to_another_exit() {
    let t = in_process("newexit").await;
    let echo = common::tcp_echo().await;
    let iso = Isolation(b"one user".to_vec());
    let ip = TargetAddr::Ip(echo.ip());
    for round in 0..4 {
        if round > 0 {
            t.client.new_identity().await;
        }
        let mut s = tokio::time::timeout(
            NO_HANG,
            t.client.connect_target(ip.clone(), echo.port(), &iso),
        )
        .await
        .unwrap()
        .unwrap();
        echo_check(&mut s).await;
        // A second stream before the next NEWNYM shares the circuit, and its exit.
        let mut again = t
            .client
            .connect_target(ip.clone(), echo.port(), &iso)
            .await
            .unwrap();
        echo_check(&mut again).await;
    }
    let exits = t.exits.exits_to(echo);
    eprintln!("exits per stream (relay index): {exits:?}");
    assert_eq!(exits.len(), 8, "{exits:?}");
    for pair in exits.chunks(2) {
        assert_eq!(pair[0], pair[1], "{exits:?}");
    }
    for w in exits.chunks(2).collect::<Vec<_>>().windows(2) {
        assert_ne!(w[0][0], w[1][0], "NEWNYM kept the exit: {exits:?}");
    }
    t.net.shutdown().await;
    let _ = std::fs::remove_dir_all(&t.dir);
}

/// The attack: a destination keeps one stream open past the circuit's dirtiness (a
/// websocket trickling data), so the circuit is retired (takes no new streams) but stays
/// open. NEWNYM must still end that stream, or the destination links the identities by
/// the connection that survived it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newnym_ends_streams_on_circuits_already_retired() {
    let t = in_process_with("retired", |c| c.max_dirtiness = Duration::from_secs(1)).await;
    let echo = common::tcp_echo().await;
    let iso = Isolation(b"held open".to_vec());
    let ip = TargetAddr::Ip(echo.ip());
    let mut held = t
        .client
        .connect_target(ip.clone(), echo.port(), &iso)
        .await
        .unwrap();
    echo_check(&mut held).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The next stream of the class retires the old circuit and builds a new one.
    let mut next = t
        .client
        .connect_target(ip.clone(), echo.port(), &iso)
        .await
        .unwrap();
    echo_check(&mut next).await;
    echo_check(&mut held).await;
    t.client.new_identity().await;
    for (name, s) in [("retired", &mut held), ("current", &mut next)] {
        let mut buf = [0u8; 16];
        let ended = tokio::time::timeout(NO_HANG, async {
            let _ = s.write_all(b"after newnym").await;
            matches!(s.read(&mut buf).await, Ok(0) | Err(_))
        })
        .await
        .unwrap_or(false);
        assert!(ended, "the {name} circuit's stream outlived NEWNYM");
    }
    t.net.shutdown().await;
    let _ = std::fs::remove_dir_all(&t.dir);
}

/// The `[control]` table of docs/examples/proxy.toml, uncommented, on `port` with the
/// cookie at `cookie`.
fn documented_control_table(port: u16, cookie: &Path) -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/examples/proxy.toml"),
    )
    .unwrap();
    let start = text
        .find("# [control]")
        .expect("the example has a [control] table");
    let table: Vec<String> = text[start..]
        .lines()
        .map(|l| l.trim_start_matches("# ").to_string())
        .collect();
    let table = table.join("\n");
    assert!(table.contains("listen = \"127.0.0.1:9051\""), "{table}");
    table
        .replace("127.0.0.1:9051", &format!("127.0.0.1:{port}"))
        .replace(
            "/var/lib/allium/proxy/control_auth_cookie",
            &cookie.display().to_string(),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_drives_a_real_proxy_control_port() {
    if !prereq::require(&[prereq::python3()]) {
        return;
    }
    let (net, exits) = start_net().await;
    let echo = common::tcp_echo().await;
    let dir = temp_dir("python");
    let socks_port = common::procnet::free_port();
    let control_port = common::procnet::free_port();
    let cookie = dir.join("control_auth_cookie");
    let mut config = format!(
        "[proxy]\nsocks_listen = \"127.0.0.1:{socks_port}\"\ndata_dir = \"{}\"\n",
        dir.join("data").display()
    );
    for a in &net.authority_info {
        config.push_str(&format!(
            "[[proxy.authorities]]\nidentity = \"{}\"\naddr = \"{}\"\n",
            a.identity, a.addr
        ));
    }
    config.push('\n');
    config.push_str(&documented_control_table(control_port, &cookie));
    let path = dir.join("proxy.toml");
    std::fs::write(&path, config).unwrap();

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_allium"))
        .arg("proxy")
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (log_tx, mut log) = tokio::sync::mpsc::unbounded_channel();
    let stderr = child.stderr.take().unwrap();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            let _ = log_tx.send(l);
        }
    });
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let control: SocketAddr = format!("127.0.0.1:{control_port}").parse().unwrap();
    tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let l = out.next_line().await.unwrap().expect("the proxy exited");
            if l == format!("control port listening on {control}") {
                return;
            }
        }
    })
    .await
    .expect("the proxy never opened its control port");

    let run = tokio::process::Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/control_port.py"))
        .arg(control.to_string())
        .arg(&cookie)
        .arg(format!("127.0.0.1:{socks_port}"))
        .arg(echo.port().to_string())
        .kill_on_drop(true)
        .output();
    let run = tokio::time::timeout(Duration::from_secs(400), run)
        .await
        .expect("control_port.py hung")
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "control_port.py failed");
    assert!(stdout.contains("control_port.py: OK"));
    // Its exit streams before and after its NEWNYM left from different exits.
    let used = exits.exits_to(echo);
    assert!(used.len() == 2 && used[0] != used[1], "{used:?}");

    // SIGUSR1 on the real process is NEWNYM: every circuit closed, new ones built.
    let mut c = Ctl::connect(control).await;
    c.authenticate(&cookie).await;
    assert_eq!(c.cmd("SETEVENTS CIRC").await, ["250 OK"]);
    while log.try_recv().is_ok() {}
    let pid = child.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-USR1", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    tokio::time::timeout(NO_HANG, async {
        while let Some(l) = log.recv().await {
            if l.contains("new identity: every circuit closed") {
                return;
            }
        }
        panic!("the proxy's log ended");
    })
    .await
    .expect("SIGUSR1 did not close the circuits");
    c.event_containing(" BUILT PURPOSE=GENERAL").await;

    let _ = child.kill().await;
    net.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
