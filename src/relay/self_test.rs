//! The relay's self-test, which an operator sees in one log line and in metrics: is the
//! relay reachable at the address it advertises (a circuit to itself through another
//! relay, which must connect to that address), did the authorities accept its
//! descriptor, and does the consensus list it with that address and its onion key?

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::seq::IndexedRandom;
use tracing::info;

use crate::dir::request::{DirRequest, DirStatus};
use crate::dir::{AuthorityInfo, Consensus, UncheckedConsensus};
use crate::link::LinkConfig;
use crate::proto::{ClientChannel, ClientCircuit, RelayTarget};
use crate::sync::lock;

use super::dirserve::DirContext;
use super::shared::RelayShared;

/// First retry after a test that did not find the relay listed and reachable; doubled up
/// to [`SLOW_EVERY`].
const FAST_RETRY: Duration = Duration::from_secs(15);
/// How often the test runs once it passes (or has backed off).
const SLOW_EVERY: Duration = Duration::from_secs(300);
/// Time for each step of the circuit to ourselves.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// What the publisher and the self-test know; metrics read it.
#[derive(Debug, Default)]
pub struct SelfTestStatus {
    reachable: AtomicBool,
    listed: AtomicBool,
    descriptor_accepted: AtomicBool,
    /// When an authority last accepted the descriptor (Unix seconds; 0: never).
    accepted_at: AtomicU64,
    /// The address in the last descriptor built, and the last refusal's reason if the
    /// last round was refused by every authority that answered.
    round: Mutex<(Option<SocketAddr>, Option<String>)>,
    /// Woken by the publisher after each round.
    wake: tokio::sync::Notify,
}

impl SelfTestStatus {
    /// Whether the last self-test reached this relay through another relay.
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// Whether the current consensus lists this relay with its address and onion key.
    pub fn listed(&self) -> bool {
        self.listed.load(Ordering::Relaxed)
    }

    /// Whether an authority accepted the last descriptor upload.
    pub fn descriptor_accepted(&self) -> bool {
        self.descriptor_accepted.load(Ordering::Relaxed)
    }

    /// Records a publish round: the address advertised (`None`: none known), and whether
    /// some authority accepted the descriptor (`Ok`) or why they refused it (`Err`). A round
    /// where no authority answered keeps the previous verdict.
    pub(crate) fn record_round(
        &self,
        advertised: Option<SocketAddr>,
        outcome: Option<Result<(), String>>,
        now: u64,
    ) {
        let mut round = lock(&self.round);
        round.0 = advertised;
        match outcome {
            Some(Ok(())) => {
                self.descriptor_accepted.store(true, Ordering::Relaxed);
                self.accepted_at.store(now, Ordering::Relaxed);
                round.1 = None;
            }
            Some(Err(reason)) => {
                self.descriptor_accepted.store(false, Ordering::Relaxed);
                round.1 = Some(reason);
            }
            None => {}
        }
        drop(round);
        self.wake.notify_one();
    }
}

/// One self-test's finding, in the order of what the operator should fix first.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Finding {
    NoAddress,
    Unreachable(SocketAddr, String),
    Refused(String),
    NotListed {
        addr: SocketAddr,
        published_ago: Option<u64>,
        next_consensus: Option<u64>,
    },
    Listed(SocketAddr),
}

impl Finding {
    /// Which line this is, ignoring its numbers: the log says only changes of state.
    fn kind(&self) -> (u8, Option<SocketAddr>) {
        match self {
            Finding::NoAddress => (0, None),
            Finding::Unreachable(a, _) => (1, Some(*a)),
            Finding::Refused(_) => (2, None),
            Finding::NotListed { addr, .. } => (3, Some(*addr)),
            Finding::Listed(a) => (4, Some(*a)),
        }
    }

    fn line(&self, now: u64) -> String {
        match self {
            Finding::NoAddress => "relay: self-test: not reachable: no address to advertise (set `advertise` in [relay])".into(),
            Finding::Unreachable(a, why) => format!("relay: self-test: not reachable at {a} ({why})"),
            Finding::Refused(reason) => {
                format!("relay: self-test: the authorities refused the descriptor: {reason}")
            }
            Finding::NotListed {
                addr,
                published_ago,
                next_consensus,
            } => {
                let published = match published_ago {
                    Some(s) => format!("published {s} s ago"),
                    None => "no authority has accepted it yet".into(),
                };
                let next = match next_consensus {
                    Some(t) => format!("next consensus at {t} (in {} s)", t.saturating_sub(now)),
                    None => "no consensus fetched yet".into(),
                };
                format!("relay: self-test: reachable at {addr} but not listed yet (not yet voted: {published}, {next})")
            }
            Finding::Listed(a) => {
                format!("relay: self-test: reachable at {a} and listed in the consensus")
            }
        }
    }
}

/// Runs the self-test after each publish round (and every few minutes), logging one info
/// line whenever its finding changes and keeping the metrics current.
pub(crate) fn spawn_self_test(shared: Arc<RelayShared>, authorities: Vec<AuthorityInfo>) {
    tokio::spawn(async move {
        let mut last: Option<(u8, Option<SocketAddr>)> = None;
        let mut delay = FAST_RETRY;
        loop {
            tokio::select! {
                () = shared.self_test.wake.notified() => {}
                () = shared.clock.sleep(delay) => {}
            }
            let finding = run_once(&shared, &authorities).await;
            let passed = matches!(finding, Finding::Listed(_));
            if last != Some(finding.kind()) {
                info!("{}", finding.line(shared.clock.now_unix()));
                last = Some(finding.kind());
            }
            delay = if passed {
                SLOW_EVERY
            } else {
                (delay * 2).min(SLOW_EVERY)
            };
        }
    });
}

/// One self-test.
async fn run_once(shared: &RelayShared, authorities: &[AuthorityInfo]) -> Finding {
    let status = &shared.self_test;
    let (advertised, refusal) = lock(&status.round).clone();
    let now = shared.clock.now_unix();
    let consensus = current_consensus(shared, authorities, now).await;
    let Some(addr) = advertised else {
        status.reachable.store(false, Ordering::Relaxed);
        status.listed.store(false, Ordering::Relaxed);
        return Finding::NoAddress;
    };
    let listed = consensus
        .as_ref()
        .is_some_and(|c| lists_us(shared, c, addr, now));
    status.listed.store(listed, Ordering::Relaxed);
    let reached = reach_ourselves(shared, consensus.as_deref(), authorities, addr).await;
    status.reachable.store(reached.is_ok(), Ordering::Relaxed);
    if let Err(why) = reached {
        return Finding::Unreachable(addr, why);
    }
    if let Some(reason) = refusal {
        return Finding::Refused(reason);
    }
    if listed {
        return Finding::Listed(addr);
    }
    let accepted_at = status.accepted_at.load(Ordering::Relaxed);
    Finding::NotListed {
        addr,
        published_ago: (accepted_at != 0).then(|| now.saturating_sub(accepted_at)),
        next_consensus: consensus.map(|c| c.fresh_until()),
    }
}

/// The consensus this relay's directory role serves, verified.
async fn current_consensus(
    shared: &RelayShared,
    authorities: &[AuthorityInfo],
    now: u64,
) -> Option<Arc<Consensus>> {
    let service = shared.dir_service()?;
    let ctx = DirContext::new(shared.keys.identity());
    let resp = service.handle(DirRequest::GetConsensus, ctx).await;
    if resp.status != DirStatus::Ok {
        return None;
    }
    let trusted: Vec<_> = authorities.iter().map(|a| a.identity).collect();
    let c = UncheckedConsensus::parse(&resp.body)
        .ok()?
        .verify(&trusted, now)
        .ok()?;
    Some(Arc::new(c))
}

/// Whether `c` lists us at `addr` with our current onion key.
fn lists_us(shared: &RelayShared, c: &Consensus, addr: SocketAddr, now: u64) -> bool {
    let ours = shared.keys.onion_cert().clone();
    let Some(entry) = c.relay(&shared.keys.identity()) else {
        return false;
    };
    let same_key = match (entry.verified_onion_key(now), ours.verify(now)) {
        (Ok(theirs), Ok(ours)) => theirs.onion_key() == ours.onion_key(),
        _ => false,
    };
    same_key && entry.addrs.contains(&addr)
}

/// Builds a circuit through another relay (one from the consensus, else an authority) to
/// ourselves at `addr`: the other relay must open a connection to that address.
async fn reach_ourselves(
    shared: &RelayShared,
    consensus: Option<&Consensus>,
    authorities: &[AuthorityInfo],
    addr: SocketAddr,
) -> Result<(), String> {
    let now = shared.clock.now_unix();
    let me = shared.keys.identity();
    let onion = shared
        .keys
        .onion_cert()
        .clone()
        .verify(now)
        .map_err(|e| format!("our onion-key certificate: {e}"))?;
    let target = RelayTarget {
        addr,
        identity: me,
        onion,
    };
    let others: Vec<RelayTarget> = consensus
        .map(|c| {
            c.relays()
                .iter()
                .filter(|e| e.identity != me)
                .filter_map(|e| {
                    Some(RelayTarget {
                        addr: *e.addrs.first()?,
                        identity: e.identity,
                        onion: e.verified_onion_key(now).ok()?,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let cfg = LinkConfig {
        handshake_timeout: STEP_TIMEOUT,
        clock: shared.clock.clone(),
        ..LinkConfig::default()
    };
    let first = others.choose(&mut rand::rng()).cloned();
    let authority = authorities.choose(&mut rand::rng()).copied();
    let (chan, mut circ) = if let Some(first) = first {
        let first = &first;
        let chan = ClientChannel::connect(first, &cfg)
            .await
            .map_err(|e| format!("cannot reach the first hop: {e}"))?;
        let circ = ClientCircuit::create(&chan, first, STEP_TIMEOUT).await;
        (chan, circ)
    } else {
        // No other relay listed yet (a small or new network): go through an authority,
        // whose onion key we do not know, with the fast handshake.
        let a = authority.ok_or("no other relay and no authority to go through")?;
        let chan = ClientChannel::connect_to(a.addr, &a.identity, &cfg)
            .await
            .map_err(|e| format!("cannot reach an authority: {e}"))?;
        let circ = ClientCircuit::create_fast(&chan, a.identity, STEP_TIMEOUT).await;
        (chan, circ)
    };
    let result = match &mut circ {
        Ok(c) => c
            .extend(&target, STEP_TIMEOUT)
            .await
            .map_err(|e| format!("another relay could not connect to it: {e}")),
        Err(e) => Err(format!("cannot build the first hop: {e}")),
    };
    if let Ok(c) = circ {
        c.destroy().await;
    }
    chan.sender.close();
    result
}
