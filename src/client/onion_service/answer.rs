//! The task that answers queued introductions ([`super::intro_queue`]) within the
//! service's rate, highest puzzle effort first: a rendezvous slot, the client key recorded
//! in its introduction point's replay cache, then [`meet`] in a task of its own.

use std::sync::Arc;

use tracing::debug;

use crate::sync::lock;

use super::intro_budget::{answer_next, Dropped};
use super::intro_queue::Queued;
use super::rendezvous::{meet, RendezvousSlot};
use super::shared::Shared;

/// How long the answering task waits before trying again when no rendezvous slot is free.
const SLOT_RETRY: std::time::Duration = std::time::Duration::from_millis(250);

/// Answers queued introductions until the service stops.
pub(super) async fn answer_introductions(shared: Arc<Shared>) {
    let mut stopped = shared.stopped.clone();
    loop {
        let now = shared.clock().instant().into_std();
        match answer_next(&shared.queue, &shared.budget, now, |q| {
            take_rendezvous_slot(&shared, q)
        }) {
            Some(Ok((q, slot))) => {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    if let Err(e) = meet(&shared, q.plain, q.hs, slot).await {
                        debug!("onion service: rendezvous failed: {e}");
                    }
                });
            }
            // Every rendezvous slot is in use: the introduction keeps its place until one
            // is given up (an idle circuit's, see RendezvousSlots) or it is too old.
            Some(Err(Dropped::NoSlot)) => {
                tokio::select! {
                    _ = shared.clock().sleep(SLOT_RETRY) => {}
                    _ = until_stopped(&mut stopped) => return,
                }
            }
            // A replay refused by its point's cache: dropped (logged by take_rendezvous_slot).
            Some(Err(Dropped::Invalid)) => {}
            Some(Err(_)) => {
                // This second's answers are spent: wait for the next window.
                let wait = lock(&shared.budget)
                    .window_ends()
                    .saturating_duration_since(now);
                tokio::select! {
                    _ = shared.clock().sleep(wait) => {}
                    _ = until_stopped(&mut stopped) => return,
                }
            }
            None => {
                tokio::select! {
                    _ = shared.queued.notified() => {}
                    _ = until_stopped(&mut stopped) => return,
                }
            }
        }
    }
}

/// A rendezvous slot for `q`, with its client key recorded in its point's replay cache
/// (the cache locked across both, so the slot is taken only for a key recorded now, never
/// for a repeat). `NoSlot` if no slot is free (the introduction waits on), `Invalid` if
/// the cache refuses it.
fn take_rendezvous_slot(shared: &Shared, q: &Queued) -> Result<RendezvousSlot, Dropped> {
    let mut replay = lock(&q.replay);
    if replay.check(&q.client_x).is_err() {
        debug!("onion service: replayed or refused introduction");
        return Err(Dropped::Invalid);
    }
    let Some(slot) = shared.rendezvous.try_acquire() else {
        return Err(Dropped::NoSlot);
    };
    replay
        .check_and_insert(&q.client_x)
        .map_err(|_| Dropped::Invalid)?;
    Ok(slot)
}

/// Returns once the service stops (never if its handle went away without stopping it).
async fn until_stopped(stopped: &mut tokio::sync::watch::Receiver<bool>) {
    if stopped.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}
