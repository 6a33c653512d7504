//! Client-side measurements through any SOCKS5 proxy (`allium bench-client`), and the
//! sink/source server they talk to (`allium bench-sink`).
//!
//! The same code measures allium's proxy and Tor's SOCKS port, so that the two figures
//! are comparable: only the proxy address changes.
//!
//! # Sink protocol
//!
//! A client opens a TCP connection (through the proxy) and sends one 9-byte request:
//! an operation byte and a big-endian `u64` argument.
//!
//! - `D n` (download): the sink sends `n` bytes, then closes its write side.
//! - `E n` (echo): the sink copies every byte it receives back, until EOF (`n` ignored).
//!
//! Anything else closes the connection. The sink never buffers more than one 64 KiB
//! chunk per connection.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Operation byte: download `n` bytes.
pub(crate) const OP_DOWNLOAD: u8 = b'D';
/// Operation byte: echo until EOF.
pub(crate) const OP_ECHO: u8 = b'E';

/// Size of the sink's write chunk and the client's read buffer.
const CHUNK: usize = 64 * 1024;

/// No single measurement may take longer than this (a hang guard, not a speed target).
const STEP_TIMEOUT: Duration = Duration::from_secs(600);

/// Bytes per MiB.
pub(crate) const MIB: u64 = 1024 * 1024;

/// What `bench-client` measures and how.
#[derive(Debug, Clone)]
pub(crate) struct ClientBenchConfig {
    /// The SOCKS5 proxy (no authentication; IPv4/IPv6 CONNECT).
    pub socks: SocketAddr,
    /// The sink, as the exit should reach it.
    pub target: SocketAddr,
    /// Bytes downloaded in the bulk test (one stream).
    pub bulk_bytes: u64,
    /// Streams in the concurrent test.
    pub streams: usize,
    /// Bytes downloaded in total in the concurrent test (split evenly over the streams).
    pub concurrent_bytes: u64,
    /// Samples for the time-to-first-byte and round-trip medians.
    pub samples: usize,
}

/// What `bench-client` measured. Rates are in MB/s (10^6 bytes per second).
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientBenchResults {
    /// Bulk test: bytes moved.
    pub bulk_bytes: u64,
    /// Bulk test: seconds from the request to the last byte.
    pub bulk_secs: f64,
    /// Bulk throughput, MB/s.
    pub bulk_mb_s: f64,
    /// Concurrent test: streams.
    pub streams: usize,
    /// Concurrent test: total bytes moved.
    pub concurrent_bytes: u64,
    /// Concurrent test: seconds from the first request to the last stream's last byte.
    pub concurrent_secs: f64,
    /// Concurrent aggregate throughput, MB/s.
    pub concurrent_mb_s: f64,
    /// Warm time to first byte (new stream on a built circuit: SOCKS handshake, stream
    /// open at the exit, a 9-byte request, the first byte of the answer), median, ms.
    pub ttfb_ms_median: f64,
    /// Same, 90th percentile, ms.
    pub ttfb_ms_p90: f64,
    /// Round trip of one byte on an open stream (echo), median, ms.
    pub rtt_ms_median: f64,
    /// Samples behind the medians.
    pub samples: usize,
}

/// `n` bytes per `secs` in MB/s.
pub(crate) fn mb_per_s(bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        bytes as f64 / 1e6 / secs
    } else {
        0.0
    }
}

/// The median (and `q` quantile) of `v` (sorted in place); 0 for an empty slice.
pub(crate) fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let Some((&max, below)) = v.split_last() else {
        return 0.0;
    };
    let idx = (below.len() as f64 * q).round() as usize;
    // Fallback is correct: an index past `below` (q near or above 1) is the largest value.
    below.get(idx).copied().unwrap_or(max)
}

fn io_err(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::other(msg.into())
}

/// Opens a stream to `target` through the SOCKS5 proxy at `socks` (no authentication,
/// address given as an IP so the proxy resolves nothing).
pub(crate) async fn socks5_connect(
    socks: SocketAddr,
    target: SocketAddr,
) -> std::io::Result<TcpStream> {
    socks5_connect_as(socks, target, None).await
}

/// [`socks5_connect`], authenticating as `user` (empty password) if given: proxies that
/// isolate by credentials (allium, Tor) put each user's streams on circuits of its own.
pub(crate) async fn socks5_connect_as(
    socks: SocketAddr,
    target: SocketAddr,
    user: Option<&str>,
) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(socks).await?;
    s.set_nodelay(true)?;
    // Greeting (and credentials) and request pipelined: fewer round trips to the proxy.
    let method = if user.is_some() { 2u8 } else { 0 };
    let mut req = vec![5u8, 1, method];
    if let Some(user) = user {
        let name = user.as_bytes();
        let len = u8::try_from(name.len()).map_err(|_| io_err("SOCKS user name too long"))?;
        req.extend_from_slice(&[1, len]);
        req.extend_from_slice(name);
        req.push(0); // empty password
    }
    req.extend_from_slice(&[5, 1, 0]);
    match target {
        SocketAddr::V4(a) => {
            req.push(1);
            req.extend_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            req.push(4);
            req.extend_from_slice(&a.ip().octets());
        }
    }
    req.extend_from_slice(&target.port().to_be_bytes());
    s.write_all(&req).await?;
    let mut chosen = [0u8; 2];
    s.read_exact(&mut chosen).await?;
    if chosen != [5, method] {
        return Err(io_err(format!(
            "SOCKS proxy refused method {method}: {chosen:?}"
        )));
    }
    if user.is_some() {
        let mut status = [0u8; 2];
        s.read_exact(&mut status).await?;
        if status[1] != 0 {
            return Err(io_err("SOCKS proxy refused the user name"));
        }
    }
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await?;
    if head[0] != 5 || head[1] != 0 {
        return Err(io_err(format!(
            "SOCKS CONNECT failed: reply code {}",
            head[1]
        )));
    }
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut len = [0u8; 1];
            s.read_exact(&mut len).await?;
            usize::from(len[0]) + 2
        }
        t => return Err(io_err(format!("SOCKS reply with address type {t}"))),
    };
    let mut skip = vec![0u8; rest];
    s.read_exact(&mut skip).await?;
    Ok(s)
}

fn request(op: u8, n: u64) -> [u8; 9] {
    let mut r = [0u8; 9];
    r[0] = op;
    r[1..].copy_from_slice(&n.to_be_bytes());
    r
}

/// Downloads `n` bytes over a fresh SOCKS stream; returns the seconds from sending the
/// request to the last byte. Fails unless exactly `n` bytes arrive.
pub(crate) async fn download(
    socks: SocketAddr,
    target: SocketAddr,
    n: u64,
) -> std::io::Result<f64> {
    let mut s = socks5_connect(socks, target).await?;
    let start = Instant::now();
    s.write_all(&request(OP_DOWNLOAD, n)).await?;
    let mut buf = vec![0u8; CHUNK * 4];
    let mut got: u64 = 0;
    loop {
        let k = s.read(&mut buf).await?;
        if k == 0 {
            break;
        }
        got += k as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    if got != n {
        return Err(io_err(format!("download: expected {n} bytes, got {got}")));
    }
    Ok(secs)
}

/// One time-to-first-byte sample, in seconds (see [`ClientBenchResults::ttfb_ms_median`]).
pub(crate) async fn ttfb_once(socks: SocketAddr, target: SocketAddr) -> std::io::Result<f64> {
    let start = Instant::now();
    let mut s = socks5_connect(socks, target).await?;
    s.write_all(&request(OP_DOWNLOAD, 1024)).await?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await?;
    let secs = start.elapsed().as_secs_f64();
    // Drain the rest so the stream closes cleanly.
    let mut sink = vec![0u8; 2048];
    while s.read(&mut sink).await? > 0 {}
    Ok(secs)
}

/// `samples` one-byte echo round trips on one open stream, in seconds each.
pub(crate) async fn echo_rtts(
    socks: SocketAddr,
    target: SocketAddr,
    samples: usize,
) -> std::io::Result<Vec<f64>> {
    let mut s = socks5_connect(socks, target).await?;
    s.write_all(&request(OP_ECHO, 0)).await?;
    let mut out = Vec::with_capacity(samples);
    let mut b = [0u8; 1];
    // One unmeasured round trip: the exit's connection to the sink is made lazily by
    // some proxies.
    for i in 0..=samples {
        let start = Instant::now();
        s.write_all(&[i as u8]).await?;
        s.read_exact(&mut b).await?;
        if b[0] != i as u8 {
            return Err(io_err("echo returned a different byte"));
        }
        if i > 0 {
            out.push(start.elapsed().as_secs_f64());
        }
    }
    s.shutdown().await?;
    Ok(out)
}

async fn timed<T>(
    what: &str,
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    tokio::time::timeout(STEP_TIMEOUT, f)
        .await
        .map_err(|_| io_err(format!("{what}: no result after {STEP_TIMEOUT:?}")))?
        .map_err(|e| io_err(format!("{what}: {e}")))
}

/// Runs every client-side measurement in order: warm-up, TTFB, RTT, bulk, concurrent.
pub(crate) async fn run_client_bench(
    cfg: &ClientBenchConfig,
) -> std::io::Result<ClientBenchResults> {
    let (socks, target) = (cfg.socks, cfg.target);
    // Warm-up: makes sure a circuit is built and the path is hot.
    timed("warm-up", download(socks, target, MIB)).await?;

    let mut ttfb = Vec::with_capacity(cfg.samples);
    for _ in 0..cfg.samples.max(1) {
        ttfb.push(timed("time to first byte", ttfb_once(socks, target)).await?);
    }
    let mut rtt = timed("echo", echo_rtts(socks, target, cfg.samples.max(1))).await?;

    let bulk_secs = timed("bulk", download(socks, target, cfg.bulk_bytes)).await?;

    let streams = cfg.streams.max(1);
    let per = (cfg.concurrent_bytes / streams as u64).max(1);
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..streams {
        set.spawn(download(socks, target, per));
    }
    let concurrent = async {
        while let Some(r) = set.join_next().await {
            r.map_err(|e| io_err(format!("task: {e}")))??;
        }
        Ok(())
    };
    timed("concurrent", concurrent).await?;
    let concurrent_secs = start.elapsed().as_secs_f64();
    let concurrent_bytes = per * streams as u64;

    let samples = ttfb.len();
    let ttfb_med = quantile(&mut ttfb, 0.5) * 1e3;
    let ttfb_p90 = quantile(&mut ttfb, 0.9) * 1e3;
    Ok(ClientBenchResults {
        bulk_bytes: cfg.bulk_bytes,
        bulk_secs,
        bulk_mb_s: mb_per_s(cfg.bulk_bytes, bulk_secs),
        streams,
        concurrent_bytes,
        concurrent_secs,
        concurrent_mb_s: mb_per_s(concurrent_bytes, concurrent_secs),
        ttfb_ms_median: ttfb_med,
        ttfb_ms_p90: ttfb_p90,
        rtt_ms_median: quantile(&mut rtt, 0.5) * 1e3,
        samples,
    })
}

/// A running sink server (see the module docs for its protocol).
#[derive(Debug)]
pub(crate) struct Sink {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Sink {
    /// Listens on `listen` and serves until dropped.
    pub(crate) async fn start(listen: SocketAddr) -> std::io::Result<Sink> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(serve_sink(listener));
        Ok(Sink { addr, task })
    }

    /// Where it listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accepts sink connections forever (one task each).
pub(crate) async fn serve_sink(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                tokio::spawn(async move {
                    let _ = sink_conn(s).await;
                });
            }
            // Out of descriptors or similar: pause instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn sink_conn(mut s: TcpStream) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let mut req = [0u8; 9];
    s.read_exact(&mut req).await?;
    let mut arg = [0u8; 8];
    arg.copy_from_slice(&req[1..]);
    let n = u64::from_be_bytes(arg);
    match req[0] {
        OP_DOWNLOAD => {
            // Not all zeros, so nothing on the path can compress it away.
            let mut chunk: Vec<u8> = (0..CHUNK).map(|i| (i * 7 + 13) as u8).collect();
            let mut left = n;
            while left > 0 {
                // Only the last chunk is shorter.
                chunk.truncate(usize::try_from(left).unwrap_or(CHUNK));
                s.write_all(&chunk).await?;
                left -= chunk.len() as u64;
            }
            s.shutdown().await
        }
        OP_ECHO => {
            let (mut r, mut w) = s.split();
            tokio::io::copy(&mut r, &mut w).await?;
            w.shutdown().await
        }
        _ => Ok(()),
    }
}

impl ClientBenchResults {
    /// The results as JSON object members (no braces), for `--json`.
    pub(crate) fn json_fields(&self) -> String {
        format!(
            "\"bulk_bytes\": {}, \"bulk_secs\": {:.3}, \"bulk_mb_s\": {:.2}, \
             \"streams\": {}, \"concurrent_bytes\": {}, \"concurrent_secs\": {:.3}, \
             \"concurrent_mb_s\": {:.2}, \"ttfb_ms_median\": {:.3}, \"ttfb_ms_p90\": {:.3}, \
             \"rtt_ms_median\": {:.3}, \"samples\": {}",
            self.bulk_bytes,
            self.bulk_secs,
            self.bulk_mb_s,
            self.streams,
            self.concurrent_bytes,
            self.concurrent_secs,
            self.concurrent_mb_s,
            self.ttfb_ms_median,
            self.ttfb_ms_p90,
            self.rtt_ms_median,
            self.samples
        )
    }

    /// The results as table rows (`name | value | unit`).
    pub(crate) fn table_rows(&self) -> Vec<(String, String, &'static str)> {
        vec![
            (
                format!("bulk throughput, 1 stream, {} MiB", self.bulk_bytes / MIB),
                format!("{:.1}", self.bulk_mb_s),
                "MB/s",
            ),
            (
                format!(
                    "throughput, {} concurrent streams, {:.1} MiB total",
                    self.streams,
                    self.concurrent_bytes as f64 / MIB as f64
                ),
                format!("{:.1}", self.concurrent_mb_s),
                "MB/s",
            ),
            (
                format!(
                    "warm time to first byte, median (p90 {:.2}) of {}",
                    self.ttfb_ms_p90, self.samples
                ),
                format!("{:.2}", self.ttfb_ms_median),
                "ms",
            ),
            (
                format!("round trip on an open stream, median of {}", self.samples),
                format!("{:.2}", self.rtt_ms_median),
                "ms",
            ),
        ]
    }
}

/// Prints rows as an aligned table.
pub(crate) fn print_table(rows: &[(String, String, &'static str)]) {
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let v = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    for (name, value, unit) in rows {
        println!("  {name:<w$}  {value:>v$} {unit}");
    }
}
