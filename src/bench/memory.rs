//! Memory figures of `allium bench` (docs/PERFORMANCE.md, "Memory per circuit"): a relay's
//! resident memory per open circuit (circuits that never carried data, and circuits that
//! each carried data), per idle client channel, and a client's per circuit. Each relay
//! figure comes from a fresh relay process of its own (a relay that already freed memory
//! would reuse it and look cheaper); the client figure is this process's own growth.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::cell::{RelayCell, RelayMsg};
use crate::link::LinkConfig;
use crate::proto::{ClientChannel, ClientCircuit, RelayTarget};

use super::procs::{self, authority_list, NodeDir, NodeProcess};
use super::relay_probe::{self, FloodResult};
use super::{target_of, write_file};

/// Bytes of relay data one DROP cell carries towards the memory figures.
const DROP_CELL_BYTES: usize = crate::cell::consts::RELAY_BODY_LEN;
/// Circuits sending their data at once: enough to fill queues, few enough that the
/// relay's queue budget (64 MiB by default) never has to kill one.
const SENDING_AT_ONCE: usize = 8;

/// What to measure.
#[derive(Debug, Clone)]
pub(crate) struct MemoryPlan {
    /// Idle circuits opened on a fresh relay, one run per count.
    pub circuit_counts: Vec<usize>,
    /// Channels the idle circuits are spread over (at least one per 4,000 circuits: a
    /// client channel carries at most 4096).
    pub flood_channels: usize,
    /// Circuits that each carry `carried_bytes` before the relay is measured (0: skip).
    pub data_circuits: usize,
    /// Bytes each of those carries (DROP cells to the relay).
    pub carried_bytes: usize,
    /// Client circuits built for the client's per-circuit figure (0: skip).
    pub client_circuits: usize,
    /// Idle client channels opened on a fresh relay (0: skip).
    pub idle_channels: usize,
}

/// A relay's memory with `open` circuits (or channels) against its idle memory.
#[derive(Debug, Clone, Default)]
pub(crate) struct RssFigure {
    /// Circuits (or channels) open when measured.
    pub open: usize,
    /// Relay RSS before, bytes.
    pub rss_idle: u64,
    /// Relay RSS with them open, bytes.
    pub rss_loaded: u64,
}

impl RssFigure {
    /// Bytes per open circuit (or channel).
    pub(crate) fn per_item(&self) -> f64 {
        if self.open == 0 {
            return 0.0;
        }
        self.rss_loaded.saturating_sub(self.rss_idle) as f64 / self.open as f64
    }
}

/// Everything measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct MemoryReport {
    /// The CREATE flood of the first idle-circuit run (handshake rate).
    pub flood: FloodResult,
    /// One per circuit count: idle circuits.
    pub idle: Vec<RssFigure>,
    /// Circuits that each carried `carried_bytes`, then went idle.
    pub carried: Option<RssFigure>,
    /// The same with twice as many circuits, on another fresh relay: with `carried`, the
    /// marginal cost of one more carried circuit (the transfer's one-off transient peak,
    /// which both runs share, cancels out).
    pub carried_twice: Option<RssFigure>,
    /// Bytes each of those carried.
    pub carried_bytes: usize,
    /// This process's growth per client circuit (1-hop circuits with their tasks).
    pub client: Option<RssFigure>,
    /// Idle client channels on a relay.
    pub channels: Option<RssFigure>,
    /// Whether a circuit could be built and used while those channels were open.
    pub channels_still_serving: bool,
}

impl MemoryReport {
    /// Bytes per circuit that one more carried circuit adds: the growth of the run with
    /// twice the circuits minus that of the first run, over the extra circuits.
    pub(crate) fn carried_marginal(&self) -> Option<f64> {
        let (one, two) = (self.carried.as_ref()?, self.carried_twice.as_ref()?);
        let extra = two.open.checked_sub(one.open).filter(|&n| n > 0)?;
        let growth = |f: &RssFigure| f.rss_loaded as f64 - f.rss_idle as f64;
        Some((growth(two) - growth(one)) / extra as f64)
    }

    /// Table rows: what, value, unit.
    pub(crate) fn rows(&self) -> Vec<(String, String, &'static str)> {
        let mib = |b: u64| format!("{:.1}", b as f64 / 1048576.0);
        let kib = |b: f64| format!("{:.2}", b / 1024.0);
        let mut rows = Vec::new();
        for f in &self.idle {
            rows.push((
                format!("relay RSS, idle / with {} open circuits", f.open),
                format!("{} / {}", mib(f.rss_idle), mib(f.rss_loaded)),
                "MiB",
            ));
            rows.push((
                format!("relay memory per open circuit ({} never used)", f.open),
                kib(f.per_item()),
                "KiB",
            ));
        }
        if let Some(f) = &self.carried {
            rows.push((
                format!(
                    "relay memory per open circuit ({} that each carried {} KiB, now idle)",
                    f.open,
                    self.carried_bytes / 1024
                ),
                kib(f.per_item()),
                "KiB",
            ));
        }
        if let (Some(f), Some(twice), Some(marginal)) =
            (&self.carried, &self.carried_twice, self.carried_marginal())
        {
            rows.push((
                format!(
                    "  the same, {} circuits: RSS growth per circuit / marginal per circuit ({} minus {}, fresh relays)",
                    twice.open, twice.open, f.open
                ),
                format!("{} / {}", kib(twice.per_item()), kib(marginal)),
                "KiB",
            ));
        }
        if let Some(f) = &self.client {
            rows.push((
                format!("client memory per open circuit ({} idle 1-hop)", f.open),
                kib(f.per_item()),
                "KiB",
            ));
        }
        if let Some(f) = &self.channels {
            rows.push((
                format!(
                    "relay RSS with {} idle client channels (circuit through it: {})",
                    f.open,
                    if self.channels_still_serving {
                        "works"
                    } else {
                        "FAILED"
                    }
                ),
                mib(f.rss_loaded),
                "MiB",
            ));
            rows.push((
                "relay memory per idle client channel".into(),
                kib(f.per_item()),
                "KiB",
            ));
        }
        rows
    }

    /// JSON fields (no braces).
    pub(crate) fn json_fields(&self) -> String {
        let mut out = Vec::new();
        let idle: Vec<String> = self
            .idle
            .iter()
            .map(|f| {
                format!(
                    "{{\"circuits\": {}, \"rss_idle_bytes\": {}, \"rss_bytes\": {}, \"bytes_per_circuit\": {:.0}}}",
                    f.open,
                    f.rss_idle,
                    f.rss_loaded,
                    f.per_item()
                )
            })
            .collect();
        out.push(format!("\"relay_idle_circuits\": [{}]", idle.join(", ")));
        if let Some(f) = &self.carried {
            out.push(format!(
                "\"relay_carried_circuits\": {}, \"relay_carried_bytes_each\": {}, \
                 \"relay_bytes_per_carried_circuit\": {:.0}",
                f.open,
                self.carried_bytes,
                f.per_item()
            ));
        }
        if let (Some(f), Some(marginal)) = (&self.carried_twice, self.carried_marginal()) {
            out.push(format!(
                "\"relay_carried_circuits_twice\": {}, \"relay_bytes_per_carried_circuit_twice\": {:.0}, \
                 \"relay_bytes_per_carried_circuit_marginal\": {:.0}",
                f.open,
                f.per_item(),
                marginal
            ));
        }
        if let Some(f) = &self.client {
            out.push(format!(
                "\"client_circuits\": {}, \"client_bytes_per_circuit\": {:.0}",
                f.open,
                f.per_item()
            ));
        }
        if let Some(f) = &self.channels {
            out.push(format!(
                "\"relay_idle_channels\": {}, \"relay_rss_channels_bytes\": {}, \
                 \"relay_bytes_per_channel\": {:.0}, \"relay_serves_with_channels\": {}",
                f.open,
                f.rss_loaded,
                f.per_item(),
                self.channels_still_serving
            ));
        }
        out.join(", ")
    }
}

/// A relay process of its own, in no consensus (no client path uses it).
struct SoloRelay {
    node: NodeDir,
    process: NodeProcess,
}

impl SoloRelay {
    async fn start(root: &Path, name: &str, per_channel: usize) -> Result<Self, String> {
        let node = NodeDir::create(root, name)?;
        let nowhere = [(node.identity(), SocketAddr::from(([127, 0, 0, 1], 1)))];
        let path = root.join(format!("{name}.toml"));
        write_file(
            &path,
            &format!(
                "[relay]\nlisten = \"{}\"\ndata_dir = \"{}\"\n{}\n[limits]\ncircuits_per_channel = {per_channel}\n\
                 handshakes_per_second = 1000000\nhandshake_burst = 1000000\npending_link_handshakes = 4096\n",
                node.addr,
                node.dir.display(),
                authority_list("relay", &nowhere)
            ),
        )?;
        let process = NodeProcess::spawn("relay", &path, &root.join(format!("{name}.log")), name)?;
        if !procs::wait_listening(node.addr, Duration::from_secs(30)).await {
            return Err(format!("the relay {name} did not start"));
        }
        // Past its start-up allocations (keys, first consensus attempts).
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(SoloRelay { node, process })
    }

    fn rss(&mut self) -> Result<u64, String> {
        if !self.process.is_running() {
            return Err(format!("the relay {} exited", self.process.name));
        }
        self.process.rss_bytes()
    }

    /// Waits until the relay's CPU use stops growing (its queues have drained).
    async fn settle(&self) -> Result<(), String> {
        let mut last = self.process.cpu_secs()?;
        for _ in 0..120 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = self.process.cpu_secs()?;
            if now - last < 0.02 {
                return Ok(());
            }
            last = now;
        }
        Ok(())
    }
}

/// Runs the plan; `say` reports progress.
pub(crate) async fn measure(
    root: &Path,
    plan: &MemoryPlan,
    say: &dyn Fn(&str),
) -> Result<MemoryReport, String> {
    let mut report = MemoryReport {
        carried_bytes: plan.carried_bytes,
        ..MemoryReport::default()
    };
    // First, while this process is still small: the client's figure.
    if plan.client_circuits > 0 {
        say(&format!(
            "client memory: {} idle 1-hop circuits",
            plan.client_circuits
        ));
        let mut relay = SoloRelay::start(root, "solo-client", plan.client_circuits + 16).await?;
        let target = target_of(&relay.node)?;
        let chan = connect(&target).await?;
        let me = std::process::id();
        let before = procs::rss_bytes(me)?;
        let mut handles = Vec::with_capacity(plan.client_circuits);
        for _ in 0..plan.client_circuits {
            let circ = ClientCircuit::create(&chan, &target, Duration::from_secs(30))
                .await
                .map_err(|e| format!("client circuit: {e}"))?;
            handles.push(circ.into_handle());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        report.client = Some(RssFigure {
            open: handles.len(),
            rss_idle: before,
            rss_loaded: procs::rss_bytes(me)?,
        });
        relay.rss()?;
        drop(handles);
    }
    for (i, &n) in plan.circuit_counts.iter().enumerate() {
        say(&format!("relay memory: {n} idle circuits on a fresh relay"));
        let channels = plan.flood_channels.max(n.div_ceil(4_000)).max(1);
        let per_channel = n.div_ceil(channels) + 16;
        let mut relay = SoloRelay::start(root, &format!("solo-{n}"), per_channel).await?;
        let rss_idle = relay.rss()?;
        let (flood, open) = relay_probe::create_flood(
            &target_of(&relay.node)?,
            n,
            channels,
            Duration::from_secs(600),
        )
        .await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        report.idle.push(RssFigure {
            open: flood.created,
            rss_idle,
            rss_loaded: relay.rss()?,
        });
        if i == 0 {
            report.flood = flood;
        }
        drop(open);
    }
    if plan.data_circuits > 0 && plan.carried_bytes > 0 {
        say(&format!(
            "relay memory: {} circuits each carrying {} KiB, then idle",
            plan.data_circuits,
            plan.carried_bytes / 1024
        ));
        report.carried =
            Some(carried_run(root, "solo-data", plan.data_circuits, plan.carried_bytes).await?);
        let twice = plan.data_circuits.saturating_mul(2);
        say(&format!(
            "relay memory: the same with {twice} circuits (for the marginal cost per circuit)"
        ));
        report.carried_twice =
            Some(carried_run(root, "solo-data-twice", twice, plan.carried_bytes).await?);
    }
    if plan.idle_channels > 0 {
        say(&format!(
            "relay memory: {} idle client channels",
            plan.idle_channels
        ));
        let mut relay = SoloRelay::start(root, "solo-channels", 64).await?;
        let target = target_of(&relay.node)?;
        let rss_idle = relay.rss()?;
        let mut chans = Vec::with_capacity(plan.idle_channels);
        for _ in 0..plan.idle_channels {
            chans.push(connect(&target).await?);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss_loaded = relay.rss()?;
        // Still serving: a circuit built and used (a DROP, then a TRUNCATE answered)
        // while every channel stays open.
        report.channels_still_serving = serves(&target).await;
        report.channels = Some(RssFigure {
            open: chans.iter().filter(|c| !c.is_closed()).count(),
            rss_idle,
            rss_loaded,
        });
        drop(chans);
    }
    Ok(report)
}

/// A fresh relay's memory with `n` circuits that each carried `bytes` (DROP cells,
/// [`SENDING_AT_ONCE`] circuits at a time), measured once its CPU use has stopped growing.
async fn carried_run(root: &Path, name: &str, n: usize, bytes: usize) -> Result<RssFigure, String> {
    let mut relay = SoloRelay::start(root, name, n + 16).await?;
    let target = target_of(&relay.node)?;
    let rss_idle = relay.rss()?;
    let chan = connect(&target).await?;
    let mut circuits = Vec::with_capacity(n);
    for _ in 0..n {
        circuits.push(
            ClientCircuit::create(&chan, &target, Duration::from_secs(30))
                .await
                .map_err(|e| format!("circuit: {e}"))?,
        );
    }
    let cells = bytes.div_ceil(DROP_CELL_BYTES);
    let mut done = Vec::with_capacity(circuits.len());
    let mut sending = tokio::task::JoinSet::new();
    for mut circ in circuits {
        if sending.len() >= SENDING_AT_ONCE {
            if let Some(r) = sending.join_next().await {
                done.push(r.map_err(|e| e.to_string())??);
            }
        }
        sending.spawn(async move {
            for _ in 0..cells {
                let drop_cell = RelayCell::new(None, RelayMsg::Drop).map_err(|e| e.to_string())?;
                circ.send(0, drop_cell)
                    .await
                    .map_err(|e| format!("sending: {e}"))?;
            }
            Ok::<_, String>(circ)
        });
    }
    while let Some(r) = sending.join_next().await {
        done.push(r.map_err(|e| e.to_string())??);
    }
    relay.settle().await?;
    let figure = RssFigure {
        open: done.len(),
        rss_idle,
        rss_loaded: relay.rss()?,
    };
    drop(done);
    Ok(figure)
}

async fn connect(target: &RelayTarget) -> Result<Arc<ClientChannel>, String> {
    ClientChannel::connect(target, &LinkConfig::default())
        .await
        .map_err(|e| format!("channel to the relay: {e}"))
}

/// Whether a fresh circuit to `target` is built and answers a round trip.
async fn serves(target: &RelayTarget) -> bool {
    let attempt = async {
        let chan = connect(target).await?;
        let mut circ = ClientCircuit::create(&chan, target, Duration::from_secs(30))
            .await
            .map_err(|e| e.to_string())?;
        circ.send_to_last(RelayMsg::Truncate)
            .await
            .map_err(|e| e.to_string())?;
        circ.recv_timeout(Duration::from_secs(30))
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    };
    attempt.await.is_ok()
}
