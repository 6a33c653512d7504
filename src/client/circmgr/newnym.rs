//! NEWNYM (a new identity): every circuit closes, those already retired but still
//! carrying streams included, and for a while the exit circuits built afterwards avoid the
//! exit each isolation class last used, so the next stream of that class leaves from
//! another relay whenever another exit allows it (docs/control.md).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::crypto::IdentityPublic;
use crate::proto::CircuitHandle;
use crate::sync::lock;

use super::{CircMgr, Isolation, ReadyCircuit};

/// At most this many exits are avoided at once (the most recently used are kept).
const MAX_AVOIDED_EXITS: usize = 32;
/// Longest an exit is avoided, whatever the dirtiness setting.
const MAX_AVOID: Duration = Duration::from_secs(24 * 3600);

/// A circuit that takes no new streams but may still carry open ones: NEWNYM closes it.
pub(super) struct Retired {
    pub(super) class: Isolation,
    pub(super) exit: IdentityPublic,
    pub(super) first_used: Option<Instant>,
    pub(super) handle: CircuitHandle,
}

/// What NEWNYMs leave for the circuits built after them.
#[derive(Debug, Default)]
pub(super) struct Nym {
    /// How many NEWNYMs there were: a circuit whose build started in an earlier epoch
    /// belongs to an identity that was left, and takes no stream.
    epoch: u64,
    /// Exits to avoid, each until its own time.
    avoid: Vec<(IdentityPublic, Instant)>,
}

impl Nym {
    /// The current epoch and the exits a new exit circuit avoids now.
    pub(super) fn now(&mut self) -> (u64, Vec<IdentityPublic>) {
        let now = Instant::now();
        self.avoid.retain(|(_, until)| *until > now);
        (self.epoch, self.avoid.iter().map(|(e, _)| *e).collect())
    }

    /// The current epoch.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// A NEWNYM: a new epoch, and `exits` avoided for `avoid_for` on top of those still
    /// avoided (a second NEWNYM soon after the first must not free the first's exits).
    fn advance(&mut self, exits: Vec<IdentityPublic>, avoid_for: Duration) {
        self.epoch = self.epoch.wrapping_add(1);
        let now = Instant::now();
        let until = now.checked_add(avoid_for.min(MAX_AVOID)).unwrap_or(now);
        self.avoid.retain(|(e, t)| *t > now && !exits.contains(e));
        self.avoid.extend(exits.into_iter().map(|e| (e, until)));
        // Over the cap, the ones ending soonest go first.
        self.avoid.sort_by_key(|(_, t)| std::cmp::Reverse(*t));
        self.avoid.truncate(MAX_AVOIDED_EXITS);
    }
}

/// Longest NEWNYM waits for the circuits' closes (a circuit whose reactor is stuck must
/// not hold up the others).
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Closes every circuit of `handles` at once, waiting at most [`CLOSE_WAIT`] in all.
pub(crate) async fn close_each(handles: Vec<CircuitHandle>) {
    let mut closing = tokio::task::JoinSet::new();
    for h in handles {
        closing.spawn(async move { h.close().await });
    }
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while closing.join_next().await.is_some() {}
    })
    .await;
    // What did not finish goes on in the background.
    closing.detach_all();
}

/// Per isolation class, the exit of the circuit that carried its latest stream: what the
/// class's next stream must not leave from. One exit per class, so a page that makes the
/// old identity use many exits (odd ports) cannot empty the new identity's choice.
fn last_exits<'a>(
    used: impl Iterator<Item = (&'a Isolation, IdentityPublic, Option<Instant>)>,
) -> Vec<IdentityPublic> {
    let mut latest: HashMap<&Isolation, (Instant, IdentityPublic)> = HashMap::new();
    for (class, exit, first_used) in used {
        let Some(t) = first_used else { continue };
        let e = latest.entry(class).or_insert((t, exit));
        if t > e.0 {
            *e = (t, exit);
        }
    }
    let mut out: Vec<IdentityPublic> = Vec::new();
    for (_, exit) in latest.into_values() {
        if !out.contains(&exit) {
            out.push(exit);
        }
    }
    out
}

impl CircMgr {
    /// NEWNYM: closes every circuit, retired ones with open streams included, so no
    /// stream of the old identity goes on, and builds a clean one again. For the maximum
    /// dirtiness, exit circuits avoid the exit each class last used.
    pub async fn close_all(self: &Arc<Self>) {
        let handles: Vec<CircuitHandle> = {
            // Under the lock a finishing build checks, so none is kept after this; and
            // the lists are emptied under the one `circuits` lock that moves circuits
            // between them (nym, circuits, retiring, clean: the manager's lock order).
            let mut nym = lock(&self.nym);
            let mut map = lock(&self.circuits);
            let retired: Vec<Retired> = lock(&self.retiring).drain(..).collect();
            let clean: Vec<ReadyCircuit> = lock(&self.clean).drain(..).collect();
            let ready: Vec<(Isolation, ReadyCircuit)> = map
                .drain()
                .flat_map(|(k, v)| v.into_iter().map(move |c| (k.clone(), c)))
                .collect();
            drop(map);
            let exits = last_exits(
                ready
                    .iter()
                    .map(|(k, c)| (k, c.exit, c.first_used))
                    .chain(retired.iter().map(|r| (&r.class, r.exit, r.first_used))),
            );
            nym.advance(exits, self.params.max_dirtiness);
            ready
                .into_iter()
                .map(|(_, c)| c.handle)
                .chain(clean.into_iter().map(|c| c.handle))
                .chain(retired.into_iter().map(|r| r.handle))
                .collect()
        };
        close_each(handles).await;
        self.replenish();
    }

    /// How many NEWNYMs there were: work started in an earlier epoch belongs to an
    /// identity that was left.
    pub(crate) fn nym_epoch(&self) -> u64 {
        lock(&self.nym).epoch()
    }

    /// Keeps `c` as a clean circuit unless a NEWNYM came since its build started (then
    /// closes it). Checked under the NEWNYM lock, so [`Self::close_all`] cannot miss it.
    pub(super) fn keep_clean(&self, c: ReadyCircuit) -> bool {
        let nym = lock(&self.nym);
        if c.nym == nym.epoch() {
            lock(&self.clean).push(c);
            return true;
        }
        drop(nym);
        tokio::spawn(async move { c.handle.close().await });
        false
    }

    /// Remembers circuits of class `class` that take no new streams, until they close.
    pub(super) fn keep_retired(&self, class: &Isolation, expired: Vec<ReadyCircuit>) {
        let mut retiring = lock(&self.retiring);
        retiring.retain(|r| !r.handle.is_closed());
        for c in expired {
            if c.handle.is_closed() {
                continue;
            }
            let handle = c.handle.clone();
            tokio::spawn(async move { handle.retire().await });
            retiring.push(Retired {
                class: class.clone(),
                exit: c.exit,
                first_used: c.first_used,
                handle: c.handle,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit() -> IdentityPublic {
        crate::crypto::IdentityKeypair::generate(&mut rand::rng()).public()
    }

    #[tokio::test(start_paused = true)]
    async fn avoided_exits_are_forgotten_in_time_and_a_second_newnym_keeps_the_first() {
        let (a, b) = (exit(), exit());
        let mut nym = Nym::default();
        nym.advance(vec![a], Duration::from_secs(600));
        assert_eq!(nym.now(), (1, vec![a]));
        tokio::time::advance(Duration::from_secs(300)).await;
        // A second NEWNYM with nothing used since: the first one's exit stays avoided.
        nym.advance(vec![], Duration::from_secs(600));
        assert_eq!(nym.now(), (2, vec![a]));
        nym.advance(vec![b], Duration::from_secs(600));
        assert_eq!(nym.now().1.len(), 2);
        tokio::time::advance(Duration::from_secs(300)).await;
        assert_eq!(nym.now(), (3, vec![b]));
        tokio::time::advance(Duration::from_secs(300)).await;
        assert_eq!(nym.now(), (3, vec![]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_huge_dirtiness_neither_panics_nor_avoids_forever() {
        let a = exit();
        let mut nym = Nym::default();
        nym.advance(vec![a], Duration::MAX);
        assert_eq!(nym.now().1, vec![a]);
        tokio::time::advance(MAX_AVOID).await;
        assert!(nym.now().1.is_empty());
    }

    #[test]
    fn each_class_avoids_only_the_exit_it_used_last() {
        let (a, b, c) = (exit(), exit(), exit());
        let (x, y) = (Isolation(b"x".to_vec()), Isolation(b"y".to_vec()));
        let t0 = Instant::now();
        let t = |s: u64| Some(t0 + Duration::from_secs(s));
        // Class x used a, then b (odd ports), then a again; y used c; a clean one: none.
        let used = [
            (&x, a, t(1)),
            (&x, b, t(2)),
            (&x, a, t(3)),
            (&y, c, t(1)),
            (&y, b, None),
        ];
        let mut got = last_exits(used.into_iter());
        got.sort_by_key(|e| *e.as_bytes());
        let mut want = vec![a, c];
        want.sort_by_key(|e| *e.as_bytes());
        assert_eq!(got, want);
        assert_eq!(nym_cap_holds(), MAX_AVOIDED_EXITS);
    }

    fn nym_cap_holds() -> usize {
        let mut nym = Nym::default();
        nym.advance((0..40).map(|_| exit()).collect(), Duration::from_secs(60));
        nym.now().1.len()
    }
}
