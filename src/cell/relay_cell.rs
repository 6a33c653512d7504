//! The relay cell: a relay message with its stream, laid out in a relay body.
//!
//! ```text
//! offset  0  tag        16 bytes   all zero once every layer is removed (recognition)
//! offset 16  command    u8         RelayCmd
//! offset 17  stream_id  u16 BE     0 for circuit-level commands
//! offset 19  length     u16 BE     length of data, at most 491
//! offset 21  data       length bytes
//! then       padding    zero bytes up to offset 512
//! ```

use super::consts::{RELAY_BODY_LEN, RELAY_TAG_LEN};
use super::error::{CellError, CellResult};
use super::ids::StreamId;
use super::relay_cmd::{RelayCmd, StreamRule};
use super::relay_msg::{RelayMsg, MAX_RELAY_DATA};
use super::restricted::RelayMessage;
use crate::bytes::Reader;
use crate::bytes::Writer;

/// A relay message plus the stream it belongs to (none for circuit-level messages). The
/// constructor enforces the command's stream rule, so an invalid pairing is unrepresentable.
///
/// `M` is the message type: [`RelayMsg`] (any command), or a receiving context's enum from
/// [`super::relay_contexts`] when parsed with [`RelayCell::parse_typed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayCell<M = RelayMsg> {
    stream: Option<StreamId>,
    msg: M,
}

impl<M: RelayMessage> RelayCell<M> {
    /// Pairs a message with its stream, enforcing the command's stream rule.
    pub fn new(stream: Option<StreamId>, msg: M) -> CellResult<Self> {
        match (msg.cmd().stream_rule(), stream) {
            (StreamRule::Stream, None) => Err(CellError::ZeroStreamId),
            (StreamRule::Circuit, Some(_)) => Err(CellError::UnexpectedStreamId),
            _ => Ok(RelayCell { stream, msg }),
        }
    }

    /// The stream, or `None` for circuit-level messages.
    pub fn stream(&self) -> Option<StreamId> {
        self.stream
    }

    /// The message.
    pub fn msg(&self) -> &M {
        &self.msg
    }

    /// Splits into stream and message.
    pub fn into_parts(self) -> (Option<StreamId>, M) {
        (self.stream, self.msg)
    }

    /// The same cell holding the full message type.
    pub fn into_any(self) -> RelayCell {
        RelayCell {
            stream: self.stream,
            msg: self.msg.into(),
        }
    }

    /// Parses a fully decrypted relay body, accepting only the commands of `M`'s context
    /// (refused with [`CellError::CommandNotAllowed`] before the data is read).
    ///
    /// Checks, in order: length, the tag is all zero, known and non-reserved command,
    /// command allowed here, stream rule, data length bound, the message, zero padding.
    pub fn parse_typed(body: &[u8]) -> CellResult<Self> {
        if body.len() != RELAY_BODY_LEN {
            return Err(CellError::WrongLength {
                expected: RELAY_BODY_LEN,
                got: body.len(),
            });
        }
        let mut r = Reader::new(body);
        if r.take(RELAY_TAG_LEN, "tag")?.iter().any(|&b| b != 0) {
            return Err(CellError::Unrecognized);
        }
        let code = r.u8("relay command")?;
        let cmd = RelayCmd::from_wire(code)?;
        M::check(cmd)?;
        let stream = StreamId::new(r.u16("stream id")?);
        let len = r.len_u16("length", MAX_RELAY_DATA)?;
        let msg = M::parse_data(cmd, r.take(len, "data")?)?;
        r.finish_zero_padded()?;
        Self::new(stream, msg)
    }

    /// Encodes into a relay body with an all-zero tag, ready for the relay crypto.
    pub fn encode(&self) -> CellResult<[u8; RELAY_BODY_LEN]> {
        let mut body = [0u8; RELAY_BODY_LEN];
        let mut data = [0u8; MAX_RELAY_DATA];
        let data_len = {
            let mut w = Writer::new(&mut data);
            self.msg.encode_data(&mut w)?;
            w.position()
        };
        let mut w = Writer::new(&mut body);
        w.put(&[0u8; RELAY_TAG_LEN], "tag")?;
        w.u8(self.msg.cmd().code(), "relay command")?;
        w.u16(self.stream.map_or(0, StreamId::get), "stream id")?;
        let payload = data
            .get(..data_len)
            .ok_or(CellError::TooLarge { field: "data" })?;
        w.u16_prefixed(payload, "data")?;
        Ok(body)
    }
}
