//! A relay's directory cache: it fetches the consensus from the authorities, verifies it,
//! and serves it to clients over BEGIN_DIR, so clients need not all ask the authorities.
//! It also stores onion-service descriptors ([`super::hsdir`]).

use crate::clock::Clock;
use crate::sync::lock;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::crypto::IdentityPublic;
use crate::dir::request::{DirRequest, DirResponse, DirStatus};
use crate::dir::{Consensus, ConsensusError, UncheckedConsensus};
use crate::proto::dirclient::one_shot;

use super::dirserve::{DirContext, DirService};
use super::hsdir::HsDirStore;
use crate::dir::AuthorityInfo;

/// The cache. Serve it with [`super::RelayHandle::set_dir_service`].
#[derive(Debug)]
pub struct DirCache {
    authorities: Vec<AuthorityInfo>,
    /// (valid_until, signed bytes) of the newest verified consensus.
    current: Mutex<Option<(u64, Vec<u8>)>>,
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
            current: Mutex::new(None),
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
    /// is good, serves it from now on and gives it to the descriptor store (whose ring
    /// check needs it). The refresh loop feeds every consensus it fetches through here;
    /// tests may feed one directly.
    pub fn offer_consensus(&self, bytes: Vec<u8>) -> Result<Arc<Consensus>, ConsensusError> {
        let c = Arc::new(
            UncheckedConsensus::parse(&bytes)?.verify(&self.trusted(), self.clock.now_unix())?,
        );
        *lock(&self.current) = Some((c.valid_until(), bytes));
        self.hsdir.set_consensus(Arc::clone(&c));
        Ok(c)
    }

    /// Fetches and verifies a consensus now; returns when it would next need a refresh.
    async fn refresh(&self) -> Option<u64> {
        for a in &self.authorities {
            let Ok(resp) = one_shot(
                a.addr,
                &a.identity,
                &DirRequest::GetConsensus,
                Duration::from_secs(15),
                &self.clock,
            )
            .await
            else {
                continue;
            };
            if resp.status != DirStatus::Ok {
                continue;
            }
            match self.offer_consensus(resp.body) {
                Ok(c) => {
                    debug!("dircache: consensus refreshed");
                    return Some(c.cache_refetch_time(&mut rand::rng()));
                }
                Err(e) => warn!("dircache: an authority served a bad consensus: {e}"),
            }
        }
        None
    }

    async fn refresh_loop(self: Arc<Self>) {
        let mut jumps = self.clock.watch_jumps();
        loop {
            let wait = match self.refresh().await {
                Some(at) => at.saturating_sub(self.clock.now_unix()).max(5),
                // Nothing yet (the first consensus is minutes away on a real network, one
                // period on a test network): ask again soon, so the cache is not the last
                // to have it.
                None => 2,
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
        lock(&self.current)
            .as_ref()
            .is_some_and(|(until, _)| *until > self.clock.now_unix())
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
                DirRequest::GetConsensus => match &*lock(&self.current) {
                    Some((until, bytes)) if *until > self.clock.now_unix() => {
                        DirResponse::ok(bytes.clone())
                    }
                    _ => DirResponse::error(DirStatus::NotFound, "no live consensus cached"),
                },
                DirRequest::PutOnionDescriptor(_) | DirRequest::GetOnionDescriptor { .. } => {
                    self.hsdir.answer(&req, self.clock.now_unix(), &ctx)
                }
                _ => DirResponse::error(DirStatus::Refused, "not a directory authority"),
            }
        })
    }
}
