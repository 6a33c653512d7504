//! The relay's self-test, which an operator sees in one log line and in metrics: is the
//! relay reachable at the address it advertises (a circuit to itself through another
//! relay, which must connect to that address), did the authorities accept its
//! descriptor, and does the consensus list it with that address and its onion key?

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::seq::IndexedRandom;
use tracing::info;

use crate::crypto::IdentityPublic;
use crate::dir::request::{DirRequest, DirStatus};
use crate::dir::{AuthorityInfo, Consensus, MicrodescIndex, UncheckedConsensus};
use crate::link::LinkConfig;
use crate::proto::dirclient::{fetch_microdescs, DirFetchError};
use crate::proto::{ClientChannel, ClientCircuit, RelayTarget};

use super::dirserve::DirContext;
use super::shared::RelayShared;

/// First retry after a test that did not find the relay listed and reachable; doubled up
/// to [`FAILING_EVERY`].
const FAST_RETRY: Duration = Duration::from_secs(15);
/// Longest pause between tests while the relay is not reachable and listed.
const FAILING_EVERY: Duration = Duration::from_secs(300);
/// How often the test runs once it passes (or has backed off): about once per consensus
/// period, which is how often the listing can change. Each run is a circuit through another
/// relay, so more often would only load the network.
const SLOW_EVERY: Duration = Duration::from_secs(3600);
/// Time for each step of the circuit to ourselves.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);

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
pub(crate) fn spawn_self_test(
    shared: Arc<RelayShared>,
    authorities: Vec<AuthorityInfo>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last: Option<(u8, Option<SocketAddr>)> = None;
        let mut delay = FAST_RETRY;
        loop {
            tokio::select! {
                () = shared.self_test.woken().notified() => {}
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
                (delay * 2).clamp(FAST_RETRY, FAILING_EVERY)
            };
        }
    })
}

/// One self-test.
async fn run_once(shared: &RelayShared, authorities: &[AuthorityInfo]) -> Finding {
    let status = &shared.self_test;
    let (advertised, refusal) = status.last_round();
    let now = shared.clock.now_unix();
    let consensus = current_consensus(shared, authorities, now).await;
    let Some(addr) = advertised else {
        status.set_reachable(false);
        status.set_listed(false);
        return Finding::NoAddress;
    };
    let listed = consensus
        .as_ref()
        .is_some_and(|c| lists_us(shared, c, addr, now));
    status.set_listed(listed);
    let reached = reach_ourselves(shared, consensus.as_deref(), authorities, addr).await;
    status.set_reachable(reached.is_ok());
    if let Err(why) = reached {
        return Finding::Unreachable(addr, why);
    }
    if let Some(reason) = refusal {
        return Finding::Refused(reason);
    }
    if listed {
        return Finding::Listed(addr);
    }
    Finding::NotListed {
        addr,
        published_ago: status.accepted_at().map(|t| now.saturating_sub(t)),
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
    let verified = UncheckedConsensus::parse(&resp.body)
        .ok()?
        .verify(&trusted, now)
        .ok()?;
    // Our own directory role serves the microdescriptors too.
    let mut mds = MicrodescIndex::new();
    let wanted = verified.missing(|_| false);
    let service = &service;
    let ask = |req| {
        let ctx = DirContext::new(shared.keys.identity());
        async move { Ok::<_, DirFetchError>(service.handle(req, ctx).await) }
    };
    let _ = fetch_microdescs(ask, &wanted, &mut mds).await;
    Some(Arc::new(verified.assemble_from(&mds)))
}

/// Whether `c` lists us at `addr` with our current onion key.
fn lists_us(shared: &RelayShared, c: &Consensus, addr: SocketAddr, now: u64) -> bool {
    let ours = shared.keys.onion_cert().clone();
    let Some(entry) = c.relay(shared.keys.identity()) else {
        return false;
    };
    let same_key = match (entry.verified_onion_key(now), ours.verify(now)) {
        (Ok(theirs), Ok(ours)) => theirs.onion_key() == ours.onion_key(),
        _ => false,
    };
    same_key && entry.addrs.contains(&addr)
}

/// A random element of `items`, one for which `prefer` holds if there is any.
fn pick<T>(items: &[T], prefer: impl Fn(&T) -> bool) -> Option<&T> {
    let preferred: Vec<&T> = items.iter().filter(|t| prefer(t)).collect();
    match preferred.choose(&mut rand::rng()) {
        Some(t) => Some(*t),
        None => items.choose(&mut rand::rng()),
    }
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
                    // Verifying the certificate validates the listed identity too.
                    let onion = e.verified_onion_key(now).ok()?;
                    Some(RelayTarget {
                        addr: *e.addrs.first()?,
                        identity: *onion.identity(),
                        onion,
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
    // A relay that already has a channel with us would extend over it instead of
    // connecting to `addr`, proving nothing: prefer one that has none.
    let unconnected = |id: &IdentityPublic| shared.channel_to(id).is_none();
    let first = pick(&others, |t| unconnected(&t.identity)).cloned();
    let authority = pick(authorities, |a| unconnected(&a.identity)).copied();
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
