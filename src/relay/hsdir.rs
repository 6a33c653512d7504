//! Onion-service descriptor storage at a relay (the "HSDir" role, docs/protocol.md §8.3,
//! §8.4, §6.12): PUT_ONION_DESCRIPTOR and GET_ONION_DESCRIPTOR over BEGIN_DIR.
//!
//! A relay stores any descriptor whose outer layer verifies (whether the relay is on the
//! hash ring for that blinded key is the uploader's business), keyed by the blinded key
//! `A'`, and only ever replaces it with a strictly newer revision. It can read nothing
//! but the outer layer. Everything is bounded: entries, bytes, and the rate of uploads
//! (each costs a signature check); a full store answers BUSY, never grows.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use tracing::debug;

use crate::clock::now_unix;
use crate::dir::request::{DirRequest, DirResponse, DirStatus};
use crate::onion::descriptor::{OnionDescriptorError, UncheckedOnionDescriptor};

use super::dirserve::DirService;
use super::rate_limit::TokenBucket;

/// Bounds of a relay's descriptor store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HsDirLimits {
    /// Descriptors stored at once.
    pub max_entries: usize,
    /// Bytes of descriptors stored at once.
    pub max_bytes: usize,
    /// Uploads checked per second, sustained (each costs an Ed25519 verification).
    pub puts_per_second: u32,
    /// Burst allowance above the sustained upload rate.
    pub put_burst: u32,
    /// Clock skew tolerated on a descriptor's creation and expiry times, seconds.
    pub max_skew_secs: u64,
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
            max_skew_secs: 300,
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

/// A relay's descriptor store. Serve it directly as a [`DirService`] (it then answers
/// only the onion kinds), or through [`super::dircache::DirCache`], which delegates the
/// onion kinds to its own store.
#[derive(Debug)]
pub struct HsDirStore {
    limits: HsDirLimits,
    puts: TokenBucket,
    state: Mutex<State>,
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
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock means a panic elsewhere mid-update of a map and a counter; the
        // map is still consistent enough to serve (the counter is recomputed on purge).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Descriptors stored now (expired ones not yet dropped included).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes stored now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Handles PUT_ONION_DESCRIPTOR at time `now` (Unix seconds).
    pub fn put_at(&self, bytes: &[u8], now: u64) -> DirResponse {
        let unchecked = match UncheckedOnionDescriptor::parse(bytes) {
            Ok(u) => u,
            Err(e) => {
                debug!("hsdir: malformed descriptor refused: {e}");
                return DirResponse::error(DirStatus::BadRequest, "malformed onion descriptor");
            }
        };
        let key = *unchecked.claimed().blinded_key.as_bytes();
        let Some(min_revision) = self.min_revision(&key, now) else {
            return refused(&OnionDescriptorError::RevisionRollback {
                revision: unchecked.claimed().revision,
                min: u64::MAX,
            });
        };
        // Only the signature check is rate limited: it is the expensive part (parsing is
        // bounded by the 8 KiB size), and it runs outside the lock.
        if !self.puts.try_take() {
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
        let mut state = self.lock();
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
        match self.lock().live(key, now) {
            Some(e) => e.revision.checked_add(1),
            None => Some(0),
        }
    }

    /// Handles GET_ONION_DESCRIPTOR at time `now`: the stored bytes, or NOT_FOUND.
    pub fn get_at(&self, blinded_key: &[u8; 32], now: u64) -> DirResponse {
        match self.lock().live(blinded_key, now) {
            Some(e) => DirResponse::ok(e.bytes.clone()),
            None => DirResponse::error(DirStatus::NotFound, "no descriptor for that key"),
        }
    }

    /// Answers an onion-descriptor request now; other kinds are refused.
    pub fn answer(&self, req: &DirRequest) -> DirResponse {
        match req {
            DirRequest::PutOnionDescriptor(bytes) => self.put_at(bytes, now_unix()),
            DirRequest::GetOnionDescriptor { blinded_key } => self.get_at(blinded_key, now_unix()),
            _ => DirResponse::error(DirStatus::Refused, "not a directory for that request"),
        }
    }
}

/// REFUSED with the verification failure as the reason (it names no key).
fn refused(e: &OnionDescriptorError) -> DirResponse {
    debug!("hsdir: descriptor refused: {e}");
    DirResponse::error(DirStatus::Refused, &e.to_string())
}

impl DirService for HsDirStore {
    fn handle(&self, req: DirRequest) -> Pin<Box<dyn Future<Output = DirResponse> + Send + '_>> {
        Box::pin(async move { self.answer(&req) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{IdentityKeypair, OnionKeyCert, OnionKeypair};
    use crate::onion::descriptor::{
        DescriptorParams, InnerDescriptor, IntroPointInfo, SignedOnionDescriptor,
    };
    use crate::onion::{BlindedKeypair, PeriodParams};

    const NOW: u64 = 1_700_000_000;

    fn key(n: u8) -> IdentityKeypair {
        let mut seed = [0u8; 32];
        seed[0] = n;
        seed[1] = 0x55;
        IdentityKeypair::from_secret_bytes(&seed)
    }

    /// A descriptor of service `n`, with `revision`, created at `created`.
    fn descriptor(n: u8, revision: u64, created: u64) -> (Vec<u8>, [u8; 32]) {
        let service = key(n);
        let period = PeriodParams::default().period_at(NOW).unwrap();
        let blinded = BlindedKeypair::derive(&service, period).unwrap();
        let relay = key(200);
        let onion = OnionKeypair::from_secret_bytes(&[7; 32]);
        let inner = InnerDescriptor {
            intro_points: vec![IntroPointInfo {
                relay_identity: relay.public(),
                link_addrs: vec!["127.0.0.2:9001".parse().unwrap()],
                onion_cert: OnionKeyCert::sign(&relay, onion.public(), NOW + 86_400),
                auth_key: key(201).public(),
                enc_key: *onion.public(),
            }],
            pow: None,
        };
        let params = DescriptorParams {
            revision,
            created,
            lifetime: 3600,
        };
        let d = SignedOnionDescriptor::build(&mut rand::rng(), &service, &blinded, &inner, &params)
            .unwrap();
        (d.to_bytes().unwrap(), *blinded.public().as_bytes())
    }

    #[test]
    fn put_get_replace_and_rollback() {
        let store = HsDirStore::default();
        let (d1, k) = descriptor(1, 5, NOW - 10);
        assert_eq!(store.get_at(&k, NOW).status, DirStatus::NotFound);
        assert_eq!(store.put_at(&d1, NOW).status, DirStatus::Ok);
        assert_eq!(store.get_at(&k, NOW).body, d1);
        // Same revision again, and an older one: refused, the stored one stays.
        assert_eq!(store.put_at(&d1, NOW).status, DirStatus::Refused);
        let (d0, _) = descriptor(1, 4, NOW - 5);
        let r = store.put_at(&d0, NOW);
        assert_eq!(r.status, DirStatus::Refused);
        assert!(r.reason().contains("revision"), "{}", r.reason());
        let (d2, _) = descriptor(1, 6, NOW - 5);
        assert_eq!(store.put_at(&d2, NOW).status, DirStatus::Ok);
        assert_eq!(store.get_at(&k, NOW).body, d2);
        assert_eq!(store.len(), 1);
        assert_eq!(store.bytes(), d2.len());
    }

    #[test]
    fn forged_malformed_and_stale_are_refused() {
        let store = HsDirStore::default();
        let (mut d, k) = descriptor(2, 1, NOW - 10);
        let last = d.len() - 1;
        d[last] ^= 1; // in the signature
        assert_eq!(store.put_at(&d, NOW).status, DirStatus::Refused);
        assert_eq!(store.put_at(b"junk", NOW).status, DirStatus::BadRequest);
        let (future, _) = descriptor(2, 1, NOW + 3600);
        assert_eq!(store.put_at(&future, NOW).status, DirStatus::Refused);
        let (old, _) = descriptor(2, 1, NOW - 2 * 3600);
        assert_eq!(store.put_at(&old, NOW).status, DirStatus::Refused);
        assert!(store.is_empty());
        assert_eq!(store.get_at(&k, NOW).status, DirStatus::NotFound);
    }

    #[test]
    fn expired_entries_are_dropped_and_then_any_revision_is_accepted() {
        let store = HsDirStore::default();
        let (d, k) = descriptor(3, 9, NOW);
        assert_eq!(store.put_at(&d, NOW).status, DirStatus::Ok);
        let skew = HsDirLimits::default().max_skew_secs;
        assert_eq!(
            store.get_at(&k, NOW + 3600 + skew - 1).status,
            DirStatus::Ok
        );
        assert_eq!(
            store.get_at(&k, NOW + 3600 + skew).status,
            DirStatus::NotFound
        );
        assert!(store.is_empty());
        assert_eq!(store.bytes(), 0);
        let later = NOW + 3600 + skew;
        let (d1, _) = descriptor(3, 1, later);
        assert_eq!(store.put_at(&d1, later).status, DirStatus::Ok);
    }

    #[test]
    fn full_store_answers_busy_until_entries_expire() {
        let (a, _) = descriptor(4, 1, NOW);
        let limits = HsDirLimits {
            max_entries: 2,
            max_bytes: 3 * a.len(),
            ..HsDirLimits::default()
        };
        let store = HsDirStore::new(limits);
        assert_eq!(store.put_at(&a, NOW).status, DirStatus::Ok);
        let (b, _) = descriptor(5, 1, NOW);
        assert_eq!(store.put_at(&b, NOW).status, DirStatus::Ok);
        let (c, kc) = descriptor(6, 1, NOW + 100);
        assert_eq!(store.put_at(&c, NOW + 100).status, DirStatus::Busy);
        // Replacing an existing key never needs a new slot.
        let (a2, _) = descriptor(4, 2, NOW);
        assert_eq!(store.put_at(&a2, NOW).status, DirStatus::Ok);
        // Once the first two expired, the purge makes room.
        let later = NOW + 3600 + HsDirLimits::default().max_skew_secs;
        let (c2, _) = descriptor(6, 1, later);
        assert_eq!(store.put_at(&c2, later).status, DirStatus::Ok);
        assert_eq!(store.len(), 1);
        assert_eq!(store.get_at(&kc, later).body, c2);
    }

    #[test]
    fn byte_bound_is_enforced() {
        let (a, _) = descriptor(7, 1, NOW);
        let store = HsDirStore::new(HsDirLimits {
            max_bytes: a.len() + 10,
            ..HsDirLimits::default()
        });
        assert_eq!(store.put_at(&a, NOW).status, DirStatus::Ok);
        let (b, _) = descriptor(8, 1, NOW);
        assert_eq!(store.put_at(&b, NOW).status, DirStatus::Busy);
        assert!(store.bytes() <= a.len() + 10);
    }

    #[test]
    fn upload_rate_is_bounded() {
        let store = HsDirStore::new(HsDirLimits {
            puts_per_second: 1,
            put_burst: 3,
            ..HsDirLimits::default()
        });
        let mut busy = 0;
        for rev in 0..6 {
            let (d, _) = descriptor(9, rev, NOW);
            if store.put_at(&d, NOW).status == DirStatus::Busy {
                busy += 1;
            }
        }
        assert!(busy >= 2, "{busy} of 6 uploads refused as BUSY");
    }

    #[test]
    fn other_requests_are_refused() {
        let store = HsDirStore::default();
        assert_eq!(
            store.answer(&DirRequest::GetConsensus).status,
            DirStatus::Refused
        );
    }
}
