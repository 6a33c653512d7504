//! What a client circuit is for, and an optional observer told of each circuit built.
//!
//! The purpose picks the circuit's padding machines (docs/protocol.md §3.6): circuits
//! whose cell pattern would otherwise tell a watcher at the guard what they are for
//! (onion-service introduction and rendezvous) are padded to look like exit circuits.

use std::time::Duration;

use tokio::time::Instant;

use crate::cell::CircId;
use crate::client::ClientError;
use crate::proto::padding::machines::MachineKind;
use crate::proto::ClientCircuit;

/// Why a client built a circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CircPurpose {
    /// Streams and flows leave from its last hop (exit circuits, including directory
    /// requests to a relay's cache).
    Exit,
    /// To an onion-service descriptor directory (upload or fetch).
    HsDir,
    /// A client's circuit to a service's introduction point (INTRODUCE1).
    IntroClient,
    /// A client's circuit to its rendezvous point.
    RendClient,
    /// A service's circuit to one of its introduction points (ESTABLISH_INTRO).
    IntroService,
    /// A service's circuit to a client's rendezvous point (RENDEZVOUS1).
    RendService,
}

impl CircPurpose {
    /// The padding machines this circuit runs with its second hop (docs/protocol.md
    /// §3.6.1): every circuit opens like a client's rendezvous circuit; introduction
    /// circuits add a small fetch's shape.
    pub fn padding(self) -> Option<MachineKind> {
        match self {
            CircPurpose::Exit | CircPurpose::HsDir | CircPurpose::RendService => {
                Some(MachineKind::Prologue)
            }
            CircPurpose::RendClient => None,
            CircPurpose::IntroClient | CircPurpose::IntroService => Some(MachineKind::Introduction),
        }
    }

    /// Whether this is one of the onion-service circuits the padding machines disguise.
    pub const fn is_onion(self) -> bool {
        matches!(
            self,
            CircPurpose::IntroClient
                | CircPurpose::RendClient
                | CircPurpose::IntroService
                | CircPurpose::RendService
        )
    }
}

/// Receives an event per circuit a client builds. Tests and measurements use it for ground
/// truth (which circuit, seen at the guard by its id, was for what); it is never wired to
/// logs. Called on the client's tasks: must be quick and must not block.
pub trait ClientObserver: Send + Sync + std::fmt::Debug {
    /// A circuit was built; `first_hop_id` is its id on the channel to its first hop (the
    /// id the guard knows it by).
    fn circuit_built(&self, first_hop_id: CircId, purpose: CircPurpose) {
        let _ = (first_hop_id, purpose);
    }

    /// The same circuit's relays, first hop first (tests check the vanguards with it).
    fn circuit_path(
        &self,
        first_hop_id: CircId,
        purpose: CircPurpose,
        hops: &[crate::crypto::IdentityPublic],
    ) {
        let _ = (first_hop_id, purpose, hops);
    }
}

/// Starts the client's padding machine on a built circuit (if its hop agreed to pad) and
/// waits for the hop's answer to the opening: at most half of what is left of the build's
/// `timeout` (counted from `started`), so a silent hop costs that wait and never makes the
/// build itself time out.
pub(super) async fn start_padding(
    circ: &mut ClientCircuit,
    kind: Option<MachineKind>,
    started: Instant,
    timeout: Duration,
) -> Result<(), ClientError> {
    let err = |e: crate::proto::CircuitError| ClientError::Circuit(e.to_string());
    circ.start_padding().await.map_err(err)?;
    if let Some(kind) = kind {
        let wait = timeout.saturating_sub(started.elapsed()) / 2;
        circ.await_padding_answer(kind.opening_answer(), wait)
            .await
            .map_err(err)?;
    }
    Ok(())
}
