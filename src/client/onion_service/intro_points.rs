//! Keeping the introduction points: choosing relays for the current slots, and starting a
//! task for every slot (current or retired) whose circuit is down.

use std::sync::Arc;

use rand::seq::SliceRandom;

use crate::client::circmgr::relay_target;
use crate::dir::ConsensusEntry;

use super::intro_gate::IntroGate;
use super::intro_slot::{IntroSlot, Retired, MAX_INTRO_FAILURES};
use super::intro_task::IntroTask;
use super::shared::Shared;
use super::INTRO_POINTS;

/// Keeps [`INTRO_POINTS`] slots, each with a task owning its introduction circuit.
/// `made` counts the slots made so far: the first [`INTRO_POINTS`] get a full decryption
/// bucket, later ones (replacing a slot) an empty one, so the current points' tokens
/// together never exceed the joint bucket that covers them (`current` in
/// [`IntroBudget`](super::intro_budget::IntroBudget)).
/// A new point is not in any descriptor before it is established, so its bucket has
/// filled for a while before clients can use it.
pub(super) fn refresh_slots(shared: &Arc<Shared>, slots: &mut Vec<IntroSlot>, made: &mut usize) {
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
        // Listed identities are validated when used: a relay whose identity is not a
        // usable key is skipped.
        let Some(relay) = candidates.iter().find(|r| r.validated_identity().is_ok()) else {
            break;
        };
        let (rate, burst) = shared.intro_point_budget;
        let gate = if *made < INTRO_POINTS {
            IntroGate::new(rate, burst, shared.clock().instant().into_std())
        } else {
            IntroGate::empty(rate, burst, shared.clock().instant().into_std())
        };
        *made = made.saturating_add(1);
        slots.push(IntroSlot::new(
            (*relay).clone(),
            shared.clock().instant().into_std(),
            gate,
        ));
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
pub(super) fn refresh_retired(shared: &Arc<Shared>, retired: &mut Vec<Retired>) {
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
    let Ok(target) = relay_target(&slot.relay, shared.clock().now_unix()) else {
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
