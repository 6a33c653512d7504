//! The client's channel pool: one open channel per first hop, reused by every circuit
//! through it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::crypto::IdentityPublic;
use crate::link::LinkConfig;
use crate::proto::{ClientChannel, RelayTarget};
use crate::sync::lock;

use super::error::ClientError;
use super::skew::SkewTracker;

/// Local channel addresses remembered for diagnostics.
const MAX_LOCAL_ADDRS: usize = 1024;

/// Open channels by relay identity.
#[derive(Debug)]
pub struct ChanMgr {
    channels: tokio::sync::Mutex<HashMap<IdentityPublic, Arc<ClientChannel>>>,
    /// Local addresses of the channels opened so far (the last [`MAX_LOCAL_ADDRS`]).
    local_addrs: Mutex<Vec<SocketAddr>>,
    /// How channels are made (the client's clock inside).
    link: LinkConfig,
    /// Where each first hop's clock (NETINFO) is noted.
    skew: Arc<SkewTracker>,
}

impl ChanMgr {
    /// No channels yet; new ones are made with `link`, and the relays' clocks noted in
    /// `skew`.
    pub fn new(link: LinkConfig, skew: Arc<SkewTracker>) -> Self {
        ChanMgr {
            channels: tokio::sync::Mutex::new(HashMap::new()),
            local_addrs: Mutex::new(Vec::new()),
            link,
            skew,
        }
    }

    /// The open channel to `target`, or a new one.
    pub async fn channel_to(
        &self,
        target: &RelayTarget,
    ) -> Result<Arc<ClientChannel>, ClientError> {
        let mut chans = self.channels.lock().await;
        if let Some(c) = chans.get(&target.identity).filter(|c| !c.is_closed()) {
            return Ok(Arc::clone(c));
        }
        let chan = ClientChannel::connect(target, &self.link)
            .await
            .map_err(|e| ClientError::Circuit(format!("first hop: {e}")))?;
        self.skew.record(
            target.identity,
            chan.peer_timestamp,
            self.link.clock.now_unix(),
        );
        chans.insert(target.identity, Arc::clone(&chan));
        if let Some(a) = chan.local_addr {
            let mut seen = lock(&self.local_addrs);
            if seen.len() >= MAX_LOCAL_ADDRS {
                seen.remove(0);
            }
            seen.push(a);
        }
        Ok(chan)
    }

    /// The local addresses of the channels opened so far (the last 1024).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        lock(&self.local_addrs).clone()
    }
}
