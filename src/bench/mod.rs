//! `allium bench` and its building blocks: end-to-end measurements of a local network.
//!
//! [`client`] measures through any SOCKS5 proxy (`allium bench-client`, also used against
//! Tor by `scripts/bench-vs-tor.sh`); the rest of `allium bench` (circuit builds, relay
//! handshakes, relay memory and CPU) needs allium's own API and child processes. Method
//! and figures: docs/PERFORMANCE.md.

pub mod client;

use std::net::SocketAddr;

use clap::Args;

use client::{print_table, run_client_bench, ClientBenchConfig, Sink, MIB};

/// Options of `allium bench-client`.
#[derive(Debug, Args)]
pub struct BenchClientArgs {
    /// The SOCKS5 proxy to measure through (no authentication).
    #[arg(long)]
    pub socks: SocketAddr,
    /// A running `allium bench-sink` to download from, as the exit should reach it.
    /// Without it, a sink is started in this process on --sink-listen.
    #[arg(long)]
    pub target: Option<SocketAddr>,
    /// Where to start the in-process sink when --target is not given.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub sink_listen: SocketAddr,
    /// MiB downloaded on one stream in the bulk test.
    #[arg(long, default_value_t = 256)]
    pub bulk_mib: u64,
    /// Streams in the concurrent test.
    #[arg(long, default_value_t = 50)]
    pub streams: usize,
    /// MiB downloaded in total over all streams in the concurrent test (default: --bulk-mib).
    #[arg(long)]
    pub concurrent_mib: Option<u64>,
    /// Samples for the time-to-first-byte and round-trip medians.
    #[arg(long, default_value_t = 20)]
    pub samples: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// `allium bench-client`.
pub async fn bench_client(args: BenchClientArgs) -> Result<(), String> {
    let sink = match args.target {
        Some(_) => None,
        None => Some(
            Sink::start(args.sink_listen)
                .await
                .map_err(|e| format!("cannot start the sink on {}: {e}", args.sink_listen))?,
        ),
    };
    let target = match (&sink, args.target) {
        (Some(s), _) => s.addr(),
        (None, Some(t)) => t,
        (None, None) => return Err("no sink".into()),
    };
    let cfg = ClientBenchConfig {
        socks: args.socks,
        target,
        bulk_bytes: args.bulk_mib.max(1) * MIB,
        streams: args.streams.max(1),
        concurrent_bytes: args.concurrent_mib.unwrap_or(args.bulk_mib).max(1) * MIB,
        samples: args.samples.max(1),
    };
    if !args.json {
        eprintln!(
            "bench-client: measuring through SOCKS {} to sink {target}",
            args.socks
        );
    }
    let r = run_client_bench(&cfg).await.map_err(|e| e.to_string())?;
    if args.json {
        println!("{{\"socks\": \"{}\", {}}}", args.socks, r.json_fields());
    } else {
        println!("allium bench-client through {}:", args.socks);
        print_table(&r.table_rows());
    }
    Ok(())
}

/// Options of `allium bench-sink`.
#[derive(Debug, Args)]
pub struct BenchSinkArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
}

/// `allium bench-sink`: serves the sink protocol ([`client`]) until Ctrl-C.
pub async fn bench_sink(args: BenchSinkArgs) -> Result<(), String> {
    let sink = Sink::start(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    println!("bench-sink listening on {}", sink.addr());
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| format!("cannot wait for Ctrl-C: {e}"))
}
