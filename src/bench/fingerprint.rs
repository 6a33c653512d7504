//! `allium bench fingerprint`: can a guard tell onion-service circuits from exit circuits
//! by their cells? Runs exit and onion fetches on an in-process test network with circuit
//! padding off and/or on, records every circuit at its guard and reports each
//! classifier's cross-validated accuracy (chance is 50%) with a 95% Wilson interval
//! (method: crate::testnet::fingerprint, docs/PERFORMANCE.md "Circuit fingerprinting").

use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::testnet::fingerprint::report::{measure, MeasureConfig};

/// Which runs `--padding` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PaddingRuns {
    /// Client and service with `circuit_padding = false`.
    Off,
    /// Client and service with `circuit_padding = true`.
    On,
    /// One run of each, off first.
    Both,
}

/// Options of `allium bench fingerprint`.
#[derive(Debug, Args)]
pub struct FingerprintArgs {
    /// Circuits per class and run: this many exit fetches (one exit circuit each) and
    /// half as many onion fetches (an introduction and a rendezvous circuit each at the
    /// client; a rendezvous circuit at the service).
    #[arg(long, default_value_t = 300)]
    pub circuits: usize,
    /// Seconds of each circuit recorded at its guard, from its first relay cell.
    #[arg(long, default_value_t = 10)]
    pub window_secs: u64,
    /// Circuit padding of the client and of the service: off, on, or both (two runs).
    #[arg(long, value_enum, default_value_t = PaddingRuns::Both)]
    pub padding: PaddingRuns,
    /// Fetches in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Each response is 1 to this many full DATA cells (491 bytes each), drawn uniformly:
    /// a small web object. Each request is one full DATA cell.
    #[arg(long, default_value_t = 30)]
    pub max_response_cells: usize,
    /// Percentage of fetches that are uploads instead (0 to 100): 1 to
    /// `--max-response-cells` cells sent after the request, a one-cell response. The same
    /// draws serve exit and onion fetches.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub upload_percent: u8,
    /// Seed of the response sizes and of the cross-validation folds.
    #[arg(long, default_value_t = 22)]
    pub seed: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// `allium bench fingerprint` (called on a blocking thread: runs its own runtime).
pub(crate) fn run(args: FingerprintArgs) -> Result<(), String> {
    if args.circuits < 10 || args.window_secs == 0 || args.concurrency == 0 {
        return Err(
            "--circuits must be at least 10, --window-secs and --concurrency at least 1".into(),
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    rt.block_on(bench(args))
}

async fn bench(args: FingerprintArgs) -> Result<(), String> {
    let json = args.json;
    let say = move |m: &str| {
        if !json {
            eprintln!("bench fingerprint: {m}");
        }
    };
    let cfg = MeasureConfig {
        circuits: args.circuits,
        window: Duration::from_secs(args.window_secs),
        padding: match args.padding {
            PaddingRuns::Off => vec![false],
            PaddingRuns::On => vec![true],
            PaddingRuns::Both => vec![false, true],
        },
        concurrency: args.concurrency,
        max_response_cells: args.max_response_cells.max(1),
        upload_percent: args.upload_percent,
        seed: args.seed,
    };
    let dir = std::env::temp_dir().join(format!("allium-bench-fp-{}", std::process::id()));
    crate::cli::private_dir::make_private_dir(&dir)?;
    let _cleanup = super::TempDir(dir.clone());
    let report = measure(&cfg, &dir, &say).await?;
    if args.json {
        let rows: Vec<String> = report
            .rows
            .iter()
            .flat_map(|r| {
                r.scores.iter().map(move |s| {
                    let (lo, hi) = s.wilson95();
                    format!(
                        "{{\"padding\":\"{}\", \"pair\": \"{}\", \"per_class\": {}, \"classifier\": \"{}\", \"accuracy\": {:.4}, \"ci_low\": {:.4}, \"ci_high\": {:.4}}}",
                        if r.padding { "on" } else { "off" },
                        r.pair,
                        r.per_class,
                        s.name,
                        s.accuracy(),
                        lo,
                        hi
                    )
                })
            })
            .collect();
        println!("{{\"rows\":[{}]}}", rows.join(","));
        return Ok(());
    }
    for n in report.notes() {
        eprintln!("bench fingerprint: {n}");
    }
    println!(
        "allium bench fingerprint ({} s window at the guard, 5-fold cross-validation, balanced classes; chance is 0.500):",
        args.window_secs
    );
    let header = [
        "padding".to_string(),
        "kinds".into(),
        "n/class".into(),
        "classifier".into(),
        "accuracy".into(),
        "95% CI".into(),
    ];
    let mut table = vec![header];
    table.extend(report.table());
    let widths: Vec<usize> = (0..6)
        .map(|i| {
            table
                .iter()
                .map(|r| r.get(i).map_or(0, String::len))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in &table {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("  {}", cells.join("  ").trim_end());
    }
    for r in &report.rows {
        if let Some(b) = r.best() {
            let (lo, hi) = b.wilson95();
            println!(
                "  best, padding {}, {}: {:.3} [{lo:.3}, {hi:.3}] ({})",
                if r.padding { "on" } else { "off" },
                r.pair,
                b.accuracy(),
                b.name
            );
        }
    }
    Ok(())
}
