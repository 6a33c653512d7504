//! The client's side of circuit padding (docs/protocol.md §3.6): the machine asked of the
//! second hop in its handshake, and the client's own machine, started once the circuit is
//! built, sending DROP cells to that hop.

use crate::cell::circuit_ext::PaddingStatus;
use crate::cell::padding_machine::PaddingMachine;
use crate::cell::{RelayCell, RelayCmd, RelayMessage, RelayMsg};
use crate::proto::error::CircuitError;
use crate::proto::event::ClientCircEvent;
use crate::proto::padding::machines::MachineKind;
use crate::proto::padding::{CircuitPadding, PaddingEvent};

use super::ClientCircuit;

/// The hop padding is negotiated with: the second, so the guard (which sees every cell)
/// never runs the machine and cannot tell its cells from others by recognising them.
pub(crate) const PADDING_HOP: usize = 1;

/// A circuit's padding state on the client.
#[derive(Debug, Default)]
pub(crate) struct PaddingSide {
    /// The machines asked for, the client's and the hop's (set before the circuit
    /// reaches [`PADDING_HOP`]).
    ask: Option<(PaddingMachine, PaddingMachine)>,
    /// Whether the hop accepted its machine.
    granted: bool,
    /// The client's machine, once started.
    running: Option<Box<CircuitPadding>>,
    /// The client's machine ran and ended.
    finished: bool,
}

impl PaddingSide {
    /// The hop machine to put in the handshake of hop `index`, if any.
    pub(super) fn hop_machine_for(&self, index: usize) -> Option<PaddingMachine> {
        self.ask
            .as_ref()
            .filter(|_| index == PADDING_HOP)
            .map(|(_, hop)| hop.clone())
    }

    /// Takes in the hop's answer. A padding answer nobody asked for is a protocol error
    /// (as for congestion control); a refusal leaves the circuit unpadded.
    pub(super) fn on_reply(
        &mut self,
        asked: bool,
        status: Option<PaddingStatus>,
    ) -> Result<(), CircuitError> {
        match (asked, status) {
            (false, Some(_)) => Err(CircuitError::Protocol(
                "padding answered without being asked for",
            )),
            (true, Some(PaddingStatus::Accepted)) => {
                self.granted = true;
                Ok(())
            }
            (true, other) => {
                tracing::debug!("client: padding hop did not run our machine: {other:?}");
                Ok(())
            }
            (false, None) => Ok(()),
        }
    }

    /// Tells the running machine about a cell this side sent.
    pub(super) fn on_event(&mut self, event: PaddingEvent) {
        if let Some(p) = self.running.as_mut() {
            p.on_event(event);
            if p.ended() {
                self.running = None;
                self.finished = true;
            }
        }
    }

    /// Tells the running machine about a cell received from `hop`.
    pub(super) fn on_received(&mut self, hop: usize, cmd: RelayCmd) {
        let event = if hop == PADDING_HOP && cmd == RelayCmd::Drop {
            PaddingEvent::PaddingReceived
        } else {
            PaddingEvent::Received
        };
        self.on_event(event);
    }
}

impl<M: RelayMessage> ClientCircuit<M> {
    /// Asks the second hop (when the circuit reaches it) to run `kind`'s hop machine, and
    /// runs its client machine once built. Call before the circuit reaches that hop.
    pub fn ask_padding(&mut self, kind: MachineKind) {
        self.ask_padding_machines(kind.client_machine(), kind.hop_machine());
    }

    /// [`Self::ask_padding`] with any pair of machines: `client` runs here, `hop` is asked
    /// of the second hop (which may refuse it as over its budget).
    pub fn ask_padding_machines(&mut self, client: PaddingMachine, hop: PaddingMachine) {
        if self.hops.len() <= PADDING_HOP {
            self.pad.ask = Some((client, hop));
        }
    }

    /// Whether the second hop agreed to pad.
    pub fn padding_granted(&self) -> bool {
        self.pad.granted
    }

    /// Starts the client's machine once the circuit is built (if the hop agreed), sending
    /// what is due at once.
    pub async fn start_padding(&mut self) -> Result<(), CircuitError> {
        let Some((machine, _)) = self.pad.ask.as_ref().filter(|_| self.pad.granted) else {
            return Ok(());
        };
        // Only on a built circuit (a DROP before the last EXTEND would spend its
        // RELAY_EARLY budget), and once.
        if self.pad.running.is_some() || self.pad.finished || self.hops.len() <= PADDING_HOP {
            return Ok(());
        }
        self.pad.running = Some(Box::new(CircuitPadding::start(
            machine.clone(),
            self.self_tx.clone(),
            || ClientCircEvent::PaddingDue,
        )));
        self.send_due_padding().await
    }

    /// Waits (at most `timeout`) for the `n` DROP cells the second hop answers the
    /// opening with ([`MachineKind::opening_answer`]), if it agreed to pad. A hop that
    /// stays silent costs the wait, never the circuit (a later DROP is just dropped);
    /// any other message arriving first fails the circuit.
    pub async fn await_padding_answer(
        &mut self,
        n: usize,
        timeout: std::time::Duration,
    ) -> Result<(), CircuitError> {
        if !self.pad.granted {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + timeout;
        for _ in 0..n {
            let (hop, cell, _) = match tokio::time::timeout_at(deadline, self.recv()).await {
                Ok(r) => r?,
                Err(_) => {
                    tracing::debug!("client: the padding hop did not answer the opening");
                    return Ok(());
                }
            };
            if hop != PADDING_HOP || cell.msg().cmd() != RelayCmd::Drop {
                return Err(self
                    .fail(CircuitError::Protocol("expected the padding hop's answer"))
                    .await);
            }
        }
        Ok(())
    }

    /// Whether the client's machine has finished (or never ran).
    pub fn padding_done(&self) -> bool {
        self.pad.running.as_ref().is_none_or(|p| p.ended())
    }

    /// Whether the client's machine ran to its end.
    pub fn padding_finished(&self) -> bool {
        self.pad.finished || self.pad.running.as_ref().is_some_and(|p| p.ended())
    }

    /// Sends the DROP cells the client's machine has due.
    pub(crate) async fn send_due_padding(&mut self) -> Result<(), CircuitError> {
        loop {
            let Some(p) = self.pad.running.as_mut() else {
                return Ok(());
            };
            if !p.take_due() {
                if p.ended() {
                    self.pad.running = None;
                    self.pad.finished = true;
                }
                return Ok(());
            }
            if self.hops.len() <= PADDING_HOP {
                return Ok(());
            }
            self.send(PADDING_HOP, RelayCell::new(None, RelayMsg::Drop)?)
                .await?;
        }
    }
}
