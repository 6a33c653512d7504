//! Command-line interface: argument parsing and dispatch. `src/main.rs` only calls [`run`].

use clap::Parser;

/// allium: an anonymous onion-routed overlay.
///
/// Every node relays fixed-size encrypted cells along multi-hop circuits built from a
/// signed peer directory. The relay, authority, proxy and testnet commands arrive with the
/// milestones that build them (see README.md).
#[derive(Debug, Parser)]
#[command(name = "allium", version, about, long_about)]
pub struct Cli {}

/// Parses the command line and runs the chosen command; returns the process exit code.
pub fn run() -> std::process::ExitCode {
    let _cli = Cli::parse();
    std::process::ExitCode::SUCCESS
}
