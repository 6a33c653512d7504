//! What the relay's publisher and self-test ([`super::self_test`]) found, shared with the
//! metrics endpoint. Knows nothing of the tasks that fill it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::sync::lock;

/// What the publisher and the self-test know; metrics read it.
#[derive(Debug, Default)]
pub struct SelfTestStatus {
    reachable: AtomicBool,
    listed: AtomicBool,
    descriptor_accepted: AtomicBool,
    /// When an authority last accepted the descriptor (Unix seconds; 0: never).
    accepted_at: AtomicU64,
    /// The address in the last descriptor built, and the last refusal's reason if the
    /// last round was refused by every authority that answered.
    round: Mutex<(Option<SocketAddr>, Option<String>)>,
    /// Woken by the publisher after each round.
    wake: tokio::sync::Notify,
}

impl SelfTestStatus {
    /// Whether the last self-test reached this relay through another relay.
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// Whether the current consensus lists this relay with its address and onion key.
    pub fn listed(&self) -> bool {
        self.listed.load(Ordering::Relaxed)
    }

    pub(crate) fn set_reachable(&self, yes: bool) {
        self.reachable.store(yes, Ordering::Relaxed);
    }

    pub(crate) fn set_listed(&self, yes: bool) {
        self.listed.store(yes, Ordering::Relaxed);
    }

    /// When an authority last accepted the descriptor (Unix seconds), if ever.
    pub(crate) fn accepted_at(&self) -> Option<u64> {
        Some(self.accepted_at.load(Ordering::Relaxed)).filter(|t| *t != 0)
    }

    /// The address of the last round, and the refusal of the last round if every
    /// authority that answered refused it.
    pub(crate) fn last_round(&self) -> (Option<SocketAddr>, Option<String>) {
        lock(&self.round).clone()
    }

    /// Woken after each publish round.
    pub(crate) fn woken(&self) -> &tokio::sync::Notify {
        &self.wake
    }

    /// Whether an authority accepted the last descriptor upload.
    pub fn descriptor_accepted(&self) -> bool {
        self.descriptor_accepted.load(Ordering::Relaxed)
    }

    /// Records a publish round: the address advertised (`None`: none known), and whether
    /// some authority accepted the descriptor (`Ok`) or why they refused it (`Err`). A round
    /// where no authority answered keeps the previous verdict.
    pub(crate) fn record_round(
        &self,
        advertised: Option<SocketAddr>,
        outcome: Option<Result<(), String>>,
        now: u64,
    ) {
        let mut round = lock(&self.round);
        round.0 = advertised;
        match outcome {
            Some(Ok(())) => {
                self.descriptor_accepted.store(true, Ordering::Relaxed);
                self.accepted_at.store(now, Ordering::Relaxed);
                round.1 = None;
            }
            Some(Err(reason)) => {
                self.descriptor_accepted.store(false, Ordering::Relaxed);
                round.1 = Some(reason);
            }
            None => {}
        }
        drop(round);
        self.wake.notify_one();
    }
}
