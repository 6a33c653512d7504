//! The measured traffic, on a test network: exit fetches and onion-service fetches of the
//! same small web objects, each on circuits of its own, by a client and a service whose
//! circuit padding is on or off. Returns the guards' traces of those circuits, labelled.
//!
//! A fetch is a request of one cell (a DATA cell of [`MAX_RELAY_DATA`] bytes naming the
//! response size) and a response of 1 to `max_response_cells` full cells, uniformly
//! drawn (a small web object). A share of the fetches are uploads instead (the request's
//! cell is followed by 1 to `max_response_cells` cells, the response is one cell: a form
//! or a file sent), as an exit's real traffic has both directions. The exit and onion
//! fetches draw from the same sequence, so only the circuits differ. Each exit fetch has an isolation class of its own (a new exit
//! circuit), each onion fetch too (a new introduction and rendezvous: the onion connector
//! reuses rendezvous circuits only within a class). No circuit is prebuilt in advance of
//! its use, so every circuit's window starts with its construction, as it does for onion
//! circuits.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::classifier::{Cell, SplitMix};
use super::dataset::Dataset;
use super::recorder::{GuardRecorder, Labels, RecorderLimits};
use crate::cell::consts::MAX_RELAY_DATA;
use crate::cell::{Hostname, TargetAddr};
use crate::client::onion_service::{launch, ServiceConfig};
use crate::client::{CircPurpose, Client, ClientConfig, Isolation};
use crate::relay::RelayObserver;
use crate::testnet::TestNet;

/// One fetch (connection included) may take this long before it counts as failed.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// The service must publish its descriptor within this.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(90);
/// Most bytes the object server sends in one response.
const MAX_RESPONSE: usize = 1 << 20;

/// What one run does.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Exit fetches (one exit circuit each).
    pub exit_fetches: usize,
    /// Onion fetches (an introduction and a rendezvous circuit each, at the client and
    /// a rendezvous circuit at the service).
    pub onion_fetches: usize,
    /// `ClientConfig::circuit_padding` of the client and of the service.
    pub padding: bool,
    /// Fetches in flight at once.
    pub concurrency: usize,
    /// Responses (uploads) are 1 to this many cells.
    pub max_response_cells: usize,
    /// Percentage (0–100) of fetches that are uploads.
    pub upload_percent: u8,
    /// Seed of the response sizes.
    pub seed: u64,
    /// The recorders' window: the run waits this long after its last fetch.
    pub window: Duration,
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct RunOutcome {
    /// The labelled traces.
    pub dataset: Dataset,
    /// Exit fetches that failed (their circuits are left out).
    pub exit_failed: usize,
    /// Onion fetches that failed.
    pub onion_failed: usize,
    /// Cells the recorders did not keep (caps reached), over the whole network's life.
    pub dropped_cells: u64,
}

/// Installs a recorder on every relay and authority of `net` (a relay takes one observer:
/// install once per network, then [`run`] as often as needed).
pub fn install(net: &TestNet, limits: RecorderLimits) -> Result<Vec<Arc<GuardRecorder>>, String> {
    let handles = net
        .relays
        .iter()
        .chain(net.authorities.iter().map(|(r, _)| r));
    let mut out = Vec::new();
    for r in handles {
        let rec = Arc::new(GuardRecorder::new(limits));
        r.set_observer(Arc::clone(&rec) as Arc<dyn RelayObserver>)
            .map_err(|_| "a relay already has an observer".to_string())?;
        out.push(rec);
    }
    Ok(out)
}

/// Serves the fetches: reads a request of [`MAX_RELAY_DATA`] bytes whose first four name
/// the response size and next four the size of an upload that follows, reads the upload,
/// answers with the response's bytes and closes.
async fn object_server() -> Result<(SocketAddr, tokio::task::JoinHandle<()>), String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot listen: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut req = [0u8; MAX_RELAY_DATA];
                if s.read_exact(&mut req).await.is_err() {
                    return;
                }
                let [a, b, c, d, e, f, g, h, ..] = req;
                let len = (u32::from_be_bytes([a, b, c, d]) as usize).min(MAX_RESPONSE);
                let up = (u32::from_be_bytes([e, f, g, h]) as usize).min(MAX_RESPONSE);
                let mut upload = vec![0u8; up];
                if s.read_exact(&mut upload).await.is_err() {
                    return;
                }
                let _ = s.write_all(&vec![0x5a; len]).await;
                let _ = s.shutdown().await;
            });
        }
    });
    Ok((addr, task))
}

/// What one fetch moves: bytes sent after the request's cell, bytes received.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    upload: usize,
    response: usize,
}

/// One fetch on a stream to `target:port` in class `iso`.
async fn fetch(
    client: &Client,
    target: TargetAddr,
    port: u16,
    iso: &Isolation,
    sizes: Sizes,
) -> Result<(), String> {
    let len = sizes.response;
    let go = async {
        let mut s = client
            .connect_target(target, port, iso)
            .await
            .map_err(|e| e.to_string())?;
        let mut req = [0u8; MAX_RELAY_DATA];
        if let Some(head) = req.get_mut(..4) {
            head.copy_from_slice(&(len as u32).to_be_bytes());
        }
        if let Some(head) = req.get_mut(4..8) {
            head.copy_from_slice(&(sizes.upload as u32).to_be_bytes());
        }
        s.write_all(&req).await.map_err(|e| e.to_string())?;
        s.write_all(&vec![0xa5; sizes.upload])
            .await
            .map_err(|e| e.to_string())?;
        s.flush().await.map_err(|e| e.to_string())?;
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.map_err(|e| e.to_string())?;
        if got.len() == len {
            Ok(())
        } else {
            Err(format!("{} of {len} bytes", got.len()))
        }
    };
    tokio::time::timeout(FETCH_TIMEOUT, go)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// A fetch task's result: which kind, the exit circuit ids it used (exit fetches), ok.
type Done = (bool, Vec<u32>, bool);

/// Runs the workload once on `net` (whose relays carry `recorders`), with the service's
/// key under `key_dir`.
pub async fn run(
    net: &TestNet,
    recorders: &[Arc<GuardRecorder>],
    cfg: &WorkloadConfig,
    key_dir: &Path,
) -> Result<RunOutcome, String> {
    for r in recorders {
        r.take();
    }
    let (server, server_task) = object_server().await?;
    let _stop_server = AbortOnDrop(server_task);
    let visitor_labels = Arc::new(Labels::default());
    let service_labels = Arc::new(Labels::default());
    let client_cfg = |labels: &Arc<Labels>| {
        let mut c = ClientConfig::new(net.authority_info.clone());
        c.prebuilt_circuits = 0;
        c.circuit_padding = cfg.padding;
        c.observer = Some(Arc::clone(labels) as _);
        c
    };
    let service_client = Client::bootstrap(client_cfg(&service_labels))
        .await
        .map_err(|e| format!("service client: {e}"))?;
    let mut scfg = ServiceConfig::new(
        key_dir.join(format!("fingerprint-{}.key", cfg.padding)),
        vec![(80, server)],
    );
    scfg.max_rendezvous = cfg.onion_fetches + 16;
    scfg.intros_per_second = 10_000;
    scfg.intro_point_rate = 10_000;
    scfg.intro_point_burst = 10_000;
    let service = launch(service_client, scfg)
        .await
        .map_err(|e| format!("service: {e}"))?;
    if !service.wait_published(PUBLISH_TIMEOUT).await {
        service.stop();
        return Err("the onion service did not publish its descriptor".into());
    }
    let onion = Hostname::new(&service.address().to_string())
        .map_err(|_| "the onion address is not a hostname".to_string())?;
    let visitor = Client::bootstrap(client_cfg(&visitor_labels))
        .await
        .map_err(|e| format!("client: {e}"))?;

    let mut rng = SplitMix(cfg.seed);
    let sizes: Vec<Sizes> = (0..cfg.exit_fetches.max(cfg.onion_fetches))
        .map(|_| {
            let bulk = (1 + rng.below(cfg.max_response_cells.max(1))) * MAX_RELAY_DATA;
            if rng.below(100) < usize::from(cfg.upload_percent) {
                Sizes {
                    upload: bulk,
                    response: MAX_RELAY_DATA,
                }
            } else {
                Sizes {
                    upload: 0,
                    response: bulk,
                }
            }
        })
        .collect();
    let slots = Arc::new(tokio::sync::Semaphore::new(cfg.concurrency.max(1)));
    let mut tasks: JoinSet<Done> = JoinSet::new();
    // Interleaved, so both kinds see the same load.
    for i in 0..cfg.exit_fetches.max(cfg.onion_fetches) {
        let len = sizes.get(i).copied().unwrap_or(Sizes {
            upload: 0,
            response: MAX_RELAY_DATA,
        });
        let kinds = [(true, i < cfg.exit_fetches), (false, i < cfg.onion_fetches)];
        for (exit, wanted) in kinds {
            if !wanted {
                continue;
            }
            let (client, slots, onion) = (visitor.clone(), Arc::clone(&slots), onion.clone());
            tasks.spawn(async move {
                let _slot = slots.acquire_owned().await;
                let iso = Isolation(
                    format!("fingerprint-{}-{i}", if exit { "x" } else { "o" }).into_bytes(),
                );
                let (target, port) = if exit {
                    (TargetAddr::Ip(server.ip()), server.port())
                } else {
                    (TargetAddr::Hostname(onion), 80)
                };
                let ok = fetch(&client, target, port, &iso, len).await.is_ok();
                let ids = if exit && ok {
                    client
                        .circuits_by_isolation()
                        .into_iter()
                        .filter(|(c, _)| *c == iso)
                        .flat_map(|(_, ids)| ids)
                        .collect()
                } else {
                    Vec::new()
                };
                (exit, ids, ok)
            });
        }
    }
    let mut out = RunOutcome::default();
    let mut exit_ids = HashSet::new();
    while let Some(done) = tasks.join_next().await {
        let (exit, ids, ok) = done.map_err(|e| format!("a fetch task failed: {e}"))?;
        match (exit, ok) {
            (true, true) => exit_ids.extend(ids),
            (true, false) => out.exit_failed += 1,
            (false, false) => out.onion_failed += 1,
            (false, true) => {}
        }
    }
    // Every measured circuit started before now: after one more window, all are complete.
    tokio::time::sleep(cfg.window + Duration::from_millis(500)).await;
    service.stop();
    let traces: Vec<HashMap<u32, Vec<Cell>>> = recorders.iter().map(|r| r.take()).collect();
    out.dropped_cells = recorders.iter().map(|r| r.dropped()).sum();

    let visitor_built = visitor_labels.all();
    let service_built = service_labels.all();
    let mut measured: Vec<(u32, CircPurpose)> = visitor_built
        .iter()
        .filter(|(id, p)| {
            matches!(p, CircPurpose::IntroClient | CircPurpose::RendClient)
                || (*p == CircPurpose::Exit && exit_ids.contains(id))
        })
        .copied()
        .collect();
    measured.extend(
        service_built
            .iter()
            .filter(|(_, p)| matches!(p, CircPurpose::IntroService | CircPurpose::RendService)),
    );
    let built: Vec<u32> = visitor_built
        .iter()
        .chain(&service_built)
        .map(|(id, _)| *id)
        .collect();
    out.dataset = Dataset::join(&measured, &built, &traces);
    Ok(out)
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
