//! The relay-wide registries of the onion-service roles (docs/protocol.md §8.5, §8.6,
//! §8.9): which circuit is the introduction circuit for an auth key, and which circuit
//! waits at this rendezvous point under a cookie.
//!
//! The circuits themselves live in their own tasks ([`super::circuit`]); a registry entry
//! holds the queue that reaches the task plus what another circuit needs to act on it
//! (the rate limiter of an introduction point; the shared backward half of a rendezvous
//! circuit, so the partner can splice cells onto it). Every table is bounded relay-wide
//! and per channel; reaching a bound is a clean refusal.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc;

use crate::cell::onion_msg::{KEY_LEN, REND_COOKIE_LEN};
use crate::cell::CircId;

use super::events::CircEvent;
use super::limits::RelayLimits;
use super::rate_limit::TokenBucket;
use super::splice::SharedBackward;

/// Identifies one circuit task for the lifetime of the relay (circuit ids are per channel
/// and get reused; this never is).
pub type CircSerial = u64;

/// Who a registry entry belongs to, as this relay sees it.
#[derive(Debug, Clone)]
pub struct CircRef {
    /// The circuit's unique serial.
    pub serial: CircSerial,
    /// The circuit task's queue.
    pub tx: mpsc::Sender<CircEvent>,
    /// The circuit's id on its previous hop's channel (for the observer).
    pub circ: CircId,
    /// The previous hop's TCP address (for the observer; a relay's address for a
    /// circuit of three or more hops).
    pub peer: SocketAddr,
    /// The previous hop's channel, as an opaque key for per-channel bounds.
    pub chan_key: usize,
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
    /// The relay-wide or per-channel bound is reached.
    Full,
    /// The cookie is already registered (never by chance: 160 random bits).
    Duplicate,
}

/// The registries of one relay.
#[derive(Debug, Default)]
pub struct OnionPoints {
    serials: AtomicU64,
    intro: Mutex<HashMap<[u8; KEY_LEN], IntroReg>>,
    rend: Mutex<HashMap<[u8; REND_COOKIE_LEN], RendReg>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock means a panic elsewhere between two map operations; each map
    // operation is atomic, so the map is consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
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
        let replacing = map.contains_key(&auth_key);
        if !replacing {
            let on_chan = map
                .values()
                .filter(|r| r.circ.chan_key == reg.circ.chan_key)
                .count();
            if map.len() >= limits.intro_points || on_chan >= limits.intro_points_per_channel {
                return Err(RegisterError::Full);
            }
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

    /// Registers a rendezvous cookie (one-time; a duplicate is refused).
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
        if map.len() >= limits.rend_cookies {
            // Waiting circuits time out on their own; this drops what they left behind.
            let timeout = limits.rend_cookie_timeout();
            map.retain(|_, r| !r.circ.tx.is_closed() && r.since.elapsed() < timeout);
        }
        let on_chan = map
            .values()
            .filter(|r| r.circ.chan_key == reg.circ.chan_key)
            .count();
        if map.len() >= limits.rend_cookies || on_chan >= limits.rend_cookies_per_channel {
            return Err(RegisterError::Full);
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
