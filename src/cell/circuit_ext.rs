//! The extensions carried, encrypted, inside the circuit handshake (docs/protocol.md §4.4.3):
//! what a client asks of a hop and what the hop grants, so that a hop that does not support
//! a feature is detected by its answer instead of by a broken circuit.
//!
//! Both directions are a list of `type (u8) | len (u8) | body`. The parser is strict on what
//! it knows (exact body lengths, each known type at most once, nothing left over) and skips
//! unknown types, so a later version can ask for more without breaking older hops.

use super::error::{CellError, CellResult};
use crate::bytes::{Reader, Writer};

/// Extension type: congestion control (§3.5). Client: empty body (a request). Hop: one byte,
/// the SENDME increment both ends use on this circuit (a grant).
pub const EXT_CONGESTION_CONTROL: u8 = 1;

/// Smallest and largest SENDME increment a hop may grant, in cells. Fewer would make
/// SENDMEs a large share of the reverse traffic; more would leave too few round-trip samples
/// per window.
pub const SENDME_INC_RANGE: std::ops::RangeInclusive<u8> = 16..=128;

/// What a client asks of a hop in its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientExtensions {
    /// Congestion control requested.
    pub congestion_control: bool,
}

/// What a hop grants in its handshake reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplyExtensions {
    /// Congestion control granted, with this SENDME increment (cells).
    pub congestion_control: Option<u8>,
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
            _ => Ok(false),
        })?;
        Ok(out)
    }

    /// Encodes to the extension plaintext.
    pub fn encode(&self) -> Vec<u8> {
        if self.congestion_control {
            vec![EXT_CONGESTION_CONTROL, 0]
        } else {
            Vec::new()
        }
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
            _ => Ok(false),
        })?;
        Ok(out)
    }

    /// Encodes to the extension plaintext. An increment outside [`SENDME_INC_RANGE`] is an
    /// error (it would be refused by the client).
    pub fn encode(&self) -> CellResult<Vec<u8>> {
        let mut out = vec![0u8; 3];
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
        let used = w.position();
        out.truncate(used);
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
        };
        assert_eq!(ClientExtensions::parse(&c.encode()).unwrap(), c);
        assert_eq!(
            ClientExtensions::parse(&[]).unwrap(),
            ClientExtensions::default()
        );
        let r = ReplyExtensions {
            congestion_control: Some(31),
        };
        assert_eq!(ReplyExtensions::parse(&r.encode().unwrap()).unwrap(), r);
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
            congestion_control: Some(0)
        }
        .encode()
        .is_err());
    }
}
