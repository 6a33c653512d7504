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

/// A link cell: a typed message plus the circuit it belongs to (none for channel-level
/// commands). The constructor enforces that the two agree, so an invalid pairing is
/// unrepresentable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChanCell {
    circ: Option<CircId>,
    msg: ChanMsg,
}

/// The command sets legal on a channel in each state.
pub mod sets {
    use super::ChanCmd as C;
    use super::CmdSet;

    /// During the link handshake: only handshake messages and NETINFO.
    pub const LINK_HANDSHAKE: CmdSet = CmdSet::new(
        &[
            C::LinkInit.code(),
            C::LinkResp.code(),
            C::LinkFinish.code(),
            C::Netinfo.code(),
        ],
        "during the link handshake",
    );
    /// A client's open channel to its first hop. Clients never accept CREATE, and
    /// RELAY_EARLY only flows away from the client. REKEY is legal on every open channel;
    /// the link layer consumes it (see [`LINK_REKEY`]), so upper layers never see one.
    pub const CLIENT_CHANNEL: CmdSet = CmdSet::new(
        &[
            C::Padding.code(),
            C::Rekey.code(),
            C::Created.code(),
            C::Relay.code(),
            C::Destroy.code(),
        ],
        "on a client's channel",
    );
    /// A relay's open channel: circuits may run in either direction over it. REKEY as on
    /// a client's channel.
    pub const RELAY_CHANNEL: CmdSet = CmdSet::new(
        &[
            C::Padding.code(),
            C::Rekey.code(),
            C::Create.code(),
            C::Created.code(),
            C::Relay.code(),
            C::RelayEarly.code(),
            C::Destroy.code(),
        ],
        "on a relay's channel",
    );
    /// What the link layer parses when an open channel's record carries the REKEY command:
    /// only REKEY, so its circuit id (zero) and body (all zero) are checked strictly.
    pub const LINK_REKEY: CmdSet = CmdSet::new(&[C::Rekey.code()], "as a link rekey");
    /// On a circuit id a relay has not seen before: only CREATE opens one.
    pub const NEW_CIRCUIT: CmdSet = CmdSet::new(&[C::Create.code()], "on an unknown circuit");
    /// At a relay, from the previous hop (towards the client) of an open circuit.
    pub const FROM_PREVIOUS_HOP: CmdSet = CmdSet::new(
        &[C::Relay.code(), C::RelayEarly.code(), C::Destroy.code()],
        "from the previous hop of a circuit",
    );
    /// At a relay or client, from the next hop of a circuit. CREATED is legal only once,
    /// while the circuit awaits it: the circuit, which knows its state, enforces that.
    pub const FROM_NEXT_HOP: CmdSet = CmdSet::new(
        &[C::Created.code(), C::Relay.code(), C::Destroy.code()],
        "from the next hop of a circuit",
    );
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

impl ChanCell {
    /// Pairs a message with its circuit. Circuit commands need `Some`, channel commands `None`.
    pub fn new(circ: Option<CircId>, msg: ChanMsg) -> CellResult<Self> {
        match (msg.cmd().is_circuit_cmd(), circ) {
            (true, None) => Err(CellError::ZeroCircId),
            (false, Some(_)) => Err(CellError::UnexpectedCircId),
            _ => Ok(ChanCell { circ, msg }),
        }
    }

    /// A circuit cell.
    pub fn circuit(circ: CircId, msg: ChanMsg) -> CellResult<Self> {
        Self::new(Some(circ), msg)
    }

    /// A channel-level cell (circuit id zero).
    pub fn channel(msg: ChanMsg) -> CellResult<Self> {
        Self::new(None, msg)
    }

    /// The circuit, or `None` for a channel-level cell.
    pub fn circ_id(&self) -> Option<CircId> {
        self.circ
    }

    /// The message.
    pub fn msg(&self) -> &ChanMsg {
        &self.msg
    }

    /// Splits into circuit and message.
    pub fn into_parts(self) -> (Option<CircId>, ChanMsg) {
        (self.circ, self.msg)
    }

    /// Parses one cell of exactly [`CELL_LEN`] bytes, accepting only commands in `allowed`.
    ///
    /// Checks, in order: length, known command, command allowed here, circuit id zero or
    /// non-zero as the command requires, then the body.
    pub fn parse(cell: &[u8], allowed: &CmdSet) -> CellResult<Self> {
        let header = CellHeader::peek(cell)?;
        allowed.check(header.cmd.code())?;
        let circ = match (header.cmd.is_circuit_cmd(), header.circ_id) {
            (true, raw) => Some(CircId::from_wire(raw)?),
            (false, 0) => None,
            (false, _) => return Err(CellError::UnexpectedCircId),
        };
        let body = cell
            .get(CIRC_ID_LEN + 1..)
            .ok_or(CellError::Truncated { field: "body" })?;
        let msg = ChanMsg::parse_body(header.cmd, body)?;
        Ok(ChanCell { circ, msg })
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
