//! The authority's exit check (evidence for `BadExit`): through each exit, fetch content
//! only this authority can compute from its own check server, and compare.
//!
//! The circuit is two hops, [this authority's own relay, the exit], so no third relay can
//! drop or corrupt cells and frame an honest exit: whatever goes wrong happened at the
//! exit or between it and the check server. Each check sends a fresh nonce, so an exit
//! cannot replay an answer it saw before (docs/exit_checks.md).

// The authority's vote code (issue 18's BadExit) is what calls into this; until it is
// merged, only the tests do.
#![cfg_attr(not(test), allow(dead_code))]

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
    loop {
        let tally = run_round(&shared, &server, &cfg, exits(), &record).await;
        if tally.total() > 0 {
            info!(
                "exit checks: round done: {} passed, {} tampered, {} failed, {} not applicable",
                tally.passed, tally.tampered, tally.failed, tally.not_applicable
            );
        }
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
    let report = |done: Option<(IdentityPublic, Option<ExitCheck>)>, tally: &mut Tally| {
        match done {
            Some((id, Some(check))) => {
                debug!(exit = %id, ?check, "exit checks: checked");
                tally.add(&check);
                record(id, check);
            }
            // Our own first hop failed: nothing learned about the exit.
            Some((_, None)) | None => {}
        }
    };
    for (id, relay, policy) in exits {
        if !seen.insert(id) {
            continue;
        }
        if !policy.allows_ip(target.ip(), target.port()) {
            report(Some((id, Some(ExitCheck::NotApplicable))), &mut tally);
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
    tally
}

/// Checks one exit: `None` if the failure was on our side (our own first hop), which says
/// nothing about the exit.
pub(crate) async fn check_exit(
    shared: &RelayShared,
    server: &ExitCheckServer,
    exit: &RelayTarget,
    timeout: Duration,
) -> Option<ExitCheck> {
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
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
