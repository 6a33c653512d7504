//! The client's circuit manager: builds circuits along paths chosen from the consensus,
//! keeps a few clean ones ready, and hands out circuits by isolation class (streams of
//! different classes never share one; a circuit takes new streams only for its maximum
//! dirtiness).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use tracing::debug;

use crate::clock::Stamp;
use crate::crypto::IdentityPublic;
use crate::dir::path::policy_allows;
use crate::dir::path::select_path_avoiding;
use crate::dir::vanguards::{VanguardParams, VanguardSet};
use crate::dir::{ConsensusEntry, ExitPolicy, PathTarget, Transport};
use crate::proto::{CircuitHandle, ClientCircuit, RelayTarget};
use crate::sync::lock;

use super::chanmgr::ChanMgr;
use super::dirmgr::DirMgr;
use super::error::ClientError;
use super::guardmgr::GuardMgr;
use super::purpose::{CircPurpose, ClientObserver};
use crate::proto::padding::machines::MachineKind;

mod build;
mod ending;
mod newnym;
pub(crate) use newnym::close_each;

/// Path draws per circuit build while the drawn path includes a relay to avoid.
const PATH_REDRAWS: usize = 8;

/// The path a clean circuit is built for (any exit allowing port 443).
const CLEAN_TARGET: PathTarget = PathTarget::tcp(443, None);

/// Streams sharing an isolation key may share circuits; different keys never do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Isolation(pub Vec<u8>);

struct ReadyCircuit {
    handle: CircuitHandle,
    /// The last hop, which streams leave from.
    exit: IdentityPublic,
    exit_policy: ExitPolicy,
    /// The exit's UDP policy, for circuits asked to carry UDP.
    udp_policy: ExitPolicy,
    /// When it was built, on both clocks: a circuit built before a wall-clock jump takes
    /// no new streams, even before the jump watcher reports the jump.
    built: Stamp,
    /// When it carried its first stream (None: still clean).
    first_used: Option<Instant>,
    /// The NEWNYM epoch its build started in: one of an earlier epoch takes no streams.
    nym: u64,
}

impl ReadyCircuit {
    /// The exit's policy for `proto`.
    fn policy_for(&self, proto: Transport) -> &ExitPolicy {
        match proto {
            Transport::Tcp => &self.exit_policy,
            Transport::Udp => &self.udp_policy,
        }
    }
}

/// How circuits are built and kept.
#[derive(Debug, Clone)]
pub struct CircParams {
    /// Hops per circuit (2 to 8).
    pub path_len: usize,
    /// A circuit takes new streams for this long after its first one.
    pub max_dirtiness: Duration,
    /// Building one circuit may take this long.
    pub circuit_timeout: Duration,
    /// Clean circuits kept ready for the first requests.
    pub prebuilt_circuits: usize,
    /// Ask each hop for congestion control (docs/protocol.md §3.5).
    pub congestion_control: bool,
    /// Pad onion-service circuits (docs/protocol.md §3.6).
    pub circuit_padding: bool,
    /// Second hops of onion-service circuits from the vanguard set (§8.10).
    pub vanguards: bool,
    /// Told of every circuit built.
    pub observer: Option<Arc<dyn ClientObserver>>,
}

/// Circuits by isolation class, and the clean ones kept ready.
pub struct CircMgr {
    params: CircParams,
    dir: Arc<DirMgr>,
    channels: Arc<ChanMgr>,
    guards: Arc<GuardMgr>,
    circuits: Mutex<HashMap<Isolation, Vec<ReadyCircuit>>>,
    clean: Mutex<Vec<ReadyCircuit>>,
    vanguards: Mutex<VanguardSet>,
    nym: Mutex<newnym::Nym>,
    /// Circuits past their dirtiness whose streams may still be open (NEWNYM closes them).
    retiring: Mutex<Vec<newnym::Retired>>,
}

impl std::fmt::Debug for CircMgr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CircMgr { .. }")
    }
}

impl CircMgr {
    /// A manager with no circuits yet.
    pub fn new(
        params: CircParams,
        dir: Arc<DirMgr>,
        channels: Arc<ChanMgr>,
        guards: Arc<GuardMgr>,
    ) -> Self {
        CircMgr {
            params,
            dir,
            channels,
            guards,
            circuits: Mutex::new(HashMap::new()),
            clean: Mutex::new(Vec::new()),
            vanguards: Mutex::new(VanguardSet::new(VanguardParams::default())),
            nym: Mutex::new(newnym::Nym::default()),
            retiring: Mutex::new(Vec::new()),
        }
    }

    /// Builds the clean circuits wanted ready (at least one; up to twice as many attempts).
    /// Returns how many were built.
    pub async fn prebuild(&self) -> usize {
        let wanted = self.params.prebuilt_circuits.max(1);
        let mut built = 0;
        for _ in 0..wanted * 2 {
            if built == wanted {
                break;
            }
            match self.build_circuit(&CLEAN_TARGET).await {
                Ok(c) => {
                    built += usize::from(self.keep_clean(c));
                }
                Err(e) => tracing::warn!("bootstrap: a circuit failed: {e}"),
            }
        }
        built
    }

    async fn build_circuit(&self, target: &PathTarget) -> Result<ReadyCircuit, ClientError> {
        self.build_circuit_avoiding(target, &mut Vec::new()).await
    }

    /// Builds a circuit whose hops after the guard avoid the relays in `avoid` when a path
    /// can (a request's earlier builds could not be extended to them: typically a relay
    /// that just died but is still listed). If an extension fails, the relay it was
    /// extending to is added to `avoid`. Only the current request's retries use this list,
    /// so a hop that fakes failures can steer nothing beyond what killing the circuit does.
    async fn build_circuit_avoiding(
        &self,
        target: &PathTarget,
        avoid: &mut Vec<IdentityPublic>,
    ) -> Result<ReadyCircuit, ClientError> {
        let consensus = self
            .dir
            .consensus()
            .ok_or_else(|| ClientError::NoConsensus("not bootstrapped".into()))?;
        // Taken before anything is checked against the wall clock: a jump during the
        // build makes the circuit count as built before it.
        let built = self.dir.clock().stamp();
        let now = self.dir.clock().now_unix();
        let (nym, avoid_exits) = lock(&self.nym).now();
        if !consensus.is_usable(now) {
            self.dir.want_consensus();
            return Err(ClientError::NoConsensus(format!(
                "the consensus expired at unix time {} ({} s ago) and no authority or guard \
                 could provide a newer one",
                consensus.valid_until(),
                now.saturating_sub(consensus.valid_until())
            )));
        }
        let (hops, exit_policy, udp_policy) = {
            let mut guards = self.guards.lock();
            let mut select = || {
                select_path_avoiding(
                    &consensus,
                    target,
                    &avoid_exits,
                    &mut guards,
                    self.params.path_len,
                    now,
                    &mut rand::rng(),
                )
                .map_err(|e| ClientError::Circuit(e.to_string()))
            };
            let mut path = select()?;
            // Redraw (a bounded number of times) while a non-guard hop is to be avoided;
            // if no other path turns up, try the last one anyway.
            for _ in 0..PATH_REDRAWS {
                if !path
                    .iter()
                    .skip(1)
                    .any(|e| avoid.iter().any(|a| *a == e.identity))
                {
                    break;
                }
                path = select()?;
            }
            let hops = path
                .iter()
                .map(|e| relay_target(e, now))
                .collect::<Result<Vec<_>, _>>()?;
            let (policy, udp) = path.last().map_or_else(
                || (ExitPolicy::reject_all(), ExitPolicy::reject_all()),
                |e| (e.exit_policy.clone(), e.udp_policy.clone()),
            );
            (hops, policy, udp)
        };
        let last_hop = hops
            .last()
            .map(|h| h.identity)
            .ok_or_else(|| ClientError::Circuit("empty path".into()))?;
        match self.build_through(&hops, CircPurpose::Exit, now).await {
            Ok(circ) => {
                // Built for an identity NEWNYM has since left.
                if lock(&self.nym).epoch() != nym {
                    let handle = circ.into_handle();
                    tokio::spawn(async move { handle.close().await });
                    return Err(ClientError::Circuit("a new identity was asked for".into()));
                }
                self.observe(&circ, CircPurpose::Exit, &hops);
                Ok(ReadyCircuit {
                    exit: last_hop,
                    handle: circ.into_handle(),
                    exit_policy,
                    udp_policy,
                    built,
                    first_used: None,
                    nym,
                })
            }
            Err(failure) => {
                // The guard answered and extended: it did its job. The relay that failed
                // is avoided by this request's next build instead.
                if let Some(id) = failure.past_guard.filter(|id| !avoid.contains(id)) {
                    avoid.push(id);
                }
                Err(failure.error)
            }
        }
    }

    /// Asks the circuit's second hop for the padding machines of `purpose` (when padding
    /// is on and the path is long enough for the second hop not to be the last).
    fn ask_padding(
        &self,
        circ: &mut ClientCircuit,
        path_len: usize,
        purpose: CircPurpose,
    ) -> Option<MachineKind> {
        if !self.params.circuit_padding || path_len < 3 {
            return None;
        }
        // The introduction machines count the build's EXTENDED cells: three hops only.
        let kind = purpose
            .padding()
            .filter(|k| path_len == 3 || *k != MachineKind::Introduction)?;
        circ.ask_padding(kind);
        Some(kind)
    }

    fn observe<M: crate::cell::RelayMessage>(
        &self,
        circ: &ClientCircuit<M>,
        purpose: CircPurpose,
        hops: &[RelayTarget],
    ) {
        if let Some(o) = &self.params.observer {
            o.circuit_built(circ.id(), purpose);
            let ids: Vec<IdentityPublic> = hops.iter().map(|h| h.identity).collect();
            o.circuit_path(circ.id(), purpose, &ids);
        }
    }

    /// Whether the current consensus still lets `exit` be an exit (listed, Running, Valid,
    /// Exit, not BadExit): a circuit through an exit the authorities have since caught
    /// misbehaving takes no new streams.
    fn exit_still_usable(&self, exit: &IdentityPublic) -> bool {
        self.dir.consensus().is_none_or(|c| {
            c.relay(exit)
                .is_some_and(|e| e.has(crate::dir::path::USABLE) && e.flags.usable_exit())
        })
    }

    /// A circuit of class `isolation` whose exit may allow `ip:port` over `proto` (`ip`
    /// unknown: a name the exit resolves) by its policy for that transport: one in use while not past its dirtiness, else a clean one,
    /// else a new one. With `fresh`, always a new one, whose path avoids the relays in
    /// `avoid` (relays earlier builds of this request could not be extended to; a failed
    /// extension adds its relay).
    pub async fn circuit_for(
        self: &Arc<Self>,
        isolation: &Isolation,
        port: u16,
        ip: Option<IpAddr>,
        proto: Transport,
        fresh: bool,
        avoid: &mut Vec<IdentityPublic>,
    ) -> Result<CircuitHandle, ClientError> {
        let dirtiness = self.params.max_dirtiness;
        let clock = self.dir.clock();
        let target = PathTarget {
            port,
            addr: ip,
            proto,
        };
        let nym = lock(&self.nym).epoch();
        let suits = |c: &ReadyCircuit| {
            c.nym == nym
                && !c.handle.is_closed()
                && c.built.jumped_since(clock).is_none()
                && self.exit_still_usable(&c.exit)
                && policy_allows(c.policy_for(proto), &target)
        };
        if !fresh {
            let mut map = lock(&self.circuits);
            let list = map.entry(isolation.clone()).or_default();
            self.keep_retired(isolation, retire_expired(list, clock, dirtiness));
            if let Some(c) = list.iter().find(|c| suits(c)) {
                return Ok(c.handle.clone());
            }
            // A prebuilt clean circuit, if one fits.
            let mut clean = lock(&self.clean);
            clean.retain(|c| !c.handle.is_closed() && c.built.jumped_since(clock).is_none());
            if let Some(pos) = clean.iter().position(suits) {
                let mut c = clean.remove(pos);
                c.first_used = Some(Instant::now());
                let handle = c.handle.clone();
                list.push(c);
                drop(clean);
                drop(map);
                self.replenish();
                return Ok(handle);
            }
        }
        let mut c = self.build_circuit_avoiding(&target, avoid).await?;
        c.first_used = Some(Instant::now());
        let handle = c.handle.clone();
        // Kept under the NEWNYM lock, so a NEWNYM either closes it or came before its
        // build (then it belongs to the old identity and is closed here).
        let kept = {
            let nym = lock(&self.nym);
            (c.nym == nym.epoch()).then(|| {
                lock(&self.circuits)
                    .entry(isolation.clone())
                    .or_default()
                    .push(c)
            })
        };
        if kept.is_none() {
            handle.close().await;
            return Err(ClientError::Circuit("a new identity was asked for".into()));
        }
        Ok(handle)
    }

    /// Retires every circuit past its dirtiness (or built before a clock jump) whatever its
    /// isolation class, forgets closed ones and drops classes left with no circuit. Returns
    /// the circuits still held (isolated and clean).
    ///
    /// Without this, a class never used again (a browser isolating by site, a new SOCKS
    /// credential per request) kept its circuits open forever, here and at their relays.
    pub fn sweep(&self) -> usize {
        let clock = self.dir.clock();
        let dirtiness = self.params.max_dirtiness;
        let mut held = {
            let mut map = lock(&self.circuits);
            map.retain(|class, list| {
                self.keep_retired(class, retire_expired(list, clock, dirtiness));
                !list.is_empty()
            });
            map.values().map(Vec::len).sum::<usize>()
        };
        lock(&self.retiring).retain(|r| !r.handle.is_closed());
        let mut clean = lock(&self.clean);
        clean.retain(|c| !c.handle.is_closed());
        held += clean.len();
        held
    }

    /// Builds a clean circuit in the background to replace one just taken.
    fn replenish(self: &Arc<Self>) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            if lock(&me.clean).len() >= me.params.prebuilt_circuits {
                return;
            }
            if let Ok(c) = me.build_circuit(&CLEAN_TARGET).await {
                me.keep_clean(c);
            }
        });
    }

    /// After a wall-clock jump: no circuit built so far takes new streams (their open
    /// streams may finish); they were built on a consensus and certificates checked at a
    /// time that is no longer now. [`Self::refill_clean`] rebuilds the clean ones.
    pub async fn retire_all(&self) {
        let classes: Vec<(Isolation, Vec<ReadyCircuit>)> = lock(&self.circuits).drain().collect();
        for (class, list) in classes {
            self.keep_retired(&class, list);
        }
        let clean: Vec<ReadyCircuit> = lock(&self.clean).drain(..).collect();
        for c in clean {
            c.handle.retire().await;
        }
    }

    /// Builds clean circuits in the background until the configured number is ready.
    pub fn refill_clean(self: &Arc<Self>) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let missing = {
                let mut clean = lock(&me.clean);
                clean.retain(|c| !c.handle.is_closed());
                me.params.prebuilt_circuits.saturating_sub(clean.len())
            };
            for _ in 0..missing {
                match me.build_circuit(&CLEAN_TARGET).await {
                    Ok(c) => {
                        me.keep_clean(c);
                    }
                    Err(e) => debug!("client: a clean circuit failed: {e}"),
                }
            }
        });
    }

    /// Diagnostics: for each isolation class, the ids (first-hop circuit ids) of the open
    /// circuits it uses. Two classes never share a circuit.
    pub fn circuits_by_isolation(&self) -> Vec<(Isolation, Vec<u32>)> {
        let map = lock(&self.circuits);
        map.iter()
            .map(|(k, v)| {
                let ids = v
                    .iter()
                    .filter(|c| !c.handle.is_closed())
                    .map(|c| c.handle.id().get())
                    .collect();
                (k.clone(), ids)
            })
            .collect()
    }
}

/// Takes out of `list` the circuits that must take no new streams (closed, built before a
/// wall-clock jump, or first used longer than `dirtiness` ago), for
/// [`CircMgr::keep_retired`] to retire: each closes once its open streams are done.
fn retire_expired(
    list: &mut Vec<ReadyCircuit>,
    clock: &crate::clock::Clock,
    dirtiness: Duration,
) -> Vec<ReadyCircuit> {
    let (keep, expired): (Vec<_>, Vec<_>) = std::mem::take(list).into_iter().partition(|c| {
        !c.handle.is_closed()
            && c.built.jumped_since(clock).is_none()
            && c.first_used.is_none_or(|t| t.elapsed() < dirtiness)
    });
    *list = keep;
    expired
}

/// A consensus entry as a circuit hop (its onion-key certificate verified now, and with it
/// the listed identity validated as a key: a relay whose listed identity is not one fails
/// here, cleanly, before any connection).
pub(crate) fn relay_target(e: &ConsensusEntry, now: u64) -> Result<RelayTarget, ClientError> {
    let onion = e
        .verified_onion_key(now)
        .map_err(|e| ClientError::Circuit(e.to_string()))?;
    let addr = *e
        .addrs
        .first()
        .ok_or_else(|| ClientError::Circuit("relay without address".into()))?;
    Ok(RelayTarget {
        addr,
        // Validated (a usable ed25519 key) by the certificate's verification.
        identity: *onion.identity(),
        onion,
    })
}

impl Isolation {
    /// The isolation class of a proxy request: its listener and credentials, encoded
    /// unambiguously (lengths first) so two different keys never collide.
    pub fn from_proxy(key: &super::socks_server::IsolationKey) -> Self {
        use super::socks::SocksAuth;
        let mut out = key.listener.to_be_bytes().to_vec();
        let mut field = |tag: u8, bytes: &[u8]| {
            out.push(tag);
            out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
            out.extend_from_slice(bytes);
        };
        match &key.auth {
            SocksAuth::None => field(0, &[]),
            SocksAuth::Username { user, pass } => {
                field(1, user);
                field(2, pass);
            }
            SocksAuth::Socks4UserId(id) => field(3, id),
        }
        Isolation(out)
    }
}
