//! The link cell: the one fixed-size unit every channel carries.
//!
//! ```text
//! offset 0   circ_id  u32 big-endian   0 for channel commands, non-zero for circuit ones
//! offset 4   command  u8               ChanCmd
//! offset 5   body     512 bytes        ChanMsg body, zero padded
//! total      517 bytes
//! ```

use super::chan_cmd::ChanCmd;
use super::chan_msg::ChanMsg;
use super::consts::{CELL_BODY_LEN, CELL_LEN, CIRC_ID_LEN};
use super::error::{CellError, CellResult};
use super::ids::CircId;
use super::restricted::ChanMessage;

/// A link cell: a typed message plus the circuit it belongs to (none for channel-level
/// commands). The constructor enforces that the two agree, so an invalid pairing is
/// unrepresentable.
///
/// `M` is the message type: [`ChanMsg`] (any command), or a receiving context's enum from
/// [`super::chan_contexts`] when parsed with [`ChanCell::parse_typed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChanCell<M = ChanMsg> {
    circ: Option<CircId>,
    msg: M,
}

/// The fixed header of a link cell, readable before deciding which parser may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellHeader {
    /// The raw circuit id (0 for channel-level commands).
    pub circ_id: u32,
    /// The command.
    pub cmd: ChanCmd,
}

impl CellHeader {
    /// Reads the header of a cell of exactly [`CELL_LEN`] bytes. Unknown commands are
    /// refused here, before any body parser is chosen.
    pub fn peek(cell: &[u8]) -> CellResult<Self> {
        let (id, rest) = split_cell(cell)?;
        let code = rest
            .first()
            .copied()
            .ok_or(CellError::Truncated { field: "command" })?;
        let cmd = ChanCmd::from_code(code).map_err(|_| CellError::UnknownCommand(code))?;
        Ok(CellHeader {
            circ_id: u32::from_be_bytes(id),
            cmd,
        })
    }
}

fn split_cell(cell: &[u8]) -> CellResult<([u8; CIRC_ID_LEN], &[u8])> {
    if cell.len() != CELL_LEN {
        return Err(CellError::WrongLength {
            expected: CELL_LEN,
            got: cell.len(),
        });
    }
    let (id, rest) = cell.split_at(CIRC_ID_LEN);
    let mut out = [0u8; CIRC_ID_LEN];
    out.copy_from_slice(id);
    Ok((out, rest))
}

impl<M: ChanMessage> ChanCell<M> {
    /// Pairs a message with its circuit. Circuit commands need `Some`, channel commands `None`.
    pub fn new(circ: Option<CircId>, msg: M) -> CellResult<Self> {
        match (msg.cmd().is_circuit_cmd(), circ) {
            (true, None) => Err(CellError::ZeroCircId),
            (false, Some(_)) => Err(CellError::UnexpectedCircId),
            _ => Ok(ChanCell { circ, msg }),
        }
    }

    /// A circuit cell.
    pub fn circuit(circ: CircId, msg: M) -> CellResult<Self> {
        Self::new(Some(circ), msg)
    }

    /// A channel-level cell (circuit id zero).
    pub fn channel(msg: M) -> CellResult<Self> {
        Self::new(None, msg)
    }

    /// The circuit, or `None` for a channel-level cell.
    pub fn circ_id(&self) -> Option<CircId> {
        self.circ
    }

    /// The message.
    pub fn msg(&self) -> &M {
        &self.msg
    }

    /// Splits into circuit and message.
    pub fn into_parts(self) -> (Option<CircId>, M) {
        (self.circ, self.msg)
    }

    /// Parses one cell of exactly [`CELL_LEN`] bytes, accepting only the commands of `M`'s
    /// context (refused with [`CellError::CommandNotAllowed`] before the body is read).
    ///
    /// Checks, in order: length, known command, command allowed here, circuit id zero or
    /// non-zero as the command requires, then the body.
    pub fn parse_typed(cell: &[u8]) -> CellResult<Self> {
        let header = CellHeader::peek(cell)?;
        M::check(header.cmd)?;
        let circ = match (header.cmd.is_circuit_cmd(), header.circ_id) {
            (true, raw) => Some(CircId::from_wire(raw)?),
            (false, 0) => None,
            (false, _) => return Err(CellError::UnexpectedCircId),
        };
        let body = cell
            .get(CIRC_ID_LEN + 1..)
            .ok_or(CellError::Truncated { field: "body" })?;
        let msg = M::parse_body(header.cmd, body)?;
        Ok(ChanCell { circ, msg })
    }

    /// The same cell holding the full message type.
    pub fn into_any(self) -> ChanCell {
        ChanCell {
            circ: self.circ,
            msg: self.msg.into(),
        }
    }

    /// Encodes into exactly [`CELL_LEN`] bytes.
    pub fn encode(&self) -> CellResult<[u8; CELL_LEN]> {
        let mut out = [0u8; CELL_LEN];
        let raw = self.circ.map_or(0, CircId::get);
        out[..CIRC_ID_LEN].copy_from_slice(&raw.to_be_bytes());
        out[CIRC_ID_LEN] = self.msg.cmd().code();
        let mut body = [0u8; CELL_BODY_LEN];
        self.msg.encode_body(&mut body)?;
        out[CIRC_ID_LEN + 1..].copy_from_slice(&body);
        Ok(out)
    }
}
