//! `allium bench delay-link`: runs a delay line ([`super::delay_link`]) between two
//! addresses (the real-links bed starts one per relay, inside the relay's namespace), or,
//! with `--measure`, measures a line on 127.0.0.1: how precise its delay is and its
//! throughput ceiling (docs/PERFORMANCE.md, "Real links").

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::client::{print_table, quantile, Sink, MIB, OP_DOWNLOAD, OP_ECHO};
use super::delay_link::{self, LineParams};

/// Options of `allium bench delay-link`.
#[derive(Debug, Args)]
pub struct DelayLinkArgs {
    /// Address to listen on (with --connect: serve until killed).
    #[arg(long, required_unless_present = "measure")]
    pub listen: Option<SocketAddr>,
    /// Where each accepted connection is forwarded.
    #[arg(long, required_unless_present = "measure")]
    pub connect: Option<SocketAddr>,
    /// One-way delay added in each direction, ms.
    #[arg(long, default_value_t = 50)]
    pub delay_ms: u64,
    /// Most bytes held per direction of a connection, MiB (the ceiling is cap / delay).
    #[arg(long, default_value_t = 4)]
    pub cap_mib: usize,
    /// Measure a line on 127.0.0.1 instead of serving: small round trips and one bulk
    /// transfer through it.
    #[arg(long)]
    pub measure: bool,
    /// MiB of the bulk transfer of --measure.
    #[arg(long, default_value_t = 256)]
    pub bulk_mib: u64,
}

/// `allium bench delay-link` (called on a blocking thread: runs its own runtime).
pub(crate) fn run(args: DelayLinkArgs) -> Result<(), String> {
    let params = LineParams {
        delay: Duration::from_millis(args.delay_ms),
        cap: args.cap_mib.max(1).saturating_mul(MIB as usize),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    if args.measure {
        return rt.block_on(measure(params, args.bulk_mib.max(1)));
    }
    let (Some(listen), Some(to)) = (args.listen, args.connect) else {
        return Err("--listen and --connect are needed (or --measure)".into());
    };
    rt.block_on(async move {
        let l =
            delay_link::listen(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        println!(
            "delay-link: {listen} -> {to}, {} ms each way, at most {} bytes per direction",
            args.delay_ms, params.cap
        );
        delay_link::serve(l, to, params).await;
        Ok(())
    })
}

/// Round trips of 64 bytes and a bulk download through a line in front of a sink.
async fn measure(params: LineParams, bulk_mib: u64) -> Result<(), String> {
    let e = |e: std::io::Error| e.to_string();
    let sink = Sink::start(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(e)?;
    let line = delay_link::listen(SocketAddr::from(([127, 0, 0, 1], 0))).map_err(e)?;
    let addr = line.local_addr().map_err(e)?;
    let server = tokio::spawn(delay_link::serve(line, sink.addr(), params));

    // Precision: what a round trip adds to the two delays, halved (one direction).
    let mut s = TcpStream::connect(addr).await.map_err(e)?;
    s.set_nodelay(true).map_err(e)?;
    let mut req = [0u8; 9];
    req[0] = OP_ECHO;
    s.write_all(&req).await.map_err(e)?;
    let mut extra = Vec::new();
    let two = 2.0 * params.delay.as_secs_f64();
    for i in 0..200u32 {
        let msg = [i as u8; 64];
        let t = Instant::now();
        s.write_all(&msg).await.map_err(e)?;
        let mut back = [0u8; 64];
        s.read_exact(&mut back).await.map_err(e)?;
        extra.push((t.elapsed().as_secs_f64() - two) / 2.0 * 1e3);
        tokio::time::sleep(Duration::from_millis(7)).await;
    }
    drop(s);

    // Ceiling: one bulk download through the line.
    let mut s = TcpStream::connect(addr).await.map_err(e)?;
    let n = bulk_mib * MIB;
    req[0] = OP_DOWNLOAD;
    req[1..].copy_from_slice(&n.to_be_bytes());
    let t = Instant::now();
    s.write_all(&req).await.map_err(e)?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    loop {
        let k = s.read(&mut buf).await.map_err(e)?;
        if k == 0 {
            break;
        }
        got += k as u64;
    }
    // The first byte waits two delays (request there, answer back): not transfer time.
    let secs = (t.elapsed().as_secs_f64() - two).max(1e-9);
    server.abort();
    if got != n {
        return Err(format!("bulk: {got} of {n} bytes"));
    }
    let ms = params.delay.as_millis();
    print_table(&[
        (
            format!("delay-line extra one-way delay over {ms} ms, min"),
            format!("{:.3}", quantile(&mut extra, 0.0)),
            "ms",
        ),
        (
            "  median".into(),
            format!("{:.3}", quantile(&mut extra, 0.5)),
            "ms",
        ),
        (
            "  p99".into(),
            format!("{:.3}", quantile(&mut extra, 0.99)),
            "ms",
        ),
        (
            "  max".into(),
            format!("{:.3}", quantile(&mut extra, 1.0)),
            "ms",
        ),
        (
            format!(
                "delay-line bulk, {bulk_mib} MiB, cap {} MiB",
                params.cap / MIB as usize
            ),
            format!("{:.1}", got as f64 / MIB as f64 / secs),
            "MiB/s",
        ),
    ]);
    Ok(())
}
