//! The extensions carried, encrypted, inside the circuit handshake (docs/protocol.md §4.4.3):
//! what a client asks of a hop and what the hop grants, so that a hop that does not support
//! a feature is detected by its answer instead of by a broken circuit.
//!
//! Both directions are a list of `type (u8) | len (u8) | body`. The parser is strict on what
//! it knows (exact body lengths, each known type at most once, nothing left over) and skips
//! unknown types, so a later version can ask for more without breaking older hops.
//!
//! Both directions are filled to a fixed length ([`CLIENT_EXT_LEN`], [`REPLY_EXT_LEN`])
//! with a [`EXT_FILL`] entry: the guard relays the middle hop's handshake in EXTEND and
//! EXTENDED and sees its length, which must not say what the client asked for.

use super::error::{CellError, CellResult};
use super::padding_machine::PaddingMachine;
use crate::bytes::{Reader, Writer};

/// Extension type: congestion control (§3.5). Client: empty body (a request). Hop: one byte,
/// the SENDME increment both ends use on this circuit (a grant).
pub const EXT_CONGESTION_CONTROL: u8 = 1;

/// Extension type: circuit padding (§3.6). Client: the [`PaddingMachine`] the hop is
/// asked to run towards the client. Hop: one byte, a [`PaddingStatus`].
pub const EXT_PADDING: u8 = 2;

/// Extension type: fill, ignored (its body is zeros). Makes every handshake the same length.
pub const EXT_FILL: u8 = 0xff;

/// Length every client extension list is filled to.
pub const CLIENT_EXT_LEN: usize = 128;
/// Length every reply extension list is filled to.
pub const REPLY_EXT_LEN: usize = 16;

/// A hop's answer to a padding machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaddingStatus {
    /// The hop runs the machine.
    Accepted,
    /// The machine would send more than the hop's budget allows.
    OverBudget,
    /// The hop does not pad (disabled by its operator).
    Disabled,
}

impl PaddingStatus {
    fn code(self) -> u8 {
        match self {
            PaddingStatus::Accepted => 0,
            PaddingStatus::OverBudget => 1,
            PaddingStatus::Disabled => 2,
        }
    }

    fn from_code(code: u8) -> CellResult<Self> {
        match code {
            0 => Ok(PaddingStatus::Accepted),
            1 => Ok(PaddingStatus::OverBudget),
            2 => Ok(PaddingStatus::Disabled),
            other => Err(CellError::BadValue {
                field: "padding status",
                value: u64::from(other),
            }),
        }
    }
}

/// Smallest and largest SENDME increment a hop may grant, in cells. Fewer would make
/// SENDMEs a large share of the reverse traffic; more would leave too few round-trip samples
/// per window.
pub const SENDME_INC_RANGE: std::ops::RangeInclusive<u8> = 16..=128;

/// What a client asks of a hop in its handshake.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientExtensions {
    /// Congestion control requested.
    pub congestion_control: bool,
    /// A padding machine the hop is asked to run.
    pub padding: Option<PaddingMachine>,
}

/// What a hop grants in its handshake reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplyExtensions {
    /// Congestion control granted, with this SENDME increment (cells).
    pub congestion_control: Option<u8>,
    /// The answer to a padding machine, if one was asked for.
    pub padding: Option<PaddingStatus>,
}

/// One `type | len | body` entry.
fn read_entry<'a>(r: &mut Reader<'a>) -> CellResult<(u8, &'a [u8])> {
    let kind = r.u8("extension type")?;
    let len = usize::from(r.u8("extension length")?);
    Ok((kind, r.take(len, "extension body")?))
}

/// Calls `known` for each entry; refuses a known type seen twice.
fn read_entries(
    bytes: &[u8],
    mut known: impl FnMut(u8, &[u8]) -> CellResult<bool>,
) -> CellResult<()> {
    let mut r = Reader::new(bytes);
    let mut seen = [false; 256];
    while r.remaining() > 0 {
        let (kind, body) = read_entry(&mut r)?;
        if known(kind, body)? {
            let slot = seen.get_mut(usize::from(kind)).ok_or(CellError::BadValue {
                field: "extension type",
                value: u64::from(kind),
            })?;
            if *slot {
                return Err(CellError::BadValue {
                    field: "repeated extension type",
                    value: u64::from(kind),
                });
            }
            *slot = true;
        }
    }
    Ok(())
}

/// Appends one `type | len | body` entry.
fn write_entry(w: &mut Writer<'_>, kind: u8, body: &[u8]) -> CellResult<()> {
    w.u8(kind, "extension type")?;
    w.u8_prefixed(body, "extension body")?;
    Ok(())
}

/// Fills the rest of `w`'s buffer (of the fixed length) with one [`EXT_FILL`] entry, or
/// fails if what was written leaves no room for its header.
fn fill(w: &mut Writer<'_>, total: usize) -> CellResult<()> {
    let left = total.saturating_sub(w.position());
    if left == 0 {
        return Ok(());
    }
    let body = left.checked_sub(2).ok_or(CellError::BadValue {
        field: "extension fill",
        value: left as u64,
    })?;
    write_entry(w, EXT_FILL, &vec![0u8; body])
}

fn exact_len(body: &[u8], want: usize) -> CellResult<()> {
    if body.len() != want {
        return Err(CellError::BadValue {
            field: "extension length",
            value: body.len() as u64,
        });
    }
    Ok(())
}

impl ClientExtensions {
    /// Parses a client's extension plaintext.
    pub fn parse(bytes: &[u8]) -> CellResult<Self> {
        let mut out = ClientExtensions::default();
        read_entries(bytes, |kind, body| match kind {
            EXT_CONGESTION_CONTROL => {
                exact_len(body, 0)?;
                out.congestion_control = true;
                Ok(true)
            }
            EXT_PADDING => {
                out.padding = Some(PaddingMachine::parse(body)?);
                Ok(true)
            }
            _ => Ok(false),
        })?;
        Ok(out)
    }

    /// Encodes to the extension plaintext, filled to [`CLIENT_EXT_LEN`].
    pub fn encode(&self) -> CellResult<Vec<u8>> {
        let mut out = vec![0u8; CLIENT_EXT_LEN];
        let mut w = Writer::new(&mut out);
        if self.congestion_control {
            write_entry(&mut w, EXT_CONGESTION_CONTROL, &[])?;
        }
        if let Some(m) = &self.padding {
            write_entry(&mut w, EXT_PADDING, &m.encode()?)?;
        }
        fill(&mut w, CLIENT_EXT_LEN)?;
        Ok(out)
    }
}

impl ReplyExtensions {
    /// Parses a hop's extension plaintext. A grant outside [`SENDME_INC_RANGE`] is refused.
    pub fn parse(bytes: &[u8]) -> CellResult<Self> {
        let mut out = ReplyExtensions::default();
        read_entries(bytes, |kind, body| match kind {
            EXT_CONGESTION_CONTROL => {
                exact_len(body, 1)?;
                let inc = Reader::new(body).u8("sendme increment")?;
                if !SENDME_INC_RANGE.contains(&inc) {
                    return Err(CellError::BadValue {
                        field: "sendme increment",
                        value: u64::from(inc),
                    });
                }
                out.congestion_control = Some(inc);
                Ok(true)
            }
            EXT_PADDING => {
                exact_len(body, 1)?;
                out.padding = Some(PaddingStatus::from_code(
                    Reader::new(body).u8("padding status")?,
                )?);
                Ok(true)
            }
            _ => Ok(false),
        })?;
        Ok(out)
    }

    /// Encodes to the extension plaintext, filled to [`REPLY_EXT_LEN`]. An increment
    /// outside [`SENDME_INC_RANGE`] is an error (it would be refused by the client).
    pub fn encode(&self) -> CellResult<Vec<u8>> {
        let mut out = vec![0u8; REPLY_EXT_LEN];
        let mut w = Writer::new(&mut out);
        if let Some(inc) = self.congestion_control {
            if !SENDME_INC_RANGE.contains(&inc) {
                return Err(CellError::BadValue {
                    field: "sendme increment",
                    value: u64::from(inc),
                });
            }
            w.u8(EXT_CONGESTION_CONTROL, "extension type")?;
            w.u8(1, "extension length")?;
            w.u8(inc, "sendme increment")?;
        }
        if let Some(status) = self.padding {
            write_entry(&mut w, EXT_PADDING, &[status.code()])?;
        }
        fill(&mut w, REPLY_EXT_LEN)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_strictness() {
        let c = ClientExtensions {
            congestion_control: true,
            padding: None,
        };
        assert_eq!(c.encode().unwrap().len(), CLIENT_EXT_LEN);
        assert_eq!(ClientExtensions::parse(&c.encode().unwrap()).unwrap(), c);
        assert_eq!(
            ClientExtensions::parse(&[]).unwrap(),
            ClientExtensions::default()
        );
        let r = ReplyExtensions {
            congestion_control: Some(31),
            padding: Some(PaddingStatus::OverBudget),
        };
        assert_eq!(r.encode().unwrap().len(), REPLY_EXT_LEN);
        assert_eq!(ReplyExtensions::parse(&r.encode().unwrap()).unwrap(), r);
        assert!(
            ReplyExtensions::parse(&[2, 1, 3]).is_err(),
            "padding status"
        );
        assert!(
            ReplyExtensions::parse(&[2, 0]).is_err(),
            "empty padding status"
        );
        // Unknown types are skipped; known ones checked.
        assert_eq!(
            ClientExtensions::parse(&[9, 2, 0xaa, 0xbb, 1, 0]).unwrap(),
            c
        );
        assert!(
            ClientExtensions::parse(&[1, 1, 0]).is_err(),
            "body on a request"
        );
        assert!(ClientExtensions::parse(&[1, 0, 1, 0]).is_err(), "repeated");
        assert!(ClientExtensions::parse(&[1]).is_err(), "truncated header");
        assert!(
            ClientExtensions::parse(&[9, 3, 0]).is_err(),
            "truncated body"
        );
        assert!(
            ReplyExtensions::parse(&[1, 1, 15]).is_err(),
            "increment too small"
        );
        assert!(
            ReplyExtensions::parse(&[1, 1, 129]).is_err(),
            "increment too large"
        );
        assert!(
            ReplyExtensions::parse(&[1, 0]).is_err(),
            "grant without increment"
        );
        assert!(ReplyExtensions {
            congestion_control: Some(0),
            padding: None,
        }
        .encode()
        .is_err());
    }
}
