//! The accept loop shared by the SOCKS and HTTP `CONNECT` listeners: the connection limit
//! (evicting the oldest unfinished handshake), one task per connection, and the counters
//! logged when the listener stops.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::admission::Admission;

use super::connection::connection;
use super::shared::{Protocol, Shared, Stats};
use super::{Connector, ProxyConfig};

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

pub(super) async fn serve(
    listener: TcpListener,
    listener_index: u16,
    connector: Arc<dyn Connector>,
    cfg: ProxyConfig,
    shutdown: impl Future<Output = ()>,
    protocol: Protocol,
) {
    let slots = Admission::new(cfg.max_connections);
    let shared = Arc::new(Shared {
        protocol,
        listener_index,
        connector,
        cfg,
        stats: Stats::default(),
    });
    info!(
        listener = listener_index,
        "{} listener started",
        protocol.name()
    );
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((sock, peer)) => {
                    let evicted_before = slots.evicted();
                    let Some(pass) = slots.admit() else {
                        if slots.refused() == 1 {
                            warn!(
                                listener = listener_index,
                                max = shared.cfg.max_connections,
                                "connection limit reached; closing new connections"
                            );
                        }
                        debug!(%peer, "over the connection limit; closed");
                        drop(sock);
                        continue;
                    };
                    if evicted_before == 0 && slots.evicted() == 1 {
                        warn!(
                            listener = listener_index,
                            max = shared.cfg.max_connections,
                            "connection limit reached; closing the oldest unfinished handshakes"
                        );
                    }
                    shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
                    debug!(%peer, listener = listener_index, "accepted");
                    let shared = Arc::clone(&shared);
                    tasks.spawn(async move {
                        connection(sock, &shared, pass).await;
                    });
                }
                Err(e) => {
                    warn!(kind = ?e.kind(), "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    tasks.shutdown().await;
    let s = &shared.stats;
    info!(
        listener = listener_index,
        accepted = s.accepted.load(Ordering::Relaxed),
        over_limit = slots.refused(),
        evicted = slots.evicted(),
        opened = s.opened.load(Ordering::Relaxed),
        failed = s.failed.load(Ordering::Relaxed),
        udp_associations = s.associations.load(Ordering::Relaxed),
        udp_foreign = s.udp_foreign.load(Ordering::Relaxed),
        udp_dropped = s.udp_dropped.load(Ordering::Relaxed),
        "{} listener stopped",
        protocol.name()
    );
}
