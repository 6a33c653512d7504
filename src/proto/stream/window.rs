//! Flow-control windows with authenticated SENDMEs.
//!
//! A sender may have at most `window` DATA cells unacknowledged. Every `increment`-th cell
//! it sends is a *SENDME point*: it remembers that cell's relay-crypto tag. The receiver,
//! after taking in (circuit level) or delivering (stream level) that cell, answers with a
//! SENDME echoing the tag. Only the real receiver of the cell knows the tag, so a SENDME
//! proves receipt: a peer cannot inflate its window by acknowledging data it never got
//! (Tor's "authenticated SENDME", proposal 289).

use std::collections::VecDeque;

use subtle::ConstantTimeEq;
use thiserror::Error;

use crate::crypto::RelayTag;

/// Circuit-level window, in DATA cells.
pub(crate) const CIRCUIT_WINDOW: u32 = 1000;
/// Circuit-level SENDME increment.
pub(crate) const CIRCUIT_INCREMENT: u32 = 100;
/// Stream-level window, in DATA cells.
pub(crate) const STREAM_WINDOW: u32 = 500;
/// Stream-level SENDME increment.
pub(crate) const STREAM_INCREMENT: u32 = 50;

/// A flow-control violation by the peer. The circuit must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub(crate) enum FlowError {
    /// A SENDME arrived with no SENDME point outstanding: acknowledging data never sent.
    #[error("SENDME without unacknowledged data")]
    UnexpectedSendme,
    /// A SENDME's tag does not match the cell it should acknowledge.
    #[error("SENDME tag does not match the acknowledged cell")]
    BadSendmeTag,
    /// The peer sent more DATA than the window allows.
    #[error("peer exceeded the flow-control window")]
    WindowExceeded,
    /// XOFF or XON on a circuit without congestion control.
    #[error("XOFF/XON without congestion control")]
    SignalWithoutCongestionControl,
}

/// The sending side of a window.
#[derive(Debug)]
pub(crate) struct SendWindow {
    available: u32,
    increment: u32,
    sent: u64,
    /// Tags of SENDME points awaiting acknowledgement (at most window/increment).
    expected: VecDeque<RelayTag>,
}

impl SendWindow {
    /// A full window.
    pub(crate) fn new(window: u32, increment: u32) -> Self {
        SendWindow {
            available: window,
            increment: increment.max(1),
            sent: 0,
            expected: VecDeque::new(),
        }
    }

    /// A stream-level window.
    pub(crate) fn stream() -> Self {
        Self::new(STREAM_WINDOW, STREAM_INCREMENT)
    }

    /// Cells that may be sent now (the pumps hold window permits instead; tests check it).
    #[cfg(test)]
    pub(crate) fn available(&self) -> u32 {
        self.available
    }

    /// Records a DATA cell sent with relay-crypto tag `tag`. Callers hold a window permit
    /// for it; sending with an empty window is a bug on our side, reported as `false`.
    pub(crate) fn on_sent(&mut self, tag: &RelayTag) -> bool {
        if self.available == 0 {
            return false;
        }
        self.available -= 1;
        self.sent += 1;
        if self.sent % u64::from(self.increment) == 0 {
            self.expected.push_back(*tag);
        }
        true
    }

    /// Accepts a SENDME carrying `tag`; reopens the window by one increment.
    pub(crate) fn on_sendme(&mut self, tag: &RelayTag) -> Result<(), FlowError> {
        let expected = self
            .expected
            .pop_front()
            .ok_or(FlowError::UnexpectedSendme)?;
        if !bool::from(expected.ct_eq(tag)) {
            return Err(FlowError::BadSendmeTag);
        }
        self.available = self.available.saturating_add(self.increment);
        Ok(())
    }
}

/// The receiving side of a window.
#[derive(Debug)]
pub(crate) struct RecvWindow {
    left: u32,
    increment: u32,
    received: u64,
}

impl RecvWindow {
    /// A full window.
    pub(crate) fn new(window: u32, increment: u32) -> Self {
        RecvWindow {
            left: window,
            increment: increment.max(1),
            received: 0,
        }
    }

    /// A circuit-level window.
    pub(crate) fn circuit() -> Self {
        Self::new(CIRCUIT_WINDOW, CIRCUIT_INCREMENT)
    }

    /// A stream-level window.
    pub(crate) fn stream() -> Self {
        Self::new(STREAM_WINDOW, STREAM_INCREMENT)
    }

    /// Records a DATA cell received. Returns whether it is a SENDME point (the caller
    /// sends a SENDME echoing its tag once the cell is taken in or delivered, then calls
    /// [`on_sendme_sent`](Self::on_sendme_sent)).
    pub(crate) fn on_received(&mut self) -> Result<bool, FlowError> {
        if self.left == 0 {
            return Err(FlowError::WindowExceeded);
        }
        self.left -= 1;
        self.received += 1;
        Ok(self.received % u64::from(self.increment) == 0)
    }

    /// Cells the peer may still send.
    pub(crate) fn left(&self) -> u32 {
        self.left
    }

    /// Records that a SENDME went out: the peer may send one more increment.
    pub(crate) fn on_sendme_sent(&mut self) {
        self.left = self.left.saturating_add(self.increment);
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

    #[test]
    fn window_closes_and_authenticated_sendmes_reopen_it() {
        let mut s = SendWindow::new(10, 5);
        let mut r = RecvWindow::new(10, 5);
        let mut acks = Vec::new();
        for i in 1..=10 {
            assert!(s.on_sent(&tag(i)));
            if r.on_received().unwrap() {
                acks.push(tag(i));
            }
        }
        assert_eq!(s.available(), 0);
        assert!(!s.on_sent(&tag(11)));
        assert_eq!(r.on_received(), Err(FlowError::WindowExceeded));
        assert_eq!(acks, vec![tag(5), tag(10)]);
        for a in &acks {
            s.on_sendme(a).unwrap();
            r.on_sendme_sent();
        }
        assert_eq!(s.available(), 10);
    }

    #[test]
    fn cheating_sendmes_are_refused() {
        let mut s = SendWindow::new(10, 5);
        // Nothing sent yet: any SENDME is acknowledging data we never sent.
        assert_eq!(s.on_sendme(&tag(0)), Err(FlowError::UnexpectedSendme));
        for i in 1..=5 {
            s.on_sent(&tag(i));
        }
        assert_eq!(s.on_sendme(&tag(4)), Err(FlowError::BadSendmeTag));
    }
}
