//! Command-line interface: argument parsing and dispatch. `src/main.rs` only calls [`run`].

pub(crate) mod client_auth_files;
pub(crate) mod commands;
pub mod config;
pub mod control;
pub mod demo_server;
pub mod demo_udp_echo;
pub(crate) mod emit;
pub(crate) mod private_dir;
pub(crate) mod weights_table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// allium: an anonymous onion-routed overlay.
///
/// Every node relays fixed-size encrypted cells along multi-hop circuits built from a
/// signed directory. Start with `allium testnet`, which runs a whole network on this
/// machine and prints a curl command to try it.
#[derive(Debug, Parser)]
#[command(name = "allium", version, about, long_about)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides this. Addresses and
    /// destinations appear only at debug level or above.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a whole network in this process: authorities, relays (some exits), a SOCKS
    /// proxy, a demo web server and a demo onion service in front of it (its `.allium`
    /// address is printed with a curl command), all on 127.0.0.1, until Ctrl-C.
    Testnet(commands::TestnetArgs),
    /// Run a relay (guard, middle, or an exit when relay.toml has an exit table).
    Relay {
        /// Path to relay.toml (see docs/examples/relay.toml).
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a directory authority.
    Authority {
        /// Path to authority.toml (see docs/examples/authority.toml).
        #[arg(long)]
        config: PathBuf,
    },
    /// Run the client: bootstrap, then serve SOCKS on 127.0.0.1:9050 (`<address>.allium`
    /// names reach onion services), and publish the onion services of its `[[service]]`
    /// entries (each address is logged at startup).
    Proxy {
        /// Path to proxy.toml (see docs/examples/proxy.toml).
        #[arg(long)]
        config: PathBuf,
    },
    /// Serve the demo web pages (`/`, `/bytes/N`) on an address until Ctrl-C: a
    /// destination for test networks run as separate processes or hosts.
    DemoServer {
        /// Address to listen on, e.g. 127.0.0.1:8080.
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
    /// Create (or show) a relay's keys in a data directory and print its identity.
    Keygen {
        /// The data directory (created mode 0700 if missing).
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Create an onion-service client-authorisation key file (mode 0600) and print the
    /// line to put in the service's `<name>.auth` file.
    OnionAuthKeygen {
        /// The key file to create (an existing file is never replaced).
        #[arg(long)]
        key_file: PathBuf,
    },
    /// Start a local network (authority and relays as child processes) and measure it:
    /// throughput, time to first byte, circuit builds, relay handshakes, memory and CPU.
    Bench(crate::bench::BenchArgs),
    /// Measure bulk throughput, concurrent streams and time to first byte through any
    /// SOCKS5 proxy (allium's or Tor's) against a sink server (docs/PERFORMANCE.md).
    BenchClient(crate::bench::BenchClientArgs),
    /// Serve the sink protocol used by `bench-client` (docs/PERFORMANCE.md).
    BenchSink(crate::bench::BenchSinkArgs),
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "allium=debug,info",
        _ => "allium=trace,debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

/// Parses the command line and runs the chosen command; returns the process exit code.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    // Every node command: a relay holds a descriptor per channel (src/fd_limit.rs).
    let _ = crate::fd_limit::raise_to_hard_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Testnet(args) => commands::testnet(args).await,
            Command::Relay { config } => commands::relay(&config).await,
            Command::Authority { config } => commands::authority(&config).await,
            Command::Proxy { config } => commands::proxy(&config).await,
            Command::DemoServer { listen } => commands::demo_server(listen).await,
            Command::Keygen { data_dir } => commands::keygen(&data_dir),
            Command::OnionAuthKeygen { key_file } => {
                client_auth_files::keygen(&key_file).map(|line| println!("{line}"))
            }
            Command::Bench(args) => crate::bench::bench(args).await,
            Command::BenchClient(args) => crate::bench::bench_client(args).await,
            Command::BenchSink(args) => crate::bench::bench_sink(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
