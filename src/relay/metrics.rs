//! An optional Prometheus text-format endpoint (off by default).
//!
//! Only relay-wide totals: never a label that names a client, a destination or a peer.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::admission::Admission;
use crate::cell::consts::RELAY_BODY_LEN;

use super::shared::RelayShared;

/// Most bytes of a request head read before answering.
const MAX_REQUEST_HEAD: usize = 2048;

/// Renders every metric in the Prometheus text exposition format.
pub fn render(shared: &RelayShared) -> String {
    let c = &shared.counters;
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    metric(
        "allium_circuits_open",
        "gauge",
        "Circuits currently open at this relay.",
        get(&c.circuits_open),
    );
    metric(
        "allium_circuits_created_total",
        "counter",
        "CREATE cells answered with CREATED.",
        get(&c.circuits_created),
    );
    metric(
        "allium_cells_relayed_total",
        "counter",
        "Relay cells forwarded or originated.",
        get(&c.cells_relayed),
    );
    metric(
        "allium_relayed_bytes_total",
        "counter",
        "Relay-body bytes forwarded or originated (cells are fixed-size).",
        get(&c.cells_relayed).saturating_mul(RELAY_BODY_LEN as u64),
    );
    metric(
        "allium_link_handshakes_total",
        "counter",
        "Inbound link handshakes completed.",
        get(&c.link_handshakes),
    );
    metric(
        "allium_introductions_forwarded_total",
        "counter",
        "INTRODUCE1 forwarded as INTRODUCE2 (introduction point).",
        get(&c.introductions_forwarded),
    );
    metric(
        "allium_rendezvous_joined_total",
        "counter",
        "Circuit pairs joined (rendezvous point).",
        get(&c.rendezvous_joined),
    );
    metric(
        "allium_inbound_connections",
        "gauge",
        "Inbound connections (channels and link handshakes) open, against the channel limit.",
        shared.channel_slots.open() as u64,
    );
    metric(
        "allium_refused_channel_limit_total",
        "counter",
        "Inbound connections closed at once because the relay was at its channel limit.",
        get(&c.refused_channel_limit),
    );
    metric(
        "allium_accept_fd_exhausted_total",
        "counter",
        "accept() failures for want of file descriptors (EMFILE, ENFILE).",
        get(&c.accept_fd_exhausted),
    );
    metric(
        "allium_queued_bytes",
        "gauge",
        "Bytes of cells queued towards circuits.",
        shared.budget.total() as u64,
    );
    let st = &shared.self_test;
    metric(
        "allium_relay_self_test_reachable",
        "gauge",
        "1 if the last self-test built a circuit through another relay back to this relay's advertised address.",
        u64::from(st.reachable()),
    );
    metric(
        "allium_relay_listed",
        "gauge",
        "1 if the current consensus lists this relay with its advertised address and onion key.",
        u64::from(st.listed()),
    );
    metric(
        "allium_relay_descriptor_accepted",
        "gauge",
        "1 if an authority accepted the last descriptor upload.",
        u64::from(st.descriptor_accepted()),
    );
    let keys = &shared.keys;
    metric(
        "allium_relay_link_cert_renewals_total",
        "counter",
        "Link keys renewed (freshly certified) since start.",
        keys.link_cert_renewals(),
    );
    metric(
        "allium_relay_onion_key_rotations_total",
        "counter",
        "Onion keys rotated since start.",
        keys.onion_key_rotations(),
    );
    metric(
        "allium_relay_link_cert_expires_in_seconds",
        "gauge",
        "Seconds until the current link-key certificate expires.",
        keys.link_auth()
            .cert()
            .expires()
            .saturating_sub(shared.clock.now_unix()),
    );
    let _ = writeln!(
        out,
        "# HELP allium_rejections_total Refusals, by reason.\n# TYPE allium_rejections_total counter"
    );
    for (reason, v) in [
        ("handshake_rate", get(&c.refused_handshake_rate)),
        ("circuit_limit", get(&c.refused_circuit_limit)),
        ("protocol_violation", get(&c.protocol_violations)),
        ("replayed_create", get(&c.refused_replay)),
        ("malformed_create", get(&c.refused_malformed_create)),
        ("link_handshake_failed", get(&c.link_handshake_failures)),
        ("queue_memory", shared.budget.kills()),
        ("stalled_send", get(&c.stalled_sends)),
    ] {
        let _ = writeln!(out, "allium_rejections_total{{reason=\"{reason}\"}} {v}");
    }
    out
}

/// Limits of the metrics endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsLimits {
    /// Requests served at once. When full, the oldest connection that has not finished
    /// sending its request is closed to make room (see [`crate::admission`]), so idle or
    /// slow connections cannot lock the scraper out. Default 16.
    pub max_connections: usize,
    /// Time a client has to send its request head. Default 5 s.
    pub request_timeout: Duration,
}

impl Default for MetricsLimits {
    fn default() -> Self {
        MetricsLimits {
            max_connections: 16,
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// Serves `render` on `listener` to any HTTP GET, one short response per connection, with
/// the default [`MetricsLimits`].
pub async fn serve(listener: TcpListener, shared: Arc<RelayShared>) {
    serve_with(listener, shared, MetricsLimits::default()).await;
}

/// Serves `render` on `listener` to any HTTP GET, one short response per connection.
pub async fn serve_with(listener: TcpListener, shared: Arc<RelayShared>, limits: MetricsLimits) {
    let slots = Admission::new(limits.max_connections);
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            // Typically out of file descriptors: back off, keep serving.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Some(mut pass) = slots.admit() else {
            continue; // Every slot is writing a response: drop the connection.
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + limits.request_timeout;
            if pass.first_bytes(&sock, deadline).await.is_err() {
                return;
            }
            // Read (bounded, with a deadline) until the end of the request head.
            let mut head = Vec::with_capacity(MAX_REQUEST_HEAD);
            let read = async {
                while head.len() < MAX_REQUEST_HEAD {
                    let room = (MAX_REQUEST_HEAD - head.len()) as u64;
                    if (&mut sock).take(room).read_buf(&mut head).await? == 0 {
                        break;
                    }
                    if head.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                Ok::<_, std::io::Error>(())
            };
            let read = tokio::time::timeout_at(deadline, read);
            tokio::select! {
                r = read => if r.is_err() { return },
                () = pass.eviction().wait() => return,
            }
            pass.handshake_done();
            let ok = head.starts_with(b"GET ");
            let (status, body) = if ok {
                ("200 OK", render(&shared))
            } else {
                ("400 Bad Request", String::from("GET only\n"))
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            // A client that does not read its response cannot hold the slot for ever.
            let write = async {
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            };
            let _ = tokio::time::timeout(limits.request_timeout, write).await;
        });
    }
}
