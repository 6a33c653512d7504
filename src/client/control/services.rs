//! Ephemeral onion services made with ADD_ONION: kept in memory only (the key is never
//! written to disk), owned by the control connection that made them unless detached, and
//! stopped by DEL_ONION or when their owner disconnects.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::client::onion_service::OnionService;
use crate::sync::lock;

/// Ephemeral services at once (over all control connections).
pub const MAX_SERVICES: usize = 32;

/// The running ephemeral services by service id.
#[derive(Debug, Default)]
pub(super) struct Services {
    map: Mutex<HashMap<String, (OnionService, Option<u64>)>>,
}

impl Services {
    /// Whether another service may start (checked before launching one).
    pub(super) fn has_room(&self) -> bool {
        lock(&self.map).len() < MAX_SERVICES
    }

    /// Records a running service; `owner` is the connection id, `None` when detached.
    /// Refused (and the service stopped) when the id already runs or the table is full.
    pub(super) fn add(
        &self,
        id: String,
        service: OnionService,
        owner: Option<u64>,
    ) -> Result<(), &'static str> {
        let mut map = lock(&self.map);
        let why = if map.contains_key(&id) {
            "Onion address collision"
        } else if map.len() >= MAX_SERVICES {
            "Too many ephemeral onion services"
        } else {
            map.insert(id, (service, owner));
            return Ok(());
        };
        service.stop();
        Err(why)
    }

    /// Stops the service `id` if connection `conn` may (it owns it, or it is detached).
    pub(super) fn remove(&self, id: &str, conn: u64) -> bool {
        let mut map = lock(&self.map);
        let allowed = map
            .get(id)
            .is_some_and(|(_, owner)| owner.is_none_or(|o| o == conn));
        if allowed {
            if let Some((s, _)) = map.remove(id) {
                s.stop();
            }
        }
        allowed
    }

    /// Stops the services connection `conn` owns (it closed).
    pub(super) fn drop_owned(&self, conn: u64) {
        lock(&self.map).retain(|_, (s, owner)| {
            let keep = *owner != Some(conn);
            if !keep {
                s.stop();
            }
            keep
        });
    }

    /// The ids owned by `owner` (`None`: the detached ones), sorted.
    pub(super) fn list(&self, owner: Option<u64>) -> Vec<String> {
        let mut ids: Vec<String> = lock(&self.map)
            .iter()
            .filter(|(_, (_, o))| *o == owner)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }
}
