//! `allium bench` and its building blocks: end-to-end measurements of a local network.
//!
//! [`client`] measures through any SOCKS5 proxy (`allium bench-client`, also used against
//! Tor by `scripts/bench-vs-tor.sh`); the rest of `allium bench` (circuit builds, relay
//! handshakes, relay memory and CPU) needs allium's own API and child processes. Method
//! and figures: docs/PERFORMANCE.md.

pub(crate) mod client;
pub(crate) mod delay_link;
pub(crate) mod delay_link_cmd;
pub(crate) mod dir;
pub(crate) mod dir_sim;
pub(crate) mod fingerprint;
pub(crate) mod interactive;
pub(crate) mod memory;
pub(crate) mod netbed;
pub(crate) mod procs;
pub(crate) mod real_links;
pub(crate) mod real_links_net;
pub(crate) mod relay_probe;
pub(crate) mod udp;

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
pub(crate) async fn bench_client(args: BenchClientArgs) -> Result<(), String> {
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
pub(crate) async fn bench_sink(args: BenchSinkArgs) -> Result<(), String> {
    let sink = Sink::start(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    println!("bench-sink listening on {}", sink.addr());
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| format!("cannot wait for Ctrl-C: {e}"))
}

/// Options of `allium bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
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
    /// Fresh 3-hop circuits built for the build-time median.
    #[arg(long, default_value_t = 20)]
    pub builds: usize,
    /// Circuits opened on one relay for the handshake rate and the memory figure; a
    /// comma-separated list measures each count on a fresh relay (e.g. 10000,100000).
    #[arg(long, value_delimiter = ',', default_value = "10000")]
    pub circuits: Vec<usize>,
    /// Channels the circuits are spread over (at least one per 4,000 circuits: a client
    /// channel carries at most 4096).
    #[arg(long, default_value_t = 3)]
    pub flood_channels: usize,
    /// Circuits that each carry --carried-kib before the relay's memory is measured
    /// again (0 skips).
    #[arg(long, default_value_t = 1000)]
    pub data_circuits: usize,
    /// KiB each of the --data-circuits carries (DROP cells to the relay).
    #[arg(long, default_value_t = 1024)]
    pub carried_kib: usize,
    /// Idle client circuits built for the client's per-circuit memory (0 skips).
    #[arg(long, default_value_t = 1000)]
    pub client_circuits: usize,
    /// Idle client channels opened on a relay for the per-channel memory (0 skips).
    #[arg(long, default_value_t = 1000)]
    pub idle_channels: usize,
    /// Only the memory figures (no network, no throughput): a quick run.
    #[arg(long)]
    pub memory_only: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Another bench instead of the network's (`bench dir`).
    #[command(subcommand)]
    pub sub: Option<dir::BenchSub>,
}

/// A directory removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_file(path: &std::path::Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn target_of(node: &procs::NodeDir) -> Result<crate::client::RelayTarget, String> {
    let onion = node
        .keys
        .onion_cert()
        .verify(crate::clock::now_unix())
        .map_err(|e| e.to_string())?;
    Ok(crate::client::RelayTarget {
        addr: node.addr,
        identity: node.identity(),
        onion,
    })
}

/// Everything `allium bench` measured.
#[derive(Debug, Default)]
struct BenchReport {
    client: client::ClientBenchResults,
    build_ms_median: f64,
    build_ms_p90: f64,
    builds: usize,
    memory: memory::MemoryReport,
    relay_cpu_s_per_gb: Vec<(String, f64)>,
    client_cpu_s_per_gb: f64,
    relayed_bytes: u64,
}

impl BenchReport {
    fn rows(&self) -> Vec<(String, String, &'static str)> {
        let mut rows = self.client.table_rows();
        rows.push((
            format!(
                "fresh 3-hop circuit build, median (p90 {:.2}) of {}",
                self.build_ms_p90, self.builds
            ),
            format!("{:.2}", self.build_ms_median),
            "ms",
        ));
        let flood = &self.memory.flood;
        rows.push((
            format!(
                "relay-side handshakes, {} CREATE over the network ({} refused)",
                flood.sent, flood.refused
            ),
            format!("{:.0}", flood.per_sec()),
            "/s",
        ));
        rows.extend(self.memory.rows());
        for (name, v) in &self.relay_cpu_s_per_gb {
            rows.push((
                format!("CPU per GB relayed, {name}"),
                format!("{v:.2}"),
                "s/GB",
            ));
        }
        rows.push((
            "CPU per GB, client + SOCKS + sink (bench process)".into(),
            format!("{:.2}", self.client_cpu_s_per_gb),
            "s/GB",
        ));
        rows
    }

    fn json(&self) -> String {
        let cpu: Vec<String> = self
            .relay_cpu_s_per_gb
            .iter()
            .map(|(n, v)| format!("\"{n}\": {v:.3}"))
            .collect();
        let flood = &self.memory.flood;
        let first = self.memory.idle.first().cloned().unwrap_or_default();
        format!(
            "{{{}, \"build_ms_median\": {:.3}, \"build_ms_p90\": {:.3}, \"builds\": {}, \
             \"handshakes_per_s\": {:.0}, \"handshakes_sent\": {}, \"handshakes_refused\": {}, \
             \"relay_rss_idle_bytes\": {}, \"relay_rss_circuits_bytes\": {}, \
             \"relay_open_circuits\": {}, \"relay_cpu_s_per_gb\": {{{}}}, \
             \"client_cpu_s_per_gb\": {:.3}, \"relayed_bytes\": {}, {}}}",
            self.client.json_fields(),
            self.build_ms_median,
            self.build_ms_p90,
            self.builds,
            flood.per_sec(),
            flood.sent,
            flood.refused,
            first.rss_idle,
            first.rss_loaded,
            first.open,
            cpu.join(", "),
            self.client_cpu_s_per_gb,
            self.relayed_bytes,
            self.memory.json_fields()
        )
    }
}

fn memory_plan(args: &BenchArgs) -> memory::MemoryPlan {
    memory::MemoryPlan {
        circuit_counts: args.circuits.iter().map(|&n| n.max(1)).collect(),
        flood_channels: args.flood_channels,
        data_circuits: args.data_circuits,
        carried_bytes: args.carried_kib.saturating_mul(1024),
        client_circuits: args.client_circuits,
        idle_channels: args.idle_channels,
    }
}

/// `allium bench`: starts an authority and three relays (guard, middle, exit) as child
/// processes, a client with a SOCKS proxy and a sink in this process, and measures
/// (docs/PERFORMANCE.md).
pub(crate) async fn bench(mut args: BenchArgs) -> Result<(), String> {
    use procs::{authority_list, NodeDir, NodeProcess};
    use std::time::Duration;

    if let Some(sub) = args.sub.take() {
        return tokio::task::spawn_blocking(move || dir::run(sub))
            .await
            .map_err(|e| e.to_string())?;
    }
    let say = |msg: &str| {
        if !args.json {
            eprintln!("bench: {msg}");
        }
    };
    let root = std::env::temp_dir().join(format!("allium-bench-{}", std::process::id()));
    crate::cli::private_dir::make_private_dir(&root)?;
    let _cleanup = TempDir(root.clone());
    if args.memory_only {
        let memory = memory::measure(&root, &memory_plan(&args), &say).await?;
        if args.json {
            println!("{{{}}}", memory.json_fields());
        } else {
            println!("allium bench --memory-only (each relay a process of its own):");
            print_table(&memory.rows());
        }
        return Ok(());
    }

    let auth = NodeDir::create(&root, "authority")?;
    let guard = NodeDir::create(&root, "guard")?;
    let middle = NodeDir::create(&root, "middle")?;
    let exit = NodeDir::create(&root, "exit")?;
    let auths = [(auth.identity(), auth.addr)];
    write_file(
        &root.join("authority.toml"),
        &format!(
            "[authority]\nlisten = \"{}\"\ndata_dir = \"{}\"\nperiod_secs = 6\ntest_network = true\n{}",
            auth.addr,
            auth.dir.display(),
            authority_list("authority", &auths)
        ),
    )?;
    let authority = NodeProcess::spawn(
        "authority",
        &root.join("authority.toml"),
        &root.join("authority.log"),
        "authority",
    )?;
    let mut relays = Vec::with_capacity(3);
    for (name, node) in [("guard", &guard), ("middle", &middle), ("exit", &exit)] {
        let exit_table = if name == "exit" {
            "\n[exit]\npolicy = [\"accept 127.0.0.0/8:*\"]\n"
        } else {
            ""
        };
        let path = root.join(format!("{name}.toml"));
        write_file(
            &path,
            &format!(
                "[relay]\nlisten = \"{}\"\ndata_dir = \"{}\"\nbandwidth = 10000000\n{}{exit_table}",
                node.addr,
                node.dir.display(),
                authority_list("relay", &auths)
            ),
        )?;
        relays.push(NodeProcess::spawn(
            "relay",
            &path,
            &root.join(format!("{name}.log")),
            name,
        )?);
    }
    for node in [&auth, &guard, &middle, &exit] {
        if !procs::wait_listening(node.addr, Duration::from_secs(30)).await {
            return Err(format!(
                "a node did not start listening on {} (logs in {})",
                node.addr,
                root.display()
            ));
        }
    }
    say("authority and 3 relays started as processes; waiting for the first consensus");
    // Ready once the authority and every relay's cache serve a consensus listing all three
    // relays (the client may refresh from any of them).
    let servers: Vec<crate::testnet::DirServer> = [
        ("authority", &auth),
        ("guard", &guard),
        ("middle", &middle),
        ("exit", &exit),
    ]
    .into_iter()
    .map(|(name, node)| crate::testnet::DirServer {
        name: name.to_string(),
        addr: node.addr,
        identity: node.identity(),
    })
    .collect();
    let relay_ids = [guard.identity(), middle.identity(), exit.identity()];
    crate::testnet::wait_until_listed(
        &servers,
        &[auth.identity()],
        &relay_ids,
        Duration::from_secs(120),
    )
    .await
    .map_err(|e| format!("no working network: {e} (logs in {})", root.display()))?;

    let mut ccfg = crate::client::ClientConfig::new(vec![crate::dir::AuthorityInfo {
        identity: auth.identity(),
        addr: auth.addr,
    }]);
    ccfg.prebuilt_circuits = 1;
    let client = crate::client::Client::bootstrap(ccfg)
        .await
        .map_err(|e| format!("cannot bootstrap from the formed network: {e}"))?;
    let socks = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let socks_addr = socks.local_addr().map_err(|e| e.to_string())?;
    let connector: std::sync::Arc<dyn crate::client::Connector> =
        std::sync::Arc::new(client.clone());
    let proxy = tokio::spawn(crate::client::socks_server::serve_socks(
        socks,
        0,
        connector,
        crate::client::ProxyConfig::default(),
        std::future::pending(),
    ));
    let sink = Sink::start(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(|e| e.to_string())?;

    say("measuring through the SOCKS proxy (warm-up, TTFB, RTT, bulk, concurrent)");
    let cpu_before: Vec<f64> = relays
        .iter()
        .map(|c| c.cpu_secs())
        .collect::<Result<_, _>>()?;
    let self_before = procs::cpu_secs(std::process::id())?;
    let ccfg = ClientBenchConfig {
        socks: socks_addr,
        target: sink.addr(),
        bulk_bytes: args.bulk_mib.max(1) * MIB,
        streams: args.streams.max(1),
        concurrent_bytes: args.concurrent_mib.unwrap_or(args.bulk_mib).max(1) * MIB,
        samples: args.samples.max(1),
    };
    let results = run_client_bench(&ccfg).await.map_err(|e| e.to_string())?;
    let self_after = procs::cpu_secs(std::process::id())?;
    // Every byte the client benchmark moved crossed all three relays.
    let relayed =
        MIB + 1024 * results.samples as u64 + results.bulk_bytes + results.concurrent_bytes;
    let gb = relayed as f64 / 1e9;
    let mut report = BenchReport {
        client: results,
        relayed_bytes: relayed,
        client_cpu_s_per_gb: (self_after - self_before) / gb,
        ..BenchReport::default()
    };
    for (c, before) in relays.iter().zip(cpu_before) {
        report
            .relay_cpu_s_per_gb
            .push((c.name.clone(), (c.cpu_secs()? - before) / gb));
    }
    proxy.abort();
    drop(sink);

    say("building fresh 3-hop circuits");
    let path = [target_of(&guard)?, target_of(&middle)?, target_of(&exit)?];
    let mut builds =
        relay_probe::fresh_circuit_builds(&path, args.builds.max(1), Duration::from_secs(30))
            .await?;
    report.builds = builds.len();
    report.build_ms_median = client::quantile(&mut builds, 0.5) * 1e3;
    report.build_ms_p90 = client::quantile(&mut builds, 0.9) * 1e3;

    report.memory = memory::measure(&root, &memory_plan(&args), &say).await?;

    if args.json {
        println!("{}", report.json());
    } else {
        println!("allium bench (authority + 3 relays as processes; client, SOCKS and sink in this process):");
        print_table(&report.rows());
    }
    drop(authority);
    drop(relays);
    Ok(())
}
