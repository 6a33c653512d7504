//! The client: bootstraps from the directory authorities, keeps circuits ready, and opens
//! streams through them. This is the library API the SOCKS proxy itself uses:
//!
//! ```no_run
//! # async fn demo(config: allium::client::ClientConfig) -> Result<(), Box<dyn std::error::Error>> {
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! let client = allium::client::Client::bootstrap(config).await?;
//! let mut stream = client.connect("example.com:80").await?;
//! stream.write_all(b"GET / HTTP/1.0\r\nHost: example.com\r\n\r\n").await?;
//! let mut page = Vec::new();
//! stream.read_to_end(&mut page).await?;
//! # Ok(()) }
//! ```

use crate::clock::now_unix;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::cell::{EndReason, Hostname, TargetAddr};
use crate::crypto::IdentityPublic;
use crate::dir::request::{DirRequest, DirStatus};
use crate::dir::AuthorityInfo;
use crate::dir::{
    select_path, Consensus, ConsensusEntry, ExitPolicy, GuardParams, GuardSet, PathTarget,
    UncheckedConsensus,
};
use crate::link::LinkConfig;
use crate::sync::lock;

use crate::proto::dirclient::{dir_request, one_shot};
use crate::proto::{
    CircuitHandle, ClientChannel, ClientCircuit, DataStream, RelayTarget, StreamOpenError,
};

/// How a client runs.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The directory authorities it trusts (a strict majority must sign the consensus).
    pub authorities: Vec<AuthorityInfo>,
    /// Where to cache the consensus and guard state (`None`: memory only).
    pub data_dir: Option<PathBuf>,
    /// Hops per circuit (2 to 8).
    pub path_len: usize,
    /// A circuit takes new streams for this long after its first one.
    pub max_dirtiness: Duration,
    /// Building one circuit may take this long.
    pub circuit_timeout: Duration,
    /// Opening one stream may take this long.
    pub stream_timeout: Duration,
    /// Circuits kept ready for the first requests.
    pub prebuilt_circuits: usize,
}

impl ClientConfig {
    /// Defaults: 3 hops, 10-minute dirtiness, 2 circuits ready.
    pub fn new(authorities: Vec<AuthorityInfo>) -> Self {
        ClientConfig {
            authorities,
            data_dir: None,
            path_len: 3,
            max_dirtiness: Duration::from_secs(600),
            circuit_timeout: Duration::from_secs(30),
            stream_timeout: Duration::from_secs(60),
            prebuilt_circuits: 2,
        }
    }
}

/// Why the client could not do what was asked.
#[derive(Debug, Error)]
pub enum ClientError {
    /// No usable consensus: the authorities are unreachable and there is no live cache.
    #[error("no usable consensus: {0}")]
    NoConsensus(String),
    /// No circuit could be built.
    #[error("cannot build a circuit: {0}")]
    Circuit(String),
    /// The stream failed to open.
    #[error("{0}")]
    Stream(#[from] StreamOpenError),
    /// The address was not `host:port`.
    #[error("bad address {0:?}: expected host:port")]
    BadAddress(String),
    /// An onion service could not be reached (the message names no address).
    #[error("onion service: {0}")]
    Onion(#[from] super::onion_connect::OnionConnectError),
}

/// Streams sharing an isolation key may share circuits; different keys never do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Isolation(pub Vec<u8>);

struct ReadyCircuit {
    handle: CircuitHandle,
    exit_policy: ExitPolicy,
    /// When it carried its first stream (None: still clean).
    first_used: Option<Instant>,
}

struct Inner {
    config: ClientConfig,
    /// Local addresses of the channels opened so far (the last [`MAX_LOCAL_ADDRS`]).
    local_addrs: Mutex<Vec<std::net::SocketAddr>>,
    /// Onion-service state: descriptor cache and rendezvous circuits per isolation class.
    onion: super::onion_connect::OnionClientState,
    consensus: Mutex<Option<Arc<Consensus>>>,
    guards: Mutex<GuardSet>,
    channels: tokio::sync::Mutex<HashMap<IdentityPublic, Arc<ClientChannel>>>,
    circuits: Mutex<HashMap<Isolation, Vec<ReadyCircuit>>>,
    clean: Mutex<Vec<ReadyCircuit>>,
    /// When the proxy last warned that it has no usable consensus (one line per
    /// [`NO_CONSENSUS_WARN_EVERY`], however many requests fail).
    no_consensus_warned: Mutex<Option<Instant>>,
    /// The guard state last handed to the writer and its generation: a build whose
    /// success changed nothing (the usual case) writes nothing.
    guards_saved: Mutex<(u64, Vec<u8>)>,
    /// The generation last written to disk; held while writing, so writes never overlap
    /// and an older state never replaces a newer one.
    guards_written: Arc<Mutex<u64>>,
}

/// Local channel addresses remembered for diagnostics.
const MAX_LOCAL_ADDRS: usize = 1024;

/// Attempts to open one stream (the first may use an existing circuit, later ones build).
const CONNECT_ATTEMPTS: usize = 3;

/// Relays besides the primary guards asked for the consensus when no guard answers.
const EXTRA_DIR_CACHES: usize = 3;

/// Path draws per circuit build while the drawn path includes a relay to avoid.
const PATH_REDRAWS: usize = 8;

/// At most one "no usable consensus" warning per this interval.
const NO_CONSENSUS_WARN_EVERY: Duration = Duration::from_secs(10);

/// A bootstrapped client. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Client(..)")
    }
}

fn progress(pct: u8, phase: &str) {
    info!("bootstrap {pct}%: {phase}");
}

impl Client {
    /// Fetches and verifies the consensus (or loads a live cached one), picks guards and
    /// builds the first circuits. Progress is logged as `bootstrap NN%: phase`.
    pub async fn bootstrap(config: ClientConfig) -> Result<Client, ClientError> {
        progress(0, "starting");
        let guards = config
            .data_dir
            .as_ref()
            .and_then(|d| GuardSet::load(&d.join("guards"), GuardParams::default()).ok())
            .unwrap_or_else(|| GuardSet::new(GuardParams::default()));
        let client = Client {
            inner: Arc::new(Inner {
                consensus: Mutex::new(None),
                guards: Mutex::new(guards),
                channels: tokio::sync::Mutex::new(HashMap::new()),
                circuits: Mutex::new(HashMap::new()),
                clean: Mutex::new(Vec::new()),
                no_consensus_warned: Mutex::new(None),
                onion: super::onion_connect::OnionClientState::default(),
                local_addrs: Mutex::new(Vec::new()),
                guards_saved: Mutex::new((0, Vec::new())),
                guards_written: Arc::new(Mutex::new(0)),
                config,
            }),
        };
        progress(10, "loading the directory");
        let consensus = client.fetch_consensus().await?;
        progress(
            40,
            &format!(
                "consensus with {} relays verified",
                consensus.relays().len()
            ),
        );
        tokio::spawn(client.clone().refresh_loop());
        progress(60, "building circuits");
        let wanted = client.inner.config.prebuilt_circuits.max(1);
        let mut built = 0;
        for _ in 0..wanted * 2 {
            if built == wanted {
                break;
            }
            match client
                .build_circuit(&PathTarget {
                    port: 443,
                    addr: None,
                })
                .await
            {
                Ok(c) => {
                    lock(&client.inner.clean).push(c);
                    built += 1;
                }
                Err(e) => warn!("bootstrap: a circuit failed: {e}"),
            }
        }
        if built == 0 {
            return Err(ClientError::Circuit("no circuit could be built".into()));
        }
        progress(100, "done");
        Ok(client)
    }

    /// The consensus in use.
    pub fn consensus(&self) -> Option<Arc<Consensus>> {
        lock(&self.inner.consensus).clone()
    }

    fn trusted(&self) -> Vec<IdentityPublic> {
        self.inner
            .config
            .authorities
            .iter()
            .map(|a| a.identity)
            .collect()
    }

    fn cache_path(&self) -> Option<PathBuf> {
        self.inner
            .config
            .data_dir
            .as_ref()
            .map(|d| d.join("consensus"))
    }

    /// Fetches a fresh consensus now (from a guard if possible, else the authorities, else
    /// the disk cache while it is live).
    pub async fn refresh_consensus(&self) -> Result<Arc<Consensus>, ClientError> {
        self.fetch_consensus().await
    }

    /// Asks our primary guards (their directory caches) over one-hop circuits; if none of
    /// them answers (a guard may be down, or hold a stale document), up to
    /// [`EXTRA_DIR_CACHES`] other listed relays chosen at random, as Tor clients fall back
    /// to fallback directories.
    async fn fetch_from_guards(&self, trusted: &[IdentityPublic]) -> Option<Arc<Consensus>> {
        let current = self.consensus()?;
        let now = now_unix();
        let to_target = |e: &ConsensusEntry| {
            Some(RelayTarget {
                addr: *e.addrs.first()?,
                identity: e.identity,
                onion: e.verified_onion_key(now).ok()?,
            })
        };
        let targets: Vec<RelayTarget> = {
            let guards = lock(&self.inner.guards);
            let mut targets: Vec<RelayTarget> = guards
                .primary(&current)
                .into_iter()
                .filter_map(to_target)
                .collect();
            let mut others: Vec<RelayTarget> = current
                .relays()
                .iter()
                .filter(|e| !targets.iter().any(|t| t.identity == e.identity))
                .filter_map(to_target)
                .collect();
            others.shuffle(&mut rand::rng());
            targets.extend(others.into_iter().take(EXTRA_DIR_CACHES));
            targets
        };
        let timeout = self.inner.config.circuit_timeout;
        for t in targets {
            let attempt = async {
                let chan = self.channel_to(&t).await.ok()?;
                let circ = ClientCircuit::create(&chan, &t, timeout).await.ok()?;
                let handle = circ.into_handle();
                let resp = dir_request(&handle, &DirRequest::GetConsensus, timeout).await;
                handle.close().await;
                let resp = resp.ok().filter(|r| r.status == DirStatus::Ok)?;
                let c = UncheckedConsensus::parse(&resp.body)
                    .and_then(|u| u.verify(trusted, now_unix()))
                    .ok()?;
                self.save_cache(&resp.body);
                Some(self.install(c))
            };
            if let Some(c) = attempt.await {
                debug!("client: consensus fetched from a guard");
                return Some(c);
            }
        }
        None
    }

    fn save_cache(&self, bytes: &[u8]) {
        if let Some(path) = self.cache_path() {
            if let Err(e) = std::fs::write(&path, bytes) {
                warn!("cannot cache the consensus at {}: {e}", path.display());
            }
        }
    }

    /// Gets a verified consensus: from a guard, the authorities, else the disk cache.
    async fn fetch_consensus(&self) -> Result<Arc<Consensus>, ClientError> {
        let trusted = self.trusted();
        if let Some(c) = self.fetch_from_guards(&trusted).await {
            return Ok(c);
        }
        let mut authorities = self.inner.config.authorities.clone();
        authorities.shuffle(&mut rand::rng());
        let mut last_err = String::from("no authorities configured");
        for a in &authorities {
            match one_shot(
                a.addr,
                &a.identity,
                &DirRequest::GetConsensus,
                Duration::from_secs(15),
            )
            .await
            {
                Ok(resp) if resp.status == DirStatus::Ok => {
                    match UncheckedConsensus::parse(&resp.body)
                        .and_then(|u| u.verify(&trusted, now_unix()))
                    {
                        Ok(c) => {
                            self.save_cache(&resp.body);
                            return Ok(self.install(c));
                        }
                        Err(e) => last_err = format!("an authority served a bad consensus: {e}"),
                    }
                }
                Ok(resp) => last_err = format!("authority answered: {}", resp.reason()),
                Err(e) => last_err = e.to_string(),
            }
        }
        if let Some(path) = self.cache_path() {
            if let Ok(bytes) = std::fs::read(&path) {
                match UncheckedConsensus::parse(&bytes).and_then(|u| u.verify(&trusted, now_unix()))
                {
                    Ok(c) => {
                        info!("authorities unreachable ({last_err}); using the cached consensus");
                        return Ok(self.install(c));
                    }
                    Err(e) => last_err = format!("{last_err}; cached consensus unusable: {e}"),
                }
            }
        }
        Err(ClientError::NoConsensus(last_err))
    }

    fn install(&self, c: Consensus) -> Arc<Consensus> {
        let c = Arc::new(c);
        *lock(&self.inner.consensus) = Some(Arc::clone(&c));
        c
    }

    async fn refresh_loop(self) {
        loop {
            let at = self
                .consensus()
                .map_or(now_unix() + 30, |c| c.refetch_time(&mut rand::rng()));
            let wait = at.saturating_sub(now_unix()).max(5);
            tokio::time::sleep(Duration::from_secs(wait)).await;
            match self.fetch_consensus().await {
                Ok(c) => debug!("client: consensus refreshed ({} relays)", c.relays().len()),
                Err(e) => warn!("client: cannot refresh the consensus: {e}"),
            }
        }
    }

    async fn channel_to(&self, target: &RelayTarget) -> Result<Arc<ClientChannel>, ClientError> {
        let mut chans = self.inner.channels.lock().await;
        if let Some(c) = chans.get(&target.identity).filter(|c| !c.is_closed()) {
            return Ok(Arc::clone(c));
        }
        let cfg = LinkConfig::default();
        let chan = ClientChannel::connect(target, &cfg)
            .await
            .map_err(|e| ClientError::Circuit(format!("first hop: {e}")))?;
        chans.insert(target.identity, Arc::clone(&chan));
        if let Some(a) = chan.local_addr {
            let mut seen = lock(&self.inner.local_addrs);
            if seen.len() >= MAX_LOCAL_ADDRS {
                seen.remove(0);
            }
            seen.push(a);
        }
        Ok(chan)
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
            .consensus()
            .ok_or_else(|| ClientError::NoConsensus("not bootstrapped".into()))?;
        let now = now_unix();
        if !consensus.is_live(now) {
            return Err(ClientError::NoConsensus(format!(
                "the consensus expired at unix time {} ({} s ago) and no authority or guard \
                 could provide a newer one",
                consensus.valid_until(),
                now.saturating_sub(consensus.valid_until())
            )));
        }
        let (hops, exit_policy) = {
            let mut guards = lock(&self.inner.guards);
            let mut select = || {
                select_path(
                    &consensus,
                    target,
                    &mut guards,
                    self.inner.config.path_len,
                    now,
                    &mut rand::rng(),
                )
                .map_err(|e| ClientError::Circuit(e.to_string()))
            };
            let mut path = select()?;
            // Redraw (a bounded number of times) while a non-guard hop is to be avoided;
            // if no other path turns up, try the last one anyway.
            for _ in 0..PATH_REDRAWS {
                if !path.iter().skip(1).any(|e| avoid.contains(&e.identity)) {
                    break;
                }
                path = select()?;
            }
            let mut hops = Vec::new();
            for e in &path {
                let onion = e
                    .verified_onion_key(now)
                    .map_err(|e| ClientError::Circuit(e.to_string()))?;
                let addr = *e
                    .addrs
                    .first()
                    .ok_or_else(|| ClientError::Circuit("relay without address".into()))?;
                hops.push(RelayTarget {
                    addr,
                    identity: e.identity,
                    onion,
                });
            }
            let policy = path
                .last()
                .map(|e| e.exit_policy.clone())
                .unwrap_or_else(ExitPolicy::reject_all);
            (hops, policy)
        };
        let timeout = self.inner.config.circuit_timeout;
        let first = hops
            .first()
            .ok_or_else(|| ClientError::Circuit("empty path".into()))?;
        // The relay being extended to, while an extension is under way.
        let mut extending: Option<IdentityPublic> = None;
        let t0 = Instant::now();
        let build = async {
            let chan = self.channel_to(first).await?;
            debug!(us = t0.elapsed().as_micros() as u64, "build: channel");
            let mut circ = ClientCircuit::create(&chan, first, timeout)
                .await
                .map_err(|e| ClientError::Circuit(e.to_string()))?;
            debug!(us = t0.elapsed().as_micros() as u64, "build: created");
            for hop in hops.iter().skip(1) {
                extending = Some(hop.identity);
                circ.extend(hop, timeout)
                    .await
                    .map_err(|e| ClientError::Circuit(e.to_string()))?;
                debug!(us = t0.elapsed().as_micros() as u64, "build: extended");
            }
            Ok::<_, ClientError>(circ)
        };
        let result = tokio::time::timeout(timeout, build)
            .await
            .map_err(|_| ClientError::Circuit("circuit build timed out".into()))
            .and_then(|r| r);
        let mut guards = lock(&self.inner.guards);
        match result {
            Ok(circ) => {
                guards.mark_success(&first.identity);
                self.save_guards(&guards);
                Ok(ReadyCircuit {
                    handle: circ.into_handle(),
                    exit_policy,
                    first_used: None,
                })
            }
            Err(e) => {
                match extending {
                    // The guard answered and extended: it did its job. Counting this
                    // against it would let any later hop push the client off its guard.
                    Some(id) => {
                        if !avoid.contains(&id) {
                            avoid.push(id);
                        }
                    }
                    None => guards.mark_failed(&first.identity, now),
                }
                Err(e)
            }
        }
    }

    /// The client's onion-service state.
    pub(crate) fn onion_state(&self) -> &super::onion_connect::OnionClientState {
        &self.inner.onion
    }

    /// The client's configuration.
    pub(crate) fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The consensus, if it is live now.
    pub(crate) fn live_consensus(&self) -> Result<Arc<Consensus>, ClientError> {
        let consensus = self
            .consensus()
            .ok_or_else(|| ClientError::NoConsensus("not bootstrapped".into()))?;
        if !consensus.is_live(now_unix()) {
            return Err(ClientError::NoConsensus("the consensus expired".into()));
        }
        Ok(consensus)
    }

    /// Builds a circuit (of the configured length) whose last hop is `last`, a relay the
    /// caller chose: an onion service's introduction point, rendezvous point or descriptor
    /// directory. The other hops come from the consensus and never conflict with `last`
    /// when it is listed. The circuit is returned unstarted so the caller can exchange
    /// onion-service messages on it first.
    pub(crate) async fn build_circuit_ending(
        &self,
        last: &RelayTarget,
    ) -> Result<ClientCircuit, ClientError> {
        let consensus = self.live_consensus()?;
        let now = now_unix();
        let mut hops = {
            let mut guards = lock(&self.inner.guards);
            let prefix = crate::dir::path::select_path_prefix(
                &consensus,
                consensus.relay(&last.identity),
                &mut guards,
                self.inner.config.path_len,
                now,
                &mut rand::rng(),
            )
            .map_err(|e| ClientError::Circuit(e.to_string()))?;
            prefix
                .iter()
                .map(|e| relay_target(e, now))
                .collect::<Result<Vec<_>, _>>()?
        };
        hops.push(last.clone());
        let timeout = self.inner.config.circuit_timeout;
        let first = hops
            .first()
            .ok_or_else(|| ClientError::Circuit("empty path".into()))?;
        let mut extended_past_guard = false;
        let build = async {
            let chan = self.channel_to(first).await?;
            let mut circ = ClientCircuit::create(&chan, first, timeout)
                .await
                .map_err(|e| ClientError::Circuit(e.to_string()))?;
            for hop in hops.iter().skip(1) {
                extended_past_guard = true;
                circ.extend(hop, timeout)
                    .await
                    .map_err(|e| ClientError::Circuit(e.to_string()))?;
            }
            Ok::<_, ClientError>(circ)
        };
        let result = tokio::time::timeout(timeout, build)
            .await
            .map_err(|_| ClientError::Circuit("circuit build timed out".into()))
            .and_then(|r| r);
        let mut guards = lock(&self.inner.guards);
        match &result {
            Ok(_) => {
                guards.mark_success(&first.identity);
                self.save_guards(&guards);
            }
            // As in `build_circuit_avoiding`: a later hop's failure is not the guard's.
            Err(_) if !extended_past_guard => guards.mark_failed(&first.identity, now),
            Err(_) => {}
        }
        result
    }

    /// Persists the guard state if it changed since the last save. The write (two fsyncs,
    /// milliseconds on a busy disk) runs on a blocking thread: done inline it stalled a
    /// runtime worker and, under the guards lock, every other circuit build, on every
    /// successful build (most of the measured fresh-circuit latency).
    fn save_guards(&self, guards: &GuardSet) {
        let Some(dir) = &self.inner.config.data_dir else {
            return;
        };
        let path = dir.join("guards");
        let bytes = match guards.encode_state(&path) {
            Ok(b) => b,
            Err(e) => {
                warn!("cannot save the guard state: {e}");
                return;
            }
        };
        let generation = {
            let mut saved = lock(&self.inner.guards_saved);
            if saved.1 == bytes {
                return;
            }
            saved.0 += 1;
            saved.1.clone_from(&bytes);
            saved.0
        };
        let written = Arc::clone(&self.inner.guards_written);
        tokio::task::spawn_blocking(move || {
            let mut done = lock(&written);
            if *done >= generation {
                return; // a newer state is already on disk
            }
            match crate::dir::guards::write_state(&path, &bytes) {
                Ok(()) => *done = generation,
                Err(e) => warn!("cannot save the guard state: {e}"),
            }
        });
    }

    /// Opens a stream to `host:port` (names are resolved by the exit).
    pub async fn connect(&self, addr: &str) -> Result<DataStream, ClientError> {
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| ClientError::BadAddress(addr.to_string()))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| ClientError::BadAddress(addr.to_string()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let target = match host.parse::<IpAddr>() {
            Ok(ip) => TargetAddr::Ip(ip),
            Err(_) => TargetAddr::Hostname(
                Hostname::new(host).map_err(|_| ClientError::BadAddress(addr.to_string()))?,
            ),
        };
        self.connect_target(target, port, &Isolation::default())
            .await
    }

    /// Opens a stream to `target:port` on a circuit of isolation class `isolation`. A
    /// failure other than an exit-policy refusal is retried on fresh circuits
    /// (`CONNECT_ATTEMPTS`, 3, attempts in all), whose paths avoid the relays this request's
    /// failed builds could not be extended to.
    pub async fn connect_target(
        &self,
        target: TargetAddr,
        port: u16,
        isolation: &Isolation,
    ) -> Result<DataStream, ClientError> {
        if let TargetAddr::Hostname(name) = &target {
            if super::onion_connect::is_onion_host(name.as_str()) {
                return super::onion_connect::connect(self, name.as_str(), port, isolation).await;
            }
        }
        let ip = match &target {
            TargetAddr::Ip(ip) => Some(*ip),
            TargetAddr::Hostname(_) => None,
        };
        let mut last = None;
        let mut avoid = Vec::new();
        let t0 = Instant::now();
        for attempt in 0..CONNECT_ATTEMPTS {
            let circ = match self
                .circuit_for(isolation, port, ip, attempt > 0, &mut avoid)
                .await
            {
                Ok(c) => c,
                // Retrying cannot help until a live consensus arrives.
                Err(e @ ClientError::NoConsensus(_)) => return Err(e),
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            debug!(us = t0.elapsed().as_micros() as u64, "connect: circuit");
            match circ
                .open_stream(target.clone(), port, self.inner.config.stream_timeout)
                .await
            {
                Ok(s) => {
                    debug!(us = t0.elapsed().as_micros() as u64, "connect: stream open");
                    return Ok(s);
                }
                Err(StreamOpenError::Refused(EndReason::ExitPolicy)) if attempt == 0 => {
                    last = Some(ClientError::Stream(StreamOpenError::Refused(
                        EndReason::ExitPolicy,
                    )));
                }
                Err(e @ StreamOpenError::Refused(_)) => return Err(e.into()),
                Err(e) => last = Some(e.into()),
            }
        }
        Err(last.unwrap_or(ClientError::Circuit("no circuit".into())))
    }

    async fn circuit_for(
        &self,
        isolation: &Isolation,
        port: u16,
        ip: Option<IpAddr>,
        fresh: bool,
        avoid: &mut Vec<IdentityPublic>,
    ) -> Result<CircuitHandle, ClientError> {
        let dirtiness = self.inner.config.max_dirtiness;
        let suits = |c: &ReadyCircuit| {
            !c.handle.is_closed()
                && match ip {
                    Some(ip) => c.exit_policy.allows_ip(ip, port),
                    None => c.exit_policy.might_allow_port(port),
                }
        };
        if !fresh {
            let mut map = lock(&self.inner.circuits);
            let list = map.entry(isolation.clone()).or_default();
            // Circuits past their dirtiness take no new streams; they close once their
            // streams are done.
            let (keep, expired): (Vec<_>, Vec<_>) =
                std::mem::take(list).into_iter().partition(|c| {
                    !c.handle.is_closed() && c.first_used.is_none_or(|t| t.elapsed() < dirtiness)
                });
            *list = keep;
            for c in expired {
                tokio::spawn(async move { c.handle.retire().await });
            }
            if let Some(c) = list.iter().find(|c| suits(c)) {
                return Ok(c.handle.clone());
            }
            // A prebuilt clean circuit, if one fits.
            let mut clean = lock(&self.inner.clean);
            clean.retain(|c| !c.handle.is_closed());
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
        let mut c = self
            .build_circuit_avoiding(&PathTarget { port, addr: ip }, avoid)
            .await?;
        c.first_used = Some(Instant::now());
        let handle = c.handle.clone();
        lock(&self.inner.circuits)
            .entry(isolation.clone())
            .or_default()
            .push(c);
        Ok(handle)
    }

    /// Builds a clean circuit in the background to replace one just taken.
    fn replenish(&self) {
        let me = self.clone();
        tokio::spawn(async move {
            if lock(&me.inner.clean).len() >= me.inner.config.prebuilt_circuits {
                return;
            }
            if let Ok(c) = me
                .build_circuit(&PathTarget {
                    port: 443,
                    addr: None,
                })
                .await
            {
                lock(&me.inner.clean).push(c);
            }
        });
    }

    /// Diagnostics: for each isolation class, the ids (first-hop circuit ids) of the open
    /// circuits it uses. Two classes never share a circuit.
    pub fn circuits_by_isolation(&self) -> Vec<(Isolation, Vec<u32>)> {
        let map = lock(&self.inner.circuits);
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

    /// Diagnostics: the local addresses of the channels this client opened to its first
    /// hops (the last 1024; the addresses relays see as this client's). Tests use it to
    /// check that no relay but a first hop ever sees them.
    pub fn channel_local_addrs(&self) -> Vec<std::net::SocketAddr> {
        lock(&self.inner.local_addrs).clone()
    }

    /// NEWNYM: no new stream will use any existing circuit; later streams get new paths.
    pub async fn new_identity(&self) {
        let old: Vec<ReadyCircuit> = {
            let mut map = lock(&self.inner.circuits);
            let mut all: Vec<ReadyCircuit> = map.drain().flat_map(|(_, v)| v).collect();
            all.extend(lock(&self.inner.clean).drain(..));
            all
        };
        for c in old {
            c.handle.close().await;
        }
        self.replenish();
        info!("new identity: every circuit closed; new streams use new circuits");
    }
}

/// A consensus entry as a circuit hop (its onion-key certificate verified now).
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
        identity: e.identity,
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

impl super::socks_server::Connector for Client {
    fn connect(
        &self,
        target: TargetAddr,
        port: u16,
        isolation: super::socks_server::IsolationKey,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<DataStream, StreamOpenError>> + Send + '_>,
    > {
        Box::pin(async move {
            let iso = Isolation::from_proxy(&isolation);
            match self.connect_target(target, port, &iso).await {
                Ok(s) => Ok(s),
                Err(ClientError::Stream(e)) => Err(e),
                Err(ClientError::Onion(e)) => {
                    // The reason (a mistyped address, an unreachable service) names
                    // neither the address nor the client; the user must see it.
                    info!("proxy: onion service connection failed: {e}");
                    Err(e.stream_error())
                }
                Err(e @ ClientError::NoConsensus(_)) => {
                    // The user must learn why every request fails; the message names no
                    // destination. Rate-limited so failing requests cannot flood the log.
                    let mut last = lock(&self.inner.no_consensus_warned);
                    if last.is_none_or(|t| t.elapsed() >= NO_CONSENSUS_WARN_EVERY) {
                        *last = Some(Instant::now());
                        warn!("proxy: cannot open streams: {e}");
                    }
                    Err(StreamOpenError::NoConsensus)
                }
                Err(e) => {
                    debug!("proxy: stream failed: {e}");
                    Err(StreamOpenError::CircuitClosed)
                }
            }
        })
    }
}
