//! Onion-service descriptor storage at a relay (the "HSDir" role, docs/protocol.md §8.3,
//! §8.4, §6.12): PUT_ONION_DESCRIPTOR and GET_ONION_DESCRIPTOR over BEGIN_DIR.
//!
//! A relay stores a descriptor only if the hash ring ([`crate::onion::hashring`]) for the
//! descriptor's blinded key `A'` and period places it among the first `spread +`
//! [`HSDIR_RING_SLACK`](crate::onion::hashring::HSDIR_RING_SLACK) relays after a store
//! index under one of the live consensuses it has seen (up to [`RING_CONSENSUSES`]), and
//! only for a period within one of the current one. The service picks relays under its
//! own consensus, which may be older or newer than the relay's and list relays with other
//! flags; the slack and the several consensuses keep such an honest upload from being
//! refused. Without the ring check anyone could fill every relay's store with descriptors
//! nobody would look for there. Entries are keyed by `A'` and only ever replaced by a
//! strictly newer revision; the relay can read nothing but the outer layer. Everything is
//! bounded: entries, bytes, and the rate of uploads (each costs a signature check),
//! relay-wide and per circuit.
//!
//! A full store answers BUSY and never evicts a live descriptor: eviction would let any
//! uploader push out stored honest descriptors at the price of one upload each, whereas
//! BUSY only delays newcomers (who have the other relays of their ring), and a stored
//! service keeps updating its entry in place (a replacement needs no new slot).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tracing::debug;

use crate::crypto::IdentityPublic;
use crate::dir::request::{DirRequest, DirResponse, DirStatus};
use crate::dir::Consensus;
use crate::onion::descriptor::{OnionDescriptorError, UncheckedOnionDescriptor};
use crate::onion::hashring::{HsDirParams, HsDirRing};
use crate::onion::{BlindedPublic, PeriodParams, TimePeriod};
use crate::sync::lock;

use super::dirserve::DirContext;
use super::rate_limit::TokenBucket;

/// Bounds of a relay's descriptor store, and the ring rules it applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HsDirLimits {
    /// Descriptors stored at once.
    pub max_entries: usize,
    /// Bytes of descriptors stored at once.
    pub max_bytes: usize,
    /// Uploads checked per second, sustained, relay-wide (each costs an Ed25519
    /// verification).
    pub puts_per_second: u32,
    /// Burst allowance above the sustained upload rate.
    pub put_burst: u32,
    /// Uploads checked per second, sustained, on one circuit (a service uploads one
    /// descriptor per period or two per circuit, so one uploader cannot take the whole
    /// relay-wide budget from a single circuit).
    pub circuit_puts_per_second: u32,
    /// Burst allowance above the per-circuit upload rate.
    pub circuit_put_burst: u32,
    /// Clock skew tolerated on a descriptor's creation and expiry times, seconds.
    pub max_skew_secs: u64,
    /// Which relays are on the ring and how many store each replica (the services'
    /// rules: the same as [`HsDirParams::default`]).
    pub ring: HsDirParams,
    /// How time is cut into periods (the services' rules).
    pub periods: PeriodParams,
}

impl Default for HsDirLimits {
    fn default() -> Self {
        HsDirLimits {
            // 10,000 services × up to 8 KiB: at most ~80 MiB; the byte bound below is
            // what really caps memory.
            max_entries: 10_000,
            max_bytes: 32 * 1024 * 1024,
            puts_per_second: 50,
            put_burst: 200,
            circuit_puts_per_second: 1,
            circuit_put_burst: 8,
            max_skew_secs: 300,
            ring: HsDirParams::default(),
            periods: PeriodParams::default(),
        }
    }
}

/// One stored descriptor.
#[derive(Debug)]
struct Entry {
    bytes: Vec<u8>,
    revision: u64,
    /// Unix time from which the descriptor is no longer served (`created + lifetime +
    /// skew`, the same bound `verify_outer` applies).
    drop_at: u64,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<[u8; 32], Entry>,
    bytes: usize,
}

impl State {
    fn remove(&mut self, key: &[u8; 32]) {
        if let Some(old) = self.entries.remove(key) {
            self.bytes = self.bytes.saturating_sub(old.bytes.len());
        }
    }

    /// The live entry for `key`, dropping it first if it expired.
    fn live(&mut self, key: &[u8; 32], now: u64) -> Option<&Entry> {
        if self.entries.get(key).is_some_and(|e| now >= e.drop_at) {
            self.remove(key);
        }
        self.entries.get(key)
    }

    fn purge_expired(&mut self, now: u64) {
        let before = self.entries.len();
        self.entries.retain(|_, e| now < e.drop_at);
        if self.entries.len() != before {
            self.bytes = self.entries.values().map(|e| e.bytes.len()).sum();
        }
    }
}

/// Live consensuses a relay keeps for the ring check, newest first. A consensus is valid
/// for three intervals (§6.13: `valid_until = valid_after + 3P`), so at most three are
/// live at once; one more leaves room for an irregular schedule. A service may upload
/// under any live one (clients and services refetch late in a consensus's validity), and
/// the relay may have fetched any subset of them, so it keeps all it has seen.
pub(crate) const RING_CONSENSUSES: usize = 4;
/// Rings kept per consensus: the periods within one of the current one.
const RINGS_PER_CONSENSUS: usize = 3;

/// A consensus and the rings computed from it so far (one per period asked about), so a
/// ring is built once per consensus and period, not once per upload.
#[derive(Debug)]
struct RingView {
    consensus: Arc<Consensus>,
    rings: Vec<Arc<HsDirRing>>,
}

/// Whether this relay may store a descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Responsibility {
    /// On the ring of a live consensus (within the slack, [`HsDirRing::accepts`]).
    Responsible,
    /// On no live consensus's ring.
    NotResponsible,
    /// No live consensus: the relay cannot tell.
    NoConsensus,
}

/// A relay's descriptor store. Serve it directly as a [`DirService`] (it then answers
/// only the onion kinds), or through [`super::dircache::DirCache`], which delegates the
/// onion kinds to its own store and gives it each consensus it fetches. Uploads are
/// refused until the store has a consensus ([`HsDirStore::set_consensus`]).
#[derive(Debug)]
pub struct HsDirStore {
    limits: HsDirLimits,
    puts: TokenBucket,
    /// Still served after a panic elsewhere mid-update of a map and a counter: the map
    /// stays consistent (the counter is recomputed on purge).
    state: Mutex<State>,
    /// Newest consensus first (by `valid_after`, each once), at most [`RING_CONSENSUSES`].
    /// Updates only insert, retain and truncate, none of which can leave the list
    /// inconsistent: it is usable even after a panic elsewhere.
    views: Mutex<Vec<RingView>>,
}

impl Default for HsDirStore {
    fn default() -> Self {
        Self::new(HsDirLimits::default())
    }
}

impl HsDirStore {
    /// An empty store with these bounds.
    pub fn new(limits: HsDirLimits) -> Self {
        HsDirStore {
            puts: TokenBucket::new(limits.puts_per_second, limits.put_burst),
            limits,
            state: Mutex::new(State::default()),
            views: Mutex::new(Vec::new()),
        }
    }

    /// Adds `consensus` to those the ring check uses: an upload is accepted if any live
    /// one places this relay on the ring (a service may upload under an older or a newer
    /// consensus than the relay's newest). Keeps the [`RING_CONSENSUSES`] newest; one with
    /// a `valid_after` already known changes nothing, and one that expired by the time
    /// the newest began is dropped (no upload can use it any more).
    pub fn set_consensus(&self, consensus: Arc<Consensus>) {
        let mut views = lock(&self.views);
        let va = consensus.valid_after();
        if views.iter().any(|v| v.consensus.valid_after() == va) {
            return;
        }
        let at = views.partition_point(|v| v.consensus.valid_after() > va);
        views.insert(
            at,
            RingView {
                consensus,
                rings: Vec::new(),
            },
        );
        let newest = views.first().map_or(0, |v| v.consensus.valid_after());
        views.retain(|v| v.consensus.valid_until() > newest);
        views.truncate(RING_CONSENSUSES);
    }

    /// Whether a live consensus is known.
    pub fn has_consensus(&self, now: u64) -> bool {
        lock(&self.views).iter().any(|v| v.consensus.is_live(now))
    }

    /// Whether relay `me` accepts `blinded` in `period` under one of the live consensuses
    /// ([`HsDirRing::accepts`]; each ring is built once per consensus and period).
    fn responsibility(
        &self,
        blinded: &BlindedPublic,
        period: TimePeriod,
        me: &IdentityPublic,
        now: u64,
    ) -> Responsibility {
        let mut views = lock(&self.views);
        let mut any_live = false;
        for view in views.iter_mut().filter(|v| v.consensus.is_live(now)) {
            any_live = true;
            let ring = match view.rings.iter().find(|r| r.period() == period) {
                Some(r) => Arc::clone(r),
                None => {
                    let r = Arc::new(HsDirRing::new(
                        view.consensus.relays(),
                        period,
                        &self.limits.ring,
                    ));
                    if view.rings.len() >= RINGS_PER_CONSENSUS {
                        view.rings.remove(0);
                    }
                    view.rings.push(Arc::clone(&r));
                    r
                }
            };
            if ring.accepts(blinded, me) {
                return Responsibility::Responsible;
            }
        }
        if any_live {
            Responsibility::NotResponsible
        } else {
            Responsibility::NoConsensus
        }
    }

    /// Whether `period` is one this relay stores descriptors for at `now`: the services'
    /// period length, and a number within one of the current period.
    fn period_served(&self, period: TimePeriod, now: u64) -> bool {
        match self.limits.periods.period_at(now) {
            Ok(current) => {
                period.length == current.length && period.number.abs_diff(current.number) <= 1
            }
            Err(_) => false,
        }
    }

    /// Descriptors stored now (expired ones not yet dropped included).
    pub fn len(&self) -> usize {
        lock(&self.state).entries.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes stored now.
    pub fn bytes(&self) -> usize {
        lock(&self.state).bytes
    }

    /// Handles PUT_ONION_DESCRIPTOR at time `now` (Unix seconds), for the relay and
    /// circuit of `ctx`.
    pub fn put_at(&self, bytes: &[u8], now: u64, ctx: &DirContext) -> DirResponse {
        let unchecked = match UncheckedOnionDescriptor::parse(bytes) {
            Ok(u) => u,
            Err(e) => {
                debug!("hsdir: malformed descriptor refused: {e}");
                return DirResponse::error(DirStatus::BadRequest, "malformed onion descriptor");
            }
        };
        let claimed = unchecked.claimed();
        let key = *claimed.blinded_key.as_bytes();
        // The ring check comes before the signature check: it is cheaper (rings are
        // cached), and a forged claim gains nothing (a claim that passes is verified).
        if !self.period_served(claimed.period(), now) {
            debug!("hsdir: descriptor for a period not served refused");
            return DirResponse::error(
                DirStatus::Refused,
                "not a directory for that period (only the current one, or one either side)",
            );
        }
        match self.responsibility(&claimed.blinded_key, claimed.period(), &ctx.identity, now) {
            Responsibility::Responsible => {}
            Responsibility::NotResponsible => {
                debug!("hsdir: descriptor for a key off this relay's ring refused");
                return DirResponse::error(
                    DirStatus::Refused,
                    "not responsible: this relay is not on the hash ring for that key and period",
                );
            }
            Responsibility::NoConsensus => {
                return DirResponse::error(
                    DirStatus::Busy,
                    "no consensus yet: cannot tell whether this relay is responsible",
                );
            }
        }
        let Some(min_revision) = self.min_revision(&key, now) else {
            return refused(&OnionDescriptorError::RevisionRollback {
                revision: claimed.revision,
                min: u64::MAX,
            });
        };
        // Only the signature check is rate limited: it is the expensive part (parsing is
        // bounded by the 8 KiB size), and it runs outside the lock. The circuit's budget
        // is charged first, so a circuit over its own budget takes nothing from others;
        // if the relay-wide budget then refuses, the circuit's token is given back (no
        // check ran, and a busy relay should not also use up the circuit's allowance).
        let circuit = ctx.circuit.upload_bucket(
            self.limits.circuit_puts_per_second,
            self.limits.circuit_put_burst,
        );
        if !circuit.try_take() {
            return DirResponse::error(
                DirStatus::Busy,
                "too many descriptor uploads on this circuit",
            );
        }
        if !self.puts.try_take() {
            circuit.refund();
            return DirResponse::error(DirStatus::Busy, "too many descriptor uploads");
        }
        let verified = match unchecked.verify_outer(now, self.limits.max_skew_secs, min_revision) {
            Ok(v) => v,
            Err(e) => return refused(&e),
        };
        let body = verified.body();
        let entry = Entry {
            bytes: bytes.to_vec(),
            revision: body.revision,
            drop_at: body.expires().saturating_add(self.limits.max_skew_secs),
        };
        let mut state = lock(&self.state);
        // Another upload for the key may have landed while we verified.
        if let Some(current) = state.live(&key, now) {
            if current.revision >= entry.revision {
                return refused(&OnionDescriptorError::RevisionRollback {
                    revision: entry.revision,
                    min: current.revision.saturating_add(1),
                });
            }
        }
        if !self.fits(&state, &key, entry.bytes.len()) {
            state.purge_expired(now);
            if !self.fits(&state, &key, entry.bytes.len()) {
                // Never evict a live descriptor (see the module documentation).
                return DirResponse::error(DirStatus::Busy, "descriptor store full");
            }
        }
        state.remove(&key);
        state.bytes = state.bytes.saturating_add(entry.bytes.len());
        state.entries.insert(key, entry);
        debug!("hsdir: descriptor stored");
        DirResponse::ok(Vec::new())
    }

    /// Whether storing `len` bytes under `key` (replacing what is there) stays within the
    /// bounds.
    fn fits(&self, state: &State, key: &[u8; 32], len: usize) -> bool {
        let (entries, bytes) = match state.entries.get(key) {
            Some(old) => (
                state.entries.len(),
                state.bytes.saturating_sub(old.bytes.len()),
            ),
            None => (state.entries.len().saturating_add(1), state.bytes),
        };
        entries <= self.limits.max_entries && bytes.saturating_add(len) <= self.limits.max_bytes
    }

    /// The smallest revision a new upload for `key` must have; `None` if nothing can
    /// replace the stored one (its revision is already the largest possible).
    fn min_revision(&self, key: &[u8; 32], now: u64) -> Option<u64> {
        match lock(&self.state).live(key, now) {
            Some(e) => e.revision.checked_add(1),
            None => Some(0),
        }
    }

    /// Handles GET_ONION_DESCRIPTOR at time `now`: the stored bytes, or NOT_FOUND.
    pub fn get_at(&self, blinded_key: &[u8; 32], now: u64) -> DirResponse {
        match lock(&self.state).live(blinded_key, now) {
            Some(e) => DirResponse::ok(e.bytes.clone()),
            None => DirResponse::error(DirStatus::NotFound, "no descriptor for that key"),
        }
    }

    /// Answers an onion-descriptor request at time `now` (Unix seconds), for the relay and
    /// circuit of `ctx`; other kinds are refused.
    pub fn answer(&self, req: &DirRequest, now: u64, ctx: &DirContext) -> DirResponse {
        match req {
            DirRequest::PutOnionDescriptor(bytes) => self.put_at(bytes, now, ctx),
            DirRequest::GetOnionDescriptor { blinded_key } => self.get_at(blinded_key, now),
            _ => DirResponse::error(DirStatus::Refused, "not a directory for that request"),
        }
    }
}

/// REFUSED with the verification failure as the reason (it names no key).
fn refused(e: &OnionDescriptorError) -> DirResponse {
    debug!("hsdir: descriptor refused: {e}");
    DirResponse::error(DirStatus::Refused, &e.to_string())
}

#[cfg(test)]
mod tests;
