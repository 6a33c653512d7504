//! Circuit padding (docs/protocol.md §3.6): state machines that send DROP cells between
//! the client and one hop, negotiated in that hop's circuit handshake, so that the cell
//! pattern a watcher at the guard sees does not say what a circuit is for.
//!
//! [`runtime`] is the machine logic, [`timer`] wakes the owning task, [`machines`] holds
//! the machines allium asks for, and [`CircuitPadding`] ties them together for one side
//! of one circuit (the client and the relay each own one).

pub mod machines;
pub mod runtime;
pub mod timer;

use tokio::time::Instant;

use crate::cell::padding_machine::PaddingMachine;
use crate::proto::event_queue::EventSender;

pub use runtime::{PaddingEvent, PaddingRuntime};
pub use timer::PaddingTimer;

/// One side's machine on one circuit, with the timer that wakes its owner.
#[derive(Debug)]
pub struct CircuitPadding {
    runtime: PaddingRuntime,
    timer: PaddingTimer,
    armed: Option<Instant>,
    /// Cells the machine sent that the owner could not put on the wire yet (a relay past
    /// its padding rate): sent as soon as it can, never dropped.
    owed: u16,
}

impl CircuitPadding {
    /// Starts `machine` now; its wake-ups arrive in `events` as `due()`.
    pub fn start<E: Send + 'static>(
        machine: PaddingMachine,
        events: EventSender<E>,
        due: fn() -> E,
    ) -> Self {
        let runtime = PaddingRuntime::start(machine, Instant::now(), &mut rand::rng());
        let timer = PaddingTimer::spawn(events, due);
        let mut p = CircuitPadding {
            runtime,
            timer,
            armed: None,
            owed: 0,
        };
        p.rearm(false);
        p
    }

    /// Takes in a circuit event.
    pub fn on_event(&mut self, event: PaddingEvent) {
        self.runtime
            .on_event(event, Instant::now(), &mut rand::rng());
        self.rearm(false);
    }

    /// How many padding cells are due now (0 or 1 per call: call until 0). After the
    /// last, the timer is re-armed for the next.
    pub fn take_due(&mut self) -> bool {
        let due = self.runtime.poll_due(Instant::now(), &mut rand::rng());
        self.rearm(!due);
        due
    }

    /// Whether the machine has stopped for good.
    pub fn ended(&self) -> bool {
        self.runtime.ended()
    }

    /// Whether the machine has stopped and nothing it sent is still owed.
    pub fn finished(&self) -> bool {
        self.runtime.ended() && self.owed == 0
    }

    /// Takes every cell due now into the owed count (at most the machine's cap in all).
    pub fn collect_due(&mut self) {
        while self.take_due() {
            self.owed = self.owed.saturating_add(1);
        }
    }

    /// Takes one owed cell to send now, if any.
    pub fn take_owed(&mut self) -> bool {
        if self.owed == 0 {
            return false;
        }
        self.owed -= 1;
        true
    }

    /// Returns a cell taken by [`Self::take_owed`] that could not be sent.
    pub fn owe_again(&mut self) {
        self.owed = self.owed.saturating_add(1);
    }

    /// Wakes the owner again at `at` (or at the machine's own deadline, if sooner): to
    /// retry sending what it owes.
    pub fn retry_at(&mut self, at: Instant) {
        let at = match self.runtime.deadline() {
            Some(d) if d < at => d,
            _ => at,
        };
        self.armed = Some(at);
        self.timer.arm(Some(at));
    }

    /// Padding cells sent so far.
    pub fn sent(&self) -> u16 {
        self.runtime.sent()
    }

    /// Arms the timer if the deadline moved (or always, after a wake-up: the timer task
    /// waits to be re-armed).
    fn rearm(&mut self, force: bool) {
        let at = self.runtime.deadline();
        if force || at != self.armed {
            self.armed = at;
            self.timer.arm(at);
        }
    }
}
