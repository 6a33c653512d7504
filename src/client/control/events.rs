//! Asynchronous events (`650 CIRC`, `650 STREAM`) for control connections that asked for
//! them. Circuits come from the client's observer hook, streams from a wrapper around the
//! SOCKS port's connector. Events go only to authenticated connections (the server
//! subscribes a connection after AUTHENTICATE); stream events name the destination, as
//! Tor's do, because whoever holds the cookie already controls the proxy.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::cell::{CircId, TargetAddr};
use crate::client::socks_server::{Connector, IsolationKey};
use crate::client::{CircPurpose, ClientObserver};
use crate::proto::{DataStream, StreamOpenError, UdpFlow};

use super::line::EventKind;

/// Events a connection may fall behind by before it is closed (a reader that does not
/// read cannot make the proxy hold an unbounded queue for it).
pub const EVENT_QUEUE: usize = 256;

/// One event.
#[derive(Debug, Clone)]
pub enum Event {
    /// A circuit was built.
    CircBuilt {
        /// Its id at the first hop.
        id: u32,
        /// What for.
        purpose: CircPurpose,
    },
    /// A stream through the SOCKS port changed state.
    Stream {
        /// A counter, unique per proxy run.
        id: u64,
        /// `NEW`, `SUCCEEDED` or `FAILED`.
        status: &'static str,
        /// `host:port`.
        target: String,
    },
}

impl Event {
    /// Which SETEVENTS kind delivers it.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::CircBuilt { .. } => EventKind::Circ,
            Event::Stream { .. } => EventKind::Stream,
        }
    }

    /// The event line, without CRLF.
    pub fn line(&self) -> String {
        match self {
            Event::CircBuilt { id, purpose } => {
                format!("650 CIRC {id} BUILT PURPOSE={}", purpose_name(*purpose))
            }
            Event::Stream { id, status, target } => {
                format!("650 STREAM {id} {status} 0 {target}")
            }
        }
    }
}

/// Tor's names for circuit purposes.
fn purpose_name(p: CircPurpose) -> &'static str {
    match p {
        CircPurpose::Exit => "GENERAL",
        CircPurpose::HsDir => "HS_CLIENT_HSDIR",
        CircPurpose::IntroClient => "HS_CLIENT_INTRO",
        CircPurpose::RendClient => "HS_CLIENT_REND",
        CircPurpose::IntroService => "HS_SERVICE_INTRO",
        CircPurpose::RendService => "HS_SERVICE_REND",
    }
}

/// The event source: install it as the client's observer before bootstrap, and wrap the
/// SOCKS connector with [`Events::observe`].
#[derive(Debug)]
pub struct Events {
    tx: broadcast::Sender<Event>,
    next_stream: AtomicU64,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(EVENT_QUEUE).0,
            next_stream: AtomicU64::new(1),
        }
    }
}

impl Events {
    /// A receiver of every later event.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    fn send(&self, make: impl FnOnce() -> Event) {
        // Formatting is skipped when nobody listens.
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(make());
        }
    }

    /// `inner`, reporting each TCP stream it opens (UDP flows are not reported).
    pub fn observe(self: &Arc<Self>, inner: Arc<dyn Connector>) -> Arc<dyn Connector> {
        Arc::new(Observed {
            inner,
            events: Arc::clone(self),
        })
    }
}

impl ClientObserver for Events {
    fn circuit_built(&self, first_hop_id: CircId, purpose: CircPurpose) {
        self.send(|| Event::CircBuilt {
            id: first_hop_id.get(),
            purpose,
        });
    }
}

/// A connector that reports streams to [`Events`].
struct Observed {
    inner: Arc<dyn Connector>,
    events: Arc<Events>,
}

fn target_string(target: &TargetAddr, port: u16) -> String {
    match target {
        TargetAddr::Ip(std::net::IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        TargetAddr::Ip(ip) => format!("{ip}:{port}"),
        TargetAddr::Hostname(h) => format!("{}:{port}", h.as_str()),
    }
}

type Boxed<'a, T> =
    Pin<Box<dyn std::future::Future<Output = Result<T, StreamOpenError>> + Send + 'a>>;

impl Connector for Observed {
    fn connect(
        &self,
        target: TargetAddr,
        port: u16,
        isolation: IsolationKey,
    ) -> Boxed<'_, DataStream> {
        Box::pin(async move {
            let id = self.events.next_stream.fetch_add(1, Ordering::Relaxed);
            let shown = target_string(&target, port);
            let ev = |status| {
                let target = shown.clone();
                move || Event::Stream { id, status, target }
            };
            self.events.send(ev("NEW"));
            let r = self.inner.connect(target, port, isolation).await;
            self.events
                .send(ev(if r.is_ok() { "SUCCEEDED" } else { "FAILED" }));
            r
        })
    }

    fn open_udp(
        &self,
        target: TargetAddr,
        port: u16,
        isolation: IsolationKey,
    ) -> Boxed<'_, UdpFlow> {
        self.inner.open_udp(target, port, isolation)
    }
}
