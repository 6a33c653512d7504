//! The service side of onion services (protocol.md §8): keeps introduction points,
//! publishes the descriptor, answers introductions by meeting clients at their rendezvous
//! points, and serves the clients' streams from local targets.
//!
//! One task per service (`service.rs`) keeps [`INTRO_POINTS`] introduction circuits (each a
//! 3-hop circuit whose last hop is the introduction point, with ESTABLISH_INTRO bound to
//! that circuit's keys) and rebuilds them when they close (`intro_points.rs`); it signs a
//! new descriptor whenever the set changes or the period turns, and re-uploads it every
//! [`REUPLOAD_EVERY`] to every relay of the hash ring (`publish_schedule.rs`,
//! `publish.rs`). Each introduction circuit has its own task that receives INTRODUCE2
//! (`intro_task.rs`); a valid introduction waits in the service's queue, highest puzzle
//! effort first (`intro_queue.rs`), until the service's rate lets `answer.rs` take it. An
//! answered introduction builds a circuit to the client's rendezvous
//! point, sends RENDEZVOUS1, adds the end-to-end keys and hands the circuit to a
//! service-mode circuit task (`rendezvous.rs`): it acts as the exit, connecting BEGINs for
//! a configured virtual port to the local target.
//!
//! The policy that decides by time is kept apart from the tasks and takes `now`, so it is
//! tested without sleeping: the decryption gates (`intro_gate.rs`) and budgets
//! (`intro_budget.rs`), key rotation of the introduction slots (`intro_slot.rs`), the
//! puzzle seeds and the replay cache of solutions (`pow.rs`), the effort the service
//! suggests (`intro_queue.rs`) and the upload schedule (`publish_schedule.rs`).

mod answer;
mod config;
mod intro_budget;
mod intro_gate;
mod intro_points;
mod intro_queue;
mod intro_slot;
mod intro_task;
mod keys;
mod pow;
mod publish;
mod publish_schedule;
mod rendezvous;
mod service;
mod shared;

pub use config::{ServiceConfig, ServiceError};
pub use intro_slot::{INTRO_KEY_JITTER, INTRO_KEY_LIFETIME};
pub use keys::load_or_create_service_key;
pub use publish_schedule::REUPLOAD_EVERY;
pub use service::{launch, launch_with_key, OnionService};

/// Introduction points a service keeps.
pub const INTRO_POINTS: usize = 3;

/// Fixtures shared by the tests of several files here.
#[cfg(test)]
mod test_support {
    use crate::crypto::{IdentityKeypair, OnionKeypair};
    use crate::dir::ConsensusEntry;

    /// A consensus entry for a fresh relay identity: no address, no flags.
    pub(super) fn relay_entry() -> ConsensusEntry {
        let id = IdentityKeypair::generate(&mut rand::rng());
        let onion = OnionKeypair::generate(&mut rand::rng());
        ConsensusEntry {
            identity: id.public().into(),
            onion_cert: crate::crypto::OnionKeyCert::sign(&id, onion.public(), u64::MAX),
            addrs: Vec::new(),
            flags: crate::dir::RelayFlags::empty(),
            bandwidth: 0,
            measured: true,
            exit_policy: crate::dir::policy::ExitPolicy::reject_all(),
            udp_policy: crate::dir::policy::ExitPolicy::reject_all(),
            family: Vec::new(),
        }
    }
}
