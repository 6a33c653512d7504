//! What a directory server (an authority, or a relay caching the directory) keeps to serve
//! the consensus three ways (`docs/protocol.md` §6.18): plain, compressed, and as a
//! compressed diff from any of the recent consensuses it kept. No I/O.
//!
//! Past consensuses are kept as [`DiffBase`]s (per relay its identity, small fields and
//! truncated digests, not the document), at most [`MAX_KEPT_BASES`] of them and none older
//! than [`MAX_BASE_AGE`] seconds: 24 bodies or 24 hours, as a client that was off for up to
//! a day still gets a diff. Diffs from every kept base are computed and compressed once,
//! when a consensus is installed; [`SharedStore`] does that outside its lock, so requests
//! are answered meanwhile.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::codec::{self, CodecError};
use crate::dir::compress::{compress, CompressError};
use crate::dir::consensus::{ConsensusBody, SignedConsensus, MAX_CONSENSUS_LEN};
use crate::dir::diff::DiffBase;
use crate::dir::request::{DirRequest, DirResponse, DirStatus};

/// Most past consensuses kept to serve diffs from.
pub const MAX_KEPT_BASES: usize = 24;
/// Oldest past consensus kept (by `valid_after`, relative to the current one): 24 hours.
pub const MAX_BASE_AGE: u64 = 24 * 3600;

/// Why a consensus could not be installed (our own or an already verified document).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The document does not decode or re-encode.
    #[error("cannot encode or decode the consensus: {0}")]
    Codec(#[from] CodecError),
    /// Compression failed.
    #[error(transparent)]
    Compress(#[from] CompressError),
}

/// A consensus ready to install: decoded, compressed, indexed. Building one is the costly
/// part (seconds for the largest documents), so callers do it outside their locks.
#[derive(Debug)]
pub struct PreparedConsensus {
    valid_after: u64,
    valid_until: u64,
    signed: SignedConsensus,
    body: ConsensusBody,
    bytes: Vec<u8>,
    compressed: Vec<u8>,
    /// Its own diff base: what the next consensus diffs from, and the new side of every
    /// diff to it (hashed once, not once per base).
    base: Arc<DiffBase>,
}

impl PreparedConsensus {
    /// Prepares `signed` (a consensus this server verified or signed itself).
    pub fn new(signed: SignedConsensus) -> Result<Self, StoreError> {
        let body: ConsensusBody = codec::decode(signed.body(), MAX_CONSENSUS_LEN)?;
        let bytes = signed.to_bytes()?;
        let compressed = compress(&bytes)?;
        let base = Arc::new(DiffBase::new(signed.body(), &body)?);
        Ok(PreparedConsensus {
            valid_after: body.valid_after,
            valid_until: body.valid_until,
            signed,
            body,
            bytes,
            compressed,
            base,
        })
    }
}

/// The compressed diffs from each of `bases` (and from `c` itself, if among them) to `c`,
/// by base digest.
fn diffs_to(
    c: &PreparedConsensus,
    bases: &[Arc<DiffBase>],
) -> Result<HashMap<[u8; 32], Vec<u8>>, StoreError> {
    let mut diffs = HashMap::with_capacity(bases.len() + 1);
    for b in bases.iter().chain(std::iter::once(&c.base)) {
        if let std::collections::hash_map::Entry::Vacant(slot) = diffs.entry(b.digest) {
            let diff = b.diff_to(&c.base, &c.signed, &c.body)?;
            slot.insert(compress(&diff.to_bytes())?);
        }
    }
    Ok(diffs)
}

#[derive(Debug)]
struct Current {
    valid_after: u64,
    valid_until: u64,
    bytes: Vec<u8>,
    compressed: Vec<u8>,
    /// Compressed diff to this consensus, by base digest.
    diffs: HashMap<[u8; 32], Vec<u8>>,
    /// Kept for the next consensus to diff from.
    base: Arc<DiffBase>,
}

/// A [`ConsensusStore`] shared between a server's tasks: preparing (the costly part)
/// happens outside the lock.
#[derive(Debug, Default)]
pub struct SharedStore(std::sync::Mutex<ConsensusStore>);

impl SharedStore {
    /// Prepares and installs `signed`, whose body has `valid_after` (see
    /// [`ConsensusStore::install`]).
    pub fn install(&self, signed: SignedConsensus, valid_after: u64) -> Result<bool, StoreError> {
        // Compressing and diffing cost up to seconds: not for a consensus that is no newer
        // than the one served (a cache fetching the same document again).
        let newer = crate::sync::lock(&self.0)
            .current
            .as_ref()
            .is_none_or(|cur| cur.valid_after < valid_after);
        if !newer {
            return Ok(false);
        }
        let prepared = PreparedConsensus::new(signed)?;
        // The bases it will be diffed from, snapshotted (shared, not copied); the diffs are
        // computed unlocked, and install computes any base that changed meanwhile.
        let bases = crate::sync::lock(&self.0).bases_for(valid_after);
        let diffs = diffs_to(&prepared, &bases)?;
        crate::sync::lock(&self.0).install_with(prepared, diffs)
    }

    /// [`ConsensusStore::answer`]; BAD_REQUEST for a request that is not for the consensus.
    pub fn answer(&self, req: &DirRequest, now: u64) -> DirResponse {
        crate::sync::lock(&self.0)
            .answer(req, now)
            .unwrap_or_else(|| DirResponse::error(DirStatus::BadRequest, "not a consensus request"))
    }

    /// Whether a consensus is served at `now`.
    pub fn is_live(&self, now: u64) -> bool {
        crate::sync::lock(&self.0).live_bytes(now).is_some()
    }
}

/// The served consensus and the recent ones diffs start from.
#[derive(Debug, Default)]
pub struct ConsensusStore {
    current: Option<Current>,
    /// Past consensuses, oldest first, with their `valid_after`.
    kept: VecDeque<(u64, Arc<DiffBase>)>,
}

impl ConsensusStore {
    /// Serves `c` from now on if it is newer than the current consensus (else returns
    /// false), keeping the current one as a base and computing the diffs from every kept
    /// base.
    pub fn install(&mut self, c: PreparedConsensus) -> Result<bool, StoreError> {
        self.install_with(c, HashMap::new())
    }

    /// The bases a consensus with `valid_after` would be diffed from if installed now: the
    /// kept ones and the current one, within [`MAX_BASE_AGE`] and [`MAX_KEPT_BASES`].
    fn bases_for(&self, valid_after: u64) -> Vec<Arc<DiffBase>> {
        let oldest = valid_after.saturating_sub(MAX_BASE_AGE);
        let mut kept: VecDeque<(u64, Arc<DiffBase>)> = self
            .kept
            .iter()
            .cloned()
            .chain(
                self.current
                    .as_ref()
                    .map(|c| (c.valid_after, Arc::clone(&c.base))),
            )
            .filter(|(va, _)| *va >= oldest)
            .collect();
        while kept.len() > MAX_KEPT_BASES {
            kept.pop_front();
        }
        kept.into_iter().map(|(_, b)| b).collect()
    }

    /// [`Self::install`] with the compressed diffs from some bases already computed (by
    /// base digest); the diffs from any other kept base are computed here.
    fn install_with(
        &mut self,
        c: PreparedConsensus,
        mut diffs: HashMap<[u8; 32], Vec<u8>>,
    ) -> Result<bool, StoreError> {
        if let Some(cur) = &self.current {
            if cur.valid_after >= c.valid_after {
                return Ok(false);
            }
        }
        let mut kept = std::mem::take(&mut self.kept);
        if let Some(old) = self.current.take() {
            kept.push_back((old.valid_after, old.base));
        }
        let oldest = c.valid_after.saturating_sub(MAX_BASE_AGE);
        kept.retain(|(va, _)| *va >= oldest);
        while kept.len() > MAX_KEPT_BASES {
            kept.pop_front();
        }
        // From the current consensus to itself: an empty diff, so a client that asks
        // before the next consensus is out learns so in a few hundred bytes.
        let wanted: Vec<Arc<DiffBase>> = kept
            .iter()
            .map(|(_, b)| Arc::clone(b))
            .chain(std::iter::once(Arc::clone(&c.base)))
            .collect();
        diffs.retain(|digest, _| wanted.iter().any(|b| b.digest == *digest));
        let missing: Vec<Arc<DiffBase>> = wanted
            .into_iter()
            .filter(|b| !diffs.contains_key(&b.digest))
            .collect();
        diffs.extend(diffs_to(&c, &missing)?);
        self.kept = kept;
        self.current = Some(Current {
            valid_after: c.valid_after,
            valid_until: c.valid_until,
            bytes: c.bytes,
            compressed: c.compressed,
            diffs,
            base: c.base,
        });
        Ok(true)
    }

    /// The current consensus's signed bytes, while live at `now`.
    pub fn live_bytes(&self, now: u64) -> Option<&[u8]> {
        self.live(now).map(|c| c.bytes.as_slice())
    }

    /// `valid_until` of the current consensus.
    pub fn valid_until(&self) -> Option<u64> {
        self.current.as_ref().map(|c| c.valid_until)
    }

    /// Past consensuses kept as diff bases.
    pub fn kept_bases(&self) -> usize {
        self.kept.len()
    }

    fn live(&self, now: u64) -> Option<&Current> {
        self.current.as_ref().filter(|c| c.valid_until > now)
    }

    /// Answers the consensus requests (GET_CONSENSUS, GET_CONSENSUS_COMPRESSED,
    /// GET_CONSENSUS_DIFF) at `now`; `None` for any other request.
    pub fn answer(&self, req: &DirRequest, now: u64) -> Option<DirResponse> {
        let none = || DirResponse::error(DirStatus::NotFound, "no live consensus");
        Some(match req {
            DirRequest::GetConsensus => self
                .live(now)
                .map_or_else(none, |c| DirResponse::ok(c.bytes.clone())),
            DirRequest::GetConsensusCompressed => self
                .live(now)
                .map_or_else(none, |c| DirResponse::ok(c.compressed.clone())),
            DirRequest::GetConsensusDiff { from } => match self.live(now) {
                None => none(),
                Some(c) => c.diffs.get(from).map_or_else(
                    || DirResponse::error(DirStatus::NotFound, "no diff from that consensus"),
                    |d| DirResponse::ok(d.clone()),
                ),
            },
            _ => return None,
        })
    }
}
