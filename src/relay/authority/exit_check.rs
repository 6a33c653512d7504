//! The authority's exit check (evidence for `BadExit`): through each exit, fetch content
//! only this authority can compute from its own check server, and compare.
//!
//! The circuit is two hops, [this authority's own relay, the exit], so no third relay can
//! drop or corrupt cells and frame an honest exit: whatever goes wrong happened at the
//! exit or between it and the check server. Each check sends a fresh nonce, so an exit
//! cannot replay an answer it saw before (docs/protocol.md §6.15.2).

// The authority's vote code (issue 18's BadExit) is what calls into this; until it is
// merged, only the tests do.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rand::seq::SliceRandom;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::cell::TargetAddr;
use crate::crypto::IdentityPublic;
use crate::dir::ExitPolicy;
use crate::link::LinkConfig;
use crate::proto::{ClientChannel, ClientCircuit, DataStream, RelayTarget};

use super::exit_check_server::{CheckServerLimits, ExitCheckServer, Nonce, CHECK_LEN};
use crate::relay::shared::RelayShared;

/// What one check of one exit found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ExitCheck {
    /// The content arrived whole and unchanged.
    Passed,
    /// Bytes arrived but differ from the expected content (proof of tampering).
    Tampered,
    /// The stream was refused, cut short, or timed out (could be an overloaded honest exit).
    Failed(String),
    /// The exit's policy does not allow the check server's address and port: not checked.
    NotApplicable,
}

/// How the checks run.
#[derive(Debug, Clone)]
pub(crate) struct ExitCheckConfig {
    /// From the end of one round to the start of the next.
    pub interval: Duration,
    /// Checks in progress at once.
    pub parallel: usize,
    /// The whole of one check: circuit, stream and content.
    pub check_timeout: Duration,
    /// Where the check server listens, and the address exits are asked to reach. `None`:
    /// the relay's listen address with an ephemeral port (which must then be a concrete,
    /// reachable address, not a wildcard).
    pub server: Option<SocketAddr>,
    /// The check server's bounds.
    pub server_limits: CheckServerLimits,
}

impl Default for ExitCheckConfig {
    fn default() -> Self {
        ExitCheckConfig {
            interval: Duration::from_secs(3600),
            parallel: 2,
            check_timeout: Duration::from_secs(60),
            server: None,
            server_limits: CheckServerLimits::default(),
        }
    }
}

impl ExitCheckConfig {
    /// Quick rounds for test networks, whose periods are seconds long.
    pub(crate) fn for_test_network() -> Self {
        ExitCheckConfig {
            interval: Duration::from_secs(2),
            check_timeout: Duration::from_secs(20),
            ..ExitCheckConfig::default()
        }
    }
}

/// An exit as the checker sees it: its identity, how to reach it, its published policy.
pub(crate) type ExitToCheck = (IdentityPublic, RelayTarget, ExitPolicy);

/// Starts the check server and checks every exit listed by `exits` once per round,
/// reporting each outcome to `record`. Runs until dropped (the server stops with it).
pub(crate) async fn run_exit_checks(
    shared: Arc<RelayShared>,
    cfg: ExitCheckConfig,
    exits: impl Fn() -> Vec<ExitToCheck>,
    record: impl Fn(IdentityPublic, ExitCheck),
) {
    let bind = cfg
        .server
        .unwrap_or_else(|| SocketAddr::new(shared.listen_addr.ip(), 0));
    if bind.ip().is_unspecified() {
        warn!("exit checks: off: the check server needs a concrete address exits can reach (the relay listens on a wildcard address)");
        return;
    }
    let server = match ExitCheckServer::start(bind, cfg.server_limits).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            warn!("exit checks: off: cannot listen on {bind}: {e}");
            return;
        }
    };
    info!(
        "exit checks: check server on {}, a round every {} s",
        server.local_addr(),
        cfg.interval.as_secs()
    );
    run_rounds(shared, server, cfg, exits, record).await;
}

/// The rounds, against a running check server.
pub(crate) async fn run_rounds(
    shared: Arc<RelayShared>,
    server: Arc<ExitCheckServer>,
    cfg: ExitCheckConfig,
    exits: impl Fn() -> Vec<ExitToCheck>,
    record: impl Fn(IdentityPublic, ExitCheck),
) {
    let mut last = None;
    loop {
        let tally = run_round(&shared, &server, &cfg, exits(), &record).await;
        let line = format!(
            "exit checks: round done: {} passed, {} tampered, {} failed, {} not applicable",
            tally.passed, tally.tampered, tally.failed, tally.not_applicable
        );
        // Test networks run a round every few seconds: say only what changed.
        if tally.total() > 0 && last.as_ref() != Some(&line) {
            info!("{line}");
        } else {
            debug!("{line}");
        }
        last = Some(line);
        shared.clock.sleep(cfg.interval).await;
    }
}

/// Outcomes of one round, for its log line.
#[derive(Debug, Default)]
struct Tally {
    passed: usize,
    tampered: usize,
    failed: usize,
    not_applicable: usize,
}

impl Tally {
    fn add(&mut self, c: &ExitCheck) {
        match c {
            ExitCheck::Passed => self.passed += 1,
            ExitCheck::Tampered => self.tampered += 1,
            ExitCheck::Failed(_) => self.failed += 1,
            ExitCheck::NotApplicable => self.not_applicable += 1,
        }
    }

    fn total(&self) -> usize {
        self.passed + self.tampered + self.failed + self.not_applicable
    }
}

/// One round: every exit once, in random order (so no exit can predict when it is
/// checked from its place in the list), at most `cfg.parallel` at once.
async fn run_round(
    shared: &Arc<RelayShared>,
    server: &Arc<ExitCheckServer>,
    cfg: &ExitCheckConfig,
    mut exits: Vec<ExitToCheck>,
    record: &impl Fn(IdentityPublic, ExitCheck),
) -> Tally {
    exits.shuffle(&mut rand::rng());
    let target = server.local_addr();
    let mut seen = HashSet::new();
    let mut tally = Tally::default();
    let mut running = JoinSet::new();
    let turned_away_before = server.turned_away();
    // Failures are held to the end of the round: see `failures_count`.
    let mut failures: Vec<(IdentityPublic, ExitCheck)> = Vec::new();
    let mut report = |done: Option<(IdentityPublic, Option<ExitCheck>)>, tally: &mut Tally| {
        // `None` inside: our own first hop failed, nothing learned about the exit.
        if let Some((id, Some(check))) = done {
            debug!(exit = %id, ?check, "exit checks: checked");
            tally.add(&check);
            if matches!(check, ExitCheck::Failed(_)) {
                failures.push((id, check));
            } else {
                record(id, check);
            }
        }
    };
    for (id, relay, policy) in exits {
        if !seen.insert(id) {
            continue;
        }
        if !policy.allows_ip(target.ip(), target.port()) {
            // An exit that serves the port to the public Internet but carves out the check
            // server refuses the check: evasion, not an honest gap in its policy.
            let check = if policy.allows_port_to_public(target.port())
                && crate::dir::policy::is_public(target.ip())
            {
                ExitCheck::Failed("its policy excludes the check server alone".into())
            } else {
                ExitCheck::NotApplicable
            };
            report(Some((id, Some(check))), &mut tally);
            continue;
        }
        while running.len() >= cfg.parallel.max(1) {
            let done = running.join_next().await.and_then(|r| r.ok());
            report(done, &mut tally);
        }
        let (shared, server, timeout) = (Arc::clone(shared), Arc::clone(server), cfg.check_timeout);
        running.spawn(async move {
            let check = check_exit(&shared, &server, &relay, timeout).await;
            (id, check)
        });
    }
    while let Some(done) = running.join_next().await {
        report(done.ok(), &mut tally);
    }
    let turned_away = server.turned_away().saturating_sub(turned_away_before);
    if failures_count(&tally, turned_away) {
        for (id, check) in failures {
            record(id, check);
        }
    } else {
        warn!(
            failed = tally.failed,
            turned_away,
            "exit checks: most checks failed or the check server was full: not counted against the exits"
        );
    }
    tally
}

/// Whether a round's failed checks count against the exits. A failure is weak evidence (an
/// overloaded honest exit fails too), and anyone can cause failures by keeping the check
/// server busy, or by overloading this authority's relay: so failures count only if the
/// server turned no connection away during the round and at most half of the checks made
/// failed (when most exits fail at once, the fault is most likely on our side). Altered
/// content is proof and always counts.
fn failures_count(tally: &Tally, turned_away: u64) -> bool {
    let made = tally.passed + tally.tampered + tally.failed;
    turned_away == 0 && (tally.failed <= 1 || tally.failed * 2 <= made)
}

/// Checks one exit: `None` if the failure was on our side (our own first hop), which says
/// nothing about the exit.
pub(crate) async fn check_exit(
    shared: &RelayShared,
    server: &ExitCheckServer,
    exit: &RelayTarget,
    timeout: Duration,
) -> Option<ExitCheck> {
    let deadline = shared.clock.instant() + timeout;
    let left = || deadline.saturating_duration_since(shared.clock.instant());
    let me = shared.keys.identity();
    let cfg = LinkConfig {
        handshake_timeout: timeout,
        clock: shared.clock.clone(),
        ..LinkConfig::default()
    };
    let chan = match ClientChannel::connect_to(own_address(shared.listen_addr), &me, &cfg).await {
        Ok(c) => c,
        Err(e) => {
            debug!("exit checks: cannot reach our own relay: {e}");
            return None;
        }
    };
    let mut circ = match ClientCircuit::create_fast(&chan, me, left()).await {
        Ok(c) => c,
        Err(e) => {
            debug!("exit checks: cannot build the hop to our own relay: {e}");
            chan.sender.close();
            return None;
        }
    };
    if let Err(e) = circ.extend(exit, left()).await {
        circ.destroy().await;
        chan.sender.close();
        return Some(ExitCheck::Failed(format!("extending to the exit: {e}")));
    }
    let handle = circ.into_handle();
    let target = server.local_addr();
    let check = match handle
        .open_stream(TargetAddr::Ip(target.ip()), target.port(), left())
        .await
    {
        Ok(mut stream) => {
            let nonce: Nonce = rand::random();
            let (got, ending) = exchange(&mut stream, &nonce, deadline).await;
            judge(&server.expected(&nonce), &got, ending)
        }
        Err(e) => ExitCheck::Failed(format!("opening the stream: {e}")),
    };
    handle.close().await;
    chan.sender.close();
    Some(check)
}

/// Where to reach our own relay: its listen address, or loopback if that is a wildcard.
fn own_address(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// How the answer's stream ended.
#[derive(Debug)]
enum Ending {
    /// A clean end (END(DONE)).
    Eof,
    /// Cut: END with another reason, the circuit lost, or a write refused.
    Cut(String),
    /// The check's time ran out.
    TimedOut,
    /// More bytes than the content holds arrived.
    TooLong,
}

/// Sends the nonce and reads the answer until the stream ends, the deadline passes or
/// more than [`CHECK_LEN`] bytes arrived (so an exit cannot make us hold more).
async fn exchange(stream: &mut DataStream, nonce: &Nonce, deadline: Instant) -> (Vec<u8>, Ending) {
    let mut got = Vec::with_capacity(CHECK_LEN + 1);
    let sent = async {
        stream.write_all(nonce).await?;
        stream.flush().await
    };
    match tokio::time::timeout_at(deadline, sent).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return (got, Ending::Cut(format!("sending the nonce: {e}"))),
        Err(_) => return (got, Ending::TimedOut),
    }
    let mut buf = [0u8; 4096];
    loop {
        if got.len() > CHECK_LEN {
            return (got, Ending::TooLong);
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) => return (got, Ending::Eof),
            Ok(Ok(n)) => got.extend_from_slice(buf.get(..n).unwrap_or_default()),
            Ok(Err(e)) => return (got, Ending::Cut(e.to_string())),
            Err(_) => return (got, Ending::TimedOut),
        }
    }
}

/// The verdict: any byte that differs from the expected content, or any byte beyond it,
/// is tampering; an answer that is right as far as it goes but incomplete is a failure
/// (an exit cannot be told apart from an overloaded one by that alone).
fn judge(expected: &[u8], got: &[u8], ending: Ending) -> ExitCheck {
    let n = got.len().min(expected.len());
    let (Some(want), Some(have)) = (expected.get(..n), got.get(..n)) else {
        return ExitCheck::Tampered;
    };
    let same: bool = want.ct_eq(have).into();
    if !same || got.len() > expected.len() || matches!(ending, Ending::TooLong) {
        return ExitCheck::Tampered;
    }
    if got.len() == expected.len() {
        return ExitCheck::Passed;
    }
    let of = format!("{} of {} bytes", got.len(), expected.len());
    ExitCheck::Failed(match ending {
        Ending::Eof => format!("ended after {of}"),
        Ending::Cut(why) => format!("cut after {of}: {why}"),
        Ending::TimedOut => format!("timed out after {of}"),
        Ending::TooLong => format!("too long after {of}"),
    })
}

#[cfg(test)]
mod tests {
    //! Attackers: exits whose operator routes exit traffic through a connector that
    //! rewrites or cuts the answer, checked by a real authority relay over real TCP.

    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Mutex;

    use tokio::net::{TcpListener, TcpStream};

    use super::super::exit_check_server::CheckSecret;
    use super::*;
    use crate::clock::Clock;
    use crate::dir::policy::{PolicyAction, PolicyRule};
    use crate::relay::exit::{ExitConfig, ExitConnector};
    use crate::relay::{self, RelayConfig, RelayHandle, RelayKeys, RelayLimits};

    const NO_HANG: Duration = Duration::from_secs(60);

    // An operator's connector that passes exit traffic through a proxy of its own, which
    // flips one byte of the answer at `flip_at` and/or closes it after `cut_after` bytes.
    use crate::testnet::MeddlingExit as Meddler;

    /// An operator's connector that remembers the first answer it carried and serves it
    /// again, from its own proxy, to every later connection (without the check server).
    #[derive(Debug, Default)]
    struct Replayer {
        recorded: Arc<Mutex<Vec<u8>>>,
    }

    impl ExitConnector for Replayer {
        fn connect(
            &self,
            addr: SocketAddr,
        ) -> Pin<Box<dyn Future<Output = std::io::Result<TcpStream>> + Send + '_>> {
            let recorded = Arc::clone(&self.recorded);
            Box::pin(async move {
                let proxy = TcpListener::bind("127.0.0.1:0").await?;
                let local = proxy.local_addr()?;
                let cached = recorded.lock().unwrap().clone();
                let upstream = if cached.is_empty() {
                    Some(TcpStream::connect(addr).await?)
                } else {
                    None
                };
                tokio::spawn(async move {
                    let Ok((mut down, _)) = proxy.accept().await else {
                        return;
                    };
                    let mut nonce = [0u8; 32];
                    let _ = down.read_exact(&mut nonce).await;
                    let answer = match upstream {
                        Some(mut up) => {
                            let _ = up.write_all(&nonce).await;
                            let mut answer = Vec::new();
                            let _ = up.read_to_end(&mut answer).await;
                            *recorded.lock().unwrap() = answer.clone();
                            answer
                        }
                        None => cached,
                    };
                    let _ = down.write_all(&answer).await;
                    let _ = down.shutdown().await;
                });
                TcpStream::connect(local).await
            })
        }
    }

    async fn start_relay(exit: Option<ExitConfig>) -> RelayHandle {
        let config = RelayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            limits: RelayLimits::default(),
            exit,
            clock: Clock::system(),
            bandwidth: None,
            fair_queueing: true,
        };
        let keys = RelayKeys::generate(&config.clock);
        relay::start(config, keys).await.unwrap()
    }

    /// An exit whose operator sends its exit traffic through `connector`.
    fn exit_through(policy: ExitPolicy, connector: impl ExitConnector + 'static) -> ExitConfig {
        let mut cfg = ExitConfig::new(policy);
        cfg.connector = Arc::new(connector);
        cfg
    }

    fn target(r: &RelayHandle) -> RelayTarget {
        RelayTarget {
            addr: r.local_addr(),
            identity: r.identity(),
            onion: r
                .keys()
                .onion_cert()
                .verify(crate::clock::now_unix())
                .unwrap(),
        }
    }

    /// Rejects `port` on every address, accepts the rest (loopback included).
    fn rejecting_port(port: u16) -> ExitPolicy {
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        ExitPolicy::new(vec![
            PolicyRule::new(PolicyAction::Reject, any, 0, port, port).unwrap(),
            PolicyRule::new(PolicyAction::Accept, any, 0, 1, 65535).unwrap(),
        ])
        .unwrap()
    }

    async fn check_server() -> Arc<ExitCheckServer> {
        let bind = "127.0.0.1:0".parse().unwrap();
        Arc::new(
            ExitCheckServer::start(bind, CheckServerLimits::default())
                .await
                .unwrap(),
        )
    }

    #[tokio::test]
    async fn a_round_tells_honest_rewriting_cutting_and_inapplicable_exits_apart() {
        let authority = start_relay(None).await;
        let server = check_server().await;
        let port = server.local_addr().port();
        let loopback = ExitPolicy::default_exit_allow_loopback;
        let honest = start_relay(Some(ExitConfig::new(loopback()))).await;
        let rewriting = Meddler {
            flip_at: Some(CHECK_LEN / 2),
            cut_after: None,
        };
        let rewriter = start_relay(Some(exit_through(loopback(), rewriting))).await;
        let cutting = Meddler {
            flip_at: None,
            cut_after: Some(4096),
        };
        let cutter = start_relay(Some(exit_through(loopback(), cutting))).await;
        let elsewhere = start_relay(Some(ExitConfig::new(rejecting_port(port)))).await;

        let listed: Vec<ExitToCheck> = [
            (&honest, loopback()),
            (&rewriter, loopback()),
            (&cutter, loopback()),
            (&elsewhere, rejecting_port(port)),
        ]
        .into_iter()
        .map(|(r, p)| (r.identity(), target(r), p))
        .collect();
        let results = Arc::new(Mutex::new(Vec::new()));
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        let rounds = {
            let results = Arc::clone(&results);
            let cfg = ExitCheckConfig {
                interval: Duration::from_secs(3600),
                ..ExitCheckConfig::for_test_network()
            };
            tokio::spawn(run_rounds(
                Arc::clone(authority.shared()),
                Arc::clone(&server),
                cfg,
                move || listed.clone(),
                move |id, check| {
                    results.lock().unwrap().push((id, check));
                    let _ = done_tx.send(());
                },
            ))
        };
        for _ in 0..4 {
            tokio::time::timeout(NO_HANG, done_rx.recv())
                .await
                .unwrap()
                .unwrap();
        }
        rounds.abort();
        let results = results.lock().unwrap().clone();
        let of = |r: &RelayHandle| {
            let found: Vec<_> = results
                .iter()
                .filter(|(id, _)| *id == r.identity())
                .collect();
            assert_eq!(found.len(), 1, "one outcome per exit per round");
            found[0].1.clone()
        };
        assert_eq!(of(&honest), ExitCheck::Passed);
        assert_eq!(of(&rewriter), ExitCheck::Tampered);
        assert!(
            matches!(of(&cutter), ExitCheck::Failed(_)),
            "{:?}",
            of(&cutter)
        );
        assert_eq!(of(&elsewhere), ExitCheck::NotApplicable);
        // Not applicable means not tried: no circuit was ever built through that exit.
        let created = &elsewhere.shared().counters.circuits_created;
        assert_eq!(created.load(std::sync::atomic::Ordering::Relaxed), 0);
        for r in [authority, honest, rewriter, cutter, elsewhere] {
            r.shutdown().await;
        }
    }

    #[tokio::test]
    async fn an_exit_replaying_an_earlier_answer_is_caught() {
        let authority = start_relay(None).await;
        let server = check_server().await;
        let policy = ExitPolicy::default_exit_allow_loopback();
        let replayer = Replayer::default();
        let recorded = Arc::clone(&replayer.recorded);
        let exit = start_relay(Some(exit_through(policy, replayer))).await;
        let check = check_exit(authority.shared(), &server, &target(&exit), NO_HANG).await;
        assert_eq!(check, Some(ExitCheck::Passed));
        assert_eq!(
            recorded.lock().unwrap().len(),
            CHECK_LEN,
            "it kept an answer"
        );
        // The next check has a fresh nonce: the genuine answer to the old one is wrong.
        let check = check_exit(authority.shared(), &server, &target(&exit), NO_HANG).await;
        assert_eq!(check, Some(ExitCheck::Tampered));
        authority.shutdown().await;
        exit.shutdown().await;
    }

    #[tokio::test]
    async fn an_exit_that_refuses_the_stream_fails_and_a_dead_one_too() {
        let authority = start_relay(None).await;
        let server = check_server().await;
        // Its own policy refuses what it published as allowed: END(EXITPOLICY).
        let liar = start_relay(Some(ExitConfig::new(ExitPolicy::reject_all()))).await;
        let check = check_exit(authority.shared(), &server, &target(&liar), NO_HANG).await;
        assert!(matches!(check, Some(ExitCheck::Failed(_))), "{check:?}");
        // An exit that is gone: the extension fails, which is the exit's failure.
        let gone = target(&liar);
        liar.shutdown().await;
        let check = check_exit(authority.shared(), &server, &gone, NO_HANG).await;
        assert!(matches!(check, Some(ExitCheck::Failed(_))), "{check:?}");
        authority.shutdown().await;
    }

    #[tokio::test]
    async fn run_exit_checks_starts_its_server_and_checks() {
        let authority = start_relay(None).await;
        let honest = start_relay(Some(ExitConfig::new(
            ExitPolicy::default_exit_allow_loopback(),
        )))
        .await;
        let listed = vec![(
            honest.identity(),
            target(&honest),
            ExitPolicy::default_exit_allow_loopback(),
        )];
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let cfg = ExitCheckConfig {
            server: Some("127.0.0.1:0".parse().unwrap()),
            server_limits: CheckServerLimits {
                max_connections: 2,
                ..CheckServerLimits::default()
            },
            ..ExitCheckConfig::for_test_network()
        };
        let task = tokio::spawn(run_exit_checks(
            Arc::clone(authority.shared()),
            cfg,
            move || listed.clone(),
            move |id, check| {
                let _ = tx.send((id, check));
            },
        ));
        // Two rounds (the second after `interval`), each passing.
        for _ in 0..2 {
            let (id, check) = tokio::time::timeout(NO_HANG, rx.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!((id, check), (honest.identity(), ExitCheck::Passed));
        }
        task.abort();
        // A wildcard is no address an exit can be asked to reach: the checks stay off.
        let cfg = ExitCheckConfig {
            server: Some("0.0.0.0:0".parse().unwrap()),
            ..ExitCheckConfig::for_test_network()
        };
        let off = run_exit_checks(Arc::clone(authority.shared()), cfg, Vec::new, |_, _| {
            panic!("nothing is checked")
        });
        tokio::time::timeout(NO_HANG, off).await.unwrap();
        authority.shutdown().await;
        honest.shutdown().await;
    }

    #[test]
    fn judging_the_answer() {
        let expected = vec![7u8; 100];
        let mut flipped = expected.clone();
        flipped[50] ^= 1;
        let mut longer = expected.clone();
        longer.push(0);
        assert_eq!(judge(&expected, &expected, Ending::Eof), ExitCheck::Passed);
        assert_eq!(judge(&expected, &flipped, Ending::Eof), ExitCheck::Tampered);
        assert_eq!(
            judge(&expected, &longer, Ending::TooLong),
            ExitCheck::Tampered
        );
        // A wrong prefix is tampering however the stream ended.
        assert_eq!(
            judge(&expected, &flipped[..60], Ending::TimedOut),
            ExitCheck::Tampered
        );
        for ending in [Ending::Eof, Ending::TimedOut, Ending::Cut("reset".into())] {
            assert!(matches!(
                judge(&expected, &expected[..40], ending),
                ExitCheck::Failed(_)
            ));
        }
        assert!(matches!(
            judge(&expected, &[], Ending::Eof),
            ExitCheck::Failed(_)
        ));
    }

    proptest::proptest! {
        /// Whatever an exit does to the answer (change bytes, cut it, add to it, or any
        /// mix), only the exact content passes, and changed bytes are never mistaken for a
        /// mere failure.
        #[test]
        fn only_the_exact_content_passes(
            flips in proptest::collection::vec((0..CHECK_LEN, 1u8..=255), 0..4),
            keep in 0..=CHECK_LEN,
            extra in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3),
        ) {
            let expected = some_content();
            let mut got = expected.clone();
            for (at, x) in &flips {
                got[*at] ^= x;
            }
            got.truncate(keep);
            got.extend_from_slice(&extra);
            let ending = if got.len() > CHECK_LEN { Ending::TooLong } else { Ending::Eof };
            let verdict = judge(&expected, &got, ending);
            let changed = got.iter().zip(&expected).any(|(a, b)| a != b);
            if got == expected {
                proptest::prop_assert_eq!(verdict, ExitCheck::Passed);
            } else if changed || got.len() > CHECK_LEN {
                proptest::prop_assert_eq!(verdict, ExitCheck::Tampered);
            } else {
                proptest::prop_assert!(matches!(verdict, ExitCheck::Failed(_)));
            }
        }
    }

    /// Some check content, as a server answers it.
    fn some_content() -> Vec<u8> {
        CheckSecret::random().content(&[1; 32])
    }

    #[test]
    fn our_own_relay_is_reached_on_loopback_when_listening_on_a_wildcard() {
        let a = own_address("0.0.0.0:9001".parse().unwrap());
        assert_eq!(a, "127.0.0.1:9001".parse().unwrap());
        let a = own_address("[::]:9001".parse().unwrap());
        assert_eq!(a, "[::1]:9001".parse().unwrap());
        let a = own_address("192.0.2.1:9001".parse().unwrap());
        assert_eq!(a, "192.0.2.1:9001".parse().unwrap());
    }

    #[test]
    fn failures_count_only_in_a_round_that_does_not_point_at_us() {
        let tally = |passed, tampered, failed| Tally {
            passed,
            tampered,
            failed,
            not_applicable: 0,
        };
        assert!(failures_count(&tally(5, 0, 1), 0));
        assert!(failures_count(&tally(2, 0, 2), 0));
        assert!(
            failures_count(&tally(0, 0, 1), 0),
            "one lone exit failing counts"
        );
        assert!(
            !failures_count(&tally(1, 0, 3), 0),
            "most exits failing: our fault"
        );
        assert!(
            !failures_count(&tally(9, 0, 1), 1),
            "the server turned someone away"
        );
    }
}
