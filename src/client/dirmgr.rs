//! The client's directory manager: gets a verified consensus (from a guard's cache, the
//! authorities, else the disk cache) and the microdescriptors it lists that the client
//! lacks (only those of relays that changed since the previous consensus), assembles
//! them, keeps the result, and refreshes it before it goes stale.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::seq::SliceRandom;
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::crypto::IdentityPublic;
use crate::dir::microdesc::{MicrodescDigest, MicrodescIndex};
use crate::dir::request::{DirRequest, DirResponse};
use crate::dir::{
    AuthorityInfo, Consensus, ConsensusEntry, ConsensusError, UncheckedConsensus, VerifiedConsensus,
};
use crate::proto::dir_fetch::fetch_consensus_from;
use crate::proto::dirclient::{dir_request, fetch_microdescs, DirFetchError, DirSession};
use crate::proto::{ClientCircuit, RelayTarget};
use crate::sync::lock;

use super::chanmgr::ChanMgr;
use super::error::ClientError;
use super::guardmgr::GuardMgr;
use super::skew::SkewTracker;

/// Relays besides the primary guards asked for the consensus when no guard answers.
const EXTRA_DIR_CACHES: usize = 3;

/// The consensus in use and where to get the next one.
pub struct DirMgr {
    /// The directory authorities trusted (a strict majority must sign the consensus).
    authorities: Vec<AuthorityInfo>,
    /// Where the consensus is cached (`None`: memory only).
    data_dir: Option<PathBuf>,
    /// A fetch from a guard's cache may take this long (a circuit build's limit).
    circuit_timeout: Duration,
    consensus: Mutex<Option<Arc<Consensus>>>,
    /// The microdescriptors of the consensus in use (reused by the next one).
    microdescs: Mutex<Arc<MicrodescIndex>>,
    channels: Arc<ChanMgr>,
    guards: Arc<GuardMgr>,
    clock: Clock,
    /// The network's clocks as relays and authorities showed them (NETINFO).
    skew: Arc<SkewTracker>,
    /// Notified when a request found no live consensus: the upkeep task retries sooner.
    wanted: tokio::sync::Notify,
}

impl std::fmt::Debug for DirMgr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DirMgr { .. }")
    }
}

impl DirMgr {
    /// A manager with no consensus yet.
    pub fn new(
        authorities: Vec<AuthorityInfo>,
        data_dir: Option<PathBuf>,
        circuit_timeout: Duration,
        channels: Arc<ChanMgr>,
        guards: Arc<GuardMgr>,
        clock: Clock,
        skew: Arc<SkewTracker>,
    ) -> Self {
        // The microdescriptors cached on disk (each still checked against its digest when
        // a consensus is assembled): a restarted client fetches only what changed.
        let cached = data_dir
            .as_ref()
            .and_then(|d| std::fs::read(d.join(MICRODESC_CACHE_FILE)).ok())
            .and_then(|b| MicrodescIndex::from_file_bytes(&b).ok())
            .unwrap_or_default();
        DirMgr {
            authorities,
            data_dir,
            circuit_timeout,
            consensus: Mutex::new(None),
            microdescs: Mutex::new(Arc::new(cached)),
            channels,
            guards,
            clock,
            skew,
            wanted: tokio::sync::Notify::new(),
        }
    }

    /// Says a request needed a live consensus and found none (the upkeep task then retries
    /// its fetch without waiting out its whole back-off).
    pub fn want_consensus(&self) {
        self.wanted.notify_one();
    }

    /// Resolves once a request found no live consensus since the last call.
    pub async fn consensus_wanted(&self) {
        self.wanted.notified().await;
    }

    /// Forgets the peers' clock samples (after a wall-clock jump, they describe the clock
    /// as it read before).
    pub(crate) fn forget_clock_samples(&self) {
        self.skew.forget_all();
    }

    /// The client's clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The consensus in use.
    pub fn consensus(&self) -> Option<Arc<Consensus>> {
        lock(&self.consensus).clone()
    }

    /// The consensus, if it is live now.
    pub fn live_consensus(&self) -> Result<Arc<Consensus>, ClientError> {
        let consensus = self
            .consensus()
            .ok_or_else(|| ClientError::NoConsensus("not bootstrapped".into()))?;
        if !consensus.is_usable(self.clock.now_unix()) {
            self.want_consensus();
            return Err(ClientError::NoConsensus("the consensus expired".into()));
        }
        Ok(consensus)
    }

    /// When the consensus should next be fetched (Unix seconds): its refetch time, or now
    /// if there is none or it is no longer live.
    pub fn next_refetch(&self) -> u64 {
        let now = self.clock.now_unix();
        match self.consensus() {
            Some(c) if c.is_usable(now) => c.refetch_time(&mut rand::rng()),
            _ => now,
        }
    }

    /// Verifies `bytes` as a consensus at our clock. A refusal for its time is noted in
    /// `time_refused` and, if the network's clocks say ours is wrong, warned about.
    fn verify_now(
        &self,
        bytes: &[u8],
        time_refused: &AtomicBool,
    ) -> Result<VerifiedConsensus, ConsensusError> {
        UncheckedConsensus::parse(bytes).and_then(|u| self.check_now(u, time_refused))
    }

    /// [`Self::verify_now`] for a parsed (or diff-rebuilt) consensus.
    fn check_now(
        &self,
        u: UncheckedConsensus,
        time_refused: &AtomicBool,
    ) -> Result<VerifiedConsensus, ConsensusError> {
        let result = u.verify(&self.trusted(), self.clock.now_unix());
        if let Err(e) = &result {
            if e.is_time() {
                time_refused.store(true, Ordering::Relaxed);
                self.skew.warn_if_wrong();
            }
        }
        result
    }

    fn trusted(&self) -> Vec<IdentityPublic> {
        self.authorities.iter().map(|a| a.identity).collect()
    }

    fn cache_path(&self) -> Option<PathBuf> {
        self.data_dir.as_ref().map(|d| d.join("consensus"))
    }

    fn microdesc_cache_path(&self) -> Option<PathBuf> {
        self.data_dir.as_ref().map(|d| d.join(MICRODESC_CACHE_FILE))
    }

    /// Asks one directory (through `ask`) for what `fetch` still lacks: the consensus if
    /// none verified yet, then the microdescriptors missing. Failures are noted in
    /// `fetch.last_err`; microdescriptors that do not match their digest are refused by
    /// [`fetch_microdescs`] (another directory is asked for them).
    async fn fetch_from<F, Fut>(&self, ask: F, fetch: &mut Fetch, time_refused: &AtomicBool)
    where
        F: Fn(DirRequest) -> Fut,
        Fut: std::future::Future<Output = Result<DirResponse, DirFetchError>>,
    {
        if fetch.got.is_none() {
            // A diff from the consensus in use if the directory has one (checked after
            // applying: digest, then signatures), else the compressed document.
            // Ours while usable: the base of a diff, and no older consensus is accepted
            // (a directory cannot roll us back; the next one is asked).
            let now = self.clock.now_unix();
            let current = self.consensus().filter(|c| c.is_usable(now));
            let fetched = fetch_consensus_from(
                current.as_deref(),
                |req| {
                    let ask = &ask;
                    async move { ask(req).await.ok() }
                },
                |u| self.check_now(u, time_refused),
            )
            .await;
            match fetched {
                Ok(f) => {
                    if let Some(why) = &f.refused_diff {
                        warn!(
                            "client: a directory server sent a consensus diff that was refused \
                             ({why}); fetched the full consensus"
                        );
                    }
                    debug!(
                        via_diff = f.via_diff,
                        bytes = f.bytes,
                        "client: consensus fetched"
                    );
                    match f.consensus.signed().to_bytes() {
                        Ok(bytes) => fetch.got = Some((f.consensus, bytes)),
                        Err(e) => {
                            fetch.last_err = format!("cannot encode the consensus: {e}");
                            return;
                        }
                    }
                }
                Err(e) if time_refused.load(Ordering::Relaxed) => {
                    fetch.last_err = format!("refused the consensus at our clock: {e}");
                    return;
                }
                Err(e) => {
                    fetch.last_err = e;
                    return;
                }
            }
        }
        let missing = fetch.missing();
        if !missing.is_empty() {
            if let Err(e) = fetch_microdescs(&ask, &missing, &mut fetch.fetched).await {
                debug!("client: microdescriptor fetch stopped: {e}");
            }
        }
    }

    /// Assembles what `fetch` got (relays whose microdescriptor is still missing are left
    /// out), caches it on disk and installs it.
    fn finish(&self, fetch: Fetch) -> Option<Arc<Consensus>> {
        let (verified, bytes) = fetch.got?;
        let (have, fetched) = (fetch.have, fetch.fetched);
        let c = verified.assemble(&[&have, &fetched]);
        // Directories that withhold chosen microdescriptors would shape the view (paths,
        // the onion-service hash ring): while ours is usable, a new consensus missing more
        // than 1 in MAX_MISSING_SHARE_DENOMINATOR of them is not installed (the next fetch tries again).
        let listed = c.verified().listed().len();
        if c.missing_microdescs() * MAX_MISSING_SHARE_DENOMINATOR > listed {
            if let Some(cur) = self.consensus() {
                if cur.is_usable(self.clock.now_unix()) {
                    warn!(
                        missing = c.missing_microdescs(),
                        listed,
                        "client: too many microdescriptors missing; keeping the consensus in use"
                    );
                    return Some(cur);
                }
            }
        }
        if c.missing_microdescs() > 0 {
            warn!(
                missing = c.missing_microdescs(),
                "client: some relays' microdescriptors could not be fetched; they are not used"
            );
        }
        self.save_cache(&bytes, &c);
        Some(self.install(c))
    }

    /// Asks our primary guards (their directory caches) over one-hop circuits; if none of
    /// them answers (a guard may be down, or hold a stale document), up to
    /// [`EXTRA_DIR_CACHES`] other listed relays chosen at random, as Tor clients fall back
    /// to fallback directories.
    async fn fetch_from_guards(&self, time_refused: &AtomicBool) -> Option<Arc<Consensus>> {
        let current = self.consensus()?;
        let now = self.clock.now_unix();
        // Verifying the certificate validates the listed identity too.
        let to_target = |e: &ConsensusEntry| {
            let onion = e.verified_onion_key(now).ok()?;
            Some(RelayTarget {
                addr: *e.addrs.first()?,
                identity: *onion.identity(),
                onion,
            })
        };
        let targets: Vec<RelayTarget> = {
            let guards = self.guards.lock();
            let mut targets: Vec<RelayTarget> = guards
                .primary(&current)
                .into_iter()
                .filter_map(to_target)
                .collect();
            let mut others: Vec<&ConsensusEntry> = current
                .relays()
                .iter()
                .filter(|e| !targets.iter().any(|t| t.identity == e.identity))
                .collect();
            // Shuffled first, so only the relays tried have their certificate verified.
            others.shuffle(&mut rand::rng());
            targets.extend(
                others
                    .into_iter()
                    .filter_map(to_target)
                    .take(EXTRA_DIR_CACHES),
            );
            targets
        };
        let timeout = self.circuit_timeout;
        let mut fetch = Fetch::new(self.known_microdescs());
        for t in targets {
            let attempt = async {
                let chan = self.channels.channel_to(&t).await.ok()?;
                let circ = ClientCircuit::create(&chan, &t, timeout).await.ok()?;
                let handle = circ.into_handle();
                let ask = |req: DirRequest| {
                    let handle = &handle;
                    async move { dir_request(handle, &req, timeout).await }
                };
                self.fetch_from(ask, &mut fetch, time_refused).await;
                handle.close().await;
                Some(())
            };
            attempt.await;
            if fetch.complete() {
                debug!("client: consensus fetched from a guard");
                break;
            }
        }
        self.finish(fetch)
    }

    fn save_cache(&self, bytes: &[u8], c: &Consensus) {
        if let Some(path) = self.cache_path() {
            if let Err(e) = std::fs::write(&path, bytes) {
                warn!("cannot cache the consensus at {}: {e}", path.display());
            }
        }
        if let Some(path) = self.microdesc_cache_path() {
            if let Err(e) = std::fs::write(&path, c.microdescs().to_file_bytes()) {
                warn!(
                    "cannot cache the microdescriptors at {}: {e}",
                    path.display()
                );
            }
        }
    }

    /// The microdescriptors cached on disk (none if the file is missing or malformed).
    fn load_microdesc_cache(&self) -> MicrodescIndex {
        self.microdesc_cache_path()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| MicrodescIndex::from_file_bytes(&b).ok())
            .unwrap_or_default()
    }

    /// The microdescriptors of the consensus in use.
    fn known_microdescs(&self) -> Arc<MicrodescIndex> {
        Arc::clone(&lock(&self.microdescs))
    }

    /// Gets a verified consensus: from a guard, the authorities, else the disk cache.
    pub async fn fetch_consensus(&self) -> Result<Arc<Consensus>, ClientError> {
        let time_refused = AtomicBool::new(false);
        if let Some(c) = self.fetch_from_guards(&time_refused).await {
            return Ok(c);
        }
        let mut authorities = self.authorities.clone();
        authorities.shuffle(&mut rand::rng());
        let mut fetch = Fetch::new(self.known_microdescs());
        for a in &authorities {
            let session =
                match DirSession::open(a.addr, &a.identity, Duration::from_secs(15), &self.clock)
                    .await
                {
                    Ok(s) => s,
                    Err(e) => {
                        fetch.last_err = e.to_string();
                        continue;
                    }
                };
            self.skew
                .record(a.identity, session.peer_time(), self.clock.now_unix());
            let ask = |req: DirRequest| {
                let session = &session;
                async move { session.request(&req).await }
            };
            self.fetch_from(ask, &mut fetch, &time_refused).await;
            session.close().await;
            if fetch.complete() {
                break;
            }
        }
        let mut last_err = fetch.last_err.clone();
        if let Some(c) = self.finish(fetch) {
            return Ok(c);
        }
        if let Some(path) = self.cache_path() {
            if let Ok(bytes) = std::fs::read(&path) {
                match self.verify_now(&bytes, &time_refused) {
                    Ok(v) => {
                        info!("authorities unreachable ({last_err}); using the cached consensus");
                        let c = v.assemble_from(&self.load_microdesc_cache());
                        return Ok(self.install(c));
                    }
                    Err(e) => last_err = format!("{last_err}; cached consensus unusable: {e}"),
                }
            }
        }
        if time_refused.load(Ordering::Relaxed) {
            if let Some(verdict) = self.skew.verdict() {
                last_err = format!("{last_err}; {verdict}");
            }
        }
        Err(ClientError::NoConsensus(last_err))
    }

    fn install(&self, c: Consensus) -> Arc<Consensus> {
        let c = Arc::new(c);
        *lock(&self.microdescs) = Arc::new(c.microdescs());
        *lock(&self.consensus) = Some(Arc::clone(&c));
        c
    }
}

/// A new consensus is not installed over a usable one while more than one listed relay in
/// this many lacks its microdescriptor (5 %).
const MAX_MISSING_SHARE_DENOMINATOR: usize = 20;

/// The client's microdescriptor cache, beside the consensus in its data directory.
const MICRODESC_CACHE_FILE: &str = "microdescs";

/// One consensus fetch in progress, over one directory after another.
struct Fetch {
    /// The verified consensus and its signed bytes, once a directory served one.
    got: Option<(VerifiedConsensus, Vec<u8>)>,
    /// Microdescriptors the client already had (the previous consensus's).
    have: Arc<MicrodescIndex>,
    /// Microdescriptors fetched (each checked against its digest).
    fetched: MicrodescIndex,
    /// Why the last directory failed.
    last_err: String,
}

impl Fetch {
    fn new(have: Arc<MicrodescIndex>) -> Self {
        Fetch {
            got: None,
            have,
            fetched: MicrodescIndex::new(),
            last_err: String::from("no directory answered"),
        }
    }

    /// The listed microdescriptors neither had nor fetched yet.
    fn missing(&self) -> Vec<MicrodescDigest> {
        self.got.as_ref().map_or_else(Vec::new, |(v, _)| {
            v.missing(|d| self.have.contains(d) || self.fetched.contains(d))
        })
    }

    /// Whether a consensus and all its microdescriptors are in hand.
    fn complete(&self) -> bool {
        self.got.is_some() && self.missing().is_empty()
    }
}
