//! The client's guard set: a persistent, slowly changing sample of Guard relays, used as
//! first hops so that a client exposes itself to few relays over time.
//!
//! * The sample holds up to [`GuardParams::sample_size`] (20) relays, added in order,
//!   each chosen bandwidth-weighted for the guard position among Guard relays.
//! * The *primary* guards are the first [`GuardParams::primary`] (3) sampled guards that
//!   are currently listed in the consensus as Running, Valid and Guard. Paths use the first
//!   primary guard that is not in failure back-off and does not conflict with the exit.
//! * A guard is dropped from the sample only when it fails
//!   [`GuardParams::max_failures`] times in a row, has been unlisted for
//!   [`GuardParams::unlisted_grace`] seconds, or was sampled more than
//!   [`GuardParams::lifetime`] seconds ago (rotation, as Tor's guard lifetime). New guards
//!   are sampled only while fewer than `primary` sampled guards are listed.
//!
//! [`GuardSet::save`] and [`GuardSet::load`] are the only file I/O in `dir`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::crypto::{IdentityPublic, RelayId};
use crate::dir::consensus::ConsensusEntry;
use crate::dir::flags::RelayFlags;
use crate::dir::selection::{
    conflicts, position_weight, weighted_usable_choice, PathError, USABLE,
};
use crate::dir::verified_consensus::Consensus;
use crate::dir::weights::Position;
use crate::dir::wire;

/// Magic at the start of a guard state file (format version 1).
pub const GUARD_FILE_MAGIC: [u8; 8] = *b"ALLIUMG1";
/// Most guards a state file may hold.
pub const MAX_GUARD_FILE_ENTRIES: usize = 64;
/// Largest guard state file accepted.
pub const MAX_GUARD_FILE_LEN: usize = 16 * 1024;
/// Longest failure back-off, seconds.
const MAX_BACKOFF: u64 = 6 * 60 * 60;

/// Tunables of the guard set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardParams {
    /// Most guards in the sample.
    pub sample_size: usize,
    /// Number of primary guards.
    pub primary: usize,
    /// Consecutive failures after which a guard is dropped.
    pub max_failures: u32,
    /// Back-off after the first failure, seconds; doubles with each further failure.
    pub retry_after: u64,
    /// How long an unlisted guard is kept (it may come back), seconds.
    pub unlisted_grace: u64,
    /// How long a guard is kept at most, seconds.
    pub lifetime: u64,
}

impl Default for GuardParams {
    fn default() -> Self {
        Self {
            sample_size: 20,
            primary: 3,
            max_failures: 3,
            retry_after: 10 * 60,
            unlisted_grace: 7 * 24 * 60 * 60,
            lifetime: 120 * 24 * 60 * 60,
        }
    }
}

/// One sampled guard. Wire form: identity `[32]`, added `u64`, failures `u32`,
/// retry_at `u64`, unlisted_since `Option<u64>` (tag `u8` 0/1, then the value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct GuardEntry {
    #[serde(with = "wire::identity")]
    identity: IdentityPublic,
    added: u64,
    failures: u32,
    retry_at: u64,
    unlisted_since: Option<u64>,
}

/// The state file's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct GuardFile {
    #[serde(with = "wire::fixed")]
    magic: [u8; 8],
    #[serde(deserialize_with = "wire::bounded_vec::<_, GuardEntry, MAX_GUARD_FILE_ENTRIES>")]
    entries: Vec<GuardEntry>,
}

/// Why the guard state file could not be read or written. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum GuardFileError {
    /// An operating-system error.
    #[error("guard state file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Not a regular file.
    #[error("guard state file {} is not a regular file", path.display())]
    NotAFile {
        /// The file.
        path: PathBuf,
    },
    /// Group or other have access.
    #[error("guard state file {} has insecure permissions {mode:o} (chmod 600)", path.display())]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Permission bits.
        mode: u32,
    },
    /// Longer than [`MAX_GUARD_FILE_LEN`].
    #[error("guard state file {} is larger than {MAX_GUARD_FILE_LEN} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// Not a valid encoding.
    #[error("guard state file {}: {source}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The problem.
        #[source]
        source: CodecError,
    },
    /// Wrong magic, or a guard listed twice.
    #[error("guard state file {}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The problem.
        reason: &'static str,
    },
}

/// A client's guard sample and its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardSet {
    entries: Vec<GuardEntry>,
    params: GuardParams,
}

/// Whether a consensus entry can serve as a guard.
fn is_guard(r: &ConsensusEntry) -> bool {
    r.has(USABLE.union(RelayFlags::GUARD))
}

impl GuardSet {
    /// An empty set; guards are sampled on first use.
    pub fn new(params: GuardParams) -> Self {
        Self {
            entries: Vec::new(),
            params,
        }
    }

    /// The sampled guards, in sample order.
    pub fn sampled(&self) -> impl Iterator<Item = &IdentityPublic> {
        self.entries.iter().map(|e| &e.identity)
    }

    /// The current primary guards (first `primary` sampled guards listed in `consensus`).
    pub fn primary<'a>(&self, consensus: &'a Consensus) -> Vec<&'a ConsensusEntry> {
        self.entries
            .iter()
            .filter_map(|e| consensus.relay(e.identity).filter(|r| is_guard(r)))
            .take(self.params.primary)
            .collect()
    }

    /// Updates listing state from `consensus`, drops guards that are gone for good, and
    /// samples new ones while fewer than `primary` sampled guards are listed.
    pub fn update<R: Rng + ?Sized>(&mut self, consensus: &Consensus, now: u64, rng: &mut R) {
        let p = &self.params;
        for e in &mut self.entries {
            if consensus.relay(e.identity).is_some_and(is_guard) {
                e.unlisted_since = None;
            } else if e.unlisted_since.is_none() {
                e.unlisted_since = Some(now);
            }
        }
        self.entries.retain(|e| {
            e.failures < p.max_failures
                && e.unlisted_since
                    .is_none_or(|t| now.saturating_sub(t) < p.unlisted_grace)
                && now.saturating_sub(e.added) < p.lifetime
        });
        let weights = consensus.weights();
        while self
            .entries
            .iter()
            .filter(|e| e.unlisted_since.is_none())
            .count()
            < p.primary
            && self.entries.len() < p.sample_size
        {
            let sampled = &self.entries;
            // Only a relay whose listed identity is a usable key is drawn.
            let Some(identity) = weighted_usable_choice(
                consensus
                    .relays()
                    .iter()
                    .filter(|r| is_guard(r) && !sampled.iter().any(|e| e.identity == r.identity))
                    .map(|r| (r, position_weight(weights, r, Position::Guard))),
                rng,
            )
            .and_then(|new| new.validated_identity().ok()) else {
                break;
            };
            self.entries.push(GuardEntry {
                identity,
                added: now,
                failures: 0,
                retry_at: 0,
                unlisted_since: None,
            });
        }
    }

    /// Updates the set, then returns the guard to use for a path whose other relays
    /// include `avoid`: the first primary guard not in back-off that conflicts with none of
    /// `avoid`; else any other listed sampled guard not in back-off; else (every guard is
    /// backing off, as after a network outage) the first non-conflicting primary anyway.
    pub fn pick<'a, R: Rng + ?Sized>(
        &mut self,
        consensus: &'a Consensus,
        avoid: &[&ConsensusEntry],
        now: u64,
        rng: &mut R,
    ) -> Result<&'a ConsensusEntry, PathError> {
        self.update(consensus, now, rng);
        let listed: Vec<(&GuardEntry, &'a ConsensusEntry)> = self
            .entries
            .iter()
            .filter_map(|e| {
                consensus
                    .relay(e.identity)
                    .filter(|r| is_guard(r))
                    .map(|r| (e, r))
            })
            .collect();
        let ok = |r: &ConsensusEntry| !avoid.iter().any(|a| conflicts(r, a));
        let primary = listed.iter().take(self.params.primary);
        primary
            .clone()
            .chain(listed.iter().skip(self.params.primary))
            .find(|(e, r)| e.retry_at <= now && ok(r))
            .or_else(|| primary.clone().find(|(_, r)| ok(r)))
            .map(|(_, r)| *r)
            .ok_or(PathError::NoGuard)
    }

    /// Records a failed connection or circuit through guard `id`: the guard backs off
    /// (`retry_after · 2^(failures−1)`, at most 6 h) and is dropped after `max_failures`
    /// consecutive failures.
    pub fn mark_failed(&mut self, id: impl Into<RelayId>, now: u64) {
        let id: RelayId = id.into();
        let (retry, max) = (self.params.retry_after, self.params.max_failures);
        if let Some(e) = self.entries.iter_mut().find(|e| e.identity == id) {
            e.failures = e.failures.saturating_add(1);
            let shift = e.failures.saturating_sub(1).min(16);
            e.retry_at = now.saturating_add(retry.saturating_mul(1 << shift).min(MAX_BACKOFF));
        }
        self.entries.retain(|e| e.failures < max);
    }

    /// After the wall clock jumped back: time stamps later than `now` (a guard sampled or
    /// unlisted "in the future", a back-off past the longest one) are pulled back, so a
    /// jump back neither stretches a guard's lifetime nor parks it in back-off for the
    /// length of the jump. A jump forward needs nothing here: listed guards stay (they are
    /// kept by listing, failures and a 120-day lifetime, not by recent use).
    pub fn clamp_times(&mut self, now: u64) {
        let latest_retry = now.saturating_add(MAX_BACKOFF);
        for e in &mut self.entries {
            e.added = e.added.min(now);
            e.retry_at = e.retry_at.min(latest_retry);
            e.unlisted_since = e.unlisted_since.map(|t| t.min(now));
        }
    }

    /// Records a success through guard `id`: clears its failure count and back-off.
    pub fn mark_success(&mut self, id: impl Into<RelayId>) {
        let id: RelayId = id.into();
        if let Some(e) = self.entries.iter_mut().find(|e| e.identity == id) {
            e.failures = 0;
            e.retry_at = 0;
        }
    }

    /// Writes the state to `path` (mode 0600) through a temporary file and an atomic
    /// rename, so a crash leaves either the old or the new state.
    pub fn save(&self, path: &Path) -> Result<(), GuardFileError> {
        let bytes = self.encode_state(path)?;
        write_state(path, &bytes)
    }

    /// The state file's contents for the current state (`path` only names the file in
    /// the error). Encoding is cheap and involves no I/O, so a caller can compare it with
    /// what it last wrote and skip the (fsync-bound) write when nothing changed.
    pub fn encode_state(&self, path: &Path) -> Result<Vec<u8>, GuardFileError> {
        let file = GuardFile {
            magic: GUARD_FILE_MAGIC,
            entries: self.entries.clone(),
        };
        codec::encode(&file).map_err(|source| GuardFileError::Malformed {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Loads the state strictly: a regular file, no group/other permissions, at most
    /// [`MAX_GUARD_FILE_LEN`] bytes, canonical encoding, right magic, no guard twice.
    pub fn load(path: &Path, params: GuardParams) -> Result<Self, GuardFileError> {
        let p = || path.to_path_buf();
        let io_err = |source| GuardFileError::Io { path: p(), source };
        let meta = fs::symlink_metadata(path).map_err(io_err)?;
        if !meta.file_type().is_file() {
            return Err(GuardFileError::NotAFile { path: p() });
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(GuardFileError::InsecurePermissions { path: p(), mode });
        }
        let mut bytes = Vec::new();
        File::open(path)
            .and_then(|f| {
                f.take(MAX_GUARD_FILE_LEN as u64 + 1)
                    .read_to_end(&mut bytes)
            })
            .map_err(io_err)?;
        if bytes.len() > MAX_GUARD_FILE_LEN {
            return Err(GuardFileError::TooLarge { path: p() });
        }
        let file: GuardFile = codec::decode(&bytes, MAX_GUARD_FILE_LEN)
            .map_err(|source| GuardFileError::Malformed { path: p(), source })?;
        if file.magic != GUARD_FILE_MAGIC {
            return Err(GuardFileError::Invalid {
                path: p(),
                reason: "bad magic (not a guard state file)",
            });
        }
        for (i, e) in file.entries.iter().enumerate() {
            if file
                .entries
                .iter()
                .take(i)
                .any(|o| o.identity == e.identity)
            {
                return Err(GuardFileError::Invalid {
                    path: p(),
                    reason: "a guard is listed twice",
                });
            }
        }
        Ok(Self {
            entries: file.entries,
            params,
        })
    }
}

/// Writes state file contents made by [`GuardSet::encode_state`] to `path` (mode 0600)
/// through a temporary file, fsync and an atomic rename, so a crash leaves either the old
/// or the new state. Blocking (two fsyncs): async callers run it off the runtime.
pub fn write_state(path: &Path, bytes: &[u8]) -> Result<(), GuardFileError> {
    let io_err = |source| GuardFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err)?;
    f.write_all(bytes).map_err(io_err)?;
    f.sync_all().map_err(io_err)?;
    drop(f);
    fs::rename(&tmp, path).map_err(io_err)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err)?;
    }
    Ok(())
}
