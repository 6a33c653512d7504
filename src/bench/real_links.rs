//! `allium bench real-links`: allium on links with delay and a rate limit instead of
//! loopback (docs/PERFORMANCE.md, "Real links"). The network ([`super::real_links_net`])
//! puts a delay line in front of each relay; two scenarios run on it, each comparing the
//! old configuration with the new one in one run:
//!
//! - **long-path**: one bulk download through the 3 hops (one delay per link, no rate
//!   limit), with `[proxy] congestion_control = false` (fixed windows) then `true`;
//! - **bottleneck**: the middle relay's egress limited (tbf), bulk downloads on several
//!   circuits and one interactive stream on its own; the interactive round trips before and
//!   during the load, with (a) congestion control and the relays' fair queueing off, then
//!   (b) both on.
//!
//! The knobs are written only where this build's configs have them (a dry parse), so the
//! bench runs today and turns them as soon as they exist; the report says which were
//! in effect.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};

use super::client::{print_table, MIB};
use super::interactive::{LoadPlan, LoadResult, Rtts};
use super::netbed;
use super::real_links_net::{has_congestion_control, has_fair_queueing, RealNet, SOCKS_PORT};

/// Which scenarios run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// One bulk stream through 3 delayed hops: fixed windows, then congestion control.
    LongPath,
    /// A rate-limited middle relay: interactive round trips under bulk load.
    Bottleneck,
    /// Both, on one network.
    All,
}

/// Options of `allium bench real-links`.
#[derive(Debug, Args)]
pub struct RealLinksArgs {
    /// The scenario(s) to run.
    #[arg(long, value_enum, default_value = "all")]
    pub scenario: Scenario,
    /// One-way delay of each overlay link (client→guard, guard→middle, middle→exit), ms.
    #[arg(long, default_value_t = 50)]
    pub delay_ms: u64,
    /// MiB of the long-path bulk download (each configuration).
    #[arg(long, default_value_t = 16)]
    pub bulk_mib: u64,
    /// The middle relay's egress limit in the bottleneck scenario, Mbit/s.
    #[arg(long, default_value_t = 20)]
    pub rate_mbit: u32,
    /// Bulk download circuits in the bottleneck scenario.
    #[arg(long, default_value_t = 10)]
    pub bulk_circuits: usize,
    /// Interactive round trips measured unloaded and again loaded.
    #[arg(long, default_value_t = 100)]
    pub samples: usize,
    /// Interval between interactive round trips, ms.
    #[arg(long, default_value_t = 100)]
    pub interval_ms: u64,
    /// Seconds the bulk downloads run before the loaded round trips are measured.
    #[arg(long, default_value_t = 10)]
    pub settle_secs: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// The long-path figures.
#[derive(Debug, Clone, Copy, Default)]
struct LongPath {
    fixed_mib_s: f64,
    cc_mib_s: f64,
}

/// The bottleneck figures: (a) both off, (b) both on.
#[derive(Debug, Clone, Copy, Default)]
struct Bottleneck {
    off: LoadResult,
    on: LoadResult,
}

/// A directory removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `allium bench real-links` (called on a blocking thread).
pub(crate) fn run(args: RealLinksArgs) -> Result<(), String> {
    if args.bulk_mib == 0 || args.bulk_circuits == 0 || args.samples == 0 || args.interval_ms == 0 {
        return Err(
            "--bulk-mib, --bulk-circuits, --samples and --interval-ms must be at least 1".into(),
        );
    }
    netbed::check_prerequisites()?;
    let json = args.json;
    let say = move |m: &str| {
        if !json {
            eprintln!("bench real-links: {m}");
        }
    };
    for ns in netbed::remove_stale() {
        say(&format!(
            "removed the stale namespace {ns} (its bench process is gone)"
        ));
    }
    let root = std::env::temp_dir().join(format!("allium-real-links-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    crate::cli::private_dir::make_private_dir(&root)?;
    let _cleanup = TempDir(root.clone());
    let t0 = Instant::now();
    let delay = Duration::from_millis(args.delay_ms);
    let mut net = RealNet::start(&root, delay, false, &say)?;
    say(&format!("network formed after {:.1?}", t0.elapsed()));
    let result = scenarios(&mut net, &args, &say);
    if result.is_err() {
        // The logs are in `root`, removed on return: show the relays' and proxies' tails.
        for log in [
            "r1",
            "r2",
            "r3",
            "proxy-fixed",
            "proxy-cc",
            "proxy-a",
            "proxy-b",
        ] {
            let text = net.bed.log(log);
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            if !tail.is_empty() {
                eprintln!("--- {log}.log (last lines):");
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
    let (long, bottleneck, middle) = result?;
    let knobs = (has_congestion_control(), has_fair_queueing());
    if args.json {
        println!("{}", json_report(&args, knobs, long, bottleneck, &middle));
    } else {
        println!(
            "allium bench real-links ({} ms one way on each of the 3 overlay links; \
             congestion_control {}, fair_queueing {} in this build):",
            args.delay_ms,
            if knobs.0 {
                "turned"
            } else {
                "absent: fixed windows throughout"
            },
            if knobs.1 { "turned" } else { "absent" },
        );
        print_table(&rows(&args, long, bottleneck, &middle));
    }
    Ok(())
}

type Figures = (Option<LongPath>, Option<Bottleneck>, String);

fn scenarios(
    net: &mut RealNet,
    args: &RealLinksArgs,
    say: &dyn Fn(&str),
) -> Result<Figures, String> {
    let mut long = None;
    let mut middle = String::new();
    if matches!(args.scenario, Scenario::LongPath | Scenario::All) {
        let fixed = long_path(net, "proxy-fixed", false, args.bulk_mib, say)?;
        let cc = long_path(net, "proxy-cc", true, args.bulk_mib, say)?;
        long = Some(LongPath {
            fixed_mib_s: fixed,
            cc_mib_s: cc,
        });
    }
    let mut bottleneck = None;
    if matches!(args.scenario, Scenario::Bottleneck | Scenario::All) {
        // The middle is known once a proxy has picked its guard.
        net.start_proxy("proxy-a", false)?;
        let m = net.middle()?;
        middle = m.node.name.clone();
        net.bed.limit_egress(&m.node, args.rate_mbit)?;
        say(&format!(
            "middle relay {middle}: {}",
            net.bed.qdisc(&m.node)
        ));
        let off = load(net, args, "a", say)?;
        net.bed.stop("proxy-a");
        say("restarting the relays with fair queueing on");
        net.restart_relays(true)?;
        net.start_proxy("proxy-b", true)?;
        let again = net.middle()?.node.name.clone();
        if again != middle {
            return Err(format!(
                "the client's circuits moved from middle {middle} to {again}: the rate limit is on {middle}"
            ));
        }
        let on = load(net, args, "b", say)?;
        net.bed.stop("proxy-b");
        bottleneck = Some(Bottleneck { off, on });
    }
    Ok((long, bottleneck, middle))
}

/// One bulk download of `mib` MiB through a proxy with `cc`; MiB/s.
fn long_path(
    net: &mut RealNet,
    log: &str,
    cc: bool,
    mib: u64,
    say: &dyn Fn(&str),
) -> Result<f64, String> {
    net.start_proxy(log, cc)?;
    say(&format!(
        "long path, congestion_control = {cc}: downloading {mib} MiB"
    ));
    let sink = net.sink;
    let secs = netbed::in_namespace(&net.client, move || {
        Box::pin(async move {
            let socks = SocketAddr::from(([127, 0, 0, 1], SOCKS_PORT));
            // Warm: the circuit is built and its first window sent.
            super::client::download(socks, sink, MIB).await?;
            super::client::download(socks, sink, mib * MIB).await
        })
    })?
    .map_err(|e| format!("long-path download: {e}"))?;
    net.bed.stop(log);
    net.bed.check_running()?;
    let rate = mib as f64 / secs.max(1e-9);
    say(&format!(
        "long path, congestion_control = {cc}: {rate:.2} MiB/s"
    ));
    Ok(rate)
}

/// The bottleneck measurement through the running proxy; `tag` names its circuits.
fn load(
    net: &mut RealNet,
    args: &RealLinksArgs,
    tag: &'static str,
    say: &dyn Fn(&str),
) -> Result<LoadResult, String> {
    say(&format!(
        "bottleneck ({tag}): {} interactive round trips, then {} bulk circuits for {} s, then {} more",
        args.samples, args.bulk_circuits, args.settle_secs, args.samples
    ));
    let plan = LoadPlan {
        socks: SocketAddr::from(([127, 0, 0, 1], SOCKS_PORT)),
        sink: net.sink,
        bulk: args.bulk_circuits,
        samples: args.samples,
        interval: Duration::from_millis(args.interval_ms),
        settle: Duration::from_secs(args.settle_secs),
        tag,
    };
    let r = netbed::in_namespace(&net.client, move || {
        Box::pin(super::interactive::measure(plan))
    })?
    .map_err(|e| format!("bottleneck ({tag}): {e}"))?;
    net.bed.check_running()?;
    say(&format!(
        "bottleneck ({tag}): unloaded p50 {:.1} p99 {:.1} ms; loaded p50 {:.1} p99 {:.1} ms; bulk {:.2} MiB/s",
        r.unloaded.p50, r.unloaded.p99, r.loaded.p50, r.loaded.p99, r.bulk_mib_s
    ));
    Ok(r)
}

fn rtt_rows(rows: &mut Vec<(String, String, &'static str)>, label: &str, r: &Rtts) {
    rows.push((
        format!(
            "{label}: interactive round trip p50 (max {:.0}, {} samples)",
            r.max, r.samples
        ),
        format!("{:.1}", r.p50),
        "ms",
    ));
    rows.push((
        format!("{label}: interactive round trip p99"),
        format!("{:.1}", r.p99),
        "ms",
    ));
}

fn rows(
    args: &RealLinksArgs,
    long: Option<LongPath>,
    b: Option<Bottleneck>,
    middle: &str,
) -> Vec<(String, String, &'static str)> {
    let mut rows = Vec::new();
    if let Some(l) = long {
        rows.push((
            format!(
                "long path: 1 stream, {} MiB, congestion_control = false",
                args.bulk_mib
            ),
            format!("{:.2}", l.fixed_mib_s),
            "MiB/s",
        ));
        rows.push((
            format!(
                "long path: 1 stream, {} MiB, congestion_control = true",
                args.bulk_mib
            ),
            format!("{:.2}", l.cc_mib_s),
            "MiB/s",
        ));
        rows.push((
            "long path: ratio (goal ≥ 3)".into(),
            format!("{:.2}", l.cc_mib_s / l.fixed_mib_s.max(1e-9)),
            "×",
        ));
    }
    if let Some(b) = b {
        for (label, r) in [("(a) cc off, fq off", &b.off), ("(b) cc on, fq on", &b.on)] {
            let label = format!("bottleneck {label}");
            rtt_rows(&mut rows, &format!("{label}, unloaded"), &r.unloaded);
            rtt_rows(
                &mut rows,
                &format!("{label}, {} bulk circuits", args.bulk_circuits),
                &r.loaded,
            );
            rows.push((
                format!(
                    "{label}: bulk aggregate ({} of {} flowing; {middle} egress {} Mbit/s)",
                    r.bulk_flowing, args.bulk_circuits, args.rate_mbit
                ),
                format!("{:.2}", r.bulk_mib_s),
                "MiB/s",
            ));
            rows.push((
                format!("{label}: loaded p99 / unloaded p50 (goal ≤ 2)"),
                format!("{:.2}", r.loaded.p99 / r.unloaded.p50.max(1e-9)),
                "×",
            ));
        }
    }
    rows
}

fn rtts_json(prefix: &str, r: &Rtts) -> String {
    format!(
        "\"{prefix}_p50_ms\": {:.3}, \"{prefix}_p99_ms\": {:.3}, \"{prefix}_max_ms\": {:.3}, \"{prefix}_samples\": {}",
        r.p50, r.p99, r.max, r.samples
    )
}

fn json_report(
    args: &RealLinksArgs,
    knobs: (bool, bool),
    long: Option<LongPath>,
    b: Option<Bottleneck>,
    middle: &str,
) -> String {
    let mut f = vec![
        format!("\"delay_ms\": {}", args.delay_ms),
        format!("\"congestion_control_knob\": {}", knobs.0),
        format!("\"fair_queueing_knob\": {}", knobs.1),
    ];
    if let Some(l) = long {
        f.push(format!("\"long_path_mib\": {}", args.bulk_mib));
        f.push(format!("\"long_path_fixed_mib_s\": {:.3}", l.fixed_mib_s));
        f.push(format!("\"long_path_cc_mib_s\": {:.3}", l.cc_mib_s));
        f.push(format!(
            "\"long_path_ratio\": {:.3}",
            l.cc_mib_s / l.fixed_mib_s.max(1e-9)
        ));
    }
    if let Some(b) = b {
        f.push(format!("\"bottleneck_rate_mbit\": {}", args.rate_mbit));
        f.push(format!("\"bottleneck_relay\": \"{middle}\""));
        f.push(format!(
            "\"bottleneck_bulk_circuits\": {}",
            args.bulk_circuits
        ));
        for (p, r) in [("off", &b.off), ("on", &b.on)] {
            f.push(rtts_json(&format!("{p}_unloaded"), &r.unloaded));
            f.push(rtts_json(&format!("{p}_loaded"), &r.loaded));
            f.push(format!("\"{p}_bulk_mib_s\": {:.3}", r.bulk_mib_s));
            f.push(format!("\"{p}_bulk_flowing\": {}", r.bulk_flowing));
        }
    }
    format!("{{{}}}", f.join(", "))
}
