//! One circuit build through chosen hops, shared by exit circuits and circuits whose last
//! hop the caller chose: CREATE at the guard, EXTEND hop by hop, the padding machines
//! started, all within the build timeout; the outcome counted for the guard.

use tokio::time::Instant;
use tracing::debug;

use crate::crypto::IdentityPublic;
use crate::proto::{ClientCircuit, RelayTarget};

use super::super::error::ClientError;
use super::super::purpose::{start_padding, CircPurpose};
use super::CircMgr;

/// A failed build, and whose failure it was.
pub(super) struct BuildFailure {
    pub(super) error: ClientError,
    /// The relay past the guard being extended to (or the padding hop, whose opening
    /// answer did not come) when the build failed; `None`: the guard's own failure,
    /// already counted against it.
    pub(super) past_guard: Option<IdentityPublic>,
}

impl CircMgr {
    /// Builds a circuit through `hops` (the guard first) with the padding machines of
    /// `purpose`. A success counts for the guard; a failure counts against it only if the
    /// guard itself failed: a later hop's failure is not the guard's, and counting it
    /// would let any later hop push the client off its guard.
    pub(super) async fn build_through(
        &self,
        hops: &[RelayTarget],
        purpose: CircPurpose,
        now: u64,
    ) -> Result<ClientCircuit, BuildFailure> {
        let first = hops.first().ok_or(BuildFailure {
            error: ClientError::Circuit("empty path".into()),
            past_guard: None,
        })?;
        let timeout = self.params.circuit_timeout;
        // The relay being extended to, while an extension is under way.
        let mut extending: Option<IdentityPublic> = None;
        let t0 = Instant::now();
        let build = async {
            let chan = self.channels.channel_to(first).await?;
            debug!(us = t0.elapsed().as_micros() as u64, "build: channel");
            let mut circ =
                ClientCircuit::create_with(&chan, first, timeout, self.params.congestion_control)
                    .await
                    .map_err(|e| ClientError::Circuit(e.to_string()))?;
            debug!(us = t0.elapsed().as_micros() as u64, "build: created");
            let padding = self.ask_padding(&mut circ, hops.len(), purpose);
            for hop in hops.iter().skip(1) {
                extending = Some(hop.identity);
                circ.extend(hop, timeout)
                    .await
                    .map_err(|e| ClientError::Circuit(e.to_string()))?;
                debug!(us = t0.elapsed().as_micros() as u64, "build: extended");
            }
            // A padding failure is the padding hop's, not the last one's.
            extending = hops.get(1).map(|h| h.identity);
            start_padding(&mut circ, padding, t0, timeout).await?;
            Ok::<_, ClientError>(circ)
        };
        let result = tokio::time::timeout(timeout, build)
            .await
            .map_err(|_| ClientError::Circuit("circuit build timed out".into()))
            .and_then(|r| r);
        let mut guards = self.guards.lock();
        match result {
            Ok(circ) => {
                guards.mark_success(first.identity);
                self.guards.save(&guards);
                Ok(circ)
            }
            Err(error) => {
                if extending.is_none() {
                    guards.mark_failed(first.identity, now);
                }
                Err(BuildFailure {
                    error,
                    past_guard: extending,
                })
            }
        }
    }
}
