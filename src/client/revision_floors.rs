//! The highest onion-descriptor revision a client accepted per blinded key, so that a
//! directory cannot roll it back to an older descriptor (older introduction points).

use std::collections::HashMap;

/// Blinded keys whose highest accepted revision is remembered at once.
pub const MAX_REVISION_FLOORS: usize = 10_000;

/// The highest descriptor revision accepted per blinded key, with that descriptor's expiry.
/// Bounded: an entry is dropped once its descriptor has expired (with the clock skew
/// allowance; an older revision expires no later for a service whose revisions follow its
/// clock, and a blinded key lives one period anyway), and beyond [`MAX_REVISION_FLOORS`]
/// entries the soonest-expiring is dropped.
#[derive(Debug)]
pub(crate) struct RevisionFloors {
    /// Clock skew tolerated on a descriptor's expiry (seconds).
    skew: u64,
    /// Blinded key → (revision, expiry in Unix seconds).
    map: HashMap<[u8; 32], (u64, u64)>,
}

impl RevisionFloors {
    /// No floor yet; an entry lasts until its descriptor expired `skew` seconds ago.
    pub(crate) fn new(skew: u64) -> Self {
        RevisionFloors {
            skew,
            map: HashMap::new(),
        }
    }

    /// The lowest revision acceptable for `blinded` at `now` (0 when unknown or expired).
    pub(crate) fn floor(&self, blinded: &[u8; 32], now: u64) -> u64 {
        self.map
            .get(blinded)
            .filter(|(_, expires)| !self.expired(*expires, now))
            .map_or(0, |(revision, _)| *revision)
    }

    fn expired(&self, expires: u64, now: u64) -> bool {
        expires.saturating_add(self.skew) <= now
    }

    /// Records that `revision`, expiring at `expires`, was accepted for `blinded`.
    pub(crate) fn record(&mut self, blinded: [u8; 32], revision: u64, expires: u64, now: u64) {
        let skew = self.skew;
        self.map.retain(|_, (_, e)| e.saturating_add(skew) > now);
        match self.map.get_mut(&blinded) {
            Some(entry) => {
                if revision >= entry.0 {
                    *entry = (revision, expires.max(entry.1));
                }
            }
            None => {
                while self.map.len() >= MAX_REVISION_FLOORS {
                    let soonest = self
                        .map
                        .iter()
                        .min_by_key(|(_, (_, e))| *e)
                        .map(|(k, _)| *k);
                    match soonest {
                        Some(k) => self.map.remove(&k),
                        None => break,
                    };
                }
                self.map.insert(blinded, (revision, expires));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client's tolerance ([`crate::client::onion_connect::DESCRIPTOR_SKEW`]).
    const DESCRIPTOR_SKEW: u64 = 300;

    #[test]
    fn revision_floors_expire_and_are_bounded() {
        let mut f = RevisionFloors::new(DESCRIPTOR_SKEW);
        let key = |i: u32| {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_be_bytes());
            k
        };
        f.record(key(1), 10, 1_000, 0);
        assert_eq!(f.floor(&key(1), 500), 10);
        assert_eq!(f.floor(&key(2), 500), 0);
        // A newer revision raises the floor, an older one never lowers it.
        f.record(key(1), 12, 1_100, 600);
        f.record(key(1), 11, 1_200, 600);
        assert_eq!(f.floor(&key(1), 700), 12);
        // Expired (past the expiry of the highest revision plus the skew): forgotten, and
        // pruned on the next record.
        assert_eq!(f.floor(&key(1), 1_100 + DESCRIPTOR_SKEW - 1), 12);
        assert_eq!(f.floor(&key(1), 1_100 + DESCRIPTOR_SKEW), 0);
        f.record(key(2), 1, 9_000, 1_100 + DESCRIPTOR_SKEW);
        assert_eq!(f.map.len(), 1);
        // Full: the soonest-expiring entry makes room.
        let mut f = RevisionFloors::new(DESCRIPTOR_SKEW);
        for i in 0..MAX_REVISION_FLOORS as u32 {
            f.record(key(i), 5, 10_000 + u64::from(i), 0);
        }
        assert_eq!(f.map.len(), MAX_REVISION_FLOORS);
        f.record(key(u32::MAX), 5, 50_000, 0);
        assert_eq!(f.map.len(), MAX_REVISION_FLOORS);
        assert_eq!(f.floor(&key(0), 0), 0, "the soonest-expiring was dropped");
        assert_eq!(f.floor(&key(1), 0), 5);
        assert_eq!(f.floor(&key(u32::MAX), 0), 5);
    }
}
