//! The sending side of a circuit's window, fixed or under congestion control, with
//! authenticated SENDMEs (see [`crate::proto::stream::window`]) and round-trip times.
//!
//! The window is spent through permits (a semaphore the stream readers share, and the
//! datagram queue): `permits + in_flight − debt = cwnd` at all times. When congestion
//! control shrinks the window by more than a SENDME frees, the difference is owed (`debt`)
//! and paid from later SENDMEs, since permits already handed out cannot be taken back.

use std::collections::VecDeque;
use std::time::Duration;

use subtle::ConstantTimeEq;
use tokio::time::Instant;

use super::vegas::{Vegas, VegasParams};
use super::FlowMode;
use crate::crypto::RelayTag;
use crate::proto::stream::window::{FlowError, CIRCUIT_INCREMENT, CIRCUIT_WINDOW};

/// A circuit's send window.
#[derive(Debug)]
pub(crate) struct CircuitSendWindow {
    inc: u32,
    /// The window (fixed: [`CIRCUIT_WINDOW`]).
    cwnd: u32,
    in_flight: u32,
    debt: u32,
    sent: u64,
    /// Tags of SENDME points awaiting acknowledgement, with when they were sent.
    expected: VecDeque<(RelayTag, Instant)>,
    vegas: Option<Vegas>,
    /// Last round trip measured, for metrics and tests.
    last_rtt: Option<Duration>,
}

impl CircuitSendWindow {
    /// The window for `mode`.
    pub(crate) fn new(mode: FlowMode) -> Self {
        match mode {
            FlowMode::Fixed => Self::build(CIRCUIT_WINDOW, CIRCUIT_INCREMENT, None),
            FlowMode::Congestion { sendme_inc } => {
                let inc = u32::from(sendme_inc);
                let vegas = Vegas::new(VegasParams::for_increment(inc), inc);
                Self::build(vegas.cwnd(), inc, Some(vegas))
            }
        }
    }

    fn build(cwnd: u32, inc: u32, vegas: Option<Vegas>) -> Self {
        CircuitSendWindow {
            inc: inc.max(1),
            cwnd,
            in_flight: 0,
            debt: 0,
            sent: 0,
            expected: VecDeque::new(),
            vegas,
            last_rtt: None,
        }
    }

    /// The window's permits at the start (what the semaphore is created with).
    pub(crate) fn initial_permits(&self) -> u32 {
        self.cwnd
    }

    /// The current window.
    pub(crate) fn cwnd(&self) -> u32 {
        self.cwnd
    }

    /// The largest window this circuit can ever have (what the receiver must allow).
    pub(crate) fn max_window(mode: FlowMode) -> u32 {
        match mode {
            FlowMode::Fixed => CIRCUIT_WINDOW,
            FlowMode::Congestion { sendme_inc } => {
                VegasParams::for_increment(u32::from(sendme_inc)).cwnd_max
            }
        }
    }

    /// The last round trip measured.
    pub(crate) fn last_rtt(&self) -> Option<Duration> {
        self.last_rtt
    }

    /// Records a cell sent under the window with relay-crypto tag `tag`. Returns false if
    /// the fixed window was already full (a bug on our side: permits bound it). The clock
    /// is read only for SENDME points (one cell in `inc`), not on every cell.
    pub(crate) fn on_sent(&mut self, tag: &RelayTag) -> bool {
        if self.vegas.is_none() && self.in_flight >= self.cwnd {
            return false;
        }
        self.in_flight = self.in_flight.saturating_add(1);
        self.sent += 1;
        if let Some(v) = self.vegas.as_mut() {
            if self.in_flight.saturating_add(self.inc) >= self.cwnd {
                v.on_window_limited();
            }
        }
        if self.sent % u64::from(self.inc) == 0 {
            self.expected.push_back((*tag, Instant::now()));
        }
        true
    }

    /// Accepts a SENDME carrying `tag` at `now`: checks it, measures the round trip, updates
    /// the window, and returns how many permits to give back (an increment, adjusted by the
    /// window's change and any debt).
    pub(crate) fn on_sendme(&mut self, tag: &RelayTag, now: Instant) -> Result<u32, FlowError> {
        let (expected, sent_at) = self
            .expected
            .pop_front()
            .ok_or(FlowError::UnexpectedSendme)?;
        if !bool::from(expected.ct_eq(tag)) {
            return Err(FlowError::BadSendmeTag);
        }
        self.in_flight = self.in_flight.saturating_sub(self.inc);
        let rtt = now.saturating_duration_since(sent_at);
        self.last_rtt = Some(rtt);
        let old = self.cwnd;
        if let Some(v) = self.vegas.as_mut() {
            self.cwnd = v.on_ack(rtt);
        }
        // credit − new_debt = inc + (new − old) − old_debt
        let gain = i64::from(self.inc) + i64::from(self.cwnd) - i64::from(old);
        let net = gain - i64::from(self.debt);
        if net >= 0 {
            self.debt = 0;
            Ok(u32::try_from(net).unwrap_or(u32::MAX))
        } else {
            self.debt = u32::try_from(-net).unwrap_or(u32::MAX);
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(i: u64) -> RelayTag {
        let mut t = [0u8; 16];
        t[..8].copy_from_slice(&i.to_le_bytes());
        t
    }

    #[tokio::test(start_paused = true)]
    async fn fixed_mode_is_the_old_window() {
        let mut w = CircuitSendWindow::new(FlowMode::Fixed);
        assert_eq!(w.initial_permits(), 1000);
        let now = Instant::now();
        for i in 1..=1000 {
            assert!(w.on_sent(&tag(i)));
        }
        assert!(!w.on_sent(&tag(1001)));
        assert_eq!(w.on_sendme(&tag(100), now), Ok(100));
        assert_eq!(w.on_sendme(&tag(1), now), Err(FlowError::BadSendmeTag));
    }

    #[tokio::test(start_paused = true)]
    async fn permits_track_the_window_through_growth_and_cuts() {
        let mut w = CircuitSendWindow::new(FlowMode::Congestion { sendme_inc: 31 });
        let mut permits = i64::from(w.initial_permits());
        let mut next = 0u64;
        let mut acked = 0u64;
        for round in 0..30u64 {
            // Send everything the permits allow, then acknowledge it all after a round trip
            // that grows once the window passes 1,000 cells (a queue forms).
            while permits > 0 {
                next += 1;
                assert!(w.on_sent(&tag(next)));
                permits -= 1;
            }
            let rtt = if w.cwnd() > 1000 { 300 } else { 100 };
            tokio::time::advance(Duration::from_millis(rtt + round % 3)).await;
            while acked + 31 <= next {
                acked += 31;
                permits += i64::from(w.on_sendme(&tag(acked), Instant::now()).unwrap());
            }
            let in_flight = i64::try_from(next - acked).unwrap();
            assert_eq!(
                permits + in_flight - i64::from(w.debt),
                i64::from(w.cwnd()),
                "invariant after round {round}"
            );
        }
        assert!(w.cwnd() <= 1000 + 6 * 31, "backed off: {}", w.cwnd());
        assert_eq!(
            w.last_rtt().map(|r| r >= Duration::from_millis(100)),
            Some(true)
        );
    }
}
