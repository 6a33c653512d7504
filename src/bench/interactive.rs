//! The bottleneck measurement of `allium bench real-links`: round trips of an interactive
//! stream (small echoes at a fixed interval, on a circuit of its own) before and while bulk
//! downloads on other circuits fill the bottleneck.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::client::{quantile, socks5_connect_as, OP_DOWNLOAD, OP_ECHO};

/// Bytes of each interactive message.
pub(crate) const MESSAGE: usize = 64;
/// A bulk download asks for this much: it runs until stopped.
const ENDLESS: u64 = 1 << 40;
/// Hang guard for one round trip or one stream open (not a speed target).
const STEP: Duration = Duration::from_secs(120);

/// What the bottleneck measurement does.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoadPlan {
    pub socks: SocketAddr,
    pub sink: SocketAddr,
    /// Bulk download circuits (one stream each, each its own SOCKS user name).
    pub bulk: usize,
    /// Round trips measured in each phase.
    pub samples: usize,
    /// Pause between two round trips' starts.
    pub interval: Duration,
    /// Time the bulk downloads run before the loaded phase is measured (queues build).
    pub settle: Duration,
    /// Prefix of the SOCKS user names (new circuits for each configuration).
    pub tag: &'static str,
}

/// Round-trip quantiles, ms.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Rtts {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub samples: usize,
}

impl Rtts {
    fn of(mut v: Vec<f64>) -> Rtts {
        Rtts {
            p50: quantile(&mut v, 0.5) * 1e3,
            p99: quantile(&mut v, 0.99) * 1e3,
            max: quantile(&mut v, 1.0) * 1e3,
            samples: v.len(),
        }
    }
}

/// What the bottleneck measurement found.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LoadResult {
    pub unloaded: Rtts,
    pub loaded: Rtts,
    /// The bulk downloads' aggregate rate during the loaded phase, MiB/s.
    pub bulk_mib_s: f64,
    /// Bulk streams that were receiving when the loaded phase started.
    pub bulk_flowing: usize,
}

fn err(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::other(msg.into())
}

async fn step<T>(
    what: &str,
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    tokio::time::timeout(STEP, f)
        .await
        .map_err(|_| err(format!("{what}: no result after {STEP:?}")))?
        .map_err(|e| err(format!("{what}: {e}")))
}

fn request(op: u8, n: u64) -> [u8; 9] {
    let mut r = [0u8; 9];
    r[0] = op;
    r[1..].copy_from_slice(&n.to_be_bytes());
    r
}

/// `n` round trips of [`MESSAGE`] bytes on `s`, one every `interval` (or right after the
/// previous one if it took longer); each echo must come back unchanged.
async fn round_trips(
    s: &mut TcpStream,
    n: usize,
    interval: Duration,
    seq: &mut u8,
) -> std::io::Result<Vec<f64>> {
    let mut out = Vec::with_capacity(n);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut back = [0u8; MESSAGE];
    for _ in 0..n {
        tick.tick().await;
        *seq = seq.wrapping_add(1);
        let msg = [*seq; MESSAGE];
        let start = Instant::now();
        s.write_all(&msg).await?;
        step("interactive echo", s.read_exact(&mut back)).await?;
        if back != msg {
            return Err(err("the echo came back changed"));
        }
        out.push(start.elapsed().as_secs_f64());
    }
    Ok(out)
}

/// One endless bulk download as user `user`, counting bytes into `got` until aborted.
async fn bulk(plan: LoadPlan, user: String, got: Arc<AtomicU64>) -> std::io::Result<()> {
    let mut s = step(
        "bulk stream",
        socks5_connect_as(plan.socks, plan.sink, Some(&user)),
    )
    .await?;
    s.write_all(&request(OP_DOWNLOAD, ENDLESS)).await?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Err(err("a bulk download ended early"));
        }
        got.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Runs the measurement (see the module docs).
pub(crate) async fn measure(plan: LoadPlan) -> std::io::Result<LoadResult> {
    let user = format!("{}-interactive", plan.tag);
    let mut s = step(
        "interactive stream",
        socks5_connect_as(plan.socks, plan.sink, Some(&user)),
    )
    .await?;
    s.write_all(&request(OP_ECHO, 0)).await?;
    let mut seq = 0u8;
    // Unmeasured: the exit's connection to the sink, the first cells.
    round_trips(&mut s, 3, plan.interval, &mut seq).await?;
    let unloaded = Rtts::of(round_trips(&mut s, plan.samples, plan.interval, &mut seq).await?);

    let counters: Vec<Arc<AtomicU64>> = (0..plan.bulk).map(|_| Arc::default()).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, got) in counters.iter().enumerate() {
        tasks.spawn(bulk(plan, format!("{}-bulk{i}", plan.tag), Arc::clone(got)));
    }
    // Keep the interactive stream busy while the bulk circuits are built and fill up
    // (an idle stream is not what is measured), then measure.
    let settle_rounds = (plan.settle.as_millis() / plan.interval.as_millis().max(1)) as usize;
    round_trips(&mut s, settle_rounds.max(1), plan.interval, &mut seq).await?;
    if let Some(Ok(Err(e))) = tasks.try_join_next() {
        return Err(e);
    }
    let total = |c: &[Arc<AtomicU64>]| c.iter().map(|g| g.load(Ordering::Relaxed)).sum::<u64>();
    let flowing = counters
        .iter()
        .filter(|g| g.load(Ordering::Relaxed) > 0)
        .count();
    let (before, t0) = (total(&counters), Instant::now());
    let loaded = Rtts::of(round_trips(&mut s, plan.samples, plan.interval, &mut seq).await?);
    let moved = total(&counters).saturating_sub(before);
    let secs = t0.elapsed().as_secs_f64();
    if let Some(Ok(Err(e))) = tasks.try_join_next() {
        return Err(e);
    }
    tasks.abort_all();
    s.shutdown().await?;
    Ok(LoadResult {
        unloaded,
        loaded,
        bulk_mib_s: moved as f64 / super::client::MIB as f64 / secs.max(1e-9),
        bulk_flowing: flowing,
    })
}
