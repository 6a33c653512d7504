//! The directory-authority role: a relay that accepts descriptors, checks relays are
//! reachable, votes, computes the consensus with the other authorities and serves it.
//!
//! Schedule for the period starting at `va` (periods are aligned to multiples of the
//! period length, so independently started authorities agree on `va`):
//!
//! ```text
//! va - P/2   build and sign our vote (reachable relays, with flags)
//! va - P/3   fetch the other authorities' votes, compute the consensus, sign it
//! va - P/6   fetch their signatures over the same consensus and add the valid ones
//! va         publish if a strict majority of authorities signed
//! ```
//!
//! After a wall-clock jump the round in progress is abandoned and the schedule re-aligns
//! to the next period it can still make (`authority/schedule.rs`); the consensus served
//! stays while it is valid.
//!
//! Authorities talk to each other (and relays upload) over one-hop circuits with
//! BEGIN_DIR streams, so this traffic is encrypted and padded like everything else.

use crate::sync::lock;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::codec;
use crate::crypto::IdentityPublic;
use crate::dir::consensus::AuthoritySignature;
use crate::dir::consensus_store::SharedStore;
use crate::dir::descriptor::MAX_DESCRIPTOR_LEN;
use crate::dir::request::{DirRequest, DirResponse, DirStatus, MAX_DIR_BODY};
use crate::dir::sybil::SybilLimits;
use crate::dir::{
    compute_consensus_full, microdesc, AuthorityInfo, ComputedConsensus, ConsensusParams,
    FlagParams, MicrodescIndex, SignedConsensus, UncheckedDescriptor, UncheckedVote, Vote,
    VoteBody,
};
use crate::link::{self, LinkConfig};
use crate::proto::dirclient::one_shot;

pub(crate) mod bandwidth_scan;
pub(crate) mod exit_check;
pub(crate) mod exit_check_server;
pub(crate) mod measure_tokens;
mod probes;
mod reject_list;
mod reputation;
mod schedule;
mod service;
mod vote_builder;

pub(crate) use reject_list::RejectList;
pub(crate) use reputation::ExitVerdict;
pub(crate) use service::AuthorityService;
use vote_builder::{vote_entries, Known, VoteRules};

use super::dirserve::DirService;
use super::shared::RelayShared;

/// How an authority runs.
#[derive(Debug, Clone)]
pub struct AuthorityConfig {
    /// Every authority of the network, this one included.
    pub authorities: Vec<AuthorityInfo>,
    /// Length of a consensus period (fresh for one period, valid for three).
    pub period: Duration,
    /// Flag rules.
    pub flags: FlagParams,
    /// Clock skew tolerated on descriptors.
    pub max_skew: Duration,
    /// A relay may upload at most once per this interval.
    pub min_upload_interval: Duration,
    /// How many relays per address and subnet may be usable.
    pub sybil: SybilLimits,
    /// Relays never listed, by identity or address.
    pub reject: RejectList,
    /// Measurements older than this are no longer voted (a relay must keep being measured).
    pub measurement_max_age: Duration,
    /// How the authority measures relays' bandwidth (`None`: it does not, and votes no
    /// measurements).
    pub(crate) measure: Option<bandwidth_scan::MeasureConfig>,
    /// How it checks exits (`None`: it does not, and never votes BadExit).
    pub(crate) exit_checks: Option<exit_check::ExitCheckConfig>,
}

impl AuthorityConfig {
    /// Measurement and exit checks at the pace of a local test network (rounds about twice
    /// a period, small transfers), or off.
    pub fn test_network_probes(&mut self, measure: bool, check_exits: bool) {
        self.measure = measure.then(|| {
            let mut m = bandwidth_scan::MeasureConfig::for_test_network();
            m.min_round = self.period / 2;
            m
        });
        self.exit_checks = check_exits.then(exit_check::ExitCheckConfig::for_test_network);
    }

    /// Turns the (public-network) probes off where asked.
    pub fn keep_probes(&mut self, measure: bool, check_exits: bool) {
        if !measure {
            self.measure = None;
        }
        if !check_exits {
            self.exit_checks = None;
        }
    }

    /// Where the exit-check server listens, which is also the address exits are asked to
    /// reach (exits' policies must allow it: port 80 or 443 reaches most).
    pub fn set_exit_check_server(&mut self, listen: std::net::SocketAddr) {
        if let Some(c) = &mut self.exit_checks {
            c.server = Some(listen);
        }
    }

    /// Defaults for a public network: 1-hour periods, one upload per minute, two relays per
    /// address and four per /24, bandwidth measured continuously and voted for three days,
    /// exits checked hourly.
    pub fn new(authorities: Vec<AuthorityInfo>) -> Self {
        AuthorityConfig {
            authorities,
            period: Duration::from_secs(3600),
            flags: FlagParams::default(),
            max_skew: Duration::from_secs(300),
            min_upload_interval: Duration::from_secs(60),
            sybil: SybilLimits::default(),
            reject: RejectList::default(),
            measurement_max_age: Duration::from_secs(3 * 86_400),
            measure: Some(bandwidth_scan::MeasureConfig::default()),
            exit_checks: Some(exit_check::ExitCheckConfig::default()),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    relays: BTreeMap<IdentityPublic, Known>,
    last_upload: HashMap<IdentityPublic, u64>,
    /// Our signed vote (bytes) per period start.
    votes: BTreeMap<u64, Vec<u8>>,
    /// The consensus we computed per period start, with the signatures collected so far.
    computed: BTreeMap<u64, SignedConsensus>,
    /// The microdescriptors each computed consensus lists, per period start.
    microdescs: BTreeMap<u64, Arc<MicrodescIndex>>,
    /// The consensus being served: (valid_until, bytes).
    published: Option<(u64, Vec<u8>)>,
}

/// A running authority (also the directory service of its relay).
#[derive(Debug)]
pub struct Authority {
    relay: Arc<RelayShared>,
    config: AuthorityConfig,
    state: Mutex<State>,
    checks: Arc<Semaphore>,
    /// Relay-wide upload rate: fresh identities are free, so the per-identity limit alone
    /// would not bound the work.
    uploads: super::rate_limit::TokenBucket,
    /// Tokens of this authority's own bandwidth measurements (GET_MEASUREMENT).
    pub(crate) measure_tokens: Arc<measure_tokens::MeasureTokens>,
    /// The published consensus plain, compressed and as diffs (`dir::consensus_store`).
    store: SharedStore,
}

/// Most relays an authority tracks (listed or not).
pub(crate) const MAX_KNOWN_RELAYS: usize = crate::dir::consensus::MAX_RELAYS;

impl Authority {
    /// Wall time now, in Unix seconds, on the relay's clock.
    fn now(&self) -> u64 {
        self.relay.clock.now_unix()
    }

    /// Creates the authority role for `relay` and starts its schedule. Install the result
    /// as the relay's directory service.
    pub fn start(relay: Arc<RelayShared>, config: AuthorityConfig) -> Arc<Self> {
        let measure_tokens = Arc::new(measure_tokens::MeasureTokens::new(relay.clock.clone()));
        let auth = Arc::new(Authority {
            relay,
            config,
            state: Mutex::new(State::default()),
            checks: Arc::new(Semaphore::new(16)),
            uploads: super::rate_limit::TokenBucket::new(50, 500),
            measure_tokens,
            store: SharedStore::default(),
        });
        tokio::spawn(Arc::clone(&auth).schedule());
        tokio::spawn(Arc::clone(&auth).recheck_loop());
        auth.start_probes();
        auth
    }

    fn checks_arc(&self) -> Arc<Semaphore> {
        Arc::clone(&self.checks)
    }

    fn ids(&self) -> Vec<IdentityPublic> {
        self.config.authorities.iter().map(|a| a.identity).collect()
    }

    fn period(&self) -> u64 {
        self.config.period.as_secs().max(6)
    }

    /// The directory service to install on the authority's relay.
    pub fn service(self: &Arc<Self>) -> Arc<dyn DirService> {
        Arc::new(AuthorityService(Arc::clone(self)))
    }

    /// The consensus currently served, if any.
    pub fn current_consensus(&self) -> Option<Vec<u8>> {
        lock(&self.state).published.as_ref().map(|(_, b)| b.clone())
    }

    /// The microdescriptors of the consensus currently served (and of recent periods), to
    /// assemble it (tests, the test network).
    pub fn current_microdescs(&self) -> MicrodescIndex {
        let state = lock(&self.state);
        let mut all = MicrodescIndex::new();
        for index in state.microdescs.values() {
            all.extend_from(index);
        }
        all
    }

    /// Answers GET_MICRODESCS from every recent period's microdescriptors (a client may
    /// still be assembling the previous consensus).
    fn answer_microdescs(&self, digests: &[[u8; 32]]) -> DirResponse {
        let indices: Vec<Arc<MicrodescIndex>> = lock(&self.state)
            .microdescs
            .values()
            .rev()
            .cloned()
            .collect();
        let found: Vec<&[u8]> = digests
            .iter()
            .filter_map(|d| indices.iter().find_map(|i| i.bytes(d)))
            .collect();
        DirResponse::ok(microdesc::encode_response(&found, MAX_DIR_BODY))
    }

    /// Relays currently known (listed or not).
    pub fn known_relays(&self) -> usize {
        lock(&self.state).relays.len()
    }

    fn on_descriptor(self: &Arc<Self>, bytes: &[u8]) -> DirResponse {
        if bytes.len() > MAX_DESCRIPTOR_LEN {
            return DirResponse::error(DirStatus::Refused, "descriptor too large");
        }
        if !self.uploads.try_take() {
            return DirResponse::error(DirStatus::Busy, "too many uploads; retry later");
        }
        let unchecked = match UncheckedDescriptor::parse(bytes) {
            Ok(u) => u,
            Err(e) => return DirResponse::error(DirStatus::BadRequest, &e.to_string()),
        };
        let id = *unchecked.claimed_identity();
        let now = self.now();
        {
            let state = lock(&self.state);
            if let Some(last) = state.last_upload.get(&id) {
                if now < last.saturating_add(self.config.min_upload_interval.as_secs()) {
                    return DirResponse::error(
                        DirStatus::Busy,
                        "one upload per relay per interval",
                    );
                }
            }
        }
        let signed = unchecked.signed().clone();
        let descriptor = match unchecked.verify(now, self.config.max_skew.as_secs()) {
            Ok(d) => d,
            Err(e) => return DirResponse::error(DirStatus::Refused, &e.to_string()),
        };
        if self.config.reject.rejects(&id, &descriptor.addrs) {
            return DirResponse::error(DirStatus::Refused, "relay rejected by this authority");
        }
        {
            let mut state = lock(&self.state);
            if state.relays.len() >= MAX_KNOWN_RELAYS && !state.relays.contains_key(&id) {
                return DirResponse::error(DirStatus::Busy, "directory full");
            }
            state.last_upload.insert(id, now);
            if let Some(old) = state.relays.get(&id) {
                let recent = old.descriptor.published.saturating_add(self.period()) > now;
                if recent && old.descriptor.addrs != descriptor.addrs {
                    return DirResponse::error(
                        DirStatus::Refused,
                        "identity already published from a different address this period",
                    );
                }
            }
            let (running_since, last_reachable, reputation) = state
                .relays
                .get(&id)
                .map_or((None, None, Default::default()), |k| {
                    (k.running_since, k.last_reachable, k.reputation.clone())
                });
            state.relays.insert(
                id,
                Known {
                    signed,
                    descriptor,
                    running_since,
                    last_reachable,
                    reputation,
                },
            );
        }
        // At most 16 checks at once; when all are busy the periodic re-check will reach
        // this relay (no unbounded queue of waiting tasks).
        if let Ok(permit) = Arc::clone(&self.checks_arc()).try_acquire_owned() {
            let me = Arc::clone(self);
            tokio::spawn(async move {
                me.check_reachable(id).await;
                drop(permit);
            });
        }
        DirResponse::ok(b"accepted".to_vec())
    }

    /// Connects to the relay and completes a link handshake proving its identity.
    async fn check_reachable(&self, id: IdentityPublic) {
        let addrs = match lock(&self.state).relays.get(&id) {
            Some(k) => k.descriptor.addrs.clone(),
            None => return,
        };
        let Ok(vk) = id.to_verifying_key() else {
            return;
        };
        let cfg = LinkConfig {
            handshake_timeout: Duration::from_secs(10),
            clock: self.relay.clock.clone(),
            ..LinkConfig::default()
        };
        // Only the preferred (first) address counts: it is where the relay must prove its
        // identity, what the Sybil limits count and where probes go, so a relay cannot
        // list someone else's address to use up that address's limit.
        let mut ok = false;
        if let Some(addr) = addrs.first() {
            if let Ok(chan) = link::connect(*addr, &vk, None, &cfg).await {
                chan.sender.close();
                ok = true;
            }
        }
        let now = self.now();
        if let Some(k) = lock(&self.state).relays.get_mut(&id) {
            if ok {
                k.running_since = k.running_since.or(Some(now));
                k.last_reachable = Some(now);
            } else {
                k.running_since = None;
            }
        }
        debug!(reachable = ok, "authority: reachability check");
    }

    /// Records a measurement probe through `id`: its bandwidth in bytes/s, or `None` if
    /// the relay did not extend the circuit or the transfer through it failed.
    pub(crate) fn record_probe(&self, id: &IdentityPublic, bytes_per_second: Option<u64>) {
        let now = self.now();
        if let Some(k) = lock(&self.state).relays.get_mut(id) {
            match bytes_per_second {
                Some(bw) => k.reputation.measured(now, bw),
                None => k.reputation.probe_failed(),
            }
        }
    }

    /// Records an exit check of `id`.
    pub(crate) fn record_exit_check(&self, id: &IdentityPublic, verdict: ExitVerdict) {
        if let Some(k) = lock(&self.state).relays.get_mut(id) {
            k.reputation.exit_checked(verdict);
        }
    }

    async fn recheck_loop(self: Arc<Self>) {
        let mut jumps = self.relay.clock.watch_jumps();
        loop {
            // After a jump, reachability stamps are from the old clock: check everyone at
            // once (relays republish too), and forget nobody on that round's stamps.
            let jumped = tokio::select! {
                () = self.relay.clock.sleep(Duration::from_secs((self.period() / 2).max(3))) => false,
                _ = jumps.next() => true,
            };
            let ids: Vec<IdentityPublic> = lock(&self.state).relays.keys().copied().collect();
            for id in ids {
                // Waits for one of the 16 check slots: a bounded number of tasks.
                let Ok(permit) = Arc::clone(&self.checks_arc()).acquire_owned().await else {
                    break;
                };
                let me = Arc::clone(&self);
                tokio::spawn(async move {
                    me.check_reachable(id).await;
                    drop(permit);
                });
            }
            if jumped {
                for k in lock(&self.state).relays.values_mut() {
                    k.reputation.forget_timed();
                }
                continue;
            }
            // Forget relays unseen for a day (or 24 periods in fast test networks).
            let horizon = self.now().saturating_sub((self.period() * 24).min(86_400));
            let min_interval = self.config.min_upload_interval.as_secs();
            let now = self.now();
            let mut state = lock(&self.state);
            state.relays.retain(|_, k| {
                k.last_reachable.unwrap_or(0).max(k.descriptor.published) >= horizon
            });
            state
                .last_upload
                .retain(|_, t| t.saturating_add(min_interval) > now);
        }
    }

    fn build_vote(&self, va: u64) -> Option<Vec<u8>> {
        let period = self.period();
        let state = lock(&self.state);
        let entries = vote_entries(
            &state.relays,
            &VoteRules {
                now: self.now(),
                period,
                flags: &self.config.flags,
                sybil: self.config.sybil,
                reject: &self.config.reject,
                measurement_max_age: self.config.measurement_max_age.as_secs(),
            },
        );
        drop(state);
        let body = VoteBody {
            authority: self.relay.keys.identity(),
            valid_after: va,
            fresh_until: va + period,
            valid_until: va + 3 * period,
            entries,
        };
        match body
            .sign(self.relay.keys.identity_keypair())
            .and_then(|v| v.to_bytes().map_err(crate::dir::VoteError::Codec))
        {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                warn!("authority: cannot sign vote: {e}");
                None
            }
        }
    }

    async fn fetch_from_others(&self, req: &DirRequest) -> Vec<DirResponse> {
        let me = self.relay.keys.identity();
        let mut out = Vec::new();
        for a in &self.config.authorities {
            if a.identity == me {
                continue;
            }
            match one_shot(
                a.addr,
                &a.identity,
                req,
                Duration::from_secs(10),
                &self.relay.clock,
            )
            .await
            {
                Ok(resp) if resp.status == DirStatus::Ok => out.push(resp),
                Ok(resp) => debug!(
                    "authority: peer answered {:?}: {}",
                    resp.status,
                    resp.reason()
                ),
                Err(e) => debug!("authority: peer unreachable: {e}"),
            }
        }
        out
    }

    async fn compute(&self, va: u64) {
        let ids = self.ids();
        let now = self.now();
        let mut votes: Vec<Vote> = Vec::new();
        let own = lock(&self.state).votes.get(&va).cloned();
        let mut raw: Vec<Vec<u8>> = own.into_iter().collect();
        for resp in self
            .fetch_from_others(&DirRequest::GetVote { valid_after: va })
            .await
        {
            raw.push(resp.body);
        }
        for bytes in raw {
            match UncheckedVote::parse(&bytes).and_then(|v| v.verify(&ids, now)) {
                Ok(v)
                    if v.valid_after == va && !votes.iter().any(|o| o.authority == v.authority) =>
                {
                    votes.push(v)
                }
                Ok(_) => {}
                Err(e) => warn!("authority: refused a vote: {e}"),
            }
        }
        let ComputedConsensus { body, microdescs } =
            match compute_consensus_full(&votes, &ids, &ConsensusParams::default()) {
                Ok(c) => c,
                Err(e) => {
                    warn!("authority: no consensus for this period: {e}");
                    return;
                }
            };
        if body.relays.is_empty() {
            // An empty consensus would only make clients fail later: publish none until
            // some relay is reachable (the network is still forming).
            info!("authority: no reachable relays yet; no consensus this period");
            return;
        }
        let mut signed = match body.to_signed() {
            Ok(s) => s,
            Err(e) => {
                warn!("authority: cannot encode consensus: {e}");
                return;
            }
        };
        signed.sign(self.relay.keys.identity_keypair());
        info!(
            relays = body.relays.len(),
            votes = votes.len(),
            "authority: computed the consensus"
        );
        let mut state = lock(&self.state);
        state.computed.insert(va, signed);
        state.microdescs.insert(va, Arc::new(microdescs));
    }

    async fn collect_signatures(&self, va: u64) {
        for resp in self
            .fetch_from_others(&DirRequest::GetSignature { valid_after: va })
            .await
        {
            let Ok(sig) = codec::decode::<AuthoritySignature>(&resp.body, 1024) else {
                continue;
            };
            let mut state = lock(&self.state);
            if let Some(signed) = state.computed.get_mut(&va) {
                if !signed.add_signature(sig) {
                    warn!("authority: a peer signed a different consensus");
                }
            }
        }
    }

    fn publish(&self, va: u64) {
        let need = self.config.authorities.len() / 2 + 1;
        let configured: Vec<[u8; 32]> = self.ids().iter().map(|i| *i.as_bytes()).collect();
        let mut state = lock(&self.state);
        let Some(signed) = state.computed.get(&va) else {
            return;
        };
        let mut to_serve = None;
        // Only signatures of configured authorities count (add_signature accepts any
        // valid key), exactly as clients will count them.
        let got = signed
            .signatures()
            .iter()
            .filter(|s| configured.contains(&s.identity))
            .count();
        if got < need {
            warn!(
                got,
                need, "authority: consensus lacks a majority of signatures; not published"
            );
            return;
        }
        if let Ok(bytes) = signed.to_bytes() {
            info!(
                signatures = signed.signatures().len(),
                "authority: published a new consensus"
            );
            to_serve = Some(signed.clone());
            state.published = Some((va + 3 * self.period(), bytes));
        }
        // Keep only recent periods.
        let keep_from = va.saturating_sub(4 * self.period());
        state.votes.retain(|&k, _| k >= keep_from);
        state.computed.retain(|&k, _| k >= keep_from);
        state.microdescs.retain(|&k, _| k >= keep_from);
        drop(state);
        if let Some(Err(e)) = to_serve.map(|s| self.store.install(s, va)) {
            warn!("authority: cannot serve the consensus: {e}");
        }
    }
}
