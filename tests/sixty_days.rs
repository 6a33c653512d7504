//! A network that lives 60 days in a test (issue 17, item 5): three directory authorities,
//! six relays (two exits), a client with its SOCKS proxy and an onion service, all on one
//! simulated clock (`Clock::simulated`, which follows tokio's paused time), run through
//! 60 simulated days with the real lifetimes (1-hour consensus periods, 7-day link
//! certificates, 28-day onion-key certificates, the real guard, descriptor and idle
//! timeouts). Nothing is shortened.
//!
//! At every simulated hour it checks, on fresh circuits:
//! * a stream through an exit to a local HTTP server, through the client API;
//! * a connection to the onion service;
//!
//! and every [`WIDE_EVERY`] hours, and every hour while a restarted relay is not listed
//! again:
//! * the same stream through the SOCKS proxy in front of the client;
//! * a circuit pinned through each of the two relays that get restarted (its consensus
//!   onion key, a stream through an exit at the end).
//!
//! (Link and circuit handshakes are nearly all of the run's CPU time, and CI runs this
//! test on two cores: checking everything every hour nearly doubled the run.)
//!
//! Relay 4 is restarted with its keys from its key directory on days 2 and 20; relay 5
//! after its onion-key files were deleted on days 4 and 33. Each must be listed again (with
//! its current onion key, in the client's consensus) within 6 hours and be usable.
//!
//! Time: the test runs on a current-thread runtime with paused time; when every task
//! waits, tokio moves time to the next timer, so the nodes' own timers (consensus periods,
//! publishing, refreshes, keepalives, idle timeouts) pace the run, and an idle simulated
//! hour costs only its timers' work. A read still pending when the runtime goes idle can
//! let time jump to a timeout, and a relay that just restarted cuts circuits; so each check
//! gets [`ATTEMPTS`] tries (a minute apart, simulated), [`ATTEMPTS_WHILE_STALE`] while a
//! restarted relay's new onion key is not yet in the client's consensus; every retry is
//! counted, printed with its error and reported per day, and a check failing all of them
//! fails the test with the day, the hour, the check, the error and the primary guards.
//!
//! One line is printed per simulated day: hours whose checks all passed, retries,
//! consensus periods the client went through, link- and onion-certificate renewals and
//! onion-key rotations seen (on the relays and in the consensus), guard changes, restarts.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use allium::client::onion_service::{launch, OnionService, ServiceConfig};
use allium::client::socks_server::{serve_socks, Connector, ProxyConfig};
use allium::client::{Client, ClientConfig};
use allium::clock::Clock;
use allium::crypto::{IdentityPublic, RelayId};
use allium::dir::{Consensus, GuardParams, GuardSet, RelayFlags};
use allium::link::LinkConfig;
use allium::proto::{ClientChannel, ClientCircuit, RelayTarget};
use allium::testnet::{TestNet, TestNetConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

const DAYS: u64 = 60;
const HOUR: Duration = Duration::from_secs(3600);
/// The real consensus period (the default of `AuthorityConfig`).
const PERIOD: Duration = HOUR;
/// Tries per check before the test fails (see the module comment).
const ATTEMPTS: usize = 3;
/// Hours between the checks that are not hourly (SOCKS, pinned circuits).
const WIDE_EVERY: u64 = 6;
/// Tries per check while a restarted relay's new onion key is not yet in the client's
/// consensus. Every circuit through it fails (DESTROY: the client's CREATE uses the key it
/// lost) until then, hours; in this six-relay network that is a sixth of every path's
/// hops, and neither an onion-service connection nor the service's rendezvous avoids a
/// relay that just failed (only `Client::connect` to an exit does), so a try fails more
/// often than not. Retries are counted and printed like the others.
const ATTEMPTS_WHILE_STALE: usize = 10;
/// Simulated pause before a check is tried again: a failure right after a relay restarted
/// (an onion service's introduction circuits cut, its guard gone) needs the network's own
/// recovery, which takes simulated seconds that back-to-back tries would never give it.
const RETRY_PAUSE: Duration = Duration::from_secs(60);
/// Simulated time one try of a check may take.
const CHECK_LIMIT: Duration = Duration::from_secs(300);
/// Bytes fetched through an exit.
const BODY: usize = 20_000;
/// Relays (0-based indexes into `TestNet::relays`) restarted with their keys, and when.
const KEEP_KEYS: usize = 3;
/// Relay restarted after its onion-key files were deleted.
const LOSE_ONION: usize = 4;
/// (day, relay) restarts, at hour 12 of the day, before that hour's checks.
const RESTARTS: [(u64, usize); 4] = [
    (2, KEEP_KEYS),
    (4, LOSE_ONION),
    (20, KEEP_KEYS),
    (33, LOSE_ONION),
];
/// A restarted relay must be listed again (current onion key, client's consensus) this soon:
/// its upload can miss the vote half an hour later, so the next consensus listing it comes
/// up to two periods later, and a client refetches only in the 7/8 of the two periods
/// after its consensus stops being fresh (`Consensus::refetch_time`): up to about five hours.
const RELIST_LIMIT: u64 = 6 * 3600;

fn scratch_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("allium-sixty-days-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    for sub in ["keys", "client", "service"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    {
        use std::os::unix::fs::PermissionsExt;
        for sub in ["", "keys", "client", "service"] {
            std::fs::set_permissions(d.join(sub), std::fs::Permissions::from_mode(0o700)).unwrap();
        }
    }
    d
}

/// `GET /bytes/BODY` over `s`; Ok if the whole body came back.
async fn fetch<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> Result<(), String> {
    s.write_all(format!("GET /bytes/{BODY} HTTP/1.0\r\nHost: web\r\n\r\n").as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut got = Vec::new();
    s.read_to_end(&mut got)
        .await
        .map_err(|e| format!("read after {} bytes: {e}", got.len()))?;
    let head_end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no HTTP head in {} bytes", got.len()))?;
    if !got.starts_with(b"HTTP/1.0 200") && !got.starts_with(b"HTTP/1.1 200") {
        return Err(format!(
            "answer {:?}",
            String::from_utf8_lossy(&got[..head_end.min(40)])
        ));
    }
    let body = got.len() - head_end - 4;
    if body != BODY {
        return Err(format!("body of {body} bytes, not {BODY}"));
    }
    Ok(())
}

/// A SOCKS5 CONNECT to `127.0.0.1:port` through `proxy`, then [`fetch`].
async fn fetch_via_socks(proxy: SocketAddr, web: SocketAddr) -> Result<(), String> {
    let mut s = TcpStream::connect(proxy)
        .await
        .map_err(|e| format!("proxy: {e}"))?;
    let io = |e: std::io::Error| format!("socks: {e}");
    s.write_all(&[5, 1, 0]).await.map_err(io)?;
    let mut m = [0u8; 2];
    s.read_exact(&mut m).await.map_err(io)?;
    let mut req = vec![5, 1, 0, 1, 127, 0, 0, 1];
    req.extend_from_slice(&web.port().to_be_bytes());
    s.write_all(&req).await.map_err(io)?;
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).await.map_err(io)?;
    if reply[1] != 0 {
        return Err(format!("SOCKS reply {}", reply[1]));
    }
    fetch(s).await
}

/// The consensus entry of `id` as a circuit hop.
fn hop(c: &Consensus, id: &IdentityPublic, now: u64) -> Result<RelayTarget, String> {
    let e = c.relay(id).ok_or("not listed")?;
    let onion = e
        .verified_onion_key(now)
        .map_err(|e| format!("onion key: {e}"))?;
    Ok(RelayTarget {
        addr: *e.addrs.first().ok_or("no address")?,
        identity: *onion.identity(),
        onion,
    })
}

/// A fresh 3-hop circuit (own channel) through `path`, taken from the consensus, and a
/// stream through its last hop (an exit) to `web`.
async fn pinned_fetch(
    c: &Consensus,
    path: [IdentityPublic; 3],
    web: SocketAddr,
    clock: &Clock,
) -> Result<(), String> {
    let now = clock.now_unix();
    let hops: Vec<RelayTarget> = path
        .iter()
        .map(|id| hop(c, id, now))
        .collect::<Result<_, _>>()?;
    let link = LinkConfig {
        clock: clock.clone(),
        ..LinkConfig::default()
    };
    let chan = ClientChannel::connect(&hops[0], &link)
        .await
        .map_err(|e| format!("channel: {e}"))?;
    let mut circ = ClientCircuit::create(&chan, &hops[0], CHECK_LIMIT)
        .await
        .map_err(|e| format!("create: {e}"))?;
    for h in &hops[1..] {
        circ.extend(h, CHECK_LIMIT)
            .await
            .map_err(|e| format!("extend: {e}"))?;
    }
    let handle = circ.into_handle();
    let fetched = match handle
        .open_stream(
            allium::cell::TargetAddr::Ip(web.ip()),
            web.port(),
            CHECK_LIMIT,
        )
        .await
    {
        Ok(s) => fetch(s).await,
        Err(e) => Err(format!("stream: {e}")),
    };
    // A dropped handle leaves the circuit open, and the channel's padding keeps it from
    // the idle timeout: closed explicitly, the channel then times out like the client's.
    handle.close().await;
    fetched
}

/// What one day saw.
#[derive(Default)]
struct DayLog {
    hours_ok: u32,
    retries: u32,
    periods: BTreeSet<u64>,
    link_renewals: u32,
    onion_cert_renewals: u32,
    onion_rotations_relays: u32,
    onion_rotations_consensus: u32,
    guard_changes: u32,
    restarts: Vec<String>,
}

/// The network and everything the checks use.
struct World {
    net: TestNet,
    clock: Clock,
    client: Client,
    socks: SocketAddr,
    web: SocketAddr,
    onion_addr: String,
    _service: OnionService,
    _service_client: Client,
    client_dir: PathBuf,
    service_dir: PathBuf,
    /// Tries per check this hour ([`ATTEMPTS`] or [`ATTEMPTS_WHILE_STALE`]).
    attempts: usize,
}

impl World {
    /// Runs `check` up to `self.attempts` times (each within [`CHECK_LIMIT`]); a failed try
    /// is printed and counted; the last failure fails the test.
    async fn check<F, Fut>(&self, day: u64, hour: u64, what: &str, log: &mut DayLog, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let mut last = String::new();
        let attempts = self.attempts;
        for attempt in 1..=attempts {
            let started = Instant::now();
            let r = match tokio::time::timeout(CHECK_LIMIT, check()).await {
                Ok(r) => r,
                Err(_) => Err(format!("no result within {} s", CHECK_LIMIT.as_secs())),
            };
            match r {
                Ok(()) => return,
                Err(e) => {
                    eprintln!(
                        "  day {day} hour {hour}: {what}: try {attempt} of {attempts} failed after {} s simulated: {e}",
                        started.elapsed().as_secs()
                    );
                    log.retries += 1;
                    last = e;
                    if attempt < attempts {
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                }
            }
        }
        panic!(
            "day {day} hour {hour}: {what} failed {attempts} times; last error: {last} ({})",
            self.guards_now()
        );
    }

    fn consensus(&self, day: u64, hour: u64) -> Arc<Consensus> {
        let c = self
            .client
            .consensus()
            .unwrap_or_else(|| panic!("day {day} hour {hour}: the client has no consensus"));
        let now = self.clock.now_unix();
        assert!(
            c.is_live(now),
            "day {day} hour {hour}: the client's consensus (valid {}..{}) is not live at {now}",
            c.valid_after(),
            c.valid_until()
        );
        c
    }

    /// The primary guards in the guard file of the client whose state is in `dir`.
    fn primary_guards(&self, dir: &std::path::Path, c: &Consensus) -> BTreeSet<String> {
        GuardSet::load(&dir.join("guards"), GuardParams::default())
            .map(|g| {
                g.primary(c)
                    .iter()
                    .map(|e| self.name(&e.validated_identity().unwrap()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// What this test calls relay `id` (`relay 3`, `authority 1`).
    fn name(&self, id: &IdentityPublic) -> String {
        if let Some(i) = self.net.relays.iter().position(|r| r.identity() == *id) {
            return format!("relay {}", i + 1);
        }
        match self
            .net
            .authorities
            .iter()
            .position(|(r, _)| r.identity() == *id)
        {
            Some(i) => format!("authority {}", i + 1),
            None => id.to_string(),
        }
    }

    /// The primary guards of the client and of the service, for failure messages.
    fn guards_now(&self) -> String {
        match self.client.consensus() {
            Some(c) => format!(
                "primary guards: client {:?}, service {:?}",
                self.primary_guards(&self.client_dir, &c),
                self.primary_guards(&self.service_dir, &c)
            ),
            None => "no consensus".into(),
        }
    }

    /// A path for a pinned circuit through `through`: `through` first, then another
    /// listed relay, then a listed exit, neither of them one of `stale` (restarted relays
    /// whose new onion key the consensus does not list yet: every circuit through them
    /// fails until it does, and this check is about `through`).
    fn pinned_path(
        &self,
        c: &Consensus,
        through: IdentityPublic,
        stale: &[IdentityPublic],
    ) -> Result<[IdentityPublic; 3], String> {
        let usable = |id: &RelayId| *id != through && !stale.iter().any(|s| s == id);
        let exit = c
            .relays()
            .iter()
            .find(|e| e.flags.contains(RelayFlags::EXIT) && usable(&e.identity))
            .ok_or("no exit listed")?
            .validated_identity()
            .map_err(|e| e.to_string())?;
        let middle = c
            .relays()
            .iter()
            .find(|e| usable(&e.identity) && e.identity != exit)
            .ok_or("no middle listed")?
            .validated_identity()
            .map_err(|e| e.to_string())?;
        Ok([through, middle, exit])
    }
}

/// Per relay, what was seen last: link-cert expiry, onion-cert expiry, onion key (its own),
/// onion key in the consensus.
#[derive(Default, Clone, PartialEq)]
struct Seen {
    link_expires: u64,
    onion_expires: u64,
    onion_key: Vec<u8>,
    listed_onion_key: Option<Vec<u8>>,
}

fn relay_seen(r: &allium::relay::RelayHandle, c: &Consensus) -> Seen {
    let keys = r.keys();
    Seen {
        link_expires: keys.link_auth().cert().expires(),
        onion_expires: keys.onion_cert().expires_unix(),
        onion_key: keys.onion_cert().onion_key().as_bytes().to_vec(),
        listed_onion_key: c
            .relay(r.identity())
            .map(|e| e.onion_cert.onion_key().as_bytes().to_vec()),
    }
}

#[tokio::test(start_paused = true)]
async fn a_network_lives_sixty_days_with_every_hour_checked() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    }
    let real = std::time::Instant::now();
    let dir = scratch_dir();
    // Start-up certificates are still stamped from the system clock (issue 17), so the
    // simulated clock starts no later than the system's time (they carry only an expiry),
    // and at most an hour earlier: just over half a period before a period starts, so the
    // authorities' first vote (half a period before it) comes a minute after the relays
    // publish, and the first consensus half an hour in.
    let p = PERIOD.as_secs();
    let sys = allium::clock::now_unix();
    let lead = p / 2 + 60;
    let start = (sys + lead) / p * p - lead;
    let clock = Clock::simulated(std::time::UNIX_EPOCH + Duration::from_secs(start));
    let t0 = Instant::now();
    let start_unix = clock.now_unix();

    let net = TestNet::start(&TestNetConfig {
        authorities: 3,
        relays: 6,
        exits: 2,
        period: PERIOD,
        clock: clock.clone(),
        key_dir: Some(dir.join("keys")),
        ..TestNetConfig::default()
    })
    .await
    .unwrap();
    let first = net
        .wait_for_consensus(3 * HOUR)
        .await
        .unwrap_or_else(|e| panic!("no first consensus: {e}"));
    eprintln!(
        "network listed after {} s simulated ({} relays)",
        clock.now_unix() - start_unix,
        first.relays().len()
    );

    let web = allium::cli::demo_server::start().await.unwrap();
    let mut cfg = ClientConfig::new(net.authority_info.clone());
    cfg.clock = clock.clone();
    let service_dir = dir.join("service");
    let mut service_cfg = cfg.clone();
    service_cfg.data_dir = Some(service_dir.clone());
    let service_client = Client::bootstrap(service_cfg).await.unwrap();
    let service = launch(
        service_client.clone(),
        ServiceConfig::new(service_dir.join("service.key"), vec![(80, web)]),
    )
    .await
    .unwrap();
    assert!(
        service.wait_published(HOUR).await,
        "onion service never published"
    );
    let onion_addr = service.address().to_string();
    let client_dir = dir.join("client");
    cfg.data_dir = Some(client_dir.clone());
    let client = Client::bootstrap(cfg).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let socks = listener.local_addr().unwrap();
    let connector: Arc<dyn Connector> = Arc::new(client.clone());
    tokio::spawn(serve_socks(
        listener,
        0,
        connector,
        ProxyConfig::default(),
        std::future::pending::<()>(),
    ));
    let mut world = World {
        net,
        clock: clock.clone(),
        client,
        socks,
        web,
        onion_addr,
        _service: service,
        _service_client: service_client,
        client_dir,
        service_dir,
        attempts: ATTEMPTS,
    };
    eprintln!(
        "set up after {} s simulated, {:.1} s real",
        clock.now_unix() - start_unix,
        real.elapsed().as_secs_f64()
    );
    run_days(&mut world, t0, start_unix).await;
    eprintln!(
        "{DAYS} simulated days in {:.1} s real",
        real.elapsed().as_secs_f64()
    );
    world.net.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Restarts relay `i` (after deleting its onion-key files if `i` is [`LOSE_ONION`]) and
/// checks what it kept: always its identity, its onion key only if the files were kept.
async fn restart(w: &mut World, i: usize, day: u64) -> String {
    let before = w.net.relays[i].keys();
    let (identity, onion) = (
        before.identity(),
        before.onion_cert().onion_key().as_bytes().to_vec(),
    );
    let lose = i == LOSE_ONION;
    if lose {
        let d = w.net.relay_key_dir(i).unwrap();
        for f in [
            allium::crypto::keyfile::ONION_KEY_FILE,
            allium::crypto::keyfile::PREVIOUS_ONION_KEY_FILE,
        ] {
            match std::fs::remove_file(d.join(f)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("day {day}: deleting {f}: {e}"),
            }
        }
    }
    w.net
        .restart_relay(i)
        .await
        .unwrap_or_else(|e| panic!("day {day}: relay {} does not start again: {e}", i + 1));
    let after = w.net.relays[i].keys();
    assert_eq!(
        after.identity(),
        identity,
        "day {day}: relay {} changed identity",
        i + 1
    );
    let same_onion = after.onion_cert().onion_key().as_bytes().to_vec() == onion;
    assert_eq!(
        same_onion,
        !lose,
        "day {day}: relay {}: onion key kept: {same_onion}",
        i + 1
    );
    format!(
        "relay {} {}",
        i + 1,
        if lose {
            "(onion keys lost)"
        } else {
            "(keys from disk)"
        }
    )
}

fn count_changes(
    w: &World,
    c: &Consensus,
    prev: &mut HashMap<usize, Seen>,
    skip: &[usize],
    log: &mut DayLog,
) {
    for (i, r) in w.net.relays.iter().enumerate() {
        let now = relay_seen(r, c);
        if let Some(p) = prev.get(&i) {
            if !skip.contains(&i) {
                log.link_renewals += u32::from(p.link_expires != now.link_expires);
                log.onion_cert_renewals += u32::from(p.onion_expires != now.onion_expires);
                log.onion_rotations_relays += u32::from(p.onion_key != now.onion_key);
            }
            if let (Some(a), Some(b)) = (&p.listed_onion_key, &now.listed_onion_key) {
                log.onion_rotations_consensus += u32::from(a != b);
            }
        }
        prev.insert(i, now);
    }
}

async fn run_days(w: &mut World, t0: Instant, start_unix: u64) {
    let mut prev: HashMap<usize, Seen> = HashMap::new();
    let mut guards: BTreeSet<String> = BTreeSet::new();
    // Restarted relays not yet listed again with their current onion key: since when.
    let mut relisting: HashMap<usize, u64> = HashMap::new();
    let first_hour = (Instant::now() - t0).as_secs() / 3600 + 1;
    let web = w.web;
    for day in 0..DAYS {
        let mut log = DayLog::default();
        let day_real = std::time::Instant::now();
        for hour in 0..24 {
            let n = u32::try_from(first_hour + day * 24 + hour).unwrap();
            tokio::time::sleep_until(t0 + HOUR * n).await;
            let mut restarted = Vec::new();
            if hour == 12 {
                for (d, i) in RESTARTS {
                    if d == day {
                        let what = restart(w, i, day).await;
                        eprintln!(
                            "  day {day} hour {hour}: restarted {what}; {}",
                            w.guards_now()
                        );
                        log.restarts.push(what);
                        relisting.insert(i, w.clock.now_unix());
                        restarted.push(i);
                    }
                }
            }
            let c = w.consensus(day, hour);
            log.periods.insert(c.valid_after());
            let stale = relisting.keys().any(|&i| {
                let r = &w.net.relays[i];
                let own = r.keys().onion_cert().onion_key().as_bytes().to_vec();
                c.relay(r.identity())
                    .is_none_or(|e| e.onion_cert.onion_key().as_bytes().to_vec() != own)
            });
            w.attempts = if stale {
                ATTEMPTS_WHILE_STALE
            } else {
                ATTEMPTS
            };
            count_changes(w, &c, &mut prev, &restarted, &mut log);
            let g = w.primary_guards(&w.client_dir, &c);
            if !guards.is_empty() && g != guards {
                log.guard_changes += 1;
            }
            if !g.is_empty() {
                guards = g;
            }

            let client = w.client.clone();
            w.check(
                day,
                hour,
                "fresh circuit + exit stream (client API)",
                &mut log,
                || {
                    let client = client.clone();
                    async move {
                        client.new_identity().await;
                        let s = client
                            .connect(&format!("127.0.0.1:{}", web.port()))
                            .await
                            .map_err(|e| format!("connect: {e}"))?;
                        fetch(s).await
                    }
                },
            )
            .await;
            let wide = hour % WIDE_EVERY == 0 || !relisting.is_empty();
            let socks = w.socks;
            if wide {
                w.check(
                    day,
                    hour,
                    "exit stream through the SOCKS proxy",
                    &mut log,
                    || fetch_via_socks(socks, web),
                )
                .await;
            }
            let onion = format!("{}:80", w.onion_addr);
            w.check(day, hour, "onion-service connection", &mut log, || {
                let client = client.clone();
                let onion = onion.clone();
                async move {
                    let s = client
                        .connect(&onion)
                        .await
                        .map_err(|e| format!("connect: {e}"))?;
                    fetch(s).await
                }
            })
            .await;
            for i in [KEEP_KEYS, LOSE_ONION] {
                let r = &w.net.relays[i];
                let id = r.identity();
                if let Some(since) = relisting.get(&i).copied() {
                    let own = r.keys().onion_cert().onion_key().as_bytes().to_vec();
                    let c = w.consensus(day, hour);
                    let listed = c
                        .relay(id)
                        .is_some_and(|e| e.onion_cert.onion_key().as_bytes().to_vec() == own);
                    let waited = w.clock.now_unix() - since;
                    if !listed {
                        assert!(
                            waited <= RELIST_LIMIT,
                            "day {day} hour {hour}: relay {} restarted {waited} s ago is not listed with its current onion key in the client's consensus",
                            i + 1
                        );
                        continue;
                    }
                    relisting.remove(&i);
                    log.restarts.push(format!(
                        "relay {} listed again after {} min",
                        i + 1,
                        waited / 60
                    ));
                } else if !wide {
                    continue;
                }
                let c = w.consensus(day, hour);
                let clock = w.clock.clone();
                let stale: Vec<IdentityPublic> = relisting
                    .keys()
                    .map(|&j| w.net.relays[j].identity())
                    .collect();
                let path = w.pinned_path(&c, id, &stale).unwrap_or_else(|e| {
                    panic!(
                        "day {day} hour {hour}: no path through relay {}: {e}",
                        i + 1
                    )
                });
                w.check(
                    day,
                    hour,
                    &format!("fresh circuit pinned through relay {}", i + 1),
                    &mut log,
                    || pinned_fetch(&c, path, web, &clock),
                )
                .await;
            }
            log.hours_ok += 1;
        }
        println!(
            "day {day:2} (sim +{:5.1} d): {}/24 hours ok, {} retries, {} consensus periods, renewals seen: link cert {}, onion cert {}, onion-key rotations {} on relays / {} in consensus, guard changes {}, restarts [{}], {:.1} s real, {} tasks, {} fds",
            (w.clock.now_unix() - start_unix) as f64 / 86_400.0,
            log.hours_ok,
            log.retries,
            log.periods.len(),
            log.link_renewals,
            log.onion_cert_renewals,
            log.onion_rotations_relays,
            log.onion_rotations_consensus,
            log.guard_changes,
            log.restarts.join("; "),
            day_real.elapsed().as_secs_f64(),
            tokio::runtime::Handle::current().metrics().num_alive_tasks(),
            std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count()),
        );
    }
}
