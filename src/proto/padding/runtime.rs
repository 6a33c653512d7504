//! A running padding machine (docs/protocol.md §3.6): which state it is in, how many
//! padding cells are left in the state's burst, and when the next one is due.
//!
//! Pure logic, time given by the caller: the client circuit and the relay circuit both
//! drive one, and tests drive it with made-up instants.

use std::time::Duration;

use rand::{Rng, RngExt};
use tokio::time::Instant;

use crate::cell::padding_machine::{DelayKind, Next, PaddingMachine, PaddingState};

/// What happened on the circuit, as a machine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaddingEvent {
    /// This side sent a cell that is not padding.
    Sent,
    /// This side received a cell that is not padding.
    Received,
    /// This side received padding from the machine's other end.
    PaddingReceived,
}

/// Transitions one event (or one burst's end) may chain through, a state with an empty
/// burst moving on at once, before the machine is stopped as looping.
const MAX_CHAIN: usize = 2 * crate::cell::padding_machine::MAX_STATES;

/// A machine in progress.
#[derive(Debug)]
pub struct PaddingRuntime {
    machine: PaddingMachine,
    state: usize,
    burst_left: u8,
    deadline: Option<Instant>,
    sent: u16,
    ended: bool,
}

impl PaddingRuntime {
    /// Starts `machine` in its first state at `now`.
    pub fn start(machine: PaddingMachine, now: Instant, rng: &mut impl Rng) -> Self {
        let mut rt = PaddingRuntime {
            machine,
            state: 0,
            burst_left: 0,
            deadline: None,
            sent: 0,
            ended: false,
        };
        if rt.machine.max_padding == 0 {
            rt.stop();
        } else {
            rt.follow(Next::State(0), now, rng);
        }
        rt
    }

    /// When the next padding cell is due (`None`: waiting for an event, or ended).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether the machine has stopped for good.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Padding cells this machine has sent.
    pub fn sent(&self) -> u16 {
        self.sent
    }

    /// Takes in a circuit event.
    pub fn on_event(&mut self, event: PaddingEvent, now: Instant, rng: &mut impl Rng) {
        let Some(state) = self.current() else {
            return;
        };
        let next = match event {
            PaddingEvent::Sent => state.on_sent,
            PaddingEvent::Received => state.on_received,
            PaddingEvent::PaddingReceived => state.on_padding,
        };
        self.follow(next, now, rng);
    }

    /// Whether a padding cell is due at `now`: if so the caller sends one (and the machine
    /// counts it sent and schedules the next). Never more than the machine's cap.
    pub fn poll_due(&mut self, now: Instant, rng: &mut impl Rng) -> bool {
        match self.deadline {
            Some(at) if !self.ended && at <= now => {}
            _ => return false,
        }
        if self.sent >= self.machine.max_padding {
            self.stop();
            return false;
        }
        self.sent += 1;
        self.burst_left = self.burst_left.saturating_sub(1);
        if self.sent >= self.machine.max_padding {
            self.stop();
        } else if self.burst_left == 0 {
            self.deadline = None;
            if let Some(state) = self.current() {
                self.follow(state.on_burst_done, now, rng);
            }
        } else {
            self.schedule(now, rng);
        }
        true
    }

    fn current(&self) -> Option<PaddingState> {
        if self.ended {
            return None;
        }
        self.machine.states.get(self.state).copied()
    }

    fn stop(&mut self) {
        self.ended = true;
        self.deadline = None;
    }

    /// Follows a transition, entering states (and chaining through empty bursts).
    fn follow(&mut self, mut next: Next, now: Instant, rng: &mut impl Rng) {
        for _ in 0..MAX_CHAIN {
            let s = match next {
                Next::Stay => return,
                Next::End => return self.stop(),
                Next::State(s) => usize::from(s),
            };
            let Some(state) = self.machine.states.get(s).copied() else {
                return self.stop();
            };
            self.state = s;
            // `max` of the two: a machine built in code (not parsed) may have them swapped.
            self.burst_left =
                rng.random_range(state.burst_min..=state.burst_max.max(state.burst_min));
            if self.burst_left > 0 {
                self.schedule(now, rng);
                return;
            }
            self.deadline = None;
            next = state.on_burst_done;
        }
        self.stop();
    }

    fn schedule(&mut self, now: Instant, rng: &mut impl Rng) {
        let Some(state) = self.current() else {
            return;
        };
        self.deadline = Some(now + sample_delay(&state, rng));
    }
}

/// A delay drawn from the state's distribution.
fn sample_delay(state: &PaddingState, rng: &mut impl Rng) -> Duration {
    let (lo, hi) = (
        state.delay_min_ms,
        state.delay_max_ms.max(state.delay_min_ms),
    );
    let ms = match state.delay_kind {
        DelayKind::Uniform => f64::from(rng.random_range(lo..=hi)),
        DelayKind::LogUniform => {
            let (lo, hi) = (f64::from(lo.max(1)), f64::from(hi.max(1)));
            if hi <= lo {
                lo
            } else {
                rng.random_range(lo.ln()..=hi.ln()).exp()
            }
        }
    };
    Duration::from_secs_f64(ms / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::padding_machine::PaddingState;

    fn st(burst: (u8, u8), on_padding: Next, on_burst_done: Next) -> PaddingState {
        PaddingState {
            delay_kind: DelayKind::Uniform,
            delay_min_ms: 10,
            delay_max_ms: 10,
            burst_min: burst.0,
            burst_max: burst.1,
            on_sent: Next::Stay,
            on_received: Next::Stay,
            on_padding,
            on_burst_done,
        }
    }

    #[test]
    fn waits_for_its_event_then_sends_its_burst_then_ends() {
        let mut rng = rand::rng();
        let t0 = Instant::now();
        let m = PaddingMachine {
            max_padding: 100,
            states: vec![
                st((0, 0), Next::State(1), Next::Stay),
                st((3, 3), Next::Stay, Next::End),
            ],
        };
        let mut rt = PaddingRuntime::start(m, t0, &mut rng);
        assert_eq!(rt.deadline(), None, "state 0 only waits");
        rt.on_event(PaddingEvent::Sent, t0, &mut rng);
        assert_eq!(rt.deadline(), None, "Sent leads nowhere in state 0");
        rt.on_event(PaddingEvent::PaddingReceived, t0, &mut rng);
        let due = rt.deadline().unwrap();
        assert_eq!(due, t0 + Duration::from_millis(10));
        assert!(!rt.poll_due(t0, &mut rng), "not before its time");
        let mut now = due;
        for _ in 0..3 {
            assert!(rt.poll_due(now, &mut rng));
            now += Duration::from_millis(10);
        }
        assert!(rt.ended());
        assert_eq!(rt.sent(), 3);
        assert!(!rt.poll_due(now + Duration::from_secs(9), &mut rng));
    }

    #[test]
    fn the_cap_ends_a_machine_that_would_loop_forever() {
        let mut rng = rand::rng();
        let t0 = Instant::now();
        // One state whose burst, when done, re-enters itself: unbounded but for the cap.
        let m = PaddingMachine {
            max_padding: 7,
            states: vec![st((2, 2), Next::Stay, Next::State(0))],
        };
        let mut rt = PaddingRuntime::start(m, t0, &mut rng);
        let mut now = t0;
        let mut sent = 0;
        for _ in 0..100 {
            now += Duration::from_millis(10);
            if rt.poll_due(now, &mut rng) {
                sent += 1;
            }
        }
        assert_eq!(sent, 7);
        assert!(rt.ended());
    }

    #[test]
    fn empty_bursts_chaining_into_each_other_stop_the_machine() {
        let mut rng = rand::rng();
        let m = PaddingMachine {
            max_padding: 7,
            states: vec![
                st((0, 0), Next::Stay, Next::State(1)),
                st((0, 0), Next::Stay, Next::State(0)),
            ],
        };
        let rt = PaddingRuntime::start(m, Instant::now(), &mut rng);
        assert!(rt.ended());
    }
}
