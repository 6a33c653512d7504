//! Streams and UDP flows to an onion service over the rendezvous circuit of the request's
//! isolation class: reused while within the client's maximum dirtiness, else a new
//! rendezvous.

use tracing::debug;

use crate::cell::{Hostname, TargetAddr};
use crate::client::circmgr::Isolation;
use crate::client::error::ClientError;
use crate::onion::OnionAddress;
use crate::proto::{CircuitHandle, DataStream, StreamOpenError, UdpFlow};
use crate::sync::lock;

use super::{
    rendezvous, OnionConnectError, OnionConnector, MAX_REND_CIRCUITS, ONION_CONNECT_TIMEOUT,
};

impl OnionConnector {
    /// NEWNYM: closes every rendezvous circuit (streams on them end) and forgets the
    /// descriptors, so the next connection to a service is a new rendezvous that cannot
    /// be linked to the old one by a reused circuit. Revision floors are kept (they guard
    /// against rollback, and name nothing the directories did not already see).
    pub async fn close_all(&self) {
        let mut circuits: Vec<CircuitHandle> =
            lock(&self.rend).drain().map(|(_, (h, _))| h).collect();
        // Retired ones too: a stream held open past the dirtiness must not outlive NEWNYM.
        circuits.extend(lock(&self.retiring).drain(..));
        lock(&self.descriptors).clear();
        crate::client::circmgr::close_each(circuits).await;
    }

    /// Retires `h` (no new streams; closes when its streams are done) and remembers it
    /// until then, so NEWNYM can end its streams.
    fn keep_retiring(&self, h: CircuitHandle) {
        if h.is_closed() {
            return;
        }
        let mut retiring = lock(&self.retiring);
        retiring.retain(|r| !r.is_closed());
        retiring.push(h.clone());
        tokio::spawn(async move { h.retire().await });
    }

    /// Diagnostics: the rendezvous circuits held (open or not yet swept).
    pub fn rendezvous_held(&self) -> usize {
        lock(&self.rend).len()
    }
}

pub(super) async fn connect(
    onion: &OnionConnector,
    host: &str,
    port: u16,
    isolation: &Isolation,
) -> Result<DataStream, ClientError> {
    let timeout = onion.stream_timeout;
    on_rendezvous(
        onion,
        host,
        isolation,
        |h: CircuitHandle, target| async move { h.open_stream(target, port, timeout).await },
    )
    .await
}

pub(super) async fn open_udp(
    onion: &OnionConnector,
    host: &str,
    port: u16,
    isolation: &Isolation,
) -> Result<UdpFlow, ClientError> {
    let timeout = onion.stream_timeout;
    on_rendezvous(
        onion,
        host,
        isolation,
        |h: CircuitHandle, target| async move { h.open_udp(target, port, timeout).await },
    )
    .await
}

/// Runs `open` (a stream or a flow to the service `host`) on the rendezvous circuit of
/// this isolation class, reusing it while it is within the maximum dirtiness, else on a
/// new one.
async fn on_rendezvous<T, F, Fut>(
    onion: &OnionConnector,
    host: &str,
    isolation: &Isolation,
    open: F,
) -> Result<T, ClientError>
where
    F: Fn(CircuitHandle, TargetAddr) -> Fut,
    Fut: std::future::Future<Output = Result<T, StreamOpenError>>,
{
    let address: OnionAddress = host.parse().map_err(OnionConnectError::BadAddress)?;
    let key = (isolation.clone(), *address.identity().as_bytes());
    // The service ignores the host; sending its own name tells it nothing new.
    let target = TargetAddr::Hostname(
        Hostname::new(host).map_err(|_| ClientError::BadAddress(host.to_string()))?,
    );
    // Like exit circuits, a rendezvous circuit takes new streams only for the client's
    // maximum dirtiness; then it is retired (closed once its streams are done).
    let existing = {
        let mut map = lock(&onion.rend);
        match map.get(&key).cloned() {
            Some((h, built)) if built.elapsed() >= onion.max_dirtiness => {
                map.remove(&key);
                onion.keep_retiring(h);
                None
            }
            other => other.map(|(h, _)| h),
        }
    };
    if let Some(handle) = existing.filter(|h| !h.is_closed()) {
        match open(handle, target.clone()).await {
            Ok(s) => return Ok(s),
            Err(e @ StreamOpenError::Refused(_)) => return Err(e.into()),
            Err(e) => debug!("onion: reused rendezvous circuit failed ({e}); reconnecting"),
        }
    }
    let nym = onion.circuits.nym_epoch();
    let handle = tokio::time::timeout(ONION_CONNECT_TIMEOUT, rendezvous(onion, &address))
        .await
        .map_err(|_| OnionConnectError::Timeout)??;
    // Kept under the map's lock only if no NEWNYM came during the rendezvous (NEWNYM
    // advances the epoch before it empties the map); a circuit not kept for reuse (the map
    // full, or another replaced) is still remembered until it closes, so NEWNYM ends it.
    let stale = {
        let mut map = lock(&onion.rend);
        if onion.circuits.nym_epoch() != nym {
            true
        } else {
            map.retain(|_, (h, _)| !h.is_closed());
            if map.len() < MAX_REND_CIRCUITS || map.contains_key(&key) {
                let old = map.insert(key, (handle.clone(), tokio::time::Instant::now()));
                if let Some((h, _)) = old.filter(|(h, _)| !h.same_circuit(&handle)) {
                    onion.keep_retiring(h);
                }
            } else {
                lock(&onion.retiring).push(handle.clone());
            }
            false
        }
    };
    if stale {
        handle.close().await;
        return Err(OnionConnectError::NewIdentity.into());
    }
    Ok(open(handle, target).await?)
}
