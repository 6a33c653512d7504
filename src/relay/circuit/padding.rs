//! This hop's side of circuit padding (docs/protocol.md §3.6): the machine a client asked
//! for in its handshake, fed with the circuit's events, sending DROP cells towards the
//! client when it says so and the relay-wide padding rate allows; past the rate its cells
//! wait (a count, at most the machine's cap), they are never dropped: a machine cut short
//! would leave its circuit with a shape of its own.

use crate::cell::consts::{RELAY_BODY_LEN, RELAY_TAG_LEN};
use crate::cell::{DestroyReason, RelayCell, RelayCmd, RelayMsg};
use crate::crypto::Recognition;
use crate::proto::padding::PaddingEvent;

use super::super::shared::RelayCounters;

/// How soon a cell held back by the relay-wide padding rate is retried.
const PADDING_RETRY: std::time::Duration = std::time::Duration::from_millis(10);
use super::send::Teardown;
use super::Circuit;

impl Circuit {
    /// Tells the machine (if any) about a cell.
    pub(super) fn padding_event(&mut self, event: PaddingEvent) {
        if let Some(p) = self.padding.as_mut() {
            p.on_event(event);
            if p.finished() {
                // Frees the machine and ends its timer task.
                self.padding = None;
            }
        }
    }

    /// A backward cell relayed on the fast path (not through [`Self::send_backward`]).
    pub(super) fn padding_event_sent(&mut self) {
        self.padding_event(PaddingEvent::Sent);
    }

    /// A forward cell after this hop's layer came off: DROP addressed to us is the
    /// client's padding, anything else (ours or passing through) is traffic.
    pub(super) fn padding_forward(
        &mut self,
        recognition: &Recognition,
        body: &[u8; RELAY_BODY_LEN],
    ) {
        if self.padding.is_none() {
            return;
        }
        let drop = matches!(recognition, Recognition::Recognised { .. })
            && body.get(RELAY_TAG_LEN) == Some(&RelayCmd::Drop.code());
        self.padding_event(if drop {
            PaddingEvent::PaddingReceived
        } else {
            PaddingEvent::Received
        });
    }

    /// The machine's timer fired: send what is due, as far as the relay-wide rate allows
    /// (the rest is retried shortly).
    pub(super) async fn on_padding_due(&mut self) -> Result<(), Teardown> {
        loop {
            let Some(p) = self.padding.as_mut() else {
                return Ok(());
            };
            p.collect_due();
            if !p.take_owed() {
                if p.finished() {
                    self.padding = None;
                }
                return Ok(());
            }
            if !self.shared.padding.try_take() {
                // Give it back and wait for the bucket to refill.
                p.owe_again();
                p.retry_at(tokio::time::Instant::now() + PADDING_RETRY);
                return Ok(());
            }
            let body: [u8; RELAY_BODY_LEN] = RelayCell::new(None, RelayMsg::Drop)
                .and_then(|c| c.encode())
                .map_err(|_| Teardown::new(DestroyReason::Internal))?;
            self.relayed();
            self.send_backward_raw(body, true).await?;
            RelayCounters::bump(&self.shared.counters.padding_cells_sent);
        }
    }
}
