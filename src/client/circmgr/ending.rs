//! Circuits whose last hop the caller chose (onion services' directories, introduction
//! and rendezvous points), with their second hop from the vanguard set (§8.10).

use tokio::time::Instant;

use crate::dir::vanguards::select_vanguard_prefix;
use crate::proto::{ClientCircuit, RelayTarget};
use crate::sync::lock;

use super::super::error::ClientError;
use super::super::purpose::{start_padding, CircPurpose};
use super::{relay_target, CircMgr};

impl CircMgr {
    /// The vanguards (docs/protocol.md §8.10) in use now, and how many were replaced.
    pub fn vanguards(&self) -> (Vec<crate::dir::vanguards::Vanguard>, u64) {
        let v = lock(&self.vanguards);
        (v.members().to_vec(), v.replaced())
    }

    /// Builds a circuit (of the configured length) whose last hop is `last`, a relay the
    /// caller chose: an onion service's introduction point, rendezvous point or descriptor
    /// directory. The other hops come from the consensus and never conflict with `last`
    /// when it is listed. The circuit is returned unstarted so the caller can exchange
    /// onion-service messages on it first.
    pub async fn build_circuit_ending(
        &self,
        last: &RelayTarget,
        purpose: CircPurpose,
    ) -> Result<ClientCircuit, ClientError> {
        let consensus = self.dir.live_consensus()?;
        let now = self.dir.clock().now_unix();
        let mut hops = {
            let mut guards = self.guards.lock();
            let (last_entry, rng) = (consensus.relay(last.identity), &mut rand::rng());
            let len = self.params.path_len;
            let prefix = if self.params.vanguards && len >= 3 {
                let mut vanguards = lock(&self.vanguards);
                select_vanguard_prefix(
                    &consensus,
                    last_entry,
                    &mut guards,
                    &mut vanguards,
                    len,
                    now,
                    rng,
                )
            } else {
                crate::dir::path::select_path_prefix(
                    &consensus,
                    last_entry,
                    &mut guards,
                    len,
                    now,
                    rng,
                )
            }
            .map_err(|e| ClientError::Circuit(e.to_string()))?;
            prefix
                .iter()
                .map(|e| relay_target(e, now))
                .collect::<Result<Vec<_>, _>>()?
        };
        hops.push(last.clone());
        let timeout = self.params.circuit_timeout;
        let first = hops
            .first()
            .ok_or_else(|| ClientError::Circuit("empty path".into()))?;
        let mut extended_past_guard = false;
        let t0 = Instant::now();
        let build = async {
            let chan = self.channels.channel_to(first).await?;
            let mut circ =
                ClientCircuit::create_with(&chan, first, timeout, self.params.congestion_control)
                    .await
                    .map_err(|e| ClientError::Circuit(e.to_string()))?;
            let padding = self.ask_padding(&mut circ, hops.len(), purpose);
            for hop in hops.iter().skip(1) {
                extended_past_guard = true;
                circ.extend(hop, timeout)
                    .await
                    .map_err(|e| ClientError::Circuit(e.to_string()))?;
            }
            start_padding(&mut circ, padding, t0, timeout).await?;
            Ok::<_, ClientError>(circ)
        };
        let result = tokio::time::timeout(timeout, build)
            .await
            .map_err(|_| ClientError::Circuit("circuit build timed out".into()))
            .and_then(|r| r);
        let mut guards = self.guards.lock();
        match &result {
            Ok(circ) => {
                guards.mark_success(first.identity);
                self.guards.save(&guards);
                self.observe(circ, purpose, &hops);
            }
            // As in `build_circuit_avoiding`: a later hop's failure is not the guard's.
            Err(_) if !extended_past_guard => guards.mark_failed(first.identity, now),
            Err(_) => {}
        }
        result
    }
}
