//! The client's guards (the few first hops it keeps using) and their state on disk.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use tracing::warn;

use crate::dir::{GuardParams, GuardSet};
use crate::sync::lock;

/// The guard set, shared by the directory manager (it asks the primary guards for the
/// consensus) and the circuit manager (first hops, their successes and failures).
pub struct GuardMgr {
    guards: Mutex<GuardSet>,
    /// Where the state is kept (`None`: memory only).
    data_dir: Option<PathBuf>,
    /// The guard state last handed to the writer and its generation: a build whose
    /// success changed nothing (the usual case) writes nothing.
    saved: Mutex<(u64, Vec<u8>)>,
    /// The generation last written to disk; held while writing, so writes never overlap
    /// and an older state never replaces a newer one.
    written: Arc<Mutex<u64>>,
}

impl std::fmt::Debug for GuardMgr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GuardMgr { .. }")
    }
}

impl GuardMgr {
    /// The guard state saved in `data_dir`, or a new one.
    pub fn load(data_dir: Option<PathBuf>) -> Self {
        let guards = data_dir
            .as_ref()
            .and_then(|d| GuardSet::load(&d.join("guards"), GuardParams::default()).ok())
            .unwrap_or_else(|| GuardSet::new(GuardParams::default()));
        GuardMgr {
            guards: Mutex::new(guards),
            data_dir,
            saved: Mutex::new((0, Vec::new())),
            written: Arc::new(Mutex::new(0)),
        }
    }

    /// The guard set, locked.
    pub fn lock(&self) -> MutexGuard<'_, GuardSet> {
        lock(&self.guards)
    }

    /// Persists the guard state if it changed since the last save. The write (two fsyncs,
    /// milliseconds on a busy disk) runs on a blocking thread: done inline it stalled a
    /// runtime worker and, under the guards lock, every other circuit build, on every
    /// successful build (most of the measured fresh-circuit latency).
    pub fn save(&self, guards: &GuardSet) {
        let Some(dir) = &self.data_dir else {
            return;
        };
        let path = dir.join("guards");
        let bytes = match guards.encode_state(&path) {
            Ok(b) => b,
            Err(e) => {
                warn!("cannot save the guard state: {e}");
                return;
            }
        };
        let generation = {
            let mut saved = lock(&self.saved);
            if saved.1 == bytes {
                return;
            }
            saved.0 += 1;
            saved.1.clone_from(&bytes);
            saved.0
        };
        let written = Arc::clone(&self.written);
        tokio::task::spawn_blocking(move || {
            let mut done = lock(&written);
            if *done >= generation {
                return; // a newer state is already on disk
            }
            match crate::dir::guards::write_state(&path, &bytes) {
                Ok(()) => *done = generation,
                Err(e) => warn!("cannot save the guard state: {e}"),
            }
        });
    }
}
