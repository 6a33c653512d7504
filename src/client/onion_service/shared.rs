//! The state a service's tasks share (the main loop, introduction tasks, publication and
//! rendezvous). Its own file so that those tasks' files need not import the main loop's.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::client::facade::Client;
use crate::client::service_end::RendezvousSlots;
use crate::crypto::IdentityKeypair;
use crate::onion::{OnionAddress, PeriodParams};

use super::intro_budget::IntroBudget;
use super::intro_queue::IntroQueue;
use super::intro_queue::Queued;
use super::pow::PowState;

/// What the introduction tasks share.
pub(super) struct Shared {
    pub(super) client: Client,
    pub(super) identity: IdentityKeypair,
    pub(super) address: OnionAddress,
    pub(super) ports: Arc<Vec<(u16, SocketAddr)>>,
    /// Where the clients' UDP flows go.
    pub(super) udp: Arc<crate::proto::reactor::UdpTargets>,
    pub(super) rendezvous: Arc<RendezvousSlots>,
    /// The service-wide budgets (decryptions, rendezvous started).
    pub(super) budget: Mutex<IntroBudget>,
    /// Each introduction point's decryption budget: (per second, burst).
    pub(super) intro_point_budget: (u32, u32),
    /// The puzzle (seeds, nonces used, suggested effort), if the service publishes one.
    pub(super) pow: Option<Mutex<PowState>>,
    /// Valid introductions waiting for the rate of answered ones, highest effort first.
    pub(super) queue: Mutex<IntroQueue<Queued>>,
    /// Woken when an introduction is queued.
    pub(super) queued: tokio::sync::Notify,
    /// How often the suggested effort is reconsidered.
    pub(super) pow_update: Duration,
    /// The clients allowed to read the descriptor (empty: anyone with the address).
    pub(super) authorized_clients: Vec<crate::onion::ClientAuthPublic>,
    pub(super) connect_timeout: Duration,
    pub(super) rendezvous_idle: Duration,
    pub(super) periods: PeriodParams,
    /// Becomes true when the service stops.
    pub(super) stopped: watch::Receiver<bool>,
}

impl Shared {
    /// The service's clock: its client's.
    pub(super) fn clock(&self) -> &crate::clock::Clock {
        self.client.clock()
    }
}
