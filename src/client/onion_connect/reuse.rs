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
        for h in circuits {
            h.close().await;
        }
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
    let existing = lock(&onion.rend).get(&key).cloned();
    let existing = match existing {
        Some((h, built)) if built.elapsed() >= onion.max_dirtiness => {
            lock(&onion.retiring).push(h.clone());
            h.retire().await;
            None
        }
        other => other.map(|(h, _)| h),
    };
    if let Some(handle) = existing.filter(|h| !h.is_closed()) {
        match open(handle, target.clone()).await {
            Ok(s) => return Ok(s),
            Err(e @ StreamOpenError::Refused(_)) => return Err(e.into()),
            Err(e) => debug!("onion: reused rendezvous circuit failed ({e}); reconnecting"),
        }
    }
    let handle = tokio::time::timeout(ONION_CONNECT_TIMEOUT, rendezvous(onion, &address))
        .await
        .map_err(|_| OnionConnectError::Timeout)??;
    {
        let mut map = lock(&onion.rend);
        map.retain(|_, (h, _)| !h.is_closed());
        if map.len() < MAX_REND_CIRCUITS || map.contains_key(&key) {
            map.insert(key, (handle.clone(), tokio::time::Instant::now()));
        }
    }
    Ok(open(handle, target).await?)
}
