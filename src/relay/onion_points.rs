//! The relay-wide registries of the onion-service roles (docs/protocol.md §8.5, §8.6,
//! §8.9): which circuit is the introduction circuit for an auth key, and which circuit
//! waits at this rendezvous point under a cookie.
//!
//! The circuits themselves live in their own tasks ([`super::circuit`]); a registry entry
//! holds the queue that reaches the task plus what another circuit needs to act on it
//! (the rate limiter of an introduction point; the shared backward half of a rendezvous
//! circuit, so the partner can splice cells onto it). Every table is bounded relay-wide
//! only: a per-channel bound would not help, since at a point reached through a middle
//! relay every client behind that relay shares one channel, and one client could use up
//! the share of all the others. A full introduction table refuses; a full cookie table
//! drops its oldest cookie (the waiting circuit is closed), so a flood of cookies cannot
//! lock out new clients, it can only shorten how long cookies wait.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::proto::event_queue::EventSender;

use crate::cell::onion_msg::{KEY_LEN, REND_COOKIE_LEN};
use crate::cell::CircId;
use crate::sync::lock;

use super::events::CircEvent;
use super::events::SharedBackward;
use super::limits::RelayLimits;
use super::rate_limit::TokenBucket;

/// Identifies one circuit task for the lifetime of the relay (circuit ids are per channel
/// and get reused; this never is).
pub(crate) type CircSerial = u64;

/// Who a registry entry belongs to, as this relay sees it.
#[derive(Debug, Clone)]
pub struct CircRef {
    /// The circuit's unique serial.
    pub serial: CircSerial,
    /// The circuit task's queue.
    pub tx: EventSender<CircEvent>,
    /// The circuit's id on its previous hop's channel (for the observer).
    pub circ: CircId,
    /// The previous hop's TCP address (for the observer; a relay's address for a
    /// circuit of three or more hops).
    pub peer: SocketAddr,
}

/// A registered introduction point.
#[derive(Debug, Clone)]
pub struct IntroReg {
    /// The service's circuit.
    pub circ: CircRef,
    /// The INTRODUCE1 rate limit the service asked for, capped by ours.
    pub bucket: Arc<TokenBucket>,
}

/// A cookie waiting at this rendezvous point.
#[derive(Debug, Clone)]
pub struct RendReg {
    /// The client's circuit.
    pub circ: CircRef,
    /// Its backward half, so the service's circuit can send RENDEZVOUS2 and splice.
    pub backward: SharedBackward,
    /// When the cookie was registered.
    pub since: Instant,
}

/// Why a registration was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterError {
    /// The relay-wide bound is reached.
    Full,
    /// The cookie is already registered (never by chance: 160 random bits).
    Duplicate,
}

/// The registries of one relay.
#[derive(Debug, Default)]
pub struct OnionPoints {
    serials: AtomicU64,
    // Each map operation is atomic, so a map stays consistent after a panic elsewhere
    // between two of them.
    intro: Mutex<HashMap<[u8; KEY_LEN], IntroReg>>,
    rend: Mutex<HashMap<[u8; REND_COOKIE_LEN], RendReg>>,
}

impl OnionPoints {
    /// A fresh serial for a new circuit task.
    pub fn next_serial(&self) -> CircSerial {
        self.serials.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers `reg` for `auth_key`, replacing any earlier circuit for the key (§8.5).
    pub fn register_intro(
        &self,
        auth_key: [u8; KEY_LEN],
        reg: IntroReg,
        limits: &RelayLimits,
    ) -> Result<(), RegisterError> {
        let mut map = lock(&self.intro);
        // Entries of circuits that are gone are dropped before counting (they normally
        // unregister themselves; this covers a task that ended abruptly).
        if map.len() >= limits.intro_points {
            map.retain(|_, r| !r.circ.tx.is_closed());
        }
        if !map.contains_key(&auth_key) && map.len() >= limits.intro_points {
            return Err(RegisterError::Full);
        }
        map.insert(auth_key, reg);
        Ok(())
    }

    /// The introduction point for `auth_key`, if one is registered.
    pub fn intro(&self, auth_key: &[u8; KEY_LEN]) -> Option<IntroReg> {
        lock(&self.intro).get(auth_key).cloned()
    }

    /// Removes the registration of `auth_key` if it still belongs to circuit `serial`
    /// (a later ESTABLISH_INTRO may have replaced it).
    pub fn unregister_intro(&self, auth_key: &[u8; KEY_LEN], serial: CircSerial) {
        let mut map = lock(&self.intro);
        if map.get(auth_key).is_some_and(|r| r.circ.serial == serial) {
            map.remove(auth_key);
        }
    }

    /// Registers a rendezvous cookie (one-time; a duplicate is refused). When the table
    /// is full, entries of closed or timed-out circuits are dropped first, then the
    /// oldest cookie: its circuit is told ([`CircEvent::CookieEvicted`]) and closes.
    pub fn register_rend(
        &self,
        cookie: [u8; REND_COOKIE_LEN],
        reg: RendReg,
        limits: &RelayLimits,
    ) -> Result<(), RegisterError> {
        let mut map = lock(&self.rend);
        if map.contains_key(&cookie) {
            return Err(RegisterError::Duplicate);
        }
        if limits.rend_cookies == 0 {
            return Err(RegisterError::Full);
        }
        if map.len() >= limits.rend_cookies {
            // Waiting circuits time out on their own; this drops what they left behind.
            let timeout = limits.rend_cookie_timeout();
            map.retain(|_, r| !r.circ.tx.is_closed() && r.since.elapsed() < timeout);
        }
        while map.len() >= limits.rend_cookies {
            // A linear scan, only when the table is full: each registration costs its
            // sender a circuit handshake, far more than the scan.
            let Some(oldest) = map
                .iter()
                .min_by_key(|(_, r)| (r.since, r.circ.serial))
                .map(|(k, _)| *k)
            else {
                break;
            };
            if let Some(evicted) = map.remove(&oldest) {
                // Without room in its queue the circuit still ends at its own timeout.
                let _ = evicted.circ.tx.try_send(CircEvent::CookieEvicted);
            }
        }
        map.insert(cookie, reg);
        Ok(())
    }

    /// Takes the registration of `cookie` (a cookie is used once).
    pub fn take_rend(&self, cookie: &[u8; REND_COOKIE_LEN]) -> Option<RendReg> {
        lock(&self.rend).remove(cookie)
    }

    /// Removes `cookie` if it still belongs to circuit `serial`.
    pub fn unregister_rend(&self, cookie: &[u8; REND_COOKIE_LEN], serial: CircSerial) {
        let mut map = lock(&self.rend);
        if map.get(cookie).is_some_and(|r| r.circ.serial == serial) {
            map.remove(cookie);
        }
    }

    /// (introduction points, waiting cookies) registered now.
    pub fn counts(&self) -> (usize, usize) {
        (lock(&self.intro).len(), lock(&self.rend).len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::event_queue::EventReceiver;

    fn circ(points: &OnionPoints, n: u16) -> (CircRef, EventReceiver<CircEvent>) {
        let (tx, rx) = crate::proto::event_queue::event_queue(4);
        let r = CircRef {
            serial: points.next_serial(),
            tx,
            circ: CircId::new(u32::from(n) + 1).unwrap(),
            // Every registration through one previous hop, as behind a shared guard.
            peer: SocketAddr::from(([127, 0, 0, 1], 9001)),
        };
        (r, rx)
    }

    fn intro(points: &OnionPoints, n: u16) -> (IntroReg, EventReceiver<CircEvent>) {
        let (circ, rx) = circ(points, n);
        let reg = IntroReg {
            circ,
            bucket: Arc::new(TokenBucket::new(1, 1)),
        };
        (reg, rx)
    }

    #[test]
    fn intro_table_is_bounded_relay_wide_only() {
        let points = OnionPoints::default();
        let limits = RelayLimits {
            intro_points: 3,
            // Ignored (deprecated): three registrations through one channel are fine.
            intro_points_per_channel: Some(1),
            ..RelayLimits::default()
        };
        let mut queues = Vec::new();
        for n in 0..3u8 {
            let (reg, rx) = intro(&points, n.into());
            assert_eq!(points.register_intro([n; 32], reg, &limits), Ok(()));
            queues.push(rx);
        }
        // Full: a new key is refused; an existing key may still be taken over.
        let (reg, _rx) = intro(&points, 10);
        assert_eq!(
            points.register_intro([9; 32], reg, &limits),
            Err(RegisterError::Full)
        );
        let (reg, _rx2) = intro(&points, 11);
        let serial = reg.circ.serial;
        assert_eq!(points.register_intro([1; 32], reg, &limits), Ok(()));
        assert_eq!(points.intro(&[1; 32]).unwrap().circ.serial, serial);
        assert_eq!(points.counts().0, 3);
        // A closed circuit's entry is reclaimed when the table is full.
        drop(queues.remove(0));
        let (reg, _rx3) = intro(&points, 12);
        assert_eq!(points.register_intro([9; 32], reg, &limits), Ok(()));
        assert!(points.intro(&[0; 32]).is_none());
        assert_eq!(points.counts().0, 3);
    }

    #[test]
    fn zero_bounds_refuse_everything() {
        let points = OnionPoints::default();
        let limits = RelayLimits {
            intro_points: 0,
            ..RelayLimits::default()
        };
        let (reg, _rx) = intro(&points, 1);
        assert_eq!(
            points.register_intro([1; 32], reg, &limits),
            Err(RegisterError::Full)
        );
    }
}
