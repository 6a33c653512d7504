//! The authority's voting schedule: one round per consensus period (vote at `va − P/2`,
//! compute at `va − P/3`, collect signatures at `va − P/6`, publish at `va`), re-aligned
//! when the wall clock jumps so no consensus is made for a period that is already over.

use std::sync::Arc;

use tracing::info;

use crate::clock::{Jump, JumpWatch};
use crate::sync::lock;

use super::Authority;

impl Authority {
    /// The next period start whose vote can still be made: the next boundary, or the one
    /// after when a live consensus is served and fewer than P/2 remain (no rush needed).
    /// With no live consensus (start-up, after a clock jump) the nearest boundary is taken
    /// even late: a short voting round beats another period without a consensus.
    fn next_period(&self, now: u64) -> u64 {
        let p = self.period();
        let va = (now / p + 1) * p;
        let serving = lock(&self.state)
            .published
            .as_ref()
            .is_some_and(|(until, _)| *until > now);
        if va - now < p / 2 && serving {
            va + p
        } else {
            va
        }
    }

    /// Runs one period's round: vote, compute, collect signatures, publish. Returns early
    /// (publishing nothing) if the wall clock jumps meanwhile.
    async fn round(&self, va: u64, jumps: &mut JumpWatch) -> Option<Jump> {
        let p = self.period();
        let clock = &self.relay.clock;
        macro_rules! until {
            ($t:expr) => {
                tokio::select! {
                    () = clock.sleep_until_unix($t) => {}
                    j = jumps.next() => return Some(j),
                }
            };
        }
        until!(va.saturating_sub(p / 2));
        if let Some(v) = self.build_vote(va) {
            lock(&self.state).votes.insert(va, v);
        }
        until!(va.saturating_sub(p / 3));
        self.compute(va).await;
        until!(va.saturating_sub(p / 6));
        self.collect_signatures(va).await;
        until!(va);
        // A consensus for a period already over would be expired or nearly so when
        // served; the clock ran past it (a suspend the jump watcher has not reported yet).
        if self.now() >= va + p {
            info!("authority: the period to publish is already over; skipping it");
            return None;
        }
        self.publish(va);
        None
    }

    /// After a wall-clock jump: stamps taken on the old clock (upload rate limits, votes
    /// and consensuses of periods now in the future) would misfire; drop them. The
    /// consensus served stays while it is valid.
    fn after_jump(&self, jump: Jump) {
        let now = self.now();
        let mut state = lock(&self.state);
        state.last_upload.clear();
        state.votes.retain(|&va, _| va <= now);
        state.computed.retain(|&va, _| va <= now);
        // After a jump back the consensus we serve may not be valid yet (clients would
        // refuse it): stop serving it rather than claim a consensus we do not have.
        let period = self.period();
        let early = crate::dir::consensus::DEFAULT_CONSENSUS_SKEW;
        if state
            .published
            .as_ref()
            .is_some_and(|(until, _)| until.saturating_sub(3 * period) > now.saturating_add(early))
        {
            state.published = None;
        }
        let serving = state
            .published
            .as_ref()
            .is_some_and(|(until, _)| *until > now);
        drop(state);
        let next = self.next_period(now);
        info!(
            "authority: {jump}; voting again for the period starting in {} s{}",
            next.saturating_sub(now),
            if serving {
                "; the current consensus is served meanwhile"
            } else {
                "; no valid consensus until then"
            }
        );
    }

    pub(super) async fn schedule(self: Arc<Self>) {
        let mut jumps = self.relay.clock.watch_jumps();
        loop {
            let va = self.next_period(self.now());
            if let Some(jump) = self.round(va, &mut jumps).await {
                self.after_jump(jump);
            }
        }
    }
}
