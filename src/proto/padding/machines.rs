//! The machines allium negotiates (docs/protocol.md §3.6.1), as (client side, hop side)
//! pairs run with the circuit's second hop, so the guard sees the padding but never runs it.
//!
//! Every circuit of three hops or more starts with the same shape, whatever it is for.
//! A client's rendezvous circuit naturally begins `out in in` (ESTABLISH_RENDEZVOUS,
//! RENDEZVOUS_ESTABLISHED, RENDEZVOUS2) before its streams, which look like any exit
//! stream (`out in out in…`). So:
//!
//! - **Prologue** (exit, directory, and service rendezvous circuits): the client sends one
//!   DROP as soon as the circuit is built, the hop answers with two: `out in in`.
//! - **Rendezvous** (client): none needed, the real messages are the prologue.
//! - **Introduction** (client's INTRODUCE1 circuit, service's ESTABLISH_INTRO circuit):
//!   after the real `out in`, the hop and the client take turns to add `in` (as
//!   RENDEZVOUS2 would), `out` (BEGIN), `in` (CONNECTED), `out` (a request), then the hop
//!   sends a burst of 2 to 31 cells, the reply of a small fetch with its END, and the
//!   client answers the END with one of its own once the burst has stopped. The client
//!   keeps the circuit open meanwhile instead of closing it after the acknowledgement.
//!
//! The burst size is the profile of the exit traffic being imitated (a small object of
//! 1–30 cells); traffic whose replies are much larger would call for a wider burst.

use crate::cell::padding_machine::{DelayKind, Next, PaddingMachine, PaddingState};

/// Which machines a circuit runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineKind {
    /// Every circuit's common opening: `out in in`.
    Prologue,
    /// An introduction circuit made to look like a prologue and a small fetch.
    Introduction,
}

/// The most padding cells allium's own machines ask a hop for; relays accept at least
/// this much by default.
pub const MAX_ASKED_PADDING: u16 = 40;

impl MachineKind {
    /// DROP cells the hop's machine sends in answer to the client's opening, which the
    /// client waits for before it uses the circuit: otherwise a stream opened at once on a
    /// new exit circuit would show `out out in in`, not the `out in in` of a rendezvous
    /// circuit. Costs a round trip to the second hop on circuits built on demand.
    pub fn opening_answer(self) -> usize {
        match self {
            MachineKind::Prologue => 2,
            MachineKind::Introduction => 0,
        }
    }

    /// The machine the client runs.
    pub fn client_machine(self) -> PaddingMachine {
        match self {
            MachineKind::Prologue => PaddingMachine {
                max_padding: 1,
                states: vec![burst(0, 0, 1, Next::End)],
            },
            MachineKind::Introduction => PaddingMachine {
                max_padding: 3,
                states: vec![
                    // Wait for the hop's first cell (its "RENDEZVOUS2").
                    wait(Next::State(1)),
                    // "BEGIN".
                    burst(1, 20, 1, Next::State(2)),
                    // Wait for "CONNECTED".
                    wait(Next::State(3)),
                    // "DATA": the request.
                    burst(1, 20, 1, Next::State(4)),
                    // Wait for the reply.
                    wait(Next::State(5)),
                    // "END" once the reply has stopped: each reply cell restarts the wait
                    // (the hop's cells are at most 15 ms apart).
                    PaddingState {
                        on_padding: Next::State(5),
                        ..burst(30, 60, 1, Next::End)
                    },
                ],
            },
        }
    }

    /// The machine the client asks the hop to run.
    pub fn hop_machine(self) -> PaddingMachine {
        match self {
            // Declares the same cap as the introduction machine, so a relay whose budget
            // admits one admits both (a budget between them would single out one kind).
            MachineKind::Prologue => PaddingMachine {
                max_padding: MAX_ASKED_PADDING,
                states: vec![wait(Next::State(1)), burst(0, 5, 2, Next::End)],
            },
            MachineKind::Introduction => PaddingMachine {
                max_padding: MAX_ASKED_PADDING,
                states: vec![
                    // Building: EXTENDED to the last hop goes back through us.
                    on_sent(Next::State(1)),
                    // Built: the INTRODUCE1/ESTABLISH_INTRO goes out, its answer comes
                    // back through us (a cell we send towards the client).
                    on_sent(Next::State(2)),
                    // "RENDEZVOUS2" (as soon after the answer as the prologue's second
                    // cell follows its first: 0-5 ms).
                    burst(0, 5, 1, Next::State(3)),
                    // Wait for "BEGIN".
                    wait(Next::State(4)),
                    // "CONNECTED".
                    burst(5, 60, 1, Next::State(5)),
                    // Wait for the request.
                    wait(Next::State(6)),
                    // The reply and its END.
                    PaddingState {
                        delay_kind: DelayKind::LogUniform,
                        delay_min_ms: 1,
                        delay_max_ms: 15,
                        burst_min: 2,
                        burst_max: 31,
                        ..burst(0, 0, 1, Next::End)
                    },
                ],
            },
        }
    }
}

/// A state that sends nothing and moves on when padding arrives.
fn wait(on_padding: Next) -> PaddingState {
    PaddingState {
        delay_kind: DelayKind::Uniform,
        delay_min_ms: 0,
        delay_max_ms: 0,
        burst_min: 0,
        burst_max: 0,
        on_sent: Next::Stay,
        on_received: Next::Stay,
        on_padding,
        on_burst_done: Next::Stay,
    }
}

/// A state that sends nothing and moves on when this side sends a cell.
fn on_sent(next: Next) -> PaddingState {
    PaddingState {
        on_sent: next,
        on_padding: Next::Stay,
        ..wait(Next::Stay)
    }
}

/// A state that sends `n` cells, each after a uniform delay in `[lo, hi]` ms.
fn burst(lo: u16, hi: u16, n: u8, done: Next) -> PaddingState {
    PaddingState {
        delay_kind: DelayKind::Uniform,
        delay_min_ms: lo,
        delay_max_ms: hi,
        burst_min: n,
        burst_max: n,
        on_sent: Next::Stay,
        on_received: Next::Stay,
        on_padding: Next::Stay,
        on_burst_done: done,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_machine_encodes_and_fits_the_defaults() {
        for kind in [MachineKind::Prologue, MachineKind::Introduction] {
            for m in [kind.client_machine(), kind.hop_machine()] {
                let bytes = m.encode().unwrap();
                assert_eq!(PaddingMachine::parse(&bytes).unwrap(), m);
                assert!(m.max_padding <= MAX_ASKED_PADDING);
                assert!(kind.hop_machine().max_padding == MAX_ASKED_PADDING);
            }
        }
    }
}
