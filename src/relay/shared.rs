//! State shared by all of a relay's tasks, and the per-channel record of circuits.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::crypto::IdentityPublic;
use crate::link::LinkConfig;
use crate::sync::{self, lock};

use super::events::RelayChannel;
use super::keys::RelayKeys;
use super::limits::RelayLimits;
use super::queue_budget::QueueBudget;
use super::rate_limit::TokenBucket;

/// Counters a relay keeps (exported as metrics later; never per client or destination).
#[derive(Debug, Default)]
pub struct RelayCounters {
    /// Circuits created (CREATE answered).
    pub circuits_created: AtomicU64,
    /// Circuits currently open.
    pub circuits_open: AtomicU64,
    /// Cells relayed (forwarded or originated) in either direction.
    pub cells_relayed: AtomicU64,
    /// CREATE refused by the handshake rate limit.
    pub refused_handshake_rate: AtomicU64,
    /// CREATE refused by the per-channel circuit limit or a bad id.
    pub refused_circuit_limit: AtomicU64,
    /// Circuits closed for a protocol violation.
    pub protocol_violations: AtomicU64,
    /// Link handshakes completed (inbound).
    pub link_handshakes: AtomicU64,
    /// Link handshakes refused or failed.
    pub link_handshake_failures: AtomicU64,
    /// CREATE (or the CREATE of an EXTEND) refused because its handshake message was
    /// already answered (replay filter).
    pub refused_replay: AtomicU64,
    /// Malformed CREATE cells (refused with DESTROY(PROTOCOL)).
    pub refused_malformed_create: AtomicU64,
    /// INTRODUCE1 forwarded as INTRODUCE2 by this relay as an introduction point.
    pub introductions_forwarded: AtomicU64,
    /// Circuit pairs joined by this relay as a rendezvous point.
    pub rendezvous_joined: AtomicU64,
    /// Circuits destroyed because a neighbour's channel queue stayed full: for
    /// `stalled_send_secs`, or while their own queue filled (a peer that stopped reading).
    pub stalled_sends: AtomicU64,
    /// Inbound connections closed at once because the relay was at its channel limit.
    pub refused_channel_limit: AtomicU64,
    /// accept() failures for want of file descriptors (EMFILE, ENFILE).
    pub accept_fd_exhausted: AtomicU64,
    /// Padding (DROP) cells this relay's circuit-padding machines sent.
    pub padding_cells_sent: AtomicU64,
    /// Padding machines refused as over budget or disabled.
    pub padding_machines_refused: AtomicU64,
}

impl RelayCounters {
    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// State shared by every task of one relay.
#[derive(Debug)]
pub struct RelayShared {
    /// Keys.
    pub keys: RelayKeys,
    /// Limits.
    pub limits: RelayLimits,
    /// Link configuration derived from the limits.
    pub link: LinkConfig,
    /// CREATE rate limit.
    pub handshakes: TokenBucket,
    /// Relay-wide padding rate (`limits.padding_cells_per_second`).
    pub padding: TokenBucket,
    /// Relay-wide queued-cell budget.
    pub budget: Arc<QueueBudget>,
    /// Open channels to other relays, by identity, for reuse when extending.
    pub relay_channels: Mutex<HashMap<IdentityPublic, Arc<RelayChannel>>>,
    /// One lock per relay being connected to, so concurrent EXTENDs to the same relay
    /// share one connection attempt instead of racing (and flooding its listener).
    pub connect_locks: Mutex<HashMap<IdentityPublic, Arc<tokio::sync::Mutex<()>>>>,
    /// Every inbound channel (weakly), so shutdown can close client channels too.
    pub inbound_channels: Mutex<Vec<std::sync::Weak<RelayChannel>>>,
    /// Counters.
    pub counters: RelayCounters,
    /// The address this relay listens on.
    pub listen_addr: SocketAddr,
    /// The exit role, if this relay is an exit.
    pub exit: Option<Arc<super::exit::ExitConfig>>,
    /// The relay's clock.
    pub clock: crate::clock::Clock,
    /// The directory role (BEGIN_DIR), if any.
    pub dir: std::sync::RwLock<Option<Arc<dyn super::dirserve::DirService>>>,
    /// Circuit handshake messages answered recently (refuses replayed CREATEs).
    pub replay: super::replay::ReplayFilter,
    /// The instrumentation observer, if one was installed (never wired to logs).
    pub observer: std::sync::OnceLock<Arc<dyn super::observer::RelayObserver>>,
    /// Introduction points and rendezvous cookies registered here (§8).
    pub onion: super::onion_points::OnionPoints,
    /// What the publisher and the self-test found (metrics, the operator's log line).
    pub self_test: super::self_test_status::SelfTestStatus,
    /// Wakes the descriptor publisher to upload at once (after a wall-clock jump, a key
    /// rotation, an address change) instead of at the end of its interval.
    pub republish: tokio::sync::Notify,
    /// UDP flows open at this exit, against `limits.udp_flows`.
    pub udp_flows: Arc<tokio::sync::Semaphore>,
    /// Bytes of datagrams waiting for circuit windows, against `limits.udp_queued_bytes`.
    pub datagrams: Arc<crate::proto::datagram::budget::DatagramBudget>,
    /// Inbound connections open, against the channel limit.
    pub channel_slots: Arc<super::channel_limit::ChannelSlots>,
}

impl RelayShared {
    /// The directory service, if this relay serves one now.
    pub fn dir_service(&self) -> Option<Arc<dyn super::dirserve::DirService>> {
        sync::read(&self.dir).clone()
    }

    /// The instrumentation observer, if any (one atomic load when unset).
    pub fn observer(&self) -> Option<&dyn super::observer::RelayObserver> {
        self.observer.get().map(|o| o.as_ref())
    }
}

impl RelayShared {
    /// The open channel to relay `id`, if any.
    pub fn channel_to(&self, id: &IdentityPublic) -> Option<Arc<RelayChannel>> {
        let map = lock(&self.relay_channels);
        map.get(id).filter(|c| !c.sender.is_closed()).cloned()
    }

    /// Records `chan` as the channel to relay `id`, unless an open one is already known
    /// (then that one is returned and `chan` should be closed by the caller).
    pub fn register_relay_channel(
        &self,
        id: IdentityPublic,
        chan: Arc<RelayChannel>,
    ) -> Arc<RelayChannel> {
        let mut map = lock(&self.relay_channels);
        match map.get(&id) {
            Some(existing) if !existing.sender.is_closed() => Arc::clone(existing),
            _ => {
                map.insert(id, Arc::clone(&chan));
                chan
            }
        }
    }

    /// Remembers an inbound channel for shutdown (dead entries are pruned as we go).
    pub fn track_channel(&self, chan: &Arc<RelayChannel>) {
        let mut v = lock(&self.inbound_channels);
        // Pruned when the list doubles, not on every push: with 10,000 channels a scan
        // per new channel would cost more than the channel.
        if v.len() >= 64 && v.len().is_power_of_two() {
            v.retain(|w| w.strong_count() > 0);
        }
        v.push(Arc::downgrade(chan));
    }

    /// Every inbound channel still open.
    pub fn all_channels(&self) -> Vec<Arc<RelayChannel>> {
        lock(&self.inbound_channels)
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .collect()
    }

    /// The lock serialising connection attempts to relay `id`.
    pub fn connect_lock(&self, id: &IdentityPublic) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = lock(&self.connect_locks);
        // Drop locks nobody holds any more, so the map stays as small as the set of
        // connections in progress.
        map.retain(|_, l| Arc::strong_count(l) > 1);
        Arc::clone(map.entry(*id).or_default())
    }

    /// Forgets the channel to `id` if it is `chan`.
    pub fn unregister_relay_channel(&self, id: &IdentityPublic, chan: &Arc<RelayChannel>) {
        let mut map = lock(&self.relay_channels);
        if map.get(id).is_some_and(|c| Arc::ptr_eq(c, chan)) {
            map.remove(id);
        }
    }
}
