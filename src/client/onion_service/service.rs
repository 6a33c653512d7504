//! A running service: its handle and the main loop that keeps the introduction points and
//! publishes the descriptor.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, info};

use crate::client::facade::Client;
use crate::onion::{OnionAddress, PeriodParams};
use crate::sync::lock;

use super::answer::answer_introductions;
use super::config::{check_config, ServiceConfig, ServiceError};
use super::intro_budget::IntroBudget;
use super::intro_points::{refresh_retired, refresh_slots};
use super::intro_queue::{next_suggested_effort, IntroQueue};
use super::intro_slot::{rotate_slots, IntroSlot, Retired};
use super::keys::load_or_create_service_key;
use super::pow::PowState;
use super::publish::publish;
use super::publish_schedule::{periods_to_serve, PublishSchedule};
use super::rendezvous::RendezvousSlots;
use super::shared::Shared;

/// How often the service checks its introduction circuits and the period.
const TICK: Duration = Duration::from_secs(2);

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

/// Starts the service `cfg` on `client` (which must be bootstrapped). Logs the address at
/// INFO (a service's own address is not a secret of its operator's).
pub async fn launch(client: Client, cfg: ServiceConfig) -> Result<OnionService, ServiceError> {
    check_config(&cfg)?;
    let identity = load_or_create_service_key(&cfg.key_file)?;
    let service = launch_with_key(client, cfg, identity).await?;
    info!("onion service {} starting", service.address());
    Ok(service)
}

/// [`launch`] with the identity key given rather than read from `cfg.key_file` (which is
/// then ignored): an ephemeral service whose key never touches the disk (ADD_ONION). Its
/// address is logged at debug only: an ephemeral address is often a secret capability
/// (a share link), handed to its controller alone.
pub async fn launch_with_key(
    client: Client,
    cfg: ServiceConfig,
    identity: crate::crypto::IdentityKeypair,
) -> Result<OnionService, ServiceError> {
    check_config(&cfg)?;
    let address = OnionAddress::from_identity(identity.public())?;
    let clock = client.clock().clone();
    let pow = cfg
        .pow
        .then(|| Mutex::new(PowState::new(cfg.pow_initial_effort, clock.now_unix())));
    let (stop, stopped) = watch::channel(false);
    let shared = Arc::new(Shared {
        client,
        identity,
        address,
        ports: Arc::new(cfg.ports.clone()),
        udp: Arc::new(crate::proto::reactor::UdpTargets {
            ports: cfg.udp_ports.clone(),
            idle: cfg.udp_idle.max(Duration::from_secs(1)),
            sockets: Arc::new(tokio::sync::Semaphore::new(cfg.max_udp_flows)),
        }),
        rendezvous: RendezvousSlots::new(cfg.max_rendezvous),
        budget: Mutex::new(IntroBudget::new(
            cfg.intros_per_second,
            (cfg.intro_point_rate, cfg.intro_point_burst),
            clock.instant().into_std(),
        )),
        intro_point_budget: (cfg.intro_point_rate, cfg.intro_point_burst),
        pow,
        queue: Mutex::new(IntroQueue::new(cfg.intro_queue, cfg.intro_queue_max_age)),
        queued: tokio::sync::Notify::new(),
        pow_update: cfg.pow_update,
        authorized_clients: cfg.authorized_clients.clone(),
        connect_timeout: cfg.connect_timeout,
        rendezvous_idle: cfg.rendezvous_idle.max(Duration::from_secs(1)),
        periods: PeriodParams::default(),
        stopped,
    });
    let (tx, rx) = watch::channel(0u64);
    debug!("onion service {address} starting");
    let answering = tokio::spawn(answer_introductions(Arc::clone(&shared)));
    let task = tokio::spawn(async move {
        // The answering task ends with the main loop, whether stopped or aborted.
        let _answering = AbortOnDrop(answering);
        run(shared, tx).await;
    });
    Ok(OnionService {
        address,
        published: rx,
        task,
        stop,
    })
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Rotates the puzzle seed if the service has a puzzle ([`PowState::rotate`]) and, once per
/// update period (due at `*next_update`), reconsiders the effort it suggests from what the
/// introduction queue went through ([`next_suggested_effort`]).
fn maintain_pow(shared: &Shared, now: u64, next_update: &mut std::time::Instant) {
    let Some(pow) = &shared.pow else {
        return;
    };
    lock(pow).rotate(now);
    let instant = shared.clock().instant().into_std();
    if instant < *next_update {
        return;
    }
    *next_update = instant + shared.pow_update;
    let stats = lock(&shared.queue).take_stats();
    let mut state = lock(pow);
    let current = state.params().suggested_effort;
    let next = next_suggested_effort(current, &stats);
    if state.suggest(next) {
        debug!(
            "onion service: suggested puzzle effort {current} -> {next} ({} answered, {} \
             dropped in the last period)",
            stats.served, stats.dropped
        );
    }
}

/// The service's main loop: introduction points and descriptor publication.
async fn run(shared: Arc<Shared>, published: watch::Sender<u64>) {
    let mut slots: Vec<IntroSlot> = Vec::new();
    let mut retired: Vec<Retired> = Vec::new();
    // Current slots made so far: only the first INTRO_POINTS start with a full bucket.
    let mut slots_made = 0usize;
    let mut schedule = PublishSchedule::new(shared.clock().instant().into_std());
    let mut next_effort_update = shared.clock().instant().into_std() + shared.pow_update;
    loop {
        rotate_slots(
            &mut slots,
            &mut retired,
            shared.clock().instant().into_std(),
        );
        refresh_slots(&shared, &mut slots, &mut slots_made);
        refresh_retired(&shared, &mut retired);
        let up: Vec<&IntroSlot> = slots
            .iter()
            .filter(|s| s.up.load(std::sync::atomic::Ordering::Acquire))
            .collect();
        let now = shared.clock().now_unix();
        maintain_pow(&shared, now, &mut next_effort_update);
        // What the descriptor depends on: the points' auth keys, the puzzle seed and the
        // suggested effort.
        let mut keys: Vec<[u8; 32]> = up.iter().map(|s| *s.auth.public().as_bytes()).collect();
        if let Some(pow) = &shared.pow {
            let p = lock(pow).params();
            let mut effort = [0u8; 32];
            if let Some(head) = effort.get_mut(..4) {
                head.copy_from_slice(&p.suggested_effort.to_be_bytes());
            }
            keys.extend([p.seed, effort]);
        }
        let periods = periods_to_serve(&shared.periods, now);
        schedule.keep_periods(&periods);
        for (i, period) in periods.iter().enumerate() {
            if up.is_empty() || !schedule.may_upload(shared.clock().instant().into_std()) {
                break;
            }
            if !schedule.due(period.number, &keys, shared.clock().instant().into_std()) {
                continue;
            }
            let revision = schedule.next_revision(now);
            match publish(&shared, &up, *period, revision).await {
                Ok(stored) if stored > 0 => {
                    debug!("onion service: descriptor stored at {stored} directories");
                    schedule.stored(
                        period.number,
                        keys.clone(),
                        shared.clock().instant().into_std(),
                    );
                    // Published = the current period's descriptor is stored.
                    if i == 0 {
                        published.send_modify(|n| *n += 1);
                    }
                }
                Ok(_) => {
                    debug!("onion service: no directory stored the descriptor");
                    schedule.failed(shared.clock().instant().into_std());
                }
                Err(e) => {
                    debug!("onion service: cannot publish: {e}");
                    schedule.failed(shared.clock().instant().into_std());
                }
            }
        }
        shared.clock().sleep(TICK).await;
    }
}
