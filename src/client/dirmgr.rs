//! The client's directory manager: gets a verified consensus (from a guard's cache, the
//! authorities, else the disk cache), keeps it, and refreshes it before it goes stale.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::seq::SliceRandom;
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::crypto::IdentityPublic;
use crate::dir::request::DirRequest;
use crate::dir::{AuthorityInfo, Consensus, ConsensusEntry, ConsensusError, UncheckedConsensus};
use crate::proto::dir_fetch::{fetch_consensus_from, Fetched};
use crate::proto::dirclient::{dir_request, one_shot_timed};
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
        DirMgr {
            authorities,
            data_dir,
            circuit_timeout,
            consensus: Mutex::new(None),
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
    ) -> Result<Consensus, ConsensusError> {
        UncheckedConsensus::parse(bytes).and_then(|u| self.check_now(u, time_refused))
    }

    /// [`Self::verify_now`] for a parsed (or diff-rebuilt) consensus.
    fn check_now(
        &self,
        u: UncheckedConsensus,
        time_refused: &AtomicBool,
    ) -> Result<Consensus, ConsensusError> {
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

    /// Asks our primary guards (their directory caches) over one-hop circuits; if none of
    /// them answers (a guard may be down, or hold a stale document), up to
    /// [`EXTRA_DIR_CACHES`] other listed relays chosen at random, as Tor clients fall back
    /// to fallback directories.
    async fn fetch_from_guards(&self, time_refused: &AtomicBool) -> Option<Arc<Consensus>> {
        let current = self.consensus()?;
        let now = self.clock.now_unix();
        let to_target = |e: &ConsensusEntry| {
            Some(RelayTarget {
                addr: *e.addrs.first()?,
                identity: e.identity,
                onion: e.verified_onion_key(now).ok()?,
            })
        };
        let targets: Vec<RelayTarget> = {
            let guards = self.guards.lock();
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
        let timeout = self.circuit_timeout;
        for t in targets {
            let attempt = async {
                let chan = self.channels.channel_to(&t).await.ok()?;
                let circ = ClientCircuit::create(&chan, &t, timeout).await.ok()?;
                let handle = circ.into_handle();
                let h = &handle;
                let fetched = fetch_consensus_from(
                    Some(&current),
                    |req| async move { dir_request(h, &req, timeout).await.ok() },
                    |u| self.check_now(u, time_refused),
                )
                .await;
                handle.close().await;
                let fetched = fetched.ok()?;
                self.note_fetch(&fetched);
                Some(self.install(fetched.consensus))
            };
            if let Some(c) = attempt.await {
                debug!("client: consensus fetched from a guard");
                return Some(c);
            }
        }
        None
    }

    /// Logs how a consensus came and caches it on disk.
    fn note_fetch(&self, f: &Fetched) {
        if let Some(why) = &f.refused_diff {
            warn!("client: a directory server sent a consensus diff that was refused ({why}); fetched the full consensus");
        }
        debug!(
            via_diff = f.via_diff,
            bytes = f.bytes,
            "client: consensus fetched"
        );
        if let Ok(bytes) = f.consensus.signed().to_bytes() {
            self.save_cache(&bytes);
        }
    }

    fn save_cache(&self, bytes: &[u8]) {
        if let Some(path) = self.cache_path() {
            if let Err(e) = std::fs::write(&path, bytes) {
                warn!("cannot cache the consensus at {}: {e}", path.display());
            }
        }
    }

    /// Gets a verified consensus: from a guard, the authorities, else the disk cache.
    pub async fn fetch_consensus(&self) -> Result<Arc<Consensus>, ClientError> {
        let time_refused = AtomicBool::new(false);
        if let Some(c) = self.fetch_from_guards(&time_refused).await {
            return Ok(c);
        }
        let mut authorities = self.authorities.clone();
        authorities.shuffle(&mut rand::rng());
        let mut last_err = String::from("no authorities configured");
        let current = self.consensus();
        for a in &authorities {
            let ask = |req: DirRequest| async move {
                let answer = one_shot_timed(
                    a.addr,
                    &a.identity,
                    &req,
                    Duration::from_secs(15),
                    &self.clock,
                )
                .await;
                match answer {
                    Ok((resp, peer_time)) => {
                        self.skew
                            .record(a.identity, peer_time, self.clock.now_unix());
                        Some(resp)
                    }
                    Err(e) => {
                        debug!("client: authority unreachable: {e}");
                        None
                    }
                }
            };
            let fetched = fetch_consensus_from(current.as_deref(), ask, |u| {
                self.check_now(u, &time_refused)
            })
            .await;
            match fetched {
                Ok(f) => {
                    self.note_fetch(&f);
                    return Ok(self.install(f.consensus));
                }
                Err(e) if time_refused.load(Ordering::Relaxed) => {
                    last_err = format!("refused the authorities' consensus at our clock: {e}")
                }
                Err(e) => last_err = format!("authority: {e}"),
            }
        }
        if let Some(path) = self.cache_path() {
            if let Ok(bytes) = std::fs::read(&path) {
                match self.verify_now(&bytes, &time_refused) {
                    Ok(c) => {
                        info!("authorities unreachable ({last_err}); using the cached consensus");
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
        *lock(&self.consensus) = Some(Arc::clone(&c));
        c
    }
}
