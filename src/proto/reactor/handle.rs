//! The handle on a running client circuit: what streams, flows and owners hold to reach
//! the circuit's task, and the activity time its owners' idle policies read.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::cell::TargetAddr;
use crate::proto::datagram::UdpFlow;
use crate::proto::event::{CircuitRequest, ClientCircEvent};
use crate::proto::event_queue::EventSender;
use crate::proto::stream::{DataStream, StreamOpenError};

/// A cloneable handle on a running client circuit.
#[derive(Debug, Clone)]
pub struct CircuitHandle {
    pub(super) tx: EventSender<ClientCircEvent>,
    pub(super) closed: Arc<AtomicBool>,
    pub(super) hops: usize,
    pub(super) id: crate::cell::CircId,
    pub(super) flow: crate::proto::congestion::FlowMode,
    pub(super) activity: Arc<Activity>,
    pub(super) open_streams: watch::Receiver<usize>,
}

/// When the circuit last carried stream traffic: a stream opened, or stream data sent or
/// received. DROP and SENDME cells do not count, so a peer cannot fake activity with them.
#[derive(Debug)]
pub(super) struct Activity {
    pub(super) start: Instant,
    /// Nanoseconds from `start` to the last activity.
    pub(super) last: AtomicU64,
}

impl Activity {
    pub(super) fn touch(&self) {
        let since = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.store(since, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_nanos(self.last.load(Ordering::Relaxed))
    }
}

impl CircuitHandle {
    /// Opens a stream to `target:port` through the circuit's last hop.
    pub async fn open_stream(
        &self,
        target: TargetAddr,
        port: u16,
        timeout: Duration,
    ) -> Result<DataStream, StreamOpenError> {
        self.open(Some((target, port)), timeout).await
    }

    /// Opens a UDP flow to `target:port` through the circuit's last hop (names are
    /// resolved there).
    pub async fn open_udp(
        &self,
        target: TargetAddr,
        port: u16,
        timeout: Duration,
    ) -> Result<UdpFlow, StreamOpenError> {
        let (reply, rx) = oneshot::channel();
        let req = CircuitRequest::OpenUdp {
            target,
            port,
            reply,
        };
        self.tx
            .send(ClientCircEvent::Request(req))
            .await
            .map_err(|_| StreamOpenError::CircuitClosed)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(StreamOpenError::CircuitClosed),
            Err(_) => Err(StreamOpenError::Timeout),
        }
    }

    /// Opens a stream to the last hop's directory service (BEGIN_DIR).
    pub async fn open_dir_stream(&self, timeout: Duration) -> Result<DataStream, StreamOpenError> {
        self.open(None, timeout).await
    }

    async fn open(
        &self,
        to: Option<(TargetAddr, u16)>,
        timeout: Duration,
    ) -> Result<DataStream, StreamOpenError> {
        let (reply, rx) = oneshot::channel();
        let req = CircuitRequest::Open { to, reply };
        self.tx
            .send(ClientCircEvent::Request(req))
            .await
            .map_err(|_| StreamOpenError::CircuitClosed)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(StreamOpenError::CircuitClosed),
            Err(_) => Err(StreamOpenError::Timeout),
        }
    }

    /// Whether the circuit has closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.tx.is_closed()
    }

    /// Number of hops.
    pub fn hops(&self) -> usize {
        self.hops
    }

    /// How the circuit's windows work with its far end: congestion control if the last
    /// hop granted it in its handshake.
    pub fn flow_mode(&self) -> crate::proto::congestion::FlowMode {
        self.flow
    }

    /// The circuit's id on its first hop's channel.
    pub fn id(&self) -> crate::cell::CircId {
        self.id
    }

    /// Whether `other` is a handle of the same circuit (ids repeat across channels).
    pub fn same_circuit(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.activity, &other.activity)
    }

    /// When the circuit last carried stream traffic (a stream opened, stream data sent or
    /// received; its start if never). An owner's idle policy measures from this.
    pub fn last_activity(&self) -> Instant {
        self.activity.last()
    }

    /// The streams open on the circuit now (opening, open, or awaiting the owner's answer),
    /// as a value that changes as they do; closed once the circuit is.
    pub fn open_streams(&self) -> watch::Receiver<usize> {
        self.open_streams.clone()
    }

    /// Asks the circuit to take no new streams and to close once its streams are done
    /// (what happens to circuits past their maximum dirtiness).
    pub async fn retire(&self) {
        let _ = self
            .tx
            .send(ClientCircEvent::Request(CircuitRequest::Retire))
            .await;
    }

    /// Asks the circuit to close.
    pub async fn close(&self) {
        let _ = self
            .tx
            .send(ClientCircEvent::Request(CircuitRequest::Close))
            .await;
    }
}
