//! `allium bench dir`: the directory at scale. A synthetic network of N relays churns
//! from hour to hour; three authorities (in one child process) build, sign, exchange and
//! verify their votes, compute and sign the consensus and prepare it for serving
//! (compressed, and diffs from the earlier periods) through the same code as a running
//! authority; a second child process plays a client that verifies the first consensus in
//! full (and assembles it with every relay's microdescriptor) and then follows the network
//! by diffs, fetching only the microdescriptors that changed. Figures and method:
//! docs/PERFORMANCE.md.
//!
//! Churn per hour (Tor metrics orders of magnitude for a network of ~7,000 relays):
//! * 1 % of relays leave and as many new ones join (Tor's relay count moves by a
//!   hundred or two relays an hour in both directions);
//! * onion keys rotate weekly: 1/168 of relays publish a new onion-key certificate;
//! * 2 % of relays gain or lose a flag (Running flaps, Stable and Guard come with uptime);
//! * each authority re-measures every relay once a day (staggered, so 1/24 of them an
//!   hour) with ±10 % measurement noise; the consensus weight (the low median of the
//!   three, rounded to 4 significant bits by `dir::compute`) changes when a
//!   re-measurement moves it across a rounding step;
//! * descriptors are republished every 18 hours (no entry change: the consensus does not
//!   carry the publication time).
//!
//! The child processes are this binary re-run with the hidden `bench dir-child`, so their
//! peak RSS (VmHWM) is their own.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;

use super::dir_sim::{authority_key, SimNetwork, AUTHORITIES, HOUR, START};
use crate::crypto::{IdentityKeypair, IdentityPublic};
use crate::dir::compress::decompress;
use crate::dir::consensus::MAX_CONSENSUS_LEN;
use crate::dir::consensus_store::{ConsensusStore, PreparedConsensus};
use crate::dir::diff::{apply_compressed, body_digest, ConsensusDiff};
use crate::dir::microdesc::{MicrodescIndex, MAX_MICRODESCS_PER_REQUEST};
use crate::dir::request::MAX_DIR_BODY;
use crate::dir::request::{DirRequest, DirStatus};
use crate::dir::{
    compute_consensus_full, ConsensusParams, SignedConsensus, UncheckedConsensus, UncheckedVote,
};

/// The benches under `allium bench` besides the network's.
#[derive(Debug, clap::Subcommand)]
pub enum BenchSub {
    /// The directory at scale: consensus and diff sizes, authority CPU, client
    /// verification and peak memory for a synthetic network (docs/PERFORMANCE.md).
    Dir(DirBenchArgs),
    /// One side of `bench dir`, run as a child process (its peak RSS is its own).
    #[command(hide = true)]
    DirChild(DirChildArgs),
    /// UDP flows: datagram loss and round trips through 3 and 6 hops, datagrams per
    /// second per circuit, on an in-process test network (docs/PERFORMANCE.md).
    Udp(super::udp::UdpBenchArgs),
    /// Relays in network namespaces behind links with delay and a rate limit: a long path
    /// (fixed windows vs congestion control) and a bottleneck (interactive round trips
    /// under bulk load). Needs root, `ip` and `tc` (docs/PERFORMANCE.md, "Real links").
    RealLinks(super::real_links::RealLinksArgs),
    /// Circuit fingerprinting: how well a guard tells onion-service circuits from exit
    /// circuits by their cells, with circuit padding off and on (docs/PERFORMANCE.md).
    Fingerprint(super::fingerprint::FingerprintArgs),
    /// A TCP forwarder adding a fixed delay each way (one per relay of `real-links`), or
    /// with --measure its own precision and throughput ceiling.
    DelayLink(super::delay_link_cmd::DelayLinkArgs),
}

/// Runs a bench of [`BenchSub`].
pub(crate) fn run(sub: BenchSub) -> Result<(), String> {
    match sub {
        BenchSub::Dir(args) => bench_dir(args),
        BenchSub::DirChild(args) => dir_child(args),
        BenchSub::Udp(args) => super::udp::run(args),
        BenchSub::RealLinks(args) => super::real_links::run(args),
        BenchSub::DelayLink(args) => super::delay_link_cmd::run(args),
        BenchSub::Fingerprint(args) => super::fingerprint::run(args),
    }
}

/// Options of `allium bench dir`.
#[derive(Debug, Args)]
pub struct DirBenchArgs {
    /// Relays in the synthetic network.
    #[arg(long, default_value_t = 10_000)]
    pub relays: usize,
    /// Hourly periods simulated after the first; diff figures are their mean.
    #[arg(long, default_value_t = 3)]
    pub periods: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Options of the hidden `allium bench dir-child` (one side of `bench dir`).
#[derive(Debug, Args)]
pub struct DirChildArgs {
    /// `authority` or `client`.
    #[arg(long)]
    pub role: String,
    /// Relays in the synthetic network.
    #[arg(long)]
    pub relays: usize,
    /// Periods after the first.
    #[arg(long)]
    pub periods: usize,
    /// Where the authority side writes the documents the client side reads.
    #[arg(long)]
    pub dir: PathBuf,
}

/// User + system CPU seconds of this process.
fn own_cpu_secs() -> Result<f64, String> {
    super::procs::cpu_secs(std::process::id())
}

/// Peak resident memory (VmHWM) of this process, bytes.
fn own_peak_rss() -> Result<u64, String> {
    let text = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| "no VmHWM in /proc/self/status".into())
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// What one period's authority work is: every authority signs its vote; each verifies all
/// votes, computes and signs the consensus; the signatures are exchanged; each prepares
/// the result for serving. Returns the signed consensus.
fn authorities_period(
    net: &SimNetwork,
    va: u64,
    stores: &mut [ConsensusStore],
) -> Result<(SignedConsensus, MicrodescIndex), String> {
    let keys: Vec<IdentityKeypair> = (0..AUTHORITIES).map(authority_key).collect();
    let ids: Vec<IdentityPublic> = keys.iter().map(|k| k.public()).collect();
    let mut votes = Vec::new();
    for (a, key) in keys.iter().enumerate() {
        let signed = net.vote(a, va).sign(key).map_err(|e| e.to_string())?;
        votes.push(signed.to_bytes().map_err(|e| e.to_string())?);
    }
    let now = va - HOUR / 6;
    let mut computed: Vec<SignedConsensus> = Vec::new();
    let mut microdescs = None;
    for key in &keys {
        let verified = votes
            .iter()
            .map(|v| UncheckedVote::parse(v).and_then(|u| u.verify(&ids, now)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let full = compute_consensus_full(&verified, &ids, &ConsensusParams::default())
            .map_err(|e| e.to_string())?;
        let mut signed = full.body.to_signed().map_err(|e| e.to_string())?;
        microdescs = Some(full.microdescs);
        signed.sign(key);
        computed.push(signed);
    }
    let sigs: Vec<_> = computed
        .iter()
        .flat_map(|c| c.signatures().to_vec())
        .collect();
    for c in &mut computed {
        for s in &sigs {
            if !c.add_signature(*s) {
                return Err("the authorities computed different consensuses".into());
            }
        }
    }
    for (store, c) in stores.iter_mut().zip(&computed) {
        let prepared = PreparedConsensus::new(c.clone()).map_err(|e| e.to_string())?;
        store.install(prepared).map_err(|e| e.to_string())?;
    }
    let signed = computed.into_iter().next().ok_or("no consensus")?;
    Ok((signed, microdescs.ok_or("no microdescriptors")?))
}

/// Bytes of the GET_MICRODESCS responses that carry the microdescriptors of `index` whose
/// digests `known` does not have (in batches of [`MAX_MICRODESCS_PER_REQUEST`]), and how
/// many there are.
fn microdesc_fetch_bytes(index: &MicrodescIndex, known: Option<&MicrodescIndex>) -> (usize, usize) {
    let mut wanted: Vec<[u8; 32]> = index
        .iter()
        .filter_map(|md| md.digest().ok())
        .filter(|d| known.is_none_or(|k| !k.contains(d)))
        .collect();
    wanted.sort_unstable();
    let bytes = wanted
        .chunks(MAX_MICRODESCS_PER_REQUEST)
        .map(|batch| index.answer(batch, MAX_DIR_BODY).len())
        .sum();
    (bytes, wanted.len())
}

/// What the diffs changed, summed over the periods: relays removed, added, modified, and
/// modifications per field (field-mask bit order, `docs/protocol.md` §6.18).
#[derive(Default)]
struct DiffChanges {
    removed: usize,
    added: usize,
    modified: usize,
    fields: [usize; 5],
}

impl DiffChanges {
    fn count(&mut self, d: &ConsensusDiff) {
        self.removed += d.removed.len();
        self.added += d.added.len();
        self.modified += d.modified.len();
        for m in &d.modified {
            for (bit, n) in self.fields.iter_mut().enumerate() {
                *n += usize::from(m.mask() >> bit & 1);
            }
        }
    }

    /// `key=value` lines, means per period.
    fn print(&self, periods: usize) {
        println!("diff_removed={}", self.removed / periods);
        println!("diff_added={}", self.added / periods);
        println!("diff_modified={}", self.modified / periods);
        for (name, n) in ["md_digest", "addrs", "flags", "bandwidth", "measured"]
            .iter()
            .zip(self.fields)
        {
            println!("diff_modified_{name}={}", n / periods);
        }
    }
}

/// The authority side: simulates the periods, writes `consensus-K` and `diff-K` (the
/// compressed diff from period K−1) into `dir`, prints `key=value` lines.
fn authority_child(args: &DirChildArgs) -> Result<(), String> {
    let mut net = SimNetwork::new(args.relays)?;
    let mut stores: Vec<ConsensusStore> = (0..AUTHORITIES).map(|_| Default::default()).collect();
    let mut cpu = 0.0;
    let mut prev_digest = None;
    let (mut diff_bytes, mut diff_z) = (0usize, 0usize);
    let mut changes = DiffChanges::default();
    let (mut full, mut full_z) = (0usize, 0usize);
    let mut previous_mds: Option<MicrodescIndex> = None;
    let (mut md_bytes, mut md_count, mut md_all) = (0usize, 0usize, 0usize);
    for k in 0..=args.periods as u64 {
        let va = START + k * HOUR;
        net.churn(k, va)?;
        let before = own_cpu_secs()?;
        let (signed, mds) = authorities_period(&net, va, &mut stores)?;
        let spent = own_cpu_secs()? - before;
        write(&args.dir.join(format!("mds-{k}")), &mds.to_file_bytes())?;
        let (fetch, count) = microdesc_fetch_bytes(&mds, previous_mds.as_ref());
        if k == 0 {
            md_all = fetch;
        } else {
            (md_bytes, md_count) = (md_bytes + fetch, md_count + count);
        }
        previous_mds = Some(mds);
        if k > 0 {
            cpu += spent;
        }
        let bytes = signed.to_bytes().map_err(|e| e.to_string())?;
        write(&args.dir.join(format!("consensus-{k}")), &bytes)?;
        let store = stores.first().ok_or("no store")?;
        let z = store
            .answer(&DirRequest::GetConsensusCompressed, va)
            .ok_or("no answer")?;
        (full, full_z) = (bytes.len(), z.body.len());
        if let Some(from) = prev_digest {
            let d = store
                .answer(&DirRequest::GetConsensusDiff { from }, va)
                .ok_or("no answer")?;
            if d.status != DirStatus::Ok {
                return Err(format!("no diff served: {}", d.reason()));
            }
            diff_z += d.body.len();
            let plain = decompress(&d.body, MAX_CONSENSUS_LEN).map_err(|e| e.to_string())?;
            diff_bytes += plain.len();
            changes.count(&ConsensusDiff::parse(&plain).map_err(|e| e.to_string())?);
            write(&args.dir.join(format!("diff-{k}")), &d.body)?;
        }
        prev_digest = Some(body_digest(signed.body()));
    }
    let p = args.periods.max(1);
    println!("consensus_bytes={full}");
    println!("consensus_compressed_bytes={full_z}");
    println!("diff_bytes={}", diff_bytes / p);
    println!("diff_compressed_bytes={}", diff_z / p);
    changes.print(p);
    println!("microdesc_bytes_per_period={}", md_bytes / p);
    println!("microdescs_per_period={}", md_count / p);
    println!("microdesc_bytes_all={md_all}");
    // Three authorities ran in this process: one authority's share.
    println!(
        "authority_cpu_s_per_period={:.3}",
        cpu / p as f64 / AUTHORITIES as f64
    );
    println!("authority_peak_rss_bytes={}", own_peak_rss()?);
    Ok(())
}

/// The client side: verifies the first consensus in full (timed), then applies and
/// verifies each diff, checking it rebuilds exactly the authorities' document.
fn client_child(args: &DirChildArgs) -> Result<(), String> {
    let trusted: Vec<IdentityPublic> = (0..AUTHORITIES)
        .map(|i| authority_key(i).public())
        .collect();
    let first = read(&args.dir.join("consensus-0"))?;
    let first_mds = read(&args.dir.join("mds-0"))?;
    let mut times = Vec::new();
    let mut current = None;
    // The fastest of 7 runs: wall time, so the least disturbed by other load. Timed, as a
    // client loading a consensus does it (`client::dirmgr`): parsing the consensus and
    // checking its signatures, times and structure; parsing every microdescriptor (and
    // hashing it for its digest) into an index; and assembling the view paths are chosen
    // from (each listed relay joined with its microdescriptor). Listed identities are not
    // validated as keys here: a client validates one when it uses the relay.
    for _ in 0..7 {
        let t = Instant::now();
        let c = UncheckedConsensus::parse(&first)
            .and_then(|u| u.verify(&trusted, START + 60))
            .map_err(|e| e.to_string())?;
        let index = MicrodescIndex::from_file_bytes(&first_mds).map_err(|e| e.to_string())?;
        let assembled = c.assemble_from(&index);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        if assembled.missing_microdescs() > 0 {
            return Err("microdescriptors missing from the first period".into());
        }
        current = Some(assembled.into_verified());
    }
    times.sort_by(f64::total_cmp);
    let mut current = current.ok_or("no consensus")?;
    let mut apply_ms = 0.0;
    for k in 1..=args.periods as u64 {
        let z = read(&args.dir.join(format!("diff-{k}")))?;
        let t = Instant::now();
        let next = apply_compressed(&z, current.signed().body(), current.body())
            .map_err(|e| e.to_string())?
            .verify(&trusted, START + k * HOUR + 60)
            .map_err(|e| e.to_string())?;
        apply_ms += t.elapsed().as_secs_f64() * 1000.0;
        let expected = read(&args.dir.join(format!("consensus-{k}")))?;
        if next.signed().to_bytes().map_err(|e| e.to_string())? != expected {
            return Err(format!(
                "diff {k} did not rebuild the authorities' consensus"
            ));
        }
        current = next;
    }
    println!(
        "client_verify_ms={:.2}",
        times.first().copied().unwrap_or(0.0)
    );
    println!(
        "client_diff_apply_ms={:.2}",
        apply_ms / args.periods.max(1) as f64
    );
    println!("client_peak_rss_bytes={}", own_peak_rss()?);
    Ok(())
}

/// `allium bench dir-child` (hidden): one side of `allium bench dir`.
pub(crate) fn dir_child(args: DirChildArgs) -> Result<(), String> {
    match args.role.as_str() {
        "authority" => authority_child(&args),
        "client" => client_child(&args),
        other => Err(format!("unknown role {other}")),
    }
}

fn run_child(role: &str, args: &DirBenchArgs, dir: &Path) -> Result<Vec<(String, String)>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let out = std::process::Command::new(exe)
        .args(["bench", "dir-child", "--role", role])
        .arg("--relays")
        .arg(args.relays.to_string())
        .arg("--periods")
        .arg(args.periods.to_string())
        .arg("--dir")
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run the {role} side: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "the {role} side failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// The JSON keys `allium bench dir --json` prints, in order.
pub(crate) const DIR_BENCH_KEYS: [&str; 9] = [
    "consensus_bytes",
    "consensus_compressed_bytes",
    "diff_bytes",
    "diff_compressed_bytes",
    "client_dir_bytes_per_day",
    "authority_cpu_s_per_period",
    "client_verify_ms",
    "authority_peak_rss_bytes",
    "client_peak_rss_bytes",
];

/// `allium bench dir`.
pub(crate) fn bench_dir(args: DirBenchArgs) -> Result<(), String> {
    if args.relays == 0 || args.relays > crate::dir::consensus::MAX_RELAYS {
        return Err(format!(
            "--relays must be 1 ..= {}",
            crate::dir::consensus::MAX_RELAYS
        ));
    }
    let dir = std::env::temp_dir().join(format!("allium-bench-dir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let _cleanup = super::TempDir(dir.clone());
    if !args.json {
        eprintln!(
            "bench dir: {} relays, {} hourly periods after the first",
            args.relays, args.periods
        );
    }
    let mut fields = run_child("authority", &args, &dir)?;
    fields.extend(run_child("client", &args, &dir)?);
    let get = |k: &str| -> Result<f64, String> {
        fields
            .iter()
            .find(|(name, _)| name == k)
            .and_then(|(_, v)| v.parse::<f64>().ok())
            .ok_or_else(|| format!("the bench did not report {k}"))
    };
    // A running client (or one restarted with its disk cache): every hourly diff and the
    // microdescriptors that changed (an upper bound: real clients refetch every 1–2.75
    // hours, and a relay changing twice between fetches is fetched once). Bootstrapping
    // from nothing (the compressed consensus and every microdescriptor) is reported apart.
    let per_day = 24.0 * (get("diff_compressed_bytes")? + get("microdesc_bytes_per_period")?);
    let bootstrap = get("consensus_compressed_bytes")? + get("microdesc_bytes_all")?;
    let value = |k: &str| -> Result<String, String> {
        Ok(match k {
            "client_dir_bytes_per_day" => format!("{per_day:.0}"),
            "authority_cpu_s_per_period" => format!("{:.3}", get(k)?),
            "client_verify_ms" => format!("{:.2}", get(k)?),
            _ => format!("{:.0}", get(k)?),
        })
    };
    if args.json {
        let parts = DIR_BENCH_KEYS
            .iter()
            .map(|k| Ok(format!("\"{k}\": {}", value(k)?)))
            .collect::<Result<Vec<_>, String>>()?;
        println!("{{{}}}", parts.join(", "));
    } else {
        println!("allium bench dir, {} relays:", args.relays);
        for k in DIR_BENCH_KEYS {
            println!("  {k:<28} {}", value(k)?);
        }
        println!(
            "  {:<28} {:.2}",
            "client_diff_apply_ms",
            get("client_diff_apply_ms")?
        );
        println!(
            "  {:<28} {:.0} ({:.0} microdescriptors)",
            "microdesc_bytes_per_period",
            get("microdesc_bytes_per_period")?,
            get("microdescs_per_period")?
        );
        println!("  {:<28} {bootstrap:.0}", "client_bootstrap_bytes");
        let n = |k: &str| get(k).unwrap_or(0.0);
        println!(
            "  {:<28} removed {:.0}, added {:.0}, modified {:.0} (md_digest {:.0}, addrs {:.0}, \
             flags {:.0}, bandwidth {:.0}, measured {:.0})",
            "diff_relays_per_period",
            n("diff_removed"),
            n("diff_added"),
            n("diff_modified"),
            n("diff_modified_md_digest"),
            n("diff_modified_addrs"),
            n("diff_modified_flags"),
            n("diff_modified_bandwidth"),
            n("diff_modified_measured"),
        );
    }
    Ok(())
}
