//! A whole measurement: a test network, the workload with padding off and/or on, and the
//! classifiers' cross-validated accuracy for each pair of circuit kinds.

use std::path::Path;
use std::time::Duration;

use super::classifier::{best, evaluate, Features, Sample, Score};
use super::dataset::Dataset;
use super::recorder::RecorderLimits;
use super::workload::{install, run, RunOutcome, WorkloadConfig};
use crate::client::CircPurpose;
use crate::testnet::{TestNet, TestNetConfig};

/// What to measure.
#[derive(Debug, Clone)]
pub struct MeasureConfig {
    /// Exit circuits, and client-side onion circuits (introduction + rendezvous), per run;
    /// the service side gets about half as many (one rendezvous circuit per fetch).
    pub circuits: usize,
    /// Cells are recorded for this long after each circuit's first one.
    pub window: Duration,
    /// The runs: padding off (`false`) and/or on (`true`).
    pub padding: Vec<bool>,
    /// Fetches in flight at once.
    pub concurrency: usize,
    /// Responses are 1 to this many cells.
    pub max_response_cells: usize,
    /// Percentage (0–100) of fetches that are uploads (1 to `max_response_cells` cells
    /// sent, one received).
    pub upload_percent: u8,
    /// Seed of the response sizes and of the cross-validation folds.
    pub seed: u64,
}

impl Default for MeasureConfig {
    fn default() -> Self {
        MeasureConfig {
            circuits: 300,
            window: Duration::from_secs(10),
            padding: vec![false, true],
            concurrency: 32,
            max_response_cells: 30,
            upload_percent: 0,
            seed: 22,
        }
    }
}

/// The pairs of circuit kinds the attacker tries to tell apart: a name, the onion
/// purposes (the positive class), against exit circuits.
pub const PAIRS: [(&str, &[CircPurpose]); 4] = [
    (
        "client intro+rend vs exit",
        &[CircPurpose::IntroClient, CircPurpose::RendClient],
    ),
    ("client intro vs exit", &[CircPurpose::IntroClient]),
    ("client rend vs exit", &[CircPurpose::RendClient]),
    (
        "service intro+rend vs exit",
        &[CircPurpose::IntroService, CircPurpose::RendService],
    ),
];

/// One pair's result in one run.
#[derive(Debug, Clone)]
pub struct Row {
    /// Padding on in this run.
    pub padding: bool,
    /// Which pair ([`PAIRS`]).
    pub pair: &'static str,
    /// Circuits per class after balancing.
    pub per_class: usize,
    /// Each classifier's result.
    pub scores: Vec<Score>,
}

impl Row {
    /// The attacker's result: the best classifier.
    pub fn best(&self) -> Option<&Score> {
        best(&self.scores)
    }
}

/// Everything measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// A row per run and pair.
    pub rows: Vec<Row>,
    /// Per run: padding, and what was left out.
    pub runs: Vec<(bool, RunOutcome)>,
}

/// The rows of one run's dataset.
pub fn rows_of(dataset: &Dataset, padding: bool, seed: u64) -> Vec<Row> {
    let exits: Vec<Sample> = dataset
        .traces(&[CircPurpose::Exit])
        .into_iter()
        .map(|t| Sample {
            features: Features::of(t),
            positive: false,
        })
        .collect();
    PAIRS
        .iter()
        .map(|(pair, purposes)| {
            let mut samples: Vec<Sample> = dataset
                .traces(purposes)
                .into_iter()
                .map(|t| Sample {
                    features: Features::of(t),
                    positive: true,
                })
                .collect();
            let per_class = samples.len().min(exits.len());
            samples.extend(exits.iter().cloned());
            Row {
                padding,
                pair,
                per_class,
                scores: evaluate(&samples, seed),
            }
        })
        .collect()
}

/// Starts a test network in this process and measures (`say` reports progress). The
/// onion service's key lives in `key_dir`.
pub async fn measure(
    cfg: &MeasureConfig,
    key_dir: &Path,
    say: &(dyn Fn(&str) + Sync),
) -> Result<Report, String> {
    say("starting a test network (1 authority, 6 relays, 2 exits)");
    let net = TestNet::start(&TestNetConfig {
        authorities: 1,
        relays: 6,
        exits: 2,
        period: Duration::from_secs(6),
        ..TestNetConfig::default()
    })
    .await
    .map_err(|e| format!("cannot start the test network: {e}"))?;
    let result = measure_on(&net, cfg, key_dir, say).await;
    net.shutdown().await;
    result
}

async fn measure_on(
    net: &TestNet,
    cfg: &MeasureConfig,
    key_dir: &Path,
    say: &(dyn Fn(&str) + Sync),
) -> Result<Report, String> {
    net.wait_for_consensus(Duration::from_secs(60)).await?;
    let recorders = install(
        net,
        RecorderLimits {
            window: cfg.window,
            ..RecorderLimits::default()
        },
    )?;
    let mut report = Report::default();
    for &padding in &cfg.padding {
        say(&format!(
            "padding {}: {} exit fetches, {} onion fetches",
            if padding { "on" } else { "off" },
            cfg.circuits,
            cfg.circuits.div_ceil(2)
        ));
        let wl = WorkloadConfig {
            exit_fetches: cfg.circuits,
            onion_fetches: cfg.circuits.div_ceil(2),
            padding,
            concurrency: cfg.concurrency,
            max_response_cells: cfg.max_response_cells,
            upload_percent: cfg.upload_percent,
            seed: cfg.seed,
            window: cfg.window,
        };
        let outcome = run(net, &recorders, &wl, key_dir).await?;
        let failed = outcome.exit_failed + outcome.onion_failed;
        if failed * 10 > wl.exit_fetches + wl.onion_fetches {
            return Err(format!(
                "{} exit and {} onion fetches of {} failed",
                outcome.exit_failed,
                outcome.onion_failed,
                wl.exit_fetches + wl.onion_fetches
            ));
        }
        report
            .rows
            .extend(rows_of(&outcome.dataset, padding, cfg.seed));
        report.runs.push((padding, outcome));
    }
    Ok(report)
}

impl Report {
    /// The table: padding, pair, circuits per class, classifier, accuracy, 95% interval.
    pub fn table(&self) -> Vec<[String; 6]> {
        let mut out = Vec::new();
        for r in &self.rows {
            for s in &r.scores {
                let (lo, hi) = s.wilson95();
                out.push([
                    if r.padding { "on" } else { "off" }.to_string(),
                    r.pair.to_string(),
                    r.per_class.to_string(),
                    s.name.clone(),
                    format!("{:.3}", s.accuracy()),
                    format!("[{lo:.3}, {hi:.3}]"),
                ]);
            }
        }
        out
    }

    /// What each run left out: duplicates, unseen circuits, failed fetches, dropped cells.
    pub fn notes(&self) -> Vec<String> {
        self.runs
            .iter()
            .map(|(padding, o)| {
                let d = &o.dataset;
                // Per purpose: circuits, and the median forward / backward cells in the
                // window (what the padding machines have to match).
                let counts: Vec<String> = d
                    .by_purpose
                    .iter()
                    .map(|(p, v)| {
                        let median = |forward: bool| {
                            let mut n: Vec<usize> = v
                                .iter()
                                .map(|t| t.iter().filter(|c| c.forward == forward).count())
                                .collect();
                            n.sort_unstable();
                            n.get(n.len() / 2).copied().unwrap_or(0)
                        };
                        format!("{p:?} {} (median {}/{} cells fwd/bwd)", v.len(), median(true), median(false))
                    })
                    .collect();
                format!(
                    "padding {}: circuits {}; {} duplicate ids dropped, {} unseen, {} exit and {} onion fetches failed, {} cells over the caps",
                    if *padding { "on" } else { "off" },
                    counts.join(", "),
                    d.duplicates,
                    d.unseen,
                    o.exit_failed,
                    o.onion_failed,
                    o.dropped_cells
                )
            })
            .collect()
    }
}
