//! A relay's directory cache: it fetches the consensus (as a diff from the one it has when
//! it can) and the microdescriptors it lists from the authorities, verifies them, and
//! serves both to clients over BEGIN_DIR (the consensus plain, compressed, or as a diff
//! from one of the last 24: [`ConsensusStore`]), so clients need not all ask the
//! authorities. It also stores onion-service descriptors
//! ([`super::hsdir`]).

use crate::clock::Clock;
use crate::sync::lock;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::crypto::IdentityPublic;
use crate::dir::consensus_store::SharedStore;
use crate::dir::microdesc::MicrodescIndex;
use crate::dir::request::{DirRequest, DirResponse, DirStatus, MAX_DIR_BODY};
use crate::dir::{Consensus, ConsensusError, UncheckedConsensus};
use crate::proto::dirclient::{fetch_consensus, DirFetchError};

use super::dirserve::{DirContext, DirService};
use super::hsdir::HsDirStore;
use crate::dir::AuthorityInfo;

/// First wait before asking the authorities again when none has a consensus yet; it
/// doubles up to [`MAX_RETRY_SECS`] until one has.
const FIRST_RETRY_SECS: u64 = 2;
/// Longest wait between those tries (a short test network's first consensus is a few
/// periods of seconds away, so the cache lags it by at most this).
const MAX_RETRY_SECS: u64 = 8;

/// The cache. Serve it with [`super::RelayHandle::set_dir_service`].
#[derive(Debug)]
pub struct DirCache {
    authorities: Vec<AuthorityInfo>,
    /// The newest verified consensus and the recent ones diffs start from.
    store: SharedStore,
    /// The newest verified consensus, to ask for diffs from.
    current: Mutex<Option<Arc<Consensus>>>,
    /// The microdescriptors that consensus lists (the ones fetched and matching).
    microdescs: Mutex<Arc<MicrodescIndex>>,
    /// Onion-service descriptors uploaded to this relay (§8.3).
    hsdir: Arc<HsDirStore>,
    /// The relay's clock (consensus validity, descriptor lifetimes, refresh times).
    clock: Clock,
}

impl DirCache {
    /// Starts a cache that refreshes from `authorities`, reading time from `clock` (the
    /// relay's).
    pub fn start(authorities: Vec<AuthorityInfo>, clock: Clock) -> Arc<Self> {
        let cache = Arc::new(DirCache {
            authorities,
            store: SharedStore::default(),
            current: Mutex::new(None),
            microdescs: Mutex::new(Arc::new(MicrodescIndex::new())),
            hsdir: Arc::new(HsDirStore::default()),
            clock,
        });
        tokio::spawn(Arc::clone(&cache).refresh_loop());
        cache
    }

    fn trusted(&self) -> Vec<IdentityPublic> {
        self.authorities.iter().map(|a| a.identity).collect()
    }

    /// Verifies `bytes` as a consensus signed by the configured authorities and, if it
    /// is good, assembles it with the matching microdescriptors of `mds`, serves both from
    /// now on and gives the consensus to the descriptor store (whose ring check needs it).
    /// The refresh loop feeds every consensus it fetches through here; tests may feed one
    /// directly.
    pub fn offer_consensus(
        &self,
        bytes: Vec<u8>,
        mds: &MicrodescIndex,
    ) -> Result<Arc<Consensus>, ConsensusError> {
        let c = UncheckedConsensus::parse(&bytes)?
            .verify(&self.trusted(), self.clock.now_unix())?
            .assemble_from(mds);
        Ok(self.install(c))
    }

    /// Serves `c` and its microdescriptors from now on and hands it to the descriptor
    /// store, unless the consensus served is still usable and newer: a lagging authority
    /// must not roll the cache (its microdescriptors, its hash ring) back while the store
    /// keeps serving the newer document.
    fn install(&self, c: Consensus) -> Arc<Consensus> {
        if let Some(cur) = lock(&self.current).as_ref() {
            if cur.is_usable(self.clock.now_unix()) && c.valid_after() < cur.valid_after() {
                debug!("dircache: an older consensus than the one served was not installed");
                return Arc::clone(cur);
            }
        }
        let c = Arc::new(c);
        *lock(&self.microdescs) = Arc::new(c.microdescs());
        *lock(&self.current) = Some(Arc::clone(&c));
        // Compressing and diffing happen outside the lock (seconds for the largest
        // documents); a consensus no newer than the one served is not installed again.
        if let Err(e) = self.store.install(c.signed().clone(), c.valid_after()) {
            warn!("dircache: cannot serve the consensus: {e}");
        }
        self.hsdir.set_consensus(Arc::clone(&c));
        c
    }

    /// Fetches and verifies a consensus now, with the microdescriptors not already held;
    /// returns when it would next need a refresh.
    async fn refresh(&self) -> Option<u64> {
        let mut have = MicrodescIndex::clone(&lock(&self.microdescs));
        // Ours while usable: a diff's base, and nothing older is accepted.
        let now = self.clock.now_unix();
        let current = lock(&self.current).clone().filter(|c| c.is_usable(now));
        let mut best: Option<(Consensus, Vec<u8>)> = None;
        for a in &self.authorities {
            match fetch_consensus(
                a.addr,
                &a.identity,
                &self.trusted(),
                &have,
                current.as_deref(),
                Duration::from_secs(15),
                &self.clock,
            )
            .await
            {
                Ok((c, bytes)) => {
                    have.extend_from(&c.microdescs());
                    let complete = c.missing_microdescs() == 0;
                    // The newest wins; of two alike, the more complete.
                    let better = best.as_ref().is_none_or(|(b, _)| {
                        (c.valid_after(), std::cmp::Reverse(c.missing_microdescs()))
                            > (b.valid_after(), std::cmp::Reverse(b.missing_microdescs()))
                    });
                    if better {
                        best = Some((c, bytes));
                    }
                    if complete && better {
                        break;
                    }
                    // Some microdescriptors did not come: ask the next authority for them.
                }
                // No consensus published yet (a forming network): not worth a warning.
                Err(DirFetchError::Status(reason)) => {
                    debug!("dircache: an authority has no consensus: {reason}")
                }
                Err(e) => warn!("dircache: no consensus from an authority: {e}"),
            }
        }
        let (c, _) = best?;
        debug!(
            missing = c.missing_microdescs(),
            "dircache: consensus refreshed"
        );
        let c = self.install(c);
        Some(c.cache_refetch_time(&mut rand::rng()))
    }

    async fn refresh_loop(self: Arc<Self>) {
        let mut jumps = self.clock.watch_jumps();
        let mut retry = FIRST_RETRY_SECS;
        loop {
            let wait = match self.refresh().await {
                Some(at) => {
                    retry = FIRST_RETRY_SECS;
                    at.saturating_sub(self.clock.now_unix()).max(5)
                }
                // Nothing yet (the first consensus is minutes away on a real network, one
                // period on a test network): ask again soon, so the cache is not the last
                // to have it, but back off: every try is a link handshake with each
                // authority, and a forming network can take half an hour.
                None => {
                    let wait = retry;
                    retry = (retry * 2).min(MAX_RETRY_SECS);
                    wait
                }
            };
            // After a wall-clock jump the cached consensus may be expired (or, after a
            // jump back, not valid yet) and the refetch time computed from it wrong.
            tokio::select! {
                () = self.clock.sleep(Duration::from_secs(wait)) => {}
                jump = jumps.next() => info!("dircache: {jump}; fetching the consensus again"),
            }
        }
    }

    /// The onion-service descriptor store this cache serves.
    pub fn hsdir(&self) -> &Arc<HsDirStore> {
        &self.hsdir
    }

    /// Whether a live consensus is cached.
    pub fn has_consensus(&self) -> bool {
        self.store.is_live(self.clock.now_unix())
    }
}

impl DirService for DirCache {
    fn handle(
        &self,
        req: DirRequest,
        ctx: DirContext,
    ) -> Pin<Box<dyn Future<Output = DirResponse> + Send + '_>> {
        Box::pin(async move {
            match req {
                DirRequest::GetConsensus
                | DirRequest::GetConsensusCompressed
                | DirRequest::GetConsensusDiff { .. } => {
                    self.store.answer(&req, self.clock.now_unix())
                }
                DirRequest::GetMicrodescs { digests } => {
                    let mds = Arc::clone(&*lock(&self.microdescs));
                    DirResponse::ok(mds.answer(&digests, MAX_DIR_BODY))
                }
                DirRequest::PutOnionDescriptor(_) | DirRequest::GetOnionDescriptor { .. } => {
                    self.hsdir.answer(&req, self.clock.now_unix(), &ctx)
                }
                _ => DirResponse::error(DirStatus::Refused, "not a directory authority"),
            }
        })
    }
}
