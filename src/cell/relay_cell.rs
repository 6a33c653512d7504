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

use super::cmd_set::CmdSet;
use super::consts::{RELAY_BODY_LEN, RELAY_TAG_LEN};
use super::error::{CellError, CellResult};
use super::ids::StreamId;
use super::relay_cmd::{RelayCmd, StreamRule};
use super::relay_msg::{RelayMsg, MAX_RELAY_DATA};
use crate::bytes::Reader;
use crate::bytes::Writer;

/// A relay message plus the stream it belongs to (none for circuit-level messages). The
/// constructor enforces the command's stream rule, so an invalid pairing is unrepresentable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayCell {
    stream: Option<StreamId>,
    msg: RelayMsg,
}

/// The relay commands legal at each end of a circuit.
pub mod sets {
    use super::CmdSet;
    use super::RelayCmd as C;

    /// What a relay accepts in a cell it recognised (sent by the client).
    pub const AT_RELAY: CmdSet = CmdSet::new(
        &[
            C::Begin.code(),
            C::Data.code(),
            C::End.code(),
            C::Sendme.code(),
            C::Extend.code(),
            C::Truncate.code(),
            C::Drop.code(),
            C::Resolve.code(),
            C::BeginDir.code(),
        ],
        "at a relay",
    );
    /// What a client accepts from a hop of its circuit.
    pub const AT_CLIENT: CmdSet = CmdSet::new(
        &[
            C::Connected.code(),
            C::Data.code(),
            C::End.code(),
            C::Sendme.code(),
            C::Extended.code(),
            C::Truncated.code(),
            C::Drop.code(),
            C::Resolved.code(),
        ],
        "at a client",
    );

    /// What a relay parses in a cell it recognised: [`AT_RELAY`] plus the commands that
    /// give a circuit an onion-service role at its last hop (§8.6). Which of them a
    /// circuit may send depends on its role; the relay checks that after parsing.
    pub const AT_RELAY_ONION: CmdSet = CmdSet::new(
        &[
            C::Begin.code(),
            C::Data.code(),
            C::End.code(),
            C::Sendme.code(),
            C::Extend.code(),
            C::Truncate.code(),
            C::Drop.code(),
            C::Resolve.code(),
            C::BeginDir.code(),
            C::EstablishIntro.code(),
            C::Introduce1.code(),
            C::EstablishRendezvous.code(),
            C::Rendezvous1.code(),
        ],
        "at a relay",
    );

    // The client and service sets below are for the onion-service client runtime.

    /// What an introduction point accepts from a service or client, beyond [`AT_RELAY`].
    pub const AT_INTRO_POINT: CmdSet = CmdSet::new(
        &[
            C::EstablishIntro.code(),
            C::Introduce1.code(),
            C::Drop.code(),
        ],
        "at an introduction point",
    );
    /// What a rendezvous point accepts from a client or service, beyond [`AT_RELAY`].
    pub const AT_REND_POINT: CmdSet = CmdSet::new(
        &[
            C::EstablishRendezvous.code(),
            C::Rendezvous1.code(),
            C::Drop.code(),
        ],
        "at a rendezvous point",
    );
    /// What a service accepts on its circuit to an introduction point.
    pub const AT_SERVICE_INTRO: CmdSet = CmdSet::new(
        &[
            C::IntroEstablished.code(),
            C::Introduce2.code(),
            C::Drop.code(),
        ],
        "at a service, from its introduction point",
    );
    /// What a client accepts from an introduction point or rendezvous point while
    /// connecting to a service.
    pub const AT_ONION_CLIENT: CmdSet = CmdSet::new(
        &[
            C::IntroduceAck.code(),
            C::RendezvousEstablished.code(),
            C::Rendezvous2.code(),
            C::Drop.code(),
        ],
        "at a client connecting to an onion service",
    );
}

impl RelayCell {
    /// Pairs a message with its stream, enforcing the command's stream rule.
    pub fn new(stream: Option<StreamId>, msg: RelayMsg) -> CellResult<Self> {
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
    pub fn msg(&self) -> &RelayMsg {
        &self.msg
    }

    /// Splits into stream and message.
    pub fn into_parts(self) -> (Option<StreamId>, RelayMsg) {
        (self.stream, self.msg)
    }

    /// Parses a fully decrypted relay body, accepting only commands in `allowed`.
    ///
    /// Checks, in order: length, the tag is all zero, known and non-reserved command,
    /// command allowed here, stream rule, data length bound, the message, zero padding.
    pub fn parse(body: &[u8], allowed: &CmdSet) -> CellResult<Self> {
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
        allowed.check(code)?;
        let stream = StreamId::new(r.u16("stream id")?);
        let len = r.len_u16("length", MAX_RELAY_DATA)?;
        let msg = RelayMsg::parse_data(cmd, r.take(len, "data")?)?;
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
