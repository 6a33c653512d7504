//! Relay-side measurements: a CREATE flood (handshakes per second) that leaves its
//! circuits open (memory with many circuits), and fresh 3-hop circuit builds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cell::chan_contexts::FromNextHop;
use crate::cell::chan_msg::BoundedBytes;
use crate::cell::{ChanCell, ChanMsg, Create, HandshakeType};
use crate::crypto::client_handshake_start;
use crate::link::LinkConfig;
use crate::proto::event::ClientCircEvent;
use crate::proto::{ClientChannel, ClientCircuit, RelayTarget};

/// What a CREATE flood measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct FloodResult {
    /// CREATEs sent.
    pub sent: usize,
    /// CREATED received.
    pub created: usize,
    /// DESTROY (refusals) received.
    pub refused: usize,
    /// Seconds from the first CREATE to the last answer.
    pub secs: f64,
}

impl FloodResult {
    /// CREATED per second.
    pub(crate) fn per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            self.created as f64 / self.secs
        } else {
            0.0
        }
    }
}

/// Open channels whose circuits stay open on the relay until this is dropped.
#[derive(Debug)]
pub(crate) struct OpenCircuits {
    /// The channels (dropping them closes the circuits).
    #[expect(
        dead_code,
        reason = "held, never read: dropping them closes the circuits"
    )]
    channels: Vec<Arc<ClientChannel>>,
}

/// Sends `total` CREATE (ntor) cells to `relay` over `channels` channels as fast as the
/// relay answers and counts CREATED. The client side only computes its ephemeral keys
/// (before the clock starts) and never finishes the handshakes, so the rate is the
/// relay's. The circuits stay open while the returned [`OpenCircuits`] lives.
pub(crate) async fn create_flood(
    relay: &RelayTarget,
    total: usize,
    channels: usize,
    limit: Duration,
) -> Result<(FloodResult, OpenCircuits), String> {
    let channels = channels.max(1);
    let cfg = LinkConfig::default();
    let mut prepared = Vec::new();
    let mut open = Vec::new();
    for c in 0..channels {
        let per = total / channels + usize::from(c < total % channels);
        let chan = ClientChannel::connect(relay, &cfg)
            .await
            .map_err(|e| format!("channel to the relay: {e}"))?;
        let (tx, rx) = crate::proto::event_queue::event_queue::<ClientCircEvent>(per.max(1));
        let mut cells = Vec::with_capacity(per);
        for _ in 0..per {
            let (_state, msg) =
                client_handshake_start(&mut rand::rng(), &relay.identity, &relay.onion, &[])
                    .map_err(|e| e.to_string())?;
            let id = chan
                .circuits
                .allocate(tx.clone())
                .map_err(|e| e.to_string())?;
            let data = BoundedBytes::new(msg, "hdata").map_err(|e| e.to_string())?;
            let cell = ChanCell::circuit(
                id,
                ChanMsg::Create(Create {
                    htype: HandshakeType::Ntor1,
                    data,
                }),
            )
            .map_err(|e| e.to_string())?;
            cells.push(cell);
        }
        drop(tx);
        prepared.push((Arc::clone(&chan), cells, rx));
        open.push(chan);
    }
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (chan, cells, mut rx) in prepared {
        let n = cells.len();
        let sender = Arc::clone(&chan);
        tokio::spawn(async move {
            for cell in &cells {
                if sender.sender.send(cell).await.is_err() {
                    break;
                }
            }
        });
        tasks.spawn(async move {
            let (mut created, mut refused) = (0usize, 0usize);
            while created + refused < n {
                match rx.recv().await {
                    Some(ClientCircEvent::Cell(FromNextHop::Created(_))) => created += 1,
                    Some(ClientCircEvent::Cell(FromNextHop::Destroy(_))) => refused += 1,
                    Some(_) => {}
                    None => break,
                }
            }
            (created, refused, start.elapsed().as_secs_f64())
        });
    }
    let mut result = FloodResult {
        sent: total,
        ..FloodResult::default()
    };
    let collect = async {
        while let Some(r) = tasks.join_next().await {
            let (c, d, secs) = r.map_err(|e| e.to_string())?;
            result.created += c;
            result.refused += d;
            result.secs = result.secs.max(secs);
        }
        Ok::<_, String>(())
    };
    tokio::time::timeout(limit, collect)
        .await
        .map_err(|_| format!("CREATE flood: no complete answer within {limit:?}"))??;
    Ok((result, OpenCircuits { channels: open }))
}

/// Builds `samples` fresh circuits guard → middle → exit over one already-open channel to
/// the guard (as a client with a live channel does) and returns each build's seconds:
/// CREATE, then two EXTENDs, full handshakes on both sides.
pub(crate) async fn fresh_circuit_builds(
    path: &[RelayTarget; 3],
    samples: usize,
    timeout: Duration,
) -> Result<Vec<f64>, String> {
    let [guard, middle, exit] = path;
    let chan = ClientChannel::connect(guard, &LinkConfig::default())
        .await
        .map_err(|e| format!("channel to the guard: {e}"))?;
    let mut out = Vec::with_capacity(samples);
    // One unmeasured build: warms the guard's and middle's channels onwards.
    for i in 0..=samples {
        let start = Instant::now();
        let mut circ = ClientCircuit::create(&chan, guard, timeout)
            .await
            .map_err(|e| format!("CREATE: {e}"))?;
        circ.extend(middle, timeout)
            .await
            .map_err(|e| format!("EXTEND to the middle: {e}"))?;
        circ.extend(exit, timeout)
            .await
            .map_err(|e| format!("EXTEND to the exit: {e}"))?;
        let secs = start.elapsed().as_secs_f64();
        if i > 0 {
            out.push(secs);
        }
        circ.destroy().await;
    }
    Ok(out)
}
