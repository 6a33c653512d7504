//! The authority's bandwidth scanner (`docs/protocol.md` §6.15.1): it measures each relay's
//! capacity through a two-hop circuit [target relay, this authority], downloading filler
//! from its own directory service (GET_MEASUREMENT), in rounds over every relay.
//!
//! The helper hop is the authority itself, so no third relay can skew or frame a
//! measurement, and every measured byte crosses the target's links twice (in from the
//! authority's relay, out to the authority's client end).
//!
//! Load bound: one measurement of one relay downloads `initial_bytes`, then doubles while a
//! download takes less than `min_duration` and the next size is at most `max_bytes`; the
//! sizes form a doubling series whose sum is below twice its last term, so **at most
//! `2 · max_bytes` (32 MiB with the defaults) go through one relay per authority per
//! round**. The token a measurement runs under is refused beyond that budget.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::seq::SliceRandom;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::crypto::IdentityPublic;
use crate::dir::request::{
    parse_header, DirRequest, DirStatus, DIR_HEADER_LEN, MAX_MEASUREMENT_CHUNK,
};
use crate::link::LinkConfig;
use crate::proto::{CircuitHandle, ClientChannel, ClientCircuit, DataStream, RelayTarget};

use super::measure_tokens::{MeasureTokens, TOKEN_LIFETIME_SECS};
use crate::relay::shared::RelayShared;

/// A round with nothing to measure waits this long before looking again.
const EMPTY_ROUND_PAUSE: Duration = Duration::from_secs(10);
/// GET_MEASUREMENT requests of one download outstanding at once.
const CHUNKS_IN_FLIGHT: usize = 2;
/// Most bytes of a refusal's reason read (the rest is not needed for a log line).
const MAX_REASON: u64 = 256;

/// How the scanner runs.
#[derive(Debug, Clone)]
pub(crate) struct MeasureConfig {
    /// Size of the first download of a measurement.
    pub initial_bytes: u64,
    /// Largest download; a relay fast enough to move it in under `min_duration` is
    /// measured on this size.
    pub max_bytes: u64,
    /// A download at least this long gives the figure (shorter ones are mostly latency).
    pub min_duration: Duration,
    /// Measurements in progress at once.
    pub parallel: usize,
    /// Each step of building the circuit (link handshake, CREATE, EXTEND, stream open).
    pub step_timeout: Duration,
    /// The whole transfer phase of one measurement (at most the token's 60 s lifetime).
    pub transfer_timeout: Duration,
    /// Pause after each round.
    pub round_pause: Duration,
    /// A round lasts at least this long (a round of relays that all fail at once must not
    /// spin).
    pub min_round: Duration,
}

impl Default for MeasureConfig {
    /// Public-network values (`docs/protocol.md` §6.15.1 gives the round time they imply).
    fn default() -> Self {
        MeasureConfig {
            initial_bytes: 64 * 1024,
            max_bytes: 16 * 1024 * 1024,
            min_duration: Duration::from_secs(5),
            parallel: 12,
            step_timeout: Duration::from_secs(15),
            transfer_timeout: Duration::from_secs(45),
            round_pause: Duration::ZERO,
            // At most one measurement per relay per hour, however small the network.
            min_round: Duration::from_secs(3600),
        }
    }
}

impl MeasureConfig {
    /// Small sizes and about one-second downloads, for local test networks.
    pub(crate) fn for_test_network() -> Self {
        MeasureConfig {
            initial_bytes: 16 * 1024,
            max_bytes: 1024 * 1024,
            min_duration: Duration::from_secs(1),
            parallel: 4,
            step_timeout: Duration::from_secs(5),
            transfer_timeout: Duration::from_secs(20),
            round_pause: Duration::ZERO,
            min_round: Duration::from_secs(1),
        }
    }

    /// Bytes one measurement may download: the bound of the doubling series.
    pub(crate) fn budget(&self) -> u64 {
        self.max_bytes.saturating_mul(2)
    }
}

/// What one measurement found (fed to the relay's reputation and weight).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProbeOutcome {
    /// `bytes_per_second` of the last download, which was `bytes` long.
    Measured { bytes_per_second: u64, bytes: u64 },
    /// The target did not create/extend (it refused, timed out, or the circuit broke).
    CircuitFailed(String),
    /// The circuit was built but the transfer stalled, was cut or returned the wrong length.
    TransferFailed(String),
}

/// A measurement that could not be made for a reason of our own (nothing to hold against
/// the target).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ScanError {
    /// Our onion-key certificate does not verify now (the target could not extend to us).
    #[error("our onion-key certificate: {0}")]
    OwnKey(String),
    /// The token table is full.
    #[error("{0}")]
    Tokens(#[from] super::measure_tokens::IssueError),
}

/// The size of the next download after one of `last` bytes took `took`, or `None` when
/// that one gives the figure: it took at least `min_duration`, or doubling would pass
/// `max_bytes` (never clamped, so the series stays within `2 · max_bytes`).
pub(crate) fn next_size(last: u64, took: Duration, cfg: &MeasureConfig) -> Option<u64> {
    if took >= cfg.min_duration {
        return None;
    }
    last.checked_mul(2).filter(|&next| next <= cfg.max_bytes)
}

/// `bytes` over `took`, in bytes per second (a zero duration counts as one millisecond).
pub(crate) fn rate(bytes: u64, took: Duration) -> u64 {
    let nanos = took.as_nanos().max(1_000_000);
    u64::try_from(u128::from(bytes) * 1_000_000_000 / nanos).unwrap_or(u64::MAX)
}

/// The scanner of one authority.
#[derive(Debug)]
pub(crate) struct Scanner {
    shared: Arc<RelayShared>,
    tokens: Arc<MeasureTokens>,
    /// Where target relays reach this authority (its advertised link address).
    own_addr: SocketAddr,
    cfg: MeasureConfig,
}

impl Scanner {
    /// A scanner for the authority running on `shared`, serving GET_MEASUREMENT from
    /// `tokens` (its `Authority::measure_tokens`) and reachable at `own_addr`.
    pub(crate) fn new(
        shared: Arc<RelayShared>,
        tokens: Arc<MeasureTokens>,
        own_addr: SocketAddr,
        cfg: MeasureConfig,
    ) -> Self {
        Scanner {
            shared,
            tokens,
            own_addr,
            cfg,
        }
    }

    /// This authority as the circuit's second hop.
    fn own_target(&self) -> Result<RelayTarget, ScanError> {
        let now = self.shared.clock.now_unix();
        let onion = self
            .shared
            .keys
            .onion_cert()
            .clone()
            .verify(now)
            .map_err(|e| ScanError::OwnKey(e.to_string()))?;
        Ok(RelayTarget {
            addr: self.own_addr,
            identity: self.shared.keys.identity(),
            onion,
        })
    }

    /// Measures `target` once: circuit [target, us], then downloads of growing size.
    pub(crate) async fn measure(&self, target: &RelayTarget) -> Result<ProbeOutcome, ScanError> {
        let own = self.own_target()?;
        let step = self.cfg.step_timeout;
        let link = LinkConfig {
            handshake_timeout: step,
            clock: self.shared.clock.clone(),
            ..LinkConfig::default()
        };
        let chan = match ClientChannel::connect(target, &link).await {
            Ok(c) => c,
            Err(e) => return Ok(ProbeOutcome::CircuitFailed(format!("cannot connect: {e}"))),
        };
        let outcome = match ClientCircuit::create(&chan, target, step).await {
            Err(e) => Ok(ProbeOutcome::CircuitFailed(format!("create: {e}"))),
            Ok(mut circ) => match circ.extend(&own, step).await {
                Err(e) => {
                    circ.destroy().await;
                    Ok(ProbeOutcome::CircuitFailed(format!(
                        "extend to the authority: {e}"
                    )))
                }
                Ok(()) => {
                    let handle = circ.into_handle();
                    let outcome = self.transfer(&handle).await;
                    handle.close().await;
                    outcome
                }
            },
        };
        chan.sender.close();
        outcome
    }

    /// The transfer phase on a built circuit, under a token issued for it (after the
    /// circuit is built, so its whole 60 s lifetime is the transfer's).
    async fn transfer(&self, circ: &CircuitHandle) -> Result<ProbeOutcome, ScanError> {
        let token = self.tokens.issue(self.cfg.budget())?;
        let limit = self
            .cfg
            .transfer_timeout
            .min(Duration::from_secs(TOKEN_LIFETIME_SECS));
        let found = tokio::time::timeout(limit, self.adaptive_transfer(circ, token)).await;
        self.tokens.revoke(&token);
        Ok(match found {
            Ok(Ok((bytes, took))) => ProbeOutcome::Measured {
                bytes_per_second: rate(bytes, took),
                bytes,
            },
            Ok(Err(why)) => ProbeOutcome::TransferFailed(why),
            Err(_) => ProbeOutcome::TransferFailed("transfer timed out".into()),
        })
    }

    /// Downloads of doubling size until one gives the figure; returns its size and time.
    async fn adaptive_transfer(
        &self,
        circ: &CircuitHandle,
        token: [u8; 16],
    ) -> Result<(u64, Duration), String> {
        let mut size = self.cfg.initial_bytes.clamp(1, self.cfg.max_bytes.max(1));
        loop {
            let start = self.shared.clock.instant();
            self.download(circ, token, size).await?;
            let took = start.elapsed();
            match next_size(size, took, &self.cfg) {
                Some(next) => size = next,
                None => return Ok((size, took)),
            }
        }
    }

    /// `size` bytes from our own directory service, in requests of at most 1 MiB (one
    /// BEGIN_DIR stream each) on the measurement circuit, two at a time so the round trip
    /// of each request is hidden behind the previous body.
    async fn download(
        &self,
        circ: &CircuitHandle,
        token: [u8; 16],
        size: u64,
    ) -> Result<(), String> {
        let mut left = size;
        let mut running = JoinSet::new();
        loop {
            while left > 0 && running.len() < CHUNKS_IN_FLIGHT {
                let len = u32::try_from(left.min(u64::from(MAX_MEASUREMENT_CHUNK)))
                    .unwrap_or(MAX_MEASUREMENT_CHUNK);
                let stream = circ
                    .open_dir_stream(self.cfg.step_timeout)
                    .await
                    .map_err(|e| format!("cannot open a directory stream: {e}"))?;
                running.spawn(fetch_chunk(stream, token, len));
                left -= u64::from(len);
            }
            // Dropping `running` on an error or a timeout aborts the other request.
            match running.join_next().await {
                Some(done) => done.map_err(|e| format!("download task failed: {e}"))??,
                None => return Ok(()),
            }
        }
    }

    /// Measures every target once per round, in a fresh random order, at most `parallel`
    /// at once, and hands each outcome to `record` (our own identity is skipped; failures
    /// of our own making are logged, not recorded). Runs until the task is dropped.
    pub(crate) async fn run_rounds(
        self: Arc<Self>,
        targets: impl Fn() -> Vec<(IdentityPublic, RelayTarget)>,
        record: impl Fn(IdentityPublic, ProbeOutcome),
    ) {
        loop {
            let started = self.shared.clock.instant();
            let measured = Arc::clone(&self).run_round(targets(), &record).await;
            let mut pause = self
                .cfg
                .round_pause
                .max(self.cfg.min_round.saturating_sub(started.elapsed()));
            if measured == 0 {
                pause = pause.max(EMPTY_ROUND_PAUSE);
            }
            self.shared.clock.sleep(pause).await;
        }
    }

    /// One round over `list`; returns how many outcomes were recorded.
    async fn run_round(
        self: Arc<Self>,
        mut list: Vec<(IdentityPublic, RelayTarget)>,
        record: &impl Fn(IdentityPublic, ProbeOutcome),
    ) -> usize {
        let me = self.shared.keys.identity();
        list.retain(|(id, _)| *id != me);
        // A relay cannot predict when it is measured.
        list.shuffle(&mut rand::rng());
        let total = list.len();
        let mut queue = list.into_iter();
        let mut running = JoinSet::new();
        let mut recorded = 0;
        let mut measured = 0usize;
        // Failures are held to the end of the round (see `failures_count`).
        let mut failures: Vec<(IdentityPublic, ProbeOutcome)> = Vec::new();
        loop {
            while running.len() < self.cfg.parallel.max(1) {
                let Some((id, target)) = queue.next() else {
                    break;
                };
                let scanner = Arc::clone(&self);
                running.spawn(async move { (id, scanner.measure(&target).await) });
            }
            match running.join_next().await {
                Some(Ok((id, Ok(outcome)))) => {
                    debug!(?outcome, "authority: bandwidth measurement");
                    if matches!(outcome, ProbeOutcome::Measured { .. }) {
                        record(id, outcome);
                        recorded += 1;
                        measured += 1;
                    } else {
                        failures.push((id, outcome));
                    }
                }
                Some(Ok((_, Err(e)))) => info!("authority: a bandwidth measurement not made: {e}"),
                Some(Err(e)) => info!("authority: a bandwidth measurement task failed: {e}"),
                None => break,
            }
        }
        if failures_count(measured, failures.len()) {
            recorded += failures.len();
            for (id, outcome) in failures {
                record(id, outcome);
            }
        } else {
            warn!(
                failed = failures.len(),
                measured,
                "authority: most bandwidth probes failed this round: not counted against the relays"
            );
        }
        debug!(total, recorded, "authority: bandwidth round done");
        recorded
    }
}

/// Whether a round's failed probes count against the relays. Every probe also runs through
/// this authority (the circuit's second hop): when most of a round's probes fail at once,
/// the fault is most likely ours (overloaded, a clock jump that expired the tokens), so
/// none of them counts.
pub(crate) fn failures_count(measured: usize, failed: usize) -> bool {
    failed <= 1 || failed * 2 <= measured + failed
}

/// One GET_MEASUREMENT of `len` bytes on `stream`: the body is read and dropped in small
/// pieces (nothing of the peer's size is allocated) and must be exactly `len` long.
async fn fetch_chunk(mut stream: DataStream, token: [u8; 16], len: u32) -> Result<(), String> {
    let req = DirRequest::GetMeasurement { token, len };
    stream
        .write_all(&req.encode())
        .await
        .map_err(|e| format!("request not sent: {e}"))?;
    stream
        .flush()
        .await
        .map_err(|e| format!("request not sent: {e}"))?;
    let mut header = [0u8; DIR_HEADER_LEN];
    stream
        .read_exact(&mut header)
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    let (status, body_len) = parse_header(&header).map_err(|e| format!("bad answer: {e}"))?;
    if status != DirStatus::Ok as u8 {
        let mut reason = Vec::new();
        let _ = (&mut stream)
            .take(MAX_REASON)
            .read_to_end(&mut reason)
            .await;
        let reason = crate::dir::request::DirResponse {
            status: DirStatus::Refused,
            body: reason,
        }
        .reason();
        return Err(format!("the authority answered {status}: {reason}"));
    }
    if u64::try_from(body_len).ok() != Some(u64::from(len)) {
        return Err(format!("{body_len} bytes announced, {len} asked for"));
    }
    let mut left = u64::from(len);
    let mut buf = [0u8; 16 * 1024];
    while left > 0 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("transfer cut: {e}"))?;
        if n == 0 {
            return Err(format!("transfer cut with {left} bytes missing"));
        }
        left = left.saturating_sub(n as u64);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
