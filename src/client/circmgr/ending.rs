//! Circuits whose last hop the caller chose (onion services' directories, introduction
//! and rendezvous points), with their second hop from the vanguard set (§8.10).

use crate::dir::vanguards::select_vanguard_prefix;
use crate::proto::{ClientCircuit, RelayTarget};
use crate::sync::lock;

use super::super::error::ClientError;
use super::super::purpose::CircPurpose;
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
        let circ = self
            .build_through(&hops, purpose, now)
            .await
            .map_err(|f| f.error)?;
        self.observe(&circ, purpose, &hops);
        Ok(circ)
    }
}
