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
use super::cmd_set::CmdSet;
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

/// The command sets legal on a channel in each state: the same lists as the context enums
/// of [`super::chan_contexts`], for code that picks a set at run time.
pub mod sets {
    use super::super::chan_contexts::{
        DuringLinkHandshake, FromNextHop, FromPreviousHop, LinkRekey, NewCircuit, OnClientChannel,
        OnRelayChannel,
    };
    use super::CmdSet;

    /// During the link handshake: [`DuringLinkHandshake`].
    pub const LINK_HANDSHAKE: CmdSet = DuringLinkHandshake::SET;
    /// A client's open channel to its first hop: [`OnClientChannel`].
    pub const CLIENT_CHANNEL: CmdSet = OnClientChannel::SET;
    /// A relay's open channel: [`OnRelayChannel`].
    pub const RELAY_CHANNEL: CmdSet = OnRelayChannel::SET;
    /// An open channel's record carrying the REKEY command: [`LinkRekey`].
    pub const LINK_REKEY: CmdSet = LinkRekey::SET;
    /// On a circuit id a relay has not seen before: [`NewCircuit`].
    pub const NEW_CIRCUIT: CmdSet = NewCircuit::SET;
    /// At a relay, from the previous hop of an open circuit: [`FromPreviousHop`].
    pub const FROM_PREVIOUS_HOP: CmdSet = FromPreviousHop::SET;
    /// At a relay or client, from the next hop of a circuit: [`FromNextHop`].
    pub const FROM_NEXT_HOP: CmdSet = FromNextHop::SET;
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
        Self::parse_checked(cell, M::check)
    }

    /// [`Self::parse_typed`] with `allowed` deciding which commands are legal.
    fn parse_checked(
        cell: &[u8],
        allowed: impl FnOnce(ChanCmd) -> CellResult<()>,
    ) -> CellResult<Self> {
        let header = CellHeader::peek(cell)?;
        allowed(header.cmd)?;
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

impl ChanCell {
    /// Parses one cell of exactly [`CELL_LEN`] bytes into the full [`ChanMsg`], accepting
    /// only commands in `allowed` (checks as [`ChanCell::parse_typed`]).
    pub fn parse(cell: &[u8], allowed: &CmdSet) -> CellResult<Self> {
        Self::parse_checked(cell, |cmd| allowed.check(cmd.code()))
    }
}
