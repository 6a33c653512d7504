//! Exit streams: BEGIN (to the destination, under the exit policy), BEGIN_DIR (to this
//! relay's directory service) and RESOLVE, each answered to the client.

use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

use crate::cell::relay_msg::{Begin, Connected, Resolved, ResolvedAnswer};
use crate::cell::{DestroyReason, EndReason, RelayMsg, StreamId, TargetAddr};
use crate::proto::stream::pump;

use super::super::events::CircEvent;
use super::forward::cell_or_internal;
use super::send::Teardown;
use super::Circuit;

impl Circuit {
    pub(super) async fn end_stream(
        &mut self,
        id: StreamId,
        reason: EndReason,
    ) -> Result<(), Teardown> {
        self.reply(cell_or_internal(Some(id), RelayMsg::End(reason))?)
            .await
    }

    /// BEGIN: check the policy, then connect in the background.
    pub(super) async fn on_begin(&mut self, id: StreamId, begin: Begin) -> Result<(), Teardown> {
        if self.id_in_use(id) {
            debug!("relay: BEGIN reuses an open stream id");
            return Err(Teardown::new(DestroyReason::Protocol));
        }
        let Some(exit) = self.shared.exit.clone() else {
            return self.end_stream(id, EndReason::ExitPolicy).await;
        };
        if self.streams_and_flows() >= self.shared.limits.streams_per_circuit {
            return self.end_stream(id, EndReason::ResourceLimit).await;
        }
        let (target, port) = (begin.target().clone(), begin.port());
        if let Err(reason) = exit.precheck(&target, port) {
            return self.end_stream(id, reason).await;
        }
        if let Some(o) = self.shared.observer() {
            o.exit_connect(self.prev.id, &target, port);
        }
        self.streams.reserve(id);
        let tx = self.self_tx.clone();
        let task = tokio::spawn(async move {
            let t0 = std::time::Instant::now();
            let result = exit.connect(&target, port).await;
            debug!(
                us = t0.elapsed().as_micros() as u64,
                "relay: exit connect done"
            );
            let task = tokio::task::id();
            let _ = tx
                .send(CircEvent::StreamConnected { id, task, result })
                .await;
        });
        self.connecting.insert(id, task.abort_handle());
        Ok(())
    }

    pub(super) async fn on_stream_connected(
        &mut self,
        id: StreamId,
        task: tokio::task::Id,
        result: Result<(tokio::net::TcpStream, std::net::SocketAddr), EndReason>,
    ) -> Result<(), Teardown> {
        if !self.current_attempt(id, task) || !self.streams.contains(id) {
            // The client gave up (END) while we were connecting.
            return Ok(());
        }
        let idle = self.shared.exit.as_ref().map(|e| e.idle_timeout());
        match result {
            Ok((socket, addr)) => {
                let io = pump::spawn(
                    socket,
                    id,
                    self.streams.initial_stream_window(),
                    idle,
                    self.streams.circuit_permits(),
                    self.self_tx.clone(),
                    CircEvent::Stream,
                );
                self.streams.attach(id, io);
                let connected = Connected {
                    resolved: Some((addr.ip(), 60)),
                };
                self.reply(cell_or_internal(Some(id), RelayMsg::Connected(connected))?)
                    .await
            }
            Err(reason) => {
                self.streams.remove(id);
                self.end_stream(id, reason).await
            }
        }
    }

    /// BEGIN_DIR: an in-process stream to our directory service.
    pub(super) async fn on_begin_dir(&mut self, id: StreamId) -> Result<(), Teardown> {
        if self.id_in_use(id) {
            return Err(Teardown::new(DestroyReason::Protocol));
        }
        let Some(service) = self.shared.dir_service() else {
            return self.end_stream(id, EndReason::NotDirectory).await;
        };
        if self.streams_and_flows() >= self.shared.limits.streams_per_circuit {
            return self.end_stream(id, EndReason::ResourceLimit).await;
        }
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        self.streams.reserve(id);
        let io = pump::spawn(
            ours,
            id,
            self.streams.initial_stream_window(),
            Some(crate::relay::dirserve::REQUEST_TIMEOUT),
            self.streams.circuit_permits(),
            self.self_tx.clone(),
            CircEvent::Stream,
        );
        self.streams.attach(id, io);
        let ctx = crate::relay::dirserve::DirContext {
            identity: self.shared.keys.identity(),
            circuit: Arc::clone(self.dir_state.get_or_insert_with(|| {
                Arc::new(crate::relay::dirserve::CircuitDirState::default())
            })),
        };
        tokio::spawn(crate::relay::dirserve::serve(service, ctx, theirs));
        self.reply(cell_or_internal(
            Some(id),
            RelayMsg::Connected(Connected { resolved: None }),
        )?)
        .await
    }

    /// RESOLVE: look the name up (exits only) and answer RESOLVED.
    pub(super) async fn on_resolve(
        &mut self,
        id: StreamId,
        name: crate::cell::Hostname,
    ) -> Result<(), Teardown> {
        let Some(exit) = self.shared.exit.clone() else {
            return self.end_stream(id, EndReason::ExitPolicy).await;
        };
        if self.streams.len() + self.resolving >= self.shared.limits.streams_per_circuit {
            return self.end_stream(id, EndReason::ResourceLimit).await;
        }
        self.resolving += 1;
        let tx = self.self_tx.clone();
        tokio::spawn(async move {
            let target = TargetAddr::Hostname(name);
            let result = crate::relay::exit::resolve_name(
                &target,
                Duration::from_secs(exit.timeouts.connect_secs.max(1)),
            )
            .await;
            let _ = tx.send(CircEvent::Resolved { id, result }).await;
        });
        Ok(())
    }

    /// A RESOLVE finished: RESOLVED with the addresses, or END with why not.
    pub(super) async fn on_resolved(
        &mut self,
        id: StreamId,
        result: Result<Vec<std::net::IpAddr>, EndReason>,
    ) -> Result<(), Teardown> {
        self.resolving = self.resolving.saturating_sub(1);
        let msg = match result {
            Ok(ips) => {
                let answers = ips
                    .into_iter()
                    .take(crate::cell::relay_msg::MAX_RESOLVED_ANSWERS)
                    .map(|addr| ResolvedAnswer::Ip { addr, ttl: 60 })
                    .collect();
                Resolved::new(answers)
                    .map(RelayMsg::Resolved)
                    .unwrap_or(RelayMsg::End(EndReason::ResolveFailed))
            }
            Err(reason) => RelayMsg::End(reason),
        };
        self.reply(cell_or_internal(Some(id), msg)?).await
    }
}
