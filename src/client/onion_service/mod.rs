//! The service side of onion services (protocol.md §8): keeps introduction points,
//! publishes the descriptor, answers introductions by meeting clients at their rendezvous
//! points, and serves the clients' streams from local targets.
//!
//! One task per service keeps [`INTRO_POINTS`] introduction circuits (each a 3-hop circuit
//! whose last hop is the introduction point, with ESTABLISH_INTRO bound to that circuit's
//! keys) and rebuilds them when they close; it signs a new descriptor whenever the set
//! changes or the period turns, and re-uploads it every [`REUPLOAD_EVERY`] to every relay
//! of the hash ring. Each introduction circuit has its own task that receives INTRODUCE2.
//! An accepted introduction builds a circuit to the client's rendezvous point, sends
//! RENDEZVOUS1, adds the end-to-end keys and hands the circuit to a service-mode circuit
//! task ([`super::reactor::spawn_service`]): it acts as the exit, connecting BEGINs for a
//! configured virtual port to the local target.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::{Rng, RngExt};
use thiserror::Error;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::cell::onion_msg::{Introduce, OnionMsg, Rendezvous1};
use crate::cell::relay_cell::sets as relay_sets;
use crate::cell::RelayMsg;
use crate::clock::now_unix;
use crate::crypto::keyfile::{read_key_file, write_key_file, KeyType};
use crate::crypto::{IdentityKeypair, KeyFileError, OnionKeypair};
use crate::dir::request::{DirRequest, DirStatus};
use crate::dir::ConsensusEntry;
use crate::onion::descriptor::{
    DescriptorParams, InnerDescriptor, IntroPointInfo, PowParams, SignedOnionDescriptor,
    MAX_DESCRIPTOR_LIFETIME,
};
use crate::onion::handshake::{service_open_introduce, subcredential, IntroKeys};
use crate::onion::hashring::{responsible_hsdirs, HsDirParams};
use crate::onion::intro::{build_establish_intro, IntroducePlaintext};
use crate::onion::replay::{ReplayCache, DEFAULT_REPLAY_CAPACITY};
use crate::onion::{BlindedKeypair, BlindedPublic, OnionAddress, PeriodParams};
use crate::sync::lock;

use super::manager::{relay_target, Client};
use super::onion_connect::MAX_CLIENT_POW_DIFFICULTY;
use super::reactor::{RendezvousSlot, RendezvousSlots, ServiceEnd};
use super::{ClientCircuit, RelayTarget};

/// Introduction points a service keeps.
pub const INTRO_POINTS: usize = 3;
/// The descriptor is re-uploaded this often even when nothing changed (its lifetime is
/// [`MAX_DESCRIPTOR_LIFETIME`], 3 h).
pub const REUPLOAD_EVERY: Duration = Duration::from_secs(60 * 60);
/// How often the service checks its introduction circuits and the period.
const TICK: Duration = Duration::from_secs(2);
/// Waiting for INTRO_ESTABLISHED.
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(20);
/// Failed establishments at one relay before the service moves to another one.
const MAX_INTRO_FAILURES: u32 = 2;
/// Wait after an upload round that no directory accepted.
const UPLOAD_RETRY: Duration = Duration::from_secs(15);
/// The next period's descriptor is uploaded this long before the period starts.
const NEXT_PERIOD_AHEAD: u64 = 2 * 60 * 60;
/// Seconds a client puzzle seed stays valid.
const POW_SEED_LIFETIME: u64 = 24 * 60 * 60;
/// An introduction point's keys (`AUTH`, `B`) are replaced after about this long (±
/// [`INTRO_KEY_JITTER`], drawn per point) even when its replay cache is far from full, so
/// a long-running service's caches do not grow forever and a key does not stay linkable
/// across days.
pub const INTRO_KEY_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// Each introduction point's key lifetime is [`INTRO_KEY_LIFETIME`] plus or minus up to
/// this much, drawn when its keys are made: points set up together (at launch) then
/// rotate at different times rather than all in the same tick, so the service is never
/// left with only freshly built points and an observer cannot tie the three rotations
/// together.
pub const INTRO_KEY_JITTER: Duration = Duration::from_secs(2 * 60 * 60);
/// A replaced introduction point keeps answering under its old key for this long: every
/// descriptor listing the old key was built before the replacement, so it expires within
/// a descriptor lifetime (plus the client's clock skew allowance). Then its circuit is
/// closed and its replay cache dropped.
const RETIRED_KEY_KEPT: Duration =
    Duration::from_secs(MAX_DESCRIPTOR_LIFETIME as u64 + super::onion_connect::DESCRIPTOR_SKEW);
/// Replaced introduction points kept at once (each holds a replay cache of up to
/// [`DEFAULT_REPLAY_CAPACITY`] keys); beyond, the oldest is closed early.
const MAX_RETIRED: usize = 3 * INTRO_POINTS;

/// How one onion service runs.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The service's identity key file (created with mode 0600 when missing; the address
    /// is derived from it, so keeping the file keeps the address).
    pub key_file: PathBuf,
    /// Virtual port → local target. Streams to other ports are refused.
    pub ports: Vec<(u16, SocketAddr)>,
    /// Rendezvous circuits open at once; introductions beyond are dropped (and when all
    /// are in use, those idle for [`Self::rendezvous_idle`] are closed to make room).
    pub max_rendezvous: usize,
    /// Introductions answered per second (all introduction points together); more are
    /// dropped. Only introductions that decrypted, are not replays and carry a valid
    /// puzzle solution (if one is required) count: this bounds the rendezvous circuits
    /// the service builds, the expensive part, and garbage cannot use it up.
    pub intros_per_second: u32,
    /// INTRODUCE2 cells one introduction point may make the service decrypt per second
    /// (a token bucket checked before any public-key work, so a malicious introduction
    /// point sending garbage costs the service little and cannot use up the other points'
    /// decryptions). The current points together are also held to [`INTRO_POINTS`] times
    /// this rate and burst, and the retired ones (keys replaced, still answering clients
    /// with older descriptors) together to once this rate and burst, so the total
    /// decryption work stays bounded whatever the number of points, and retired points
    /// cannot use up the current points' budget.
    pub intro_point_rate: u32,
    /// The burst of that bucket.
    pub intro_point_burst: u32,
    /// Require a client puzzle of this difficulty (1..=[`MAX_CLIENT_POW_DIFFICULTY`], 24:
    /// clients refuse harder ones) with every introduction.
    pub pow_difficulty: Option<u8>,
    /// Connecting to a local target may take this long.
    pub connect_timeout: Duration,
    /// A rendezvous circuit without traffic for this long is closed, freeing its slot
    /// (clients keep theirs open for reuse), if it has no open stream or if all
    /// [`Self::max_rendezvous`] slots are in use; quiet streams otherwise live on.
    pub rendezvous_idle: Duration,
}

impl ServiceConfig {
    /// A service with defaults: 64 rendezvous circuits, 20 introductions per second (10
    /// per second, burst 50, from any one introduction point), no puzzle, 10 s to connect
    /// to the target, rendezvous circuits idle for 5 minutes closed (with open streams:
    /// only when all 64 are in use).
    pub fn new(key_file: PathBuf, ports: Vec<(u16, SocketAddr)>) -> Self {
        ServiceConfig {
            key_file,
            ports,
            max_rendezvous: 64,
            intros_per_second: 20,
            intro_point_rate: 10,
            intro_point_burst: 50,
            pow_difficulty: None,
            connect_timeout: Duration::from_secs(10),
            rendezvous_idle: Duration::from_secs(5 * 60),
        }
    }
}

/// Why a service could not start.
#[derive(Debug, Error)]
pub enum ServiceError {
    /// The key file could not be read or created.
    #[error("service key: {0}")]
    Key(#[from] KeyFileError),
    /// The key is not usable as a service identity.
    #[error("service key: {0}")]
    Address(#[from] crate::onion::AddressError),
    /// The configuration is not usable.
    #[error("service: {0}")]
    Config(String),
}

/// Loads the service identity from `path`, or generates one and writes it (mode 0600,
/// atomically) if the file does not exist. Any other problem is an error: silently
/// replacing the key would change the service's address.
pub fn load_or_create_service_key(path: &Path) -> Result<IdentityKeypair, ServiceError> {
    match read_key_file(path, KeyType::Identity) {
        Ok(secret) => Ok(IdentityKeypair::from_secret_bytes(&secret)),
        Err(KeyFileError::Missing { .. }) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| ServiceError::Config(format!("{}: {e}", dir.display())))?;
            }
            let kp = IdentityKeypair::generate(&mut rand::rng());
            write_key_file(path, KeyType::Identity, &kp.secret_bytes())?;
            Ok(kp)
        }
        Err(e) => Err(e.into()),
    }
}

/// A running onion service. Dropping it does not stop it; [`Self::stop`] does.
#[derive(Debug)]
pub struct OnionService {
    address: OnionAddress,
    published: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl OnionService {
    /// The service's address (`<56 chars>.allium`).
    pub fn address(&self) -> &OnionAddress {
        &self.address
    }

    /// Waits until a descriptor has been stored by at least one directory (after at least
    /// one introduction point was established), for at most `limit`.
    pub async fn wait_published(&self, limit: Duration) -> bool {
        let mut rx = self.published.clone();
        tokio::time::timeout(limit, rx.wait_for(|n| *n > 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Stops publishing and closes the introduction circuits (rendezvous circuits already
    /// open finish on their own).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }
}

/// One introduction point and the service's keys there.
struct IntroSlot {
    relay: ConsensusEntry,
    auth: Arc<IdentityKeypair>,
    enc: Arc<OnionKeypair>,
    replay: Arc<Mutex<ReplayCache>>,
    /// The decryption budget of this introduction point (kept across circuit rebuilds).
    gate: Arc<Mutex<IntroGate>>,
    /// Set when the slot is retired ([`rotate_slots`]): its decryptions are then charged
    /// to the retired points' joint budget, no longer to the current points'.
    retired: Arc<std::sync::atomic::AtomicBool>,
    /// When the keys were generated.
    created: Instant,
    /// How long they are used: [`INTRO_KEY_LIFETIME`] ± [`INTRO_KEY_JITTER`].
    lifetime: Duration,
    /// Dropping this (with the slot) or sending `true` closes the slot's circuit.
    close: watch::Sender<bool>,
    /// Set by the introduction circuit's task when the circuit is established; cleared
    /// when it closes.
    up: Arc<std::sync::atomic::AtomicBool>,
    /// Set with `up` and never cleared: the point was established at least once, so a
    /// descriptor may list it.
    ever_up: Arc<std::sync::atomic::AtomicBool>,
    /// Whether a task currently owns a circuit (or is building one) for this slot.
    running: Arc<std::sync::atomic::AtomicBool>,
    failures: u32,
}

impl IntroSlot {
    /// A slot at `relay` with fresh keys and an empty replay cache.
    fn new(relay: ConsensusEntry, created: Instant, gate: IntroGate) -> Self {
        IntroSlot {
            relay,
            auth: Arc::new(IdentityKeypair::generate(&mut rand::rng())),
            enc: Arc::new(OnionKeypair::generate(&mut rand::rng())),
            replay: Arc::new(Mutex::new(ReplayCache::new(DEFAULT_REPLAY_CAPACITY))),
            gate: Arc::new(Mutex::new(gate)),
            retired: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            created,
            lifetime: jittered_key_lifetime(),
            close: watch::channel(false).0,
            up: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            ever_up: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            running: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            failures: 0,
        }
    }

    /// Whether the slot's keys must be replaced at `now`: see [`key_rotation_due`].
    fn rotation_due(&self, now: Instant) -> bool {
        let replay = lock(&self.replay);
        key_rotation_due(
            &replay,
            now.saturating_duration_since(self.created),
            self.lifetime,
        )
    }

    /// Whether a slot whose circuit is down is still worth rebuilding: its relay is in
    /// the consensus and did not fail [`MAX_INTRO_FAILURES`] times in a row.
    fn worth_rebuilding(&self, consensus: &crate::dir::Consensus) -> bool {
        self.failures < MAX_INTRO_FAILURES && consensus.relay(&self.relay.identity).is_some()
    }
}

/// [`INTRO_KEY_LIFETIME`] ± a uniformly random [`INTRO_KEY_JITTER`] (whole seconds).
fn jittered_key_lifetime() -> Duration {
    let jitter = INTRO_KEY_JITTER.as_secs();
    let offset = rand::rng().random_range(0..=2 * jitter);
    (INTRO_KEY_LIFETIME + Duration::from_secs(offset)).saturating_sub(INTRO_KEY_JITTER)
}

/// A token bucket bounding the INTRODUCE2 cells one introduction point can make the
/// service decrypt: every INTRODUCE2 costs an X25519 operation and up to three
/// decryptions (one per neighbouring period) before the replay cache can tell anything,
/// and the introduction point can send as many as it likes.
#[derive(Debug)]
struct IntroGate {
    /// Tokens per second.
    rate: u64,
    /// Most tokens held, in thousandths.
    burst_milli: u64,
    /// Tokens held, in thousandths (integer arithmetic: no float rounding surprises).
    tokens_milli: u64,
    /// The fraction of a thousandth earned but not yet credited, in millionths of a
    /// thousandth (always below 10^6).
    carry: u64,
    last: Instant,
    /// Introductions refused so far.
    refused: u64,
}

impl IntroGate {
    /// A full bucket of `burst` tokens refilled at `rate` per second (each at least 1).
    fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let burst_milli = u64::from(burst.max(1)) * 1000;
        IntroGate {
            rate: u64::from(rate.max(1)),
            burst_milli,
            tokens_milli: burst_milli,
            carry: 0,
            last: now,
            refused: 0,
        }
    }

    /// An empty bucket (it fills at `rate` per second up to `burst`): the gate of an
    /// introduction point that replaces another. See [`IntroBudget::current`] for why.
    fn empty(rate: u32, burst: u32, now: Instant) -> Self {
        IntroGate {
            tokens_milli: 0,
            ..IntroGate::new(rate, burst, now)
        }
    }

    /// Gives back the token the last [`Self::admit_at`] took (at the same instant): the
    /// introduction was refused by a later budget, so it did not use this one.
    fn refund(&mut self) {
        self.tokens_milli = self.tokens_milli.saturating_add(1000).min(self.burst_milli);
    }

    /// Takes a token at `now`: whether one more introduction may be decrypted. A refusal
    /// is counted.
    fn admit_at(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = self.last.max(now);
        // rate tokens/s = rate thousandths per ms = rate * nanos / 10^6 thousandths. The
        // remainder of that division is carried to the next call: dropping it would make
        // calls closer together than one thousandth's worth of time refill nothing.
        let total = elapsed
            .as_nanos()
            .saturating_mul(u128::from(self.rate))
            .saturating_add(u128::from(self.carry));
        let refill = u64::try_from(total / 1_000_000).unwrap_or(u64::MAX);
        self.carry = u64::try_from(total % 1_000_000).unwrap_or(0);
        self.tokens_milli = self.tokens_milli.saturating_add(refill);
        if self.tokens_milli >= self.burst_milli {
            // Full: time spent full earns nothing, not even a fraction.
            self.tokens_milli = self.burst_milli;
            self.carry = 0;
        }
        if self.tokens_milli >= 1000 {
            self.tokens_milli -= 1000;
            true
        } else {
            self.refused = self.refused.saturating_add(1);
            false
        }
    }

    /// Introductions refused so far.
    fn refused(&self) -> u64 {
        self.refused
    }
}

/// Which joint decryption budget an introduction point is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PointGroup {
    /// One of the (at most [`INTRO_POINTS`]) points the latest descriptors list.
    Current,
    /// A point whose keys were replaced, kept for clients with older descriptors.
    Retired,
}

/// The service-wide introduction budgets, in the order an INTRODUCE2 meets them (after
/// its own introduction point's [`IntroGate`]; see [`screen_introduction`]).
#[derive(Debug)]
struct IntroBudget {
    /// Decryptions by the current introduction points together: [`INTRO_POINTS`] times
    /// one point's rate and burst. It never refuses a current point that its own gate
    /// admitted: at most [`INTRO_POINTS`] points are current at once, the first ones
    /// start full like this bucket and any later one (replacing a point that was
    /// retired or dropped, whose tokens leave with it) starts empty, and each point
    /// refills at a third of this rate; so this bucket always holds at least the
    /// current points' tokens together. Garbage through some points therefore cannot
    /// crowd out honest introductions through another current point: each gets its own
    /// rate and burst. (It still bounds the total if that reasoning ever stops holding;
    /// an introduction being screened at the very moment its point is retired may be
    /// charged here once more.)
    current: IntroGate,
    /// Decryptions by the retired points together (at most [`MAX_RETIRED`]): one point's
    /// rate and burst, so flooding them adds at most one point's worth of work, and
    /// takes nothing from the current points. Retired points can crowd out each other's
    /// honest introductions (clients holding a descriptor older than the last rotation).
    retired: IntroGate,
    /// The current one-second window and the introductions answered in it.
    window: (Instant, u32),
    /// Introductions answered per second.
    per_second: u32,
}

impl IntroBudget {
    /// `per_second` answered introductions (at least 1); decryptions: [`INTRO_POINTS`]
    /// times `point` (one introduction point's rate and burst) for the current points,
    /// once `point` for the retired ones.
    fn new(per_second: u32, point: (u32, u32), now: Instant) -> Self {
        let points = INTRO_POINTS as u32;
        IntroBudget {
            current: IntroGate::new(
                point.0.max(1).saturating_mul(points),
                point.1.max(1).saturating_mul(points),
                now,
            ),
            retired: IntroGate::new(point.0, point.1, now),
            window: (now, 0),
            per_second: per_second.max(1),
        }
    }

    /// The joint decryption budget of `group`.
    fn decrypt(&mut self, group: PointGroup) -> &mut IntroGate {
        match group {
            PointGroup::Current => &mut self.current,
            PointGroup::Retired => &mut self.retired,
        }
    }

    /// Takes one answered introduction of the current second's budget.
    fn admit_meeting(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.window.0) >= Duration::from_secs(1) {
            self.window = (now, 0);
        }
        if self.window.1 >= self.per_second {
            return false;
        }
        self.window.1 += 1;
        true
    }

    /// Gives back what [`Self::admit_meeting`] took at `now` (the introduction was not
    /// acted on after all). Nothing if that window has since been replaced: a later
    /// window starts after `now`, and its count is not ours to lower.
    fn refund_meeting(&mut self, now: Instant) {
        if self.window.0 <= now {
            self.window.1 = self.window.1.saturating_sub(1);
        }
    }
}

/// Why an introduction was dropped by [`screen_introduction`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dropped {
    /// Its introduction point is over its decryption budget.
    PointBudget,
    /// The introduction point's group (current or retired points) is over its joint
    /// decryption budget.
    DecryptBudget,
    /// It did not decrypt, was a replay, was malformed or lacked a valid puzzle solution
    /// (`open` said so).
    Invalid,
    /// Valid, but the service already answered its introductions of this second.
    MeetRate,
    /// Valid and within the rate, but no rendezvous slot was free (`act` said so); the
    /// rate was given back.
    NoSlot,
}

/// Runs an INTRODUCE2 through the service's budgets: its introduction point's gate and
/// its group's joint decryption gate before `open` (which does the public-key work, the
/// puzzle and replay checks and returns `None` for anything not worth a rendezvous), then
/// the service-wide rate of answered introductions, then `act` (which takes a rendezvous
/// slot and records the introduction in the replay cache, or returns `None` if no slot is
/// free: the rate is then given back). Only an introduction `open` accepted is charged to
/// that rate, so introductions that fail cannot crowd out honest ones arriving through
/// another point; the decryption gates bound what the failing ones cost. Only one within
/// the rate takes a slot (taking the last one, or finding none, makes an idle rendezvous
/// circuit give its slot up, see [`RendezvousSlots`]), so introductions the service will
/// not answer anyway cannot close other clients' sessions.
fn screen_introduction<T, U>(
    point: &Mutex<IntroGate>,
    group: PointGroup,
    budget: &Mutex<IntroBudget>,
    now: Instant,
    open: impl FnOnce() -> Option<T>,
    act: impl FnOnce(T) -> Option<U>,
) -> Result<U, Dropped> {
    // The point's own gate first: a point over its budget (a flooding one) never
    // touches the joint one. A joint refusal gives the point its token back, so a point
    // whose group is flooded through another point keeps its own budget.
    if !lock(point).admit_at(now) {
        return Err(Dropped::PointBudget);
    }
    if !lock(budget).decrypt(group).admit_at(now) {
        lock(point).refund();
        return Err(Dropped::DecryptBudget);
    }
    let opened = open().ok_or(Dropped::Invalid)?;
    if !lock(budget).admit_meeting(now) {
        return Err(Dropped::MeetRate);
    }
    match act(opened) {
        Some(acted) => Ok(acted),
        None => {
            lock(budget).refund_meeting(now);
            Err(Dropped::NoSlot)
        }
    }
}

/// Whether an introduction point's keys must be replaced: its replay cache is
/// [`crate::onion::replay::ROTATE_AT_PERCENT`] full (a flood of valid introductions then
/// leads to a new key instead of a full cache refusing everyone) or the keys are
/// `lifetime` old (the slot's jittered [`INTRO_KEY_LIFETIME`]), whichever comes first.
fn key_rotation_due(replay: &ReplayCache, age: Duration, lifetime: Duration) -> bool {
    replay.rotation_due() || age >= lifetime
}

/// An introduction point whose keys were replaced: its circuit keeps answering clients
/// that hold a descriptor listing the old key until `until`.
struct Retired {
    slot: IntroSlot,
    until: Instant,
}

/// Moves the slots whose keys are due for rotation out of `slots` (the main loop then
/// picks new introduction points with fresh keys, and the changed key set makes it upload
/// a new descriptor revision). A rotated slot that was ever established (so descriptors
/// may list it) is kept in `retired` for [`RETIRED_KEY_KEPT`], its circuit rebuilt if it
/// closes ([`refresh_retired`]), whether or not the circuit is up at rotation time;
/// retired slots past that time, whose circuit is down after [`MAX_INTRO_FAILURES`]
/// failed rebuilds, or beyond [`MAX_RETIRED`] (oldest first) are dropped, which closes
/// their circuits and frees their replay caches.
fn rotate_slots(slots: &mut Vec<IntroSlot>, retired: &mut Vec<Retired>, now: Instant) {
    let (due, keep): (Vec<IntroSlot>, Vec<IntroSlot>) = std::mem::take(slots)
        .into_iter()
        .partition(|s| s.rotation_due(now));
    *slots = keep;
    for slot in due {
        let len = lock(&slot.replay).len();
        debug!(
            "onion service: introduction point keys rotated ({len} introductions remembered, \
             {} s old)",
            now.saturating_duration_since(slot.created).as_secs()
        );
        if slot.ever_up.load(std::sync::atomic::Ordering::Acquire) {
            // From now on its decryptions count against the retired points' budget: the
            // current points' budget covers the points that replace it.
            slot.retired
                .store(true, std::sync::atomic::Ordering::Release);
            retired.push(Retired {
                slot,
                until: now + RETIRED_KEY_KEPT,
            });
        }
    }
    retired.retain(|r| {
        now < r.until
            && (r.slot.running.load(std::sync::atomic::Ordering::Acquire)
                || r.slot.failures < MAX_INTRO_FAILURES)
    });
    while retired.len() > MAX_RETIRED {
        let oldest = retired
            .iter()
            .enumerate()
            .min_by_key(|(_, r)| r.until)
            .map(|(i, _)| i);
        match oldest {
            Some(i) => drop(retired.remove(i)),
            None => break,
        }
    }
}

/// What the introduction tasks share.
struct Shared {
    client: Client,
    identity: IdentityKeypair,
    address: OnionAddress,
    ports: Arc<Vec<(u16, SocketAddr)>>,
    rendezvous: Arc<RendezvousSlots>,
    /// The service-wide budgets (decryptions, rendezvous started).
    budget: Mutex<IntroBudget>,
    /// Each introduction point's decryption budget: (per second, burst).
    intro_point_budget: (u32, u32),
    /// Puzzle difficulty, if the service requires one.
    pow_difficulty: Option<u8>,
    /// The puzzle seeds: (current, previous). Rotated before the current one expires; a
    /// client may still hold a descriptor with the previous one.
    pow: Mutex<(Option<PowParams>, Option<PowParams>)>,
    connect_timeout: Duration,
    rendezvous_idle: Duration,
    periods: PeriodParams,
    /// Becomes true when the service stops.
    stopped: watch::Receiver<bool>,
}

/// Starts the service `cfg` on `client` (which must be bootstrapped). Logs the address at
/// INFO (a service's own address is not a secret of its operator's).
pub async fn launch(client: Client, cfg: ServiceConfig) -> Result<OnionService, ServiceError> {
    check_config(&cfg)?;
    let identity = load_or_create_service_key(&cfg.key_file)?;
    let address = OnionAddress::from_identity(identity.public())?;
    let pow = cfg.pow_difficulty.map(new_pow_seed);
    let (stop, stopped) = watch::channel(false);
    let shared = Arc::new(Shared {
        client,
        identity,
        address,
        ports: Arc::new(cfg.ports.clone()),
        rendezvous: RendezvousSlots::new(cfg.max_rendezvous),
        budget: Mutex::new(IntroBudget::new(
            cfg.intros_per_second,
            (cfg.intro_point_rate, cfg.intro_point_burst),
            Instant::now(),
        )),
        intro_point_budget: (cfg.intro_point_rate, cfg.intro_point_burst),
        pow_difficulty: cfg.pow_difficulty,
        pow: Mutex::new((pow, None)),
        connect_timeout: cfg.connect_timeout,
        rendezvous_idle: cfg.rendezvous_idle.max(Duration::from_secs(1)),
        periods: PeriodParams::default(),
        stopped,
    });
    let (tx, rx) = watch::channel(0u64);
    info!("onion service {address} starting");
    let task = tokio::spawn(run(shared, tx));
    Ok(OnionService {
        address,
        published: rx,
        task,
        stop,
    })
}

/// Refuses a configuration the service cannot run with: no port, or a puzzle difficulty
/// outside 1..=[`MAX_CLIENT_POW_DIFFICULTY`]. The descriptor format allows up to
/// [`crate::onion::pow::MAX_POW_DIFFICULTY`], but allium clients refuse to solve more than
/// their own limit, so a harder puzzle would make the service silently unreachable.
fn check_config(cfg: &ServiceConfig) -> Result<(), ServiceError> {
    if cfg.ports.is_empty() {
        return Err(ServiceError::Config("no port configured".into()));
    }
    if let Some(d) = cfg.pow_difficulty {
        if !(1..=MAX_CLIENT_POW_DIFFICULTY).contains(&d) {
            return Err(ServiceError::Config(format!(
                "puzzle difficulty {d} is outside 1..={MAX_CLIENT_POW_DIFFICULTY} (clients \
                 refuse harder puzzles, so the service would be unreachable)"
            )));
        }
    }
    Ok(())
}

/// A fresh puzzle seed valid for [`POW_SEED_LIFETIME`].
fn new_pow_seed(difficulty: u8) -> PowParams {
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    PowParams {
        difficulty,
        seed,
        expires: now_unix().saturating_add(POW_SEED_LIFETIME),
    }
}

/// Replaces the current puzzle seed once fewer than [`MAX_DESCRIPTOR_LIFETIME`] seconds
/// of it are left, keeping it as the previous one: every descriptor a client may still
/// hold (3 h at most) names a seed that is accepted until it expires.
fn rotate_pow(shared: &Shared, now: u64) {
    if let Some(difficulty) = shared.pow_difficulty {
        rotate_pow_state(&mut lock(&shared.pow), difficulty, now);
    }
}

/// See [`rotate_pow`].
fn rotate_pow_state(pow: &mut (Option<PowParams>, Option<PowParams>), difficulty: u8, now: u64) {
    let due = pow
        .0
        .is_none_or(|p| p.expires.saturating_sub(now) < u64::from(MAX_DESCRIPTOR_LIFETIME));
    if due {
        let previous = pow.0;
        *pow = (Some(new_pow_seed(difficulty)), previous);
    }
}

/// The service's main loop: introduction points and descriptor publication.
async fn run(shared: Arc<Shared>, published: watch::Sender<u64>) {
    let mut slots: Vec<IntroSlot> = Vec::new();
    let mut retired: Vec<Retired> = Vec::new();
    // Current slots made so far: only the first INTRO_POINTS start with a full bucket.
    let mut slots_made = 0usize;
    // Per period number: the introduction points' auth keys last uploaded, and when.
    let mut uploaded: Vec<(u64, Vec<[u8; 32]>, Instant)> = Vec::new();
    let mut revision = 0u64;
    // After a failed upload, wait before the next attempt (directories may be busy).
    let mut retry_at = Instant::now();
    loop {
        rotate_slots(&mut slots, &mut retired, Instant::now());
        refresh_slots(&shared, &mut slots, &mut slots_made);
        refresh_retired(&shared, &mut retired);
        let up: Vec<&IntroSlot> = slots
            .iter()
            .filter(|s| s.up.load(std::sync::atomic::Ordering::Acquire))
            .collect();
        let now = now_unix();
        rotate_pow(&shared, now);
        // What the descriptor depends on: the points' auth keys and the puzzle seed.
        let mut keys: Vec<[u8; 32]> = up.iter().map(|s| *s.auth.public().as_bytes()).collect();
        if let Some(p) = lock(&shared.pow).0 {
            keys.push(p.seed);
        }
        let periods = periods_to_serve(&shared.periods, now);
        uploaded.retain(|(n, _, _)| periods.iter().any(|p| p.number == *n));
        for (i, period) in periods.iter().enumerate() {
            if up.is_empty() || Instant::now() < retry_at {
                break;
            }
            let stale = uploaded
                .iter()
                .find(|(n, _, _)| *n == period.number)
                .is_none_or(|(_, k, at)| *k != keys || at.elapsed() >= REUPLOAD_EVERY);
            if !stale {
                continue;
            }
            // Revisions follow the clock so a restarted service never rolls back.
            revision = now.max(revision + 1);
            match publish(&shared, &up, *period, revision).await {
                Ok(stored) if stored > 0 => {
                    debug!("onion service: descriptor stored at {stored} directories");
                    uploaded.retain(|(n, _, _)| *n != period.number);
                    uploaded.push((period.number, keys.clone(), Instant::now()));
                    // Published = the current period's descriptor is stored.
                    if i == 0 {
                        published.send_modify(|n| *n += 1);
                    }
                }
                Ok(_) => {
                    debug!("onion service: no directory stored the descriptor");
                    retry_at = Instant::now() + UPLOAD_RETRY;
                }
                Err(e) => {
                    debug!("onion service: cannot publish: {e}");
                    retry_at = Instant::now() + UPLOAD_RETRY;
                }
            }
        }
        tokio::time::sleep(TICK).await;
    }
}

/// The periods a descriptor is published for at `now`: the current one and, when the
/// next starts within [`NEXT_PERIOD_AHEAD`], the next one too (so clients whose clock
/// has already turned find it; protocol.md §8.3).
fn periods_to_serve(params: &PeriodParams, now: u64) -> Vec<crate::onion::TimePeriod> {
    let Ok(current) = params.period_at(now) else {
        return Vec::new();
    };
    let mut out = vec![current];
    let next_start = current
        .number
        .saturating_add(1)
        .saturating_mul(params.length)
        .saturating_add(params.offset);
    if next_start.saturating_sub(now) <= NEXT_PERIOD_AHEAD {
        out.push(crate::onion::TimePeriod {
            length: current.length,
            number: current.number.saturating_add(1),
        });
    }
    out
}

/// Keeps [`INTRO_POINTS`] slots, each with a task owning its introduction circuit.
/// `made` counts the slots made so far: the first [`INTRO_POINTS`] get a full decryption
/// bucket, later ones (replacing a slot) an empty one, so the current points' tokens
/// together never exceed the joint bucket that covers them ([`IntroBudget::current`]).
/// A new point is not in any descriptor before it is established, so its bucket has
/// filled for a while before clients can use it.
fn refresh_slots(shared: &Arc<Shared>, slots: &mut Vec<IntroSlot>, made: &mut usize) {
    let Ok(consensus) = shared.client.live_consensus() else {
        return;
    };
    // A slot whose relay left the consensus or failed too often is replaced (new keys).
    slots.retain(|s| {
        s.running.load(std::sync::atomic::Ordering::Acquire) || s.worth_rebuilding(&consensus)
    });
    while slots.len() < INTRO_POINTS {
        let mut candidates: Vec<&ConsensusEntry> = consensus
            .relays()
            .iter()
            .filter(|r| r.has(crate::dir::path::USABLE))
            .filter(|r| !slots.iter().any(|s| s.relay.identity == r.identity))
            .collect();
        candidates.shuffle(&mut rand::rng());
        let Some(relay) = candidates.first() else {
            break;
        };
        let (rate, burst) = shared.intro_point_budget;
        let gate = if *made < INTRO_POINTS {
            IntroGate::new(rate, burst, Instant::now())
        } else {
            IntroGate::empty(rate, burst, Instant::now())
        };
        *made = made.saturating_add(1);
        slots.push(IntroSlot::new((*relay).clone(), Instant::now(), gate));
    }
    for slot in slots.iter_mut() {
        start_slot(shared, slot);
    }
    // Established slots are healthy: forget their past failures.
    for slot in slots.iter_mut() {
        if slot.up.load(std::sync::atomic::Ordering::Acquire) {
            slot.failures = 0;
        }
    }
}

/// Keeps the retired slots' circuits up until they expire (descriptors naming their keys
/// are still out there): a closed one is rebuilt like a current slot's, and a slot whose
/// relay left the consensus or failed too often is dropped.
fn refresh_retired(shared: &Arc<Shared>, retired: &mut Vec<Retired>) {
    let Ok(consensus) = shared.client.live_consensus() else {
        return;
    };
    retired.retain(|r| {
        r.slot.running.load(std::sync::atomic::Ordering::Acquire)
            || r.slot.worth_rebuilding(&consensus)
    });
    for r in retired.iter_mut() {
        start_slot(shared, &mut r.slot);
        if r.slot.up.load(std::sync::atomic::Ordering::Acquire) {
            r.slot.failures = 0;
        }
    }
}

/// Starts a task building and owning `slot`'s introduction circuit, unless one runs.
fn start_slot(shared: &Arc<Shared>, slot: &mut IntroSlot) {
    if slot.running.load(std::sync::atomic::Ordering::Acquire) {
        return;
    }
    let Ok(target) = relay_target(&slot.relay, now_unix()) else {
        slot.failures = MAX_INTRO_FAILURES;
        return;
    };
    slot.running
        .store(true, std::sync::atomic::Ordering::Release);
    // Counted now; a task that establishes resets nothing, so a relay that keeps
    // closing our circuits is eventually replaced.
    slot.failures += 1;
    let task = IntroTask {
        shared: Arc::clone(shared),
        target,
        auth: Arc::clone(&slot.auth),
        enc: Arc::clone(&slot.enc),
        replay: Arc::clone(&slot.replay),
        gate: Arc::clone(&slot.gate),
        retired: Arc::clone(&slot.retired),
        up: Arc::clone(&slot.up),
        ever_up: Arc::clone(&slot.ever_up),
        close: slot.close.subscribe(),
    };
    let running = Arc::clone(&slot.running);
    let established = Arc::clone(&slot.up);
    tokio::spawn(async move {
        task.run().await;
        established.store(false, std::sync::atomic::Ordering::Release);
        running.store(false, std::sync::atomic::Ordering::Release);
    });
}

/// Builds, signs and uploads the descriptor listing `up` to every relay of the ring.
/// Returns how many stored it.
async fn publish(
    shared: &Arc<Shared>,
    up: &[&IntroSlot],
    period: crate::onion::TimePeriod,
    revision: u64,
) -> Result<usize, String> {
    let blinded = BlindedKeypair::derive(&shared.identity, period).map_err(|e| e.to_string())?;
    let intro_points = up
        .iter()
        .map(|s| IntroPointInfo {
            relay_identity: s.relay.identity,
            link_addrs: s.relay.addrs.clone(),
            onion_cert: s.relay.onion_cert.clone(),
            auth_key: s.auth.public(),
            enc_key: *s.enc.public(),
        })
        .collect();
    let inner = InnerDescriptor {
        intro_points,
        pow: lock(&shared.pow).0,
    };
    let desc = SignedOnionDescriptor::build(
        &mut rand::rng(),
        &shared.identity,
        &blinded,
        &inner,
        &DescriptorParams {
            revision,
            created: now_unix(),
            lifetime: MAX_DESCRIPTOR_LIFETIME,
        },
    )
    .map_err(|e| e.to_string())?
    .to_bytes()
    .map_err(|e| e.to_string())?;
    let consensus = shared.client.live_consensus().map_err(|e| e.to_string())?;
    let dirs: Vec<RelayTarget> = responsible_hsdirs(
        consensus.relays(),
        blinded.public(),
        period,
        &HsDirParams::default(),
    )
    .iter()
    .filter_map(|id| consensus.relay(id))
    .filter_map(|e| relay_target(e, now_unix()).ok())
    .collect();
    let timeout = shared.client.config().circuit_timeout;
    let uploads = dirs.into_iter().map(|dir| {
        let client = shared.client.clone();
        let req = DirRequest::PutOnionDescriptor(desc.clone());
        tokio::spawn(async move {
            let circ = client.build_circuit_ending(&dir).await.ok()?;
            let handle = circ.into_handle();
            let resp = super::dirclient::dir_request(&handle, &req, timeout).await;
            handle.close().await;
            match resp {
                Ok(r) if r.status == DirStatus::Ok => Some(()),
                Ok(r) => {
                    debug!(
                        "onion service: a directory refused the descriptor: {}",
                        r.reason()
                    );
                    None
                }
                Err(e) => {
                    debug!("onion service: upload failed: {e}");
                    None
                }
            }
        })
    });
    let mut stored = 0;
    for u in uploads.collect::<Vec<_>>() {
        if let Ok(Some(())) = u.await {
            stored += 1;
        }
    }
    Ok(stored)
}

/// The task owning one introduction circuit.
struct IntroTask {
    shared: Arc<Shared>,
    target: RelayTarget,
    auth: Arc<IdentityKeypair>,
    enc: Arc<OnionKeypair>,
    replay: Arc<Mutex<ReplayCache>>,
    gate: Arc<Mutex<IntroGate>>,
    /// The slot was retired: charge its group's budget ([`PointGroup::Retired`]).
    retired: Arc<std::sync::atomic::AtomicBool>,
    up: Arc<std::sync::atomic::AtomicBool>,
    ever_up: Arc<std::sync::atomic::AtomicBool>,
    /// The slot's close signal (the slot was retired and dropped, or told to close).
    close: watch::Receiver<bool>,
}

impl IntroTask {
    async fn run(self) {
        let mut circ = match self.shared.client.build_circuit_ending(&self.target).await {
            Ok(c) => c,
            Err(e) => {
                debug!("onion service: introduction circuit failed: {e}");
                return;
            }
        };
        circ.set_accept(&relay_sets::AT_SERVICE_INTRO);
        let binding = circ.last_hop_binding();
        let msg = match build_establish_intro(&self.auth, None, &binding) {
            Ok(m) => m,
            Err(e) => {
                warn!("onion service: cannot build ESTABLISH_INTRO: {e}");
                return;
            }
        };
        if let Err(e) = circ
            .send_to_last(RelayMsg::Onion(OnionMsg::EstablishIntro(msg)))
            .await
        {
            debug!("onion service: ESTABLISH_INTRO not sent: {e}");
            return;
        }
        let last = circ.len().saturating_sub(1);
        match circ.recv_timeout(ESTABLISH_TIMEOUT).await {
            Ok((hop, cell, _)) if hop == last => match cell.msg() {
                RelayMsg::Onion(OnionMsg::IntroEstablished) => {}
                _ => {
                    debug!("onion service: unexpected answer to ESTABLISH_INTRO");
                    return;
                }
            },
            Ok(_) => return,
            Err(e) => {
                debug!("onion service: no INTRO_ESTABLISHED: {e}");
                return;
            }
        }
        self.ever_up
            .store(true, std::sync::atomic::Ordering::Release);
        self.up.store(true, std::sync::atomic::Ordering::Release);
        let mut stopped = self.shared.stopped.clone();
        let mut close = self.close.clone();
        loop {
            let received = tokio::select! {
                r = circ.recv() => r,
                // The service stopped. (Its handle being dropped is not a stop.)
                _ = async {
                    if stopped.wait_for(|s| *s).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                } => {
                    circ.destroy().await;
                    return;
                }
                // The slot was dropped (its key retired for good) or told to close.
                _ = async { let _ = close.wait_for(|s| *s).await; } => {
                    debug!("onion service: retired introduction point closed");
                    circ.destroy().await;
                    return;
                }
            };
            let (hop, cell, _) = match received {
                Ok(v) => v,
                Err(e) => {
                    debug!("onion service: introduction circuit closed: {e}");
                    return;
                }
            };
            match cell.into_parts() {
                (_, RelayMsg::Drop) => {}
                (None, RelayMsg::Onion(OnionMsg::Introduce2(intro))) if hop == last => {
                    self.on_introduce2(intro);
                }
                _ => {
                    debug!("onion service: unexpected message on an introduction circuit");
                    circ.destroy().await;
                    return;
                }
            }
        }
    }

    /// Screens the introduction ([`screen_introduction`]: this point's budget, the
    /// service's decryption budget, [`Self::open_introduction`], the service's rate of
    /// answered introductions); an accepted one is answered in its own task.
    fn on_introduce2(&self, intro: Introduce) {
        if intro.auth_key() != self.auth.public().as_bytes() {
            debug!("onion service: INTRODUCE2 for another auth key");
            return;
        }
        let group = if self.retired.load(std::sync::atomic::Ordering::Acquire) {
            PointGroup::Retired
        } else {
            PointGroup::Current
        };
        let screened = screen_introduction(
            &self.gate,
            group,
            &self.shared.budget,
            Instant::now(),
            || self.open_introduction(&intro),
            |(plain, hs)| {
                let slot = self.take_rendezvous_slot(intro.client_x())?;
                Some((plain, hs, slot))
            },
        );
        let (plain, hs, slot) = match screened {
            Ok(v) => v,
            Err(Dropped::PointBudget) => {
                let refused = lock(&self.gate).refused();
                // Counted always; logged for the first and then every 100th, so a flood
                // does not flood the log too.
                if refused == 1 || refused % 100 == 0 {
                    debug!(
                        "onion service: introduction dropped (introduction point over its \
                         budget; {refused} refused so far at this point)"
                    );
                }
                return;
            }
            Err(Dropped::DecryptBudget) => {
                let refused = lock(&self.shared.budget).decrypt(group).refused();
                if refused == 1 || refused % 100 == 0 {
                    debug!(
                        "onion service: introduction dropped ({group:?} introduction points \
                         over their joint budget; {refused} refused so far)"
                    );
                }
                return;
            }
            // Logged by open_introduction and take_rendezvous_slot.
            Err(Dropped::Invalid | Dropped::NoSlot) => return,
            Err(Dropped::MeetRate) => {
                debug!("onion service: introduction dropped (rate limit)");
                return;
            }
        };
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            if let Err(e) = meet(&shared, plain, hs, slot).await {
                debug!("onion service: rendezvous failed: {e}");
            }
        });
    }

    /// Decryption, plaintext, puzzle check, replay check: the introduction's plaintext
    /// and handshake state, or `None` (logged at debug) if it is not worth a rendezvous.
    /// Nothing is recorded in the replay cache yet ([`Self::take_rendezvous_slot`]).
    fn open_introduction(
        &self,
        intro: &Introduce,
    ) -> Option<(IntroducePlaintext, crate::onion::handshake::HsServiceIntro)> {
        let now = now_unix();
        let Ok(current) = self.shared.periods.period_at(now) else {
            return None;
        };
        // A client may hold the descriptor of the neighbouring period (§8.4 accepts
        // |N − N(now)| ≤ 1): try the subcredential of each.
        let mut opened = None;
        for number in [
            Some(current.number),
            current.number.checked_sub(1),
            current.number.checked_add(1),
        ]
        .into_iter()
        .flatten()
        {
            let period = crate::onion::TimePeriod {
                length: current.length,
                number,
            };
            let Ok(blinded) = BlindedPublic::derive(&self.shared.address, period) else {
                continue;
            };
            let keys = IntroKeys {
                auth_key: self.auth.public(),
                enc_key: *self.enc.public(),
                subcred: subcredential(&self.shared.identity.public(), &blinded),
            };
            if let Ok(v) =
                service_open_introduce(&self.enc, &keys, intro.client_x(), intro.encrypted())
            {
                opened = Some((v, blinded));
                break;
            }
        }
        let Some(((plaintext, hs), blinded)) = opened else {
            debug!("onion service: INTRODUCE2 does not decrypt");
            return None;
        };
        let Ok(plain) = IntroducePlaintext::parse(&plaintext) else {
            debug!("onion service: malformed introduction plaintext");
            return None;
        };
        if self.shared.pow_difficulty.is_some() {
            let (current, previous) = *lock(&self.shared.pow);
            let ok = plain.pow_nonce.is_some_and(|nonce| {
                [current, previous].into_iter().flatten().any(|p| {
                    now < p.expires
                        && crate::onion::pow::verify(
                            p.difficulty,
                            &p.seed,
                            &blinded,
                            intro.client_x(),
                            &nonce,
                        )
                        .is_ok()
                })
            });
            if !ok {
                debug!("onion service: introduction without a valid puzzle solution");
                return None;
            }
        }
        // Checked here, before the service-wide rate of answered introductions: a replay
        // (an introduction point may send one INTRODUCE2 again and again) must never use
        // up that rate, or one valid introduction would crowd out everyone. It is only
        // recorded once the introduction is acted on (take_rendezvous_slot): one dropped
        // for the rate or for want of a slot takes no room in the cache, and acting on it
        // later, if it comes again, still makes one rendezvous per X at most.
        if lock(&self.replay).check(intro.client_x()).is_err() {
            debug!("onion service: replayed or refused introduction");
            return None;
        }
        Some((plain, hs))
    }

    /// For an introduction within the service's rate: a rendezvous slot, and `X`
    /// recorded in the replay cache (the cache locked across both, so the slot is taken
    /// only for an `X` recorded now, never for a repeat). `None` (logged at debug) if no
    /// slot is free or the cache refuses `X`.
    fn take_rendezvous_slot(&self, client_x: &[u8; 32]) -> Option<RendezvousSlot> {
        let mut replay = lock(&self.replay);
        if replay.check(client_x).is_err() {
            debug!("onion service: replayed or refused introduction");
            return None;
        }
        let Some(slot) = self.shared.rendezvous.try_acquire() else {
            debug!("onion service: introduction dropped (rendezvous circuits at the limit)");
            return None;
        };
        // Cannot fail: checked above under the same lock.
        replay.check_and_insert(client_x).ok()?;
        Some(slot)
    }
}

/// Whether the service may meet the client at the rendezvous point it named (`listed` is
/// the consensus entry of the named identity). Only a relay of our consensus flagged
/// Running and Valid, at one of its listed addresses: otherwise a client could make our
/// middle relay connect to any host and port it names, or to a relay the authorities no
/// longer vouch for.
fn check_rendezvous_point(
    listed: Option<&ConsensusEntry>,
    plain: &IntroducePlaintext,
) -> Result<(), &'static str> {
    let listed = listed.ok_or("rendezvous point not in the consensus")?;
    if !listed.has(crate::dir::path::USABLE) {
        return Err("rendezvous point not flagged Running and Valid");
    }
    if !listed.addrs.contains(&plain.rend_addr) {
        return Err("rendezvous point address not the listed one");
    }
    Ok(())
}

/// Builds a circuit to the client's rendezvous point, sends RENDEZVOUS1 and starts
/// serving the client's streams on it.
async fn meet(
    shared: &Arc<Shared>,
    plain: IntroducePlaintext,
    hs: crate::onion::handshake::HsServiceIntro,
    slot: RendezvousSlot,
) -> Result<(), String> {
    let onion = plain
        .rend_onion_cert
        .verify(now_unix())
        .map_err(|e| format!("rendezvous point certificate: {e}"))?;
    if onion.identity() != &plain.rend_identity {
        return Err("rendezvous point certificate names another relay".into());
    }
    let consensus = shared.client.live_consensus().map_err(|e| e.to_string())?;
    if let Err(why) = check_rendezvous_point(consensus.relay(&plain.rend_identity), &plain) {
        debug!("onion service: rendezvous point refused: {why}");
        return Err(why.into());
    }
    let target = RelayTarget {
        addr: plain.rend_addr,
        identity: plain.rend_identity,
        onion,
    };
    let (keys, reply) = hs.rendezvous(&mut rand::rng()).map_err(|e| e.to_string())?;
    let mut circ: ClientCircuit = shared
        .client
        .build_circuit_ending(&target)
        .await
        .map_err(|e| e.to_string())?;
    // Nothing is expected from the rendezvous point itself; once the end-to-end hop is
    // added, the client's relay messages arrive through it.
    circ.send_to_last(RelayMsg::Onion(OnionMsg::Rendezvous1(Rendezvous1 {
        cookie: plain.cookie,
        handshake: reply,
    })))
    .await
    .map_err(|e| e.to_string())?;
    circ.push_end_to_end_hop(&keys, true)
        .map_err(|e| e.to_string())?;
    circ.set_accept(&relay_sets::AT_RELAY);
    super::reactor::spawn_service(
        circ,
        ServiceEnd {
            ports: Arc::clone(&shared.ports),
            connect_timeout: shared.connect_timeout,
            idle_timeout: shared.rendezvous_idle,
            slot: Some(slot),
        },
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`screen_introduction`] whose `act` always finds a slot.
    fn screen<T>(
        point: &Mutex<IntroGate>,
        group: PointGroup,
        budget: &Mutex<IntroBudget>,
        now: Instant,
        open: impl FnOnce() -> Option<T>,
    ) -> Result<T, Dropped> {
        screen_introduction(point, group, budget, now, open, Some)
    }

    /// The rate of answered introductions is checked before `act` (which takes a
    /// rendezvous slot and records the introduction as seen): an introduction over the
    /// rate takes no slot and is not recorded; one that finds no slot gives its place in
    /// the rate back.
    #[test]
    fn rate_is_checked_before_a_slot_is_taken_and_refunded_without_one() {
        let t0 = Instant::now();
        let budget = Mutex::new(IntroBudget::new(2, (100, 100), t0));
        let gate = Mutex::new(IntroGate::new(100, 100, t0));
        let mut acted = 0;
        // No slot free, many times over: every one is refunded, the rate stays unused.
        for _ in 0..10 {
            let r = screen_introduction(
                &gate,
                PointGroup::Current,
                &budget,
                t0,
                || Some(()),
                |()| {
                    acted += 1;
                    None::<()>
                },
            );
            assert_eq!(r, Err(Dropped::NoSlot));
        }
        assert_eq!(acted, 10);
        assert_eq!(lock(&budget).window.1, 0);
        // Slots free: the rate (2 per second) admits two, the third never reaches `act`.
        for expect in [Ok(()), Ok(()), Err(Dropped::MeetRate)] {
            let r = screen_introduction(
                &gate,
                PointGroup::Current,
                &budget,
                t0,
                || Some(()),
                |()| {
                    acted += 1;
                    Some(())
                },
            );
            assert_eq!(r, expect);
        }
        assert_eq!(acted, 12);
        // A refund for a window that has since been replaced lowers nothing.
        let t1 = t0 + Duration::from_secs(1);
        let mut b = lock(&budget);
        assert!(b.admit_meeting(t1));
        b.refund_meeting(t0);
        assert_eq!(b.window, (t1, 1));
    }

    #[test]
    fn next_period_is_served_only_near_the_boundary() {
        let p = PeriodParams {
            length: 86_400,
            offset: 43_200,
        };
        let start_of_10 = 43_200 + 10 * 86_400;
        assert_eq!(periods_to_serve(&p, start_of_10).len(), 1);
        let near = start_of_10 + 86_400 - NEXT_PERIOD_AHEAD;
        let served = periods_to_serve(&p, near);
        assert_eq!(served.len(), 2);
        assert_eq!((served[0].number, served[1].number), (10, 11));
        assert_eq!(periods_to_serve(&p, near - 1).len(), 1);
    }

    #[test]
    fn puzzle_seed_rotates_before_expiry_keeping_the_previous_one() {
        let now = now_unix();
        let mut state = (Some(new_pow_seed(8)), None);
        let first = state.0.unwrap();
        rotate_pow_state(&mut state, 8, now);
        assert_eq!(state.0, Some(first), "a fresh seed is kept");
        // Less than a descriptor lifetime left: a new seed, the old one still accepted.
        let later = first.expires - u64::from(MAX_DESCRIPTOR_LIFETIME) + 1;
        rotate_pow_state(&mut state, 8, later);
        assert_ne!(state.0.unwrap().seed, first.seed);
        assert_eq!(state.1, Some(first));
    }

    fn test_slot(created: Instant, running: bool) -> IntroSlot {
        let id = IdentityKeypair::generate(&mut rand::rng());
        let onion = OnionKeypair::generate(&mut rand::rng());
        let relay = ConsensusEntry {
            identity: id.public(),
            onion_cert: crate::crypto::OnionKeyCert::sign(&id, onion.public(), u64::MAX),
            addrs: Vec::new(),
            flags: crate::dir::RelayFlags::empty(),
            bandwidth: 0,
            exit_policy: crate::dir::policy::ExitPolicy::reject_all(),
            family: Vec::new(),
        };
        let slot = IntroSlot::new(relay, created, IntroGate::new(10, 50, created));
        slot.running
            .store(running, std::sync::atomic::Ordering::Release);
        slot.ever_up
            .store(running, std::sync::atomic::Ordering::Release);
        slot
    }

    fn fill(slot: &IntroSlot, n: u32) {
        let mut cache = lock(&slot.replay);
        for i in 0..n {
            let mut x = [0u8; 32];
            x[..4].copy_from_slice(&i.to_be_bytes());
            cache.check_and_insert(&x).unwrap();
        }
    }

    #[test]
    fn rendezvous_point_must_be_listed_usable_and_at_its_address() {
        let mut entry = test_slot(Instant::now(), false).relay;
        let addr: SocketAddr = "127.0.0.1:9001".parse().unwrap();
        entry.addrs = vec![addr];
        entry.flags = crate::dir::path::USABLE;
        let plain = IntroducePlaintext {
            cookie: [1; crate::cell::onion_msg::REND_COOKIE_LEN],
            rend_identity: entry.identity,
            rend_addr: addr,
            rend_onion_cert: entry.onion_cert.clone(),
            pow_nonce: None,
        };
        assert_eq!(check_rendezvous_point(Some(&entry), &plain), Ok(()));
        assert!(check_rendezvous_point(None, &plain).is_err());
        let elsewhere = IntroducePlaintext {
            rend_addr: "127.0.0.1:22".parse().unwrap(),
            ..plain.clone()
        };
        assert!(check_rendezvous_point(Some(&entry), &elsewhere).is_err());
        for flags in [
            crate::dir::RelayFlags::RUNNING,
            crate::dir::RelayFlags::VALID,
            crate::dir::RelayFlags::empty(),
        ] {
            entry.flags = flags;
            assert_eq!(
                check_rendezvous_point(Some(&entry), &plain),
                Err("rendezvous point not flagged Running and Valid")
            );
        }
    }

    #[test]
    fn intro_gate_admits_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut gate = IntroGate::new(25, 200, t0);
        for i in 0..200 {
            assert!(gate.admit_at(t0), "burst token {i}");
        }
        assert!(!gate.admit_at(t0), "the burst is spent");
        assert!(!gate.admit_at(t0 + Duration::from_millis(39)));
        assert_eq!(gate.refused(), 2);
        // 25 per second: one token every 40 ms.
        assert!(gate.admit_at(t0 + Duration::from_millis(40)));
        assert!(!gate.admit_at(t0 + Duration::from_millis(40)));
        // One second later: 25 more, not more.
        let t1 = t0 + Duration::from_millis(1040);
        let admitted = (0..100).filter(|_| gate.admit_at(t1)).count();
        assert_eq!(admitted, 25);
        // A long pause refills to the burst only.
        let t2 = t1 + Duration::from_secs(3600);
        let admitted = (0..1000).filter(|_| gate.admit_at(t2)).count();
        assert_eq!(admitted, 200);
        assert_eq!(gate.refused(), 2 + 1 + 75 + 800);
        // A clock that seems to go back refills nothing and does not panic.
        assert!(!gate.admit_at(t0));
    }

    #[test]
    fn intro_gate_refills_when_called_faster_than_its_quantum() {
        // 1 token per second = one thousandth per ms; calls every 0.5 ms each earn half a
        // thousandth, which must carry over (rounded away, 2 s of calls refilled nothing).
        let t0 = Instant::now();
        let mut gate = IntroGate::new(1, 1, t0);
        assert!(gate.admit_at(t0));
        let admitted = (1..=4000u64)
            .filter(|i| gate.admit_at(t0 + Duration::from_micros(500 * i)))
            .count();
        assert_eq!(admitted, 2, "one token per second over 2 s");
        // An odd rate whose thousandths do not divide a nanosecond count evenly.
        // (A burst the test never reaches: at the burst, fractions above it are dropped.)
        let mut gate = IntroGate::new(7, 100, t0);
        assert_eq!((0..100).filter(|_| gate.admit_at(t0)).count(), 100);
        let admitted = (1..=30_000u64)
            .filter(|i| gate.admit_at(t0 + Duration::from_micros(100 * i)))
            .count();
        assert_eq!(admitted, 21, "7 per second over 3 s");
    }

    #[test]
    fn puzzle_harder_than_clients_solve_is_refused_at_launch() {
        let target: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let mut cfg = ServiceConfig::new(PathBuf::from("unused.key"), vec![(80, target)]);
        assert!(check_config(&cfg).is_ok());
        for ok in [1, 12, MAX_CLIENT_POW_DIFFICULTY] {
            cfg.pow_difficulty = Some(ok);
            assert!(check_config(&cfg).is_ok(), "difficulty {ok}");
        }
        for bad in [0, MAX_CLIENT_POW_DIFFICULTY + 1, 32, 33, u8::MAX] {
            cfg.pow_difficulty = Some(bad);
            let err = check_config(&cfg).unwrap_err().to_string();
            assert!(err.contains("outside 1..=24"), "difficulty {bad}: {err}");
        }
        cfg.pow_difficulty = None;
        cfg.ports.clear();
        assert!(check_config(&cfg).is_err());
    }

    /// Introduction points A and B deliver garbage far beyond their budget, C honest
    /// introductions at its rate: every honest one is answered (the garbage is never
    /// charged to the service-wide rate), and the decryptions stay within the points'
    /// budgets.
    #[test]
    fn garbage_from_two_points_does_not_crowd_out_the_third() {
        let t0 = Instant::now();
        let gates: Vec<Mutex<IntroGate>> = (0..3)
            .map(|_| Mutex::new(IntroGate::new(10, 50, t0)))
            .collect();
        let budget = Mutex::new(IntroBudget::new(20, (10, 50), t0));
        let mut decrypted = 0u32;
        let mut answered = 0u32;
        let seconds = 10u64;
        // Every 5 ms: A and B one garbage INTRODUCE2 each (200/s), C one honest
        // introduction every 100 ms (10/s).
        for step in 0..(seconds * 200) {
            let now = t0 + Duration::from_millis(5 * step);
            for gate in &gates[..2] {
                let r = screen(gate, PointGroup::Current, &budget, now, || {
                    decrypted += 1;
                    None::<()>
                });
                assert_ne!(r, Err(Dropped::MeetRate));
            }
            if step % 20 == 0 {
                let r = screen(&gates[2], PointGroup::Current, &budget, now, || {
                    decrypted += 1;
                    Some(())
                });
                assert_eq!(r, Ok(()), "honest introduction dropped at step {step}");
                answered += 1;
            }
        }
        assert_eq!(answered, 10 * seconds as u32);
        // Decryptions: each garbage point its burst plus its rate, C its 100.
        assert!(
            decrypted <= 2 * (50 + 10 * seconds as u32) + 100,
            "{decrypted}"
        );
    }

    /// The service-wide rate still caps answered introductions, and all points together
    /// (retired ones included) never decrypt more than INTRO_POINTS + 1 times one
    /// point's budget.
    #[test]
    fn service_wide_budgets_still_bound_the_work() {
        let t0 = Instant::now();
        // Twelve points (three current, nine retired), all flooding valid introductions.
        let gates: Vec<(Mutex<IntroGate>, PointGroup)> = (0..INTRO_POINTS + MAX_RETIRED)
            .map(|i| {
                let group = if i < INTRO_POINTS {
                    PointGroup::Current
                } else {
                    PointGroup::Retired
                };
                (Mutex::new(IntroGate::new(10, 50, t0)), group)
            })
            .collect();
        let budget = Mutex::new(IntroBudget::new(20, (10, 50), t0));
        let (mut decrypted, mut answered, mut over_rate) = (0u64, 0u64, 0u64);
        let seconds = 20u64;
        for step in 0..(seconds * 100) {
            let now = t0 + Duration::from_millis(10 * step);
            for (gate, group) in &gates {
                match screen(gate, *group, &budget, now, || {
                    decrypted += 1;
                    Some(())
                }) {
                    Ok(()) => answered += 1,
                    Err(Dropped::MeetRate) => over_rate += 1,
                    Err(_) => {}
                }
            }
        }
        let points = INTRO_POINTS as u64 + 1;
        assert!(decrypted <= points * (50 + 10 * seconds), "{decrypted}");
        assert!(answered <= 20 * (seconds + 1), "{answered}");
        assert!(over_rate > 0);
    }

    /// Nine retired points and two current ones flood garbage; halfway through, one
    /// flooding current point is retired (it keeps flooding, now as a retired point) and
    /// replaced by a new current point, which floods too. The honest current point's
    /// introductions at its rate are all answered throughout, and the retired points
    /// together decrypt no more than one point's budget.
    #[test]
    fn garbage_through_retired_points_does_not_crowd_out_current_ones() {
        let t0 = Instant::now();
        let budget = Mutex::new(IntroBudget::new(20, (10, 50), t0));
        let mut points: Vec<(Mutex<IntroGate>, PointGroup)> = (0..MAX_RETIRED)
            .map(|_| (Mutex::new(IntroGate::new(10, 50, t0)), PointGroup::Retired))
            .chain((0..2).map(|_| (Mutex::new(IntroGate::new(10, 50, t0)), PointGroup::Current)))
            .collect();
        let honest = Mutex::new(IntroGate::new(10, 50, t0));
        let (mut retired_decrypted, mut answered) = (0u64, 0u64);
        let seconds = 20u64;
        for step in 0..(seconds * 200) {
            let now = t0 + Duration::from_millis(5 * step);
            if step == seconds * 100 {
                // Rotation: the last flooding current point joins the retired group, a
                // new (empty) one takes its place.
                if let Some(last) = points.last_mut() {
                    last.1 = PointGroup::Retired;
                }
                points.push((
                    Mutex::new(IntroGate::empty(10, 50, now)),
                    PointGroup::Current,
                ));
            }
            for (gate, group) in &points {
                let r = screen(gate, *group, &budget, now, || {
                    if *group == PointGroup::Retired {
                        retired_decrypted += 1;
                    }
                    None::<()>
                });
                assert!(
                    r == Err(Dropped::Invalid)
                        || r == Err(Dropped::PointBudget)
                        || (r == Err(Dropped::DecryptBudget) && *group == PointGroup::Retired),
                    "{r:?} for a {group:?} point at step {step}"
                );
            }
            if step % 20 == 0 {
                let r = screen(&honest, PointGroup::Current, &budget, now, || Some(()));
                assert_eq!(r, Ok(()), "honest introduction dropped at step {step}");
                answered += 1;
            }
        }
        assert_eq!(answered, 10 * seconds);
        // The retired points together: one point's burst and rate (the rotated point's
        // garbage while it was current counted against the current points).
        assert!(
            retired_decrypted <= 50 + 10 * seconds,
            "{retired_decrypted}"
        );
    }

    /// A refusal by the joint budget gives the point its token back: a retired point
    /// whose group is flooded through another keeps its own budget.
    #[test]
    fn joint_refusal_does_not_spend_the_points_own_token() {
        let t0 = Instant::now();
        let budget = Mutex::new(IntroBudget::new(20, (10, 50), t0));
        let flooding = Mutex::new(IntroGate::new(100, 100, t0));
        let quiet = Mutex::new(IntroGate::new(10, 50, t0));
        // The flooding point uses up the retired points' joint burst.
        for _ in 0..50 {
            let r = screen(&flooding, PointGroup::Retired, &budget, t0, || None::<()>);
            assert_eq!(r, Err(Dropped::Invalid));
        }
        for _ in 0..20 {
            let r = screen(&quiet, PointGroup::Retired, &budget, t0, || Some(()));
            assert_eq!(r, Err(Dropped::DecryptBudget));
        }
        let gate = lock(&quiet);
        assert_eq!(
            gate.tokens_milli, gate.burst_milli,
            "the quiet point's own budget"
        );
        assert_eq!(gate.refused(), 0);
    }

    #[test]
    fn intro_gate_zero_settings_still_admit_one() {
        let t0 = Instant::now();
        let mut gate = IntroGate::new(0, 0, t0);
        assert!(gate.admit_at(t0));
        assert!(!gate.admit_at(t0));
        assert!(gate.admit_at(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn intro_key_rotation_trigger() {
        let mut cache = ReplayCache::new(DEFAULT_REPLAY_CAPACITY);
        let life = INTRO_KEY_LIFETIME;
        assert!(!key_rotation_due(&cache, Duration::ZERO, life));
        assert!(!key_rotation_due(
            &cache,
            life - Duration::from_secs(1),
            life
        ));
        assert!(key_rotation_due(&cache, life, life), "24 h old");
        for i in 0..80_000u32 {
            let mut x = [0u8; 32];
            x[..4].copy_from_slice(&i.to_be_bytes());
            cache.check_and_insert(&x).unwrap();
        }
        assert!(key_rotation_due(&cache, Duration::ZERO, life), "80% full");
    }

    #[test]
    fn intro_key_lifetimes_are_jittered_per_slot() {
        let t0 = Instant::now();
        let lifetimes: Vec<Duration> = (0..50).map(|_| test_slot(t0, true).lifetime).collect();
        for l in &lifetimes {
            assert!(*l >= INTRO_KEY_LIFETIME - INTRO_KEY_JITTER, "{l:?}");
            assert!(*l <= INTRO_KEY_LIFETIME + INTRO_KEY_JITTER, "{l:?}");
        }
        // 4 h of whole seconds: fifty draws are not all equal (chance 14,401^-49).
        assert!(lifetimes.iter().any(|l| *l != lifetimes[0]));
        // A slot rotates at its own lifetime, not at the common one.
        let slot = test_slot(t0, true);
        assert!(!slot.rotation_due(t0 + slot.lifetime - Duration::from_secs(1)));
        assert!(slot.rotation_due(t0 + slot.lifetime));
    }

    #[test]
    fn rotated_slots_are_retired_until_the_old_descriptor_expires() {
        let t0 = Instant::now();
        let fresh = test_slot(t0, true);
        let old = test_slot(t0, true);
        // Established once, its circuit down when the rotation comes.
        let down = test_slot(t0, false);
        down.ever_up
            .store(true, std::sync::atomic::Ordering::Release);
        // Never established: no descriptor lists it.
        let never = test_slot(t0, false);
        let auths: Vec<_> = [&fresh, &old, &down]
            .iter()
            .map(|s| s.auth.public())
            .collect();
        let mut slots = vec![fresh, old, down, never];
        let mut retired = Vec::new();
        // Nothing due yet.
        rotate_slots(&mut slots, &mut retired, t0);
        assert_eq!((slots.len(), retired.len()), (4, 0));
        // Past the longest jittered lifetime all are due: the ones ever established are
        // retired (still answering under their old keys, the one whose circuit is down
        // to be rebuilt), the one never established is simply dropped.
        let day = t0 + INTRO_KEY_LIFETIME + INTRO_KEY_JITTER;
        rotate_slots(&mut slots, &mut retired, day);
        assert!(slots.is_empty());
        let kept: Vec<_> = retired.iter().map(|r| r.slot.auth.public()).collect();
        assert_eq!(kept, auths);
        assert!(retired.iter().all(|r| r.until == day + RETIRED_KEY_KEPT));
        // Their decryptions now count against the retired points' joint budget.
        assert!(retired
            .iter()
            .all(|r| r.slot.retired.load(std::sync::atomic::Ordering::Acquire)));
        // A slot whose replay cache is 80% full rotates at once (tiny cache for speed).
        let full = test_slot(day, true);
        *lock(&full.replay) = ReplayCache::new(10);
        fill(&full, 8);
        let mut slots = vec![full];
        rotate_slots(&mut slots, &mut retired, day);
        assert!(slots.is_empty());
        assert_eq!(retired.len(), 4);
        // A retired slot whose circuit closed stays to be rebuilt (refresh_retired), until
        // its rebuilds failed MAX_INTRO_FAILURES times in a row; the others stay until the
        // last descriptor naming their key has expired, then are dropped (closing them).
        retired[3]
            .slot
            .running
            .store(false, std::sync::atomic::Ordering::Release);
        rotate_slots(&mut slots, &mut retired, day);
        assert_eq!(retired.len(), 4);
        retired[3].slot.failures = MAX_INTRO_FAILURES;
        let closed = retired[0].slot.close.subscribe();
        rotate_slots(&mut slots, &mut retired, day);
        assert_eq!(retired.len(), 3);
        rotate_slots(&mut slots, &mut retired, day + RETIRED_KEY_KEPT);
        assert!(retired.is_empty());
        assert!(
            closed.has_changed().is_err(),
            "the retired slot's task is told to close"
        );
    }

    #[test]
    fn retired_slots_are_bounded() {
        let t0 = Instant::now();
        let mut retired = Vec::new();
        for i in 0..(MAX_RETIRED as u64 + 2) {
            let mut slots = vec![test_slot(t0, true)];
            rotate_slots(
                &mut slots,
                &mut retired,
                t0 + INTRO_KEY_LIFETIME + INTRO_KEY_JITTER + Duration::from_secs(i),
            );
        }
        assert_eq!(retired.len(), MAX_RETIRED);
        // The oldest went first.
        let first = t0 + INTRO_KEY_LIFETIME + INTRO_KEY_JITTER + RETIRED_KEY_KEPT;
        assert!(retired
            .iter()
            .all(|r| r.until >= first + Duration::from_secs(2)));
    }

    #[test]
    fn service_key_file_is_created_private_and_reloaded() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("allium-svc-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub").join("svc.key");
        let a = load_or_create_service_key(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = load_or_create_service_key(&path).unwrap();
        assert_eq!(a.public(), b.public());
        // A damaged file is an error, never silently replaced (the address would change).
        std::fs::write(&path, b"garbage").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load_or_create_service_key(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
