//! The client side of onion services (protocol.md §8): connecting to `<address>.allium`.
//!
//! Steps: parse the address; fetch the descriptor from a relay of its hash ring over a
//! 3-hop circuit (BEGIN_DIR) and verify it for the address; build a circuit to a
//! rendezvous point and register a one-time cookie; send INTRODUCE1 through one of the
//! service's introduction points (another one on failure); wait for INTRODUCE_ACK and
//! RENDEZVOUS2; complete `allium-hs-ntor-1` and add the end-to-end keys as one more hop of
//! the rendezvous circuit. Streams then open on it with BEGIN as on an exit circuit. The
//! rendezvous circuit is kept per isolation class and service, so later streams reuse it.
//!
//! Nothing here logs the address: errors name the step that failed, never the service.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::Rng;
use tracing::debug;

use crate::cell::onion_msg::{Introduce, IntroduceAckStatus, OnionMsg, REND_COOKIE_LEN};
use crate::cell::relay_contexts::{AtClient, AtOnionClient};
use crate::cell::RelayMsg;
use crate::client::CircPurpose;
use crate::dir::path::uniform_usable_choice;
use crate::dir::request::{DirRequest, DirStatus};
use crate::dir::ConsensusEntry;
use crate::onion::descriptor::{InnerDescriptor, IntroPointInfo};
use crate::onion::handshake::{client_introduce_with, subcredential, HsHandshakeError, IntroKeys};
use crate::onion::hashring::{responsible_hsdirs, HsDirParams};
use crate::onion::intro::IntroducePlaintext;
use crate::onion::pow::PowInput;
use crate::onion::{BlindedPublic, ClientAuthSecret, OnionAddress, PeriodParams};
use crate::sync::lock;

use super::circmgr::{relay_target, CircMgr, Isolation};
use super::config::ClientConfig;
use super::dirmgr::DirMgr;
use super::error::ClientError;
pub use super::error::OnionConnectError;
use super::revision_floors::RevisionFloors;

mod periods;
mod puzzle;
mod reuse;
mod verify;
pub use super::revision_floors::MAX_REVISION_FLOORS;
use crate::proto::{CircuitHandle, ClientCircuit, DataStream, RelayTarget, UdpFlow};
use puzzle::{effort_to_spend, solve_puzzle, CancelOnDrop};
pub use verify::{verify_descriptor, verify_descriptor_with};

/// Clock skew tolerated on a descriptor's times (seconds).
pub const DESCRIPTOR_SKEW: u64 = 300;
/// Descriptors cached at once (one per service); expired ones are dropped first.
pub const MAX_CACHED_DESCRIPTORS: usize = 1000;
/// Descriptor directories asked before giving up: every directory of the ring (2
/// replicas × the default spread of 3). A service counts as published once one directory
/// stored its descriptor (an upload can fail on a busy relay or a circuit that did not
/// build), so stopping after 3 random picks could miss the directories that have it.
/// A NOT_FOUND answer is quick; the whole connection stays within its time limit.
const HSDIR_ATTEMPTS: usize = 6;
/// Descriptor directories of a neighbouring period asked (near a boundary), after the
/// current period's.
const NEIGHBOUR_ATTEMPTS: usize = 3;
/// Introduction points tried before giving up.
const INTRO_ATTEMPTS: usize = 3;
/// Waiting for RENDEZVOUS_ESTABLISHED, INTRODUCE_ACK or RENDEZVOUS2, each.
const ONION_STEP_TIMEOUT: Duration = Duration::from_secs(20);
/// The whole connection to a service (descriptor, circuits, handshake).
pub const ONION_CONNECT_TIMEOUT: Duration = Duration::from_secs(90);
/// Rendezvous circuits kept at once (isolation class × service).
const MAX_REND_CIRCUITS: usize = 256;

/// Whether `host` names an onion service (ends in `.allium`, any case).
pub fn is_onion_host(host: &str) -> bool {
    let suffix = crate::onion::address::ADDRESS_SUFFIX;
    host.len() >= suffix.len()
        && host
            .get(host.len() - suffix.len()..)
            .is_some_and(|s| s.eq_ignore_ascii_case(suffix))
}

/// A verified descriptor's contents, cached until it expires.
#[derive(Debug, Clone)]
struct CachedDescriptor {
    inner: InnerDescriptor,
    blinded: BlindedPublic,
    expires: u64,
}

/// Rendezvous circuits are kept per isolation class and service identity.
type RendKey = (Isolation, [u8; 32]);

/// Connects to onion services for a client: builds its circuits with the client's circuit
/// manager on the client's consensus, and keeps what it learned.
pub struct OnionConnector {
    dir: Arc<DirMgr>,
    circuits: Arc<CircMgr>,
    /// A stream may take this long to open.
    stream_timeout: Duration,
    /// A rendezvous circuit takes new streams for this long, as an exit circuit does.
    max_dirtiness: Duration,
    /// A descriptor fetch may take this long.
    circuit_timeout: Duration,
    /// Verified descriptors by service identity.
    descriptors: Mutex<HashMap<[u8; 32], CachedDescriptor>>,
    /// The highest revision accepted per blinded key, so a directory cannot roll a client
    /// back to an older descriptor (older introduction points) while it runs.
    revisions: Mutex<RevisionFloors>,
    /// Open rendezvous circuits by (isolation class, service identity), with when they
    /// were built.
    rend: Mutex<HashMap<RendKey, (CircuitHandle, tokio::time::Instant)>>,
    /// Rendezvous circuits past their dirtiness whose streams may still be open (NEWNYM
    /// closes them).
    retiring: Mutex<Vec<CircuitHandle>>,
    /// The least and most puzzle effort spent on a service (docs/protocol.md §8.8).
    pow_effort: (u32, u32),
    /// Client authorisation keys by service identity.
    auth_keys: HashMap<[u8; 32], ClientAuthSecret>,
}

impl std::fmt::Debug for OnionConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnionConnector { .. }")
    }
}

impl OnionConnector {
    /// A connector with nothing cached, using `config`'s time limits.
    pub fn new(dir: Arc<DirMgr>, circuits: Arc<CircMgr>, config: &ClientConfig) -> Self {
        OnionConnector {
            dir,
            circuits,
            stream_timeout: config.stream_timeout,
            max_dirtiness: config.max_dirtiness,
            circuit_timeout: config.circuit_timeout,
            descriptors: Mutex::default(),
            revisions: Mutex::new(RevisionFloors::new(DESCRIPTOR_SKEW)),
            rend: Mutex::default(),
            retiring: Mutex::default(),
            pow_effort: (config.onion_pow_min_effort, config.onion_pow_max_effort),
            auth_keys: (config.onion_client_auth.iter())
                .map(|(a, k)| (*a.identity().as_bytes(), k.clone()))
                .collect(),
        }
    }

    /// Retires rendezvous circuits past the maximum dirtiness, whatever their isolation
    /// class, and forgets closed ones. Returns the rendezvous circuits still held.
    pub fn sweep(&self) -> usize {
        let mut map = lock(&self.rend);
        let mut retiring = lock(&self.retiring);
        retiring.retain(|h| !h.is_closed());
        map.retain(|_, (h, built)| {
            let keep = !h.is_closed() && built.elapsed() < self.max_dirtiness;
            if !keep && !h.is_closed() {
                let h = h.clone();
                retiring.push(h.clone());
                tokio::spawn(async move { h.retire().await });
            }
            keep
        });
        map.len()
    }

    /// Opens a stream to port `port` of the service named `host` (`<address>.allium`).
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
        isolation: &Isolation,
    ) -> Result<DataStream, ClientError> {
        reuse::connect(self, host, port, isolation).await
    }

    /// Opens a UDP flow to UDP port `port` of the service named `host`.
    pub async fn open_udp(
        &self,
        host: &str,
        port: u16,
        isolation: &Isolation,
    ) -> Result<UdpFlow, ClientError> {
        reuse::open_udp(self, host, port, isolation).await
    }
}

/// The service's descriptor: from the cache while it is valid, else fetched and verified.
async fn descriptor(
    onion: &OnionConnector,
    address: &OnionAddress,
) -> Result<CachedDescriptor, ClientError> {
    let id = *address.identity().as_bytes();
    let now = onion.dir.clock().now_unix();
    if let Some(d) = lock(&onion.descriptors)
        .get(&id)
        .filter(|d| now < d.expires)
    {
        return Ok(d.clone());
    }
    // No consensus is that error, not a missing descriptor.
    onion.dir.live_consensus()?;
    let periods = PeriodParams::default();
    let to_fetch = periods::periods_to_fetch(&periods, now);
    let mut last = String::from("no usable time period");
    // A client-authorisation refusal comes from the service's own signed descriptor, but
    // a directory may hold an older one (or lie by serving it): it is the answer only if
    // no directory of any period has a descriptor this client can open.
    let mut auth_refusal: Option<ClientError> = None;
    // Near a boundary the neighbouring period's descriptor too (the service's clock may
    // differ); the current period's directories are asked first.
    for (i, period) in to_fetch.into_iter().enumerate() {
        let attempts = if i == 0 {
            HSDIR_ATTEMPTS
        } else {
            NEIGHBOUR_ATTEMPTS
        };
        match fetch_for_period(onion, address, &periods, period, attempts).await? {
            Ok(cached) => return Ok(cached),
            Err((e, auth)) => {
                last = e;
                auth_refusal = auth_refusal.or(auth);
            }
        }
    }
    Err(auth_refusal.unwrap_or_else(|| OnionConnectError::NoDescriptor(last).into()))
}

/// Asks up to `attempts` of `period`'s descriptor directories for `address`'s descriptor;
/// the verified one (cached), or why the last attempt failed with the first
/// client-authorisation refusal met (if any).
async fn fetch_for_period(
    onion: &OnionConnector,
    address: &OnionAddress,
    periods: &PeriodParams,
    period: crate::onion::TimePeriod,
    attempts: usize,
) -> Result<Result<CachedDescriptor, (String, Option<ClientError>)>, ClientError> {
    let id = *address.identity().as_bytes();
    let now = onion.dir.clock().now_unix();
    let blinded = match BlindedPublic::derive(address, period) {
        Ok(b) => b,
        Err(e) => return Ok(Err((e.to_string(), None))),
    };
    let consensus = onion.dir.live_consensus()?;
    let mut dirs: Vec<ConsensusEntry> = responsible_hsdirs(
        consensus.relays(),
        &blinded,
        period,
        &HsDirParams::default(),
    )
    .iter()
    .filter_map(|id| consensus.relay(id).cloned())
    .collect();
    dirs.shuffle(&mut rand::rng());
    let min_revision = lock(&onion.revisions).floor(blinded.as_bytes(), now);
    let timeout = onion.circuit_timeout;
    let mut last = String::from("no descriptor directory in the consensus");
    let mut auth_refusal = None;
    for dir in dirs.iter().take(attempts) {
        let attempt = async {
            let circ = onion
                .circuits
                .build_circuit_ending(&relay_target(dir, now)?, CircPurpose::HsDir)
                .await?;
            let handle = circ.into_handle();
            let req = DirRequest::GetOnionDescriptor {
                blinded_key: *blinded.as_bytes(),
            };
            let resp = crate::proto::dirclient::dir_request(&handle, &req, timeout).await;
            handle.close().await;
            let resp = resp.map_err(|e| ClientError::Circuit(e.to_string()))?;
            if resp.status != DirStatus::Ok {
                return Err(OnionConnectError::NoDescriptor(resp.reason()).into());
            }
            Ok::<_, ClientError>(verify_descriptor_with(
                &resp.body,
                address,
                onion.auth_keys.get(&id),
                periods,
                onion.dir.clock().now_unix(),
                min_revision,
            )?)
        };
        match attempt.await {
            Ok((inner, blinded, revision, expires)) => {
                lock(&onion.revisions).record(
                    *blinded.as_bytes(),
                    revision,
                    expires,
                    onion.dir.clock().now_unix(),
                );
                let cached = CachedDescriptor {
                    inner,
                    blinded,
                    expires,
                };
                let mut cache = lock(&onion.descriptors);
                let now = onion.dir.clock().now_unix();
                cache.retain(|_, d| now < d.expires);
                if cache.len() < MAX_CACHED_DESCRIPTORS {
                    cache.insert(id, cached.clone());
                }
                return Ok(Ok(cached));
            }
            Err(e @ ClientError::Onion(OnionConnectError::ClientAuthMissing))
            | Err(e @ ClientError::Onion(OnionConnectError::ClientAuthRejected)) => {
                debug!("onion: a descriptor directory's copy cannot be opened: {e}");
                last = e.to_string();
                auth_refusal = auth_refusal.or(Some(e));
            }
            Err(e) => {
                debug!("onion: a descriptor directory failed: {e}");
                last = e.to_string();
            }
        }
    }
    Ok(Err((last, auth_refusal)))
}

/// A relay of the consensus to meet the service at: Running and Valid, not `avoid`, its
/// listed identity a usable key; uniformly at random.
fn pick_rendezvous<'a>(
    relays: &'a [ConsensusEntry],
    avoid: &crate::crypto::IdentityPublic,
) -> Option<&'a ConsensusEntry> {
    uniform_usable_choice(
        relays
            .iter()
            .filter(|r| r.has(crate::dir::path::USABLE) && r.identity != *avoid),
        &mut rand::rng(),
    )
}

/// Fetches the descriptor and runs the introduction and rendezvous (trying up to
/// [`INTRO_ATTEMPTS`] introduction points). If every attempt failed with a cached
/// descriptor (the service may have restarted with new introduction points), the
/// descriptor is fetched again and the attempts repeated once. Returns the rendezvous
/// circuit with the end-to-end hop added, running.
async fn rendezvous(
    onion: &OnionConnector,
    address: &OnionAddress,
) -> Result<CircuitHandle, ClientError> {
    let id = *address.identity().as_bytes();
    let was_cached = lock(&onion.descriptors)
        .get(&id)
        .is_some_and(|d| onion.dir.clock().now_unix() < d.expires);
    match try_intro_points(onion, address).await {
        Ok(h) => Ok(h),
        Err(e) => {
            // A stale descriptor is the likely cause: forget it.
            lock(&onion.descriptors).remove(&id);
            if was_cached {
                debug!("onion: retrying with a fresh descriptor");
                try_intro_points(onion, address).await
            } else {
                Err(e)
            }
        }
    }
}

async fn try_intro_points(
    onion: &OnionConnector,
    address: &OnionAddress,
) -> Result<CircuitHandle, ClientError> {
    let desc = descriptor(onion, address).await?;
    let mut points = desc.inner.intro_points.clone();
    points.shuffle(&mut rand::rng());
    let mut last = String::from("the descriptor lists no introduction point");
    for point in points.iter().take(INTRO_ATTEMPTS) {
        match introduce_via(onion, address, &desc, point).await {
            Ok(h) => return Ok(h),
            Err(e) => {
                debug!("onion: an introduction attempt failed: {e}");
                last = e.to_string();
            }
        }
    }
    Err(OnionConnectError::Unreachable(last).into())
}

fn protocol(what: &str) -> ClientError {
    ClientError::Circuit(what.to_string())
}

/// One attempt: the introduction (puzzle included) while the rendezvous and introduction
/// circuits are built, then the cookie, INTRODUCE1 via `point`, RENDEZVOUS2.
async fn introduce_via(
    onion: &OnionConnector,
    address: &OnionAddress,
    desc: &CachedDescriptor,
    point: &IntroPointInfo,
) -> Result<CircuitHandle, ClientError> {
    let now = onion.dir.clock().now_unix();
    let consensus = onion.dir.live_consensus()?;
    // Only listed relays are used as introduction points (the descriptor's certificate is
    // still checked to name the same relay), so a descriptor cannot steer the client to an
    // arbitrary host.
    let intro_entry = consensus
        .relay(point.relay_identity)
        .ok_or_else(|| protocol("introduction point not in the consensus"))?;
    let intro_target = relay_target(intro_entry, now)?;
    let rend_entry = pick_rendezvous(consensus.relays(), &point.relay_identity)
        .ok_or_else(|| protocol("no relay to use as rendezvous point"))?;
    let rend_target: RelayTarget = relay_target(rend_entry, now)?;

    // 1. The introduction (with the puzzle, seconds of hashing) while the rendezvous and
    // introduction circuits are built. The puzzle covers the client key `X`, not the
    // cookie, so the cookie is registered only afterwards: a rendezvous point with a full
    // cookie table evicts its oldest cookie, and one registered before a slow solve
    // would be old by the time the service comes.
    let mut cookie = [0u8; REND_COOKIE_LEN];
    rand::rng().fill_bytes(&mut cookie);
    let keys = IntroKeys {
        auth_key: point.auth_key,
        enc_key: point.enc_key,
        subcred: subcredential(address.identity(), &desc.blinded),
    };
    let (keys_auth, keys_enc) = (point.auth_key, point.enc_key);
    let pow = effort_to_spend(
        desc.inner.pow,
        onion.dir.clock().now_unix(),
        onion.pow_effort,
    );
    let blinded = desc.blinded;
    let rend_cert = rend_entry.onion_cert.clone();
    let rend_identity = rend_target.identity;
    let rend_addr = rend_target.addr;
    // The puzzle runs on a blocking thread, never on a runtime worker; if this attempt is
    // abandoned (a circuit failed, or the connection's timeout), the guard's drop tells
    // the solver to stop.
    let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
    let cancelled = Arc::clone(&cancel.0);
    let solving = tokio::task::spawn_blocking(move || {
        let mut pow_err = None;
        let r = client_introduce_with(&mut rand::rng(), &keys, |x| {
            let auth = *keys_auth.as_bytes();
            let pow = match pow {
                Some((p, effort)) => {
                    let input = PowInput {
                        seed: &p.seed,
                        blinded: &blinded,
                        auth_key: &auth,
                        enc_key: keys_enc.as_bytes(),
                        client_x: x,
                    };
                    match solve_puzzle(&input, effort, &cancelled) {
                        Ok(sol) => Some(sol),
                        Err(e) => {
                            pow_err = Some(e);
                            return Err(HsHandshakeError::Internal);
                        }
                    }
                }
                None => None,
            };
            IntroducePlaintext {
                cookie,
                rend_identity,
                rend_addr,
                rend_onion_cert: rend_cert,
                pow,
            }
            .encode()
            .map(|p| p.to_vec())
            .map_err(|_| HsHandshakeError::Internal)
        });
        (r, pow_err)
    });
    let introduced = async {
        match solving.await {
            Ok((Ok(v), _)) => Ok(v),
            Ok((Err(_), Some(e))) => Err(protocol(&format!("client puzzle: {e}"))),
            Ok((Err(e), None)) => Err(protocol(&format!("introduction: {e}"))),
            Err(_) => Err(protocol("introduction: the puzzle task failed")),
        }
    };
    let ((hs_state, x_pub, ct), rend, intro) = tokio::try_join!(
        introduced,
        onion
            .circuits
            .build_circuit_ending(&rend_target, CircPurpose::RendClient),
        onion
            .circuits
            .build_circuit_ending(&intro_target, CircPurpose::IntroClient),
    )?;
    drop(cancel);
    let mut rend = rend.accepting::<AtOnionClient>();
    let mut intro = intro.accepting::<AtOnionClient>();

    // 2. Cookie at the rendezvous point, then the introduction.
    rend.send_to_last(RelayMsg::Onion(OnionMsg::EstablishRendezvous(cookie)))
        .await
        .map_err(|e| ClientError::Circuit(e.to_string()))?;
    expect_from_last(&mut rend, |m| match m {
        AtOnionClient::RendezvousEstablished => Some(()),
        AtOnionClient::IntroduceAck(_) | AtOnionClient::Rendezvous2(_) | AtOnionClient::Drop => {
            None
        }
    })
    .await?;
    let intro_msg = Introduce::new(*point.auth_key.as_bytes(), x_pub, ct)
        .map_err(|e| protocol(&e.to_string()))?;
    intro
        .send_to_last(RelayMsg::Onion(OnionMsg::Introduce1(intro_msg)))
        .await
        .map_err(|e| ClientError::Circuit(e.to_string()))?;
    let ack = expect_from_last(&mut intro, |m| match m {
        AtOnionClient::IntroduceAck(status) => Some(status),
        AtOnionClient::RendezvousEstablished
        | AtOnionClient::Rendezvous2(_)
        | AtOnionClient::Drop => None,
    })
    .await;
    close_introduction(intro, ack.is_ok());
    match ack? {
        IntroduceAckStatus::Success => {}
        status => {
            return Err(protocol(&format!(
                "the introduction point refused: {status:?}"
            )))
        }
    }

    // 3. The service's answer through the rendezvous point.
    let reply = expect_from_last(&mut rend, |m| match m {
        AtOnionClient::Rendezvous2(reply) => Some(reply),
        AtOnionClient::IntroduceAck(_)
        | AtOnionClient::RendezvousEstablished
        | AtOnionClient::Drop => None,
    })
    .await?;
    let e2e = hs_state
        .finish(&reply)
        .map_err(|e| protocol(&format!("end-to-end handshake: {e}")))?;
    rend.push_end_to_end_hop(&e2e, false)
        .map_err(|e| ClientError::Circuit(e.to_string()))?;
    Ok(rend.accepting::<AtClient>().into_handle())
}

/// How long an introduction circuit padded to look like a fetch stays open after its
/// acknowledgement, in milliseconds: an exit circuit is not closed the moment its reply
/// arrives, so neither is this one (docs/protocol.md §3.6.1).
const INTRO_LINGER_MS: std::ops::RangeInclusive<u64> = 10_000..=20_000;

/// Closes an introduction circuit: at once if it is unpadded or failed, else after
/// [`INTRO_LINGER_MS`] during which its padding machines run.
fn close_introduction(mut intro: ClientCircuit<AtOnionClient>, answered: bool) {
    tokio::spawn(async move {
        if answered && intro.padding_granted() {
            let linger = Duration::from_millis(rand::RngExt::random_range(
                &mut rand::rng(),
                INTRO_LINGER_MS,
            ));
            let deadline = tokio::time::Instant::now() + linger;
            // Received cells (the hop's padding) are dropped; receiving drives the
            // client's own machine.
            while let Ok(Ok(_)) = tokio::time::timeout_at(deadline, intro.recv()).await {}
        }
        intro.destroy().await;
    });
}

/// Waits (bounded) for a message from the circuit's last hop that `pick` takes; DROP cells
/// are skipped, anything else fails.
async fn expect_from_last<T>(
    circ: &mut ClientCircuit<AtOnionClient>,
    pick: impl Fn(AtOnionClient) -> Option<T>,
) -> Result<T, ClientError> {
    let last = circ.len().saturating_sub(1);
    let deadline = tokio::time::Instant::now() + ONION_STEP_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let (hop, cell, _) = circ
            .recv_timeout(left)
            .await
            .map_err(|e| ClientError::Circuit(e.to_string()))?;
        let msg = cell.into_parts().1;
        if matches!(msg, AtOnionClient::Drop) {
            continue;
        }
        let picked = if hop == last { pick(msg) } else { None };
        return picked.ok_or_else(|| protocol("unexpected relay message"));
    }
}
