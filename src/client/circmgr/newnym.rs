//! NEWNYM (a new identity): every circuit closes, and for a while the exit circuits built
//! afterwards avoid the exits the old identity's streams left from, so the next streams
//! leave from other relays whenever another exit allows them (docs/control.md).

use std::sync::Arc;

use tokio::time::Instant;

use crate::crypto::IdentityPublic;
use crate::sync::lock;

use super::CircMgr;

/// At most this many exits are avoided (a client with streams in many isolation classes
/// used many exits; avoiding more would leave little choice in a small network anyway).
const MAX_AVOIDED_EXITS: usize = 32;

/// What the last NEWNYM leaves for the circuits built after it.
#[derive(Debug, Default)]
pub(super) struct Nym {
    /// How many NEWNYMs there were: a circuit whose build started in an earlier epoch
    /// belongs to an identity that was left, and takes no stream.
    epoch: u64,
    /// The exits of the circuits the last NEWNYM closed that had carried streams.
    avoid: Vec<IdentityPublic>,
    /// When `avoid` is forgotten.
    until: Option<Instant>,
}

impl Nym {
    /// The current epoch and the exits a new exit circuit avoids now (none once the
    /// memory's time is past).
    pub(super) fn now(&mut self) -> (u64, Vec<IdentityPublic>) {
        if self.until.is_some_and(|t| Instant::now() >= t) {
            self.avoid = Vec::new();
            self.until = None;
        }
        (self.epoch, self.avoid.clone())
    }

    /// The current epoch.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }
}

impl CircMgr {
    /// NEWNYM: closes every circuit, so no new stream uses any of them, and builds a clean
    /// one again. For the maximum dirtiness (as long as the closed circuits would have
    /// taken new streams), exit circuits avoid the exits of those that carried streams.
    pub async fn close_all(self: &Arc<Self>) {
        let all = {
            let mut nym = lock(&self.nym);
            // First, so a build finishing now sees it and closes its circuit.
            nym.epoch = nym.epoch.wrapping_add(1);
            let all = self.take_all();
            let mut used: Vec<IdentityPublic> = Vec::new();
            for c in all.iter().filter(|c| c.first_used.is_some()) {
                if !used.contains(&c.exit) && used.len() < MAX_AVOIDED_EXITS {
                    used.push(c.exit);
                }
            }
            nym.avoid = used;
            nym.until = Some(Instant::now() + self.params.max_dirtiness);
            all
        };
        for c in all {
            c.handle.close().await;
        }
        self.replenish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_avoided_exits_are_forgotten_in_time() {
        let id = crate::crypto::IdentityKeypair::generate(&mut rand::rng()).public();
        let mut nym = Nym {
            epoch: 3,
            avoid: vec![id],
            until: Some(Instant::now() + std::time::Duration::from_secs(600)),
        };
        assert_eq!(nym.now(), (3, vec![id]));
        tokio::time::advance(std::time::Duration::from_secs(599)).await;
        assert_eq!(nym.now(), (3, vec![id]));
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        assert_eq!(nym.now(), (3, vec![]));
        assert_eq!(nym.epoch(), 3);
    }
}
