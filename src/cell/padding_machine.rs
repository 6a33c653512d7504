//! A circuit-padding machine as it travels in the circuit handshake (docs/protocol.md
//! §3.6): the client describes the machine it wants a hop to run, so the hop can check its
//! cost against its budget before agreeing, and a new machine needs no relay upgrade.
//!
//! ```text
//! machine = max_padding u16 | n_states u8 | state * n_states
//! state   = delay_kind u8 | delay_min_ms u16 | delay_max_ms u16
//!         | burst_min u8 | burst_max u8
//!         | on_sent u8 | on_received u8 | on_padding u8 | on_burst_done u8
//! ```
//!
//! A transition byte names the next state (< n_states), [`STAY`] (the event changes
//! nothing) or [`END`] (the machine stops). Parsing is strict: every field in range,
//! nothing left over.

use super::error::{CellError, CellResult};
use crate::bytes::{Reader, Writer};

/// Most states a machine may have.
pub const MAX_STATES: usize = 8;
/// Longest delay a state may draw, in milliseconds: a machine shapes a circuit's first
/// seconds, not its hours.
pub const MAX_DELAY_MS: u16 = 60_000;
/// Encoded length of one state.
pub const STATE_LEN: usize = 11;
/// Longest encoded machine.
pub const MAX_MACHINE_LEN: usize = 3 + MAX_STATES * STATE_LEN;

/// Transition: the event changes nothing.
pub const STAY: u8 = 0xfe;
/// Transition: the machine stops.
pub const END: u8 = 0xff;

/// How a state draws the delay before each padding cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelayKind {
    /// Uniform in `[min, max]` milliseconds.
    Uniform,
    /// Log-uniform in `[min, max]` (min raised to 1 ms): short delays as likely per
    /// octave as long ones, as bursty traffic looks.
    LogUniform,
}

impl DelayKind {
    fn code(self) -> u8 {
        match self {
            DelayKind::Uniform => 0,
            DelayKind::LogUniform => 1,
        }
    }

    fn from_code(code: u8) -> CellResult<Self> {
        match code {
            0 => Ok(DelayKind::Uniform),
            1 => Ok(DelayKind::LogUniform),
            other => Err(CellError::BadValue {
                field: "padding delay kind",
                value: u64::from(other),
            }),
        }
    }
}

/// Where an event leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Enter this state (re-entering the current one restarts its burst).
    State(u8),
    /// Nothing changes.
    Stay,
    /// The machine stops.
    End,
}

impl Next {
    fn code(self) -> u8 {
        match self {
            Next::State(s) => s,
            Next::Stay => STAY,
            Next::End => END,
        }
    }

    fn from_code(code: u8, states: usize) -> CellResult<Self> {
        match code {
            STAY => Ok(Next::Stay),
            END => Ok(Next::End),
            s if usize::from(s) < states => Ok(Next::State(s)),
            other => Err(CellError::BadValue {
                field: "padding transition",
                value: u64::from(other),
            }),
        }
    }
}

/// One state: a burst of padding cells, each after a delay drawn from a distribution,
/// and where each kind of event leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaddingState {
    /// The delay distribution.
    pub delay_kind: DelayKind,
    /// Shortest delay before a padding cell, in milliseconds.
    pub delay_min_ms: u16,
    /// Longest delay, in milliseconds (≥ `delay_min_ms`, ≤ [`MAX_DELAY_MS`]).
    pub delay_max_ms: u16,
    /// Fewest padding cells the state sends (uniform in `[burst_min, burst_max]`; 0: the
    /// state only waits for an event).
    pub burst_min: u8,
    /// Most padding cells the state sends.
    pub burst_max: u8,
    /// After this side sends a cell that is not padding on the circuit.
    pub on_sent: Next,
    /// After this side receives a cell that is not padding.
    pub on_received: Next,
    /// After this side receives padding from the machine's other end.
    pub on_padding: Next,
    /// After the burst is sent (at once if it drew 0 cells).
    pub on_burst_done: Next,
}

/// A padding machine: its states (the first is entered at the start) and the most
/// padding cells it may send in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaddingMachine {
    /// Hard cap on padding cells this machine sends; reaching it ends the machine. The
    /// hop's budget check is against this.
    pub max_padding: u16,
    /// 1 to [`MAX_STATES`] states.
    pub states: Vec<PaddingState>,
}

impl PaddingMachine {
    /// Parses an encoded machine (strict: see the module documentation).
    pub fn parse(bytes: &[u8]) -> CellResult<Self> {
        let mut r = Reader::new(bytes);
        let max_padding = r.u16("padding cap")?;
        let n = usize::from(r.u8("padding state count")?);
        if n == 0 || n > MAX_STATES {
            return Err(CellError::BadValue {
                field: "padding state count",
                value: n as u64,
            });
        }
        let mut states = Vec::with_capacity(n);
        for _ in 0..n {
            let delay_kind = DelayKind::from_code(r.u8("padding delay kind")?)?;
            let delay_min_ms = r.u16("padding delay min")?;
            let delay_max_ms = r.u16("padding delay max")?;
            if delay_min_ms > delay_max_ms || delay_max_ms > MAX_DELAY_MS {
                return Err(CellError::BadValue {
                    field: "padding delay range",
                    value: u64::from(delay_max_ms),
                });
            }
            let burst_min = r.u8("padding burst min")?;
            let burst_max = r.u8("padding burst max")?;
            if burst_min > burst_max {
                return Err(CellError::BadValue {
                    field: "padding burst range",
                    value: u64::from(burst_min),
                });
            }
            states.push(PaddingState {
                delay_kind,
                delay_min_ms,
                delay_max_ms,
                burst_min,
                burst_max,
                on_sent: Next::from_code(r.u8("padding transition")?, n)?,
                on_received: Next::from_code(r.u8("padding transition")?, n)?,
                on_padding: Next::from_code(r.u8("padding transition")?, n)?,
                on_burst_done: Next::from_code(r.u8("padding transition")?, n)?,
            });
        }
        if r.remaining() > 0 {
            return Err(CellError::BadValue {
                field: "bytes after padding machine",
                value: r.remaining() as u64,
            });
        }
        Ok(PaddingMachine {
            max_padding,
            states,
        })
    }

    /// Encodes the machine; one that would not parse back is an error.
    pub fn encode(&self) -> CellResult<Vec<u8>> {
        let n = self.states.len();
        let count = u8::try_from(n)
            .ok()
            .filter(|c| (1..=MAX_STATES).contains(&usize::from(*c)))
            .ok_or(CellError::BadValue {
                field: "padding state count",
                value: n as u64,
            })?;
        let mut out = vec![0u8; 3 + n * STATE_LEN];
        let mut w = Writer::new(&mut out);
        w.u16(self.max_padding, "padding cap")?;
        w.u8(count, "padding state count")?;
        for s in &self.states {
            w.u8(s.delay_kind.code(), "padding delay kind")?;
            w.u16(s.delay_min_ms, "padding delay min")?;
            w.u16(s.delay_max_ms, "padding delay max")?;
            w.u8(s.burst_min, "padding burst min")?;
            w.u8(s.burst_max, "padding burst max")?;
            for t in [s.on_sent, s.on_received, s.on_padding, s.on_burst_done] {
                w.u8(t.code(), "padding transition")?;
            }
        }
        let parsed = Self::parse(&out)?;
        if &parsed != self {
            return Err(CellError::BadValue {
                field: "padding machine",
                value: 0,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> PaddingState {
        PaddingState {
            delay_kind: DelayKind::LogUniform,
            delay_min_ms: 1,
            delay_max_ms: 200,
            burst_min: 1,
            burst_max: 9,
            on_sent: Next::Stay,
            on_received: Next::State(0),
            on_padding: Next::Stay,
            on_burst_done: Next::End,
        }
    }

    #[test]
    fn round_trip_and_strictness() {
        let m = PaddingMachine {
            max_padding: 40,
            states: vec![state(), state()],
        };
        let bytes = m.encode().unwrap();
        assert_eq!(bytes.len(), 3 + 2 * STATE_LEN);
        assert_eq!(PaddingMachine::parse(&bytes).unwrap(), m);
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(PaddingMachine::parse(&extra).is_err(), "trailing byte");
        assert!(PaddingMachine::parse(&bytes[..bytes.len() - 1]).is_err());
        let mut bad = bytes.clone();
        bad[3 + 7] = 2; // on_sent of state 0 names state 2 of 2
        assert!(
            PaddingMachine::parse(&bad).is_err(),
            "transition out of range"
        );
        let mut bad = bytes.clone();
        bad[3] = 7;
        assert!(PaddingMachine::parse(&bad).is_err(), "delay kind");
        let mut bad = bytes;
        bad[2] = 0;
        assert!(PaddingMachine::parse(&bad).is_err(), "no states");
        let inverted = PaddingMachine {
            max_padding: 1,
            states: vec![PaddingState {
                burst_min: 3,
                burst_max: 2,
                ..state()
            }],
        };
        assert!(inverted.encode().is_err());
        let too_long = PaddingMachine {
            max_padding: 1,
            states: vec![PaddingState {
                delay_max_ms: MAX_DELAY_MS + 1,
                ..state()
            }],
        };
        assert!(too_long.encode().is_err());
        assert!(PaddingMachine {
            max_padding: 1,
            states: vec![state(); MAX_STATES + 1]
        }
        .encode()
        .is_err());
    }
}
