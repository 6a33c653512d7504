//! The relay's listener: accepts TCP connections, runs the link handshake under a limit,
//! and starts a reader task per channel.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info};

use crate::admission::Admission;
use crate::clock::Clock;
use crate::crypto::IdentityPublic;
use crate::link::mux::CircMux;
use crate::link::{self, BandwidthLimit, BandwidthShaper, LinkConfig, PeerKind};
use crate::sync::{self, lock};

use super::channel_limit::{Refusal, RefusalBurst, REFUSAL_PAUSE};
use super::events::RelayChannel;
use super::exit::ExitConfig;
use super::keys::RelayKeys;
use super::limits::RelayLimits;
use super::queue_budget::QueueBudget;
use super::rate_limit::TokenBucket;
use super::reactor;
use super::shared::{RelayCounters, RelayShared};

/// What a relay needs to start.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Address to listen on for channels (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Resource limits.
    pub limits: RelayLimits,
    /// The exit role (`None`: not an exit, the safe default).
    pub exit: Option<ExitConfig>,
    /// The relay's clock (every role reads wall time and sleeps through it).
    pub clock: Clock,
    /// The operator's byte-rate limit on everything read from and written to other nodes'
    /// channels (each direction on its own); `None`: unlimited.
    pub bandwidth: Option<BandwidthLimit>,
    /// Serve the circuits of each channel fairly (`[relay] fair_queueing`, see
    /// [`LinkConfig::fair_queueing`]); false: one FIFO per channel.
    pub fair_queueing: bool,
}

/// A running relay. Dropping the handle does not stop it; call [`RelayHandle::shutdown`].
#[derive(Debug)]
pub struct RelayHandle {
    shared: Arc<RelayShared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    key_maintenance: JoinHandle<()>,
}

impl RelayHandle {
    /// The address the relay listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.listen_addr
    }

    /// The relay's identity.
    pub fn identity(&self) -> IdentityPublic {
        self.shared.keys.identity()
    }

    /// The relay's keys (public parts go into its descriptor).
    pub fn keys(&self) -> &RelayKeys {
        &self.shared.keys
    }

    /// The relay's bandwidth rate limit (`None`: unlimited).
    pub fn bandwidth_limit(&self) -> Option<BandwidthLimit> {
        self.shared.link.bandwidth.as_ref().map(|s| s.limit())
    }

    /// The relay's shared state (counters, channels), for metrics and tests.
    pub fn shared(&self) -> &Arc<RelayShared> {
        &self.shared
    }

    /// Starts (or replaces) the directory service answering BEGIN_DIR.
    pub fn set_dir_service(&self, service: Arc<dyn super::dirserve::DirService>) {
        *sync::write(&self.shared.dir) = Some(service);
    }

    /// Installs an instrumentation observer (see [`super::observer`]): events from then
    /// on are reported to it. At most one per relay; a second call returns the observer
    /// back as the error. Never wired to logs.
    pub fn set_observer(
        &self,
        observer: Arc<dyn super::observer::RelayObserver>,
    ) -> Result<(), Arc<dyn super::observer::RelayObserver>> {
        self.shared.observer.set(observer)
    }

    /// Stops accepting connections and closes every channel.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        // Stopped before returning, so a restart on the same key files cannot race it.
        let _ = self.key_maintenance.await;
        let chans: Vec<_> = lock(&self.shared.relay_channels)
            .drain()
            .map(|(_, c)| c)
            .collect();
        for c in chans {
            c.sender.close();
        }
        for c in self.shared.all_channels() {
            c.sender.close();
        }
    }
}

/// Binds the listener and starts the relay.
pub async fn start(config: RelayConfig, keys: RelayKeys) -> std::io::Result<RelayHandle> {
    let listener = TcpListener::bind(config.listen).await?;
    let listen_addr = listener.local_addr()?;
    let limits = config.limits;
    let limits_inbound = limits.inbound_channels;
    let link = LinkConfig {
        handshake_timeout: limits.link_handshake_timeout(),
        idle_timeout: limits.idle_channel_timeout(),
        max_circuits_per_channel: limits.circuits_per_channel,
        dead_peer_timeout: limits.dead_peer_timeout(),
        rekey_after_records: limits.link_rekey_records(),
        rekey_after: limits.link_rekey_interval(),
        clock: config.clock.clone(),
        // One shaper for the whole relay: inbound and outbound channels share its buckets.
        bandwidth: config.bandwidth.map(|l| Arc::new(BandwidthShaper::new(l))),
        fair_queueing: config.fair_queueing,
        padding_floor: limits.link_padding_floor(),
        ..LinkConfig::default()
    };
    let shared = Arc::new(RelayShared {
        udp_flows: Arc::new(tokio::sync::Semaphore::new(limits.udp_flows)),
        datagrams: crate::proto::datagram::budget::DatagramBudget::new(limits.udp_queued_bytes),
        handshakes: TokenBucket::new(limits.handshakes_per_second, limits.handshake_burst),
        padding: TokenBucket::new(
            limits.padding_cells_per_second,
            limits.padding_cells_per_second,
        ),
        budget: QueueBudget::new(limits.total_queued_bytes),
        relay_channels: Mutex::new(HashMap::new()),
        connect_locks: Mutex::new(HashMap::new()),
        inbound_channels: Mutex::new(Vec::new()),
        counters: RelayCounters::default(),
        keys,
        link,
        limits,
        listen_addr,
        exit: config.exit.map(Arc::new),
        clock: config.clock,
        dir: std::sync::RwLock::new(None),
        replay: super::replay::ReplayFilter::default(),
        observer: std::sync::OnceLock::new(),
        onion: super::onion_points::OnionPoints::default(),
        self_test: super::self_test_status::SelfTestStatus::default(),
        republish: tokio::sync::Notify::new(),
        channel_slots: super::channel_limit::ChannelSlots::new(
            limits_inbound,
            crate::fd_limit::soft_limit(),
        ),
    });
    info!("relay: listening");
    debug!(identity = %shared.keys.identity(), "relay: identity");
    let (stop, stop_rx) = watch::channel(false);
    let key_maintenance = {
        let shared = Arc::clone(&shared);
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            super::key_maintenance::run(&shared.keys, &shared.clock, stop).await;
        })
    };
    let task = tokio::spawn(accept_loop(Arc::clone(&shared), listener, stop_rx));
    Ok(RelayHandle {
        shared,
        stop,
        task,
        key_maintenance,
    })
}

async fn accept_loop(
    shared: Arc<RelayShared>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    // Slots for link handshakes in progress; when full, a new connection takes the slot
    // of the oldest silent (else slowest) one, so idle floods cannot lock peers out.
    let pending = Admission::new(shared.limits.pending_link_handshakes);
    let mut burst = RefusalBurst::default();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors the connection stays in the backlog; retrying at
                // once would spin. Back off (doubling up to a second) until one frees.
                if crate::fd_limit::is_exhaustion(&e) {
                    RelayCounters::bump(&shared.counters.accept_fd_exhausted);
                    burst.refused(Refusal::OutOfDescriptors, &shared.channel_slots);
                } else {
                    debug!("relay: accept failed: {e}");
                    burst.refused(Refusal::AcceptError, &shared.channel_slots);
                }
                let pause = burst.next_backoff();
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = stop.changed() => return,
                }
                continue;
            }
        };
        let Some(slot) = shared.channel_slots.try_take() else {
            // At the channel limit: a clean refusal (the peer sees the connection closed
            // and tries another relay); existing channels are untouched.
            RelayCounters::bump(&shared.counters.refused_channel_limit);
            burst.refused(Refusal::ChannelLimit, &shared.channel_slots);
            drop(stream);
            tokio::time::sleep(REFUSAL_PAUSE).await;
            continue;
        };
        burst.accepted();
        let Some(mut pass) = pending.admit() else {
            // Every slot holds a handshake past its first bytes: refuse by closing.
            RelayCounters::bump(&shared.counters.link_handshake_failures);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            // Held for the connection's life: its place under the channel limit.
            let _slot = slot;
            let deadline = tokio::time::Instant::now() + shared.link.handshake_timeout;
            if let Err(why) = pass.first_bytes(&stream, deadline).await {
                RelayCounters::bump(&shared.counters.link_handshake_failures);
                debug!("relay: inbound connection dropped before its handshake: {why:?}");
                return;
            }
            // The whole handshake, first bytes included, is bounded by one deadline. The
            // channel is made with the link key current now, whatever renewals follow.
            let auth = shared.keys.link_auth();
            let handshake =
                tokio::time::timeout_at(deadline, link::accept(stream, &auth, &shared.link));
            let result = tokio::select! {
                r = handshake => match r {
                    Ok(r) => r,
                    Err(_) => Err(link::LinkError::HandshakeTimeout),
                },
                () = pass.eviction().wait() => {
                    RelayCounters::bump(&shared.counters.link_handshake_failures);
                    debug!("relay: inbound link handshake evicted to make room");
                    return;
                }
            };
            drop(pass);
            match result {
                Ok(channel) => {
                    RelayCounters::bump(&shared.counters.link_handshakes);
                    if let Some(o) = shared.observer() {
                        o.inbound_channel(peer);
                    }
                    let chan = Arc::new(RelayChannel {
                        sender: channel.sender,
                        circuits: CircMux::new(channel.circ_ids),
                        peer: channel.peer,
                        stats: channel.stats,
                        remote: peer,
                    });
                    if let PeerKind::Relay(vk) = &chan.peer {
                        if let Ok(id) = IdentityPublic::from_bytes(vk.as_bytes()) {
                            shared.register_relay_channel(id, Arc::clone(&chan));
                        }
                    }
                    shared.track_channel(&chan);
                    reactor::run(shared, chan, channel.receiver).await;
                }
                Err(e) => {
                    RelayCounters::bump(&shared.counters.link_handshake_failures);
                    debug!("relay: inbound link handshake failed: {e}");
                }
            }
        });
    }
}
