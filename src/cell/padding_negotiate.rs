//! PADDING_NEGOTIATE: how a client asks its first hop to pad the channel towards it
//! (docs/protocol.md §5.10).
//!
//! ```text
//! version  u8   0
//! command  u8   1 = start (pad with these bounds), 2 = stop (no link padding)
//! low_ms   u16  start: PADDING_MIN_MS ≤ low_ms ≤ high_ms; stop: 0
//! high_ms  u16  start: low_ms ≤ high_ms ≤ PADDING_MAX_MS; stop: 0
//! then zero padding to the body's end
//! ```
//!
//! The parser accepts exactly one encoding per value: a stop with non-zero bounds, or a
//! start outside the range, is refused. The range is the wire's; a relay further raises
//! `low_ms` to its own floor, so no peer can make it pad faster than it chooses to.

use super::error::{CellError, CellResult};
use crate::bytes::{Reader, Writer};

/// The only version defined.
pub const PADDING_NEGOTIATE_VERSION: u8 = 0;
/// Smallest `low_ms` on the wire: padding more often than ten times a second hides
/// nothing more from a flow record and costs a record each time.
pub const PADDING_MIN_MS: u16 = 100;
/// Largest `high_ms` on the wire: one minute, well past any flow-record inactivity
/// timeout (longer gaps would not keep a flow open anyway).
pub const PADDING_MAX_MS: u16 = 60_000;

const CMD_START: u8 = 1;
const CMD_STOP: u8 = 2;

/// The bounds of the padding timeout, in milliseconds: valid by construction
/// (`PADDING_MIN_MS ≤ low ≤ high ≤ PADDING_MAX_MS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PaddingBounds {
    low_ms: u16,
    high_ms: u16,
}

impl PaddingBounds {
    /// The slowest schedule the wire can express: once a minute.
    pub const SLOWEST: PaddingBounds = PaddingBounds {
        low_ms: PADDING_MAX_MS,
        high_ms: PADDING_MAX_MS,
    };

    /// Checks and wraps the bounds.
    pub fn new(low_ms: u16, high_ms: u16) -> CellResult<Self> {
        if low_ms < PADDING_MIN_MS {
            return Err(CellError::BadValue {
                field: "padding low_ms (below the minimum)",
                value: u64::from(low_ms),
            });
        }
        if high_ms > PADDING_MAX_MS {
            return Err(CellError::BadValue {
                field: "padding high_ms (above the maximum)",
                value: u64::from(high_ms),
            });
        }
        if high_ms < low_ms {
            return Err(CellError::BadValue {
                field: "padding high_ms (below low_ms)",
                value: u64::from(high_ms),
            });
        }
        Ok(PaddingBounds { low_ms, high_ms })
    }

    /// The lower bound of each of the two uniform draws.
    pub fn low_ms(self) -> u16 {
        self.low_ms
    }

    /// The upper bound of each of the two uniform draws.
    pub fn high_ms(self) -> u16 {
        self.high_ms
    }
}

/// The body of PADDING_NEGOTIATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaddingNegotiate {
    /// Pad towards the sender with a timeout of max(X, Y), X, Y ~ Uniform[low, high].
    Start(PaddingBounds),
    /// Send no link padding towards the sender (keep-alive only).
    Stop,
}

impl PaddingNegotiate {
    /// Reads the fields (the caller checks the zero padding after them).
    pub(crate) fn read(r: &mut Reader<'_>) -> CellResult<Self> {
        let version = r.u8("padding version")?;
        if version != PADDING_NEGOTIATE_VERSION {
            return Err(CellError::BadValue {
                field: "padding version",
                value: u64::from(version),
            });
        }
        let command = r.u8("padding command")?;
        let low = r.u16("padding low_ms")?;
        let high = r.u16("padding high_ms")?;
        match command {
            CMD_START => Ok(PaddingNegotiate::Start(PaddingBounds::new(low, high)?)),
            CMD_STOP if low == 0 && high == 0 => Ok(PaddingNegotiate::Stop),
            CMD_STOP => Err(CellError::BadValue {
                field: "padding bounds of a stop (must be 0)",
                value: u64::from(low.max(high)),
            }),
            other => Err(CellError::BadValue {
                field: "padding command",
                value: u64::from(other),
            }),
        }
    }

    /// Writes the fields.
    pub(crate) fn write(&self, w: &mut Writer<'_>) -> CellResult<()> {
        let (command, low, high) = match self {
            PaddingNegotiate::Start(b) => (CMD_START, b.low_ms, b.high_ms),
            PaddingNegotiate::Stop => (CMD_STOP, 0, 0),
        };
        w.u8(PADDING_NEGOTIATE_VERSION, "padding version")?;
        w.u8(command, "padding command")?;
        w.u16(low, "padding low_ms")?;
        w.u16(high, "padding high_ms")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::consts::CELL_BODY_LEN;
    use crate::cell::{ChanCmd, ChanMsg};

    fn body(fields: &[u8]) -> [u8; CELL_BODY_LEN] {
        let mut b = [0u8; CELL_BODY_LEN];
        b[..fields.len()].copy_from_slice(fields);
        b
    }

    fn parse(fields: &[u8]) -> CellResult<ChanMsg> {
        ChanMsg::parse_body(ChanCmd::PaddingNegotiate, &body(fields))
    }

    #[test]
    fn start_and_stop_round_trip_byte_exactly() {
        let start = ChanMsg::PaddingNegotiate(PaddingNegotiate::Start(
            PaddingBounds::new(1500, 9500).unwrap(),
        ));
        let mut out = [0u8; CELL_BODY_LEN];
        start.encode_body(&mut out).unwrap();
        assert_eq!(out, body(&[0, 1, 0x05, 0xdc, 0x25, 0x1c]));
        assert_eq!(parse(&[0, 1, 0x05, 0xdc, 0x25, 0x1c]).unwrap(), start);
        let stop = ChanMsg::PaddingNegotiate(PaddingNegotiate::Stop);
        stop.encode_body(&mut out).unwrap();
        assert_eq!(out, body(&[0, 2]));
        assert_eq!(parse(&[0, 2, 0, 0, 0, 0]).unwrap(), stop);
    }

    #[test]
    fn the_parser_is_strict() {
        let bad: &[(&[u8], &str)] = &[
            (&[1, 1, 0x05, 0xdc, 0x25, 0x1c], "padding version"),
            (&[0, 0, 0x05, 0xdc, 0x25, 0x1c], "padding command"),
            (&[0, 3, 0x05, 0xdc, 0x25, 0x1c], "padding command"),
            // Stop carries no bounds.
            (&[0, 2, 0, 0, 0, 1], "padding bounds of a stop (must be 0)"),
            // 1 ms, 99 ms: below the wire's minimum (a flood amplifier otherwise).
            (&[0, 1, 0, 1, 0, 1], "padding low_ms (below the minimum)"),
            (
                &[0, 1, 0, 99, 0x25, 0x1c],
                "padding low_ms (below the minimum)",
            ),
            (&[0, 1, 0, 0, 0, 0], "padding low_ms (below the minimum)"),
            // low > high.
            (
                &[0, 1, 0x25, 0x1c, 0x05, 0xdc],
                "padding high_ms (below low_ms)",
            ),
            // Over a minute.
            (
                &[0, 1, 0x05, 0xdc, 0xea, 0x61],
                "padding high_ms (above the maximum)",
            ),
        ];
        for (fields, field) in bad {
            match parse(fields) {
                Err(CellError::BadValue { field: f, .. }) => assert_eq!(f, *field, "{fields:?}"),
                other => panic!("{fields:?} parsed as {other:?}"),
            }
        }
        // Anything after the fields must be zero.
        let mut b = body(&[0, 1, 0x05, 0xdc, 0x25, 0x1c]);
        b[6] = 1;
        assert_eq!(
            ChanMsg::parse_body(ChanCmd::PaddingNegotiate, &b),
            Err(CellError::NonZeroPadding)
        );
        // The extremes are accepted.
        assert!(parse(&[0, 1, 0, 100, 0, 100]).is_ok());
        assert!(parse(&[0, 1, 0xea, 0x60, 0xea, 0x60]).is_ok());
    }
}
