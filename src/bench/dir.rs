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

use crate::crypto::{IdentityKeypair, IdentityPublic, OnionKeyCert, OnionKeypair};
use crate::dir::compress::decompress;
use crate::dir::consensus::MAX_CONSENSUS_LEN;
use crate::dir::consensus_store::{ConsensusStore, PreparedConsensus};
use crate::dir::descriptor::SignedDescriptor;
use crate::dir::diff::{apply_compressed, body_digest};
use crate::dir::microdesc::{MicrodescIndex, MAX_MICRODESCS_PER_REQUEST};
use crate::dir::request::MAX_DIR_BODY;
use crate::dir::request::{DirRequest, DirStatus};
use crate::dir::{
    compute_consensus_full, ConsensusParams, Descriptor, ExitPolicy, RelayFlags, SignedConsensus,
    UncheckedConsensus, UncheckedVote, VoteBody, VoteEntry,
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
}

/// Runs a bench of [`BenchSub`].
pub(crate) fn run(sub: BenchSub) -> Result<(), String> {
    match sub {
        BenchSub::Dir(args) => bench_dir(args),
        BenchSub::DirChild(args) => dir_child(args),
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

const HOUR: u64 = 3600;
/// The first period's start (an hour boundary).
const START: u64 = 1_700_002_800;
const AUTHORITIES: u64 = 3;

/// A deterministic generator (splitmix64): the same network for every run.
struct Mix(u64);

impl Mix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `num / den`.
    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
}

fn seed(n: u64, tag: u8) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&n.to_be_bytes());
    s[8] = tag;
    s
}

fn authority_key(i: u64) -> IdentityKeypair {
    IdentityKeypair::from_secret_bytes(&seed(1_000_000_000 + i, 0xA1))
}

/// One synthetic relay.
struct SimRelay {
    key: IdentityKeypair,
    serial: u64,
    onion_generation: u64,
    descriptor: Descriptor,
    signed: SignedDescriptor,
    flags: RelayFlags,
    /// Each authority's last measurement.
    measured: [Option<u64>; AUTHORITIES as usize],
    true_bandwidth: u64,
    /// Hour offset of this relay's daily re-measurement.
    slot: u64,
    joined: u64,
}

impl SimRelay {
    fn new(serial: u64, now: u64, rng: &mut Mix) -> Result<Self, String> {
        let key = IdentityKeypair::from_secret_bytes(&seed(serial, 0xA1));
        let exit = rng.chance(1, 5);
        let ip = std::net::Ipv4Addr::from(0x1400_0000u32 + (rng.next_u64() as u32 & 0x3fff_ffff));
        // Relay capacities span three orders of magnitude, as in Tor.
        let true_bandwidth = 50_000u64 << rng.below(11);
        let onion = OnionKeypair::from_secret_bytes(&seed(serial << 16, 0xB2));
        let descriptor = Descriptor {
            identity: key.public(),
            onion_cert: OnionKeyCert::sign(&key, onion.public(), now + 28 * 24 * HOUR),
            addrs: vec![std::net::SocketAddr::from((ip, 9001))],
            exit,
            exit_policy: if exit {
                ExitPolicy::default_exit()
            } else {
                ExitPolicy::reject_all()
            },
            bandwidth: true_bandwidth * 2,
            family: Vec::new(),
            version: "allium 0.1.0".into(),
            published: now.saturating_sub(rng.below(18 * HOUR)),
        };
        let signed = descriptor.sign(&key).map_err(|e| e.to_string())?;
        let mut flags = RelayFlags::RUNNING.union(RelayFlags::VALID);
        flags.set(RelayFlags::EXIT, exit);
        flags.set(RelayFlags::FAST, rng.chance(9, 10));
        let guard = rng.chance(1, 3);
        flags.set(RelayFlags::GUARD, guard);
        flags.set(RelayFlags::STABLE, guard || rng.chance(1, 3));
        Ok(SimRelay {
            key,
            serial,
            onion_generation: 0,
            descriptor,
            signed,
            flags,
            measured: [None; AUTHORITIES as usize],
            true_bandwidth,
            slot: rng.below(24),
            joined: now,
        })
    }

    fn resign(&mut self, now: u64) -> Result<(), String> {
        self.descriptor.published = now;
        self.signed = self.descriptor.sign(&self.key).map_err(|e| e.to_string())?;
        Ok(())
    }

    fn rotate_onion_key(&mut self, now: u64) -> Result<(), String> {
        self.onion_generation += 1;
        let onion = OnionKeypair::from_secret_bytes(&seed(
            (self.serial << 16) + self.onion_generation,
            0xB2,
        ));
        self.descriptor.onion_cert =
            OnionKeyCert::sign(&self.key, onion.public(), now + 28 * 24 * HOUR);
        self.resign(now)
    }

    /// Authority `a`'s measurement at hour `h`: daily, at the relay's slot (shifted per
    /// authority), with ±10 % noise; new relays are measured from their second hour on.
    fn remeasure(&mut self, a: usize, h: u64, now: u64, rng: &mut Mix) {
        let due = (self.slot + 8 * a as u64) % 24 == h % 24;
        let first = self.measured.get(a).is_some_and(|m| m.is_none()) && now >= self.joined + HOUR;
        if due || first {
            let noise = 90 + rng.below(21);
            if let Some(m) = self.measured.get_mut(a) {
                *m = Some(self.true_bandwidth * noise / 100);
            }
        }
    }
}

/// The synthetic network and its churn.
struct SimNetwork {
    relays: Vec<SimRelay>,
    next_serial: u64,
    rng: Mix,
}

impl SimNetwork {
    fn new(n: usize) -> Result<Self, String> {
        let mut rng = Mix(0x5eed);
        let relays = (0..n as u64)
            .map(|i| SimRelay::new(i, START - HOUR, &mut rng))
            .collect::<Result<Vec<_>, _>>()?;
        let mut net = SimNetwork {
            relays,
            next_serial: n as u64,
            rng,
        };
        for r in &mut net.relays {
            r.joined = START - 2 * HOUR;
        }
        Ok(net)
    }

    /// One hour of churn before the period starting at `now` (hour `h`).
    fn churn(&mut self, h: u64, now: u64) -> Result<(), String> {
        let n = self.relays.len() as u64;
        let rng = &mut self.rng;
        if h > 0 {
            // 1 % leave, as many join.
            let leave = (n / 100).max(1);
            for _ in 0..leave {
                let i = rng.below(self.relays.len() as u64) as usize;
                if i < self.relays.len() {
                    self.relays.swap_remove(i);
                }
            }
            for _ in 0..leave {
                let r = SimRelay::new(self.next_serial, now - HOUR / 2, rng)?;
                self.next_serial += 1;
                self.relays.push(r);
            }
            for r in &mut self.relays {
                if rng.chance(1, 168) {
                    r.rotate_onion_key(now - HOUR / 2)?;
                } else if r.descriptor.published + 18 * HOUR < now {
                    r.resign(now - rng.below(HOUR))?;
                }
                if rng.chance(2, 100) {
                    let flag = match rng.below(3) {
                        0 => RelayFlags::STABLE,
                        1 => RelayFlags::GUARD,
                        _ => RelayFlags::FAST,
                    };
                    let has = r.flags.contains(flag);
                    r.flags.set(flag, !has);
                }
            }
        }
        for r in &mut self.relays {
            for a in 0..AUTHORITIES as usize {
                r.remeasure(a, h, now, rng);
            }
        }
        Ok(())
    }

    /// Authority `a`'s vote body for the period starting at `va`.
    fn vote(&self, a: usize, va: u64) -> VoteBody {
        VoteBody {
            authority: authority_key(a as u64).public(),
            valid_after: va,
            fresh_until: va + HOUR,
            valid_until: va + 3 * HOUR,
            entries: self
                .relays
                .iter()
                .map(|r| VoteEntry {
                    descriptor: r.signed.clone(),
                    flags: r.flags,
                    measured: r.measured.get(a).copied().flatten(),
                    uptime: va.saturating_sub(r.joined),
                })
                .collect(),
        }
    }
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

/// The authority side: simulates the periods, writes `consensus-K` and `diff-K` (the
/// compressed diff from period K−1) into `dir`, prints `key=value` lines.
fn authority_child(args: &DirChildArgs) -> Result<(), String> {
    let mut net = SimNetwork::new(args.relays)?;
    let mut stores: Vec<ConsensusStore> = (0..AUTHORITIES).map(|_| Default::default()).collect();
    let mut cpu = 0.0;
    let mut prev_digest = None;
    let (mut diff_bytes, mut diff_z) = (0usize, 0usize);
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
            diff_bytes += decompress(&d.body, MAX_CONSENSUS_LEN)
                .map_err(|e| e.to_string())?
                .len();
            write(&args.dir.join(format!("diff-{k}")), &d.body)?;
        }
        prev_digest = Some(body_digest(signed.body()));
    }
    let p = args.periods.max(1);
    println!("consensus_bytes={full}");
    println!("consensus_compressed_bytes={full_z}");
    println!("diff_bytes={}", diff_bytes / p);
    println!("diff_compressed_bytes={}", diff_z / p);
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
    // The fastest of 7 runs: wall time, so the least disturbed by other load. Timed:
    // parsing and verifying the consensus, parsing every microdescriptor (and hashing it
    // for its digest), and assembling the view paths are chosen from.
    for _ in 0..7 {
        let t = Instant::now();
        let c = UncheckedConsensus::parse(&first)
            .and_then(|u| u.verify(&trusted, START + 60))
            .map_err(|e| e.to_string())?;
        let index = MicrodescIndex::from_file_bytes(&first_mds).map_err(|e| e.to_string())?;
        let assembled = c.clone().assemble_from(&index);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        if assembled.missing_microdescs() > 0 {
            return Err("microdescriptors missing from the first period".into());
        }
        current = Some(c);
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
    }
    Ok(())
}
