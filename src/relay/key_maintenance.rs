//! The task that keeps a running relay's keys fresh: it sleeps on the wall clock until the
//! next renewal is due ([`super::key_schedule`]), renews, and sleeps again.
//!
//! Waiting with `Clock::sleep_until_unix` (which re-reads the wall clock every 30 s) and
//! for [`Clock::watch_jumps`] (which looks every 10 s) makes a jump forward (resume from
//! suspend) renew within about 10 s; after a jump back the schedule is looked at again at
//! once (certificates issued while the clock ran ahead are replaced).

use tokio::sync::watch;

use crate::clock::Clock;

use super::keys::RelayKeys;

/// Renews `keys` on schedule until `stop` changes (or its sender is dropped).
pub(crate) async fn run(keys: &RelayKeys, clock: &Clock, mut stop: watch::Receiver<bool>) {
    let mut jumps = clock.watch_jumps();
    loop {
        let next = keys.maintain(clock.now_unix());
        tokio::select! {
            () = clock.sleep_until_unix(next) => {}
            _ = jumps.next() => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    use super::super::key_schedule::{
        LINK_CERT_RENEW_BEFORE, ONION_KEY_ROTATION, PREVIOUS_ONION_KEY_GRACE,
    };
    use super::*;
    use crate::clock::WALL_RECHECK;

    const HOUR: u64 = 3600;
    const DAY: u64 = 24 * HOUR;
    const START: u64 = 1_800_000_000;

    fn start() -> (Clock, Arc<RelayKeys>, watch::Sender<bool>) {
        let clock = Clock::simulated(UNIX_EPOCH + Duration::from_secs(START));
        let keys = Arc::new(RelayKeys::generate(&clock));
        let (stop, rx) = watch::channel(false);
        let (k, c) = (Arc::clone(&keys), clock.clone());
        tokio::spawn(async move { run(&k, &c, rx).await });
        (clock, keys, stop)
    }

    /// The invariants a client relies on, at any moment.
    fn check_fresh(keys: &RelayKeys, now: u64) {
        let link_left = keys.link_auth().cert().expires().saturating_sub(now);
        // Renewed at 5 days left; the task looks at least every 30 s.
        assert!(
            link_left + WALL_RECHECK.as_secs() >= LINK_CERT_RENEW_BEFORE,
            "link cert has {link_left} s left"
        );
        let cert = keys.onion_cert();
        assert!(cert.verify(now).is_ok(), "onion-key cert valid");
        assert_eq!(cert.onion_key(), keys.onion_keys().current().public());
        let age = now.saturating_sub(keys.onion_key_created());
        assert!(
            age <= ONION_KEY_ROTATION + WALL_RECHECK.as_secs(),
            "age {age}"
        );
        if keys.onion_keys().previous().is_some() {
            assert!(age <= PREVIOUS_ONION_KEY_GRACE + WALL_RECHECK.as_secs());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sixty_days_of_renewals_on_schedule() {
        let (clock, keys, _stop) = start();
        let first_onion = *keys.onion_keys().current().public();
        let mut seen_previous = None;
        // Up to an hour before day 60 (a renewal falls due at day 60 itself).
        for hour in 1..60 * 24 {
            tokio::time::sleep(Duration::from_secs(HOUR)).await;
            let now = clock.now_unix();
            check_fresh(&keys, now);
            // Within the grace after the first rotation, the first key is still accepted.
            if hour == 14 * 24 + 1 {
                assert!(keys.onion_keys().find(&first_onion).is_some());
                seen_previous = keys.onion_keys().previous().map(|p| *p.public());
            }
            if hour == 21 * 24 + 1 {
                assert!(keys.onion_keys().find(&first_onion).is_none());
            }
        }
        assert_eq!(seen_previous, Some(first_onion));
        // Every 2 days a link renewal (days 2..=58), every 14 days a rotation.
        assert_eq!(keys.link_cert_renewals(), 29);
        assert_eq!(keys.onion_key_rotations(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_jump_forward_renews_within_the_recheck_and_a_jump_back_breaks_nothing() {
        let (clock, keys, _stop) = start();
        tokio::time::sleep(Duration::from_secs(60)).await;
        clock.jump_forward(Duration::from_secs(8 * DAY));
        tokio::time::sleep(WALL_RECHECK + Duration::from_secs(1)).await;
        assert_eq!(
            keys.link_cert_renewals(),
            1,
            "one renewal, not one per missed period"
        );
        check_fresh(&keys, clock.now_unix());

        clock.jump_forward(Duration::from_secs(7 * DAY));
        tokio::time::sleep(WALL_RECHECK + Duration::from_secs(1)).await;
        assert_eq!(keys.onion_key_rotations(), 1);
        assert!(keys.onion_keys().previous().is_some());
        // The rotation left a permit for the publisher.
        keys.descriptor_changed().notified().await;
        check_fresh(&keys, clock.now_unix());

        let renewals = keys.link_cert_renewals();
        clock.jump_back(Duration::from_secs(10 * 60));
        tokio::time::sleep(Duration::from_secs(HOUR)).await;
        assert_eq!(
            keys.link_cert_renewals(),
            renewals,
            "a small step back renews nothing"
        );
        // Three days back: the link certificate now outlives the clock by more than its
        // lifetime plus a day (issued "in the future"): replaced once, no storm.
        clock.jump_back(Duration::from_secs(3 * DAY));
        tokio::time::sleep(Duration::from_secs(HOUR)).await;
        assert_eq!(
            keys.link_cert_renewals(),
            renewals + 1,
            "one renewal, no storm"
        );
        assert_eq!(keys.onion_key_rotations(), 1);
        let now = clock.now_unix();
        assert!(keys.link_auth().cert().expires() > now);
        assert!(keys.onion_cert().verify(now).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_ends_when_told_to_stop() {
        let clock = Clock::simulated(UNIX_EPOCH + Duration::from_secs(START));
        let keys = Arc::new(RelayKeys::generate(&clock));
        let (stop, rx) = watch::channel(false);
        let (k, c) = (Arc::clone(&keys), clock.clone());
        let task = tokio::spawn(async move { run(&k, &c, rx).await });
        let _ = stop.send(true);
        task.await.expect("task ends");
    }
}
